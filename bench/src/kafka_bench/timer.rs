//! A sleep with microsecond precision for the open-loop generator.
//!
//! tokio's timer wheel ticks at 1 ms, so a producer that sleeps until its
//! next batch is due wakes up to 1 ms late, and that delay (the tool's own,
//! not the broker's) lands in every message's latency. A `timerfd` armed for
//! the exact deadline and polled through tokio wakes within tens of µs, with
//! one wake-up per batch rather than per message (see `client::producer`).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Instant;

use tokio::io::unix::AsyncFd;
use tokio::io::Interest;

pub struct PreciseTimer {
    fd: AsyncFd<OwnedFd>,
}

impl PreciseTimer {
    pub fn new() -> io::Result<Self> {
        // SAFETY: plain syscall; the result is checked before use.
        let fd = unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_NONBLOCK | libc::TFD_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` is a fresh descriptor owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        // SAFETY: the OwnedFd stays open and the same for the AsyncFd's life.
        let fd = unsafe { AsyncFd::register_with_interest(fd, Interest::READABLE) }
            .map_err(io::Error::from)?;
        Ok(Self { fd })
    }

    /// Sleep until `deadline` (at once if it has passed). Re-arming resets
    /// the timer, so a sleep abandoned in a `select!` leaves nothing behind.
    pub async fn sleep_until(&mut self, deadline: Instant) -> io::Result<()> {
        let Some(wait) = deadline.checked_duration_since(Instant::now()) else {
            return Ok(());
        };
        if wait.is_zero() {
            return Ok(());
        }
        let spec = libc::itimerspec {
            it_interval: libc::timespec {
                tv_sec: 0,
                tv_nsec: 0,
            },
            it_value: libc::timespec {
                tv_sec: wait.as_secs() as libc::time_t,
                tv_nsec: wait.subsec_nanos() as libc::c_long,
            },
        };
        let raw = self.fd.get_ref().as_raw_fd();
        // SAFETY: `raw` is our open timerfd and `spec` a valid itimerspec.
        if unsafe { libc::timerfd_settime(raw, 0, &spec, std::ptr::null_mut()) } < 0 {
            return Err(io::Error::last_os_error());
        }
        loop {
            let mut guard = self.fd.readable().await?;
            let mut expirations = [0u8; 8];
            // SAFETY: reads at most 8 bytes into a local buffer.
            let n = unsafe { libc::read(raw, expirations.as_mut_ptr().cast(), 8) };
            if n == 8 {
                return Ok(());
            }
            let e = io::Error::last_os_error();
            if e.kind() != io::ErrorKind::WouldBlock {
                return Err(e);
            }
            // Readiness left over from an earlier arming: wait for this one.
            guard.clear_ready();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[tokio::test]
    async fn wakes_after_the_deadline_and_rearms() {
        let mut t = PreciseTimer::new().unwrap();
        for wait_us in [300u64, 50, 2_000] {
            let start = Instant::now();
            let deadline = start + Duration::from_micros(wait_us);
            t.sleep_until(deadline).await.unwrap();
            assert!(Instant::now() >= deadline, "woke before the deadline");
        }
        // an abandoned sleep does not end the next one early
        let far = Instant::now() + Duration::from_millis(50);
        let _ = tokio::time::timeout(Duration::from_millis(1), t.sleep_until(far)).await;
        let deadline = Instant::now() + Duration::from_millis(20);
        t.sleep_until(deadline).await.unwrap();
        assert!(Instant::now() >= deadline);
        // nor does one that expired unread
        let soon = Instant::now() + Duration::from_micros(100);
        let _ = tokio::time::timeout(Duration::ZERO, t.sleep_until(soon)).await;
        std::thread::sleep(Duration::from_millis(2));
        let deadline = Instant::now() + Duration::from_millis(20);
        t.sleep_until(deadline).await.unwrap();
        assert!(Instant::now() >= deadline, "a stale expiry ended the sleep");
        // a past deadline returns at once
        t.sleep_until(Instant::now() - Duration::from_millis(1))
            .await
            .unwrap();
    }
}
