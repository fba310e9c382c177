//! The I/O seam of the engine.
//!
//! The partition log decides *what* to read, write and sync; a [`Storage`]
//! carries it out. [`uring::UringStorage`] does it through the shard's io_uring
//! (compio); [`mem::MemStorage`] keeps files in memory and can simulate a crash
//! that drops or tears unsynced bytes, so the log can be tested (and later
//! driven by a deterministic simulator) without a disk.

pub mod mem;
pub mod splice;
pub mod sync_writes;
pub mod uring;

use std::future::Future;
use std::io;
use std::path::Path;

use bytes::Bytes;

/// A file of a partition directory (segment log, offset index or time index).
///
/// Handles are cheap to clone and keep the file readable after it is deleted,
/// so a reader that holds a [`crate::log::FileSlice`] can finish its send.
#[allow(async_fn_in_trait, clippy::len_without_is_empty)]
pub trait StorageFile: Clone + 'static {
    /// Read up to `len` bytes at `pos`; fewer only at end of file.
    fn read_at(&self, pos: u64, len: usize) -> impl Future<Output = io::Result<Vec<u8>>>;
    /// Write all of `bufs`, one after another, at `pos` (a vectored write:
    /// an append is the producer's bytes plus small rewritten headers, and
    /// none of it is copied into one buffer first).
    fn write_all_at(&self, pos: u64, bufs: Vec<Bytes>) -> impl Future<Output = io::Result<()>>;
    /// fdatasync: make every byte written so far durable.
    fn sync_data(&self) -> impl Future<Output = io::Result<()>>;
    /// Truncate (or extend with zeros) to `len` bytes.
    fn set_len(&self, len: u64) -> impl Future<Output = io::Result<()>>;
    /// Current length in bytes.
    fn len(&self) -> impl Future<Output = io::Result<u64>>;
    /// Reserve disk blocks for `[pos, pos + len)` without changing the
    /// length (`fallocate` with `FALLOC_FL_KEEP_SIZE`). Appends into
    /// reserved blocks skip the file system's per-page delayed-allocation
    /// work (about a quarter of the page-cache write cost on ext4, see
    /// docs/benchmarks.md). Blocks past the end are freed by
    /// [`Self::set_len`]. Not on the caller's thread: the call takes the
    /// inode lock and can wait for a journal commit (1–11 ms measured here).
    fn reserve(&self, pos: u64, len: u64) -> impl Future<Output = io::Result<()>>;
    /// Ask the OS to drop the cached pages of `[pos, pos + len)` that are
    /// clean (written back); dirty pages stay, so no data is lost. The log
    /// calls it on durable bytes that fell out of its cache window, so the
    /// page cache recycles the same pages instead of taking fresh memory.
    /// Best effort and in the background: it returns at once, the pages
    /// go soon after (dropping 16 MiB took about 2 ms here, time the shard
    /// thread would not serve anyone).
    fn drop_cached(&self, pos: u64, len: u64);
}

/// Files, directories and the clock, as the partition log needs them.
#[allow(async_fn_in_trait)]
pub trait Storage: Clone + 'static {
    type File: StorageFile;
    /// Open for read and write, creating the file if `create` is set.
    fn open(&self, path: &Path, create: bool) -> impl Future<Output = io::Result<Self::File>>;
    /// Rename a file, atomically replacing `to` if it exists (POSIX
    /// `rename`); durable once the directory is synced.
    fn rename(&self, from: &Path, to: &Path) -> impl Future<Output = io::Result<()>>;
    /// Remove one file; a missing file is not an error.
    fn remove(&self, path: &Path) -> impl Future<Output = io::Result<()>>;
    /// Create a directory and its parents.
    fn create_dir_all(&self, path: &Path) -> impl Future<Output = io::Result<()>>;
    /// Remove a directory and everything in it; a missing one is not an error.
    fn remove_dir_all(&self, path: &Path) -> impl Future<Output = io::Result<()>>;
    /// File names (not paths) directly inside `path`.
    fn list(&self, path: &Path) -> impl Future<Output = io::Result<Vec<String>>>;
    /// Make the directory's entries (created or removed files) durable.
    fn sync_dir(&self, path: &Path) -> impl Future<Output = io::Result<()>>;
    /// Run a task beside the caller on this shard (group-commit flushes run
    /// this way so a caller that gives up cannot strand other waiters).
    fn spawn(&self, task: impl Future<Output = ()> + 'static);
    /// Wall-clock milliseconds since the Unix epoch (simulated in tests).
    fn now_ms(&self) -> u64;
}
