//! Produce (v3+, RecordBatch v2). acks=0: no response; acks=1: answer after
//! the owner shard appended; acks=-1: answer once the append is durable
//! under the partition's flush policy (group commit).
//!
//! Record bytes are not decoded: the engine validates each batch (length,
//! magic, CRC, count, `max.message.bytes`) and writes it as sent.
//!
//! Idempotent producers' batches are checked by the engine in its writer:
//! a retry of one of a producer's last five batches is answered with
//! success and the offsets it got the first time (nothing is written), a
//! stale epoch with INVALID_PRODUCER_EPOCH, a sequence gap with
//! OUT_OF_ORDER_SEQUENCE_NUMBER.

use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{ApiKey, ProduceRequest, ProduceResponse};
use kafka_protocol::ResponseError;
use odradek_engine::batch::BatchError;
use odradek_engine::log::LogError;
use odradek_engine::producer::ProducerError;
use odradek_engine::shard::TopicPartition;

use crate::broker::Ctx;
use crate::connection::{Pending, Reply};
use crate::handlers::topic_name;
use crate::protocol::{decode_body, encode_response, FrameError, Request};

/// Outcome of one partition's append.
#[derive(Debug)]
struct Appended {
    tp: TopicPartition,
    error: Option<ResponseError>,
    base_offset: i64,
    log_start: i64,
    /// acks=all: answers whether the append became durable.
    durable: Option<flume::Receiver<bool>>,
}

impl Appended {
    /// A partition's append that was refused (nothing written).
    fn refused(tp: TopicPartition, error: ResponseError) -> Self {
        Self {
            tp,
            error: Some(error),
            base_offset: -1,
            log_start: -1,
            durable: None,
        }
    }
}

/// acks=all: wait for durability on the owner shard, from a task started
/// there right after the append (no second hop to that shard; a waiter
/// starts the group-commit flush at once, while the next appends queue).
fn wait_durable_on_owner(
    log: &std::rc::Rc<odradek_engine::shard::Log>,
    last: u64,
) -> flume::Receiver<bool> {
    let (tx, rx) = flume::bounded(1);
    let log = log.clone();
    compio::runtime::spawn(async move {
        let _ = tx.send(log.wait_durable(last).await.is_ok());
    })
    .detach();
    rx
}

fn log_error_code(e: &LogError) -> ResponseError {
    match e {
        LogError::InvalidBatch(BatchError::TooLarge { .. }) => ResponseError::MessageTooLarge,
        LogError::InvalidBatch(BatchError::CrcMismatch { .. }) => ResponseError::CorruptMessage,
        LogError::InvalidBatch(_) | LogError::TooManyRecords | LogError::InvalidRecord(_) => {
            ResponseError::InvalidRecord
        }
        LogError::OffsetOutOfRange { .. } => ResponseError::OffsetOutOfRange,
        LogError::Io { .. }
        | LogError::Failed(_)
        | LogError::Raced { .. }
        | LogError::CorruptSegment { .. }
        | LogError::NotAtOffset { .. } => ResponseError::KafkaStorageError,
        LogError::Producer(ProducerError::InvalidProducerEpoch { .. }) => {
            ResponseError::InvalidProducerEpoch
        }
        LogError::Producer(ProducerError::OutOfOrderSequence { .. }) => {
            ResponseError::OutOfOrderSequenceNumber
        }
        LogError::Producer(ProducerError::InvalidSequence { .. }) => ResponseError::InvalidRecord,
    }
}

/// A partition's append that is under way.
enum Underway {
    /// Queued in a log of this shard: awaited by the reply, so the reader
    /// goes on to the next request meanwhile.
    Local(std::pin::Pin<Box<dyn std::future::Future<Output = Appended>>>),
    /// On another shard, or through Raft: awaited before the next request
    /// is read, which keeps pipelined requests in order there.
    Task(compio::runtime::JoinHandle<Appended>),
}

pub async fn handle(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: ProduceRequest = decode_body(req, "Produce request")?;
    let acks = body.acks;
    let snap = ctx.broker.registry.snapshot();
    let mut underway = Vec::new();
    let mut done: Vec<Appended> = Vec::new();
    for topic in body.topic_data {
        let name = topic_name(&topic.name).to_string();
        let meta = snap.get(&name).cloned();
        for p in topic.partition_data {
            let tp = TopicPartition::new(&name, p.index);
            let fail = |error| Appended::refused(tp.clone(), error);
            if !matches!(acks, -1..=1) {
                done.push(fail(ResponseError::InvalidRequiredAcks));
                continue;
            }
            if !meta
                .as_ref()
                .is_some_and(|m| (0..m.partitions).contains(&p.index))
            {
                done.push(fail(ResponseError::UnknownTopicOrPartition));
                continue;
            }
            let Some(records) = p.records else {
                done.push(fail(ResponseError::InvalidRecord));
                continue;
            };
            let ctx2 = ctx.clone();
            let bytes = records.len() as u64;
            if let Some(cluster) = ctx.broker.replicated(&name).cloned() {
                let max = ctx.broker.config.message_max_bytes;
                underway.push(Underway::Task(compio::runtime::spawn(async move {
                    let r = replicated_append(&cluster, &tp, records, acks, max).await;
                    if r.is_ok() {
                        ctx2.broker
                            .metrics
                            .shard(ctx2.shard.id)
                            .produce_bytes
                            .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
                    }
                    // acks=all was answered by the Raft commit: no
                    // durability wait follows (`durable: None`).
                    let (base_offset, error) = match r {
                        Ok(base) => (base as i64, None),
                        Err(code) => (-1, Some(code)),
                    };
                    Appended {
                        tp,
                        error,
                        base_offset,
                        log_start: -1,
                        durable: None,
                    }
                })));
                continue;
            }
            if ctx.broker.shards.owner_of(&tp) == ctx.shard.id {
                let Some(log) = ctx.shard.partition(&tp) else {
                    done.push(fail(ResponseError::UnknownTopicOrPartition));
                    continue;
                };
                match log.submit(records, 0) {
                    Ok(append) if acks == -1 => {
                        // The durability wait starts when the write is done,
                        // not when this reply's turn comes (its waiter asks
                        // for the group commit): a task of its own, which
                        // waits for the fdatasync too.
                        let tp2 = tp.clone();
                        let t = compio::runtime::spawn(async move {
                            let r = append.await;
                            let last = r.as_ref().ok().map(|info| info.last_offset);
                            let mut a = appended(&ctx2, tp, r, log.log_start_offset(), None, bytes);
                            if let Some(last) = last {
                                if let Err(e) = log.wait_durable(last).await {
                                    tracing::debug!(partition = %a.tp, "produce not durable: {e}");
                                    a.error = Some(ResponseError::KafkaStorageError);
                                }
                            }
                            a
                        });
                        underway.push(Underway::Local(Box::pin(async move {
                            t.await.unwrap_or_else(|_| {
                                Appended::refused(tp2, ResponseError::KafkaStorageError)
                            })
                        })));
                    }
                    Ok(append) => {
                        underway.push(Underway::Local(Box::pin(async move {
                            let r = append.await;
                            appended(&ctx2, tp, r, log.log_start_offset(), None, bytes)
                        })));
                    }
                    Err(e) => done.push(appended(ctx, tp, Err(e), 0, None, bytes)),
                }
                continue;
            }
            underway.push(Underway::Task(compio::runtime::spawn(async move {
                let res = ctx2
                    .with_log(&tp, move |log| async move {
                        let r = log.append(records, 0).await;
                        let durable = match &r {
                            Ok(info) if acks == -1 => {
                                Some(wait_durable_on_owner(&log, info.last_offset))
                            }
                            _ => None,
                        };
                        (r, log.log_start_offset(), durable)
                    })
                    .await;
                match res {
                    Ok(Some((r, start, durable))) => appended(&ctx2, tp, r, start, durable, bytes),
                    Ok(None) => Appended::refused(tp, ResponseError::UnknownTopicOrPartition),
                    Err(_) => Appended::refused(tp, ResponseError::KafkaStorageError),
                }
            })));
        }
    }
    let mut local = Vec::new();
    for u in underway {
        match u {
            Underway::Local(f) => local.push(f),
            Underway::Task(t) => match t.await {
                Ok(a) => done.push(a),
                Err(_) => {
                    return Err(FrameError::Malformed {
                        what: "produce",
                        why: "append task panicked".into(),
                    })
                }
            },
        }
    }
    let (version, correlation) = (req.version, req.header.correlation_id);
    Ok(Box::pin(async move {
        for f in local {
            done.push(f.await);
        }
        if acks == 0 {
            // No response; a failure closes the connection so the client
            // notices.
            return match done.iter().find(|a| a.error.is_some()) {
                Some(a) => {
                    Reply::Close(format!("acks=0 produce to {} failed: {:?}", a.tp, a.error))
                }
                None => Reply::None,
            };
        }
        if acks == -1 {
            // Local appends wait for their fdatasync; replicated ones
            // are committed already and carry no wait.
            for a in done.iter_mut().filter(|a| a.error.is_none()) {
                if let Some(rx) = a.durable.take() {
                    if !rx.recv_async().await.unwrap_or(false) {
                        a.error = Some(ResponseError::KafkaStorageError);
                    }
                }
            }
        }
        match encode_response(ApiKey::Produce, version, correlation, &response(done)) {
            Ok(b) => Reply::Frame(b),
            Err(e) => Reply::Close(format!("encoding produce response: {e}")),
        }
    }))
}

/// The answer for one partition's append to an unreplicated log, counted
/// in the metrics when it wrote something (`log_start` only matters then).
fn appended(
    ctx: &Ctx,
    tp: TopicPartition,
    r: Result<odradek_engine::log::AppendInfo, LogError>,
    log_start: u64,
    durable: Option<flume::Receiver<bool>>,
    bytes: u64,
) -> Appended {
    match r {
        Ok(info) => {
            if info.duplicate {
                tracing::debug!(
                    partition = %tp,
                    base_offset = info.base_offset,
                    "idempotent retry answered with its original offsets"
                );
            } else {
                ctx.broker
                    .metrics
                    .shard(ctx.shard.id)
                    .produce_bytes
                    .fetch_add(bytes, std::sync::atomic::Ordering::Relaxed);
            }
            Appended {
                tp,
                error: None,
                base_offset: info.base_offset as i64,
                log_start: log_start as i64,
                durable,
            }
        }
        Err(e) => {
            tracing::debug!(partition = %tp, "produce refused: {e}");
            Appended::refused(tp, log_error_code(&e))
        }
    }
}

/// Produce to a replicated partition: only its leader takes it; each batch
/// is one Raft proposal; acks=all is answered once Raft committed it.
async fn replicated_append(
    cluster: &crate::cluster::runtime::Cluster,
    tp: &TopicPartition,
    records: bytes::Bytes,
    acks: i16,
    max: usize,
) -> Result<u64, ResponseError> {
    use crate::replication::replica::Acks;
    use crate::replication::ProduceError;
    let Some(group) = cluster.group(tp).filter(|g| g.is_leader()) else {
        return Err(ResponseError::NotLeaderOrFollower);
    };
    let headers = odradek_engine::batch::validate_all(
        &records,
        max,
        odradek_engine::batch::Strictness::Produce,
    )
    .map_err(|e| log_error_code(&LogError::InvalidBatch(e)))?;
    let mode = if acks == -1 { Acks::All } else { Acks::Leader };
    let code = |e: ProduceError| match e {
        ProduceError::NotLeader { .. } => ResponseError::NotLeaderOrFollower,
        ProduceError::NotEnoughReplicas { .. } => ResponseError::NotEnoughReplicas,
        ProduceError::InvalidBatch(_) => ResponseError::CorruptMessage,
        ProduceError::Producer(p) => log_error_code(&LogError::Producer(p)),
    };
    // Every batch is queued before any answer is awaited: they keep their
    // order and are written (and committed) together, not one round trip
    // to the group's task each.
    let mut answers = Vec::with_capacity(headers.len());
    let mut at = 0usize;
    for h in headers {
        let batch = records.slice(at..at + h.size());
        at += h.size();
        answers.push(
            group
                .propose_queued(batch, mode, cluster.min_insync())
                .map_err(code)?,
        );
    }
    let mut first = None;
    for rx in answers {
        let (b, _) = rx
            .recv_async()
            .await
            .unwrap_or(Err(ProduceError::NotLeader { leader: None }))
            .map_err(code)?;
        first.get_or_insert(b);
    }
    Ok(first.unwrap_or(0))
}

fn response(done: Vec<Appended>) -> ProduceResponse {
    let mut resp = ProduceResponse::default();
    for a in done {
        let mut pr = PartitionProduceResponse::default();
        pr.index = a.tp.partition;
        pr.error_code = a.error.map_or(0, |e| e.code());
        pr.base_offset = a.base_offset;
        pr.log_append_time_ms = -1;
        pr.log_start_offset = a.log_start;
        let name = &*a.tp.topic;
        match resp
            .responses
            .iter_mut()
            .find(|t| t.name.0.as_str() == name)
        {
            Some(t) => t.partition_responses.push(pr),
            None => {
                let mut t = TopicProduceResponse::default();
                t.name = kafka_protocol::messages::TopicName(
                    kafka_protocol::protocol::StrBytes::from_string(name.to_string()),
                );
                t.partition_responses.push(pr);
                resp.responses.push(t);
            }
        }
    }
    resp
}
