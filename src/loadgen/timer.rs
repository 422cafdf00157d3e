//! A high-resolution deadline timer for the open loop's pacer: a Linux timerfd on
//! `CLOCK_MONOTONIC`, armed with an absolute deadline (`TFD_TIMER_ABSTIME`) and awaited through
//! tokio's reactor (`AsyncFd`). The kernel fires it within microseconds of the deadline (an
//! hrtimer, no timer slack), where tokio's own timer rounds every deadline up to its next 1 ms
//! tick. One timer serves one waiter at a time (`&mut self`). It decides nothing about when to
//! wait: that is [`super::schedule`]'s. Also here: [`raise_to_realtime`], which puts the client's
//! thread (the one dispatcher) under `SCHED_FIFO`, so that a loaded machine does not preempt it
//! between the timer and the send (`verify --realtime`).

use std::io;
use std::os::fd::{AsFd, AsRawFd, RawFd};
use std::time::{Duration, Instant};

use nix::sys::time::TimeSpec;
use nix::sys::timerfd::{ClockId, Expiration, TimerFd, TimerFlags, TimerSetTimeFlags};
use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

#[derive(Debug, thiserror::Error)]
pub enum TimerError {
    #[error("failed to create a timerfd on CLOCK_MONOTONIC: {source}")]
    Create { source: nix::Error },
    #[error("failed to register the timerfd with tokio's reactor: {source}")]
    Register { source: io::Error },
    #[error("failed to read CLOCK_MONOTONIC: {source}")]
    Clock { source: nix::Error },
    #[error("failed to arm the timerfd for {deadline:?}: {source}")]
    Arm { deadline: TimeSpec, source: nix::Error },
    #[error("failed to wait on the timerfd: {source}")]
    Wait { source: io::Error },
    #[error(
        "failed to put the client's thread under SCHED_FIFO (needs root or CAP_SYS_NICE): {source}"
    )]
    Realtime { source: io::Error },
}

/// Puts the calling thread, and the threads it starts afterwards, under `SCHED_FIFO` priority 1:
/// it then runs whenever it is runnable, before every ordinary process on its CPU (the kernel
/// still leaves those 5 % of each second, `sched_rt_runtime_us`). Children it forks go back to
/// the normal policy (`SCHED_RESET_ON_FORK`). Refused without root or `CAP_SYS_NICE`.
pub fn raise_to_realtime() -> Result<(), TimerError> {
    let param = libc::sched_param { sched_priority: 1 };
    // SAFETY: `param` is an initialised `sched_param` on this stack frame, only read by the
    // call, which changes the calling thread's policy (pid 0) and nothing else.
    let rc = unsafe {
        libc::sched_setscheduler(0, libc::SCHED_FIFO | libc::SCHED_RESET_ON_FORK, &param)
    };
    if rc != 0 {
        return Err(TimerError::Realtime { source: io::Error::last_os_error() });
    }
    Ok(())
}

/// `TimerFd` with the `AsRawFd` that `AsyncFd` asks for.
#[derive(Debug)]
struct Fd(TimerFd);

impl AsRawFd for Fd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_fd().as_raw_fd()
    }
}

/// A one-shot timerfd registered with the current tokio runtime.
#[derive(Debug)]
pub struct DeadlineTimer {
    fd: AsyncFd<Fd>,
}

impl DeadlineTimer {
    /// A new timer; call it inside a tokio runtime with I/O enabled.
    pub fn new() -> Result<Self, TimerError> {
        let flags = TimerFlags::TFD_NONBLOCK | TimerFlags::TFD_CLOEXEC;
        let fd = TimerFd::new(ClockId::CLOCK_MONOTONIC, flags)
            .map_err(|source| TimerError::Create { source })?;
        // SAFETY: `Fd` owns the timerfd (an `OwnedFd` inside `TimerFd`), so the descriptor is
        // valid and open for as long as the `AsyncFd` holding it, and `as_raw_fd` always
        // returns that one descriptor.
        let fd = unsafe { AsyncFd::register_with_interest(Fd(fd), Interest::READABLE) }
            .map_err(|e| TimerError::Register { source: e.into() })?;
        Ok(Self { fd })
    }

    /// Returns at `deadline` (or at once when it has passed), a few microseconds late on an
    /// idle machine. Cancel-safe: dropping the future leaves the timer armed, and the next call
    /// re-arms it.
    pub async fn sleep_until(&mut self, deadline: Instant) -> Result<(), TimerError> {
        let deadline = monotonic_at(deadline)?;
        self.fd
            .get_ref()
            .0
            .set(Expiration::OneShot(deadline), TimerSetTimeFlags::TFD_TIMER_ABSTIME)
            .map_err(|source| TimerError::Arm { deadline, source })?;
        loop {
            let mut ready =
                self.fd.readable().await.map_err(|source| TimerError::Wait { source })?;
            // The count of expirations; 8 bytes once the timer fired, EAGAIN before. A timer
            // re-armed after an earlier wait that was dropped may have a stale readiness: the
            // read says so (EAGAIN), and the readiness is cleared for the next event.
            let read = ready.try_io(|fd| {
                nix::unistd::read(fd.get_ref().0.as_fd(), &mut [0u8; 8]).map_err(io::Error::from)
            });
            match read {
                Ok(Ok(_)) => return Ok(()),
                Ok(Err(source)) => return Err(TimerError::Wait { source }),
                Err(_would_block) => continue,
            }
        }
    }
}

/// `at` on `CLOCK_MONOTONIC` (the clock of `std::time::Instant` on Linux, whose value it does
/// not expose): the clock read now plus the distance to `at`, so off by the nanoseconds between
/// the two reads. An instant already past maps to now.
fn monotonic_at(at: Instant) -> Result<TimeSpec, TimerError> {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC)
        .map_err(|source| TimerError::Clock { source })?;
    let ahead = at.saturating_duration_since(Instant::now());
    Ok(add(now, ahead))
}

/// `ts + d` without overflow of the nanoseconds field.
fn add(ts: TimeSpec, d: Duration) -> TimeSpec {
    let total = Duration::new(ts.tv_sec() as u64, ts.tv_nsec() as u32) + d;
    TimeSpec::from_duration(total)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adding_carries_nanoseconds_into_seconds() {
        let ts = TimeSpec::new(5, 999_999_000);
        let sum = add(ts, Duration::from_micros(3));
        assert_eq!((sum.tv_sec(), sum.tv_nsec()), (6, 2_000));
    }

    #[test]
    fn realtime_is_fifo_when_permitted_and_a_permission_error_otherwise() {
        // A thread of its own: the policy is per thread, and the test's runner thread keeps its.
        std::thread::spawn(|| match raise_to_realtime() {
            Ok(()) => {
                // SAFETY: reads the calling thread's policy; no pointers.
                let policy = unsafe { libc::sched_getscheduler(0) };
                assert_eq!(policy & !libc::SCHED_RESET_ON_FORK, libc::SCHED_FIFO);
            }
            Err(TimerError::Realtime { source }) => {
                assert_eq!(source.raw_os_error(), Some(libc::EPERM), "{source}")
            }
            Err(e) => panic!("unexpected error {e}"),
        })
        .join()
        .unwrap();
    }

    #[tokio::test(flavor = "current_thread")]
    async fn fires_at_the_deadline_and_never_before() {
        let mut t = DeadlineTimer::new().unwrap();
        for ahead in [300u64, 1_500, 40] {
            let deadline = Instant::now() + Duration::from_micros(ahead);
            t.sleep_until(deadline).await.unwrap();
            assert!(Instant::now() >= deadline, "woke before a deadline {ahead} us ahead");
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_deadline_in_the_past_returns_at_once() {
        let mut t = DeadlineTimer::new().unwrap();
        let begin = Instant::now();
        t.sleep_until(begin - Duration::from_millis(5)).await.unwrap();
        assert!(begin.elapsed() < Duration::from_millis(500));
    }

    /// The point of the timer: tokio's wheel rounds a sub-millisecond deadline up to its next
    /// 1 ms tick; the timerfd does not. The median of 50 sleeps of 200 us is compared, with a
    /// margin a loaded CI machine leaves: the wheel's median is at least the rest of a tick.
    #[tokio::test(flavor = "current_thread")]
    async fn sub_millisecond_deadlines_are_not_rounded_to_the_millisecond_tick() {
        let mut t = DeadlineTimer::new().unwrap();
        let mut late = Vec::new();
        for _ in 0..50 {
            let deadline = Instant::now() + Duration::from_micros(200);
            t.sleep_until(deadline).await.unwrap();
            late.push(Instant::now() - deadline);
        }
        late.sort();
        assert!(late[25] < Duration::from_micros(400), "timerfd median lateness {:?}", late[25]);
    }
}
