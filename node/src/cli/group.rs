//! `odradek group list|describe`: ListGroups on every broker,
//! FindCoordinator + DescribeGroups + OffsetFetch, and ListOffsets for lag.

use std::collections::{BTreeMap, HashMap};

use bytes::Buf;
use clap::Subcommand;
use kafka_protocol::messages::{
    ConsumerProtocolAssignment, DescribeGroupsRequest, GroupId, ListGroupsRequest,
    OffsetFetchRequest,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::{json, Value};

use super::client::{decode_embedded, Cluster};
use super::error::{check, CliError, Result};
use super::output;
use super::topic::list_offsets;
use super::GlobalArgs;

#[derive(Subcommand, Debug)]
pub enum GroupCommand {
    /// List groups on every broker.
    List,
    /// Members, assignments, committed offsets, log end offsets and lag.
    Describe { group: String },
}

pub fn run(cmd: GroupCommand, g: &GlobalArgs) -> Result<()> {
    let mut cluster = Cluster::connect(&g.bootstrap, g.timeout())?;
    match cmd {
        GroupCommand::List => list(&mut cluster, g),
        GroupCommand::Describe { group } => describe(&mut cluster, g, &group),
    }
}

fn list(cluster: &mut Cluster, g: &GlobalArgs) -> Result<()> {
    let md = cluster.metadata(Some(&[]))?;
    let mut groups = Vec::new();
    for b in &md.brokers {
        let conn = cluster.broker(b.node_id.0)?;
        let (_, resp) = conn.send(&ListGroupsRequest::default(), 0, 5)?;
        check(
            || format!("listing groups on broker {}", b.node_id.0),
            resp.error_code,
            None,
        )?;
        for lg in resp.groups {
            groups.push((
                lg.group_id.0.to_string(),
                lg.group_state.to_string(),
                lg.protocol_type.to_string(),
                b.node_id.0,
            ));
        }
    }
    groups.sort();
    if g.json {
        let v: Vec<Value> = groups
            .iter()
            .map(|(n, s, t, c)| {
                json!({"group": n, "state": (!s.is_empty()).then_some(s), "protocol_type": t, "coordinator": c})
            })
            .collect();
        output::json(&json!({ "groups": v }))
    } else {
        let rows: Vec<Vec<String>> = groups
            .iter()
            .map(|(n, s, t, c)| vec![n.clone(), s.clone(), t.clone(), c.to_string()])
            .collect();
        output::table(&["GROUP", "STATE", "PROTOCOL_TYPE", "COORDINATOR"], &rows)
    }
}

/// A consumer member's assignment (ConsumerProtocolAssignment: an i16
/// version, then the struct), or None when it is not one.
fn assignment(b: &bytes::Bytes) -> Option<Vec<(String, Vec<i32>)>> {
    if b.len() < 2 {
        return None;
    }
    let mut v = b.clone();
    let version = v.get_i16().clamp(0, 3);
    let a: ConsumerProtocolAssignment = decode_embedded(v, version).ok()?;
    Some(
        a.assigned_partitions
            .into_iter()
            .map(|tp| (tp.topic.0.to_string(), tp.partitions))
            .collect(),
    )
}

/// topic, partition, committed offset, log end offset, lag, owning member.
type OffsetRow = (
    String,
    i32,
    Option<i64>,
    Option<i64>,
    Option<i64>,
    Option<String>,
);

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

fn describe(cluster: &mut Cluster, g: &GlobalArgs, group: &str) -> Result<()> {
    let conn = cluster.coordinator(group)?;
    let coordinator_addr = conn.addr().to_string();
    let mut req = DescribeGroupsRequest::default();
    req.groups = vec![GroupId(sb(group))];
    let (_, resp) = conn.send(&req, 0, 5)?;
    let dg = resp
        .groups
        .into_iter()
        .next()
        .ok_or_else(|| CliError::Malformed {
            addr: coordinator_addr.clone(),
            detail: "DescribeGroups answered no group".into(),
        })?;
    check(
        || format!("describing group {group}"),
        dg.error_code,
        dg.error_message.as_deref(),
    )?;

    let mut ofr = OffsetFetchRequest::default();
    ofr.group_id = GroupId(sb(group));
    ofr.topics = None; // all committed offsets
                       // v2: null topics means all; v7: the last single-group shape.
    let (_, offs) = conn.send(&ofr, 2, 7)?;
    check(
        || format!("fetching offsets of group {group}"),
        offs.error_code,
        None,
    )?;
    let mut committed: BTreeMap<(String, i32), i64> = BTreeMap::new();
    for t in &offs.topics {
        for p in &t.partitions {
            if p.error_code == 0 && p.committed_offset >= 0 {
                committed.insert(
                    (t.name.0.to_string(), p.partition_index),
                    p.committed_offset,
                );
            }
        }
    }
    if dg.group_state.as_str() == "Dead" && dg.members.is_empty() && committed.is_empty() {
        return Err(CliError::kafka(
            format!("describing group {group}"),
            69, // GROUP_ID_NOT_FOUND
            Some("the group has no members and no committed offsets"),
        ));
    }

    let consumer = dg.protocol_type.as_str() == "consumer";
    let mut owner: HashMap<(String, i32), String> = HashMap::new();
    let mut members = Vec::new();
    for m in &dg.members {
        let assigned = if consumer {
            assignment(&m.member_assignment)
        } else {
            None
        };
        if let Some(a) = &assigned {
            for (t, ps) in a {
                for p in ps {
                    owner.insert((t.clone(), *p), m.member_id.to_string());
                }
            }
        }
        members.push((m, assigned));
    }

    let topics: Vec<String> = {
        let mut t: Vec<String> = committed.keys().map(|(t, _)| t.clone()).collect();
        t.extend(owner.keys().map(|(t, _)| t.clone()));
        t.sort();
        t.dedup();
        t
    };
    let mut keys: Vec<(String, i32)> = committed.keys().cloned().collect();
    keys.extend(owner.keys().cloned());
    keys.sort();
    keys.dedup();
    let ends = if topics.is_empty() {
        HashMap::new()
    } else {
        let md = cluster.metadata(Some(&topics))?;
        list_offsets(cluster, &md, &keys, -1)?
    };
    let rows: Vec<OffsetRow> = keys
        .iter()
        .map(|k| {
            let c = committed.get(k).copied();
            let e = match ends.get(k) {
                Some(Ok(e)) => Some(*e),
                _ => None,
            };
            let lag = match (c, e) {
                (Some(c), Some(e)) => Some((e - c).max(0)),
                _ => None,
            };
            (k.0.clone(), k.1, c, e, lag, owner.get(k).cloned())
        })
        .collect();

    if g.json {
        let ms: Vec<Value> = members
            .iter()
            .map(|(m, a)| {
                json!({
                    "member_id": m.member_id.as_str(),
                    "group_instance_id": m.group_instance_id.as_deref(),
                    "client_id": m.client_id.as_str(),
                    "client_host": m.client_host.as_str(),
                    "assignment": a.as_ref().map(|a| a.iter().map(|(t, ps)| json!({"topic": t, "partitions": ps})).collect::<Vec<_>>()),
                })
            })
            .collect();
        let os: Vec<Value> = rows
            .iter()
            .map(|(t, p, c, e, l, o)| {
                json!({"topic": t, "partition": p, "committed_offset": c, "log_end_offset": e, "lag": l, "member_id": o})
            })
            .collect();
        output::json(&json!({
            "group": group,
            "state": dg.group_state.as_str(),
            "protocol_type": dg.protocol_type.as_str(),
            "protocol": dg.protocol_data.as_str(),
            "coordinator": coordinator_addr,
            "members": ms,
            "offsets": os,
            "total_lag": rows.iter().filter_map(|r| r.4).sum::<i64>(),
        }))
    } else {
        output::line(&format!(
            "Group: {group}  state: {}  protocol: {}  coordinator: {coordinator_addr}",
            dg.group_state.as_str(),
            match (dg.protocol_type.as_str(), dg.protocol_data.as_str()) {
                ("", "") => "-".to_string(),
                (t, "") => t.to_string(),
                (t, d) => format!("{t}/{d}"),
            },
        ))?;
        output::line("")?;
        let mrows: Vec<Vec<String>> = members
            .iter()
            .map(|(m, a)| {
                let a = a
                    .as_ref()
                    .map(|a| {
                        a.iter()
                            .map(|(t, ps)| {
                                format!(
                                    "{t}:{}",
                                    ps.iter()
                                        .map(|p| p.to_string())
                                        .collect::<Vec<_>>()
                                        .join(",")
                                )
                            })
                            .collect::<Vec<_>>()
                            .join(" ")
                    })
                    .unwrap_or_else(|| "-".into());
                vec![
                    m.member_id.to_string(),
                    m.client_id.to_string(),
                    m.client_host.to_string(),
                    a,
                ]
            })
            .collect();
        if mrows.is_empty() {
            output::line("(no active members)")?;
        } else {
            output::table(&["MEMBER", "CLIENT_ID", "HOST", "ASSIGNMENT"], &mrows)?;
        }
        output::line("")?;
        let opt = |v: &Option<i64>| v.map_or_else(|| "-".into(), |v| v.to_string());
        let orows: Vec<Vec<String>> = rows
            .iter()
            .map(|(t, p, c, e, l, o)| {
                vec![
                    t.clone(),
                    p.to_string(),
                    opt(c),
                    opt(e),
                    opt(l),
                    o.clone().unwrap_or_else(|| "-".into()),
                ]
            })
            .collect();
        output::table(
            &["TOPIC", "PARTITION", "COMMITTED", "END", "LAG", "MEMBER"],
            &orows,
        )
    }
}
