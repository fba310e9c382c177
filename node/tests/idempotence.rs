//! Idempotent producer over the wire: InitProducerId, sequence checks on
//! Produce, duplicates answered with their original offsets, across a
//! broker restart.

mod common;

use bytes::Bytes;
use common::{create_topic, start, Client};
use kafka_protocol::messages::*;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Record, TimestampType};
use kafka_protocol::ResponseError;

const TOPIC: &str = "idem";

/// InitProducerId: (error code, producer id, epoch).
fn init(c: &mut Client, version: i16, txn: Option<&str>, id: i64, epoch: i16) -> (i16, i64, i16) {
    let mut req = InitProducerIdRequest::default();
    req.transactional_id = txn.map(|t| TransactionalId(StrBytes::from_string(t.to_string())));
    req.transaction_timeout_ms = 60_000;
    req.producer_id = ProducerId(id);
    req.producer_epoch = epoch;
    let resp: InitProducerIdResponse = c.send(ApiKey::InitProducerId, version, &req);
    (resp.error_code, resp.producer_id.0, resp.producer_epoch)
}

/// One idempotent batch of `n` records from sequence `seq`.
fn idem_batch(pid: i64, epoch: i16, seq: i32, n: usize) -> Bytes {
    let records: Vec<Record> = (0..n)
        .map(|i| Record {
            transactional: false,
            control: false,
            delete_horizon: false,
            partition_leader_epoch: 0,
            producer_id: pid,
            producer_epoch: epoch,
            timestamp_type: TimestampType::Creation,
            offset: i as i64,
            sequence: seq + i as i32,
            timestamp: 1_700_000_000_000,
            key: None,
            value: Some(Bytes::from(format!("{pid}-{epoch}-{}", seq + i as i32))),
            headers: Default::default(),
        })
        .collect();
    common::encode_records(&records)
}

#[test]
fn idempotent_produce_dedups_fences_and_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = start(dir.path(), &[]);
    let mut c = Client::connect(server.local_addr);
    create_topic(&mut c, TOPIC, 1);

    // Fresh ids at epoch 0, every version served.
    let (err, pid, epoch) = init(&mut c, 4, None, -1, -1);
    assert_eq!((err, epoch), (0, 0));
    assert!(pid >= 0);
    let mut seen = vec![pid];
    for v in 0..=5 {
        let (err, other, epoch) = init(&mut c, v, None, -1, -1);
        assert_eq!((err, epoch), (0, 0), "v{v}");
        assert!(!seen.contains(&other), "v{v} reused producer id {other}");
        seen.push(other);
    }
    // No transactions.
    let txn = init(&mut c, 4, Some("tx-1"), -1, -1);
    assert_eq!(
        txn.0,
        ResponseError::TransactionalIdAuthorizationFailed.code()
    );
    assert_eq!(
        init(&mut c, 4, Some(""), -1, -1).0,
        ResponseError::InvalidRequest.code()
    );

    // Sequences 0..10 in batches of two.
    for k in 0..5 {
        assert_eq!(
            c.produce(TOPIC, 0, -1, idem_batch(pid, 0, 2 * k, 2)),
            (0, 2 * k as i64)
        );
    }
    assert_eq!(c.end_offset(TOPIC, 0).1, 10);
    // A retry of an earlier batch: success, its original offset, nothing written.
    assert_eq!(c.produce(TOPIC, 0, -1, idem_batch(pid, 0, 4, 2)), (0, 4));
    assert_eq!(c.produce(TOPIC, 0, -1, idem_batch(pid, 0, 8, 2)), (0, 8));
    assert_eq!(c.end_offset(TOPIC, 0).1, 10);
    // A gap.
    assert_eq!(
        c.produce(TOPIC, 0, -1, idem_batch(pid, 0, 20, 1)).0,
        ResponseError::OutOfOrderSequenceNumber.code()
    );
    assert_eq!(c.end_offset(TOPIC, 0).1, 10);

    // KIP-360: the same id with the next epoch, which starts at sequence 0.
    assert_eq!(init(&mut c, 3, None, pid, 0), (0, pid, 1));
    assert_eq!(c.produce(TOPIC, 0, -1, idem_batch(pid, 1, 0, 3)), (0, 10));
    assert_eq!(
        c.produce(TOPIC, 0, -1, idem_batch(pid, 0, 10, 1)).0,
        ResponseError::InvalidProducerEpoch.code()
    );
    // An id this broker never gave out gets a new one, not a bump.
    let (err, fresh, epoch) = init(&mut c, 3, None, 987_654, 3);
    assert_eq!((err, epoch), (0, 0));
    assert!(fresh != 987_654 && !seen.contains(&fresh));
    seen.push(fresh);
    // Non-idempotent produce is unaffected.
    assert_eq!(c.produce(TOPIC, 0, -1, common::batch(&["plain"])), (0, 13));
    drop(c);
    server.shutdown();

    // After a restart: the retry is still a duplicate, the next sequence
    // follows, and new producer ids are new.
    let server = start(dir.path(), &[]);
    let mut c = Client::connect(server.local_addr);
    assert_eq!(c.end_offset(TOPIC, 0).1, 14);
    assert_eq!(c.produce(TOPIC, 0, -1, idem_batch(pid, 1, 0, 3)), (0, 10));
    assert_eq!(c.end_offset(TOPIC, 0).1, 14);
    assert_eq!(c.produce(TOPIC, 0, -1, idem_batch(pid, 1, 3, 1)), (0, 14));
    let (err, after, _) = init(&mut c, 4, None, -1, -1);
    assert_eq!(err, 0);
    assert!(
        !seen.contains(&after),
        "producer id {after} reused after restart"
    );
    server.shutdown();
}
