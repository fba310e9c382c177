//! Writes the hand-made part of the seed corpus (fuzz/corpus/) for the
//! targets whose input is raw bytes: `cargo run --example seeds` (in fuzz/).
//! The structured targets (segment_recovery, log_ops) take `arbitrary`
//! inputs; their seeds are small inputs picked from a minimized fuzzing
//! corpus (see docs/fuzzing.md).

use std::fs;
use std::path::Path;

use odradek_engine::batch::{assign, sample_batch, BatchBuilder, Record, ATTR_TRANSACTIONAL};
use odradek_engine::index::{OffsetIndex, TimeIndex};

fn write(target: &str, name: &str, bytes: &[u8]) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("corpus")
        .join(target);
    fs::create_dir_all(&dir).unwrap();
    fs::write(dir.join(name), bytes).unwrap();
}

fn with_mode(mode: u8, b: &[u8]) -> Vec<u8> {
    let mut v = vec![mode];
    v.extend_from_slice(b);
    v
}

fn main() {
    // batch_validate: mode byte + record set.
    let one = sample_batch(1, 0, 1_000);
    write("batch_validate", "one-empty-record", &with_mode(0, &one));
    let mut two = sample_batch(2, 8, 1_000).to_vec();
    two.extend_from_slice(&sample_batch(3, 4, 2_000));
    write("batch_validate", "two-batches", &with_mode(0, &two));
    let mut bb = BatchBuilder::new(5_000)
        .producer(42, 1, 7)
        .attributes(ATTR_TRANSACTIONAL);
    bb.push(&Record {
        key: Some(b"key".to_vec()),
        value: None,
        headers: vec![("h".into(), Some(b"v".to_vec())), ("n".into(), None)],
        timestamp_delta: 3,
    });
    bb.value(b"second");
    let mut txn = bb.build();
    assign(&mut txn, 77, 4);
    write(
        "batch_validate",
        "transactional-assigned",
        &with_mode(2, &txn),
    );
    // A compacted-looking batch (count below lastOffsetDelta + 1); mode 1 re-CRCs it.
    let mut compacted = sample_batch(2, 4, 0).to_vec();
    compacted[23..27].copy_from_slice(&5i32.to_be_bytes());
    write(
        "batch_validate",
        "count-below-delta-recrc",
        &with_mode(1, &compacted),
    );
    write(
        "batch_validate",
        "truncated",
        &with_mode(0, &two[..two.len() - 5]),
    );

    // index_load: segment_size u64 | rel_limit u64 | probe seed u64 | entries.
    let head = |seg: u64, lim: u64| {
        let mut v = seg.to_be_bytes().to_vec();
        v.extend_from_slice(&lim.to_be_bytes());
        v.extend_from_slice(&0x1234_5678_9abc_def1u64.to_be_bytes());
        v
    };
    let mut ix = OffsetIndex::default();
    ix.push(0, 0);
    ix.push(10, 4096);
    ix.push(25, 9000);
    let mut s = head(10_000, 30);
    s.extend_from_slice(&ix.encode());
    write("index_load", "offset-index-3", &s);
    let mut tx = TimeIndex::default();
    tx.push(100, 0);
    tx.push(200, 5);
    let mut s = head(10_000, 30);
    s.extend_from_slice(&tx.encode());
    write("index_load", "time-index-2", &s);
    // 24 bytes: decodes as three offset entries and two time entries.
    let mut six = OffsetIndex::default();
    for i in 0..3 {
        six.push(i * 3, i * 100);
    }
    let mut s = head(1_000, 1_000);
    s.extend_from_slice(&six.encode());
    write("index_load", "both-24", &s);
    write("index_load", "empty", &head(0, 0));
    // compact_batch: mode byte + one stored batch of keyed records (with a
    // tombstone and a keyless record), uncompressed and in every codec.
    for codec in 0..5i16 {
        let mut bb = BatchBuilder::new(1_000).attributes(codec);
        for (k, v) in [
            (Some("a"), Some("1")),
            (Some("b"), None),
            (None, Some("x")),
            (Some("a"), Some("2")),
        ] {
            bb.push(&Record {
                key: k.map(|k| k.as_bytes().to_vec()),
                value: v.map(|v| v.as_bytes().to_vec()),
                ..Record::default()
            });
        }
        let mut b = bb.build().to_vec();
        let body = odradek_engine::codec::compress(codec, &b[61..]).unwrap();
        b.truncate(61);
        b.extend_from_slice(&body);
        let len = (b.len() - 12) as i32;
        b[8..12].copy_from_slice(&len.to_be_bytes());
        assign(&mut b, 10, 0);
        odradek_engine::batch::set_crc(&mut b);
        write(
            "compact_batch",
            &format!("keyed-codec-{codec}"),
            &with_mode(1 | ((codec as u8) << 1), &b),
        );
    }
    println!("seed corpus written");
}
