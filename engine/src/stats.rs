//! Process-wide counters of the engine's disk work, for metrics. Relaxed
//! atomics: adds per fdatasync and per write, none per record set.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

static FSYNCS: AtomicU64 = AtomicU64::new(0);
static FSYNC_MICROS: AtomicU64 = AtomicU64::new(0);
static WRITES: AtomicU64 = AtomicU64::new(0);
static SETS_WRITTEN: AtomicU64 = AtomicU64::new(0);
static DURING_SYNC_INLINE: AtomicU64 = AtomicU64::new(0);
static DURING_SYNC_IO_WQ: AtomicU64 = AtomicU64::new(0);
static SYNC_WRITE_HANDOFFS: AtomicU64 = AtomicU64::new(0);

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

/// Count one write made while an fdatasync of its file ran: inline on the
/// shard thread, or through io-wq (see `io::sync_writes`).
pub fn record_write_during_sync(inline: bool) {
    let counter = if inline {
        &DURING_SYNC_INLINE
    } else {
        &DURING_SYNC_IO_WQ
    };
    counter.fetch_add(1, Ordering::Relaxed);
}

/// (inline, io-wq) writes made during a sync of their file.
pub fn writes_during_sync() -> (u64, u64) {
    (
        DURING_SYNC_INLINE.load(Ordering::Relaxed),
        DURING_SYNC_IO_WQ.load(Ordering::Relaxed),
    )
}

/// Count one switch of a shard's writes during syncs to io-wq (slow inline).
pub fn record_sync_write_handoff() {
    SYNC_WRITE_HANDOFFS.fetch_add(1, Ordering::Relaxed);
}

/// Switches of writes during syncs to io-wq since the process started.
pub fn sync_write_handoffs() -> u64 {
    SYNC_WRITE_HANDOFFS.load(Ordering::Relaxed)
}
