//! FindCoordinator (v0–v5). A lone broker coordinates every group (the
//! offsets topic is created on first use, as Kafka does). In a cluster the
//! coordinator of a group is the Raft leader of its `__consumer_offsets`
//! partition (the replicated topic is created through the controller on
//! first use); COORDINATOR_NOT_AVAILABLE while no leader is known.
//! Transaction coordinators are not offered: transactions are not
//! implemented.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::Ctx;
use crate::connection::{frame, Pending};
use crate::protocol::{decode_body, encode_response, FrameError, Request};

const GROUP: i8 = 0;

/// How long a cluster member waits for a group's offsets partition to have
/// a leader before answering COORDINATOR_NOT_AVAILABLE.
const LEADER_WAIT: std::time::Duration = std::time::Duration::from_secs(5);

/// Where a key's coordinator is, or why it is not known.
type Found = Result<(i32, String, u16), ResponseError>;

fn why(e: ResponseError, key_type: i8) -> &'static str {
    match e {
        ResponseError::CoordinatorNotAvailable if key_type != GROUP => {
            "transactions are not supported by this broker"
        }
        ResponseError::CoordinatorLoadInProgress => "the group coordinator is loading",
        _ => "the group coordinator is not available",
    }
}

pub async fn handle(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: FindCoordinatorRequest = decode_body(req, "FindCoordinator request")?;
    let ready = if body.key_type == GROUP {
        ctx.broker.groups.ensure(ctx).await
    } else {
        Err(ResponseError::CoordinatorNotAvailable)
    };
    // In a cluster, a freshly created offsets topic (or a partition between
    // leaders) has no leader for a moment, and a new leader loads its
    // groups: wait for that briefly rather than send every client into its
    // retry backoff (some admin clients do not retry a load in progress).
    if let (Ok(()), Some(c)) = (ready, &ctx.broker.cluster) {
        let keys: Vec<&str> = if req.version >= 4 {
            body.coordinator_keys.iter().map(|k| k.as_str()).collect()
        } else {
            vec![body.key.as_str()]
        };
        let deadline = std::time::Instant::now() + LEADER_WAIT;
        while std::time::Instant::now() < deadline
            && keys
                .iter()
                .any(|k| match ctx.broker.groups.coordinator_of(c, k) {
                    Err(_) => true,
                    Ok(node) => node == c.node_id && ctx.broker.groups.loading_here(k),
                })
        {
            compio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
    }
    let find = |key: &str| -> Found {
        ready?;
        match &ctx.broker.cluster {
            Some(c) => {
                let node = ctx.broker.groups.coordinator_of(c, key)?;
                let (host, port) = c
                    .brokers
                    .get(&node)
                    .cloned()
                    .ok_or(ResponseError::CoordinatorNotAvailable)?;
                Ok((node as i32, host, port))
            }
            None => {
                let (host, port) = ctx.broker.config.advertised.clone();
                Ok((ctx.broker.config.node_id, host, port))
            }
        }
    };
    let fill = |c: &mut Coordinator, found: Found| match found {
        Ok((node, host, port)) => {
            c.node_id = BrokerId(node);
            c.host = StrBytes::from_string(host);
            c.port = port as i32;
        }
        Err(e) => {
            c.node_id = BrokerId(-1);
            c.port = -1;
            c.error_code = e.code();
            c.error_message = Some(StrBytes::from_static_str(why(e, body.key_type)));
        }
    };
    let mut resp = FindCoordinatorResponse::default();
    if req.version >= 4 {
        resp.coordinators = body
            .coordinator_keys
            .iter()
            .map(|key| {
                let mut c = Coordinator::default();
                c.key = key.clone();
                fill(&mut c, find(key));
                c
            })
            .collect();
    } else {
        let mut c = Coordinator::default();
        fill(&mut c, find(&body.key));
        resp.error_code = c.error_code;
        resp.node_id = c.node_id;
        resp.host = c.host;
        resp.port = c.port;
        if req.version >= 1 {
            resp.error_message = c.error_message;
        }
    }
    frame(encode_response(
        ApiKey::FindCoordinator,
        req.version,
        req.header.correlation_id,
        &resp,
    ))
}
