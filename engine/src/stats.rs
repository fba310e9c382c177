//! Process-wide counters of the engine's disk work, for metrics. Relaxed
//! atomics: adds per fdatasync and per write, none per record set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static FSYNCS: AtomicU64 = AtomicU64::new(0);
static FSYNC_MICROS: AtomicU64 = AtomicU64::new(0);
static WRITES: AtomicU64 = AtomicU64::new(0);
static SETS_WRITTEN: AtomicU64 = AtomicU64::new(0);

/// Count one write of appended record sets (`sets` of them combined,
/// idempotent retries among them included).
pub fn record_write(sets: usize) {
    WRITES.fetch_add(1, Ordering::Relaxed);
    SETS_WRITTEN.fetch_add(sets as u64, Ordering::Relaxed);
}

/// (writes of appended sets, sets they carried) since the process started.
pub fn writes() -> (u64, u64) {
    (
        WRITES.load(Ordering::Relaxed),
        SETS_WRITTEN.load(Ordering::Relaxed),
    )
}

/// Count one fdatasync of a segment and how long it took.
pub fn record_fsync(took: Duration) {
    FSYNCS.fetch_add(1, Ordering::Relaxed);
    FSYNC_MICROS.fetch_add(took.as_micros() as u64, Ordering::Relaxed);
}

/// (fdatasyncs, total microseconds spent in them) since the process started.
pub fn fsyncs() -> (u64, u64) {
    (
        FSYNCS.load(Ordering::Relaxed),
        FSYNC_MICROS.load(Ordering::Relaxed),
    )
}
