//! A shard's life: the tasks it runs, the connections it holds open, and its drain.
//!
//! Tasks are counted, never cancelled (a cancelled pending glommio task leaks, DESIGN.md
//! §5): each holds a [`TaskGuard`], and the shard ends once the count is zero. Open
//! connections are in a table so that a drain can close the idle ones at once and, after the
//! grace period, shut down every socket; their tasks then see end of stream and return by
//! themselves. Shard-local (`Rc`, `Cell`, `RefCell`).

use std::cell::{Cell, RefCell};
use std::future::{poll_fn, Future};
use std::os::fd::RawFd;
use std::pin::Pin;
use std::rc::Rc;
use std::task::{Context, Poll, Waker};

use ringlink_control::thread::{Phase, PhaseRx};
use slab::Slab;

use crate::sys;

// === types ===

pub struct Lifecycle {
    /// Tasks still running (accept loops, connections, streams, watches).
    tasks: Cell<usize>,
    /// The shard's main task, waiting for `tasks` to reach zero.
    drain_waiter: Cell<Option<Waker>>,
    /// Open connections: their sockets, whether they are idle between HTTP requests, and
    /// whether a response is pending that a client's close abandons.
    conns: RefCell<Slab<Conn>>,
    /// Set once the drain begins: HTTP connections close after their current request.
    draining: Cell<bool>,
    /// Set once the grace period is over: connections still opening are closed at once.
    closing: Cell<bool>,
    /// The control thread's shutdown phase.
    phase: PhaseRx,
}

/// One open connection in the table.
struct Conn {
    /// The client's socket, and the upstream's while one is in use (else -1).
    fds: [RawFd; 2],
    /// Idle between HTTP requests: a drain closes it at once.
    idle: bool,
    /// The reads that may park, from the client and from the upstream ([`Side`]).
    waits: [Wait; 2],
    /// The task waiting for a response to a complete HTTP/1 request: woken when the client
    /// closes meanwhile (see [`Lifecycle::abandon_closed`]).
    awaiting: Option<Waker>,
    abandoned: bool,
}

/// A read that waits for bytes and may park ([`ConnEntry::parked`]): an HTTP/1 connection's
/// wait for its next request, or a direction of a copied relay.
#[derive(Default)]
struct Wait {
    /// Seen waiting by a park sweep, in the same wait ([`Lifecycle::park_idle`]).
    swept: bool,
    /// The park sweep has told the wait to park.
    park: bool,
    /// The wait, to be woken when it is to park; `Some` while it waits.
    waker: Option<Waker>,
}

/// Whom a wait that may park reads from.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    Client = 0,
    Upstream = 1,
}

/// Completes when the connection's client closes while a response is pending; see
/// [`ConnEntry::abandoned`].
pub struct Abandoned<'a> {
    entry: &'a ConnEntry,
}

/// Completes when the shard's park sweep tells the connection's idle wait to park; see
/// [`ConnEntry::parked`].
pub struct Parked<'a> {
    entry: &'a ConnEntry,
    side: Side,
}

/// Counts a running task for as long as it lives.
pub struct TaskGuard(Rc<Lifecycle>);

/// An open connection's entry in the shard's table; removed on drop.
pub struct ConnEntry {
    life: Rc<Lifecycle>,
    key: usize,
}

// === impl Lifecycle ===

impl Lifecycle {
    pub fn new(phase: PhaseRx) -> Rc<Self> {
        Rc::new(Lifecycle {
            tasks: Cell::new(0),
            drain_waiter: Cell::new(None),
            conns: RefCell::new(Slab::new()),
            draining: Cell::new(false),
            closing: Cell::new(false),
            phase,
        })
    }

    pub fn task(self: &Rc<Self>) -> TaskGuard {
        self.tasks.set(self.tasks.get() + 1);
        TaskGuard(self.clone())
    }

    /// Enters a connection's socket in the table (`fd` is the client's, or an upstream
    /// connection's when it lives on its own).
    pub fn register(self: &Rc<Self>, fd: RawFd) -> ConnEntry {
        let key = self.conns.borrow_mut().insert(Conn {
            fds: [fd, -1],
            idle: false,
            waits: Default::default(),
            awaiting: None,
            abandoned: false,
        });
        ConnEntry {
            life: self.clone(),
            key,
        }
    }

    /// The shutdown phase, for tasks that wait on it.
    pub fn phase(&self) -> PhaseRx {
        self.phase.clone()
    }

    /// Completes once the control thread says the shard stops serving.
    pub async fn drain_started(&self) {
        let mut phase = self.phase.clone();
        let _ = phase.wait_for(|p| *p != Phase::Serving).await;
    }

    pub fn is_draining(&self) -> bool {
        self.draining.get()
    }

    pub fn is_closing(&self) -> bool {
        self.closing.get()
    }

    /// Starts the drain: HTTP connections idle between requests are closed now (their
    /// tasks see end of stream), busy ones after their current response.
    pub fn start_drain(&self) {
        self.draining.set(true);
        for (_, conn) in self.conns.borrow().iter() {
            if conn.idle {
                let _ = sys::shutdown(conn.fds[0], std::net::Shutdown::Both);
            }
        }
    }

    /// Shuts down every open connection's sockets; their tasks then see end-of-stream or an
    /// error and return by themselves.
    pub fn close_all(&self) {
        self.closing.set(true);
        for (_, conn) in self.conns.borrow().iter() {
            for fd in conn.fds.iter().copied().filter(|fd| *fd >= 0) {
                let _ = sys::shutdown(fd, std::net::Shutdown::Both);
            }
        }
    }

    /// Wakes the tasks waiting for a response whose client has closed (sent FIN or reset)
    /// meanwhile, so that they drop the exchange and its upstream connection, as
    /// linkerd2-proxy's HTTP/1 server does (hyper without half-close). One `TCP_INFO` read
    /// per pending response; returns how many were abandoned.
    pub fn abandon_closed(&self) -> usize {
        let mut abandoned = 0;
        for (_, conn) in self.conns.borrow_mut().iter_mut() {
            if conn.abandoned || conn.awaiting.is_none() || !sys::peer_closed(conn.fds[0]) {
                continue;
            }
            conn.abandoned = true;
            abandoned += 1;
            if let Some(waker) = conn.awaiting.take() {
                waker.wake();
            }
        }
        abandoned
    }

    /// Tells the waits ([`ConnEntry::parked`]) that have been waiting since the previous
    /// sweep to park (give their read buffer back and wait with a tiny one): called once a
    /// second, a keep-alive connection or a quiet relay parks after one to two seconds
    /// idle, and a busy one never pays for it. Returns how many were told.
    pub fn park_idle(&self) -> usize {
        let mut parked = 0;
        for (_, conn) in self.conns.borrow_mut().iter_mut() {
            for wait in &mut conn.waits {
                if wait.park || wait.waker.is_none() {
                    continue;
                }
                if !wait.swept {
                    wait.swept = true;
                    continue;
                }
                wait.park = true;
                parked += 1;
                if let Some(waker) = wait.waker.take() {
                    waker.wake();
                }
            }
        }
        parked
    }

    pub fn open_connections(&self) -> usize {
        self.conns.borrow().len()
    }

    /// Completes once no task is left.
    pub async fn tasks_done(&self) {
        poll_fn(|cx| {
            if self.tasks.get() == 0 {
                Poll::Ready(())
            } else {
                self.drain_waiter.set(Some(cx.waker().clone()));
                Poll::Pending
            }
        })
        .await
    }
}

// === impl TaskGuard ===

impl Drop for TaskGuard {
    fn drop(&mut self) {
        let left = self.0.tasks.get() - 1;
        self.0.tasks.set(left);
        if left == 0 {
            if let Some(waker) = self.0.drain_waiter.take() {
                waker.wake();
            }
        }
    }
}

// === impl ConnEntry ===

impl ConnEntry {
    pub fn set_upstream(&self, fd: RawFd) {
        if let Some(conn) = self.life.conns.borrow_mut().get_mut(self.key) {
            conn.fds[1] = fd;
        }
    }

    /// Marks the connection idle between HTTP requests (closed at once by a drain) or not.
    pub fn set_idle(&self, idle: bool) {
        if let Some(conn) = self.life.conns.borrow_mut().get_mut(self.key) {
            conn.idle = idle;
            conn.waits[Side::Client as usize] = Wait::default();
        }
        if idle && self.life.is_draining() {
            if let Some(conn) = self.life.conns.borrow().get(self.key) {
                let _ = sys::shutdown(conn.fds[0], std::net::Shutdown::Both);
            }
        }
    }

    /// Completes when the shard's park sweep has found this wait (a read from `side`, raced
    /// with this future) waiting at two sweeps in a row ([`Lifecycle::park_idle`]). The wait
    /// counts from this future's first poll until it is dropped. Nothing is timed per read.
    pub fn parked(&self, side: Side) -> Parked<'_> {
        Parked { entry: self, side }
    }

    /// Completes if the client closes while the caller waits for a response to its
    /// complete request (race it with the response). Nothing is polled per request: the
    /// shard's sweep checks the waiting connections' clients (`Lifecycle::abandon_closed`).
    pub fn abandoned(&self) -> Abandoned<'_> {
        if let Some(conn) = self.life.conns.borrow_mut().get_mut(self.key) {
            conn.abandoned = false;
        }
        Abandoned { entry: self }
    }
}

// === impl Abandoned ===

impl Future for Abandoned<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut conns = self.entry.life.conns.borrow_mut();
        let Some(conn) = conns.get_mut(self.entry.key) else {
            return Poll::Pending;
        };
        if conn.abandoned {
            return Poll::Ready(());
        }
        match &conn.awaiting {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => conn.awaiting = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

// === impl Parked ===

impl Future for Parked<'_> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let mut conns = self.entry.life.conns.borrow_mut();
        let Some(conn) = conns.get_mut(self.entry.key) else {
            return Poll::Pending;
        };
        let wait = &mut conn.waits[self.side as usize];
        if wait.park {
            return Poll::Ready(());
        }
        match &wait.waker {
            Some(waker) if waker.will_wake(cx.waker()) => {}
            _ => wait.waker = Some(cx.waker().clone()),
        }
        Poll::Pending
    }
}

impl Drop for Parked<'_> {
    /// The wait is over: the next one starts over.
    fn drop(&mut self) {
        if let Some(conn) = self.entry.life.conns.borrow_mut().get_mut(self.entry.key) {
            conn.waits[self.side as usize] = Wait::default();
        }
    }
}

impl Drop for Abandoned<'_> {
    fn drop(&mut self) {
        if let Some(conn) = self.entry.life.conns.borrow_mut().get_mut(self.entry.key) {
            conn.awaiting = None;
        }
    }
}

impl Drop for ConnEntry {
    fn drop(&mut self) {
        self.life.conns.borrow_mut().remove(self.key);
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::pin;
    use std::task::{Context, Poll, Waker};

    use ringlink_control::thread::Phase;
    use tokio::sync::watch;

    use super::{Lifecycle, Side};

    /// An idle wait parks at the second sweep that finds it waiting, never at the first;
    /// a wait that ends in between starts over; a connection not waiting is never told.
    #[test]
    fn an_idle_wait_parks_at_its_second_sweep() {
        let (_phase, phase_rx) = watch::channel(Phase::Serving);
        let life = Lifecycle::new(phase_rx);
        let busy = life.register(-1);
        let idle = life.register(-1);
        let mut cx = Context::from_waker(Waker::noop());

        // `busy` is between requests but nothing waits on its park signal.
        busy.set_idle(true);
        idle.set_idle(true);
        let mut parked = pin!(idle.parked(Side::Client));
        assert!(parked.as_mut().poll(&mut cx).is_pending());
        assert_eq!(life.park_idle(), 0, "the first sweep only notes the wait");
        assert!(parked.as_mut().poll(&mut cx).is_pending());

        // The request came: the wait ended before the second sweep.
        idle.set_idle(false);
        idle.set_idle(true);
        let mut parked = pin!(idle.parked(Side::Client));
        assert!(parked.as_mut().poll(&mut cx).is_pending());
        assert_eq!(life.park_idle(), 0, "a new wait starts over");
        assert_eq!(life.park_idle(), 1);
        assert_eq!(parked.as_mut().poll(&mut cx), Poll::Ready(()));
        assert_eq!(life.park_idle(), 0, "told once");
    }

    /// A relay's two directions park on their own; a wait that ended (its future dropped)
    /// starts over at the next one.
    #[test]
    fn each_side_parks_on_its_own() {
        let (_phase, phase_rx) = watch::channel(Phase::Serving);
        let life = Lifecycle::new(phase_rx);
        let relay = life.register(-1);
        let mut cx = Context::from_waker(Waker::noop());

        let mut from_client = pin!(relay.parked(Side::Client));
        assert!(from_client.as_mut().poll(&mut cx).is_pending());
        let mut from_upstream = Box::pin(relay.parked(Side::Upstream));
        assert!(from_upstream.as_mut().poll(&mut cx).is_pending());
        assert_eq!(life.park_idle(), 0, "the first sweep notes both");
        // Bytes came from the upstream: its wait ended, and the next one starts over.
        drop(from_upstream);
        let mut from_upstream = pin!(relay.parked(Side::Upstream));
        assert!(from_upstream.as_mut().poll(&mut cx).is_pending());
        assert_eq!(life.park_idle(), 1, "only the client's wait was seen twice");
        assert_eq!(from_client.as_mut().poll(&mut cx), Poll::Ready(()));
        assert!(from_upstream.as_mut().poll(&mut cx).is_pending());
        assert_eq!(life.park_idle(), 1);
        assert_eq!(from_upstream.as_mut().poll(&mut cx), Poll::Ready(()));
    }
}
