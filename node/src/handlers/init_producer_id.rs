//! InitProducerId (v0–v5) for idempotent producers: a fresh producer id at
//! epoch 0, or (KIP-360, v3+) the caller's own id with its epoch bumped, so
//! a producer that lost track of its sequences can start again at 0
//! without a new id.
//!
//! Transactions are not implemented. A request with a transactional id is
//! answered with TRANSACTIONAL_ID_AUTHORIZATION_FAILED: non-retriable, so a
//! transactional client fails at `init_transactions()` with a clear error
//! instead of retrying forever, as it would with the retriable
//! COORDINATOR_NOT_AVAILABLE that a Kafka broker without a loaded
//! transaction coordinator sends. An empty transactional id is
//! INVALID_REQUEST, as in Kafka.

use kafka_protocol::messages::{ApiKey, InitProducerIdRequest, InitProducerIdResponse, ProducerId};
use kafka_protocol::ResponseError;

use crate::broker::Ctx;
use crate::connection::{frame, Pending};
use crate::protocol::{decode_body, encode_response, FrameError, Request};

/// What the producer gets.
enum Outcome {
    Granted { id: i64, epoch: i16 },
    Refused(ResponseError),
}

pub async fn handle(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: InitProducerIdRequest = decode_body(req, "InitProducerId request")?;
    let outcome = match body.transactional_id.as_ref().map(|t| t.0.as_str()) {
        Some("") => Outcome::Refused(ResponseError::InvalidRequest),
        Some(txn) => {
            tracing::debug!(
                transactional_id = txn,
                "InitProducerId refused: transactions are not supported"
            );
            Outcome::Refused(ResponseError::TransactionalIdAuthorizationFailed)
        }
        None => grant(ctx, body.producer_id.0, body.producer_epoch).await,
    };
    let mut resp = InitProducerIdResponse::default();
    match outcome {
        Outcome::Granted { id, epoch } => {
            resp.producer_id = ProducerId(id);
            resp.producer_epoch = epoch;
        }
        Outcome::Refused(e) => {
            resp.error_code = e.code();
            resp.producer_id = ProducerId(-1);
            resp.producer_epoch = -1;
        }
    }
    frame(encode_response(
        ApiKey::InitProducerId,
        req.version,
        req.header.correlation_id,
        &resp,
    ))
}

/// Producer ids of a cluster: `local * STRIDE + node id` (node ids < 1024).
const CLUSTER_ID_STRIDE: i64 = 1024;

/// A new id, or the same id one epoch later when the caller names an id
/// this broker handed out. An epoch that cannot grow (i16::MAX) gets a new
/// id, as Kafka does on epoch exhaustion. Ids and epochs the caller makes
/// up are not trusted: they get a new id.
async fn grant(ctx: &Ctx, id: i64, epoch: i16) -> Outcome {
    let ids = ctx.broker.clone();
    // In a cluster every broker allocates from its own blocks: its node id
    // goes in the low bits, so ids never collide across brokers.
    let node = ctx.broker.cluster.as_ref().map(|c| c.node_id as i64);
    let to_wire = move |local: i64| match node {
        Some(n) => local * CLUSTER_ID_STRIDE + n,
        None => local,
    };
    let local = match node {
        Some(n) if id >= 0 && id % CLUSTER_ID_STRIDE == n => Some(id / CLUSTER_ID_STRIDE),
        Some(_) => None,
        None => Some(id),
    };
    if (0..i16::MAX).contains(&epoch) && local.is_some_and(|l| ids.producer_ids.was_allocated(l)) {
        tracing::info!(
            producer_id = id,
            epoch = epoch + 1,
            "producer epoch bumped (the client renumbers what it has not had acknowledged)"
        );
        return Outcome::Granted {
            id,
            epoch: epoch + 1,
        };
    }
    // The allocation may write and fsync a file: off the shard thread.
    let allocated = compio::runtime::spawn_blocking(move || ids.producer_ids.allocate()).await;
    match allocated {
        Ok(Ok(id)) => {
            let id = to_wire(id);
            tracing::debug!(producer_id = id, "producer id allocated");
            Outcome::Granted { id, epoch: 0 }
        }
        Ok(Err(e)) => {
            tracing::error!("allocating a producer id: {e}");
            Outcome::Refused(ResponseError::UnknownServerError)
        }
        Err(_) => {
            tracing::error!("producer id allocation task panicked");
            Outcome::Refused(ResponseError::UnknownServerError)
        }
    }
}
