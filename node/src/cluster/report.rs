//! When a partition's leader reports its leader epoch and ISR to the
//! controller ([`Command::PartitionState`], Kafka's AlterPartition). Pure:
//! the caller polls it with the clock, the committed state and what its
//! led replicas say, and proposes the commands it returns.
//!
//! A report goes out when what the leader sees differs from the record;
//! at most one per partition every `min_interval_ms` (a flapping ISR does
//! not flood the controller: the latest view goes out once the interval
//! has passed), and again after `retry_ms` if it still is not recorded
//! (a proposal lost with a controller leader change).

use std::collections::HashMap;

use super::command::{BrokerId, Command};
use super::state::{ClusterState, LeaderAndIsr};

/// What a local leader replica says of its partition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Led {
    pub topic: String,
    pub partition: i32,
    /// The Raft term.
    pub epoch: u64,
    /// The leader's ISR (it included).
    pub isr: Vec<BrokerId>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReportConfig {
    pub min_interval_ms: u64,
    pub retry_ms: u64,
}

impl Default for ReportConfig {
    fn default() -> Self {
        Self {
            min_interval_ms: 1_000,
            retry_ms: 3_000,
        }
    }
}

#[derive(Debug)]
pub struct Reporter {
    me: BrokerId,
    cfg: ReportConfig,
    /// Per led partition: when the last report went out, and what it said.
    sent: HashMap<(String, i32), (u64, LeaderAndIsr)>,
}

impl Reporter {
    pub fn new(me: BrokerId, cfg: ReportConfig) -> Self {
        Self {
            me,
            cfg,
            sent: HashMap::new(),
        }
    }

    /// The reports to propose now. `led` lists the partitions this broker
    /// leads; partitions it no longer leads are forgotten.
    pub fn poll(&mut self, now_ms: u64, state: &ClusterState, led: &[Led]) -> Vec<Command> {
        self.sent
            .retain(|(t, p), _| led.iter().any(|l| l.topic == *t && l.partition == *p));
        let mut out = Vec::new();
        for l in led {
            let Some(topic) = state.topic(&l.topic) else {
                continue;
            };
            let mut isr = l.isr.clone();
            isr.sort_unstable();
            isr.dedup();
            let want = LeaderAndIsr {
                leader: self.me,
                epoch: l.epoch,
                isr,
            };
            if topic.leader_and_isr(l.partition) == Some(&want) {
                continue;
            }
            let cmd = Command::PartitionState {
                name: l.topic.clone(),
                id: topic.meta.id,
                partition: l.partition,
                leader: want.leader,
                epoch: want.epoch,
                isr: want.isr.clone(),
            };
            // Refused on the committed state (a newer leader is recorded,
            // the topic changed): not proposed; the next poll looks again.
            if let Err(e) = state.check(&cmd) {
                tracing::debug!(topic = %l.topic, partition = l.partition, error = %e, "partition state not reported");
                continue;
            }
            let key = (l.topic.clone(), l.partition);
            let due = match self.sent.get(&key) {
                None => true,
                Some((at, last)) => {
                    let since = now_ms.saturating_sub(*at);
                    (*last != want && since >= self.cfg.min_interval_ms)
                        || since >= self.cfg.retry_ms
                }
            };
            if due {
                self.sent.insert(key, (now_ms, want));
                out.push(cmd);
            }
        }
        out
    }

    /// The proposal of `partition` did not get out: the next poll may try
    /// again at once.
    pub fn not_sent(&mut self, topic: &str, partition: i32) {
        self.sent.remove(&(topic.to_string(), partition));
    }
}

/// What the local replica of a partition knows (none on a broker that
/// holds no replica of it).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Local {
    pub leads: bool,
    pub leader: Option<BrokerId>,
    pub term: u64,
    /// The ISR; known only while leading.
    pub isr: Vec<BrokerId>,
}

/// A partition's leader, epoch and ISR as Metadata reports them.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Seen {
    pub leader: Option<BrokerId>,
    pub epoch: u64,
    pub isr: Vec<BrokerId>,
}

/// Combine the local Raft view with the controller's record by epoch. A
/// leader's own view is the freshest. Elsewhere the record, unless the
/// local replica knows a newer term (a new leader not reported yet: its
/// ISR is not known here, so just the leader), or knows that the recorded
/// leader of this very term is not leading (this broker is it and
/// stepped down, or it follows another).
pub fn seen(me: BrokerId, local: Option<&Local>, record: Option<&LeaderAndIsr>) -> Seen {
    if let Some(l) = local.filter(|l| l.leads) {
        return Seen {
            leader: Some(me),
            epoch: l.term,
            isr: l.isr.clone(),
        };
    }
    let from_record = |r: &LeaderAndIsr| Seen {
        leader: Some(r.leader),
        epoch: r.epoch,
        isr: r.isr.clone(),
    };
    match (local, record) {
        (None, Some(r)) => from_record(r),
        (Some(l), Some(r))
            if r.epoch > l.term
                || (r.epoch == l.term
                    && match l.leader {
                        Some(x) => x == r.leader,
                        None => r.leader != me,
                    }) =>
        {
            from_record(r)
        }
        (Some(l), _) => Seen {
            leader: l.leader,
            epoch: l.term,
            isr: l.leader.into_iter().collect(),
        },
        (None, None) => Seen::default(),
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use uuid::Uuid;

    use super::*;

    fn state() -> ClusterState {
        let mut s = ClusterState::default();
        for id in 1..=3 {
            s.apply(&Command::RegisterBroker {
                id,
                host: "h".into(),
                port: 1,
                rack: None,
                incarnation: Uuid::from_u128(id as u128),
            })
            .unwrap();
        }
        s.apply(&Command::CreateTopic {
            name: "t".into(),
            id: Uuid::from_u128(7),
            configs: BTreeMap::new(),
            replicas: vec![vec![1, 2, 3], vec![2, 3, 1]],
        })
        .unwrap();
        s
    }

    fn led(partition: i32, epoch: u64, isr: &[BrokerId]) -> Led {
        Led {
            topic: "t".into(),
            partition,
            epoch,
            isr: isr.to_vec(),
        }
    }

    fn isr_of(cmds: &[Command]) -> Vec<Vec<BrokerId>> {
        cmds.iter()
            .map(|c| match c {
                Command::PartitionState { isr, .. } => isr.clone(),
                _ => panic!("{c:?}"),
            })
            .collect()
    }

    #[test]
    fn reports_changes_once_and_retries_until_recorded() {
        let mut s = state();
        let mut r = Reporter::new(1, ReportConfig::default());
        let first = r.poll(0, &s, &[led(0, 2, &[3, 1, 2])]);
        assert_eq!(isr_of(&first), [vec![1, 2, 3]]);
        // Not recorded yet: not proposed again before the retry interval.
        assert!(r.poll(500, &s, &[led(0, 2, &[1, 2, 3])]).is_empty());
        assert_eq!(r.poll(3_000, &s, &[led(0, 2, &[1, 2, 3])]), first);
        s.apply(&first[0]).unwrap();
        assert!(r.poll(9_000, &s, &[led(0, 2, &[1, 2, 3])]).is_empty());
    }

    #[test]
    fn a_flapping_isr_is_reported_at_most_once_an_interval() {
        let mut s = state();
        let mut r = Reporter::new(1, ReportConfig::default());
        let mut sent = Vec::new();
        for step in 0..20u64 {
            let isr: &[BrokerId] = if step % 2 == 0 { &[1, 2] } else { &[1, 2, 3] };
            for c in r.poll(step * 250, &s, &[led(0, 2, isr)]) {
                s.apply(&c).unwrap();
                sent.push(c);
            }
        }
        // 5 s of changes every 250 ms: at most one report a second.
        assert!((2..=5).contains(&sent.len()), "{sent:?}");
        // Once it settles, the last view is recorded.
        let last = r.poll(10_000, &s, &[led(0, 2, &[2, 1])]);
        for c in &last {
            s.apply(c).unwrap();
        }
        let t = s.topic("t").unwrap();
        assert_eq!(t.leader_and_isr(0).map(|l| l.isr.clone()), Some(vec![1, 2]));
    }

    #[test]
    fn deposed_leaders_and_unknown_partitions_do_not_report() {
        let mut s = state();
        s.apply(&Command::PartitionState {
            name: "t".into(),
            id: Uuid::from_u128(7),
            partition: 0,
            leader: 2,
            epoch: 5,
            isr: vec![2],
        })
        .unwrap();
        let mut r = Reporter::new(1, ReportConfig::default());
        // This broker's view is of epoch 4: a newer leader is recorded.
        assert!(r.poll(0, &s, &[led(0, 4, &[1, 2])]).is_empty());
        assert!(r.poll(0, &s, &[led(9, 4, &[1])]).is_empty());
        let other = Led {
            topic: "gone".into(),
            ..led(0, 4, &[1])
        };
        assert!(r.poll(0, &s, &[other]).is_empty());
        // Elected in epoch 6: reported at once; a lost proposal is retried
        // on the next poll.
        assert_eq!(r.poll(10, &s, &[led(0, 6, &[1])]).len(), 1);
        r.not_sent("t", 0);
        assert_eq!(r.poll(20, &s, &[led(0, 6, &[1])]).len(), 1);
    }

    #[test]
    fn metadata_combines_the_local_view_and_the_record_by_epoch() {
        let rec = LeaderAndIsr {
            leader: 2,
            epoch: 5,
            isr: vec![1, 2, 3],
        };
        let full = Seen {
            leader: Some(2),
            epoch: 5,
            isr: vec![1, 2, 3],
        };
        let follower = |leader, term| Local {
            leads: false,
            leader,
            term,
            isr: vec![],
        };
        // Not a replica: the record, or nothing.
        assert_eq!(seen(1, None, Some(&rec)), full);
        assert_eq!(seen(1, None, None), Seen::default());
        // A follower of the recorded leader, or one behind it.
        assert_eq!(seen(1, Some(&follower(Some(2), 5)), Some(&rec)), full);
        assert_eq!(seen(1, Some(&follower(None, 3)), Some(&rec)), full);
        assert_eq!(seen(1, Some(&follower(None, 5)), Some(&rec)), full);
        // A newer term than recorded: its leader, whose ISR is not known.
        assert_eq!(
            seen(1, Some(&follower(Some(3), 6)), Some(&rec)),
            Seen {
                leader: Some(3),
                epoch: 6,
                isr: vec![3]
            }
        );
        assert_eq!(
            seen(1, Some(&follower(None, 6)), Some(&rec)),
            Seen {
                leader: None,
                epoch: 6,
                isr: vec![]
            }
        );
        // The recorded leader itself, stepped down in the same term.
        assert_eq!(seen(2, Some(&follower(None, 5)), Some(&rec)).leader, None);
        // The leader's own view wins, even over a record of its own.
        let leading = Local {
            leads: true,
            leader: Some(2),
            term: 5,
            isr: vec![2, 3],
        };
        assert_eq!(
            seen(2, Some(&leading), Some(&rec)),
            Seen {
                leader: Some(2),
                epoch: 5,
                isr: vec![2, 3]
            }
        );
    }
}
