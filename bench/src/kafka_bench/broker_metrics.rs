//! The broker's own view of Produce latency, from an Odradek broker's
//! Prometheus endpoint (`odradek_request_duration_seconds`), scraped at the
//! end of the warm-up and at the end of the run.
//!
//! The client's produce→ack latency holds the client (generator, queue,
//! its threads' wake-ups), the network and the broker. The broker's
//! histogram holds only the time from a request read to its answer
//! queued, so the two side by side tell where a tail comes from. Its
//! buckets are coarse, so percentiles are upper bounds (the bucket's `le`).

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

use crate::Result;

/// The histogram this reads, and the API whose series it sums (all shards).
const METRIC: &str = "odradek_request_duration_seconds_bucket{";
const API: &str = "api=\"Produce\"";
/// A scrape larger than this is not a metrics page.
const MAX_BODY: u64 = 16 << 20;

/// Cumulative counts per upper bound (seconds; `f64::INFINITY` for `+Inf`),
/// summed over the broker's shards, in ascending `le`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Buckets(Vec<(f64, u64)>);

/// What the run added to the broker's Produce histogram.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BrokerLatency {
    pub requests: u64,
    /// Upper bounds in ms: the smallest bucket holding the percentile;
    /// `None` past the last finite bucket.
    pub p50_le_ms: Option<f64>,
    pub p90_le_ms: Option<f64>,
    pub p99_le_ms: Option<f64>,
    pub p99_9_le_ms: Option<f64>,
    /// (upper bound in ms, share of requests at or below it), finite bounds.
    pub cumulative: Vec<(f64, f64)>,
}

/// What the broker's disk did after the warm-up: its fdatasyncs and its
/// writes of appended sets (counters of an Odradek broker's metrics).
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct BrokerDisk {
    pub fsyncs: u64,
    pub log_writes: u64,
    /// Record sets those writes carried: more than `log_writes` is write
    /// combining.
    pub log_sets_written: u64,
    /// Writes made while an fdatasync of their segment ran, inline on the
    /// shard thread and through io-wq, and the times a shard switched such
    /// writes to io-wq (`None`: a broker without these counters).
    pub writes_during_sync_inline: Option<u64>,
    pub writes_during_sync_io_wq: Option<u64>,
    pub sync_write_handoffs: Option<u64>,
}

/// The sum of the series of counter `name` on `page` (with `label`, `k="v"`,
/// only those whose labels include it); `None` if it has none.
fn counter(page: &str, name: &str, label: Option<&str>) -> Option<u64> {
    let mut sum = None;
    for line in page.lines() {
        let Some(rest) = line.strip_prefix(name) else {
            continue;
        };
        let value = match rest.as_bytes().first() {
            Some(b' ') if label.is_none() => rest,
            Some(b'{') => match rest[1..].split_once('}') {
                Some((labels, v)) if label.is_none_or(|l| labels.split(',').any(|x| x == l)) => v,
                _ => continue,
            },
            _ => continue,
        };
        if let Ok(n) = value.trim().parse::<u64>() {
            // counts come from another process: add without overflow
            sum = Some(sum.unwrap_or(0u64).saturating_add(n));
        }
    }
    sum
}

impl BrokerDisk {
    /// What the counters of `after` added to those of `before`; `None` if
    /// one is missing or went back (the broker restarted).
    pub fn between(before: &str, after: &str) -> Option<Self> {
        let diff =
            |name, label| counter(after, name, label)?.checked_sub(counter(before, name, label)?);
        const DURING_SYNC: &str = "odradek_log_writes_during_sync_total";
        Some(Self {
            fsyncs: diff("odradek_fsyncs_total", None)?,
            log_writes: diff("odradek_log_writes_total", None)?,
            log_sets_written: diff("odradek_log_sets_written_total", None)?,
            writes_during_sync_inline: diff(DURING_SYNC, Some("path=\"inline\"")),
            writes_during_sync_io_wq: diff(DURING_SYNC, Some("path=\"io_wq\"")),
            sync_write_handoffs: diff("odradek_log_sync_write_handoffs_total", None),
        })
    }
}

/// GET /metrics from `addr` (plain HTTP, as the broker serves it).
pub fn scrape(addr: &str) -> Result<String> {
    let sock = addr
        .to_socket_addrs()?
        .next()
        .ok_or_else(|| format!("no address for {addr}"))?;
    let mut s = TcpStream::connect_timeout(&sock, Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET /metrics HTTP/1.0\r\nHost: odradek-bench\r\n\r\n")?;
    let mut page = String::new();
    s.take(MAX_BODY).read_to_string(&mut page)?;
    let (head, body) = page
        .split_once("\r\n\r\n")
        .ok_or_else(|| format!("{addr}: not an HTTP answer"))?;
    if !head.starts_with("HTTP/1.1 200") && !head.starts_with("HTTP/1.0 200") {
        let status = head.lines().next().unwrap_or("");
        return Err(format!("{addr}/metrics: {status}").into());
    }
    Ok(body.to_string())
}

impl Buckets {
    /// The Produce series of a metrics page; empty if it has none.
    pub fn parse(page: &str) -> Self {
        // keyed by the bound's bits: a page may hold many series
        let mut by_le: std::collections::HashMap<u64, (f64, u64)> = Default::default();
        for line in page.lines() {
            let Some(rest) = line.strip_prefix(METRIC) else {
                continue;
            };
            let Some((labels, value)) = rest.split_once('}') else {
                continue;
            };
            if !labels.split(',').any(|l| l == API) {
                continue;
            }
            let le = labels
                .split(',')
                .find_map(|l| l.strip_prefix("le=\""))
                .and_then(|l| l.strip_suffix('"'));
            let le = match le {
                Some("+Inf") => f64::INFINITY,
                Some(x) => match x.parse::<f64>() {
                    Ok(x) => x,
                    Err(_) => continue,
                },
                None => continue,
            };
            let Ok(n) = value.trim().parse::<u64>() else {
                continue;
            };
            // counts come from another process: add without overflow
            let c = &mut by_le.entry(le.to_bits()).or_insert((le, 0)).1;
            *c = c.saturating_add(n);
        }
        let mut v: Vec<(f64, u64)> = by_le.into_values().collect();
        v.sort_by(|a, b| a.0.total_cmp(&b.0));
        Self(v)
    }

    /// The requests counted between `earlier` and `self`; `None` if the
    /// buckets differ or a count went back (the broker restarted). A broker
    /// shows the series only once it answered a Produce, so an empty
    /// `earlier` counts as zeros.
    pub fn since(&self, earlier: &Self) -> Option<BrokerLatency> {
        let zeros;
        let earlier = if earlier.0.is_empty() {
            zeros = Self(self.0.iter().map(|&(le, _)| (le, 0)).collect());
            &zeros
        } else {
            earlier
        };
        if self.0.len() != earlier.0.len() || self.0.is_empty() {
            return None;
        }
        let mut delta = Vec::with_capacity(self.0.len());
        for ((le, now), (le0, then)) in self.0.iter().zip(&earlier.0) {
            if le != le0 {
                return None;
            }
            delta.push((*le, now.checked_sub(*then)?));
        }
        let requests = delta.last().map_or(0, |&(_, n)| n);
        if requests == 0 {
            delta.clear();
        }
        let bound = |q: f64| {
            let want = (q * requests as f64).ceil() as u64;
            delta
                .iter()
                .find(|&&(_, n)| n >= want)
                .map(|&(le, _)| le * 1e3)
                .filter(|le| le.is_finite())
        };
        Some(BrokerLatency {
            requests,
            p50_le_ms: bound(0.5),
            p90_le_ms: bound(0.9),
            p99_le_ms: bound(0.99),
            p99_9_le_ms: bound(0.999),
            cumulative: delta
                .iter()
                .filter(|(le, _)| le.is_finite())
                .map(|&(le, n)| (le * 1e3, n as f64 / requests as f64))
                .collect(),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn page(counts: [u64; 4]) -> String {
        let [a, b, c, inf] = counts;
        format!(
            "# HELP odradek_request_duration_seconds x\n\
             odradek_request_duration_seconds_bucket{{le=\"0.001\",api=\"Produce\",shard=\"0\"}} {a}\n\
             odradek_request_duration_seconds_bucket{{le=\"0.0025\",api=\"Produce\",shard=\"0\"}} {b}\n\
             odradek_request_duration_seconds_bucket{{le=\"0.005\",api=\"Produce\",shard=\"0\"}} {c}\n\
             odradek_request_duration_seconds_bucket{{le=\"+Inf\",api=\"Produce\",shard=\"0\"}} {inf}\n\
             odradek_request_duration_seconds_bucket{{le=\"0.001\",api=\"Fetch\",shard=\"0\"}} 999\n\
             odradek_request_duration_seconds_bucket{{le=\"0.001\",api=\"Produce\",shard=\"1\"}} 5\n\
             odradek_request_duration_seconds_bucket{{le=\"0.0025\",api=\"Produce\",shard=\"1\"}} 5\n\
             odradek_request_duration_seconds_bucket{{le=\"0.005\",api=\"Produce\",shard=\"1\"}} 5\n\
             odradek_request_duration_seconds_bucket{{le=\"+Inf\",api=\"Produce\",shard=\"1\"}} 5\n\
             odradek_request_duration_seconds_sum{{api=\"Produce\",shard=\"0\"}} 1.5\n"
        )
    }

    #[test]
    fn produce_buckets_are_summed_over_shards_and_other_apis_left_out() {
        let b = Buckets::parse(&page([1, 2, 3, 4]));
        assert_eq!(
            b.0,
            [(0.001, 6), (0.0025, 7), (0.005, 8), (f64::INFINITY, 9)]
        );
        assert_eq!(
            Buckets::parse(
                "garbage\nodradek_request_duration_seconds_bucket{le=\"x\",api=\"Produce\"} 1\n"
            ),
            Buckets::default()
        );
        // counts from another process that would overflow saturate
        let huge = format!(
            "odradek_request_duration_seconds_bucket{{le=\"+Inf\",api=\"Produce\",shard=\"0\"}} {m}\n\
             odradek_request_duration_seconds_bucket{{le=\"+Inf\",api=\"Produce\",shard=\"1\"}} {m}\n",
            m = u64::MAX
        );
        assert_eq!(Buckets::parse(&huge).0, [(f64::INFINITY, u64::MAX)]);
    }

    #[test]
    fn disk_counters_are_the_run_s_difference() {
        let page = |f: u64, w: u64, s: u64| {
            format!(
                "# TYPE odradek_fsyncs counter\nodradek_fsyncs_total {f}\n\
                 odradek_fsyncs_seconds_total 3\n\
                 odradek_log_writes_total{{shard=\"0\"}} {w}\n\
                 odradek_log_writes_total{{shard=\"1\"}} 1\n\
                 odradek_log_sets_written_total {s}\n\
                 odradek_log_writes_during_sync_total{{path=\"inline\"}} {i}\n\
                 odradek_log_writes_during_sync_total{{path=\"io_wq\"}} {q}\n\
                 odradek_log_sync_write_handoffs_total {h}\n",
                i = 2 * w,
                q = w / 10,
                h = f / 5,
            )
        };
        assert_eq!(
            BrokerDisk::between(&page(10, 100, 150), &page(25, 300, 500)),
            Some(BrokerDisk {
                fsyncs: 15,
                log_writes: 200,
                log_sets_written: 350,
                writes_during_sync_inline: Some(400),
                writes_during_sync_io_wq: Some(20),
                sync_write_handoffs: Some(3),
            })
        );
        // a broker without the newer counters still gives the older ones
        let old = "odradek_fsyncs_total 1\nodradek_log_writes_total 2\nodradek_log_sets_written_total 3\n";
        assert_eq!(
            BrokerDisk::between(old, old).map(|d| (d.log_writes, d.writes_during_sync_inline)),
            Some((0, None))
        );
        // a restart (a count went back) or a broker without the counters
        assert_eq!(
            BrokerDisk::between(&page(10, 100, 150), &page(5, 300, 500)),
            None
        );
        assert_eq!(BrokerDisk::between("", &page(1, 1, 1)), None);
    }

    #[test]
    fn the_run_is_the_difference_and_percentiles_are_bucket_bounds() {
        let before = Buckets::parse(&page([10, 10, 10, 10]));
        // the run: 900 requests ≤ 1 ms, 90 more ≤ 2.5 ms, 9 ≤ 5 ms, 1 above
        let after = Buckets::parse(&page([910, 1000, 1009, 1010]));
        let l = after.since(&before).expect("same buckets");
        assert_eq!(l.requests, 1000);
        assert_eq!(l.p50_le_ms, Some(1.0));
        assert_eq!(l.p90_le_ms, Some(1.0));
        assert_eq!(l.p99_le_ms, Some(2.5));
        assert_eq!(l.p99_9_le_ms, Some(5.0));
        assert_eq!(l.cumulative, [(1.0, 0.9), (2.5, 0.99), (5.0, 0.999)]);
        // one more slow request puts p99.9 past the last finite bound
        let after = Buckets::parse(&page([910, 1000, 1009, 1012]));
        assert_eq!(after.since(&before).unwrap().p99_9_le_ms, None);
    }

    #[test]
    fn a_restarted_or_different_broker_gives_nothing() {
        let before = Buckets::parse(&page([10, 10, 10, 10]));
        let after = Buckets::parse(&page([5, 5, 5, 5]));
        assert!(after.since(&before).is_none(), "counts went back");
        assert!(Buckets::default().since(&Buckets::default()).is_none());
        // no Produce answered before: the series did not exist yet
        let first = Buckets::parse(&page([1, 2, 3, 4])).since(&Buckets::default());
        assert_eq!(first.map(|l| l.requests), Some(9));
        let fewer = Buckets(before.0[1..].to_vec());
        assert!(before.since(&fewer).is_none());
    }
}
