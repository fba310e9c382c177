//! Properties of the controller over random histories of brokers and topics.

use std::collections::{BTreeMap, BTreeSet};

use proptest::prelude::*;
use uuid::Uuid;

use super::*;

const DEFAULTS: TopicDefaults = TopicDefaults {
    partitions: 2,
    replication_factor: 1,
};

#[derive(Debug, Clone)]
enum Op {
    Register(BrokerId, u8),
    Fence(BrokerId),
    Unfence(BrokerId),
    Unregister(BrokerId),
    Create(u8, i32, i16),
    Delete(u8),
    Grow(u8, i32),
    Alter(u8, Option<u32>),
    /// A partition's leader reports (topic, partition, leader index, epoch,
    /// ISR mask over the replicas); the epoch may be stale.
    Report(u8, u8, u8, u64, u8),
    /// Apply an earlier proposal again: stale, or a duplicate in flight.
    Replay(usize),
}

fn op() -> impl Strategy<Value = Op> {
    let broker = 0..6i32;
    let name = 0..4u8;
    prop_oneof![
        3 => (broker.clone(), 0..2u8).prop_map(|(b, i)| Op::Register(b, i)),
        1 => broker.clone().prop_map(Op::Fence),
        1 => broker.clone().prop_map(Op::Unfence),
        1 => broker.prop_map(Op::Unregister),
        3 => (name.clone(), -1..9i32, -1..5i16).prop_map(|(n, p, r)| Op::Create(n, p, r)),
        1 => name.clone().prop_map(Op::Delete),
        2 => (name.clone(), 1..5i32).prop_map(|(n, e)| Op::Grow(n, e)),
        1 => (name.clone(), proptest::option::of(0..100_000u32)).prop_map(|(n, v)| Op::Alter(n, v)),
        3 => (name, 0..6u8, 0..4u8, 0..6u64, any::<u8>()).prop_map(|(n, p, l, e, m)| Op::Report(n, p, l, e, m)),
        2 => any::<usize>().prop_map(Op::Replay),
    ]
}

fn topic_name(n: u8) -> String {
    format!("t{n}")
}

/// The proposal an op makes on the committed state, if the façade accepts it.
fn propose(c: &Controller, op: &Op, next_id: &mut u128, old: &[Command]) -> Option<Command> {
    let r = match op {
        Op::Register(b, inc) => c.register_broker(
            *b,
            "127.0.0.1",
            9000 + *b as u16,
            None,
            Uuid::from_u128(*inc as u128 + 1),
        ),
        Op::Fence(b) => c.fence_broker(*b),
        Op::Unfence(b) => c.unfence_broker(*b),
        Op::Unregister(b) => c.unregister_broker(*b),
        Op::Create(n, partitions, rf) => {
            *next_id += 1;
            let t = NewTopic {
                name: topic_name(*n),
                partitions: *partitions,
                replication_factor: *rf,
                configs: BTreeMap::new(),
            };
            c.create_topic(&t, Uuid::from_u128(*next_id), Requester::Client)
        }
        Op::Delete(n) => c.delete_topic(&topic_name(*n)),
        Op::Grow(n, extra) => {
            let have = c
                .state()
                .topic(&topic_name(*n))
                .map_or(1, |t| t.meta.partitions);
            c.create_partitions(&topic_name(*n), have + extra)
        }
        Op::Alter(n, v) => c.alter_configs(
            &topic_name(*n),
            [("retention.ms".to_string(), v.map(|v| v.to_string()))].into(),
            false,
        ),
        Op::Report(n, p, l, epoch, mask) => {
            // As a leader would: its own topic id and replicas, unless the
            // topic is gone (then an id of no topic).
            let name = topic_name(*n);
            let t = c.state().topic(&name);
            let replicas = t
                .and_then(|t| t.replicas.get(*p as usize).cloned())
                .unwrap_or_else(|| vec![1, 2, 3]);
            let leader = replicas[*l as usize % replicas.len()];
            let isr = replicas
                .iter()
                .enumerate()
                .filter(|(i, &b)| b == leader || mask & (1 << i) != 0)
                .map(|(_, &b)| b)
                .collect();
            return Some(Command::PartitionState {
                name,
                id: t.map_or(Uuid::from_u128(u128::MAX), |t| t.meta.id),
                partition: *p as i32,
                leader,
                epoch: *epoch,
                isr,
            });
        }
        Op::Replay(i) => return (!old.is_empty()).then(|| old[i % old.len()].clone()),
    };
    r.ok()
}

fn distinct(r: &[BrokerId]) -> bool {
    r.iter().collect::<BTreeSet<_>>().len() == r.len()
}

/// Every partition of every topic has `rf` distinct replicas.
fn assert_shape(s: &ClusterState) {
    for t in s.topics().values() {
        let rf = t.replication_factor();
        assert!(rf > 0);
        assert_eq!(t.meta.partitions as usize, t.replicas.len());
        for r in &t.replicas {
            assert_eq!(r.len(), rf, "{t:?}");
            assert!(distinct(r), "{t:?}");
        }
        for (p, l) in &t.leaders {
            let r = &t.replicas[*p as usize];
            assert!(r.contains(&l.leader), "{t:?}");
            assert!(l.isr.contains(&l.leader), "{t:?}");
            assert!(l.isr.iter().all(|b| r.contains(b)), "{t:?}");
            assert!(l.isr.windows(2).all(|w| w[0] < w[1]), "{t:?}");
        }
    }
}

fn spread(counts: impl Iterator<Item = u32>) -> u32 {
    let v: Vec<u32> = counts.collect();
    v.iter().max().unwrap_or(&0) - v.iter().min().unwrap_or(&0)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn histories_apply_deterministically(ops in proptest::collection::vec(op(), 1..60), cut in any::<prop::sample::Index>()) {
        let mut c = Controller::new(ClusterState::default(), DEFAULTS);
        let mut log: Vec<Command> = Vec::new();
        let mut results = Vec::new();
        let mut next_id = 0u128;
        for op in &ops {
            let Some(cmd) = propose(&c, op, &mut next_id, &log) else { continue };
            let fresh = !matches!(op, Op::Replay(_) | Op::Report(..));
            let before = match &cmd {
                Command::PartitionState { name, id, partition, .. } => c
                    .state()
                    .topic(name)
                    .filter(|t| t.meta.id == *id)
                    .and_then(|t| t.leader_and_isr(*partition).cloned()),
                _ => None,
            };
            let live: BTreeSet<BrokerId> = c.state().live_brokers().into_iter().collect();
            let r = c.apply(&cmd);
            // A proposal checked on the committed state applies to it.
            if fresh {
                prop_assert!(r.is_ok(), "{cmd:?}: {r:?}");
            }
            let new_parts = match (&r, &cmd) {
                (Ok(_), Command::CreateTopic { replicas, .. }) => Some(replicas),
                (Ok(_), Command::CreatePartitions { replicas, .. }) => Some(replicas),
                _ => None,
            };
            if let Some(parts) = new_parts {
                for p in parts {
                    prop_assert!(distinct(p));
                    prop_assert!(p.iter().all(|b| live.contains(b)), "{p:?} on {live:?}");
                }
            }
            if let (Op::Create(_, partitions, rf), Ok(_), Command::CreateTopic { name, .. }) = (op, &r, &cmd) {
                let t = c.state().topic(name).unwrap();
                let want_rf = if *rf == -1 { DEFAULTS.replication_factor } else { *rf };
                let want_p = if *partitions == -1 { DEFAULTS.partitions } else { *partitions };
                prop_assert_eq!(t.replication_factor(), want_rf as usize);
                prop_assert_eq!(t.meta.partitions, want_p);
            }
            // A partition's recorded epoch never goes back; a report is
            // refused exactly when it is older, or another leader's equal one.
            if let Command::PartitionState { name, partition, leader, epoch, .. } = &cmd {
                if let (Some(b), Ok(_)) = (&before, &r) {
                    prop_assert!(*epoch > b.epoch || (*epoch == b.epoch && *leader == b.leader));
                }
                if let (Some(b), Err(CommandError::StaleLeaderEpoch { .. })) = (&before, &r) {
                    prop_assert!(*epoch < b.epoch || *leader != b.leader);
                }
                if r.is_ok() {
                    let now = c.state().topic(name).and_then(|t| t.leader_and_isr(*partition));
                    prop_assert_eq!(now.map(|l| (l.leader, l.epoch)), Some((*leader, *epoch)));
                }
            }
            assert_shape(c.state());
            log.push(cmd);
            results.push(r);
        }
        // Another replica applying the same log ends in the same state.
        let mut other = ClusterState::default();
        let again: Vec<_> = log.iter().map(|cmd| other.apply(cmd)).collect();
        prop_assert_eq!(&again, &results);
        prop_assert_eq!(&other, c.state());
        prop_assert_eq!(other.snapshot(), c.state().snapshot());
        // So does one restarted from a snapshot taken part way.
        let k = cut.index(log.len() + 1);
        let mut early = ClusterState::default();
        for cmd in &log[..k] {
            let _ = early.apply(cmd);
        }
        let mut restored = ClusterState::restore(&early.snapshot()).unwrap();
        prop_assert_eq!(&restored, &early);
        let rest: Vec<_> = log[k..].iter().map(|cmd| restored.apply(cmd)).collect();
        prop_assert_eq!(&rest[..], &results[k..]);
        prop_assert_eq!(&restored, c.state());
        // The encoded log decodes to the same commands.
        let mut decoded = Controller::new(ClusterState::default(), DEFAULTS);
        for cmd in &log {
            decoded.apply_batch(&cmd.to_batch(0)).unwrap().ok();
        }
        prop_assert_eq!(decoded.state(), c.state());
    }

    #[test]
    fn preferred_leaders_are_spread(
        n in 1..8i32,
        topics in proptest::collection::vec((1..40i32, 1..8i16, proptest::option::weighted(0.3, 1..20i32)), 1..12),
    ) {
        let mut c = Controller::new(ClusterState::default(), DEFAULTS);
        for id in 0..n {
            let cmd = c.register_broker(id * 3 + 1, "h", 1, None, Uuid::from_u128(1)).unwrap();
            c.apply(&cmd).unwrap();
        }
        let brokers = c.state().live_brokers();
        let mut grown = false;
        for (i, (partitions, rf, extra)) in topics.iter().enumerate() {
            let rf = (*rf).min(n as i16);
            let name = format!("t{i}");
            let t = NewTopic { name: name.clone(), partitions: *partitions, replication_factor: rf, configs: BTreeMap::new() };
            let cmd = c.create_topic(&t, Uuid::from_u128(i as u128 + 1), Requester::Client).unwrap();
            c.apply(&cmd).unwrap();
            if let Some(extra) = extra {
                let cmd = c.create_partitions(&name, partitions + extra).unwrap();
                c.apply(&cmd).unwrap();
                grown = true;
            }
            let topic = c.state().topic(&name).unwrap();
            prop_assert_eq!(topic.replication_factor(), rf as usize);
            let mine = Load::of(&topic.replicas);
            // Within the topic: preferred leaders per broker differ by <= 1.
            prop_assert!(spread(brokers.iter().map(|&b| mine.leaders(b))) <= 1, "{:?}", topic.replicas);
            // Across topics created on these brokers too (growth picks by
            // the topic's own count first, so only until a topic grew).
            if !grown {
                let all = Load::of(c.state().assignments());
                prop_assert!(spread(brokers.iter().map(|&b| all.leaders(b))) <= 1);
            }
        }
        assert_shape(c.state());
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn placement_on_any_load(
        live in proptest::collection::btree_set(0..12i32, 1..8),
        others in proptest::collection::vec(proptest::collection::vec(0..14i32, 1..4), 0..40),
        before in proptest::collection::vec(proptest::collection::vec(0..14i32, 1..4), 0..12),
        count in 1..60i32,
        rf in 1..9i32,
    ) {
        let live: Vec<BrokerId> = live.into_iter().collect();
        let mut cluster = Load::of(&others);
        for r in &before {
            cluster.add(r);
        }
        let placed = place(&live, &cluster, &before, count, rf);
        if rf as usize > live.len() {
            prop_assert_eq!(placed.unwrap_err().code, kafka_protocol::ResponseError::InvalidReplicationFactor);
            return Ok(());
        }
        let placed = placed.unwrap();
        prop_assert_eq!(placed.len(), count as usize);
        for r in &placed {
            prop_assert_eq!(r.len(), rf as usize);
            prop_assert!(distinct(r));
            prop_assert!(r.iter().all(|b| live.contains(b)));
        }
        // Water-filling: the topic's leader spread over live brokers never
        // grows past max(what it was, 1); for a new topic it is <= 1.
        let old = Load::of(&before);
        let mut all = before.clone();
        all.extend(placed.iter().cloned());
        let new = Load::of(&all);
        let was = spread(live.iter().map(|&b| old.leaders(b)));
        prop_assert!(spread(live.iter().map(|&b| new.leaders(b))) <= was.max(1));
    }
}
