//! [`Storage`] on the shard's io_uring (compio).
//!
//! Every read, fdatasync, open, unlink and truncate is submitted to the ring
//! of the thread that calls it, so these must run on a compio runtime (a
//! shard thread); appends are plain `pwritev` calls on that thread, or ring
//! ops when they would wait (see [`StorageFile::write_all_at`]). Directory listing and recursive removal have no io_uring
//! opcode, and compio 0.19 has none for `fallocate` and `fadvise`; they run
//! on compio's blocking pool, never on the shard thread.

use compio::buf::IntoInner;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::ffi::CString;
use std::io;
use std::os::fd::{FromRawFd, IntoRawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use compio::buf::BufResult;
use compio::buf::IoVectoredBuf;
use compio::driver::op::{
    CurrentDir, Mode, OFlags, OpenFile, ReadAt, Sync, TruncateFile, WriteVectoredAt,
};

use super::sync_writes::{Switch, SyncWrites};
use super::{Storage, StorageFile};

/// A file opened through io_uring. The `Arc` makes it `Send` (a fetch may
/// splice it on another shard) and keeps it open while any slice of it lives.
/// The second field counts the fdatasyncs and block reservations in flight
/// on the file (see [`StorageFile::write_all_at`]).
#[derive(Clone, Debug)]
pub struct UringFile(pub Arc<std::fs::File>, Arc<Busy>);

/// What is in flight on a file that a write may meet.
#[derive(Debug, Default)]
struct Busy {
    syncs: AtomicU32,
    reservations: AtomicU32,
}

thread_local! {
    /// This shard thread's measure of whether writes during a sync may run
    /// inline (a shard's logs share its thread, and mostly its file system).
    static SYNC_WRITES: RefCell<SyncWrites> = RefCell::new(SyncWrites::default());
}

impl UringFile {
    pub fn new(file: std::fs::File) -> Self {
        Self(Arc::new(file), Arc::default())
    }

    pub fn std(&self) -> &std::fs::File {
        &self.0
    }
}

/// Counts a sync or reservation in flight until it finishes or is dropped.
struct InFlight<'a>(&'a AtomicU32);

impl<'a> InFlight<'a> {
    fn start(count: &'a AtomicU32) -> Self {
        count.fetch_add(1, Ordering::Relaxed);
        Self(count)
    }
}

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

impl StorageFile for UringFile {
    async fn read_at(&self, pos: u64, len: usize) -> io::Result<Vec<u8>> {
        let mut out: Vec<u8> = Vec::new();
        while out.len() < len {
            let want = len - out.len();
            let op = ReadAt::new(
                self.0.clone(),
                pos + out.len() as u64,
                Vec::with_capacity(want),
            );
            let BufResult(res, mut chunk) = compio::runtime::submit(op).await.into_inner();
            let n = res?.min(want);
            // SAFETY: the kernel initialised the first `n` bytes of `chunk`.
            unsafe { chunk.set_len(n) };
            if n == 0 {
                break;
            }
            if out.is_empty() {
                out = chunk;
            } else {
                out.extend_from_slice(&chunk);
            }
        }
        Ok(out)
    }

    /// A plain `pwritev` on the calling (shard) thread, unless a block
    /// reservation of the file is in flight, or an fdatasync of it is and
    /// this thread measured such writes to be slow ([`SyncWrites`]); then
    /// through io_uring.
    ///
    /// On ext4 io_uring cannot try a buffered write without blocking
    /// (`RWF_NOWAIT` gives EOPNOTSUPP there), so it hands every write to an
    /// io-wq worker thread: the copy into the page cache runs on another
    /// thread, plus two context switches per write, which on a 2-CPU
    /// machine cost more than the copy (docs/benchmarks.md). A write during
    /// a reservation waits for the inode lock that `fallocate` holds, and
    /// on a journaling file system one during an fdatasync can wait for
    /// the commit it forced; inline, that would stall the whole shard. A
    /// page-cache write otherwise does not wait for the disk, except when
    /// the kernel throttles writers for too many dirty pages (the flush
    /// policy's background fdatasyncs keep that backlog small).
    async fn write_all_at(&self, pos: u64, bufs: Vec<Bytes>) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        if self.1.reservations.load(Ordering::Relaxed) > 0 {
            return self.write_all_at_uring(pos, bufs).await;
        }
        if self.1.syncs.load(Ordering::Relaxed) == 0 {
            return write_inline(self.0.as_raw_fd(), pos, bufs);
        }
        let started = Instant::now();
        let inline = SYNC_WRITES.with_borrow_mut(|p| p.inline(started));
        crate::stats::record_write_during_sync(inline);
        if !inline {
            return self.write_all_at_uring(pos, bufs).await;
        }
        let written = write_inline(self.0.as_raw_fd(), pos, bufs);
        let now = Instant::now();
        let took = now - started;
        if let Some(Switch {
            slow,
            writes,
            backoff,
        }) = SYNC_WRITES.with_borrow_mut(|p| p.record(now, took))
        {
            crate::stats::record_sync_write_handoff();
            tracing::warn!(
                slow,
                writes,
                backoff_s = backoff.as_secs(),
                "writes made during an fdatasync of their file waited (the file system's journal?): they go to io-wq for a while"
            );
        }
        written
    }

    async fn sync_data(&self) -> io::Result<()> {
        let _count = InFlight::start(&self.1.syncs);
        let op = Sync::new(self.0.clone(), true);
        compio::runtime::submit(op).await.0.map(|_| ())
    }

    async fn set_len(&self, len: u64) -> io::Result<()> {
        let op = TruncateFile::new(self.0.clone(), len);
        compio::runtime::submit(op).await.0.map(|_| ())
    }

    async fn len(&self) -> io::Result<u64> {
        // fstat of an open fd does not block on the disk.
        Ok(self.0.metadata()?.len())
    }

    /// `fallocate(KEEP_SIZE)` on compio's blocking pool.
    async fn reserve(&self, pos: u64, len: u64) -> io::Result<()> {
        use std::os::fd::AsRawFd;
        let (Ok(pos), Ok(len)) = (i64::try_from(pos), i64::try_from(len)) else {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "range too large",
            ));
        };
        let _count = InFlight::start(&self.1.reservations);
        let file = self.0.clone();
        blocking(move || {
            // SAFETY: a plain syscall on an fd `file` keeps open.
            let r =
                unsafe { libc::fallocate(file.as_raw_fd(), libc::FALLOC_FL_KEEP_SIZE, pos, len) };
            if r == 0 {
                Ok(())
            } else {
                Err(io::Error::last_os_error())
            }
        })
        .await
    }

    /// `posix_fadvise(DONTNEED)` on compio's blocking pool, not awaited.
    fn drop_cached(&self, pos: u64, len: u64) {
        use std::os::fd::AsRawFd;
        let (Ok(pos), Ok(len)) = (i64::try_from(pos), i64::try_from(len)) else {
            return;
        };
        let file = self.0.clone();
        compio::runtime::spawn_blocking(move || {
            // SAFETY: a plain syscall on an fd `file` keeps open.
            let r = unsafe {
                libc::posix_fadvise(file.as_raw_fd(), pos, len, libc::POSIX_FADV_DONTNEED)
            };
            if r != 0 {
                tracing::debug!(error = r, "posix_fadvise(DONTNEED) failed");
            }
        })
        .detach();
    }
}

impl UringFile {
    /// The io_uring (io-wq) form of [`StorageFile::write_all_at`].
    async fn write_all_at_uring(&self, pos: u64, bufs: Vec<Bytes>) -> io::Result<()> {
        let mut pending: VecDeque<Bytes> = bufs.into_iter().filter(|b| !b.is_empty()).collect();
        let mut pos = pos;
        while !pending.is_empty() {
            let take = pending.len().min(IOV_MAX);
            let batch = Chunks(pending.drain(..take).collect());
            let op = WriteVectoredAt::new(self.0.clone(), pos, batch);
            let BufResult(res, Chunks(mut batch)) = compio::runtime::submit(op).await.into_inner();
            let mut n = res?;
            if n == 0 {
                return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0"));
            }
            pos += n as u64;
            // Put back what a short write left, in order.
            let mut rest = VecDeque::new();
            for mut b in batch.drain(..) {
                if n >= b.len() {
                    n -= b.len();
                } else {
                    let _ = b.split_to(n);
                    n = 0;
                    rest.push_back(b);
                }
            }
            rest.extend(pending.drain(..));
            pending = rest;
        }
        Ok(())
    }
}

/// `pwritev` all of `bufs` at `pos` on the calling thread.
fn write_inline(fd: std::os::fd::RawFd, pos: u64, bufs: Vec<Bytes>) -> io::Result<()> {
    let mut pending: VecDeque<Bytes> = bufs.into_iter().filter(|b| !b.is_empty()).collect();
    let mut pos = pos;
    let mut iov: Vec<libc::iovec> = Vec::with_capacity(pending.len().min(IOV_MAX));
    while !pending.is_empty() {
        iov.clear();
        iov.extend(pending.iter().take(IOV_MAX).map(|b| libc::iovec {
            iov_base: b.as_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        }));
        // SAFETY: every iovec points into a live `Bytes` of `pending`,
        // which is not touched until the call returns.
        let n = unsafe { libc::pwritev(fd, iov.as_ptr(), iov.len() as libc::c_int, pos as i64) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                continue;
            }
            return Err(e);
        }
        let mut n = n as usize;
        if n == 0 {
            return Err(io::Error::new(io::ErrorKind::WriteZero, "write returned 0"));
        }
        pos += n as u64;
        // Drop what was written; a short write leaves the rest, in order.
        while n > 0 {
            let front = pending.front_mut().expect("wrote more than was given");
            if n >= front.len() {
                n -= front.len();
                pending.pop_front();
            } else {
                let _ = front.split_to(n);
                n = 0;
            }
        }
    }
    Ok(())
}

const IOV_MAX: usize = 1024;

/// Owned buffers for one vectored write.
struct Chunks(Vec<Bytes>);

impl IoVectoredBuf for Chunks {
    fn iter_slice(&self) -> impl Iterator<Item = &[u8]> {
        self.0.iter().map(|b| &b[..])
    }
}

/// The io_uring storage of one shard thread.
#[derive(Clone, Debug, Default)]
pub struct UringStorage;

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

async fn open_raw(path: &Path, flags: OFlags) -> io::Result<std::fs::File> {
    let op = OpenFile::new(CurrentDir, c_path(path)?, flags, Mode::from_raw_mode(0o644));
    let BufResult(res, op) = compio::runtime::submit(op).await;
    res?;
    let fd = op.into_inner();
    // SAFETY: `fd` is a freshly opened, owned descriptor.
    Ok(unsafe { std::fs::File::from_raw_fd(fd.into_raw_fd()) })
}

async fn blocking<T: Send + 'static>(
    f: impl FnOnce() -> io::Result<T> + Send + 'static,
) -> io::Result<T> {
    compio::runtime::spawn_blocking(f)
        .await
        .unwrap_or_else(|_| Err(io::Error::other("blocking task panicked")))
}

impl Storage for UringStorage {
    type File = UringFile;

    async fn open(&self, path: &Path, create: bool) -> io::Result<UringFile> {
        let mut flags = OFlags::RDWR;
        if create {
            flags |= OFlags::CREATE;
        }
        Ok(UringFile::new(open_raw(path, flags).await?))
    }

    async fn rename(&self, from: &Path, to: &Path) -> io::Result<()> {
        compio::fs::rename(from, to).await
    }

    async fn remove(&self, path: &Path) -> io::Result<()> {
        match compio::fs::remove_file(path).await {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        }
    }

    async fn create_dir_all(&self, path: &Path) -> io::Result<()> {
        compio::fs::create_dir_all(path).await
    }

    async fn remove_dir_all(&self, path: &Path) -> io::Result<()> {
        let path: PathBuf = path.to_owned();
        blocking(move || match std::fs::remove_dir_all(&path) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
            other => other,
        })
        .await
    }

    async fn list(&self, path: &Path) -> io::Result<Vec<String>> {
        let path: PathBuf = path.to_owned();
        blocking(move || {
            let mut names = Vec::new();
            for entry in std::fs::read_dir(&path)? {
                if let Ok(name) = entry?.file_name().into_string() {
                    names.push(name);
                }
            }
            Ok(names)
        })
        .await
    }

    async fn sync_dir(&self, path: &Path) -> io::Result<()> {
        let dir = Arc::new(open_raw(path, OFlags::RDONLY | OFlags::DIRECTORY).await?);
        compio::runtime::submit(Sync::new(dir, false))
            .await
            .0
            .map(|_| ())
    }

    fn spawn(&self, task: impl std::future::Future<Output = ()> + 'static) {
        compio::runtime::spawn(task).detach();
    }

    fn now_ms(&self) -> u64 {
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as u64)
            .unwrap_or(0)
    }
}
