//! Process-wide counters of the engine's disk work, for metrics. Relaxed
//! atomics: one add per fdatasync, nothing on the append path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static FSYNCS: AtomicU64 = AtomicU64::new(0);
static FSYNC_MICROS: AtomicU64 = AtomicU64::new(0);

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
