//! Open-loop pacing: a fixed timetable of sends, and a timer fine enough to keep it.
//!
//! A closed-loop generator sends a request when the previous one's response has arrived, so
//! a stall of the system under test also stalls the generator: the requests it would have
//! sent meanwhile are never sent, and never measured as slow (coordinated omission). Here
//! send `k` is due at `start + k / rate` whatever happens. Workers claim sends in order from
//! one shared [`Schedule`], each waits for its send's due time on its own [`HrTimer`], and
//! latency is measured from the **due time**: a send whose worker was still busy with a slow
//! response goes out late, and the wait counts in its latency, as it would for a real client
//! (wrk2's approach).
//!
//! tokio's timer has a resolution of 1 ms: too coarse for a schedule of one send every
//! 200 µs and latencies of tens of µs, since every send would go out up to 1 ms late and
//! that lateness would be measured as latency. [`HrTimer`] is a `timerfd` (a kernel hrtimer;
//! timerfds get no timer slack) armed at the absolute due time and read through the tokio
//! reactor, so a send goes out within a few µs of its due time on an idle load CPU.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

/// A fixed timetable: `rate` sends per second from `start`, for `duration`.
#[derive(Debug)]
pub struct Schedule {
    start: Instant,
    rate: f64,
    /// Sends in the timetable: those due before `start + duration`.
    sends: u64,
    next: AtomicU64,
}

/// A one-shot timer with nanosecond resolution, read through the tokio reactor. One per
/// task: a task waits on its own timer.
#[derive(Debug)]
pub struct HrTimer {
    fd: AsyncFd<OwnedFd>,
    /// One moment on both clocks: `Instant` is CLOCK_MONOTONIC on Linux, but opaque.
    base: Instant,
    base_ns: u128,
}

// === impl Schedule ===

impl Schedule {
    pub fn new(start: Instant, rate: f64, duration: Duration) -> Self {
        assert!(rate > 0.0, "a schedule needs a positive rate");
        Self {
            start,
            rate,
            sends: (duration.as_secs_f64() * rate).ceil() as u64,
            next: AtomicU64::new(0),
        }
    }

    /// The due time of the next unclaimed send, which is the caller's; `None` once every
    /// send of the timetable has been claimed.
    pub fn claim(&self) -> Option<Instant> {
        let k = self.next.fetch_add(1, Ordering::Relaxed);
        (k < self.sends).then(|| self.due(k))
    }

    /// When send `k` is due.
    pub fn due(&self, k: u64) -> Instant {
        self.start + Duration::from_nanos((k as f64 * 1e9 / self.rate).round() as u64)
    }

    /// How many sends the timetable has.
    pub fn sends(&self) -> u64 {
        self.sends
    }

    /// How many sends have been claimed so far.
    pub fn claimed(&self) -> u64 {
        self.next.load(Ordering::Relaxed).min(self.sends)
    }

    pub fn rate(&self) -> f64 {
        self.rate
    }
}

// === impl HrTimer ===

impl HrTimer {
    /// A timer on CLOCK_MONOTONIC; must be made within a tokio runtime with I/O enabled.
    pub fn new() -> io::Result<Self> {
        let fd = sys::timerfd()?;
        let base = Instant::now();
        let base_ns = sys::monotonic_ns()?;
        Ok(Self { fd, base, base_ns })
    }

    /// Returns at `due` (at once if it has passed).
    pub async fn sleep_until(&mut self, due: Instant) -> io::Result<()> {
        // The clock is checked after each expiration, in case it was one armed earlier by a
        // sleep that was cancelled.
        while Instant::now() < due {
            // `due` is after now, so after `base`.
            let at = self.base_ns + due.duration_since(self.base).as_nanos();
            sys::arm(self.fd.get_ref().as_raw_fd(), at)?;
            let mut guard = self.fd.readable().await?;
            // `Err`: the readiness was stale, and is cleared; wait again.
            if let Ok(expired) = guard.try_io(|fd| sys::read_expirations(fd.get_ref().as_raw_fd()))
            {
                expired?;
            }
        }
        Ok(())
    }
}

/// The timerfd and clock calls: the only unsafe code here.
#[allow(unsafe_code)]
mod sys {
    use super::*;

    /// A non-blocking timerfd on CLOCK_MONOTONIC, registered with the tokio reactor.
    pub fn timerfd() -> io::Result<AsyncFd<OwnedFd>> {
        // SAFETY: timerfd_create takes two integers and returns a new descriptor or -1.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just created and is owned by nothing else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: an `OwnedFd` keeps its descriptor open, and `as_raw_fd` returns that same
        // descriptor, until it is dropped with the `AsyncFd`.
        unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }.map_err(Into::into)
    }

    /// CLOCK_MONOTONIC now, in nanoseconds.
    pub fn monotonic_ns() -> io::Result<u128> {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: `ts` is a valid timespec for clock_gettime to write.
        if unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(ts.tv_sec as u128 * 1_000_000_000 + ts.tv_nsec as u128)
    }

    /// Arms `fd` once, to expire at `at_ns` on CLOCK_MONOTONIC (absolute).
    pub fn arm(fd: RawFd, at_ns: u128) -> io::Result<()> {
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: (at_ns / 1_000_000_000) as libc::time_t,
                tv_nsec: (at_ns % 1_000_000_000) as libc::c_long,
            },
        };
        // SAFETY: `spec` is a valid itimerspec; the old value is not asked for (null).
        let rc = unsafe {
            libc::timerfd_settime(fd, libc::TFD_TIMER_ABSTIME, &spec, std::ptr::null_mut())
        };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(())
    }

    /// Reads the expiration count; `WouldBlock` if the timer has not expired.
    pub fn read_expirations(fd: RawFd) -> io::Result<u64> {
        let mut count = 0u64;
        // SAFETY: reads at most 8 bytes into `count`, which has 8.
        let n = unsafe { libc::read(fd, (&mut count as *mut u64).cast(), 8) };
        if n != 8 {
            return Err(io::Error::last_os_error());
        }
        Ok(count)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_timetable_is_claimed_in_order() {
        let start = Instant::now();
        let s = Schedule::new(start, 4000.0, Duration::from_millis(10));
        assert_eq!(s.sends(), 40);
        assert_eq!(s.claim(), Some(start));
        assert_eq!(s.claim(), Some(start + Duration::from_micros(250)));
        for _ in 2..40 {
            assert!(s.claim().is_some());
        }
        assert_eq!(s.claimed(), 40);
        assert_eq!(s.claim(), None);
        assert_eq!(s.claimed(), 40);
        assert_eq!(s.due(39), start + Duration::from_micros(9750));
    }

    #[test]
    fn the_timer_keeps_sub_millisecond_times() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let mut timer = HrTimer::new().unwrap();
            // A past time returns at once.
            timer.sleep_until(Instant::now()).await.unwrap();
            // tokio's timer would be up to 1 ms late; the median here is µs on an idle
            // machine. A loose bound, and up to three tries of 20 sleeps: on a loaded test
            // machine (the whole suite runs beside it) one try can be preempted throughout.
            let mut tries = Vec::new();
            for _ in 0..3 {
                let start = Instant::now();
                let mut late = Vec::new();
                for k in 1..=20u32 {
                    let due = start + Duration::from_micros(150) * k;
                    timer.sleep_until(due).await.unwrap();
                    let now = Instant::now();
                    assert!(now >= due, "woke before its time");
                    late.push(now - due);
                }
                late.sort();
                if late[10] < Duration::from_micros(500) {
                    return;
                }
                tries.push(late);
            }
            panic!("the median lateness was 500 µs or more in every try: {tries:?}");
        });
    }
}
