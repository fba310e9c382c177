//! Log compaction, the I/O part: read sealed segments, apply the pure rules
//! of [`crate::compact`], and swap the cleaned files in crash-safely.
//!
//! A pass runs in the caller's task (the shard's cleaner timer, or a direct
//! [`PartitionLog::compact`] call) beside appends and fetches: it reads in
//! chunks of at most [`SCAN_CHUNK`] and yields after each, and takes the
//! append lock only to swap one finished segment in. Appends only touch the
//! active segment, which is never cleaned. A truncation or reset between
//! planning and a swap bumps the log's generation, and retention removes
//! segments: either makes the swap see that its segment changed, and the
//! pass stops (the cleaned file is deleted) and runs again later.
//!
//! File protocol for a segment at base `B` (see docs/storage-format.md):
//! 1. write the cleaned batches to `B.log.cleaned`, fdatasync;
//! 2. (append lock held) rename it to `B.log.swap`, fsync the directory:
//!    from here the new content wins;
//! 3. delete `B.index` and `B.timeindex`;
//! 4. rename `B.log.swap` over `B.log`, fsync the directory;
//! 5. write the new `B.index` and `B.timeindex` (synced).
//!
//! Recovery deletes any `.log.cleaned` and finishes steps 3–4 for any
//! `.log.swap`; missing indexes are rebuilt by its scan. A segment that
//! compaction leaves empty is deleted instead (`.log` first, then its
//! indexes), as recovery would drop an empty sealed segment anyway; the
//! log's first segment keeps its last batch, emptied, so the log start
//! never moves.
//!
//! Readers keep working: a [`FileSlice`] holds the old file's handle,
//! which stays readable after the rename replaced its name (an open fd on
//! Linux, an `Rc` in memory), and a read planned on the old file sees the
//! segment's version change and plans again.
//!
//! Not done (Kafka does): merging small cleaned segments into one, and a
//! persistent cleaner checkpoint (after a restart every segment is dirty,
//! so the first pass reads everything once).

use std::borrow::Cow;
use std::cell::Cell;
use std::rc::Rc;
use std::task::Poll;

use bytes::Bytes;

use super::{io_err, write_indexes, LogError, PartitionLog, SCAN_CHUNK};
use crate::batch::{self, BatchHeader, Strictness};
use crate::compact::{self, BatchClean, CleanOptions, Cleaned, KeyMap};
use crate::io::{Storage, StorageFile};
use crate::segment::{
    self, Segment, CLEANED_SUFFIX, INDEX_SUFFIX, LOG_SUFFIX, SWAP_SUFFIX, TIME_INDEX_SUFFIX,
};

/// Bound on the key map of one pass (Kafka's dedupe buffer is 128 MiB too):
/// once its estimated memory passes this, the pass cleans only the segments
/// mapped so far. Checked between segments, so one segment's keys may
/// overshoot it.
const MAX_KEY_MAP_BYTES: usize = 128 << 20;
/// Cleaned bytes are written in pieces of about this size.
const OUT_CHUNK: usize = 1 << 20;

/// What one compaction pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CompactionReport {
    /// Segments examined.
    pub segments: usize,
    /// Segments replaced by a cleaned file.
    pub rewritten: usize,
    /// Segments left empty and deleted.
    pub deleted: usize,
    pub bytes_before: u64,
    pub bytes_after: u64,
    pub records_removed: u64,
    /// The pass stopped early because the log changed under it.
    pub aborted: bool,
}

/// One sealed segment as planned.
struct Target<F> {
    base: u64,
    version: u64,
    file: F,
    size: u64,
    created_ms: u64,
}

/// Clears the log's "compaction running" flag however the pass ends.
struct Busy<'a>(&'a Cell<bool>);

impl Drop for Busy<'_> {
    fn drop(&mut self) {
        self.0.set(false);
    }
}

/// Let the shard's other tasks run (one trip through the executor).
async fn yield_now() {
    let mut yielded = false;
    std::future::poll_fn(|cx| {
        if yielded {
            Poll::Ready(())
        } else {
            yielded = true;
            cx.waker().wake_by_ref();
            Poll::Pending
        }
    })
    .await
}

/// Whole batches of `file` from `pos` (below `size`): up to a chunk, or one
/// larger batch alone. Empty if the bytes at `pos` are not a batch header.
async fn read_batches<F: StorageFile>(file: &F, pos: u64, size: u64) -> std::io::Result<Bytes> {
    let head = file
        .read_at(pos, batch::HEADER_LEN.min((size - pos) as usize))
        .await?;
    let need = match BatchHeader::parse(&head) {
        Ok(h) if h.batch_length >= batch::MIN_BATCH_LENGTH as i32 => h.size() as u64,
        _ => return Ok(Bytes::new()),
    };
    let want = need.max(SCAN_CHUNK as u64).min(size - pos) as usize;
    let mut chunk = file.read_at(pos, want).await?;
    let whole: usize = batch::headers(&chunk).map(|(_, h)| h.size()).sum();
    chunk.truncate(whole);
    Ok(Bytes::from(chunk))
}

fn corrupt(path: &std::path::Path, position: u64) -> LogError {
    LogError::CorruptSegment {
        path: path.to_owned(),
        position,
    }
}

impl<S: Storage> PartitionLog<S> {
    /// Compact if the topic's policy includes `compact` and the dirty share
    /// of the cleanable sealed bytes reached `min.cleanable.dirty.ratio`
    /// (what the shard's cleaner timer calls).
    pub async fn maybe_compact(self: &Rc<Self>) -> Result<Option<CompactionReport>, LogError> {
        let due = {
            let st = self.state.borrow();
            let range = st.cleanable(self.storage.now_ms());
            st.config.cleanup_policy.compact
                && range.dirty_bytes > 0
                && range.dirty_ratio() >= st.config.min_cleanable_dirty_ratio
        };
        if !due || self.compacting.get() {
            return Ok(None);
        }
        self.compact().await.map(Some)
    }

    /// One compaction pass over the cleanable sealed segments, whatever the
    /// dirty ratio (and whatever the policy: callers decide). A pass already
    /// running makes this return an empty report.
    pub async fn compact(self: &Rc<Self>) -> Result<CompactionReport, LogError> {
        self.check_failed()?;
        if self.compacting.replace(true) {
            return Ok(CompactionReport::default());
        }
        let _busy = Busy(&self.compacting);
        let now = self.storage.now_ms();
        let (targets, generation, config) = {
            let st = self.state.borrow();
            let range = st.cleanable(now);
            let targets: Vec<Target<S::File>> = st
                .segments()
                .take(range.segments)
                .map(|s| Target {
                    base: s.base_offset,
                    version: s.version,
                    file: s.file.clone(),
                    size: s.size,
                    created_ms: s.created_ms,
                })
                .collect();
            (targets, st.generation(), st.config.clone())
        };
        let cap = compact::decompress_cap(config.max_batch_bytes);
        // Pass 1: the latest offset of every key in the range.
        let mut map = KeyMap::new();
        let mut mapped = 0;
        for t in &targets {
            if map.memory_estimate() > MAX_KEY_MAP_BYTES {
                break;
            }
            let path = self.path(t.base, LOG_SUFFIX);
            let mut pos = 0;
            while pos < t.size {
                let chunk = read_batches(&t.file, pos, t.size)
                    .await
                    .map_err(io_err(&path))?;
                if chunk.is_empty() {
                    if self.state.borrow().generation() != generation {
                        // Truncated under the pass: not corruption; try later.
                        return Ok(CompactionReport {
                            aborted: true,
                            ..CompactionReport::default()
                        });
                    }
                    return Err(corrupt(&path, pos));
                }
                for (at, h) in batch::headers(&chunk) {
                    let b = &chunk[at..at + h.size()];
                    // A batch failing its CRC is kept as is and maps nothing.
                    if batch::validate(b, usize::MAX, Strictness::Stored).is_ok() {
                        if let Err(e) = map.observe(b, cap) {
                            tracing::debug!(path = %path.display(), offset = h.base_offset, "compaction keeps a batch it cannot read: {e}");
                        }
                    }
                    if h.compression() != 0 {
                        // Decompression is CPU work: let the shard serve between batches.
                        yield_now().await;
                    }
                }
                pos += chunk.len() as u64;
                yield_now().await;
            }
            mapped += 1;
        }
        // Pass 2: rewrite each segment and swap it in.
        let opts = CleanOptions {
            now_ms: now,
            delete_retention_ms: config.delete_retention_ms,
            decompress_cap: cap,
        };
        let mut report = CompactionReport::default();
        for t in &targets[..mapped] {
            let go_on = self
                .clean_segment(
                    t,
                    &map,
                    &opts,
                    generation,
                    config.index_interval_bytes,
                    &mut report,
                )
                .await?;
            if !go_on {
                report.aborted = true;
                break;
            }
        }
        if report.rewritten + report.deleted > 0 || report.aborted {
            tracing::info!(
                dir = %self.dir.display(),
                segments = report.segments,
                rewritten = report.rewritten,
                deleted = report.deleted,
                bytes_before = report.bytes_before,
                bytes_after = report.bytes_after,
                records_removed = report.records_removed,
                aborted = report.aborted,
                "log compacted"
            );
        }
        Ok(report)
    }

    /// Clean one segment and swap the result in. False: the log changed
    /// since the pass was planned; the pass stops.
    async fn clean_segment(
        &self,
        t: &Target<S::File>,
        map: &KeyMap,
        opts: &CleanOptions,
        generation: u64,
        index_interval: u32,
        report: &mut CompactionReport,
    ) -> Result<bool, LogError> {
        let log_path = self.path(t.base, LOG_SUFFIX);
        let cleaned_path = self.path(t.base, CLEANED_SUFFIX);
        let swap_path = self.path(t.base, SWAP_SUFFIX);
        report.segments += 1;
        let out = self
            .storage
            .open(&cleaned_path, true)
            .await
            .map_err(io_err(&cleaned_path))?;
        out.set_len(0).await.map_err(io_err(&cleaned_path))?;
        let mut seg = Segment::new(t.base, out.clone(), t.created_ms);
        let mut pending: Vec<Bytes> = Vec::new();
        let mut pending_len = 0usize;
        let mut written = 0u64;
        let mut removed = 0u64;
        let mut changed = false;
        let mut pos = 0u64;
        // The log's first segment is never left empty (see below).
        let first = self
            .state
            .borrow()
            .segments()
            .next()
            .is_some_and(|s| s.base_offset == t.base);
        let mut last_batch = Bytes::new();
        while pos < t.size {
            let chunk = read_batches(&t.file, pos, t.size)
                .await
                .map_err(io_err(&log_path))?;
            if chunk.is_empty() {
                let _ = self.storage.remove(&cleaned_path).await;
                if self.state.borrow().generation() != generation {
                    return Ok(false); // truncated under the pass
                }
                return Err(corrupt(&log_path, pos));
            }
            for (at, h) in batch::headers(&chunk) {
                let b = chunk.slice(at..at + h.size());
                last_batch = b.clone();
                let verdict = match batch::validate(&b, usize::MAX, Strictness::Stored) {
                    Ok(_) => compact::clean_batch(&b, map, opts).ok(),
                    Err(_) => None,
                };
                let bytes: Cow<Bytes> = match verdict {
                    None
                    | Some(BatchClean {
                        outcome: Cleaned::Keep,
                        ..
                    }) => Cow::Borrowed(&b),
                    Some(BatchClean {
                        outcome: Cleaned::Drop,
                        removed: r,
                    }) => {
                        changed = true;
                        removed += r as u64;
                        continue;
                    }
                    Some(BatchClean {
                        outcome: Cleaned::Rewrite(v),
                        removed: r,
                    }) => {
                        changed = true;
                        removed += r as u64;
                        Cow::Owned(Bytes::from(v))
                    }
                };
                if h.compression() != 0 {
                    yield_now().await;
                }
                let nh = BatchHeader::parse(&bytes)?;
                seg.record_batch(written + pending_len as u64, &nh, index_interval);
                pending_len += bytes.len();
                pending.push(bytes.into_owned());
            }
            pos += chunk.len() as u64;
            if pending_len >= OUT_CHUNK {
                out.write_all_at(written, std::mem::take(&mut pending))
                    .await
                    .map_err(io_err(&cleaned_path))?;
                written += pending_len as u64;
                pending_len = 0;
            }
            yield_now().await;
        }
        if !changed {
            self.storage
                .remove(&cleaned_path)
                .await
                .map_err(io_err(&cleaned_path))?;
            self.state.borrow_mut().mark_cleaned(t.base, t.version);
            report.bytes_before += t.size;
            report.bytes_after += t.size;
            return Ok(true);
        }
        if first && seg.is_empty() && !last_batch.is_empty() {
            // Deleting the first segment would move the log start: a
            // consumer positioned inside it would get OFFSET_OUT_OF_RANGE
            // (and maybe reset to the end), and the start would move again
            // on reopen. Kafka never moves the log start by compaction.
            // Keep the segment's last batch as an empty batch instead.
            if let Ok(empty) = compact::empty_batch(&last_batch) {
                let nh = BatchHeader::parse(&empty)?;
                seg.record_batch(written + pending_len as u64, &nh, index_interval);
                pending_len += empty.len();
                pending.push(Bytes::from(empty));
            }
        }
        if pending_len > 0 {
            out.write_all_at(written, pending)
                .await
                .map_err(io_err(&cleaned_path))?;
        }
        out.sync_data().await.map_err(io_err(&cleaned_path))?;
        self.crash_point()?;
        let _guard = self.lock_settled().await;
        let unchanged = self.failed.borrow().is_none() && {
            let st = self.state.borrow();
            let n = st.segment_count();
            st.generation() == generation
                && st
                    .segments()
                    .take(n - 1)
                    .any(|s| s.base_offset == t.base && s.version == t.version && s.size == t.size)
        };
        if !unchanged {
            let _ = self.storage.remove(&cleaned_path).await;
            return Ok(false);
        }
        let index_paths = [
            self.path(t.base, INDEX_SUFFIX),
            self.path(t.base, TIME_INDEX_SUFFIX),
        ];
        if seg.is_empty() {
            self.storage
                .remove(&log_path)
                .await
                .map_err(io_err(&log_path))?;
            self.crash_point()?;
            for p in index_paths.iter().chain([&cleaned_path]) {
                self.storage.remove(p).await.map_err(io_err(p))?;
            }
            self.storage
                .sync_dir(&self.dir)
                .await
                .map_err(io_err(&self.dir))?;
            self.state
                .borrow_mut()
                .replace_segment(t.base, t.version, None);
            report.deleted += 1;
        } else {
            seg.seal();
            self.storage
                .rename(&cleaned_path, &swap_path)
                .await
                .map_err(io_err(&swap_path))?;
            self.storage
                .sync_dir(&self.dir)
                .await
                .map_err(io_err(&self.dir))?;
            self.crash_point()?;
            for p in &index_paths {
                self.storage.remove(p).await.map_err(io_err(p))?;
            }
            self.crash_point()?;
            self.storage
                .rename(&swap_path, &log_path)
                .await
                .map_err(io_err(&log_path))?;
            self.storage
                .sync_dir(&self.dir)
                .await
                .map_err(io_err(&self.dir))?;
            self.crash_point()?;
            write_indexes(&self.storage, &self.dir, &seg).await?;
            self.crash_point()?;
            report.bytes_after += seg.size;
            self.state
                .borrow_mut()
                .replace_segment(t.base, t.version, Some(seg));
            report.rewritten += 1;
        }
        report.bytes_before += t.size;
        report.records_removed += removed;
        Ok(true)
    }

    /// Test hook: a simulated crash at the n-th step of compaction's file
    /// protocol (the caller then drops the log and crashes the storage).
    #[cfg(test)]
    pub(crate) fn crash_compaction_after(&self, steps: u32) {
        self.crash_after.set(Some(steps));
    }

    #[cfg(test)]
    fn crash_point(&self) -> Result<(), LogError> {
        match self.crash_after.get() {
            Some(0) => Err(LogError::Failed(self.dir.clone())),
            Some(n) => {
                self.crash_after.set(Some(n - 1));
                if n == 1 {
                    Err(LogError::Failed(self.dir.clone()))
                } else {
                    Ok(())
                }
            }
            None => Ok(()),
        }
    }

    #[cfg(not(test))]
    fn crash_point(&self) -> Result<(), LogError> {
        Ok(())
    }
}

/// Recovery's first step: delete unfinished cleaned files and finish
/// interrupted swaps. Returns whether it changed anything.
pub(super) async fn finish_swaps<S: Storage>(
    storage: &S,
    dir: &std::path::Path,
    names: &[String],
) -> Result<bool, LogError> {
    let mut changed = false;
    for n in names {
        if segment::parse_file_name(n, CLEANED_SUFFIX).is_some() {
            let p = dir.join(n);
            storage.remove(&p).await.map_err(io_err(&p))?;
            changed = true;
        }
    }
    for n in names {
        let Some(base) = segment::parse_file_name(n, SWAP_SUFFIX) else {
            continue;
        };
        for sfx in [INDEX_SUFFIX, TIME_INDEX_SUFFIX] {
            let p = dir.join(segment::file_name(base, sfx));
            storage.remove(&p).await.map_err(io_err(&p))?;
        }
        let to = dir.join(segment::file_name(base, LOG_SUFFIX));
        storage
            .rename(&dir.join(n), &to)
            .await
            .map_err(io_err(&to))?;
        tracing::warn!(dir = %dir.display(), base, "recovery finished an interrupted compaction swap");
        changed = true;
    }
    if changed {
        storage.sync_dir(dir).await.map_err(io_err(dir))?;
    }
    Ok(changed)
}
