//! Helpers shared by the fuzz targets.

use bytes::BytesMut;
use odradek_engine::batch::{self, BatchBuilder, Record};

/// A small producer batch described by a few fuzzer-chosen numbers.
#[derive(Debug, Clone, Copy, arbitrary::Arbitrary)]
pub struct BatchSpec {
    /// Records in the batch (1..=8).
    pub records: u8,
    /// Value length of each record (capped by the caller).
    pub value_len: u16,
    /// Base timestamp relative to "now".
    pub ts_delta: i16,
    /// A byte to fill values with (so batches differ).
    pub fill: u8,
}

impl BatchSpec {
    pub fn build(&self, now_ms: u64, max_value: usize) -> BytesMut {
        let n = 1 + (self.records % 8) as usize;
        let len = self.value_len as usize % (max_value + 1);
        let mut bb = BatchBuilder::new(now_ms as i64 + self.ts_delta as i64);
        for i in 0..n {
            let value = vec![self.fill.wrapping_add(i as u8); len];
            bb.push(&Record {
                key: (i % 2 == 1).then(|| vec![self.fill]),
                value: Some(value),
                headers: Vec::new(),
                timestamp_delta: i as i64,
            });
        }
        let b = bb.build();
        debug_assert!(batch::validate(&b, usize::MAX, batch::Strictness::Produce).is_ok());
        b
    }
}
