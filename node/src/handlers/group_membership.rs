//! JoinGroup (v0–v9), SyncGroup (v0–v5), Heartbeat (v0–v4), LeaveGroup
//! (v0–v5): decode, hand to the coordinator, encode. JoinGroup and
//! SyncGroup may park until the rest of the group arrives; the connection
//! keeps serving its other requests in order meanwhile.

use bytes::Bytes;
use kafka_protocol::messages::join_group_response::JoinGroupResponseMember;
use kafka_protocol::messages::leave_group_response::MemberResponse;
use kafka_protocol::messages::{
    ApiKey, HeartbeatRequest, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse,
    LeaveGroupRequest, LeaveGroupResponse, SyncGroupRequest, SyncGroupResponse,
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::ResponseError;

use crate::broker::Ctx;
use crate::connection::{frame, Pending, Reply};
use crate::groups::state::{JoinArgs, JoinResult, SyncResult};
use crate::protocol::{decode_body, encode_response, FrameError, Request};

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

/// The reply future for a parked answer.
fn later<T, R, F>(
    rx: flume::Receiver<T>,
    key: ApiKey,
    req: &Request,
    lost: T,
    to_resp: F,
) -> Pending
where
    T: 'static,
    R: kafka_protocol::protocol::Encodable + 'static,
    F: FnOnce(T) -> R + 'static,
{
    let (version, correlation) = (req.version, req.header.correlation_id);
    Box::pin(async move {
        let r = rx.recv_async().await.unwrap_or(lost);
        match encode_response(key, version, correlation, &to_resp(r)) {
            Ok(b) => Reply::Frame(b),
            Err(e) => Reply::Close(format!("encoding {key:?} response: {e}")),
        }
    })
}

pub fn handle_join(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: JoinGroupRequest = decode_body(req, "JoinGroup request")?;
    let client_id = req
        .header
        .client_id
        .as_ref()
        .map(|c| c.to_string())
        .unwrap_or_default();
    let args = JoinArgs {
        member_id: body.member_id.to_string(),
        instance_id: body.group_instance_id.as_ref().map(|i| i.to_string()),
        client_host: ctx.peer.map(|p| format!("/{}", p.ip())).unwrap_or_default(),
        protocol_type: body.protocol_type.to_string(),
        protocols: body
            .protocols
            .iter()
            .map(|p| (p.name.to_string(), p.metadata.clone()))
            .collect(),
        session_timeout_ms: body.session_timeout_ms,
        // v0 had no rebalance timeout: it was the session timeout.
        rebalance_timeout_ms: if req.version >= 1 {
            body.rebalance_timeout_ms
        } else {
            body.session_timeout_ms
        },
        require_known_member_id: req.version >= 4,
        new_member_id: format!("{client_id}-{}", uuid::Uuid::new_v4()),
        client_id,
    };
    let version = req.version;
    let to_resp = move |r: JoinResult| {
        let mut resp = JoinGroupResponse::default();
        resp.error_code = r.error;
        resp.generation_id = r.generation;
        resp.protocol_type = r.protocol_type.as_deref().map(s);
        resp.protocol_name = if version >= 7 {
            r.protocol_name.as_deref().map(s)
        } else {
            Some(s(r.protocol_name.as_deref().unwrap_or("")))
        };
        resp.leader = s(&r.leader);
        resp.member_id = s(&r.member_id);
        resp.members = r
            .members
            .into_iter()
            .map(|(id, inst, meta)| {
                let mut m = JoinGroupResponseMember::default();
                m.member_id = s(&id);
                m.group_instance_id = inst.as_deref().map(s);
                m.metadata = meta;
                m
            })
            .collect();
        resp
    };
    let lost = JoinResult {
        error: ResponseError::NotCoordinator.code(),
        generation: -1,
        member_id: args.member_id.clone(),
        ..JoinResult::default()
    };
    let group = body.group_id.0.to_string();
    match ctx.broker.groups.join(&group, args) {
        Ok(rx) => Ok(later(rx, ApiKey::JoinGroup, req, lost, to_resp)),
        Err(e) => {
            let r = JoinResult {
                error: e.code(),
                ..lost
            };
            frame(encode_response(
                ApiKey::JoinGroup,
                req.version,
                req.header.correlation_id,
                &to_resp(r),
            ))
        }
    }
}

pub fn handle_sync(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: SyncGroupRequest = decode_body(req, "SyncGroup request")?;
    let assignments: Vec<(String, Bytes)> = body
        .assignments
        .iter()
        .map(|a| (a.member_id.to_string(), a.assignment.clone()))
        .collect();
    let to_resp = |r: SyncResult| {
        let mut resp = SyncGroupResponse::default();
        resp.error_code = r.error;
        resp.protocol_type = r.protocol_type.as_deref().map(s);
        resp.protocol_name = r.protocol_name.as_deref().map(s);
        resp.assignment = r.assignment;
        resp
    };
    let lost = SyncResult {
        error: ResponseError::NotCoordinator.code(),
        ..SyncResult::default()
    };
    let res = ctx.broker.groups.sync(
        &body.group_id.0,
        &body.member_id,
        body.group_instance_id.as_deref(),
        body.generation_id,
        body.protocol_type.as_deref(),
        body.protocol_name.as_deref(),
        assignments,
    );
    match res {
        Ok(rx) => Ok(later(rx, ApiKey::SyncGroup, req, lost, to_resp)),
        Err(e) => frame(encode_response(
            ApiKey::SyncGroup,
            req.version,
            req.header.correlation_id,
            &to_resp(SyncResult {
                error: e.code(),
                ..SyncResult::default()
            }),
        )),
    }
}

pub fn handle_heartbeat(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: HeartbeatRequest = decode_body(req, "Heartbeat request")?;
    let code = ctx.broker.groups.heartbeat(
        &body.group_id.0,
        &body.member_id,
        body.group_instance_id.as_deref(),
        body.generation_id,
    );
    let mut resp = HeartbeatResponse::default();
    resp.error_code = code.err().map_or(0, |e| e.code());
    frame(encode_response(
        ApiKey::Heartbeat,
        req.version,
        req.header.correlation_id,
        &resp,
    ))
}

pub fn handle_leave(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: LeaveGroupRequest = decode_body(req, "LeaveGroup request")?;
    // v0-v2 name one member; v3+ a batch (KIP-345).
    let members: Vec<(String, Option<String>)> = if req.version >= 3 {
        body.members
            .iter()
            .map(|m| {
                (
                    m.member_id.to_string(),
                    m.group_instance_id.as_ref().map(|i| i.to_string()),
                )
            })
            .collect()
    } else {
        vec![(body.member_id.to_string(), None)]
    };
    let mut resp = LeaveGroupResponse::default();
    match ctx.broker.groups.leave(&body.group_id.0, &members) {
        Ok(codes) if req.version >= 3 => {
            resp.members = members
                .iter()
                .zip(codes)
                .map(|((id, inst), code)| {
                    let mut m = MemberResponse::default();
                    m.member_id = s(id);
                    m.group_instance_id = inst.as_deref().map(s);
                    m.error_code = code.err().map_or(0, |e| e.code());
                    m
                })
                .collect();
        }
        Ok(codes) => resp.error_code = codes.first().and_then(|c| c.err()).map_or(0, |e| e.code()),
        Err(e) => resp.error_code = e.code(),
    }
    frame(encode_response(
        ApiKey::LeaveGroup,
        req.version,
        req.header.correlation_id,
        &resp,
    ))
}
