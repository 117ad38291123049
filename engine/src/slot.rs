//! Futures in pooled memory: a connection's large per-request future lives in a block from
//! a per-thread free list while it runs, not inline in the connection's task.
//!
//! A task's future is as large as the largest state any of its `await`s can be in. An
//! HTTP/1 connection that waits for its next request would otherwise carry its whole
//! exchange's state (several KiB) while idle; with the exchange in a [`Slot`], the idle
//! connection's task holds a pointer, and the block goes back to the free list when the
//! exchange ends. Blocks are reused, so a busy connection pays no allocation per request
//! (a plain `Box` per request was measured at 10 % more instructions per request).
//!
//! Shards are threads, so a per-thread free list is a per-shard one; it keeps at most
//! [`MAX_FREE`] blocks of each size class.
//!
//! One of the engine's three places with `unsafe` (with `sys` and the glommio listener
//! hand-over in `rt`): a typed pointer into a raw block, written once, pinned, dropped in
//! place; no block is read before it is written or after it is returned.

#![allow(unsafe_code)]

use std::alloc::{self, Layout};
use std::cell::RefCell;
use std::future::Future;
use std::marker::PhantomData;
use std::pin::Pin;
use std::ptr::NonNull;
use std::task::{Context, Poll};

/// The size classes: powers of two from 2^[`MIN_SHIFT`] to 2^[`MAX_SHIFT`] bytes.
const MIN_SHIFT: u32 = 8;
const MAX_SHIFT: u32 = 16;
const CLASSES: usize = (MAX_SHIFT - MIN_SHIFT + 1) as usize;
/// Every block's alignment (monoio's timer state is 128-byte aligned).
const ALIGN: usize = 128;
/// Free blocks kept per size class and thread.
pub const MAX_FREE: usize = 128;

thread_local! {
    static FREE: RefCell<FreeLists> = const { RefCell::new(FreeLists { lists: [const { Vec::new() }; CLASSES] }) };
}

// === types ===

/// A future in a pooled block ([`Slot::with`]). It never moves once written, so the `Slot` itself is
/// `Unpin`; dropping it drops the future in place and returns the block.
pub struct Slot<F> {
    ptr: NonNull<F>,
    class: Option<usize>,
    _owns: PhantomData<F>,
}

struct FreeLists {
    lists: [Vec<NonNull<u8>>; CLASSES],
}

// === impl Slot ===

impl<F: Future> Slot<F> {
    /// The future `make` makes, in a block of its size class (a reused one when the
    /// thread has one free); written into the block as it is made, so the compiler can
    /// leave out the copy of a large future through the caller's stack (it does for an
    /// `async fn`'s call: `memmove` fell from 2.0 % to 1.45 % of the HTTP/1 profile
    /// against passing the made future in). A future too large for the classes, or
    /// aligned beyond [`ALIGN`], gets a block of its own that is freed with it.
    #[inline(always)]
    pub fn with(make: impl FnOnce() -> F) -> Self {
        let layout = Layout::new::<F>();
        let class = class_of(layout);
        let block = match class {
            Some(class) => FREE
                .with(|free| free.borrow_mut().lists[class].pop())
                .unwrap_or_else(|| allocate(class_layout(class))),
            None => allocate(own_layout(layout)),
        };
        let ptr = block.cast::<F>();
        // SAFETY: `block` is valid for writes of `layout` (its class's layout is at least
        // as large and as aligned) and not in use by anything else.
        unsafe { ptr.as_ptr().write(make()) };
        Slot {
            ptr,
            class,
            _owns: PhantomData,
        }
    }
}

impl<F: Future> Future for Slot<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        // SAFETY: the future was written at `ptr` in `with`, is dropped only by `Drop`, and
        // never moves: the block belongs to this `Slot` until then.
        let future = unsafe { Pin::new_unchecked(&mut *self.ptr.as_ptr()) };
        future.poll(cx)
    }
}

impl<F> Unpin for Slot<F> {}

impl<F> Drop for Slot<F> {
    fn drop(&mut self) {
        // SAFETY: the future at `ptr` is live (written in `with`) and dropped only here.
        unsafe { self.ptr.as_ptr().drop_in_place() };
        let block = self.ptr.cast::<u8>();
        match self.class {
            Some(class) => {
                let kept = FREE
                    .try_with(|free| {
                        let mut free = free.borrow_mut();
                        let list = &mut free.lists[class];
                        if list.len() < MAX_FREE {
                            list.push(block);
                            true
                        } else {
                            false
                        }
                    })
                    .unwrap_or(false);
                if !kept {
                    // SAFETY: allocated in `with` with this class's layout.
                    unsafe { alloc::dealloc(block.as_ptr(), class_layout(class)) };
                }
            }
            // SAFETY: allocated in `with` with `own_layout` of `F`'s layout.
            None => unsafe { alloc::dealloc(block.as_ptr(), own_layout(Layout::new::<F>())) },
        }
    }
}

// === impl FreeLists ===

impl Drop for FreeLists {
    fn drop(&mut self) {
        for (class, list) in self.lists.iter_mut().enumerate() {
            for block in list.drain(..) {
                // SAFETY: every listed block was allocated with its class's layout.
                unsafe { alloc::dealloc(block.as_ptr(), class_layout(class)) };
            }
        }
    }
}

// === functions ===

/// The size class whose blocks hold `layout`, if one does.
fn class_of(layout: Layout) -> Option<usize> {
    if layout.align() > ALIGN || layout.size() > 1 << MAX_SHIFT {
        return None;
    }
    let shift = layout
        .size()
        .max(1)
        .next_power_of_two()
        .trailing_zeros()
        .max(MIN_SHIFT);
    Some((shift - MIN_SHIFT) as usize)
}

fn class_layout(class: usize) -> Layout {
    // The classes' sizes are powers of two and ALIGN is one: always a valid layout.
    Layout::from_size_align(1 << (MIN_SHIFT as usize + class), ALIGN).expect("valid class")
}

/// The layout of a future's own block (outside the classes): never zero-sized, so a
/// zero-sized future still gets one byte; the same in `with` and `drop`.
fn own_layout(layout: Layout) -> Layout {
    Layout::from_size_align(layout.size().max(1), layout.align()).expect("valid layout")
}

/// A block for `layout`, which is never zero-sized.
fn allocate(layout: Layout) -> NonNull<u8> {
    debug_assert!(layout.size() > 0);
    // SAFETY: `layout` has a non-zero size (`own_layout`, or a class's).
    let block = unsafe { alloc::alloc(layout) };
    NonNull::new(block).unwrap_or_else(|| alloc::handle_alloc_error(layout))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;
    use std::task::Waker;

    fn free_blocks(class: usize) -> usize {
        FREE.with(|free| free.borrow().lists[class].len())
    }

    struct Counted(Rc<Cell<u32>>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.set(self.0.get() + 1);
        }
    }

    #[test]
    fn classes_cover_sizes_up_to_the_largest() {
        assert_eq!(class_of(Layout::new::<u8>()), Some(0));
        assert_eq!(class_of(Layout::from_size_align(256, 8).unwrap()), Some(0));
        assert_eq!(class_of(Layout::from_size_align(257, 8).unwrap()), Some(1));
        assert_eq!(
            class_of(Layout::from_size_align(6500, 128).unwrap()),
            Some(5)
        );
        assert_eq!(
            class_of(Layout::from_size_align(1 << 16, 8).unwrap()),
            Some(8)
        );
        assert_eq!(
            class_of(Layout::from_size_align((1 << 16) + 1, 8).unwrap()),
            None
        );
        assert_eq!(class_of(Layout::from_size_align(64, 256).unwrap()), None);
    }

    #[test]
    fn a_block_is_reused_and_its_future_dropped_in_place() {
        let dropped = Rc::new(Cell::new(0));
        let class = class_of(Layout::from_size_align(3000, 8).unwrap()).unwrap();
        let mut cx = Context::from_waker(Waker::noop());
        let mut first_at = None;
        for round in 0..3 {
            let guard = Counted(dropped.clone());
            let payload = [round as u8; 3000];
            let mut slot = Slot::with(|| async move {
                let _guard = guard;
                std::future::ready(()).await;
                payload.iter().map(|b| *b as u32).sum::<u32>()
            });
            let at = slot.ptr.as_ptr() as usize;
            assert_eq!(at % ALIGN, 0);
            // The free list hands back the block the last round returned.
            assert_eq!(*first_at.get_or_insert(at), at);
            let before = free_blocks(class);
            assert_eq!(Pin::new(&mut slot).poll(&mut cx), Poll::Ready(round * 3000));
            drop(slot);
            assert_eq!(free_blocks(class), before + 1);
            assert_eq!(dropped.get(), round + 1);
        }
    }

    #[test]
    fn a_pending_future_is_dropped_with_its_slot() {
        let dropped = Rc::new(Cell::new(0));
        let guard = Counted(dropped.clone());
        let mut slot = Slot::with(|| async move {
            let _guard = guard;
            std::future::pending::<()>().await;
        });
        let mut cx = Context::from_waker(Waker::noop());
        assert!(Pin::new(&mut slot).poll(&mut cx).is_pending());
        assert_eq!(dropped.get(), 0);
        drop(slot);
        assert_eq!(dropped.get(), 1);
    }

    #[test]
    fn the_free_list_is_bounded() {
        let class = class_of(Layout::new::<[u8; 40_000]>()).unwrap();
        let slots: Vec<_> = (0..MAX_FREE + 10)
            .map(|_| Slot::with(|| std::future::ready([0u8; 40_000])))
            .collect();
        drop(slots);
        assert_eq!(free_blocks(class), MAX_FREE);
        // Oversized futures get their own block, freed with them.
        let large = Slot::with(|| std::future::ready([1u8; 70_000]));
        assert!(large.class.is_none());
    }
}
