//! The replicated cluster metadata: brokers, topics with their replica
//! assignments, and a version. Every controller replica applies the same
//! committed commands in the same order and so holds the same state: apply
//! reads nothing but the state and the command (no clock, no randomness,
//! no local config), and ordered maps keep even the snapshot bytes equal.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::command::{BrokerId, Command};
use crate::config::BrokerConfig;
use crate::metadata::{self, AdminError, TopicMeta, Topics, MAX_PARTITIONS};

/// A broker as the controller knows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Broker {
    pub id: BrokerId,
    pub host: String,
    pub port: u16,
    pub rack: Option<String>,
    pub incarnation: Uuid,
    /// The metadata version its registration made: a newer one means the
    /// broker restarted (Kafka's broker epoch).
    pub epoch: u64,
    /// Not heard from: registered, but neither a leader nor in sync.
    pub fenced: bool,
}

impl Broker {
    pub fn alive(&self) -> bool {
        !self.fenced
    }
}

/// A topic and where its partitions live.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Topic {
    /// `meta.partitions == replicas.len()` always.
    pub meta: TopicMeta,
    /// Per partition its replicas, first = preferred leader; all lists of
    /// a topic have the same length (its replication factor).
    pub replicas: Vec<Vec<BrokerId>>,
    /// Per partition, what its leader last reported (none before the
    /// first report): leader, leader epoch, ISR.
    #[serde(default)]
    pub leaders: BTreeMap<i32, LeaderAndIsr>,
}

impl Topic {
    pub fn replication_factor(&self) -> usize {
        self.replicas.first().map_or(0, Vec::len)
    }

    /// The recorded leader, epoch and ISR of `partition`.
    pub fn leader_and_isr(&self, partition: i32) -> Option<&LeaderAndIsr> {
        self.leaders.get(&partition)
    }
}

/// A partition's leader, leader epoch (its Raft term) and in-sync
/// replicas, as its leader reported them to the controller.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LeaderAndIsr {
    pub leader: BrokerId,
    pub epoch: u64,
    /// Sorted; contains the leader; a subset of the partition's replicas.
    pub isr: Vec<BrokerId>,
}

/// What an applied command changed, for the caller to act on (open or
/// delete partition replicas, refresh caches).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Applied {
    BrokerRegistered {
        id: BrokerId,
        epoch: u64,
    },
    BrokerFenced {
        id: BrokerId,
    },
    BrokerUnfenced {
        id: BrokerId,
    },
    BrokerUnregistered {
        id: BrokerId,
    },
    TopicCreated {
        name: String,
        id: Uuid,
        partitions: i32,
    },
    TopicDeleted {
        name: String,
        id: Uuid,
        partitions: i32,
    },
    PartitionsCreated {
        name: String,
        id: Uuid,
        from: i32,
        to: i32,
    },
    ConfigsAltered {
        name: String,
        id: Uuid,
    },
    PartitionStateChanged {
        name: String,
        partition: i32,
        state: LeaderAndIsr,
    },
}

/// Why a command was refused (on proposal) or was a no-op (on apply).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("broker {0} is not registered")]
    UnknownBroker(BrokerId),
    #[error("broker {0} is registered and alive with another incarnation")]
    DuplicateBroker(BrokerId),
    #[error("invalid registration of broker {id}: {reason}")]
    InvalidRegistration { id: BrokerId, reason: String },
    #[error("topic `{0}` already exists")]
    TopicExists(String),
    #[error("topic id {0} is nil or already used")]
    TopicIdTaken(Uuid),
    #[error("no topic `{0}`")]
    UnknownTopic(String),
    #[error("topic `{name}` has id {actual}, not {expected}")]
    TopicIdMismatch {
        name: String,
        expected: Uuid,
        actual: Uuid,
    },
    #[error("topic `{name}`: {reason}")]
    InvalidPartitions { name: String, reason: String },
    #[error("topic `{name}`: {reason}")]
    InvalidAssignment { name: String, reason: String },
    #[error("topic `{name}` has no partition {partition}")]
    UnknownPartition { name: String, partition: i32 },
    /// A report from a deposed leader, or from a second one in one epoch.
    #[error("{name}-{partition}: epoch {epoch} of leader {leader} is stale, epoch {recorded} of leader {recorded_leader} is recorded")]
    StaleLeaderEpoch {
        name: String,
        partition: i32,
        leader: BrokerId,
        epoch: u64,
        recorded_leader: BrokerId,
        recorded: u64,
    },
    #[error("{name}-{partition}: {reason}")]
    InvalidIsr {
        name: String,
        partition: i32,
        reason: String,
    },
    /// A topic name or config refused by [`crate::metadata`]'s checks.
    #[error("{}", .0.message)]
    Refused(AdminError),
}

impl CommandError {
    /// The Kafka error code to answer with.
    pub fn code(&self) -> ResponseError {
        match self {
            Self::UnknownBroker(_) => ResponseError::BrokerIdNotRegistered,
            Self::DuplicateBroker(_) => ResponseError::DuplicateBrokerRegistration,
            Self::InvalidRegistration { .. } => ResponseError::InvalidRegistration,
            Self::TopicExists(_) => ResponseError::TopicAlreadyExists,
            Self::TopicIdTaken(_) => ResponseError::InvalidRequest,
            Self::UnknownTopic(_) => ResponseError::UnknownTopicOrPartition,
            Self::TopicIdMismatch { .. } => ResponseError::UnknownTopicId,
            Self::InvalidPartitions { .. } => ResponseError::InvalidPartitions,
            Self::InvalidAssignment { .. } => ResponseError::InvalidReplicaAssignment,
            Self::UnknownPartition { .. } => ResponseError::UnknownTopicOrPartition,
            Self::StaleLeaderEpoch { .. } => ResponseError::FencedLeaderEpoch,
            Self::InvalidIsr { .. } => ResponseError::InvalidRequest,
            Self::Refused(e) => e.code,
        }
    }
}

impl From<CommandError> for AdminError {
    fn from(e: CommandError) -> Self {
        AdminError::new(e.code(), e.to_string())
    }
}

/// Why snapshot bytes were not restored.
#[derive(Debug, thiserror::Error)]
pub enum SnapshotError {
    #[error("controller snapshot does not decode: {0}")]
    Decode(#[from] serde_json::Error),
    #[error("controller snapshot is inconsistent: {0}")]
    Inconsistent(String),
}

/// The controller's state machine.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ClusterState {
    /// Commands applied successfully so far (refused ones do not count).
    version: u64,
    brokers: BTreeMap<BrokerId, Broker>,
    topics: BTreeMap<String, Topic>,
}

/// Topic config overrides are valid or not whatever the broker defaults
/// are, so apply checks them against fixed defaults: every replica agrees.
fn check_configs(configs: &BTreeMap<String, String>) -> Result<(), CommandError> {
    metadata::topic_log_config(&BrokerConfig::default(), configs)
        .map(|_| ())
        .map_err(CommandError::Refused)
}

impl ClusterState {
    pub fn version(&self) -> u64 {
        self.version
    }

    pub fn brokers(&self) -> &BTreeMap<BrokerId, Broker> {
        &self.brokers
    }

    pub fn broker(&self, id: BrokerId) -> Option<&Broker> {
        self.brokers.get(&id)
    }

    /// Registered, unfenced brokers, by id.
    pub fn live_brokers(&self) -> Vec<BrokerId> {
        self.brokers
            .values()
            .filter(|b| b.alive())
            .map(|b| b.id)
            .collect()
    }

    pub fn topics(&self) -> &BTreeMap<String, Topic> {
        &self.topics
    }

    pub fn topic(&self, name: &str) -> Option<&Topic> {
        self.topics.get(name)
    }

    pub fn topic_by_id(&self, id: Uuid) -> Option<&Topic> {
        self.topics.values().find(|t| t.meta.id == id)
    }

    /// Every partition's replica list, of every topic.
    pub fn assignments(&self) -> impl Iterator<Item = &Vec<BrokerId>> {
        self.topics.values().flat_map(|t| t.replicas.iter())
    }

    /// The topic registry's view (what the request handlers read).
    pub fn to_topics(&self) -> Topics {
        Topics {
            topics: self
                .topics
                .iter()
                .map(|(n, t)| (n.clone(), std::sync::Arc::new(t.meta.clone())))
                .collect(),
        }
    }

    /// Whether `cmd` would apply now, without applying it.
    pub fn check(&self, cmd: &Command) -> Result<(), CommandError> {
        match cmd {
            Command::RegisterBroker {
                id,
                host,
                port,
                incarnation,
                ..
            } => {
                let bad = |reason: &str| {
                    Err(CommandError::InvalidRegistration {
                        id: *id,
                        reason: reason.to_string(),
                    })
                };
                if *id < 0 {
                    return bad("a node id is not negative");
                }
                if host.is_empty() || *port == 0 {
                    return bad("it needs a host and a port");
                }
                match self.brokers.get(id) {
                    Some(b) if b.alive() && b.incarnation != *incarnation => {
                        Err(CommandError::DuplicateBroker(*id))
                    }
                    _ => Ok(()),
                }
            }
            Command::FenceBroker { id }
            | Command::UnfenceBroker { id }
            | Command::UnregisterBroker { id } => match self.brokers.contains_key(id) {
                true => Ok(()),
                false => Err(CommandError::UnknownBroker(*id)),
            },
            Command::CreateTopic {
                name,
                id,
                configs,
                replicas,
            } => {
                metadata::validate_topic_name(name).map_err(CommandError::Refused)?;
                if self.topics.contains_key(name) {
                    return Err(CommandError::TopicExists(name.clone()));
                }
                if id.is_nil() || self.topic_by_id(*id).is_some() {
                    return Err(CommandError::TopicIdTaken(*id));
                }
                if replicas.is_empty() || replicas.len() > MAX_PARTITIONS as usize {
                    return Err(CommandError::InvalidPartitions {
                        name: name.clone(),
                        reason: format!(
                            "{} partitions: a topic has 1 to {MAX_PARTITIONS}",
                            replicas.len()
                        ),
                    });
                }
                self.check_assignment(name, replicas[0].len(), replicas)?;
                check_configs(configs)
            }
            Command::DeleteTopic { name, id } => self.existing(name, *id).map(|_| ()),
            Command::CreatePartitions {
                name,
                id,
                from,
                replicas,
            } => {
                let t = self.existing(name, *id)?;
                let have = t.replicas.len();
                let invalid = |reason: String| {
                    Err(CommandError::InvalidPartitions {
                        name: name.clone(),
                        reason,
                    })
                };
                if *from as i64 != have as i64 {
                    return invalid(format!(
                        "has {have} partitions, the change was made for {from}"
                    ));
                }
                if replicas.is_empty() || have + replicas.len() > MAX_PARTITIONS as usize {
                    return invalid(format!(
                        "cannot add {} to {have} partitions: a topic has 1 to {MAX_PARTITIONS}",
                        replicas.len()
                    ));
                }
                self.check_assignment(name, t.replication_factor(), replicas)
            }
            Command::AlterConfigs {
                name,
                id,
                changes,
                replace,
            } => {
                let t = self.existing(name, *id)?;
                check_configs(&altered(&t.meta.configs, changes, *replace))
            }
            Command::PartitionState {
                name,
                id,
                partition,
                leader,
                epoch,
                isr,
            } => {
                let t = self.existing(name, *id)?;
                let replicas = usize::try_from(*partition)
                    .ok()
                    .and_then(|p| t.replicas.get(p))
                    .ok_or_else(|| CommandError::UnknownPartition {
                        name: name.clone(),
                        partition: *partition,
                    })?;
                let state = LeaderAndIsr {
                    leader: *leader,
                    epoch: *epoch,
                    isr: isr.clone(),
                };
                check_leader_and_isr(replicas, &state).map_err(|reason| {
                    CommandError::InvalidIsr {
                        name: name.clone(),
                        partition: *partition,
                        reason,
                    }
                })?;
                match t.leader_and_isr(*partition) {
                    Some(r) if r.epoch > *epoch || (r.epoch == *epoch && r.leader != *leader) => {
                        Err(CommandError::StaleLeaderEpoch {
                            name: name.clone(),
                            partition: *partition,
                            leader: *leader,
                            epoch: *epoch,
                            recorded_leader: r.leader,
                            recorded: r.epoch,
                        })
                    }
                    _ => Ok(()),
                }
            }
        }
    }

    /// Apply a committed command: the same state and command give the same
    /// result on every replica. A refused command changes nothing.
    pub fn apply(&mut self, cmd: &Command) -> Result<Applied, CommandError> {
        self.check(cmd)?;
        let version = self.version + 1;
        let applied = match cmd.clone() {
            Command::RegisterBroker {
                id,
                host,
                port,
                rack,
                incarnation,
            } => {
                self.brokers.insert(
                    id,
                    Broker {
                        id,
                        host,
                        port,
                        rack,
                        incarnation,
                        epoch: version,
                        fenced: false,
                    },
                );
                Applied::BrokerRegistered { id, epoch: version }
            }
            Command::FenceBroker { id } => {
                self.broker_mut(id).fenced = true;
                Applied::BrokerFenced { id }
            }
            Command::UnfenceBroker { id } => {
                self.broker_mut(id).fenced = false;
                Applied::BrokerUnfenced { id }
            }
            Command::UnregisterBroker { id } => {
                self.brokers.remove(&id);
                Applied::BrokerUnregistered { id }
            }
            Command::CreateTopic {
                name,
                id,
                configs,
                replicas,
            } => {
                let partitions = replicas.len() as i32;
                let meta = TopicMeta {
                    name: name.clone(),
                    id,
                    partitions,
                    configs,
                };
                self.topics.insert(
                    name.clone(),
                    Topic {
                        meta,
                        replicas,
                        leaders: BTreeMap::new(),
                    },
                );
                Applied::TopicCreated {
                    name,
                    id,
                    partitions,
                }
            }
            Command::DeleteTopic { name, id } => {
                let t = self.topics.remove(&name).expect("checked");
                Applied::TopicDeleted {
                    name,
                    id,
                    partitions: t.meta.partitions,
                }
            }
            Command::CreatePartitions {
                name,
                id,
                from,
                replicas,
            } => {
                let t = self.topics.get_mut(&name).expect("checked");
                t.replicas.extend(replicas);
                t.meta.partitions = t.replicas.len() as i32;
                Applied::PartitionsCreated {
                    name,
                    id,
                    from,
                    to: t.meta.partitions,
                }
            }
            Command::AlterConfigs {
                name,
                id,
                changes,
                replace,
            } => {
                let t = self.topics.get_mut(&name).expect("checked");
                t.meta.configs = altered(&t.meta.configs, &changes, replace);
                Applied::ConfigsAltered { name, id }
            }
            Command::PartitionState {
                name,
                partition,
                leader,
                epoch,
                mut isr,
                ..
            } => {
                isr.sort_unstable();
                let state = LeaderAndIsr { leader, epoch, isr };
                let t = self.topics.get_mut(&name).expect("checked");
                t.leaders.insert(partition, state.clone());
                Applied::PartitionStateChanged {
                    name,
                    partition,
                    state,
                }
            }
        };
        self.version = version;
        Ok(applied)
    }

    /// The whole state, for a Raft snapshot or a restart.
    pub fn snapshot(&self) -> Vec<u8> {
        serde_json::to_vec(self).expect("the state always serializes")
    }

    /// The state a [`Self::snapshot`] saved (checked for consistency).
    pub fn restore(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let s: Self = serde_json::from_slice(bytes)?;
        let bad = |m: String| Err(SnapshotError::Inconsistent(m));
        for (id, b) in &s.brokers {
            if *id != b.id {
                return bad(format!("broker {} listed as {id}", b.id));
            }
        }
        let mut ids = BTreeSet::new();
        for (name, t) in &s.topics {
            let rf = t.replication_factor();
            if *name != t.meta.name
                || t.meta.partitions as usize != t.replicas.len()
                || rf == 0
                || t.replicas.iter().any(|r| r.len() != rf)
                || !ids.insert(t.meta.id)
            {
                return bad(format!("topic `{name}`"));
            }
            for (p, l) in &t.leaders {
                let replicas = usize::try_from(*p).ok().and_then(|p| t.replicas.get(p));
                let Some(replicas) = replicas else {
                    return bad(format!("topic `{name}`: a leader of no partition {p}"));
                };
                if let Err(why) = check_leader_and_isr(replicas, l) {
                    return bad(format!("{name}-{p}: {why}"));
                }
                if !l.isr.windows(2).all(|w| w[0] < w[1]) {
                    return bad(format!("{name}-{p}: ISR {:?} not sorted", l.isr));
                }
            }
        }
        Ok(s)
    }

    fn broker_mut(&mut self, id: BrokerId) -> &mut Broker {
        self.brokers.get_mut(&id).expect("checked")
    }

    /// The topic `name` if it still has the id the proposer saw.
    fn existing(&self, name: &str, id: Uuid) -> Result<&Topic, CommandError> {
        let t = self
            .topics
            .get(name)
            .ok_or_else(|| CommandError::UnknownTopic(name.to_string()))?;
        if t.meta.id != id {
            return Err(CommandError::TopicIdMismatch {
                name: name.to_string(),
                expected: id,
                actual: t.meta.id,
            });
        }
        Ok(t)
    }

    /// New partitions: `rf` distinct, registered, alive brokers each.
    fn check_assignment(
        &self,
        name: &str,
        rf: usize,
        replicas: &[Vec<BrokerId>],
    ) -> Result<(), CommandError> {
        let bad = |p: usize, reason: String| {
            Err(CommandError::InvalidAssignment {
                name: name.to_string(),
                reason: format!("new partition {p}: {reason}"),
            })
        };
        for (p, r) in replicas.iter().enumerate() {
            if r.is_empty() || r.len() != rf {
                return bad(p, format!("{} replicas, the topic has {rf}", r.len()));
            }
            if r.iter().collect::<BTreeSet<_>>().len() != r.len() {
                return bad(p, format!("replicas {r:?} repeat a broker"));
            }
            for b in r {
                match self.brokers.get(b) {
                    Some(x) if x.alive() => {}
                    Some(_) => return bad(p, format!("broker {b} is fenced")),
                    None => return bad(p, format!("broker {b} is not registered")),
                }
            }
        }
        Ok(())
    }
}

/// A leader and ISR fit a partition's replicas: the leader is one, the
/// ISR holds the leader and only distinct replicas.
fn check_leader_and_isr(replicas: &[BrokerId], l: &LeaderAndIsr) -> Result<(), String> {
    if !replicas.contains(&l.leader) {
        return Err(format!(
            "leader {} is not one of the replicas {replicas:?}",
            l.leader
        ));
    }
    if !l.isr.contains(&l.leader) {
        return Err(format!("ISR {:?} lacks the leader {}", l.isr, l.leader));
    }
    if l.isr.iter().collect::<BTreeSet<_>>().len() != l.isr.len() {
        return Err(format!("ISR {:?} repeats a broker", l.isr));
    }
    if let Some(b) = l.isr.iter().find(|b| !replicas.contains(b)) {
        return Err(format!(
            "ISR member {b} is not one of the replicas {replicas:?}"
        ));
    }
    Ok(())
}

/// `configs` after `changes`.
fn altered(
    configs: &BTreeMap<String, String>,
    changes: &BTreeMap<String, Option<String>>,
    replace: bool,
) -> BTreeMap<String, String> {
    let mut out = if replace {
        BTreeMap::new()
    } else {
        configs.clone()
    };
    for (k, v) in changes {
        match v {
            Some(v) => out.insert(k.clone(), v.clone()),
            None => out.remove(k),
        };
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn register(id: BrokerId, incarnation: u128) -> Command {
        Command::RegisterBroker {
            id,
            host: format!("10.0.0.{id}"),
            port: 9092,
            rack: None,
            incarnation: Uuid::from_u128(incarnation),
        }
    }

    fn create(name: &str, id: u128, replicas: Vec<Vec<BrokerId>>) -> Command {
        Command::CreateTopic {
            name: name.into(),
            id: Uuid::from_u128(id),
            configs: BTreeMap::new(),
            replicas,
        }
    }

    fn three() -> ClusterState {
        let mut s = ClusterState::default();
        for id in 1..=3 {
            s.apply(&register(id, id as u128)).unwrap();
        }
        s
    }

    /// A refused command is a no-op: the state is unchanged.
    fn refused(s: &mut ClusterState, cmd: &Command) -> ResponseError {
        let before = s.clone();
        let e = s.apply(cmd).unwrap_err();
        assert_eq!(*s, before, "{cmd:?}");
        e.code()
    }

    #[test]
    fn brokers_register_fence_and_leave() {
        let mut s = three();
        assert_eq!(s.version(), 3);
        assert_eq!(s.live_brokers(), [1, 2, 3]);
        assert_eq!(
            s.apply(&Command::FenceBroker { id: 2 }),
            Ok(Applied::BrokerFenced { id: 2 })
        );
        assert_eq!(s.live_brokers(), [1, 3]);
        // A second process with id 1 while the first is alive.
        assert_eq!(
            refused(&mut s, &register(1, 99)),
            ResponseError::DuplicateBrokerRegistration
        );
        // The same process again, or a new one once fenced: a new epoch.
        assert_eq!(
            s.apply(&register(1, 1)),
            Ok(Applied::BrokerRegistered { id: 1, epoch: 5 })
        );
        assert_eq!(
            s.apply(&register(2, 42)),
            Ok(Applied::BrokerRegistered { id: 2, epoch: 6 })
        );
        assert!(s.broker(2).unwrap().alive());
        s.apply(&Command::FenceBroker { id: 3 }).unwrap();
        s.apply(&Command::UnfenceBroker { id: 3 }).unwrap();
        s.apply(&Command::UnregisterBroker { id: 3 }).unwrap();
        assert_eq!(s.live_brokers(), [1, 2]);
        for cmd in [
            Command::FenceBroker { id: 3 },
            Command::UnfenceBroker { id: 3 },
            Command::UnregisterBroker { id: 3 },
        ] {
            assert_eq!(refused(&mut s, &cmd), ResponseError::BrokerIdNotRegistered);
        }
        let mut bad = register(-1, 1);
        assert_eq!(refused(&mut s, &bad), ResponseError::InvalidRegistration);
        if let Command::RegisterBroker { id, port, .. } = &mut bad {
            *id = 5;
            *port = 0;
        }
        assert_eq!(refused(&mut s, &bad), ResponseError::InvalidRegistration);
    }

    #[test]
    fn create_topic_is_validated_again_on_apply() {
        let mut s = three();
        let a = create("a", 1, vec![vec![1, 2], vec![2, 3]]);
        assert_eq!(
            s.apply(&a),
            Ok(Applied::TopicCreated {
                name: "a".into(),
                id: Uuid::from_u128(1),
                partitions: 2
            })
        );
        assert_eq!(s.topic("a").unwrap().replication_factor(), 2);
        assert_eq!(s.to_topics().get("a").unwrap().partitions, 2);
        // The same proposal twice (two in flight): the second is a no-op.
        assert_eq!(refused(&mut s, &a), ResponseError::TopicAlreadyExists);
        assert_eq!(
            refused(&mut s, &create("b", 1, vec![vec![1]])),
            ResponseError::InvalidRequest
        );
        assert_eq!(
            refused(&mut s, &create("b", 0, vec![vec![1]])),
            ResponseError::InvalidRequest
        );
        assert_eq!(
            refused(&mut s, &create("no way", 2, vec![vec![1]])),
            ResponseError::InvalidTopicException
        );
        assert_eq!(
            refused(&mut s, &create("b", 2, vec![])),
            ResponseError::InvalidPartitions
        );
        for bad in [
            vec![vec![]],
            vec![vec![1, 1]],
            vec![vec![1, 2], vec![3]],
            vec![vec![1, 7]],
        ] {
            assert_eq!(
                refused(&mut s, &create("b", 2, bad)),
                ResponseError::InvalidReplicaAssignment
            );
        }
        // Broker 3 was fenced after the placement was computed.
        s.apply(&Command::FenceBroker { id: 3 }).unwrap();
        assert_eq!(
            refused(&mut s, &create("b", 2, vec![vec![3, 1]])),
            ResponseError::InvalidReplicaAssignment
        );
        let mut bad_config = create("b", 2, vec![vec![1]]);
        if let Command::CreateTopic { configs, .. } = &mut bad_config {
            configs.insert("retention.ms".into(), "soon".into());
        }
        assert_eq!(refused(&mut s, &bad_config), ResponseError::InvalidConfig);
    }

    #[test]
    fn stale_topic_commands_are_no_ops() {
        let mut s = three();
        s.apply(&create("a", 1, vec![vec![1, 2]])).unwrap();
        let id = Uuid::from_u128(1);
        let grow = Command::CreatePartitions {
            name: "a".into(),
            id,
            from: 1,
            replicas: vec![vec![2, 3]],
        };
        assert_eq!(
            s.apply(&grow),
            Ok(Applied::PartitionsCreated {
                name: "a".into(),
                id,
                from: 1,
                to: 2
            })
        );
        assert_eq!(s.topic("a").unwrap().meta.partitions, 2);
        // Computed for one partition, applied after the first growth.
        assert_eq!(refused(&mut s, &grow), ResponseError::InvalidPartitions);
        let grow_to = |replicas| Command::CreatePartitions {
            name: "a".into(),
            id,
            from: 2,
            replicas,
        };
        assert_eq!(
            refused(&mut s, &grow_to(vec![])),
            ResponseError::InvalidPartitions
        );
        assert_eq!(
            refused(&mut s, &grow_to(vec![vec![1]])),
            ResponseError::InvalidReplicaAssignment
        );
        let alter = |id, changes: &[(&str, Option<&str>)], replace| Command::AlterConfigs {
            name: "a".into(),
            id,
            changes: changes
                .iter()
                .map(|(k, v)| (k.to_string(), v.map(str::to_string)))
                .collect(),
            replace,
        };
        s.apply(&alter(
            id,
            &[("retention.ms", Some("5")), ("segment.ms", Some("9"))],
            false,
        ))
        .unwrap();
        s.apply(&alter(id, &[("segment.ms", None)], false)).unwrap();
        assert_eq!(
            s.topic("a").unwrap().meta.configs,
            [("retention.ms".to_string(), "5".to_string())].into()
        );
        s.apply(&alter(id, &[("segment.ms", Some("7"))], true))
            .unwrap();
        assert_eq!(
            s.topic("a").unwrap().meta.configs,
            [("segment.ms".to_string(), "7".to_string())].into()
        );
        assert_eq!(
            refused(&mut s, &alter(id, &[("no.such", Some("1"))], false)),
            ResponseError::InvalidConfig
        );
        // Deleted and re-created under the same name: old commands miss.
        let delete = Command::DeleteTopic {
            name: "a".into(),
            id,
        };
        assert_eq!(
            s.apply(&delete),
            Ok(Applied::TopicDeleted {
                name: "a".into(),
                id,
                partitions: 2
            })
        );
        assert_eq!(
            refused(&mut s, &delete),
            ResponseError::UnknownTopicOrPartition
        );
        s.apply(&create("a", 2, vec![vec![1]])).unwrap();
        assert_eq!(refused(&mut s, &delete), ResponseError::UnknownTopicId);
        assert_eq!(
            refused(&mut s, &alter(id, &[], false)),
            ResponseError::UnknownTopicId
        );
        assert_eq!(
            refused(&mut s, &grow_to(vec![vec![1]])),
            ResponseError::UnknownTopicId
        );
    }

    fn report(
        name: &str,
        id: u128,
        partition: i32,
        leader: BrokerId,
        epoch: u64,
        isr: &[BrokerId],
    ) -> Command {
        Command::PartitionState {
            name: name.into(),
            id: Uuid::from_u128(id),
            partition,
            leader,
            epoch,
            isr: isr.to_vec(),
        }
    }

    fn recorded(s: &ClusterState, name: &str, p: i32) -> Option<(BrokerId, u64, Vec<BrokerId>)> {
        s.topic(name)
            .and_then(|t| t.leader_and_isr(p))
            .map(|l| (l.leader, l.epoch, l.isr.clone()))
    }

    #[test]
    fn partition_state_keeps_the_newest_epoch() {
        let mut s = three();
        s.apply(&create("a", 1, vec![vec![1, 2, 3], vec![2, 3, 1]]))
            .unwrap();
        assert_eq!(recorded(&s, "a", 0), None);
        assert_eq!(
            s.apply(&report("a", 1, 0, 1, 2, &[3, 1, 2])),
            Ok(Applied::PartitionStateChanged {
                name: "a".into(),
                partition: 0,
                state: LeaderAndIsr {
                    leader: 1,
                    epoch: 2,
                    isr: vec![1, 2, 3]
                }
            })
        );
        // The same leader in the same epoch: its ISR shrinks, then grows.
        s.apply(&report("a", 1, 0, 1, 2, &[1, 3])).unwrap();
        assert_eq!(recorded(&s, "a", 0), Some((1, 2, vec![1, 3])));
        // A new leader in a newer epoch replaces it.
        s.apply(&report("a", 1, 0, 3, 5, &[3])).unwrap();
        assert_eq!(recorded(&s, "a", 0), Some((3, 5, vec![3])));
        // The deposed leader's late reports change nothing, nor does a
        // second leader claiming the recorded epoch.
        for stale in [
            report("a", 1, 0, 1, 2, &[1, 2, 3]),
            report("a", 1, 0, 1, 4, &[1]),
            report("a", 1, 0, 2, 5, &[2, 3]),
        ] {
            assert_eq!(
                refused(&mut s, &stale),
                ResponseError::FencedLeaderEpoch,
                "{stale:?}"
            );
        }
        assert_eq!(recorded(&s, "a", 0), Some((3, 5, vec![3])));
        // Partitions are recorded independently.
        s.apply(&report("a", 1, 1, 2, 1, &[2, 1])).unwrap();
        assert_eq!(recorded(&s, "a", 1), Some((2, 1, vec![1, 2])));
        assert_eq!(recorded(&s, "a", 0), Some((3, 5, vec![3])));
    }

    #[test]
    fn partition_state_of_unknown_partitions_or_foreign_brokers_is_refused() {
        let mut s = three();
        s.apply(&create("a", 1, vec![vec![1, 2]])).unwrap();
        for (cmd, code) in [
            (
                report("b", 1, 0, 1, 1, &[1]),
                ResponseError::UnknownTopicOrPartition,
            ),
            (report("a", 2, 0, 1, 1, &[1]), ResponseError::UnknownTopicId),
            (
                report("a", 1, 1, 1, 1, &[1]),
                ResponseError::UnknownTopicOrPartition,
            ),
            (
                report("a", 1, -1, 1, 1, &[1]),
                ResponseError::UnknownTopicOrPartition,
            ),
            // The leader is not a replica.
            (report("a", 1, 0, 3, 1, &[3]), ResponseError::InvalidRequest),
            // The ISR is not a subset of the replicas.
            (
                report("a", 1, 0, 1, 1, &[1, 3]),
                ResponseError::InvalidRequest,
            ),
            // It lacks the leader, is empty, or repeats a broker.
            (report("a", 1, 0, 1, 1, &[2]), ResponseError::InvalidRequest),
            (report("a", 1, 0, 1, 1, &[]), ResponseError::InvalidRequest),
            (
                report("a", 1, 0, 1, 1, &[1, 1]),
                ResponseError::InvalidRequest,
            ),
        ] {
            assert_eq!(refused(&mut s, &cmd), code, "{cmd:?}");
        }
    }

    #[test]
    fn partition_records_follow_topic_deletion_and_growth() {
        let mut s = three();
        let id = Uuid::from_u128(1);
        s.apply(&create("a", 1, vec![vec![1, 2]])).unwrap();
        s.apply(&report("a", 1, 0, 2, 3, &[1, 2])).unwrap();
        s.apply(&Command::CreatePartitions {
            name: "a".into(),
            id,
            from: 1,
            replicas: vec![vec![3, 1]],
        })
        .unwrap();
        // The new partition has no record until its leader reports.
        assert_eq!(recorded(&s, "a", 1), None);
        assert_eq!(recorded(&s, "a", 0), Some((2, 3, vec![1, 2])));
        s.apply(&report("a", 1, 1, 3, 1, &[3])).unwrap();
        s.apply(&Command::DeleteTopic {
            name: "a".into(),
            id,
        })
        .unwrap();
        // Re-created under the same name: the old records are gone and the
        // old leaders' reports miss (another topic id).
        s.apply(&create("a", 2, vec![vec![1, 2]])).unwrap();
        assert_eq!(recorded(&s, "a", 0), None);
        assert_eq!(
            refused(&mut s, &report("a", 1, 0, 2, 9, &[2])),
            ResponseError::UnknownTopicId
        );
        s.apply(&report("a", 2, 0, 1, 1, &[1])).unwrap();
        assert_eq!(recorded(&s, "a", 0), Some((1, 1, vec![1])));
    }

    #[test]
    fn snapshot_restores_the_same_state() {
        let mut s = three();
        s.apply(&create("a", 1, vec![vec![1, 2], vec![3, 1]]))
            .unwrap();
        s.apply(&Command::FenceBroker { id: 2 }).unwrap();
        s.apply(&report("a", 1, 1, 3, 2, &[1, 3])).unwrap();
        let bytes = s.snapshot();
        let r = ClusterState::restore(&bytes).unwrap();
        assert_eq!(r, s);
        assert_eq!(r.snapshot(), bytes);
        assert!(matches!(
            ClusterState::restore(b"{"),
            Err(SnapshotError::Decode(_))
        ));
        let mut broken = s.clone();
        broken.topics.get_mut("a").unwrap().meta.partitions = 5;
        assert!(matches!(
            ClusterState::restore(&broken.snapshot()),
            Err(SnapshotError::Inconsistent(_))
        ));
        for bad in [
            (
                5,
                LeaderAndIsr {
                    leader: 1,
                    epoch: 1,
                    isr: vec![1],
                },
            ),
            (
                0,
                LeaderAndIsr {
                    leader: 3,
                    epoch: 1,
                    isr: vec![3],
                },
            ),
            (
                0,
                LeaderAndIsr {
                    leader: 1,
                    epoch: 1,
                    isr: vec![1, 3],
                },
            ),
            (
                0,
                LeaderAndIsr {
                    leader: 2,
                    epoch: 1,
                    isr: vec![2, 1],
                },
            ),
        ] {
            let mut broken = s.clone();
            broken
                .topics
                .get_mut("a")
                .unwrap()
                .leaders
                .insert(bad.0, bad.1);
            assert!(matches!(
                ClusterState::restore(&broken.snapshot()),
                Err(SnapshotError::Inconsistent(_))
            ));
        }
    }
}
