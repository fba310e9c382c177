//! Three replicas of a partition in one process, each over a real
//! partition log on disk (io_uring), wired by an in-process router: the
//! group driver (`replication::group`) writes, syncs, truncates and
//! recovers the Raft log for real. Leader stopped and restarted from its
//! files; nothing acknowledged with acks=all is lost.

use std::cell::{Cell, RefCell};
use std::collections::HashMap;
use std::rc::Rc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use odradek_engine::batch::{sample_batch, BatchBuilder, BatchHeader};
use odradek_engine::io::uring::UringStorage;
use odradek_engine::log::{LogConfig, PartitionLog};
use odradek_engine::shard::Log;
use odradek_node::replication::group::{self, GroupHandle, Leadership, Outbox};
use odradek_node::replication::replica::Acks;
use odradek_node::replication::{ReplicaConfig, Role};
use raft::eraftpb::Message;

type Routes = Rc<RefCell<HashMap<u64, GroupHandle>>>;

/// Delivers messages between the replicas unless they are cut off.
struct Router(Routes, Rc<Cell<bool>>);

impl Outbox for Router {
    fn send(&self, msgs: Vec<Message>) {
        if self.1.get() {
            return;
        }
        let routes = self.0.borrow();
        for m in msgs {
            if let Some(h) = routes.get(&m.to) {
                h.step(m);
            }
        }
    }
}

const TICK: Duration = Duration::from_millis(20);

async fn open(dir: &std::path::Path) -> Rc<Log> {
    PartitionLog::open(UringStorage, dir, LogConfig::default())
        .await
        .expect("open log")
        .0
}

async fn start(id: u64, log: Rc<Log>, routes: &Routes) -> GroupHandle {
    start_with(id, log, routes, TICK, Rc::default()).await
}

async fn start_with(
    id: u64,
    log: Rc<Log>,
    routes: &Routes,
    tick: Duration,
    cut: Rc<Cell<bool>>,
) -> GroupHandle {
    let h = group::start(
        ReplicaConfig::new(id),
        vec![1, 2, 3],
        log,
        Rc::new(Router(routes.clone(), cut)),
        tick,
    )
    .await
    .expect("start group");
    routes.borrow_mut().insert(id, h.clone());
    h
}

async fn leader(routes: &Routes, not: Option<u64>) -> (u64, GroupHandle) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let found = routes
            .borrow()
            .iter()
            .find(|(id, h)| Some(**id) != not && h.status().role == Some(Role::Leader))
            .map(|(id, h)| (*id, h.clone()));
        if let Some(f) = found {
            return f;
        }
        assert!(Instant::now() < deadline, "no leader elected");
        compio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Propose `b` with acks=all and min.insync.replicas 2, as a client
/// would: a new leader admits followers to the ISR once they answer it,
/// so its first proposals may see NOT_ENOUGH_REPLICAS (retriable).
async fn propose_all(h: &GroupHandle, b: &Bytes) -> (u64, u64) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        match h.propose(b.clone(), Acks::All, 2).await {
            Ok(r) => return r,
            Err(odradek_node::replication::ProduceError::NotEnoughReplicas { .. })
                if Instant::now() < deadline =>
            {
                compio::time::sleep(Duration::from_millis(20)).await
            }
            Err(e) => panic!("leader refused acks=all: {e}"),
        }
    }
}

/// Every batch of a log below its visible end: (offset, record bytes).
async fn contents(log: &Rc<Log>) -> Vec<(u64, Bytes)> {
    let batches = group::read_batches(log, log.log_start_offset(), log.visible_end())
        .await
        .unwrap();
    batches
        .into_iter()
        .filter(|(_, _, b)| !BatchHeader::parse(b).unwrap().is_control())
        .map(|(o, _, b)| (o, b.slice(61..)))
        .collect()
}

#[test]
fn acks_all_survives_stopping_and_restarting_the_leader() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = compio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let routes: Routes = Rc::default();
        let mut logs = HashMap::new();
        for id in 1..=3u64 {
            let log = open(&tmp.path().join(format!("r{id}"))).await;
            logs.insert(id, log.clone());
            start(id, log, &routes).await;
        }
        let (first, h) = leader(&routes, None).await;
        let mut acked = Vec::new();
        for i in 0..50usize {
            let b = sample_batch(1 + i % 4, 20, i as i64).freeze();
            let (base, last) = propose_all(&h, &b).await;
            assert_eq!(last - base, (i % 4) as u64);
            acked.push((base, b.slice(61..)));
        }
        // Offsets go up, with one-offset gaps only where Raft's own entries
        // (the leader's first, empty entry) sit.
        for w in acked.windows(2) {
            assert!(w[1].0 > w[0].0);
        }
        // A follower refuses proposals, naming the leader.
        let (fid, fh) = routes
            .borrow()
            .iter()
            .find(|(id, _)| **id != first)
            .map(|(id, h)| (*id, h.clone()))
            .unwrap();
        let e = fh
            .propose(sample_batch(1, 1, 0).freeze(), Acks::All, 1)
            .await
            .unwrap_err();
        assert_eq!(
            e,
            odradek_node::replication::ProduceError::NotLeader {
                leader: Some(first)
            },
            "follower {fid}"
        );

        // Stop the leader; the others elect a new one and take writes.
        let t1 = h.leadership();
        assert!(t1.leads);
        assert_eq!(
            fh.leadership(),
            Leadership {
                epoch: t1.epoch,
                leads: false
            }
        );
        h.stop();
        routes.borrow_mut().remove(&first);
        let (second, h2) = leader(&routes, Some(first)).await;
        assert_ne!(second, first);
        assert!(h2.status().term > 1);
        for i in 0..20usize {
            let b = sample_batch(2, 20, i as i64).freeze();
            let (base, _) = propose_all(&h2, &b).await;
            acked.push((base, b.slice(61..)));
        }

        // Leader epochs (KIP-101): the new leader's epoch is its term; the
        // old epoch ends where the new leader's first (empty) entry starts.
        let t2 = h2.leadership();
        assert!(t2.leads && t2.epoch > t1.epoch, "{t1:?} then {t2:?}");
        let end_of_t1 = acked[49].0 + 2; // batch 49 has 2 records
        assert_eq!(acked[50].0, end_of_t1 + 1, "the new leader's entry first");
        let a = h2.epochs(Some(t1.epoch), Some(acked[10].0)).await.unwrap();
        assert_eq!(a.leadership, t2);
        assert_eq!(a.end, Some((t1.epoch, end_of_t1)));
        assert_eq!(a.at_offset, Some(t1.epoch));
        // Epochs between the two without entries answer the older one.
        for e in t1.epoch + 1..t2.epoch {
            let a = h2.epochs(Some(e), None).await.unwrap();
            assert_eq!(a.end, Some((t1.epoch, end_of_t1)), "epoch {e}");
        }
        let log_end = h2.status().log_end;
        let a = h2.epochs(Some(t2.epoch), Some(acked[50].0)).await.unwrap();
        assert_eq!(a.end, Some((t2.epoch, log_end)));
        assert_eq!(a.at_offset, Some(t2.epoch));
        let a = h2.epochs(Some(t2.epoch + 1), Some(log_end)).await.unwrap();
        assert_eq!(a.end, None, "an epoch newer than the log's is UNDEFINED");
        assert_eq!(
            a.at_offset,
            Some(t2.epoch),
            "the log end is the current epoch's"
        );

        // Restart the old leader from its files: it recovers, catches up.
        let old = logs.remove(&first).unwrap();
        old.close().await.unwrap();
        drop(old);
        let log = open(&tmp.path().join(format!("r{first}"))).await;
        logs.insert(first, log.clone());
        start(first, log, &routes).await;
        let want_end = h2.status().high_watermark;
        let deadline = Instant::now() + Duration::from_secs(20);
        while logs.values().any(|l| l.visible_end() < want_end) {
            assert!(Instant::now() < deadline, "replicas did not catch up");
            compio::time::sleep(Duration::from_millis(10)).await;
        }
        let (_, h3) = leader(&routes, None).await;
        assert_eq!(
            h3.status().isr.len(),
            3,
            "all back in sync: {:?}",
            h3.status()
        );
        for (id, log) in &logs {
            let got = contents(log).await;
            for (off, rec) in &acked {
                assert!(
                    got.iter().any(|(o, r)| o == off && r == rec),
                    "replica {id}: acknowledged batch at {off} missing"
                );
            }
        }
        // The restarted replica's log agrees on the epochs.
        let back = routes.borrow().get(&first).cloned().unwrap();
        let a = back
            .epochs(Some(t1.epoch), Some(acked[50].0))
            .await
            .unwrap();
        assert_eq!(a.end, Some((t1.epoch, end_of_t1)));
        assert_eq!(a.at_offset, Some(t2.epoch));
        for h in routes.borrow().values() {
            h.stop();
        }
    });
}

/// An idempotent producer's retry of a batch the leader has written but
/// not committed is answered like Kafka answers it: once the original
/// commits, with the original's offsets (not written twice, and not an
/// error that would make a client bump its epoch and send it again).
#[test]
fn a_retry_of_an_uncommitted_batch_waits_for_the_original_to_commit() {
    let tmp = tempfile::tempdir().unwrap();
    let rt = compio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let routes: Routes = Rc::default();
        let cut: Rc<Cell<bool>> = Rc::default();
        // Slow ticks: the leader keeps its term while cut off for a moment.
        let tick = Duration::from_millis(100);
        let mut logs = Vec::new();
        for id in 1..=3u64 {
            let log = open(&tmp.path().join(format!("r{id}"))).await;
            logs.push(log.clone());
            start_with(id, log, &routes, tick, cut.clone()).await;
        }
        let (_, h) = leader(&routes, None).await;
        let batch = |seq: i32| {
            let mut bb = BatchBuilder::new(1_000).producer(42, 0, seq);
            bb.value(format!("v{seq}").as_bytes());
            bb.build().freeze()
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        let first = loop {
            match h.propose(batch(0), Acks::All, 2).await {
                Ok(r) => break r,
                Err(_) if Instant::now() < deadline => {
                    compio::time::sleep(Duration::from_millis(20)).await
                }
                Err(e) => panic!("first batch refused: {e}"),
            }
        };
        cut.set(true);
        let answers: Rc<RefCell<Vec<_>>> = Rc::default();
        for _ in 0..2 {
            let (h, answers) = (h.clone(), answers.clone());
            compio::runtime::spawn(async move {
                let r = h.propose(batch(1), Acks::All, 2).await;
                answers.borrow_mut().push(r);
            })
            .detach();
            compio::time::sleep(Duration::from_millis(100)).await;
        }
        assert!(
            answers.borrow().is_empty(),
            "answered before the batch could commit: {:?}",
            answers.borrow()
        );
        cut.set(false);
        let deadline = Instant::now() + Duration::from_secs(10);
        while answers.borrow().len() < 2 {
            assert!(
                Instant::now() < deadline,
                "not answered: {:?}",
                answers.borrow()
            );
            compio::time::sleep(Duration::from_millis(10)).await;
        }
        let got = answers.borrow().clone();
        let want = Ok((first.1 + 1, first.1 + 1));
        assert_eq!(
            got,
            vec![want.clone(), want],
            "both answered with the one offset"
        );
        // Written once: the next batch follows it directly.
        let next = h.propose(batch(2), Acks::All, 2).await.expect("next batch");
        assert_eq!(next, (first.1 + 2, first.1 + 2));
        for h in routes.borrow().values() {
            h.stop();
        }
    });
}
