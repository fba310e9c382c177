//! A broker's part in a cluster: the inter-broker transport, the
//! controller group and its applier, and one Raft group per local
//! partition replica. The controller's committed commands are applied in
//! log order on shard 0; applying a topic opens its local replicas (each
//! on its owner shard) and starts their groups.

use std::collections::{BTreeMap, HashMap};
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock, RwLock};
use std::time::{Duration, Instant};

use kafka_protocol::ResponseError;
use odradek_engine::batch::BatchHeader;
use odradek_engine::shard::{Log, TopicPartition};
use raft::eraftpb::Message;

use super::report::{self, Led, ReportConfig, Reporter};
use super::{Applied, ClusterState, Command, Controller, Topic, TopicDefaults};
use crate::broker::{Broker, Ctx};
use crate::config::BrokerConfig;
use crate::metadata::{topic_log_config, AdminError};
use crate::replication::group::{self, GroupHandle, GroupStatus, Outbox};
use crate::replication::transport::{GroupId, Transport, TransportConfig};
use crate::replication::{ReplicaConfig, Role};

/// The controller's own log (never a client topic: `__` names are
/// internal, and this one is not in the topic registry).
pub const CONTROLLER_LOG: &str = "__cluster_metadata";

/// Raft ticks: 100 ms, so elections start after 1–2 s of silence.
const TICK: Duration = Duration::from_millis(100);

/// How often led partitions are compared with the controller's record.
const REPORT_EVERY: Duration = Duration::from_millis(500);

pub struct Cluster {
    pub node_id: u64,
    pub voters: Vec<u64>,
    /// Where clients reach each broker.
    pub brokers: BTreeMap<u64, (String, u16)>,
    pub cluster_id: String,
    controller: Mutex<Controller>,
    /// Offset of the controller log applied so far.
    applied: AtomicU64,
    controller_group: OnceLock<GroupHandle>,
    groups: RwLock<HashMap<TopicPartition, GroupHandle>>,
    transport: OnceLock<Transport>,
    replica: ReplicaConfig,
    min_insync: usize,
}

struct TransportOutbox {
    cluster: Arc<Cluster>,
    group: GroupId,
}

impl Outbox for TransportOutbox {
    fn send(&self, msgs: Vec<Message>) {
        let Some(t) = self.cluster.transport.get() else {
            return;
        };
        for m in msgs {
            let to = m.to;
            if let Err(e) = t.send(to, self.group.clone(), m) {
                tracing::trace!(to, error = %e, "raft message not queued");
            }
        }
    }
}

impl Cluster {
    /// The cluster this config describes, or `None` for a lone broker.
    pub fn from_config(c: &BrokerConfig) -> Result<Option<Arc<Self>>, String> {
        if c.voters.is_empty() {
            return Ok(None);
        }
        let node_id = u64::try_from(c.node_id).map_err(|_| "node.id must be >= 1".to_string())?;
        if !c.voters.contains_key(&node_id) {
            return Err(format!(
                "node.id {node_id} is not in controller.quorum.voters"
            ));
        }
        let mut brokers = c.cluster_brokers.clone();
        for (id, addr) in &c.voters {
            brokers.entry(*id).or_insert_with(|| {
                if *id == node_id {
                    c.advertised.clone()
                } else {
                    (addr.ip().to_string(), c.advertised.1)
                }
            });
        }
        // Every broker of a cluster derives the same id from its voters'
        // ids (not their addresses: a broker may reach a peer through a
        // proxy or another name).
        let spec: Vec<String> = c.voters.keys().map(|i| i.to_string()).collect();
        let cluster_id = format!("odradek-{:08x}", crc32c::crc32c(spec.join(",").as_bytes()));
        let replica = ReplicaConfig {
            lag_max_ms: c.replica_lag_time_max_ms,
            ..ReplicaConfig::new(node_id)
        };
        Ok(Some(Arc::new(Self {
            node_id,
            voters: c.voters.keys().copied().collect(),
            brokers,
            cluster_id,
            controller: Mutex::new(Controller::new(
                ClusterState::default(),
                TopicDefaults::from(c),
            )),
            applied: AtomicU64::new(0),
            controller_group: OnceLock::new(),
            groups: RwLock::default(),
            transport: OnceLock::new(),
            replica,
            min_insync: c.min_insync_replicas,
        })))
    }

    /// Start the transport and the controller (on shard 0); partition
    /// groups follow as the controller log is applied.
    pub fn start(self: &Arc<Self>, broker: &Arc<Broker>) -> Result<(), String> {
        let c = &broker.config;
        let listen = c.voters[&self.node_id];
        let peers = c
            .voters
            .iter()
            .filter(|(id, _)| **id != self.node_id)
            .map(|(id, a)| (*id, *a))
            .collect();
        let me = self.clone();
        let deliver = Arc::new(move |_from: u64, items: Vec<(GroupId, Message)>| {
            for (g, m) in items {
                match g {
                    GroupId::Controller => {
                        if let Some(h) = me.controller_group.get() {
                            h.step(m);
                        }
                    }
                    GroupId::Partition { topic, partition } => {
                        let tp = TopicPartition::new(&topic, partition);
                        let h = me.groups.read().ok().and_then(|g| g.get(&tp).cloned());
                        if let Some(h) = h {
                            h.step(m);
                        }
                    }
                }
            }
        });
        let t = Transport::start(
            TransportConfig::new(self.node_id, self.cluster_id.clone(), listen, peers),
            deliver,
        )
        .map_err(|e| format!("starting the inter-broker transport on {listen}: {e}"))?;
        tracing::info!(address = %t.local_addr(), node = self.node_id, voters = ?self.voters, "inter-broker transport listening");
        let _ = self.transport.set(t);
        let me = self.clone();
        let b = broker.clone();
        broker
            .shards
            .call(0, move |shard| async move {
                let ctx = Ctx {
                    broker: b.clone(),
                    shard: shard.clone(),
                    peer: None,
                };
                let tp = TopicPartition::new(CONTROLLER_LOG, 0);
                let (log, _) = shard
                    .open_partition(&tp, b.config.log_config())
                    .await
                    .map_err(|e| format!("opening the controller log: {e}"))?;
                let outbox = Rc::new(TransportOutbox {
                    cluster: me.clone(),
                    group: GroupId::Controller,
                });
                let h = group::start(
                    me.replica.clone(),
                    me.voters.clone(),
                    log.clone(),
                    outbox,
                    TICK,
                )
                .await
                .map_err(|e| format!("starting the controller group: {e}"))?;
                let _ = me.controller_group.set(h);
                compio::runtime::spawn(apply_loop(ctx.clone(), me.clone(), log)).detach();
                compio::runtime::spawn(register(me.clone(), b.clone())).detach();
                compio::runtime::spawn(watch_liveness(me.clone(), b.clone())).detach();
                compio::runtime::spawn(report_leaders(me.clone(), b.clone())).detach();
                Ok::<(), String>(())
            })
            .map_err(|e| e.to_string())?
    }

    pub fn stop(&self) {
        if let Some(h) = self.controller_group.get() {
            h.stop();
        }
        if let Ok(g) = self.groups.read() {
            for h in g.values() {
                h.stop();
            }
        }
    }

    /// The controller group's leader (Metadata's controller id).
    pub fn controller_leader(&self) -> Option<u64> {
        self.controller_group.get().and_then(|h| h.status().leader)
    }

    pub fn group(&self, tp: &TopicPartition) -> Option<GroupHandle> {
        self.groups.read().ok().and_then(|g| g.get(tp).cloned())
    }

    /// Whether `name` is a replicated topic (no copy of its metadata).
    pub fn replicates(&self, name: &str) -> bool {
        self.with_state(|s| s.state().topic(name).is_some())
    }

    /// A replicated topic, as the controller log has it so far.
    pub fn topic(&self, name: &str) -> Option<Topic> {
        self.with_state(|s| s.state().topic(name).cloned())
    }

    pub fn with_state<T>(&self, f: impl FnOnce(&Controller) -> T) -> T {
        let g = self.controller.lock().unwrap_or_else(|p| p.into_inner());
        f(&g)
    }

    pub fn min_insync(&self) -> usize {
        self.min_insync
    }

    /// A partition's leader, epoch, replicas and ISR for Metadata.
    pub fn partition_view(&self, topic: &Topic, partition: i32) -> PartitionView {
        let replicas: Vec<i32> = topic
            .replicas
            .get(partition as usize)
            .cloned()
            .unwrap_or_default();
        let tp = TopicPartition::new(&topic.meta.name, partition);
        let local = self.group(&tp).map(|h| {
            let s = h.status();
            report::Local {
                leads: s.role == Some(Role::Leader),
                leader: s.leader.map(|l| l as i32),
                term: s.term,
                isr: s.isr.iter().map(|i| *i as i32).collect(),
            }
        });
        let seen = report::seen(
            self.node_id as i32,
            local.as_ref(),
            topic.leader_and_isr(partition),
        );
        PartitionView {
            leader: seen.leader,
            epoch: i32::try_from(seen.epoch).unwrap_or(i32::MAX),
            replicas,
            isr: seen.isr,
        }
    }

    /// Propose a controller command from any broker and wait until this
    /// broker has applied a state where `done` holds.
    pub async fn submit(
        &self,
        cmd: Command,
        done: impl Fn(&ClusterState) -> bool,
    ) -> Result<(), AdminError> {
        let Some(h) = self.controller_group.get() else {
            return Err(AdminError::new(
                ResponseError::NotController,
                "controller not started",
            ));
        };
        let batch = cmd.to_batch(now_ms());
        let deadline = Instant::now() + Duration::from_secs(15);
        let mut sent = false;
        loop {
            if self.with_state(|c| done(c.state())) {
                return Ok(());
            }
            if !sent {
                sent = h.forward(batch.clone()).await.is_ok();
            }
            if Instant::now() > deadline {
                return Err(AdminError::new(
                    ResponseError::RequestTimedOut,
                    "the controller did not apply the change in time",
                ));
            }
            compio::time::sleep(Duration::from_millis(if sent { 5 } else { 100 })).await;
        }
    }
}

/// What Metadata says of one partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PartitionView {
    pub leader: Option<i32>,
    pub epoch: i32,
    pub replicas: Vec<i32>,
    pub isr: Vec<i32>,
}

fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// Register this broker with the controller (its client address), once
/// the controller group has a leader; repeated until it shows.
async fn register(cluster: Arc<Cluster>, broker: Arc<Broker>) {
    let id = cluster.node_id as i32;
    let (host, port) = cluster.brokers[&cluster.node_id].clone();
    let cmd = Command::RegisterBroker {
        id,
        host,
        port,
        rack: None,
        // Stable across restarts: a restarted broker is the same one.
        incarnation: uuid::Uuid::from_u128(cluster.node_id as u128),
    };
    loop {
        let r = cluster
            .submit(cmd.clone(), |s| s.broker(id).is_some_and(|b| b.alive()))
            .await;
        match r {
            Ok(()) => {
                tracing::info!(node = id, "registered with the controller");
                return;
            }
            Err(e) => {
                tracing::debug!(node = id, error = %e.message, "registration pending");
                if broker.is_stopping() {
                    return;
                }
            }
        }
    }
}

/// On the controller's leader: fence a registered broker the controller
/// group has not heard from for a while, unfence it when it is back. Only
/// live (unfenced) brokers get new replicas, so a replication factor above
/// the brokers that are up is refused (INVALID_REPLICATION_FACTOR).
async fn watch_liveness(cluster: Arc<Cluster>, broker: Arc<Broker>) {
    // Give every broker a chance to be heard after a (re)election.
    let mut leader_since: Option<Instant> = None;
    loop {
        compio::time::sleep(Duration::from_secs(1)).await;
        if broker.is_stopping() {
            return;
        }
        let Some(status) = cluster.controller_group.get().map(|h| h.status()) else {
            continue;
        };
        if status.role != Some(Role::Leader) {
            leader_since = None;
            continue;
        }
        let since = *leader_since.get_or_insert_with(Instant::now);
        if since.elapsed() < Duration::from_secs(8) {
            continue;
        }
        let changes: Vec<Command> = cluster.with_state(|c| {
            c.state()
                .brokers()
                .values()
                .filter_map(|b| {
                    let id = b.id as u64;
                    let up = id == cluster.node_id || status.live_peers.contains(&id);
                    match (up, b.fenced) {
                        (false, false) => Some(Command::FenceBroker { id: b.id }),
                        (true, true) => Some(Command::UnfenceBroker { id: b.id }),
                        _ => None,
                    }
                })
                .collect()
        });
        for cmd in changes {
            let (id, fence) = match &cmd {
                Command::FenceBroker { id } => (*id, true),
                Command::UnfenceBroker { id } => (*id, false),
                _ => continue,
            };
            tracing::info!(node = id, fenced = fence, "broker liveness changed");
            let _ = cluster
                .submit(cmd, move |s| {
                    s.broker(id).is_some_and(|b| b.fenced == fence)
                })
                .await;
        }
    }
}

/// Every [`REPORT_EVERY`]: the partitions this broker leads whose leader,
/// epoch or ISR differ from the controller's record are reported to it
/// (see [`Reporter`] for the debounce and the retries).
async fn report_leaders(cluster: Arc<Cluster>, broker: Arc<Broker>) {
    let me = cluster.node_id as i32;
    let mut reporter = Reporter::new(me, ReportConfig::default());
    let started = Instant::now();
    loop {
        compio::time::sleep(REPORT_EVERY).await;
        if broker.is_stopping() {
            return;
        }
        let Some(ctl) = cluster.controller_group.get() else {
            continue;
        };
        let led: Vec<Led> = match cluster.groups.read() {
            Ok(g) => g
                .iter()
                .filter(|(_, h)| h.is_leader())
                .map(|(tp, h)| (tp, h.status()))
                .filter(|(_, s)| s.role == Some(Role::Leader))
                .map(|(tp, s)| Led {
                    topic: tp.topic.to_string(),
                    partition: tp.partition,
                    epoch: s.term,
                    isr: s.isr.iter().map(|i| *i as i32).collect(),
                })
                .collect(),
            Err(_) => continue,
        };
        let now = started.elapsed().as_millis() as u64;
        let cmds = cluster.with_state(|c| reporter.poll(now, c.state(), &led));
        for cmd in cmds {
            let Command::PartitionState {
                name,
                partition,
                epoch,
                isr,
                ..
            } = &cmd
            else {
                continue;
            };
            tracing::info!(topic = %name, partition, epoch, ?isr, "reporting leader and ISR to the controller");
            if let Err(e) = ctl.forward(cmd.to_batch(now_ms())).await {
                tracing::debug!(topic = %name, partition, error = %e, "leader and ISR report not proposed");
                reporter.not_sent(name, *partition);
            }
        }
    }
}

/// Apply committed controller commands in log order, forever.
async fn apply_loop(ctx: Ctx, cluster: Arc<Cluster>, log: Rc<Log>) {
    let mut next = log.log_start_offset();
    loop {
        if ctx.broker.is_stopping() {
            return;
        }
        if log.visible_end() <= next {
            let _ =
                compio::time::timeout(Duration::from_millis(500), log.wait_for_data(next)).await;
            continue;
        }
        let batches = match group::read_batches(&log, next, log.visible_end()).await {
            Ok(b) => b,
            Err(e) => {
                tracing::error!(error = %e, "reading the controller log");
                compio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        for (offset, _, data) in batches {
            let Ok(h) = BatchHeader::parse(&data) else {
                break;
            };
            next = h.last_offset() as u64 + 1;
            if h.is_control() {
                continue;
            }
            let applied = {
                let mut c = cluster.controller.lock().unwrap_or_else(|p| p.into_inner());
                c.apply_batch(&data)
            };
            match applied {
                Ok(Ok(a)) => act(&ctx, &cluster, a).await,
                Ok(Err(e)) => tracing::debug!(offset, error = %e, "controller command was a no-op"),
                Err(e) => {
                    tracing::error!(offset, error = %e, "controller log holds an unreadable command; stopping its applier");
                    return;
                }
            }
        }
        cluster.applied.store(next, Ordering::Release);
    }
}

/// Carry out an applied command on this broker.
async fn act(ctx: &Ctx, cluster: &Arc<Cluster>, a: Applied) {
    match a {
        Applied::TopicCreated { name, .. } | Applied::PartitionsCreated { name, .. } => {
            let Some(topic) = cluster.topic(&name) else {
                return;
            };
            ctx.broker.registry.install(topic.meta.clone());
            for (p, replicas) in topic.replicas.iter().enumerate() {
                let voters: Vec<u64> = replicas.iter().map(|r| *r as u64).collect();
                if !voters.contains(&cluster.node_id) {
                    continue;
                }
                let tp = TopicPartition::new(&name, p as i32);
                if cluster.group(&tp).is_some() {
                    continue;
                }
                if let Err(e) = start_partition(ctx, cluster, &topic, tp.clone(), voters).await {
                    tracing::error!(partition = %tp, error = %e, "replica not started");
                }
            }
        }
        Applied::TopicDeleted {
            name, partitions, ..
        } => {
            ctx.broker.registry.remove(&name);
            for p in 0..partitions {
                let tp = TopicPartition::new(&name, p);
                let h = cluster.groups.write().ok().and_then(|mut g| g.remove(&tp));
                if let Some(h) = h {
                    h.stop();
                    let tp2 = tp.clone();
                    let _ = ctx
                        .on_owner(&tp, move |shard| async move {
                            shard
                                .delete_partition(&tp2)
                                .await
                                .map_err(|e| e.to_string())
                        })
                        .await;
                }
            }
        }
        Applied::ConfigsAltered { name, .. } => {
            if let Some(topic) = cluster.topic(&name) {
                ctx.broker.registry.install(topic.meta.clone());
                if let Err(e) = crate::handlers::configs::push_log_config(ctx, &topic.meta).await {
                    tracing::warn!(topic = %name, error = %e.message, "new topic configs not applied to its logs");
                }
            }
        }
        _ => {}
    }
}

async fn start_partition(
    ctx: &Ctx,
    cluster: &Arc<Cluster>,
    topic: &Topic,
    tp: TopicPartition,
    voters: Vec<u64>,
) -> Result<(), String> {
    let cfg = topic_log_config(&ctx.broker.config, &topic.meta.configs).map_err(|e| e.message)?;
    let preferred = voters[0];
    let me = cluster.clone();
    let tp2 = tp.clone();
    ctx.on_owner(&tp, move |shard| async move {
        let (log, _) = shard
            .open_partition(&tp2, cfg)
            .await
            .map_err(|e| e.to_string())?;
        let outbox = Rc::new(TransportOutbox {
            cluster: me.clone(),
            group: GroupId::partition(&tp2.topic, tp2.partition),
        });
        let cfg = ReplicaConfig {
            preferred: Some(preferred),
            ..me.replica.clone()
        };
        let h = group::start(cfg, voters, log, outbox, TICK)
            .await
            .map_err(|e| e.to_string())?;
        if let Ok(mut g) = me.groups.write() {
            g.insert(tp2.clone(), h);
        }
        tracing::info!(partition = %tp2, "replica started");
        Ok::<(), String>(())
    })
    .await
    .map_err(|e| e.to_string())?
}

/// The status of a local replica (tests, metrics).
pub fn status_of(cluster: &Cluster, tp: &TopicPartition) -> Option<GroupStatus> {
    cluster.group(tp).map(|h| h.status())
}
