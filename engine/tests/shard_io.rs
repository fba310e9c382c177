//! The engine on real files through io_uring: shards, message passing,
//! group commit, recovery after restart.

use std::time::Duration;

use odradek_engine::batch::{sample_batch, validate, Strictness};
use odradek_engine::log::{FlushPolicy, LogConfig};
use odradek_engine::shard::{ShardConfig, ShardPool, TopicPartition};

fn config(dir: &std::path::Path, shards: usize) -> ShardConfig {
    ShardConfig {
        shards,
        pin: true,
        data_dir: dir.to_owned(),
        tick: Duration::from_millis(5),
        retention_check: Duration::from_secs(3600),
        cleaner_backoff: Duration::from_millis(20),
        cache_bytes: None,
    }
}

fn log_config(flush: FlushPolicy) -> LogConfig {
    LogConfig {
        segment_bytes: 256 * 1024,
        flush,
        ..LogConfig::default()
    }
}

#[test]
fn concurrent_durable_appends_get_distinct_offsets_and_survive_restart() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let tp = TopicPartition::new("orders", 3);
    let pool = ShardPool::start(config(dir.path(), 2)).unwrap();
    let owner = pool.owner_of(&tp);
    let tp2 = tp.clone();
    // 64 appenders race on the owner shard, each waiting for durability.
    let (end, durable, offsets) = pool
        .call(owner, move |shard| async move {
            let (log, report) = shard
                .open_partition(&tp2, log_config(FlushPolicy::EVERY_APPEND))
                .await
                .unwrap();
            assert_eq!(report.unwrap().truncated_bytes, 0);
            let mut tasks = Vec::new();
            for i in 0..64 {
                let log = log.clone();
                tasks.push(compio::runtime::spawn(async move {
                    let info = log.append(sample_batch(4, 1000, i), 1).await.unwrap();
                    let d = log.wait_durable(info.last_offset).await.unwrap();
                    assert!(d > info.last_offset);
                    info.base_offset
                }));
            }
            let mut offsets = Vec::new();
            for t in tasks {
                offsets.push(t.await.unwrap());
            }
            (log.log_end_offset(), log.durable_end_offset(), offsets)
        })
        .unwrap();
    assert_eq!(end, 256);
    assert_eq!(durable, 256);
    let mut sorted = offsets.clone();
    sorted.sort_unstable();
    assert_eq!(sorted, (0..64).map(|i| i * 4).collect::<Vec<_>>());
    pool.shutdown();

    // A new pool finds every record, segments rolled on the way.
    let pool = ShardPool::start(config(dir.path(), 2)).unwrap();
    let tp2 = tp.clone();
    let (end, segments, count) = pool
        .call(pool.owner_of(&tp), move |shard| async move {
            let (log, _) = shard
                .open_partition(&tp2, log_config(FlushPolicy::EVERY_APPEND))
                .await
                .unwrap();
            let mut off = 0;
            let mut count = 0;
            while off < log.log_end_offset() {
                let bytes = log.read_bytes(off, 64 * 1024).await.unwrap();
                // Whole batches, CRCs intact after the vectored writes.
                let hs =
                    odradek_engine::batch::validate_all(&bytes, usize::MAX, Strictness::Stored)
                        .unwrap();
                for h in hs {
                    assert_eq!(h.base_offset as u64, off);
                    off = h.last_offset() as u64 + 1;
                    count += 1;
                }
            }
            (log.log_end_offset(), log.segment_count(), count)
        })
        .unwrap();
    assert_eq!(end, 256);
    assert_eq!(count, 64);
    assert!(segments > 1, "256 KiB segments must have rolled");
    pool.shutdown();
}

#[test]
fn timer_policy_flushes_without_a_caller() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let pool = ShardPool::start(config(dir.path(), 1)).unwrap();
    let tp = TopicPartition::new("t", 0);
    let durable = pool
        .call(0, move |shard| async move {
            let (log, _) = shard
                .open_partition(&tp, log_config(FlushPolicy::every_ms(20)))
                .await
                .unwrap();
            let info = log.append(sample_batch(1, 100, 0), 0).await.unwrap();
            assert_eq!(log.durable_end_offset(), 0);
            // The shard's ticker flushes within the interval (plus scheduling).
            for _ in 0..200 {
                if log.durable_end_offset() > info.last_offset {
                    break;
                }
                compio::time::sleep(Duration::from_millis(5)).await;
            }
            log.durable_end_offset()
        })
        .unwrap();
    assert_eq!(durable, 1);
}

#[test]
fn slices_read_from_another_thread_match_the_log() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let pool = ShardPool::start(config(dir.path(), 2)).unwrap();
    let tp = TopicPartition::new("s", 1);
    let owner = pool.owner_of(&tp);
    let slice = pool
        .call(owner, move |shard| async move {
            let (log, _) = shard
                .open_partition(&tp, log_config(FlushPolicy::every_bytes(1 << 20)))
                .await
                .unwrap();
            for i in 0..10 {
                log.append(sample_batch(2, 500, i), 0).await.unwrap();
            }
            // One record set of three batches: offsets run on across them.
            let mut set = sample_batch(1, 10, 0);
            set.extend_from_slice(&sample_batch(2, 10, 0));
            set.extend_from_slice(&sample_batch(3, 10, 0));
            let info = log.append(set, 4).await.unwrap();
            assert_eq!((info.base_offset, info.last_offset), (20, 25));
            let tail = log.read_bytes(20, 1 << 20).await.unwrap();
            let hs =
                odradek_engine::batch::validate_all(&tail, usize::MAX, Strictness::Stored).unwrap();
            let bases: Vec<i64> = hs.iter().map(|h| h.base_offset).collect();
            assert_eq!(bases, vec![20, 21, 23]);
            assert!(hs.iter().all(|h| h.partition_leader_epoch == 4));
            log.read(5, 3000).await.unwrap().unwrap()
        })
        .unwrap();
    // The slice (a file handle + range) is Send: read it here with plain pread.
    use std::os::unix::fs::FileExt;
    let mut buf = vec![0u8; slice.len as usize];
    slice
        .file
        .std()
        .read_exact_at(&mut buf, slice.position)
        .unwrap();
    let h = validate(&buf, usize::MAX, Strictness::Stored).unwrap();
    assert_eq!(slice.first_offset, 4);
    assert_eq!(h.base_offset, 4);
    assert!(buf.len() <= 3000 && buf.len() >= h.size());
    pool.shutdown();
}

#[test]
fn torn_tail_on_disk_is_cut_on_reopen_and_retention_and_delete_remove_files() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let tp = TopicPartition::new("torn", 0);
    let pool = ShardPool::start(config(dir.path(), 1)).unwrap();
    let tp2 = tp.clone();
    let end = pool
        .call(0, move |shard| async move {
            let (log, _) = shard
                .open_partition(&tp2, log_config(FlushPolicy::EVERY_APPEND))
                .await
                .unwrap();
            for i in 0..100 {
                log.append(sample_batch(2, 4000, i), 0).await.unwrap();
            }
            log.flush().await.unwrap()
        })
        .unwrap();
    pool.shutdown();
    let pdir = dir.path().join("torn-0");
    let mut logs: Vec<_> = std::fs::read_dir(&pdir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "log"))
        .collect();
    logs.sort();
    assert!(logs.len() > 2);
    // Half a batch of garbage after the last one, as a torn write leaves.
    let active = logs.last().unwrap();
    let clean_len = std::fs::metadata(active).unwrap().len();
    let mut f = std::fs::OpenOptions::new()
        .append(true)
        .open(active)
        .unwrap();
    std::io::Write::write_all(&mut f, &sample_batch(2, 4000, 0)[..3000]).unwrap();
    drop(f);

    let pool = ShardPool::start(config(dir.path(), 1)).unwrap();
    let tp2 = tp.clone();
    let (report, new_end, deleted, segs) = pool
        .call(0, move |shard| async move {
            let mut cfg = log_config(FlushPolicy::EVERY_APPEND);
            cfg.retention_bytes = Some(300 * 1024);
            let (log, report) = shard.open_partition(&tp2, cfg).await.unwrap();
            let deleted = log.enforce_retention().await.unwrap();
            (
                report.unwrap(),
                log.log_end_offset(),
                deleted,
                log.segment_count(),
            )
        })
        .unwrap();
    assert_eq!(report.truncated_bytes, 3000);
    assert_eq!(new_end, end);
    assert_eq!(std::fs::metadata(active).unwrap().len(), clean_len);
    assert!(deleted > 0);
    let left = std::fs::read_dir(&pdir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|e| e == "log")
        })
        .count();
    assert_eq!(left, segs);
    let tp2 = tp.clone();
    assert!(pool
        .call(0, move |shard| async move {
            shard.delete_partition(&tp2).await.unwrap()
        })
        .unwrap());
    assert!(!pdir.exists());
    pool.shutdown();
}

#[test]
fn a_waiting_reader_wakes_when_data_arrives() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let pool = ShardPool::start(config(dir.path(), 2)).unwrap();
    let tp = TopicPartition::new("w", 0);
    let owner = pool.owner_of(&tp);
    let other = (owner + 1) % 2;
    let tp2 = tp.clone();
    pool.call(owner, move |shard| async move {
        shard
            .open_partition(&tp2, log_config(FlushPolicy::every_ms(1000)))
            .await
            .unwrap();
    })
    .unwrap();
    // A task on the other shard long-polls the owner; a third party appends.
    let peers = pool.handle();
    let tp2 = tp.clone();
    let waiter = std::thread::spawn(move || {
        let p2 = peers.clone();
        peers
            .call(other, move |_shard| async move {
                p2.run_on(owner, move |shard| async move {
                    let log = shard.partition(&tp2).unwrap();
                    log.wait_for_data(0).await;
                    log.log_end_offset()
                })
                .await
                .unwrap()
            })
            .unwrap()
    });
    std::thread::sleep(Duration::from_millis(50));
    let tp2 = tp.clone();
    pool.call(owner, move |shard| async move {
        let log = shard.partition(&tp2).unwrap();
        log.append(sample_batch(3, 10, 0), 0).await.unwrap();
    })
    .unwrap();
    assert_eq!(waiter.join().unwrap(), 3);
    pool.shutdown();
}

/// A keyed batch of one record per key `0..keys`, values tagged `round`.
fn keyed_batch(keys: u32, round: u32) -> bytes::BytesMut {
    let mut bb = odradek_engine::batch::BatchBuilder::new(0);
    for k in 0..keys {
        bb.push(&odradek_engine::batch::Record {
            key: Some(format!("k{k}").into_bytes()),
            value: Some(format!("r{round}-{}", "v".repeat(100)).into_bytes()),
            ..Default::default()
        });
    }
    bb.build()
}

#[test]
fn the_cleaner_timer_compacts_on_io_uring_while_appends_go_on() {
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let cfg = || LogConfig {
        segment_bytes: 8 * 1024,
        cleanup_policy: odradek_engine::log::CleanupPolicy::COMPACT,
        ..log_config(FlushPolicy::every_bytes(1 << 20))
    };
    let tp = TopicPartition::new("c", 0);
    let pool = ShardPool::start(config(dir.path(), 1)).unwrap();
    let t = tp.clone();
    let (end, size) = pool
        .call(0, move |shard| async move {
            let (log, _) = shard.open_partition(&t, cfg()).await.unwrap();
            for round in 0..300 {
                log.append(keyed_batch(4, round), 0).await.unwrap();
                if round % 20 == 0 {
                    compio::time::sleep(Duration::from_millis(25)).await;
                }
            }
            // Give the timer (every 20 ms) time to clean what was sealed last.
            compio::time::sleep(Duration::from_millis(200)).await;
            (log.log_end_offset(), log.size_bytes())
        })
        .unwrap();
    assert_eq!(end, 1200);
    assert!(
        size < 300 * 4 * 130 / 4,
        "compaction shrank the log: {size} bytes"
    );
    pool.shutdown();
    let names: Vec<String> = std::fs::read_dir(dir.path().join(tp.dir_name()))
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert!(
        !names
            .iter()
            .any(|n| n.ends_with(".cleaned") || n.ends_with(".swap")),
        "{names:?}"
    );
    // After a restart every key reads back with its latest value.
    let pool = ShardPool::start(config(dir.path(), 1)).unwrap();
    let last = pool
        .call(0, move |shard| async move {
            let (log, rep) = shard.open_partition(&tp, cfg()).await.unwrap();
            assert_eq!(rep.unwrap().truncated_bytes, 0);
            let mut last = std::collections::BTreeMap::new();
            let mut off = log.log_start_offset();
            while off < log.log_end_offset() {
                let bytes = log.read_bytes(off, 1 << 20).await.unwrap();
                for (at, h) in odradek_engine::batch::headers(&bytes) {
                    let b = &bytes[at..at + h.size()];
                    for (_, k, v) in odradek_engine::compact::batch_contents(b, 1 << 24).unwrap() {
                        last.insert(k.unwrap(), v.unwrap());
                    }
                    off = h.last_offset() as u64 + 1;
                }
            }
            last
        })
        .unwrap();
    assert_eq!(last.len(), 4);
    for v in last.values() {
        assert!(
            v.starts_with(b"r299-"),
            "{:?}",
            String::from_utf8_lossy(&v[..6])
        );
    }
    pool.shutdown();
}

/// Pages of `path` resident in the page cache (mincore over a mapping).
fn resident_bytes(path: &std::path::Path) -> u64 {
    use std::os::fd::AsRawFd;
    let f = std::fs::File::open(path).unwrap();
    let len = f.metadata().unwrap().len() as usize;
    if len == 0 {
        return 0;
    }
    let page = 4096usize;
    let pages = len.div_ceil(page);
    let mut vec = vec![0u8; pages];
    // SAFETY: a read-only shared mapping of an open file, unmapped below;
    // mincore writes one byte per page into `vec`, which has that many.
    unsafe {
        let addr = libc::mmap(
            std::ptr::null_mut(),
            len,
            libc::PROT_READ,
            libc::MAP_SHARED,
            f.as_raw_fd(),
            0,
        );
        assert_ne!(addr, libc::MAP_FAILED);
        assert_eq!(libc::mincore(addr, len, vec.as_mut_ptr()), 0);
        libc::munmap(addr, len);
    }
    vec.iter().filter(|&&b| b & 1 == 1).count() as u64 * page as u64
}

fn on_tmpfs(path: &std::path::Path) -> bool {
    let c = std::ffi::CString::new(path.as_os_str().as_encoded_bytes()).unwrap();
    // SAFETY: statfs fills the zeroed struct for a valid C path.
    unsafe {
        let mut st: libc::statfs = std::mem::zeroed();
        libc::statfs(c.as_ptr(), &mut st) == 0 && st.f_type == libc::TMPFS_MAGIC
    }
}

#[test]
fn the_page_cache_keeps_only_the_window_and_blocks_are_reserved_ahead() {
    use std::os::unix::fs::MetadataExt;
    let dir = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    // 32 MiB for the shard, shared by two partitions: 16 MiB each.
    let pool = ShardPool::start(ShardConfig {
        cache_bytes: Some(32 << 20),
        ..config(dir.path(), 1)
    })
    .unwrap();
    let tp = TopicPartition::new("cached", 0);
    let other = TopicPartition::new("cached", 1);
    let window = 16u64 << 20;
    let part_dir = dir.path().join(tp.dir_name());
    let cfg = LogConfig {
        segment_bytes: 32 << 20,
        ..LogConfig::default()
    };
    let seg0 = part_dir.join("00000000000000000000.log");
    let seg0_in = seg0.clone();
    // 48 MiB in 64 KiB batches, flushed every 1 MiB: one roll at 32 MiB.
    let (reserved_ahead, bases) = pool
        .call(0, move |shard| async move {
            let (log, _) = shard.open_partition(&tp, cfg.clone()).await.unwrap();
            shard.open_partition(&other, cfg).await.unwrap();
            let b = sample_batch(60, 1000, 0);
            let mut reserved_ahead = false;
            for i in 0..(48 << 20) / b.len() {
                log.append(b.clone(), 0).await.unwrap();
                if i % 16 == 15 {
                    log.flush().await.unwrap();
                }
                if i == 3 {
                    // the reservation runs in the background: give it 5 s
                    for _ in 0..500 {
                        let m = std::fs::metadata(&seg0_in).unwrap();
                        reserved_ahead = m.blocks() * 512 > m.len() + (512 << 10);
                        if reserved_ahead {
                            break;
                        }
                        compio::time::sleep(std::time::Duration::from_millis(10)).await;
                    }
                }
            }
            log.flush().await.unwrap();
            (reserved_ahead, log.segment_bases())
        })
        .unwrap();
    assert_eq!(bases.len(), 2, "one roll: {bases:?}");
    assert!(reserved_ahead, "blocks are reserved ahead of the appends");
    let sealed = std::fs::metadata(&seg0).unwrap();
    assert!(
        sealed.blocks() * 512 <= sealed.len() + (1 << 20),
        "the roll gave back the reservation: {} blocks for {} bytes",
        sealed.blocks(),
        sealed.len()
    );
    if on_tmpfs(dir.path()) {
        eprintln!("tmpfs keeps every page; residency not checked");
    } else {
        let active = part_dir.join(format!("{:020}.log", bases[1]));
        // pages are dropped in the background after each flush: give it 5 s
        let mut resident = u64::MAX;
        for _ in 0..500 {
            resident = resident_bytes(&seg0) + resident_bytes(&active);
            if resident <= window + (4 << 20) {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(10));
        }
        assert!(
            resident <= window + (4 << 20),
            "{resident} bytes cached with a {window}-byte window"
        );
        assert!(
            resident_bytes(&active) >= window / 2,
            "the newest bytes stay cached"
        );
    }
    pool.shutdown();
}

#[test]
fn a_write_that_meets_an_fdatasync_of_its_file_lands_and_is_counted() {
    use bytes::Bytes;
    use odradek_engine::io::uring::UringStorage;
    use odradek_engine::io::{Storage, StorageFile};
    use std::future::Future;
    use std::task::{Context, Waker};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("segment");
    compio::runtime::Runtime::new().unwrap().block_on(async {
        let file = UringStorage.open(&path, true).await.unwrap();
        file.write_all_at(0, vec![Bytes::from(vec![1u8; 8192])])
            .await
            .unwrap();
        let (inline, io_wq) = odradek_engine::stats::writes_during_sync();
        // The sync's first poll counts it in flight and submits it; the
        // write after that meets it.
        let mut sync = std::pin::pin!(file.sync_data());
        let first = sync.as_mut().poll(&mut Context::from_waker(Waker::noop()));
        assert!(
            first.is_pending(),
            "an fdatasync completes on io-wq, not at once"
        );
        file.write_all_at(
            8192,
            vec![Bytes::from(vec![2u8; 4096]), Bytes::from(vec![3u8; 4096])],
        )
        .await
        .unwrap();
        sync.await.unwrap();
        // Inline unless this thread measured such writes slow: either way
        // counted (other tests may count theirs meanwhile).
        let (inline_after, io_wq_after) = odradek_engine::stats::writes_during_sync();
        assert!(inline_after + io_wq_after > inline + io_wq);
        let bytes = std::fs::read(&path).unwrap();
        assert_eq!(bytes.len(), 16384);
        assert!(bytes[..8192].iter().all(|&b| b == 1));
        assert!(bytes[8192..12288].iter().all(|&b| b == 2));
        assert!(bytes[12288..].iter().all(|&b| b == 3));
    });
}
