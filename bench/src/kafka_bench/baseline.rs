//! Machine limits measured in the same run: sequential write of the same
//! volume to the data disk with the same fsync cadence, and loopback TCP.

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::os::unix::fs::FileExt;
use std::time::{Duration, Instant};

use crate::proto::Result;
use crate::report::{Baseline, Report};
use crate::Acks;
use crate::Args;

/// Bytes between fdatasyncs of the recycled-cache baseline: the broker's
/// default background flush (`log.flush.interval.bytes`).
const RECYCLE_EVERY: u64 = 16 << 20;

/// Write `bytes` in `chunk` pieces with pwrite, fdatasync every
/// `fsync_every` bytes (and at the end), stopping after `max_secs`;
/// with `recycle`, each fdatasync is followed by `POSIX_FADV_DONTNEED` of
/// everything synced, so the page cache reuses its pages as the broker's
/// cache window makes it do (fresh pages cost several times more on a VM,
/// docs/benchmarks.md). Returns (MB/s, bytes written, fsyncs).
fn disk(
    dir: &std::path::Path,
    bytes: u64,
    chunk: usize,
    fsync_every: Option<u64>,
    recycle: bool,
    max_secs: f64,
) -> Result<(f64, u64, u64)> {
    use std::os::fd::AsRawFd;
    let f = tempfile::tempfile_in(dir)?;
    let buf: Vec<u8> = (0..chunk).map(|i| (i * 31 + 7) as u8).collect();
    let start = Instant::now();
    let (mut off, mut unsynced, mut syncs) = (0u64, 0u64, 0u64);
    while off < bytes && start.elapsed().as_secs_f64() < max_secs {
        f.write_all_at(&buf, off)?;
        off += chunk as u64;
        unsynced += chunk as u64;
        if fsync_every.is_some_and(|n| unsynced >= n) {
            f.sync_data()?;
            syncs += 1;
            unsynced = 0;
            if recycle {
                // SAFETY: a plain syscall on a file this function owns.
                unsafe {
                    libc::posix_fadvise(f.as_raw_fd(), 0, off as i64, libc::POSIX_FADV_DONTNEED)
                };
            }
        }
    }
    f.sync_data()?;
    syncs += 1;
    Ok((off as f64 / 1e6 / start.elapsed().as_secs_f64(), off, syncs))
}

/// Group commit: one thread writes `chunk` pieces back to back while another
/// calls fdatasync in a loop (each sync covers what was written during the
/// previous one, as the broker's group commit does); returns (MB/s, bytes,
/// fsyncs).
fn disk_group_commit(
    dir: &std::path::Path,
    bytes: u64,
    chunk: usize,
    max_secs: f64,
) -> Result<(f64, u64, u64)> {
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let f = Arc::new(tempfile::tempfile_in(dir)?);
    let buf: Vec<u8> = (0..chunk).map(|i| (i * 31 + 7) as u8).collect();
    let done = Arc::new(AtomicBool::new(false));
    let (f2, done2) = (f.clone(), done.clone());
    let syncer = std::thread::spawn(move || -> std::io::Result<u64> {
        let mut n = 0;
        while !done2.load(Ordering::Relaxed) {
            f2.sync_data()?;
            n += 1;
        }
        Ok(n)
    });
    let start = Instant::now();
    let mut off = 0u64;
    while off < bytes && start.elapsed().as_secs_f64() < max_secs {
        f.write_all_at(&buf, off)?;
        off += chunk as u64;
    }
    done.store(true, Ordering::Relaxed);
    let n = syncer.join().map_err(|_| "syncer panicked")??;
    f.sync_data()?;
    Ok((off as f64 / 1e6 / start.elapsed().as_secs_f64(), off, n + 1))
}

/// One connection, 1 MiB writes for `secs`, reader thread counts.
fn loopback(secs: f64) -> Result<f64> {
    let l = TcpListener::bind("127.0.0.1:0")?;
    let addr = l.local_addr()?;
    let reader = std::thread::spawn(move || -> std::io::Result<(u64, Duration)> {
        let (mut s, _) = l.accept()?;
        let mut buf = vec![0u8; 1 << 20];
        let mut n = 0u64;
        let start = Instant::now();
        loop {
            let k = s.read(&mut buf)?;
            if k == 0 {
                return Ok((n, start.elapsed()));
            }
            n += k as u64;
        }
    });
    let mut s = TcpStream::connect(addr)?;
    let buf = vec![1u8; 1 << 20];
    let start = Instant::now();
    while start.elapsed().as_secs_f64() < secs {
        s.write_all(&buf)?;
    }
    drop(s);
    let (n, d) = reader.join().map_err(|_| "loopback reader panicked")??;
    Ok(n as f64 / 1e6 / d.as_secs_f64())
}

pub fn measure(args: &Args, rep: &Report) -> Result<Baseline> {
    let bytes = rep.produce.bytes.clamp(64 << 20, 4 << 30);
    let chunk = (args.batch_size as usize).clamp(4096, 8 << 20);
    let dir = if args.bootstrap.is_some() || args.sink {
        std::env::temp_dir()
    } else {
        args.data_dir.clone()
    };
    let max_secs = args.duration.as_secs_f64().clamp(2.0, 10.0);
    eprintln!(
        "baseline: up to {} MB or {max_secs:.0} s per disk test in {}",
        bytes / 1_000_000,
        dir.display()
    );
    let (nosync_mb, nosync_bytes, _) = disk(&dir, bytes, chunk, None, false, max_secs)?;
    let (recycled_mb, recycled_bytes, _) =
        disk(&dir, bytes, chunk, Some(RECYCLE_EVERY), true, max_secs)?;
    let (gc_mb, gc_bytes, gc_syncs) = disk_group_commit(&dir, bytes, chunk, max_secs)?;
    // acks=all: also the naive cadence, one fdatasync per producer batch
    let per_batch = if args.acks == Acks::All {
        Some(disk(
            &dir,
            bytes,
            chunk,
            Some(args.batch_size),
            false,
            max_secs,
        )?)
    } else {
        None
    };
    eprintln!("baseline: loopback TCP, 3 s");
    let lo_mb = loopback(3.0)?;
    let r = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    Ok(Baseline {
        chunk_bytes: chunk as u64,
        disk_nosync_mb_per_s: nosync_mb,
        disk_nosync_bytes: nosync_bytes,
        disk_recycled_mb_per_s: recycled_mb,
        disk_recycled_bytes: recycled_bytes,
        disk_group_commit_mb_per_s: gc_mb,
        disk_group_commit_bytes: gc_bytes,
        disk_group_commit_fsyncs: gc_syncs,
        disk_fsync_per_batch_mb_per_s: per_batch.map(|p| p.0),
        disk_fsync_per_batch_bytes: per_batch.map(|p| p.1),
        loopback_tcp_mb_per_s: lo_mb,
        produce_vs_disk_nosync: r(rep.produce.mb_per_s, nosync_mb),
        produce_vs_disk_recycled: r(rep.produce.mb_per_s, recycled_mb),
        produce_vs_disk_group_commit: r(rep.produce.mb_per_s, gc_mb),
        produce_vs_disk_fsync_per_batch: per_batch.map(|p| r(rep.produce.mb_per_s, p.0)),
        produce_vs_loopback: r(rep.produce.mb_per_s, lo_mb),
        consume_vs_loopback: r(rep.consume.mb_per_s, lo_mb),
    })
}
