//! Joining the two directions of a connection in one task, polling only the side that was
//! woken. A plain join re-polls both sides on every wake-up, which on a readiness backend
//! (glommio tries `recv`/`send` eagerly on every poll) is a wasted syscall per wake-up, and
//! on glommio it also drops still-pending readiness polls (a successful eager `send`
//! discards the armed `POLLOUT`). Lock-free: each side's waker is an atomic flag and an
//! `AtomicWaker`.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll, Wake, Waker};

use futures_util::task::AtomicWaker;

// === types ===

/// Wakes the task and marks which side asked.
struct SideWaker {
    woken: AtomicBool,
    task: AtomicWaker,
}

// === impl SideWaker ===

impl Wake for SideWaker {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.woken.store(true, Ordering::Release);
        self.task.wake();
    }
}

// === functions ===

/// Runs `a` and `b` (pinned by the caller, in its own frame, so that they are held once)
/// to completion concurrently, polling each only when it was woken.
pub async fn join_pinned<A: Future, B: Future>(
    mut a: Pin<&mut A>,
    mut b: Pin<&mut B>,
) -> (A::Output, B::Output) {
    let sides = [new_side(), new_side()];
    let wakers = [Waker::from(sides[0].clone()), Waker::from(sides[1].clone())];
    let mut out_a = None;
    let mut out_b = None;
    std::future::poll_fn(|cx| {
        for side in &sides {
            side.task.register(cx.waker());
        }
        if out_a.is_none() && sides[0].woken.swap(false, Ordering::Acquire) {
            if let Poll::Ready(v) = a.as_mut().poll(&mut Context::from_waker(&wakers[0])) {
                out_a = Some(v);
            }
        }
        if out_b.is_none() && sides[1].woken.swap(false, Ordering::Acquire) {
            if let Poll::Ready(v) = b.as_mut().poll(&mut Context::from_waker(&wakers[1])) {
                out_b = Some(v);
            }
        }
        if out_a.is_some() && out_b.is_some() {
            Poll::Ready((out_a.take().unwrap(), out_b.take().unwrap()))
        } else {
            Poll::Pending
        }
    })
    .await
}

fn new_side() -> Arc<SideWaker> {
    Arc::new(SideWaker {
        woken: AtomicBool::new(true),
        task: AtomicWaker::new(),
    })
}
