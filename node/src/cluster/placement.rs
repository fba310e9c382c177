//! Where new partitions' replicas go.
//!
//! Partition by partition, the preferred leader is the live broker leading
//! the fewest partitions of this topic, then of the cluster (then fewest
//! replicas, then lowest id); its followers are the other live brokers
//! holding the fewest replicas of this topic, then of the cluster, ties
//! broken by ring order after the leader, shifted by one every full round
//! (so the follower sets of successive rounds differ).
//!
//! On a fresh cluster this is Kafka's round-robin assignment started at
//! the least loaded broker; with load it fills the least loaded brokers
//! first. Leader balance comes first: a topic's replica counts per broker
//! can differ by 2. It is a pure function of its inputs (no randomness), so
//! every proposer, and every test run, computes the same placement.

use std::collections::{BTreeMap, BTreeSet};

use kafka_protocol::ResponseError;

use super::command::BrokerId;
use crate::metadata::{AdminError, MAX_PARTITIONS};

/// Per broker: partitions it is preferred leader of, replicas it holds.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Load {
    leaders: BTreeMap<BrokerId, u32>,
    replicas: BTreeMap<BrokerId, u32>,
}

impl Load {
    /// The load of a set of replica lists.
    pub fn of<'a>(assignments: impl IntoIterator<Item = &'a Vec<BrokerId>>) -> Self {
        let mut l = Self::default();
        for r in assignments {
            l.add(r);
        }
        l
    }

    /// Count one partition's replica list.
    pub fn add(&mut self, replicas: &[BrokerId]) {
        if let Some(&first) = replicas.first() {
            *self.leaders.entry(first).or_default() += 1;
        }
        for &b in replicas {
            *self.replicas.entry(b).or_default() += 1;
        }
    }

    pub fn leaders(&self, b: BrokerId) -> u32 {
        self.leaders.get(&b).copied().unwrap_or(0)
    }

    pub fn replicas(&self, b: BrokerId) -> u32 {
        self.replicas.get(&b).copied().unwrap_or(0)
    }
}

/// Replica lists for `count` new partitions of a topic that has the
/// partitions `topic` (empty for a new topic), `rf` replicas each, on the
/// brokers `live`; `cluster` is the load of every topic (this one's
/// included). Errors are Kafka's: INVALID_PARTITIONS, INVALID_REPLICATION_FACTOR.
pub fn place(
    live: &[BrokerId],
    cluster: &Load,
    topic: &[Vec<BrokerId>],
    count: i32,
    rf: i32,
) -> Result<Vec<Vec<BrokerId>>, AdminError> {
    let max_new = MAX_PARTITIONS as i64 - topic.len() as i64;
    if count <= 0 || count as i64 > max_new {
        return Err(AdminError::new(
            ResponseError::InvalidPartitions,
            format!("cannot add {count} partitions: a topic has 1 to {MAX_PARTITIONS} partitions"),
        ));
    }
    if rf <= 0 {
        return Err(AdminError::new(
            ResponseError::InvalidReplicationFactor,
            format!("replication factor {rf} must be larger than 0"),
        ));
    }
    let ring: Vec<BrokerId> = live
        .iter()
        .copied()
        .collect::<BTreeSet<_>>()
        .into_iter()
        .collect();
    let n = ring.len();
    if rf as usize > n {
        return Err(AdminError::new(
            ResponseError::InvalidReplicationFactor,
            format!(
                "unable to replicate the partition {rf} time(s): the target replication factor of {rf} cannot be reached because only {n} broker(s) are alive"
            ),
        ));
    }
    let mut cluster = cluster.clone();
    let mut mine = Load::of(topic);
    let mut out = Vec::with_capacity(count as usize);
    for p in topic.len()..topic.len() + count as usize {
        let lead = (0..n)
            .min_by_key(|&i| {
                let b = ring[i];
                (
                    mine.leaders(b),
                    cluster.leaders(b),
                    mine.replicas(b),
                    cluster.replicas(b),
                    b,
                )
            })
            .expect("n >= rf > 0");
        let shift = p / n;
        let mut replicas = vec![ring[lead]];
        let mut taken = vec![false; n];
        taken[lead] = true;
        for _ in 1..rf {
            let next = (0..n)
                .filter(|&i| !taken[i])
                .min_by_key(|&i| {
                    let b = ring[i];
                    let after = (i + 2 * n - lead - 1 - shift % n) % n;
                    (mine.replicas(b), cluster.replicas(b), after)
                })
                .expect("rf <= n");
            taken[next] = true;
            replicas.push(ring[next]);
        }
        mine.add(&replicas);
        cluster.add(&replicas);
        out.push(replicas);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counts(
        a: &[Vec<BrokerId>],
        f: impl Fn(&Load, BrokerId) -> u32,
        live: &[BrokerId],
    ) -> Vec<u32> {
        let l = Load::of(a);
        live.iter().map(|&b| f(&l, b)).collect()
    }

    #[test]
    fn errors_are_kafkas() {
        let c = Load::default();
        let code = |r: Result<_, AdminError>| r.unwrap_err().code;
        assert_eq!(
            code(place(&[1, 2], &c, &[], 0, 1)),
            ResponseError::InvalidPartitions
        );
        assert_eq!(
            code(place(&[1, 2], &c, &[], -3, 1)),
            ResponseError::InvalidPartitions
        );
        assert_eq!(
            code(place(&[1, 2], &c, &[], MAX_PARTITIONS + 1, 1)),
            ResponseError::InvalidPartitions
        );
        let full: Vec<Vec<BrokerId>> = vec![vec![1]; MAX_PARTITIONS as usize];
        assert_eq!(
            code(place(&[1, 2], &c, &full, 1, 1)),
            ResponseError::InvalidPartitions
        );
        assert_eq!(
            code(place(&[1, 2], &c, &[], 1, 0)),
            ResponseError::InvalidReplicationFactor
        );
        assert_eq!(
            code(place(&[1, 2], &c, &[], 1, -1)),
            ResponseError::InvalidReplicationFactor
        );
        assert_eq!(
            code(place(&[1, 2], &c, &[], 1, 3)),
            ResponseError::InvalidReplicationFactor
        );
        assert_eq!(
            code(place(&[], &c, &[], 1, 1)),
            ResponseError::InvalidReplicationFactor
        );
        // Duplicates in `live` are one broker.
        assert_eq!(
            code(place(&[1, 1], &c, &[], 1, 2)),
            ResponseError::InvalidReplicationFactor
        );
    }

    #[test]
    fn fresh_cluster_is_round_robin() {
        let live = [3, 1, 2];
        let a = place(&live, &Load::default(), &[], 6, 2).unwrap();
        // Each round leads on every broker once.
        for round in a.chunks(3) {
            let leaders: BTreeSet<_> = round.iter().map(|r| r[0]).collect();
            assert_eq!(leaders.len(), 3);
        }
        for r in &a {
            assert_eq!(r.len(), 2);
            assert_ne!(r[0], r[1]);
        }
        assert_eq!(counts(&a, Load::replicas, &[1, 2, 3]), [4, 4, 4]);
        // The second round's followers differ from the first's.
        assert_ne!(a[0][1], a[3][1]);
    }

    #[test]
    fn load_of_other_topics_moves_the_start() {
        let live = [1, 2, 3, 4];
        let existing = place(&live, &Load::default(), &[], 2, 1).unwrap();
        assert_eq!(existing, [vec![1], vec![2]]);
        let cluster = Load::of(&existing);
        let a = place(&live, &cluster, &[], 2, 1).unwrap();
        assert_eq!(a, [vec![3], vec![4]]);
        let mut all = existing.clone();
        all.extend(a);
        assert_eq!(counts(&all, Load::leaders, &live), [1, 1, 1, 1]);
    }

    #[test]
    fn growing_a_topic_keeps_its_leaders_even() {
        let live = [1, 2, 3];
        let t = place(&live, &Load::default(), &[], 2, 3).unwrap();
        let cluster = Load::of(&t);
        let more = place(&live, &cluster, &t, 4, 3).unwrap();
        let mut all = t.clone();
        all.extend(more);
        assert_eq!(counts(&all, Load::leaders, &live), [2, 2, 2]);
        assert!(all
            .iter()
            .all(|r| r.iter().collect::<BTreeSet<_>>().len() == 3));
    }

    #[test]
    fn only_live_brokers_are_used() {
        // Broker 9 led partitions before it died: it is not in `live`.
        let t = vec![vec![9, 1], vec![9, 2]];
        let cluster = Load::of(&t);
        let more = place(&[1, 2], &cluster, &t, 3, 2).unwrap();
        assert!(more.iter().flatten().all(|b| [1, 2].contains(b)));
        let leaders = counts(&more, Load::leaders, &[1, 2]);
        assert!(leaders.iter().max().unwrap() - leaders.iter().min().unwrap() <= 1);
    }
}
