//! ListGroups (v0–v5), DescribeGroups (v0–v5), DeleteGroups (v0–v2).

use kafka_protocol::messages::delete_groups_response::DeletableGroupResult;
use kafka_protocol::messages::describe_groups_response::{DescribedGroup, DescribedGroupMember};
use kafka_protocol::messages::list_groups_response::ListedGroup;
use kafka_protocol::messages::{
    ApiKey, DeleteGroupsRequest, DeleteGroupsResponse, DescribeGroupsRequest,
    DescribeGroupsResponse, GroupId, ListGroupsRequest, ListGroupsResponse,
};
use kafka_protocol::protocol::StrBytes;

use crate::broker::Ctx;
use crate::connection::{frame, Pending, Reply};
use crate::protocol::{decode_body, encode_response, FrameError, Request};

fn s(x: &str) -> StrBytes {
    StrBytes::from_string(x.to_string())
}

pub fn handle_list(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: ListGroupsRequest = decode_body(req, "ListGroups request")?;
    let mut resp = ListGroupsResponse::default();
    match ctx.broker.groups.list() {
        Err(e) => resp.error_code = e.code(),
        Ok(list) => {
            // Filters compare case-insensitively, as Kafka does.
            let states: Vec<String> = body
                .states_filter
                .iter()
                .map(|x| x.to_lowercase())
                .collect();
            let types: Vec<String> = body.types_filter.iter().map(|x| x.to_lowercase()).collect();
            resp.groups = list
                .into_iter()
                .filter(|(_, _, st)| states.is_empty() || states.contains(&st.to_lowercase()))
                .filter(|_| types.is_empty() || types.iter().any(|t| t == "classic"))
                .map(|(id, ptype, state)| {
                    let mut g = ListedGroup::default();
                    g.group_id = GroupId(s(&id));
                    g.protocol_type = s(&ptype);
                    g.group_state = s(state);
                    g.group_type = s("classic");
                    g
                })
                .collect();
        }
    }
    frame(encode_response(
        ApiKey::ListGroups,
        req.version,
        req.header.correlation_id,
        &resp,
    ))
}

pub fn handle_describe(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: DescribeGroupsRequest = decode_body(req, "DescribeGroups request")?;
    let mut resp = DescribeGroupsResponse::default();
    for id in body.groups {
        let mut g = DescribedGroup::default();
        match ctx.broker.groups.describe(&id.0) {
            Err(e) => g.error_code = e.code(),
            Ok(d) => {
                g.group_state = s(d.state);
                g.protocol_type = s(&d.protocol_type);
                g.protocol_data = s(&d.protocol);
                g.members = d
                    .members
                    .into_iter()
                    .map(|(mid, inst, client, host, meta, assignment)| {
                        let mut m = DescribedGroupMember::default();
                        m.member_id = s(&mid);
                        m.group_instance_id = inst.as_deref().map(s);
                        m.client_id = s(&client);
                        m.client_host = s(&host);
                        m.member_metadata = meta;
                        m.member_assignment = assignment;
                        m
                    })
                    .collect();
            }
        }
        // Kafka's "not requested" value for authorized operations.
        g.authorized_operations = i32::MIN;
        g.group_id = id;
        resp.groups.push(g);
    }
    frame(encode_response(
        ApiKey::DescribeGroups,
        req.version,
        req.header.correlation_id,
        &resp,
    ))
}

pub fn handle_delete(ctx: &Ctx, req: &Request) -> Result<Pending, FrameError> {
    let body: DeleteGroupsRequest = decode_body(req, "DeleteGroups request")?;
    let ctx = ctx.clone();
    let (version, correlation) = (req.version, req.header.correlation_id);
    Ok(Box::pin(async move {
        let mut resp = DeleteGroupsResponse::default();
        for id in body.groups_names {
            let code = ctx.broker.groups.delete_group(&id.0).await;
            let mut r = DeletableGroupResult::default();
            r.group_id = id;
            r.error_code = code.err().map_or(0, |e| e.code());
            resp.results.push(r);
        }
        match encode_response(ApiKey::DeleteGroups, version, correlation, &resp) {
            Ok(b) => Reply::Frame(b),
            Err(e) => Reply::Close(format!("encoding DeleteGroups response: {e}")),
        }
    }))
}
