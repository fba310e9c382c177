//! The controller façade: admin requests in, commands out; committed
//! commands in, state changes out. It proposes from the committed state
//! only, so two proposals in flight can conflict; apply checks each
//! command again and the later one is refused there (a no-op).

use std::collections::BTreeMap;

use kafka_protocol::ResponseError;
use uuid::Uuid;

use super::command::{BrokerId, Command, DecodeError};
use super::placement::{self, Load};
use super::state::{Applied, ClusterState, CommandError, SnapshotError};
use crate::config::BrokerConfig;
use crate::metadata::{self, AdminError};

/// What `-1` means in a CreateTopics request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicDefaults {
    /// `num.partitions`.
    pub partitions: i32,
    /// `default.replication.factor`.
    pub replication_factor: i16,
}

impl From<&BrokerConfig> for TopicDefaults {
    fn from(c: &BrokerConfig) -> Self {
        Self {
            partitions: c.num_partitions,
            replication_factor: c.default_replication_factor,
        }
    }
}

/// One topic of a CreateTopics request (`-1`: the default).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewTopic {
    pub name: String,
    pub partitions: i32,
    pub replication_factor: i16,
    pub configs: BTreeMap<String, String>,
}

/// Who asks: clients may not create internal topics, the broker may.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Requester {
    Client,
    Broker,
}

/// The controller's state machine with Kafka's admin checks in front.
#[derive(Debug, Clone, PartialEq)]
pub struct Controller {
    state: ClusterState,
    defaults: TopicDefaults,
}

fn unknown_topic(name: &str) -> AdminError {
    AdminError::new(
        ResponseError::UnknownTopicOrPartition,
        format!("no topic `{name}`"),
    )
}

impl Controller {
    pub fn new(state: ClusterState, defaults: TopicDefaults) -> Self {
        Self { state, defaults }
    }

    pub fn state(&self) -> &ClusterState {
        &self.state
    }

    /// `cmd` if it would apply to the committed state.
    fn checked(&self, cmd: Command) -> Result<Command, AdminError> {
        self.state.check(&cmd)?;
        Ok(cmd)
    }

    pub fn register_broker(
        &self,
        id: BrokerId,
        host: &str,
        port: u16,
        rack: Option<&str>,
        incarnation: Uuid,
    ) -> Result<Command, AdminError> {
        self.checked(Command::RegisterBroker {
            id,
            host: host.to_string(),
            port,
            rack: rack.map(str::to_string),
            incarnation,
        })
    }

    pub fn fence_broker(&self, id: BrokerId) -> Result<Command, AdminError> {
        self.checked(Command::FenceBroker { id })
    }

    pub fn unfence_broker(&self, id: BrokerId) -> Result<Command, AdminError> {
        self.checked(Command::UnfenceBroker { id })
    }

    pub fn unregister_broker(&self, id: BrokerId) -> Result<Command, AdminError> {
        self.checked(Command::UnregisterBroker { id })
    }

    /// CreateTopics for one topic: the command, with its placement on the
    /// live brokers. `id` is the new topic's id (the caller draws it, so
    /// this stays deterministic).
    pub fn create_topic(
        &self,
        t: &NewTopic,
        id: Uuid,
        by: Requester,
    ) -> Result<Command, AdminError> {
        if by == Requester::Client {
            metadata::refuse_internal(&t.name, "created")?;
        }
        metadata::validate_topic_name(&t.name)?;
        if self.state.topic(&t.name).is_some() {
            return Err(CommandError::TopicExists(t.name.clone()).into());
        }
        let partitions = match t.partitions {
            -1 => self.defaults.partitions,
            n => n,
        };
        let rf = match t.replication_factor {
            -1 => self.defaults.replication_factor,
            n => n,
        };
        let replicas = placement::place(
            &self.state.live_brokers(),
            &Load::of(self.state.assignments()),
            &[],
            partitions,
            rf as i32,
        )?;
        self.checked(Command::CreateTopic {
            name: t.name.clone(),
            id,
            configs: t.configs.clone(),
            replicas,
        })
    }

    pub fn delete_topic(&self, name: &str) -> Result<Command, AdminError> {
        metadata::refuse_internal(name, "deleted")?;
        let t = self.state.topic(name).ok_or_else(|| unknown_topic(name))?;
        self.checked(Command::DeleteTopic {
            name: name.to_string(),
            id: t.meta.id,
        })
    }

    /// DeleteTopics v6 by topic id.
    pub fn delete_topic_by_id(&self, id: Uuid) -> Result<Command, AdminError> {
        let t = self.state.topic_by_id(id).ok_or_else(|| {
            AdminError::new(ResponseError::UnknownTopicId, format!("no topic id {id}"))
        })?;
        self.delete_topic(&t.meta.name)
    }

    /// CreatePartitions: grow `name` to `total` partitions, the new ones
    /// placed with the topic's replication factor.
    pub fn create_partitions(&self, name: &str, total: i32) -> Result<Command, AdminError> {
        metadata::refuse_internal(name, "given more partitions")?;
        let t = self.state.topic(name).ok_or_else(|| unknown_topic(name))?;
        let have = t.meta.partitions;
        if total <= have {
            return Err(AdminError::new(
                ResponseError::InvalidPartitions,
                format!(
                    "topic `{name}` has {have} partitions; the new count {total} must be larger"
                ),
            ));
        }
        let replicas = placement::place(
            &self.state.live_brokers(),
            &Load::of(self.state.assignments()),
            &t.replicas,
            total - have,
            t.replication_factor() as i32,
        )?;
        self.checked(Command::CreatePartitions {
            name: name.to_string(),
            id: t.meta.id,
            from: have,
            replicas,
        })
    }

    /// AlterConfigs (`replace`) or IncrementalAlterConfigs of a topic.
    pub fn alter_configs(
        &self,
        name: &str,
        changes: BTreeMap<String, Option<String>>,
        replace: bool,
    ) -> Result<Command, AdminError> {
        let t = self.state.topic(name).ok_or_else(|| unknown_topic(name))?;
        self.checked(Command::AlterConfigs {
            name: name.to_string(),
            id: t.meta.id,
            changes,
            replace,
        })
    }

    /// Apply a committed command (see [`ClusterState::apply`]).
    pub fn apply(&mut self, cmd: &Command) -> Result<Applied, CommandError> {
        self.state.apply(cmd)
    }

    /// Apply a committed entry's batch. The outer error means the entry is
    /// unreadable and the replica must stop; the inner one is a no-op.
    pub fn apply_batch(
        &mut self,
        data: &[u8],
    ) -> Result<Result<Applied, CommandError>, DecodeError> {
        let cmd = Command::from_batch(data)?;
        Ok(self.apply(&cmd))
    }

    pub fn snapshot(&self) -> Vec<u8> {
        self.state.snapshot()
    }

    /// Replace the state by a snapshot's (a restart, or Raft sent one).
    pub fn restore(&mut self, bytes: &[u8]) -> Result<(), SnapshotError> {
        self.state = ClusterState::restore(bytes)?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::groups::OFFSETS_TOPIC;

    const DEFAULTS: TopicDefaults = TopicDefaults {
        partitions: 3,
        replication_factor: 1,
    };

    fn controller(brokers: BrokerId) -> Controller {
        let mut c = Controller::new(ClusterState::default(), DEFAULTS);
        for id in 0..brokers {
            let cmd = c
                .register_broker(
                    id,
                    "127.0.0.1",
                    9092 + id as u16,
                    None,
                    Uuid::from_u128(id as u128),
                )
                .unwrap();
            c.apply(&cmd).unwrap();
        }
        c
    }

    fn code<T: std::fmt::Debug>(r: Result<T, AdminError>) -> ResponseError {
        r.unwrap_err().code
    }

    fn topic(name: &str, partitions: i32, rf: i16) -> NewTopic {
        NewTopic {
            name: name.into(),
            partitions,
            replication_factor: rf,
            configs: BTreeMap::new(),
        }
    }

    fn create(c: &mut Controller, t: &NewTopic, id: u128) -> Result<Applied, AdminError> {
        let cmd = c.create_topic(t, Uuid::from_u128(id), Requester::Client)?;
        Ok(c.apply(&cmd)?)
    }

    #[test]
    fn create_topics_errors() {
        let mut c = controller(3);
        create(&mut c, &topic("a", 6, 3), 1).unwrap();
        let t = c.state().topic("a").unwrap();
        assert_eq!(t.replicas.len(), 6);
        assert!(t.replicas.iter().all(|r| r.len() == 3));
        assert_eq!(
            code(create(&mut c, &topic("a", 1, 1), 2)),
            ResponseError::TopicAlreadyExists
        );
        assert_eq!(
            code(create(&mut c, &topic("b", 1, 4), 2)),
            ResponseError::InvalidReplicationFactor
        );
        assert_eq!(
            code(create(&mut c, &topic("b", 1, 0), 2)),
            ResponseError::InvalidReplicationFactor
        );
        assert_eq!(
            code(create(&mut c, &topic("b", 1, -2), 2)),
            ResponseError::InvalidReplicationFactor
        );
        assert_eq!(
            code(create(&mut c, &topic("b", 0, 1), 2)),
            ResponseError::InvalidPartitions
        );
        assert_eq!(
            code(create(&mut c, &topic("b", -5, 1), 2)),
            ResponseError::InvalidPartitions
        );
        assert_eq!(
            code(create(&mut c, &topic("b/c", 1, 1), 2)),
            ResponseError::InvalidTopicException
        );
        assert_eq!(
            code(create(&mut c, &topic("b", 1, 1), 1)),
            ResponseError::InvalidRequest
        );
        let mut bad = topic("b", 1, 1);
        bad.configs.insert("retention.ms".into(), "-7".into());
        assert_eq!(code(create(&mut c, &bad, 2)), ResponseError::InvalidConfig);
        // -1: the defaults.
        create(&mut c, &topic("d", -1, -1), 3).unwrap();
        let d = c.state().topic("d").unwrap();
        assert_eq!((d.meta.partitions, d.replication_factor()), (3, 1));
        // Internal topics: the broker creates them, clients may not.
        let internal = topic(OFFSETS_TOPIC, 5, 1);
        assert_eq!(
            code(create(&mut c, &internal, 4)),
            ResponseError::InvalidRequest
        );
        let cmd = c
            .create_topic(&internal, Uuid::from_u128(4), Requester::Broker)
            .unwrap();
        c.apply(&cmd).unwrap();
        assert_eq!(
            code(c.delete_topic(OFFSETS_TOPIC)),
            ResponseError::InvalidRequest
        );
        assert_eq!(
            code(c.create_partitions(OFFSETS_TOPIC, 9)),
            ResponseError::InvalidRequest
        );
    }

    #[test]
    fn fenced_brokers_get_no_new_replicas() {
        let mut c = controller(3);
        let fence = c.fence_broker(1).unwrap();
        c.apply(&fence).unwrap();
        assert_eq!(
            code(create(&mut c, &topic("a", 1, 3), 1)),
            ResponseError::InvalidReplicationFactor
        );
        create(&mut c, &topic("a", 4, 2), 1).unwrap();
        let t = c.state().topic("a").unwrap();
        assert!(t.replicas.iter().flatten().all(|&b| b != 1));
        assert_eq!(
            code(c.fence_broker(7)),
            ResponseError::BrokerIdNotRegistered
        );
    }

    #[test]
    fn delete_topics_errors() {
        let mut c = controller(2);
        create(&mut c, &topic("a", 2, 2), 1).unwrap();
        assert_eq!(
            code(c.delete_topic("zzz")),
            ResponseError::UnknownTopicOrPartition
        );
        assert_eq!(
            code(c.delete_topic_by_id(Uuid::from_u128(9))),
            ResponseError::UnknownTopicId
        );
        let by_id = c.delete_topic_by_id(Uuid::from_u128(1)).unwrap();
        let by_name = c.delete_topic("a").unwrap();
        assert_eq!(by_id, by_name);
        assert!(matches!(c.apply(&by_id), Ok(Applied::TopicDeleted { .. })));
        // The second of two deletes in flight.
        assert_eq!(
            c.apply(&by_name).unwrap_err().code(),
            ResponseError::UnknownTopicOrPartition
        );
        assert!(c.state().topic("a").is_none());
    }

    #[test]
    fn create_partitions_errors_and_growth() {
        let mut c = controller(3);
        create(&mut c, &topic("a", 2, 2), 1).unwrap();
        assert_eq!(
            code(c.create_partitions("zzz", 3)),
            ResponseError::UnknownTopicOrPartition
        );
        assert_eq!(
            code(c.create_partitions("a", 2)),
            ResponseError::InvalidPartitions
        );
        assert_eq!(
            code(c.create_partitions("a", 1)),
            ResponseError::InvalidPartitions
        );
        assert_eq!(
            code(c.create_partitions("a", crate::metadata::MAX_PARTITIONS + 1)),
            ResponseError::InvalidPartitions
        );
        let first = c.create_partitions("a", 5).unwrap();
        let second = c.create_partitions("a", 5).unwrap();
        c.apply(&first).unwrap();
        // Both computed for 2 partitions: the second would make 8.
        assert_eq!(
            c.apply(&second).unwrap_err().code(),
            ResponseError::InvalidPartitions
        );
        let t = c.state().topic("a").unwrap();
        assert_eq!(t.meta.partitions, 5);
        assert!(t.replicas.iter().all(|r| r.len() == 2 && r[0] != r[1]));
        // Too few live brokers for the topic's replication factor.
        for id in [0, 1] {
            let f = c.fence_broker(id).unwrap();
            c.apply(&f).unwrap();
        }
        assert_eq!(
            code(c.create_partitions("a", 6)),
            ResponseError::InvalidReplicationFactor
        );
    }

    #[test]
    fn alter_configs_checks_names_and_values() {
        let mut c = controller(1);
        create(&mut c, &topic("a", 1, 1), 1).unwrap();
        let set = |k: &str, v: &str| [(k.to_string(), Some(v.to_string()))].into();
        assert_eq!(
            code(c.alter_configs("zzz", set("retention.ms", "1"), false)),
            ResponseError::UnknownTopicOrPartition
        );
        assert_eq!(
            code(c.alter_configs("a", set("retention.ms", "x"), false)),
            ResponseError::InvalidConfig
        );
        assert_eq!(
            code(c.alter_configs("a", set("colour", "red"), false)),
            ResponseError::InvalidConfig
        );
        let cmd = c
            .alter_configs("a", set("retention.ms", "60000"), false)
            .unwrap();
        c.apply(&cmd).unwrap();
        assert_eq!(
            c.state().topic("a").unwrap().meta.configs["retention.ms"],
            "60000"
        );
    }

    #[test]
    fn committed_batches_drive_the_state() {
        let mut leader = controller(3);
        let mut follower =
            Controller::new(ClusterState::restore(&leader.snapshot()).unwrap(), DEFAULTS);
        let cmd = leader
            .create_topic(&topic("a", 3, 3), Uuid::from_u128(1), Requester::Client)
            .unwrap();
        let batch = cmd.to_batch(1_700_000_000_000);
        let a = leader.apply_batch(&batch).unwrap();
        let b = follower.apply_batch(&batch).unwrap();
        assert_eq!(a, b);
        assert!(a.is_ok());
        assert_eq!(leader, follower);
        // Applied again (a duplicate proposal): refused on both alike.
        assert_eq!(
            leader.apply_batch(&batch).unwrap(),
            follower.apply_batch(&batch).unwrap()
        );
        assert_eq!(leader, follower);
        assert!(follower.apply_batch(b"garbage").is_err());
        let mut restored = Controller::new(ClusterState::default(), DEFAULTS);
        restored.restore(&leader.snapshot()).unwrap();
        assert_eq!(restored, leader);
    }
}
