//! Untrusted `.index` / `.timeindex` bytes -> `OffsetIndex::decode` /
//! `TimeIndex::decode` with arbitrary limits. No panic; an accepted index
//! must be well formed, round-trip through `encode`, and its lookups
//! (`floor`, `floor_position`, `search_start`, `truncate_from`) must agree
//! with a linear scan of its entries.
//!
//! Input layout (so seeds are easy to write by hand):
//! `segment_size u64 | rel_limit u64 | probe seed u64 | index bytes...`
//! (big endian; missing bytes read as zero). Small limits are likelier
//! than huge ones: the top byte of each limit selects a scale.
#![no_main]

use libfuzzer_sys::fuzz_target;
use odradek_engine::index::{OffsetIndex, TimeIndex, OFFSET_ENTRY, TIME_ENTRY};

fn u64_at(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    for (i, x) in a.iter_mut().enumerate() {
        *x = b.get(at + i).copied().unwrap_or(0);
    }
    u64::from_be_bytes(a)
}

fn limit(raw: u64) -> u64 {
    match raw >> 62 {
        0 => raw & 0xffff,
        1 => raw & 0xffff_ffff,
        2 => (raw & 0xffff_ffff) + (1 << 32), // above any u32 field
        _ => raw,
    }
}

struct Probe(u64);
impl Probe {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

fn check_offset_index(ix: &OffsetIndex, bytes: &[u8], seg: u64, lim: u64, probes: &mut Probe) {
    let e = ix.entries();
    assert_eq!(e.len() * OFFSET_ENTRY, bytes.len());
    assert_eq!(ix.encode(), bytes, "offset index does not round-trip");
    assert_eq!(ix.len(), e.len());
    assert_eq!(ix.last(), e.last().copied());
    if let Some(&(_, p0)) = e.first() {
        assert_eq!(p0, 0, "first entry must be at position 0");
    }
    for w in e.windows(2) {
        assert!(
            w[0].0 < w[1].0 && w[0].1 < w[1].1,
            "entries not strictly increasing"
        );
    }
    for &(r, p) in e {
        assert!((r as u64) < lim && (p as u64) < seg);
    }
    // Looser limits accept it too.
    assert_eq!(
        OffsetIndex::decode(bytes, seg.saturating_add(1), lim.saturating_add(1)).as_ref(),
        Ok(ix)
    );

    // Probe entry values, their neighbours and random points.
    let mut xs: Vec<u32> = vec![0, u32::MAX];
    for &(r, _) in e.iter().take(16) {
        xs.extend([r, r.wrapping_sub(1), r.wrapping_add(1)]);
    }
    for _ in 0..8 {
        xs.push(probes.next() as u32);
    }
    for x in xs {
        let expect = e.iter().rev().find(|&&(r, _)| r <= x).copied();
        let got = ix.floor(x);
        assert_eq!(got, expect, "floor({x})");
        if let Some((r, _)) = got {
            assert!(r <= x);
        }
        let mut t = ix.clone();
        t.truncate_from(x);
        let kept: Vec<_> = e.iter().copied().filter(|&(r, _)| r < x).collect();
        assert_eq!(t.entries(), &kept[..], "truncate_from({x})");
    }
    let mut ps: Vec<(u64, u64)> = vec![(0, 0), (u64::MAX, 0)];
    for &(_, p) in e.iter().take(16) {
        ps.push((p as u64, 0));
        ps.push((p as u64 + 1, p as u64));
        ps.push((p as u64, (p as u64).saturating_sub(1)));
    }
    for _ in 0..8 {
        ps.push((probes.next() >> 28, probes.next() >> 30));
    }
    for (pos, after) in ps {
        let expect = e
            .iter()
            .rev()
            .find(|&&(_, p)| p as u64 <= pos)
            .map(|&(_, p)| p as u64)
            .filter(|&p| p > after);
        assert_eq!(
            ix.floor_position(pos, after),
            expect,
            "floor_position({pos}, {after})"
        );
    }
}

fn check_time_index(tx: &TimeIndex, bytes: &[u8], lim: u64, probes: &mut Probe) {
    let e = tx.entries();
    assert_eq!(e.len() * TIME_ENTRY, bytes.len());
    assert_eq!(tx.encode(), bytes, "time index does not round-trip");
    assert_eq!(tx.last(), e.last().copied());
    for w in e.windows(2) {
        assert!(
            w[0].0 < w[1].0 && w[0].1 < w[1].1,
            "entries not strictly increasing"
        );
    }
    for &(_, r) in e {
        assert!((r as u64) < lim);
    }
    assert_eq!(
        TimeIndex::decode(bytes, lim.saturating_add(1)).as_ref(),
        Ok(tx)
    );
    let mut ts: Vec<i64> = vec![i64::MIN, -1, 0, i64::MAX];
    for &(t, _) in e.iter().take(16) {
        ts.extend([t, t.wrapping_sub(1), t.wrapping_add(1)]);
    }
    for _ in 0..8 {
        ts.push(probes.next() as i64);
    }
    for t in ts {
        // The last entry strictly below the target.
        let expect = e.iter().rev().find(|&&(et, _)| et < t).map(|&(_, r)| r);
        let got = tx.search_start(t);
        assert_eq!(got, expect, "search_start({t})");
        if let Some(r) = got {
            let (et, _) = *e.iter().find(|&&(_, er)| er == r).unwrap();
            assert!(et < t);
        }
    }
    let mut rs: Vec<u32> = vec![0, u32::MAX];
    for &(_, r) in e.iter().take(16) {
        rs.extend([r, r.wrapping_add(1)]);
    }
    for r in rs {
        let mut t = tx.clone();
        t.truncate_from(r);
        let kept: Vec<_> = e.iter().copied().filter(|&(_, er)| er < r).collect();
        assert_eq!(t.entries(), &kept[..], "time truncate_from({r})");
    }
}

fuzz_target!(|data: &[u8]| {
    let seg = limit(u64_at(data, 0));
    let lim = limit(u64_at(data, 8));
    let mut probes = Probe(u64_at(data, 16) | 1);
    let bytes = data.get(24..).unwrap_or(&[]);

    match OffsetIndex::decode(bytes, seg, lim) {
        Ok(ix) => check_offset_index(&ix, bytes, seg, lim, &mut probes),
        Err(_) => assert!(bytes.len() % OFFSET_ENTRY != 0 || !bytes.is_empty()),
    }
    match TimeIndex::decode(bytes, lim) {
        Ok(tx) => check_time_index(&tx, bytes, lim, &mut probes),
        Err(_) => assert!(!bytes.is_empty()),
    }
});
