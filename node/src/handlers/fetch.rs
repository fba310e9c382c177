//! Fetch (v4–v16) with zero-copy record bytes.
//!
//! The response is encoded here, not by `kafka-protocol`, because its
//! record sets are not in memory: each is a file slice of a segment that the
//! connection splices from the page cache to the socket between the encoded
//! pieces around it. Fetch sessions (KIP-227) are declined (session id 0),
//! so clients send full fetches, which every client supports.

use std::time::{Duration, Instant};

use bytes::{BufMut, BytesMut};
use kafka_protocol::messages::FetchRequest;
use kafka_protocol::ResponseError;
use odradek_engine::io::uring::UringFile;
use odradek_engine::log::{FileSlice, LogError};
use odradek_engine::shard::TopicPartition;
use uuid::Uuid;

use crate::broker::Ctx;
use crate::connection::{Part, Pending, Reply};
use crate::handlers::offset_for_leader_epoch::{check_epoch, holder};
use crate::handlers::topic_name;
use crate::protocol::{decode_body, put_response_header, FrameError, Request};

/// One requested partition.
struct Want {
    topic: String,
    topic_id: Uuid,
    tp: Option<TopicPartition>,
    partition: i32,
    offset: i64,
    max_bytes: i32,
    /// The client's idea of the leader epoch (v9+; -1 = unchecked).
    current_leader_epoch: i32,
}

/// What a read of one partition found.
#[derive(Debug)]
struct Got {
    error: Option<ResponseError>,
    high_watermark: i64,
    log_start: i64,
    slice: Option<FileSlice<UringFile>>,
}

pub async fn handle(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: FetchRequest = decode_body(req, "Fetch request")?;
    let version = req.version;
    let snap = ctx.broker.registry.snapshot();
    let mut wants = Vec::new();
    for t in &body.topics {
        let meta = if version >= 13 {
            snap.by_id(t.topic_id)
        } else {
            snap.get(topic_name(&t.topic))
        };
        for p in &t.partitions {
            let tp = meta
                .filter(|m| (0..m.partitions).contains(&p.partition))
                .map(|m| TopicPartition::new(&m.name, p.partition));
            wants.push(Want {
                topic: topic_name(&t.topic).to_string(),
                topic_id: t.topic_id,
                tp,
                partition: p.partition,
                offset: p.fetch_offset,
                max_bytes: p.partition_max_bytes,
                current_leader_epoch: p.current_leader_epoch,
            });
        }
    }
    let ctx = ctx.clone();
    let correlation = req.header.correlation_id;
    let max_wait = Duration::from_millis(body.max_wait_ms.max(0) as u64);
    let min_bytes = body.min_bytes.max(0) as u64;
    let max_bytes = if body.max_bytes <= 0 {
        i32::MAX
    } else {
        body.max_bytes
    } as u64;
    Ok(Box::pin(async move {
        let deadline = Instant::now() + max_wait;
        loop {
            let gots = read_all(&ctx, &wants, max_bytes).await;
            let total: u64 = gots
                .iter()
                .filter_map(|g| g.slice.as_ref())
                .map(|s| s.len)
                .sum();
            let errors = gots.iter().any(|g| g.error.is_some());
            let now = Instant::now();
            if total >= min_bytes
                || total > 0 && min_bytes == 0
                || errors
                || now >= deadline
                || ctx.broker.is_stopping()
            {
                ctx.broker
                    .metrics
                    .shard(ctx.shard.id)
                    .fetch_bytes
                    .fetch_add(total, std::sync::atomic::Ordering::Relaxed);
                return Reply::Parts(encode(version, correlation, &wants, gots));
            }
            wait_for_any(&ctx, &wants, deadline - now).await;
        }
    }))
}

async fn read_all(ctx: &Ctx, wants: &[Want], max_bytes: u64) -> Vec<Got> {
    let mut budget = max_bytes;
    let mut out = Vec::with_capacity(wants.len());
    for w in wants {
        let Some(tp) = &w.tp else {
            out.push(Got {
                error: Some(ResponseError::UnknownTopicOrPartition),
                high_watermark: -1,
                log_start: -1,
                slice: None,
            });
            continue;
        };
        // A replicated partition is read from its leader (consumers are
        // sent there by Metadata; the leader's log shows what is committed),
        // at the epoch the client knows (KIP-320): a cheap atomic read.
        let checked =
            holder(ctx, tp).and_then(|h| check_epoch(w.current_leader_epoch, h.leadership(), true));
        if let Err(e) = checked {
            out.push(Got {
                error: Some(e),
                high_watermark: -1,
                log_start: -1,
                slice: None,
            });
            continue;
        }
        if w.offset < 0 {
            out.push(Got {
                error: Some(ResponseError::OffsetOutOfRange),
                high_watermark: -1,
                log_start: -1,
                slice: None,
            });
            continue;
        }
        // KIP-74: the first partition with data may exceed the budget by one batch.
        let limit = (w.max_bytes.max(0) as u64).min(budget);
        let offset = w.offset as u64;
        let res = ctx
            .with_log(tp, move |log| async move {
                let hw = log.visible_end() as i64;
                let start = log.log_start_offset() as i64;
                let r = if limit == 0 && offset < log.visible_end() {
                    Ok(None)
                } else {
                    log.read(offset, limit.max(1)).await
                };
                (r, hw, start)
            })
            .await;
        let got = match res {
            Ok(Some((Ok(slice), hw, start))) => Got {
                error: None,
                high_watermark: hw,
                log_start: start,
                slice,
            },
            Ok(Some((Err(LogError::OffsetOutOfRange { .. }), hw, start))) => Got {
                error: Some(ResponseError::OffsetOutOfRange),
                high_watermark: hw,
                log_start: start,
                slice: None,
            },
            Ok(Some((Err(e), hw, start))) => {
                tracing::warn!(partition = %tp, "fetch failed: {e}");
                Got {
                    error: Some(ResponseError::KafkaStorageError),
                    high_watermark: hw,
                    log_start: start,
                    slice: None,
                }
            }
            Ok(None) => Got {
                error: Some(ResponseError::UnknownTopicOrPartition),
                high_watermark: -1,
                log_start: -1,
                slice: None,
            },
            Err(_) => Got {
                error: Some(ResponseError::KafkaStorageError),
                high_watermark: -1,
                log_start: -1,
                slice: None,
            },
        };
        if let Some(s) = &got.slice {
            budget = budget.saturating_sub(s.len);
        }
        out.push(got);
    }
    out
}

/// Wait until any requested partition gets new data, or `timeout`.
async fn wait_for_any(ctx: &Ctx, wants: &[Want], timeout: Duration) {
    let (tx, rx) = flume::bounded::<()>(wants.len().max(1));
    for w in wants {
        let Some(tp) = w.tp.clone() else { continue };
        let offset = w.offset.max(0) as u64;
        let tx = tx.clone();
        let ctx = ctx.clone();
        compio::runtime::spawn(async move {
            let _ = ctx
                .with_log(&tp, move |log| async move {
                    // The owner-side wait ends at the deadline too, so an idle
                    // partition does not collect waiters.
                    let _ = compio::time::timeout(timeout, log.wait_for_data(offset)).await;
                })
                .await;
            let _ = tx.send(());
        })
        .detach();
    }
    drop(tx);
    let _ = compio::time::timeout(timeout, rx.recv_async()).await;
}

fn uvarint(out: &mut BytesMut, mut v: u64) {
    while v >= 0x80 {
        out.put_u8((v as u8) | 0x80);
        v >>= 7;
    }
    out.put_u8(v as u8);
}

fn array_len(out: &mut BytesMut, flexible: bool, n: usize) {
    if flexible {
        uvarint(out, n as u64 + 1);
    } else {
        out.put_i32(n as i32);
    }
}

/// Encode the response; record sets become file parts between byte parts.
fn encode(version: i16, correlation: i32, wants: &[Want], gots: Vec<Got>) -> Vec<Part> {
    let flexible = version >= 12;
    let mut parts: Vec<Part> = Vec::new();
    let mut cur = BytesMut::with_capacity(256);
    cur.put_i32(0); // size, filled in below
    put_response_header(&mut cur, if flexible { 1 } else { 0 }, correlation);
    cur.put_i32(0); // throttle_time_ms
    if version >= 7 {
        cur.put_i16(0); // error_code
        cur.put_i32(0); // session_id: sessions declined
    }
    // Group partitions by topic, keeping request order.
    let mut groups: Vec<(usize, Vec<usize>)> = Vec::new();
    for (i, w) in wants.iter().enumerate() {
        match groups.iter_mut().find(|(first, _)| {
            let f = &wants[*first];
            f.topic == w.topic && f.topic_id == w.topic_id
        }) {
            Some((_, idx)) => idx.push(i),
            None => groups.push((i, vec![i])),
        }
    }
    array_len(&mut cur, flexible, groups.len());
    let mut gots: Vec<Option<Got>> = gots.into_iter().map(Some).collect();
    let mut total_files = 0u64;
    for (first, idx) in groups {
        let w = &wants[first];
        if version >= 13 {
            cur.put_slice(w.topic_id.as_bytes());
        } else if flexible {
            uvarint(&mut cur, w.topic.len() as u64 + 1);
            cur.put_slice(w.topic.as_bytes());
        } else {
            cur.put_i16(w.topic.len() as i16);
            cur.put_slice(w.topic.as_bytes());
        }
        array_len(&mut cur, flexible, idx.len());
        for i in idx {
            let g = gots[i].take().expect("each partition encoded once");
            let mut error = g.error;
            if error == Some(ResponseError::UnknownTopicOrPartition) && version >= 13 {
                error = Some(ResponseError::UnknownTopicId);
            }
            cur.put_i32(wants[i].partition);
            cur.put_i16(error.map_or(0, |e| e.code()));
            cur.put_i64(g.high_watermark);
            cur.put_i64(g.high_watermark); // last_stable_offset: no transactions
            if version >= 5 {
                cur.put_i64(g.log_start);
            }
            // aborted_transactions: null
            if flexible {
                uvarint(&mut cur, 0);
            } else {
                cur.put_i32(-1);
            }
            if version >= 11 {
                cur.put_i32(-1); // preferred_read_replica
            }
            let len = g.slice.as_ref().map_or(0, |s| s.len);
            if flexible {
                uvarint(&mut cur, len + 1);
            } else {
                cur.put_i32(len as i32);
            }
            if let Some(slice) = g.slice {
                parts.push(Part::Bytes(
                    std::mem::replace(&mut cur, BytesMut::with_capacity(64)).freeze(),
                ));
                total_files += slice.len;
                parts.push(Part::File(slice));
            }
            if flexible {
                uvarint(&mut cur, 0); // partition tagged fields
            }
        }
        if flexible {
            uvarint(&mut cur, 0); // topic tagged fields
        }
    }
    if flexible {
        uvarint(&mut cur, 0); // response tagged fields
    }
    parts.push(Part::Bytes(cur.freeze()));
    // Fill in the frame size now that every piece is known.
    let total: u64 = parts
        .iter()
        .map(|p| match p {
            Part::Bytes(b) => b.len() as u64,
            Part::File(_) => 0,
        })
        .sum::<u64>()
        + total_files
        - 4;
    if let Some(Part::Bytes(first)) = parts.first_mut() {
        let mut head = BytesMut::from(&first[..]);
        head[0..4].copy_from_slice(&(total as i32).to_be_bytes());
        *first = head.freeze();
    }
    parts
}
