//! `odradek cluster info`: Metadata (cluster id, controller, brokers) and
//! the bootstrap broker's ApiVersions.

use clap::Subcommand;
use kafka_protocol::messages::ApiKey;
use serde_json::{json, Value};

use super::client::Cluster;
use super::error::Result;
use super::output;
use super::GlobalArgs;

#[derive(Subcommand, Debug)]
pub enum ClusterCommand {
    /// Cluster id, controller, brokers and the API versions served.
    Info,
}

pub fn run(cmd: ClusterCommand, g: &GlobalArgs) -> Result<()> {
    let ClusterCommand::Info = cmd;
    let mut cluster = Cluster::connect(&g.bootstrap, g.timeout())?;
    let md = cluster.metadata(Some(&[]))?;
    let mut apis: Vec<(i16, i16, i16)> = cluster
        .bootstrap
        .api_versions()
        .iter()
        .map(|(&k, &(min, max))| (k, min, max))
        .collect();
    apis.sort();
    let name = |k: i16| {
        ApiKey::try_from(k)
            .map(|a| format!("{a:?}"))
            .unwrap_or_else(|_| format!("Unknown{k}"))
    };
    let mut brokers: Vec<_> = md.brokers.iter().collect();
    brokers.sort_by_key(|b| b.node_id.0);
    let cluster_id = md.cluster_id.as_ref().map(|c| c.to_string());
    if g.json {
        let bs: Vec<Value> = brokers
            .iter()
            .map(|b| json!({"node_id": b.node_id.0, "host": b.host.as_str(), "port": b.port, "rack": b.rack.as_deref()}))
            .collect();
        let api: Vec<Value> = apis
            .iter()
            .map(|&(k, min, max)| json!({"key": k, "name": name(k), "min_version": min, "max_version": max}))
            .collect();
        output::json(&json!({
            "bootstrap": g.bootstrap,
            "cluster_id": cluster_id,
            "controller_id": md.controller_id.0,
            "brokers": bs,
            "api_versions": api,
        }))
    } else {
        output::line(&format!(
            "Cluster id: {}",
            cluster_id.as_deref().unwrap_or("-")
        ))?;
        output::line(&format!("Controller: {}", md.controller_id.0))?;
        output::line("")?;
        let rows: Vec<Vec<String>> = brokers
            .iter()
            .map(|b| {
                vec![
                    b.node_id.0.to_string(),
                    format!("{}:{}", b.host.as_str(), b.port),
                    b.rack.as_deref().unwrap_or("-").to_string(),
                    if b.node_id.0 == md.controller_id.0 {
                        "yes".into()
                    } else {
                        String::new()
                    },
                ]
            })
            .collect();
        output::table(&["NODE", "ADDRESS", "RACK", "CONTROLLER"], &rows)?;
        output::line("")?;
        output::line(&format!(
            "API versions of {} ({} APIs):",
            cluster.bootstrap.addr(),
            apis.len()
        ))?;
        let rows: Vec<Vec<String>> = apis
            .iter()
            .map(|&(k, min, max)| vec![k.to_string(), name(k), format!("{min}-{max}")])
            .collect();
        output::table(&["KEY", "API", "VERSIONS"], &rows)
    }
}
