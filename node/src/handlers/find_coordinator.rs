//! FindCoordinator (v0–v4), before the group coordinator exists: every key
//! gets COORDINATOR_NOT_AVAILABLE (retriable), so group clients wait rather
//! than fail. Served anyway because librdkafka reads its presence as a sign
//! of a modern broker: without it, kcat (librdkafka 2.0.2) silently drops
//! gzip, snappy and lz4 compression and newer librdkafka drops lz4.

use kafka_protocol::messages::find_coordinator_response::Coordinator;
use kafka_protocol::messages::{ApiKey, BrokerId, FindCoordinatorRequest, FindCoordinatorResponse};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::connection::{frame, Pending};
use crate::protocol::{decode_body, encode_response, FrameError, Request};

const WHY: &str = "the group coordinator is not available on this broker yet";

pub fn handle(req: &Request) -> Result<Pending, FrameError> {
    let body: FindCoordinatorRequest = decode_body(req, "FindCoordinator request")?;
    let code = ResponseError::CoordinatorNotAvailable.code();
    let mut resp = FindCoordinatorResponse::default();
    if req.version >= 4 {
        resp.coordinators = body
            .coordinator_keys
            .into_iter()
            .map(|key| {
                let mut c = Coordinator::default();
                c.key = key;
                c.node_id = BrokerId(-1);
                c.port = -1;
                c.error_code = code;
                c.error_message = Some(StrBytes::from_static_str(WHY));
                c
            })
            .collect();
    } else {
        resp.error_code = code;
        resp.node_id = BrokerId(-1);
        resp.port = -1;
        if req.version >= 1 {
            resp.error_message = Some(StrBytes::from_static_str(WHY));
        }
    }
    frame(encode_response(
        ApiKey::FindCoordinator,
        req.version,
        req.header.correlation_id,
        &resp,
    ))
}
