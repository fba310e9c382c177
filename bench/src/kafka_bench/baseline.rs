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

/// Write `bytes` in `chunk` pieces with pwrite, fdatasync every
/// `fsync_every` bytes (and at the end); returns (MB/s, fsyncs).
fn disk(
    dir: &std::path::Path,
    bytes: u64,
    chunk: usize,
    fsync_every: Option<u64>,
) -> Result<(f64, u64)> {
    let f = tempfile::tempfile_in(dir)?;
    let buf: Vec<u8> = (0..chunk).map(|i| (i * 31 + 7) as u8).collect();
    let start = Instant::now();
    let (mut off, mut unsynced, mut syncs) = (0u64, 0u64, 0u64);
    while off < bytes {
        f.write_all_at(&buf, off)?;
        off += chunk as u64;
        unsynced += chunk as u64;
        if fsync_every.is_some_and(|n| unsynced >= n) {
            f.sync_data()?;
            syncs += 1;
            unsynced = 0;
        }
    }
    f.sync_data()?;
    syncs += 1;
    Ok((off as f64 / 1e6 / start.elapsed().as_secs_f64(), syncs))
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
    // the broker fsyncs before every acks=all answer (default flush policy,
    // group commit): the same cadence here is one fdatasync per producer batch
    let fsync_every = (args.acks == Acks::All).then_some(args.batch_size);
    let bytes = rep.produce.bytes.clamp(64 << 20, 4 << 30);
    let chunk = (args.batch_size as usize).clamp(4096, 8 << 20);
    let dir = if args.bootstrap.is_some() || args.sink {
        std::env::temp_dir()
    } else {
        args.data_dir.clone()
    };
    eprintln!(
        "baseline: writing {} MB to {} (fsync {})",
        bytes / 1_000_000,
        dir.display(),
        fsync_every.map_or("at the end".into(), |n| format!("every {n} B"))
    );
    let (disk_mb, syncs) = disk(&dir, bytes, chunk, fsync_every)?;
    eprintln!("baseline: loopback TCP, 3 s");
    let lo_mb = loopback(3.0)?;
    let r = |a: f64, b: f64| if b > 0.0 { a / b } else { 0.0 };
    Ok(Baseline {
        disk_write_mb_per_s: disk_mb,
        disk_bytes: bytes,
        disk_fsync_every_bytes: fsync_every,
        disk_fsyncs: syncs,
        loopback_tcp_mb_per_s: lo_mb,
        produce_vs_disk: r(rep.produce.mb_per_s, disk_mb),
        produce_vs_loopback: r(rep.produce.mb_per_s, lo_mb),
        consume_vs_loopback: r(rep.consume.mb_per_s, lo_mb),
    })
}
