//! Zero-copy send of a file range to a socket: file -> pipe -> socket with
//! io_uring `SPLICE`, and a plain pread + send fallback.
//!
//! A fetch answer is a header followed by a range of a segment file. The
//! range goes from the page cache into a pipe and from the pipe into the
//! socket, without passing through user space. Both splices are submitted to
//! the ring of the calling thread (a compio runtime must be running), which
//! executes them on its io-wq workers.
//!
//! The pipe is a [`SplicePipe`], reused across sends (one per connection or
//! per shard) and enlarged with `F_SETPIPE_SZ` (DESIGN.md measured file ->
//! socket splice at 0.9 GB/s through a 64 KiB pipe, 2.1 GB/s through a 1 MiB
//! one; see docs/io-runtime.md for loopback numbers of this code).
//!
//! Bytes left in a pipe by a failed or cancelled send would be sent to the
//! next socket, in front of the right ones. A send therefore marks the pipe
//! dirty while it runs and clean only when it ends with the pipe empty; a
//! dirty pipe is replaced by a fresh one at the start of the next send.

use std::cmp::min;
use std::io;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use compio::buf::{BufResult, IntoInner, IoBuf};
use compio::driver::op::{Interest, PollOnce, ReadAt, Send, SendFlags, Splice, SpliceFlags};
use compio::driver::{SharedFd, ToSharedFd};

use super::uring::UringFile;

/// The pipe size [`SplicePipe::new`] asks for.
pub const DEFAULT_PIPE_SIZE: usize = 1 << 20;

/// Buffer size of the copy fallback.
const COPY_CHUNK: usize = 256 << 10;

static SPLICED_TOTAL: AtomicU64 = AtomicU64::new(0);
static COPIED_TOTAL: AtomicU64 = AtomicU64::new(0);

/// Bytes this process has sent to sockets by splice, since it started.
pub fn spliced_bytes_total() -> u64 {
    SPLICED_TOTAL.load(Ordering::Relaxed)
}

/// Bytes this process has sent to sockets by the copy fallback (pread + send).
pub fn copied_bytes_total() -> u64 {
    COPIED_TOTAL.load(Ordering::Relaxed)
}

/// How the bytes of one send went out.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SendStats {
    /// Bytes that reached the socket by splice.
    pub spliced: u64,
    /// Bytes that reached the socket by pread + send.
    pub copied: u64,
}

/// A reusable pipe for splicing (one per connection or per shard), sized with
/// `F_SETPIPE_SZ`: it asks for 1 MiB and accepts what the kernel grants.
///
/// The ends are `Arc`s so an operation still in flight after its future was
/// dropped keeps its end open until the kernel is done with it.
#[derive(Debug)]
pub struct SplicePipe {
    read: Arc<OwnedFd>,
    write: Arc<OwnedFd>,
    capacity: usize,
    /// The size asked for, to ask again when the pipe is replaced.
    requested: usize,
    /// Bytes spliced into the pipe and not yet out of it.
    pending: usize,
    /// A send is under way, or the last one left bytes in the pipe (or was
    /// cancelled): the pipe must be replaced before it is used again.
    dirty: bool,
}

impl SplicePipe {
    /// A pipe of [`DEFAULT_PIPE_SIZE`] (1 MiB), or less if the kernel refuses
    /// (`fs.pipe-max-size`, `fs.pipe-user-pages-soft`).
    pub fn new() -> io::Result<Self> {
        Self::with_capacity(DEFAULT_PIPE_SIZE)
    }

    /// A pipe of about `bytes` (the kernel rounds up to a power of two pages),
    /// halving the request until the kernel accepts it; if it accepts nothing
    /// the pipe keeps its default size.
    pub fn with_capacity(bytes: usize) -> io::Result<Self> {
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two ints for pipe2 to fill.
        if unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both descriptors are open and ours.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        let capacity = set_pipe_size(&write, bytes)?;
        if capacity < bytes {
            tracing::debug!(
                requested = bytes,
                granted = capacity,
                "splice pipe smaller than requested"
            );
        }
        Ok(SplicePipe {
            read: Arc::new(read),
            write: Arc::new(write),
            capacity,
            requested: bytes,
            pending: 0,
            dirty: false,
        })
    }

    /// Bytes the pipe holds when full, as granted by the kernel.
    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Replace the pipe if an earlier send may have left bytes in it.
    fn ensure_clean(&mut self) -> io::Result<()> {
        if self.dirty {
            tracing::debug!(
                pending = self.pending,
                "replacing a splice pipe left dirty by a failed send"
            );
            *self = SplicePipe::with_capacity(self.requested)?;
        }
        Ok(())
    }
}

fn set_pipe_size(fd: &OwnedFd, want: usize) -> io::Result<usize> {
    let raw = fd.as_raw_fd();
    // SAFETY: fcntl on an open descriptor we own.
    let current = unsafe { libc::fcntl(raw, libc::F_GETPIPE_SZ) };
    if current < 0 {
        return Err(io::Error::last_os_error());
    }
    let mut ask = min(want, libc::c_int::MAX as usize);
    while ask > 0 {
        // SAFETY: as above; the kernel validates the size.
        let got = unsafe { libc::fcntl(raw, libc::F_SETPIPE_SZ, ask as libc::c_int) };
        if got > 0 {
            return Ok(got as usize);
        }
        if ask <= current as usize {
            break;
        }
        ask /= 2;
    }
    Ok(current as usize)
}

/// Which splice of a file -> pipe -> socket transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Side {
    FileToPipe,
    PipeToSocket,
}

/// The kernel cannot splice this pair (or this ring cannot splice at all).
fn is_refusal(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EINVAL) | Some(libc::ENOSYS) | Some(libc::EOPNOTSUPP)
    )
}

#[cfg(test)]
thread_local! {
    /// Test hook: make the `n`-th (0-based) splice of a side fail with an errno.
    static INJECT: std::cell::Cell<Option<(Side, u32, i32)>> = const { std::cell::Cell::new(None) };
}

#[cfg(test)]
fn injected(side: Side) -> Option<io::Error> {
    INJECT.with(|c| match c.get() {
        Some((s, 0, errno)) if s == side => {
            c.set(None);
            Some(io::Error::from_raw_os_error(errno))
        }
        Some((s, n, errno)) if s == side => {
            c.set(Some((s, n - 1, errno)));
            None
        }
        _ => None,
    })
}

/// One io_uring splice; `-1` offsets mean "no offset" (pipes and sockets).
async fn splice<A: AsFd + 'static, B: AsFd + 'static>(
    side: Side,
    fd_in: A,
    off_in: i64,
    fd_out: B,
    len: usize,
    flags: SpliceFlags,
) -> io::Result<usize> {
    #[cfg(test)]
    if let Some(e) = injected(side) {
        return Err(e);
    }
    let _ = side;
    let op = Splice::new(fd_in, off_in, fd_out, -1, len, flags);
    compio::runtime::submit(op).await.0
}

/// Wait until a non-blocking socket can take more bytes.
async fn wait_writable<S: AsFd + 'static>(sock: &SharedFd<S>) -> io::Result<()> {
    let op = PollOnce::new(sock.clone(), Interest::Writable);
    compio::runtime::submit(op).await.0.map(|_| ())
}

/// `pos..pos + len` must lie inside the file (checked with fstat, which does
/// not wait for the disk), so a short file fails before anything is sent.
fn check_range(file: &UringFile, pos: u64, len: u64) -> io::Result<()> {
    let end = pos
        .checked_add(len)
        .filter(|&end| end <= i64::MAX as u64)
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "file range overflows"))?;
    let size = file.0.metadata()?.len();
    if end > size {
        return Err(eof(pos, len, size));
    }
    Ok(())
}

fn eof(pos: u64, len: u64, size: u64) -> io::Error {
    io::Error::new(
        io::ErrorKind::UnexpectedEof,
        format!("file range {pos}+{len} ends past end of file ({size} bytes)"),
    )
}

/// Send `len` bytes of `file` starting at `pos` to `socket`: file -> pipe ->
/// socket by io_uring SPLICE.
///
/// `socket` is anything that hands out compio's [`SharedFd`] of a socket, such
/// as `compio::net::TcpStream` (no `dup`: the shared fd is reference counted).
/// A blocking socket is expected (compio creates its sockets blocking on the
/// io_uring driver); a non-blocking one works but waits with poll.
///
/// If the kernel refuses splice for this pair (`EINVAL`, `ENOSYS`,
/// `EOPNOTSUPP`) before any byte reached the socket, the whole range is sent
/// by [`send_file_range_copy`] instead and counted as copied. A range that
/// ends past the end of the file fails with `UnexpectedEof` before anything
/// is sent; if the file shrinks during the send, the send fails with
/// `UnexpectedEof` after part of the range went out (the caller must then
/// close the connection). After any error the pipe is replaced on its next
/// use, so no stale byte is ever sent. An empty range sends nothing.
pub async fn send_file_range<S: AsFd + 'static>(
    file: &UringFile,
    pos: u64,
    len: u64,
    socket: &impl ToSharedFd<S>,
    pipe: &mut SplicePipe,
) -> io::Result<SendStats> {
    if len == 0 {
        return Ok(SendStats::default());
    }
    check_range(file, pos, len)?;
    let sock = socket.to_shared_fd();
    send_checked(file, pos, len, &sock, pipe).await
}

async fn send_checked<S: AsFd + 'static>(
    file: &UringFile,
    pos: u64,
    len: u64,
    sock: &SharedFd<S>,
    pipe: &mut SplicePipe,
) -> io::Result<SendStats> {
    pipe.ensure_clean()?;
    let mut stats = SendStats::default();
    pipe.dirty = true;
    let res = splice_range(file, pos, len, sock, pipe, &mut stats).await;
    // No operation is in flight here, so `pending` is exact.
    pipe.dirty = pipe.pending != 0;
    match res {
        Ok(()) => Ok(stats),
        Err(e) if stats.spliced == 0 && is_refusal(&e) => {
            tracing::debug!(error = %e, "splice refused; sending the file range by copy");
            copy_range(file, pos, len, sock, &mut stats).await?;
            Ok(stats)
        }
        Err(e) => Err(e),
    }
}

async fn splice_range<S: AsFd + 'static>(
    file: &UringFile,
    pos: u64,
    len: u64,
    sock: &SharedFd<S>,
    pipe: &mut SplicePipe,
    stats: &mut SendStats,
) -> io::Result<()> {
    let mut sent = 0u64;
    while sent < len {
        debug_assert_eq!(pipe.pending, 0);
        let want = min(len - sent, pipe.capacity as u64) as usize;
        let at = pos + sent;
        let n = splice(
            Side::FileToPipe,
            file.0.clone(),
            at as i64,
            pipe.write.clone(),
            want,
            SpliceFlags::empty(),
        )
        .await?;
        if n == 0 {
            let size = file.0.metadata().map(|m| m.len()).unwrap_or(0);
            return Err(eof(pos, len, size));
        }
        pipe.pending = min(n, want);
        while pipe.pending > 0 {
            // More of the range follows: let TCP fill whole segments.
            let flags = if sent + (pipe.pending as u64) < len {
                SpliceFlags::MORE
            } else {
                SpliceFlags::empty()
            };
            let m = match splice(
                Side::PipeToSocket,
                pipe.read.clone(),
                -1,
                sock.clone(),
                pipe.pending,
                flags,
            )
            .await
            {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_writable(sock).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if m == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "splice to socket moved 0 bytes",
                ));
            }
            let m = min(m, pipe.pending);
            pipe.pending -= m;
            sent += m as u64;
            stats.spliced += m as u64;
            SPLICED_TOTAL.fetch_add(m as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}

/// Send `len` bytes of `file` starting at `pos` to `socket` by pread + send
/// through the ring, without splice: the fallback of [`send_file_range`],
/// callable directly (tests, or sockets known not to splice). Counts the bytes
/// as copied. A range past the end of the file fails with `UnexpectedEof`
/// before anything is sent.
pub async fn send_file_range_copy<S: AsFd + 'static>(
    file: &UringFile,
    pos: u64,
    len: u64,
    socket: &impl ToSharedFd<S>,
) -> io::Result<SendStats> {
    let mut stats = SendStats::default();
    if len == 0 {
        return Ok(stats);
    }
    check_range(file, pos, len)?;
    copy_range(file, pos, len, &socket.to_shared_fd(), &mut stats).await?;
    Ok(stats)
}

async fn copy_range<S: AsFd + 'static>(
    file: &UringFile,
    pos: u64,
    len: u64,
    sock: &SharedFd<S>,
    stats: &mut SendStats,
) -> io::Result<()> {
    let mut buf: Vec<u8> = Vec::with_capacity(min(len, COPY_CHUNK as u64) as usize);
    let mut sent = 0u64;
    while sent < len {
        let want = min(len - sent, buf.capacity() as u64) as usize;
        buf.clear();
        let op = ReadAt::new(file.0.clone(), pos + sent, buf);
        let BufResult(res, back) = compio::runtime::submit(op).await.into_inner();
        buf = back;
        // The read may fill the whole capacity; keep only what was asked for.
        let n = min(res?, want);
        if n == 0 {
            let size = file.0.metadata().map(|m| m.len()).unwrap_or(0);
            return Err(eof(pos, len, size));
        }
        // SAFETY: the kernel initialised the first `n` bytes of `buf`.
        unsafe { buf.set_len(n) };
        let mut off = 0;
        while off < n {
            let op = Send::new(sock.clone(), buf.slice(off..), SendFlags::NOSIGNAL);
            let BufResult(res, back) = compio::runtime::submit(op).await.into_inner();
            buf = back.into_inner();
            let m = match res {
                Ok(m) => m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    wait_writable(sock).await?;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if m == 0 {
                return Err(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "send moved 0 bytes",
                ));
            }
            off += m;
            sent += m as u64;
            stats.copied += m as u64;
            COPIED_TOTAL.fetch_add(m as u64, Ordering::Relaxed);
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    use std::io::{Read, Write};
    use std::sync::mpsc;
    use std::thread::JoinHandle;
    use std::time::Duration;

    use compio::net::{TcpListener, TcpStream};

    /// Run `f` on a fresh compio runtime in its own thread; fail instead of
    /// hanging if it does not finish in time.
    fn run<F, Fut>(f: F)
    where
        F: FnOnce() -> Fut + std::marker::Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let (tx, rx) = mpsc::channel();
        let worker = std::thread::spawn(move || {
            let rt = compio::runtime::Runtime::new().expect("runtime");
            rt.block_on(f());
            let _ = tx.send(());
        });
        match rx.recv_timeout(Duration::from_secs(20)) {
            Ok(()) => worker.join().expect("test thread"),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                // The body panicked: re-raise its panic.
                if let Err(p) = worker.join() {
                    std::panic::resume_unwind(p);
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => panic!("test hung"),
        }
    }

    /// A file of `size` pseudo-random bytes.
    fn data_file(size: usize) -> (tempfile::NamedTempFile, UringFile, Vec<u8>) {
        let mut data = Vec::with_capacity(size);
        let mut x: u64 = 0x9E37_79B9_7F4A_7C15 ^ size as u64;
        while data.len() < size {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            data.extend_from_slice(&x.to_le_bytes());
        }
        data.truncate(size);
        let mut tmp = tempfile::NamedTempFile::new().expect("tempfile");
        tmp.write_all(&data).expect("write");
        tmp.flush().expect("flush");
        let file = std::fs::File::open(tmp.path()).expect("open");
        (tmp, UringFile::new(file), data)
    }

    /// A compio stream (the sending side, accepted like the node does) and a
    /// std thread that reads everything until the stream is closed.
    async fn connection() -> (TcpStream, JoinHandle<Vec<u8>>) {
        connection_read_after(Duration::ZERO).await
    }

    /// As [`connection`], with a reader that starts reading after `delay`.
    async fn connection_read_after(delay: Duration) -> (TcpStream, JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let reader = std::thread::spawn(move || {
            let mut s = std::net::TcpStream::connect(addr).expect("connect");
            std::thread::sleep(delay);
            let mut got = Vec::new();
            // A reset from the peer ends the read like a close does.
            let _ = s.read_to_end(&mut got);
            got
        });
        let (stream, _) = listener.accept().await.expect("accept");
        (stream, reader)
    }

    async fn finish(stream: TcpStream, reader: JoinHandle<Vec<u8>>) -> Vec<u8> {
        drop(stream);
        reader.join().expect("reader thread")
    }

    #[test]
    fn splices_ranges_byte_identical() {
        run(|| async {
            let (_tmp, file, data) = data_file(6 << 20);
            let mut pipe = SplicePipe::new().expect("pipe");
            assert!(pipe.capacity() >= 64 << 10, "capacity {}", pipe.capacity());
            let ranges: [(u64, u64); 4] = [(0, 0), (17, 1), (4093, 100 << 10), (12345, 5 << 20)];
            for (pos, len) in ranges {
                let (stream, reader) = connection().await;
                let before = spliced_bytes_total();
                let stats = send_file_range(&file, pos, len, &stream, &mut pipe)
                    .await
                    .expect("send");
                assert_eq!(
                    stats,
                    SendStats {
                        spliced: len,
                        copied: 0
                    },
                    "range {pos}+{len}"
                );
                assert!(spliced_bytes_total() - before >= len);
                let got = finish(stream, reader).await;
                assert!(
                    got == data[pos as usize..(pos + len) as usize],
                    "bytes differ for {pos}+{len}"
                );
                assert!(!pipe.dirty);
            }
        });
    }

    #[test]
    fn small_pipe_many_short_splices_on_one_connection() {
        run(|| async {
            let (_tmp, file, data) = data_file(1 << 20);
            let mut pipe = SplicePipe::with_capacity(4096).expect("pipe");
            assert!(pipe.capacity() < 300 << 10, "capacity {}", pipe.capacity());
            let (stream, reader) = connection().await;
            let ranges: [(u64, u64); 3] = [(1, 300 << 10), (777, 5), ((1 << 20) - 9, 9)];
            let mut want = Vec::new();
            for (pos, len) in ranges {
                let stats = send_file_range(&file, pos, len, &stream, &mut pipe)
                    .await
                    .expect("send");
                assert_eq!(stats.spliced, len);
                want.extend_from_slice(&data[pos as usize..(pos + len) as usize]);
            }
            assert!(finish(stream, reader).await == want);
        });
    }

    #[test]
    fn copy_path_sends_identical_bytes() {
        run(|| async {
            let (_tmp, file, data) = data_file(3 << 20);
            for (pos, len) in [(0u64, 0u64), (5, 1), (4093, 100 << 10), (1, (3 << 20) - 1)] {
                let (stream, reader) = connection().await;
                let before = copied_bytes_total();
                let stats = send_file_range_copy(&file, pos, len, &stream)
                    .await
                    .expect("copy");
                assert_eq!(
                    stats,
                    SendStats {
                        spliced: 0,
                        copied: len
                    }
                );
                assert!(copied_bytes_total() - before >= len);
                let got = finish(stream, reader).await;
                assert!(
                    got == data[pos as usize..(pos + len) as usize],
                    "bytes differ for {pos}+{len}"
                );
            }
        });
    }

    #[test]
    fn refused_splice_falls_back_to_copy() {
        run(|| async {
            let (_tmp, file, data) = data_file(2 << 20);
            let mut pipe = SplicePipe::new().expect("pipe");
            let (pos, len) = (100u64, (2 << 20) - 200);
            let want = &data[pos as usize..(pos + len) as usize];
            // Refused on the file side, then on the socket side with the pipe
            // already holding a chunk.
            for (side, errno) in [
                (Side::FileToPipe, libc::EINVAL),
                (Side::PipeToSocket, libc::EOPNOTSUPP),
            ] {
                let (stream, reader) = connection().await;
                INJECT.with(|c| c.set(Some((side, 0, errno))));
                let stats = send_file_range(&file, pos, len, &stream, &mut pipe)
                    .await
                    .expect("send");
                assert_eq!(
                    stats,
                    SendStats {
                        spliced: 0,
                        copied: len
                    },
                    "{side:?}"
                );
                assert!(finish(stream, reader).await == want, "{side:?}");
            }
            assert!(pipe.dirty, "a chunk was left in the pipe");
            // The next send replaces the pipe and splices only the right bytes.
            let (stream, reader) = connection().await;
            let stats = send_file_range(&file, pos, len, &stream, &mut pipe)
                .await
                .expect("send");
            assert_eq!(stats.spliced, len);
            assert!(!pipe.dirty);
            assert!(finish(stream, reader).await == want);
        });
    }

    #[test]
    fn refusal_after_bytes_went_out_is_an_error() {
        run(|| async {
            let (_tmp, file, data) = data_file(3 << 20);
            let mut pipe = SplicePipe::with_capacity(64 << 10).expect("pipe");
            let (stream, reader) = connection().await;
            INJECT.with(|c| c.set(Some((Side::PipeToSocket, 3, libc::EINVAL))));
            let err = send_file_range(&file, 0, 3 << 20, &stream, &mut pipe)
                .await
                .expect_err("must fail");
            assert_eq!(err.raw_os_error(), Some(libc::EINVAL));
            assert!(pipe.dirty);
            // What went out before the error is a correct prefix.
            let got = finish(stream, reader).await;
            assert!(!got.is_empty() && got.len() < 3 << 20);
            assert!(got == data[..got.len()]);
        });
    }

    #[test]
    fn range_past_end_of_file_fails_without_hanging() {
        run(|| async {
            let (_tmp, file, data) = data_file(100_000);
            let mut pipe = SplicePipe::new().expect("pipe");
            let (stream, reader) = connection().await;
            for (pos, len) in [(99_999u64, 2u64), (0, 100_001), (200_000, 1), (u64::MAX, 1)] {
                let err = send_file_range(&file, pos, len, &stream, &mut pipe)
                    .await
                    .expect_err("past end");
                assert!(
                    matches!(
                        err.kind(),
                        io::ErrorKind::UnexpectedEof | io::ErrorKind::InvalidInput
                    ),
                    "{err}"
                );
                assert!(send_file_range_copy(&file, pos, len, &stream)
                    .await
                    .is_err());
            }
            // Without the fstat check (a file that shrank after it): the
            // splice loop itself must stop at end of file.
            let sock = stream.to_shared_fd();
            let mut stats = SendStats::default();
            let err = send_checked(&file, 50_000, 60_000, &sock, &mut pipe)
                .await
                .expect_err("past end");
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
            assert!(!pipe.dirty, "the pipe was drained before end of file");
            let err = copy_range(&file, 90_000, 20_000, &sock, &mut stats)
                .await
                .expect_err("past end");
            assert_eq!(err.kind(), io::ErrorKind::UnexpectedEof);
            // The shared fd keeps the socket open: let it go before closing.
            drop(sock);
            // The bytes before end of file went out, nothing else.
            let mut want = data[50_000..].to_vec();
            want.extend_from_slice(&data[90_000..]);
            assert!(finish(stream, reader).await == want);
        });
    }

    #[test]
    fn error_midway_leaves_no_stale_bytes() {
        run(|| async {
            let (_tmp, file, data) = data_file(2 << 20);
            let mut pipe = SplicePipe::new().expect("pipe");
            let (stream, reader) = connection().await;
            // Writes to this socket now fail with EPIPE, after the first
            // chunk is already in the pipe.
            // SAFETY: shutdown on an open socket.
            assert_eq!(
                unsafe { libc::shutdown(stream.as_raw_fd(), libc::SHUT_WR) },
                0
            );
            let err = send_file_range(&file, 0, 2 << 20, &stream, &mut pipe)
                .await
                .expect_err("EPIPE");
            assert_eq!(err.raw_os_error(), Some(libc::EPIPE), "{err}");
            assert!(pipe.pending > 0 && pipe.dirty);
            assert!(finish(stream, reader).await.is_empty());

            let (stream, reader) = connection().await;
            let stats = send_file_range(&file, 10, 1000, &stream, &mut pipe)
                .await
                .expect("send");
            assert_eq!(stats.spliced, 1000);
            assert!(finish(stream, reader).await == data[10..1010]);
        });
    }

    #[test]
    fn cancelled_send_leaves_no_stale_bytes() {
        run(|| async {
            use std::future::Future;
            use std::task::Poll;

            // More than loopback socket buffers hold, to a peer that does not
            // read: the send blocks with bytes in the pipe.
            let (_tmp, file, data) = data_file(24 << 20);
            let mut pipe = SplicePipe::new().expect("pipe");
            let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let addr = listener.local_addr().expect("addr");
            let (close_tx, close_rx) = mpsc::channel::<()>();
            let idle = std::thread::spawn(move || {
                let s = std::net::TcpStream::connect(addr).expect("connect");
                let _ = close_rx.recv();
                drop(s);
            });
            let (stream, _) = listener.accept().await.expect("accept");
            // A timer without compio's `time` feature: a connection made 300 ms later.
            let alarm = TcpListener::bind("127.0.0.1:0").await.expect("bind");
            let alarm_addr = alarm.local_addr().expect("addr");
            let ringer = std::thread::spawn(move || {
                std::thread::sleep(Duration::from_millis(300));
                std::net::TcpStream::connect(alarm_addr).expect("connect")
            });
            {
                let mut send =
                    std::pin::pin!(send_file_range(&file, 0, 24 << 20, &stream, &mut pipe));
                let mut ring = std::pin::pin!(alarm.accept());
                let first = std::future::poll_fn(|cx| {
                    if let Poll::Ready(r) = send.as_mut().poll(cx) {
                        return Poll::Ready(Some(r));
                    }
                    if ring.as_mut().poll(cx).is_ready() {
                        return Poll::Ready(None);
                    }
                    Poll::Pending
                })
                .await;
                assert!(
                    first.is_none(),
                    "a 24 MiB send to a peer that does not read finished: {first:?}"
                );
                // Dropping `send` here cancels it mid-way.
            }
            assert!(pipe.dirty);
            let _ = close_tx.send(());
            let _ = idle.join();
            let _ = ringer.join();
            drop(stream);

            let (stream, reader) = connection().await;
            let stats = send_file_range(&file, 3, 70_000, &stream, &mut pipe)
                .await
                .expect("send");
            assert_eq!(stats.spliced, 70_000);
            assert!(!pipe.dirty);
            assert!(finish(stream, reader).await == data[3..70_003]);
        });
    }

    #[test]
    fn nonblocking_socket_waits_instead_of_failing() {
        run(|| async {
            let (_tmp, file, data) = data_file(5 << 20);
            let mut pipe = SplicePipe::new().expect("pipe");
            // A late reader, so the socket fills and a splice meets EAGAIN.
            let (stream, reader) = connection_read_after(Duration::from_millis(200)).await;
            let fd = stream.as_raw_fd();
            // SAFETY: fcntl on an open socket.
            unsafe {
                libc::fcntl(
                    fd,
                    libc::F_SETFL,
                    libc::fcntl(fd, libc::F_GETFL) | libc::O_NONBLOCK,
                )
            };
            let stats = send_file_range(&file, 0, 5 << 20, &stream, &mut pipe)
                .await
                .expect("send");
            assert_eq!(stats.spliced, 5 << 20);
            let stats = send_file_range_copy(&file, 0, 5 << 20, &stream)
                .await
                .expect("copy");
            assert_eq!(stats.copied, 5 << 20);
            let got = finish(stream, reader).await;
            assert!(got[..5 << 20] == data[..] && got[5 << 20..] == data[..]);
        });
    }

    /// Loopback throughput of splice (1 MiB and 64 KiB pipes) and of the copy
    /// path: 16 sends of a cached 64 MiB file on one connection, three rounds.
    /// The reader is a child process (this test binary running
    /// [`throughput_reader`]), so the CPU time measured (getrusage of this
    /// process: the sending thread and the ring's io-wq workers, which on
    /// loopback also run the receiving TCP stack) is the sender's. Run with
    /// `cargo test --release -p odradek-engine --lib io::splice::tests::throughput -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn throughput() {
        fn cpu_seconds() -> f64 {
            // SAFETY: getrusage fills the struct it is given.
            let mut ru: libc::rusage = unsafe { std::mem::zeroed() };
            unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) };
            let t = |tv: libc::timeval| tv.tv_sec as f64 + tv.tv_usec as f64 / 1e6;
            t(ru.ru_utime) + t(ru.ru_stime)
        }
        run(|| async {
            const SIZE: u64 = 64 << 20;
            const SENDS: u64 = 16;
            let (_tmp, file, _data) = data_file(SIZE as usize);
            let exe = std::env::current_exe().expect("test binary");
            for round in 0..3 {
                for (mode, pipe_size) in
                    [("splice", 1usize << 20), ("splice", 64 << 10), ("copy", 0)]
                {
                    let mut pipe = SplicePipe::with_capacity(pipe_size.max(4096)).expect("pipe");
                    let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                    let addr = listener.local_addr().expect("addr");
                    let reader = std::process::Command::new(&exe)
                        .args([
                            "--exact",
                            "io::splice::tests::throughput_reader",
                            "--ignored",
                            "--nocapture",
                        ])
                        .env("SPLICE_READER_ADDR", addr.to_string())
                        .stdout(std::process::Stdio::piped())
                        .stderr(std::process::Stdio::null())
                        .spawn()
                        .expect("reader process");
                    let (stream, _) = listener.accept().await.expect("accept");
                    let (t0, c0) = (std::time::Instant::now(), cpu_seconds());
                    for _ in 0..SENDS {
                        if mode == "copy" {
                            send_file_range_copy(&file, 0, SIZE, &stream)
                                .await
                                .expect("copy");
                        } else {
                            send_file_range(&file, 0, SIZE, &stream, &mut pipe)
                                .await
                                .expect("splice");
                        }
                    }
                    drop(stream);
                    let out = reader.wait_with_output().expect("reader");
                    let (secs, cpu) = (t0.elapsed().as_secs_f64(), cpu_seconds() - c0);
                    let out = String::from_utf8_lossy(&out.stdout);
                    assert!(
                        out.contains(&format!("read {}", SIZE * SENDS)),
                        "reader said: {out}"
                    );
                    let gb = (SIZE * SENDS) as f64 / 1e9;
                    let how = if mode == "copy" {
                        "copy".to_string()
                    } else {
                        format!("splice, pipe {} KiB", pipe.capacity() >> 10)
                    };
                    println!(
                        "round {round} {how:>20}: {:.2} GB/s, sender CPU {:.2} s per GB",
                        gb / secs,
                        cpu / gb
                    );
                }
            }
        });
    }

    /// The reading end of [`throughput`], run in a child process.
    #[test]
    #[ignore]
    fn throughput_reader() {
        let Ok(addr) = std::env::var("SPLICE_READER_ADDR") else {
            return;
        };
        let mut s = std::net::TcpStream::connect(addr).expect("connect");
        let mut buf = vec![0u8; 1 << 20];
        let mut total = 0u64;
        while let Ok(n) = s.read(&mut buf) {
            if n == 0 {
                break;
            }
            total += n as u64;
        }
        println!("read {total}");
    }
}
