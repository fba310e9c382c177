//! Producer ids for idempotent producers (InitProducerId), unique across
//! restarts of this broker's log directory.
//!
//! Ids are handed out from blocks of [`BLOCK`]: before the first id of a
//! block is given, the block's end is written to `producer_ids` in the log
//! directory (temporary file, fdatasync, rename, directory fsync). After a
//! restart allocation resumes at the persisted end, so an id is never given
//! twice; the unused rest of a block is skipped, as Kafka's ProducerIdManager
//! skips the rest of its block. One write per thousand InitProducerId, and a
//! mutex: InitProducerId is far from the hot path.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

/// Ids persisted per write.
pub const BLOCK: i64 = 1000;

const FILE: &str = "producer_ids";

/// Why an id could not be allocated.
#[derive(Debug, thiserror::Error)]
pub enum ProducerIdError {
    #[error("{path}: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path}: not a producer id block end: {content:?}")]
    Corrupt { path: PathBuf, content: String },
    #[error("producer ids exhausted")]
    Exhausted,
}

#[derive(Debug)]
struct Next {
    next: i64,
    /// Ids below this are covered by the persisted block end.
    block_end: i64,
}

/// The allocator, shared by every shard.
#[derive(Debug)]
pub struct ProducerIds {
    path: PathBuf,
    state: Mutex<Next>,
}

impl ProducerIds {
    /// Read the persisted block end from `log_dir` (none: start at 0).
    pub fn load(log_dir: &Path) -> Result<Self, ProducerIdError> {
        let path = log_dir.join(FILE);
        let io = |source| ProducerIdError::Io {
            path: path.clone(),
            source,
        };
        let start = match std::fs::read_to_string(&path) {
            Ok(text) => match text.trim().parse::<i64>() {
                Ok(n) if n >= 0 => n,
                _ => {
                    return Err(ProducerIdError::Corrupt {
                        path,
                        content: text.chars().take(40).collect(),
                    })
                }
            },
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => 0,
            Err(e) => return Err(io(e)),
        };
        Ok(Self {
            path,
            state: Mutex::new(Next {
                next: start,
                block_end: start,
            }),
        })
    }

    /// A fresh producer id. Blocks on a file write once per [`BLOCK`] ids:
    /// call it off the shard thread.
    pub fn allocate(&self) -> Result<i64, ProducerIdError> {
        let mut st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        if st.next >= st.block_end {
            let end = st
                .next
                .checked_add(BLOCK)
                .ok_or(ProducerIdError::Exhausted)?;
            self.persist(end)?;
            st.block_end = end;
            tracing::debug!(block_end = end, "producer id block persisted");
        }
        let id = st.next;
        st.next += 1;
        Ok(id)
    }

    /// Whether `id` was (or may have been) handed out by this allocator,
    /// now or before a restart.
    pub fn was_allocated(&self, id: i64) -> bool {
        let st = self.state.lock().unwrap_or_else(|p| p.into_inner());
        (0..st.next).contains(&id)
    }

    fn persist(&self, end: i64) -> Result<(), ProducerIdError> {
        let io = |source| ProducerIdError::Io {
            path: self.path.clone(),
            source,
        };
        crate::durable::replace_file(&self.path, format!("{end}\n").as_bytes()).map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_are_unique_across_restarts() {
        let dir = tempfile::tempdir().unwrap();
        let a = ProducerIds::load(dir.path()).unwrap();
        let first: Vec<i64> = (0..3).map(|_| a.allocate().unwrap()).collect();
        assert_eq!(first, vec![0, 1, 2]);
        assert!(a.was_allocated(2) && !a.was_allocated(3));
        drop(a);
        let b = ProducerIds::load(dir.path()).unwrap();
        assert_eq!(b.allocate().unwrap(), BLOCK);
        // Crossing a block persists the next one.
        for _ in 1..BLOCK {
            b.allocate().unwrap();
        }
        assert_eq!(b.allocate().unwrap(), 2 * BLOCK);
        drop(b);
        let c = ProducerIds::load(dir.path()).unwrap();
        assert_eq!(c.allocate().unwrap(), 3 * BLOCK);
        assert!(c.was_allocated(5));
    }

    #[test]
    fn a_corrupt_file_is_an_error_not_a_reuse() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join(FILE), "banana").unwrap();
        assert!(matches!(
            ProducerIds::load(dir.path()),
            Err(ProducerIdError::Corrupt { .. })
        ));
    }
}
