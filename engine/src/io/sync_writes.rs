//! Where a write that meets an fdatasync of its file is made: inline on
//! the shard thread, or handed to an io-wq worker.
//!
//! Inline is cheaper (no hand-off, no two wake-ups on a machine whose CPUs
//! the client shares), and on ext4 without a journal a page-cache write
//! during a sync waited at most 4 ms here: at half rate with 4 partitions
//! the broker's Produce p99 fell to ≤ 1 ms and the request round trip by a
//! third (docs/benchmarks.md, "Writes during a sync").
//! On ext4 with a journal the same write can wait for the commit the sync
//! forced, 30–60 ms measured, and inline that stalls every partition of the
//! shard. Which file system a log directory is on, and how it behaves, is
//! measured rather than guessed: inline writes made during a sync are
//! timed, and once a few in a window were slow, such writes go to io-wq for
//! a back-off that doubles while the probes after it keep failing.
//!
//! Pure logic, fed the durations by the io layer ([`super::uring`]).

use std::time::{Duration, Instant};

/// A page-cache write of at most one round (1 MiB) takes well under a
/// millisecond here; one this slow waited for something.
const SLOW_WRITE: Duration = Duration::from_millis(2);
/// One write this slow is enough: it waited for a commit, and probing on
/// would stall the shard again (30–60 ms each on a journaled ext4).
const STALLED_WRITE: Duration = Duration::from_millis(10);
/// Inline writes during syncs counted per window.
const WINDOW: u32 = 1024;
/// Slow writes in one window that send such writes to io-wq.
const STRIKES: u32 = 4;
/// The first back-off; each failed probe after it doubles it, up to
/// [`MAX_BACKOFF`]; a clean window resets it.
const FIRST_BACKOFF: Duration = Duration::from_secs(30);
const MAX_BACKOFF: Duration = Duration::from_secs(30 * 64);

/// The decision state of one shard thread.
#[derive(Debug, Clone)]
pub struct SyncWrites {
    mode: Mode,
    backoff: Duration,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// Inline, counting this window's writes and slow ones.
    Inline { writes: u32, slow: u32 },
    /// io-wq until then.
    Handed { until: Instant },
}

/// A switch to io-wq, for the caller's log line: `slow` of the window's
/// `writes` were slow (the last one perhaps stalled); io-wq for `backoff`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Switch {
    pub slow: u32,
    pub writes: u32,
    pub backoff: Duration,
}

impl Default for SyncWrites {
    fn default() -> Self {
        Self {
            mode: Mode::Inline { writes: 0, slow: 0 },
            backoff: FIRST_BACKOFF,
        }
    }
}

impl SyncWrites {
    /// Whether a write that meets a sync of its file at `now` goes inline.
    pub fn inline(&mut self, now: Instant) -> bool {
        match self.mode {
            Mode::Inline { .. } => true,
            Mode::Handed { until } if now >= until => {
                // Probe again: a window's worth of inline writes decides.
                self.mode = Mode::Inline { writes: 0, slow: 0 };
                true
            }
            Mode::Handed { .. } => false,
        }
    }

    /// An inline write made during a sync took `took`, ending at `now`.
    pub fn record(&mut self, now: Instant, took: Duration) -> Option<Switch> {
        let Mode::Inline { writes, slow } = &mut self.mode else {
            // Only writes that `inline` let through are timed; nothing to
            // count while handed off.
            return None;
        };
        *writes += 1;
        if took >= SLOW_WRITE {
            *slow += 1;
        }
        if *slow >= STRIKES || took >= STALLED_WRITE {
            let switch = Switch {
                slow: *slow,
                writes: *writes,
                backoff: self.backoff,
            };
            self.mode = Mode::Handed {
                until: now + self.backoff,
            };
            self.backoff = (self.backoff * 2).min(MAX_BACKOFF);
            return Some(switch);
        }
        if *writes >= WINDOW {
            self.mode = Mode::Inline { writes: 0, slow: 0 };
            self.backoff = FIRST_BACKOFF;
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FAST: Duration = Duration::from_micros(100);

    #[test]
    fn fast_writes_stay_inline_and_scattered_slow_ones_do_not_switch() {
        let mut p = SyncWrites::default();
        let t = Instant::now();
        // STRIKES - 1 slow writes in every window, for many windows.
        for w in 0..20 {
            for i in 0..WINDOW {
                assert!(p.inline(t));
                let took = if i < STRIKES - 1 { SLOW_WRITE } else { FAST };
                assert_eq!(p.record(t, took), None, "window {w} write {i}");
            }
        }
        assert!(p.inline(t));
    }

    /// The switch after a window's first [`STRIKES`] writes, all slow.
    fn struck(backoff: Duration) -> Option<Switch> {
        Some(Switch {
            slow: STRIKES,
            writes: STRIKES,
            backoff,
        })
    }

    #[test]
    fn slow_writes_hand_off_for_a_backoff_that_doubles_until_a_clean_window() {
        let mut p = SyncWrites::default();
        let mut t = Instant::now();
        let trip = |p: &mut SyncWrites, t: Instant| {
            let mut switch = None;
            for _ in 0..STRIKES {
                assert!(p.inline(t));
                switch = p.record(t, Duration::from_millis(3));
            }
            switch
        };
        assert_eq!(trip(&mut p, t), struck(FIRST_BACKOFF));
        assert!(!p.inline(t));
        assert!(!p.inline(t + FIRST_BACKOFF - Duration::from_millis(1)));
        // The probe after the back-off fails: twice as long now.
        t += FIRST_BACKOFF;
        assert_eq!(trip(&mut p, t), struck(FIRST_BACKOFF * 2));
        assert!(!p.inline(t + FIRST_BACKOFF));
        t += FIRST_BACKOFF * 2;
        // A clean window resets the back-off.
        for _ in 0..WINDOW {
            assert!(p.inline(t));
            assert_eq!(p.record(t, FAST), None);
        }
        assert_eq!(trip(&mut p, t), struck(FIRST_BACKOFF));
    }

    #[test]
    fn one_stalled_write_is_enough() {
        let mut p = SyncWrites::default();
        let t = Instant::now();
        assert_eq!(p.record(t, FAST), None);
        assert_eq!(
            p.record(t, STALLED_WRITE),
            Some(Switch {
                slow: 1,
                writes: 2,
                backoff: FIRST_BACKOFF
            })
        );
        assert!(!p.inline(t));
    }

    #[test]
    fn the_backoff_is_capped() {
        let mut p = SyncWrites::default();
        let mut t = Instant::now();
        let mut last = Duration::ZERO;
        for _ in 0..20 {
            assert!(p.inline(t));
            let mut switch = None;
            for _ in 0..STRIKES {
                switch = switch.or(p.record(t, SLOW_WRITE));
            }
            let Some(Switch { backoff, .. }) = switch else {
                panic!("no switch");
            };
            assert!(backoff <= MAX_BACKOFF);
            last = backoff;
            t += backoff;
        }
        assert_eq!(last, MAX_BACKOFF);
    }

    #[test]
    fn a_write_decided_inline_before_a_switch_is_not_counted_after_it() {
        let mut p = SyncWrites::default();
        let t = Instant::now();
        for _ in 0..STRIKES {
            p.record(t, SLOW_WRITE);
        }
        assert!(!p.inline(t));
        assert_eq!(p.record(t, SLOW_WRITE), None);
        assert!(!p.inline(t + FIRST_BACKOFF / 2));
    }
}
