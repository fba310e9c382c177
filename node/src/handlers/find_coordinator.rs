//! FindCoordinator (v0–v5): this broker coordinates every group (the
//! offsets topic is created on first use, as Kafka does). Transaction
//! coordinators are not offered: transactions are not implemented.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::Ctx;
use crate::connection::{frame, Pending};
use crate::protocol::{decode_body, encode_response, FrameError, Request};

const GROUP: i8 = 0;

pub async fn handle(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: FindCoordinatorRequest = decode_body(req, "FindCoordinator request")?;
    let answer = if body.key_type == GROUP {
        ctx.broker.groups.ensure(ctx).await.err()
    } else {
        Some(ResponseError::CoordinatorNotAvailable)
    };
    let why = answer.map(|e| match e {
        ResponseError::CoordinatorNotAvailable if body.key_type != GROUP => {
            "transactions are not supported by this broker"
        }
        ResponseError::CoordinatorLoadInProgress => "the group coordinator is loading",
        _ => "the group coordinator is not available",
    });
    // In a cluster every group lives on one broker: the controller's
    // leader (the offsets topic is not replicated yet, so a group's offsets
    // stay on the broker that coordinated it; see docs/replication.md).
    let mut answer = answer;
    let ((host, port), node) = match &ctx.broker.cluster {
        Some(c) => match c
            .controller_leader()
            .and_then(|l| c.brokers.get(&l).map(|a| (a.clone(), l as i32)))
        {
            Some(x) => x,
            None => {
                answer = answer.or(Some(ResponseError::CoordinatorNotAvailable));
                (ctx.broker.config.advertised.clone(), -1)
            }
        },
        None => (
            ctx.broker.config.advertised.clone(),
            ctx.broker.config.node_id,
        ),
    };
    let (host, port) = (&host, &port);
    let fill = |c: &mut Coordinator| match answer {
        None => {
            c.node_id = BrokerId(node);
            c.host = StrBytes::from_string(host.clone());
            c.port = *port as i32;
        }
        Some(e) => {
            c.node_id = BrokerId(-1);
            c.port = -1;
            c.error_code = e.code();
            c.error_message = why.map(StrBytes::from_static_str);
        }
    };
    let mut resp = FindCoordinatorResponse::default();
    if req.version >= 4 {
        resp.coordinators = body
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let mut c = Coordinator::default();
                c.key = key;
                fill(&mut c);
                c
            })
            .collect();
    } else {
        let mut c = Coordinator::default();
        fill(&mut c);
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
