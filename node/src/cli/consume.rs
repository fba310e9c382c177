//! `odradek consume TOPIC`: Fetch from each partition's leader, print
//! records with a kcat-like format (or JSON lines). With `--group` it is a
//! group member ([`super::member`]): it reads the partitions the group
//! assigns it, from their committed offsets, and commits what it printed.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::{
    FetchRequest, GroupId, OffsetCommitRequest, OffsetFetchRequest, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use serde_json::json;

use super::client::{leader_moved, Cluster, MAX_FRAME};
use super::error::{check, CliError, Result};
use super::member::{needs_rejoin, Member};
use super::records::{self, Record};
use super::topic::list_offsets;
use super::GlobalArgs;

#[derive(clap::Args, Debug)]
pub struct ConsumeArgs {
    pub topic: String,
    /// Read only this partition (default: all).
    #[arg(long)]
    pub partition: Option<i32>,
    /// Where to start: beginning, end, an offset N, or -N (N before the end).
    #[arg(long, allow_hyphen_values = true, conflicts_with = "from_beginning")]
    pub offset: Option<String>,
    /// Start at the log start (same as --offset beginning).
    #[arg(long)]
    pub from_beginning: bool,
    /// Stop after printing this many records.
    #[arg(long)]
    pub max_messages: Option<u64>,
    /// Stop when no record arrived for this long.
    #[arg(long, value_name = "MS")]
    pub timeout_ms: Option<u64>,
    /// Stop once every partition is read up to its end (high watermark).
    #[arg(long)]
    pub exit_at_end: bool,
    /// Output format (kcat's): %t topic, %p partition, %o offset, %k key,
    /// %v value, %T timestamp (ms), %h headers (k=v,...), %K key length,
    /// %S value length, %% a percent sign; \n \t \r \\ escapes.
    #[arg(long, short = 'f', default_value = "%v\\n")]
    pub format: String,
    /// Consume as a member of GROUP (joins it, reads the partitions it is
    /// assigned from their committed offsets, commits what it printed).
    #[arg(long, value_name = "GROUP", conflicts_with = "partition")]
    pub group: Option<String>,
}

/// Where a partition starts when the group has no committed offset.
enum Start {
    Beginning,
    End,
    At(i64),
    FromEnd(i64),
}

fn parse_start(a: &ConsumeArgs) -> Result<Start> {
    if a.from_beginning {
        return Ok(Start::Beginning);
    }
    match a.offset.as_deref() {
        None | Some("end") => Ok(Start::End),
        Some("beginning") => Ok(Start::Beginning),
        Some(s) => match s.parse::<i64>() {
            Ok(n) if n >= 0 => Ok(Start::At(n)),
            Ok(n) => Ok(Start::FromEnd(n.saturating_neg())),
            Err(_) => Err(CliError::Usage(format!(
                "--offset {s:?}: expected beginning, end, N or -N"
            ))),
        },
    }
}

/// A format string, parsed once.
enum Piece {
    Lit(Vec<u8>),
    Topic,
    Partition,
    Offset,
    Key,
    Value,
    Timestamp,
    Headers,
    KeyLen,
    ValueLen,
}

fn parse_format(f: &str) -> Result<Vec<Piece>> {
    let mut out = Vec::new();
    let mut lit = Vec::new();
    let mut chars = f.chars();
    while let Some(c) = chars.next() {
        let piece = match c {
            '%' => match chars.next() {
                Some('t') => Piece::Topic,
                Some('p') => Piece::Partition,
                Some('o') => Piece::Offset,
                Some('k') => Piece::Key,
                Some('v') => Piece::Value,
                Some('T') => Piece::Timestamp,
                Some('h') => Piece::Headers,
                Some('K') => Piece::KeyLen,
                Some('S') => Piece::ValueLen,
                Some('%') => {
                    lit.push(b'%');
                    continue;
                }
                other => {
                    return Err(CliError::Usage(format!(
                        "--format: unknown placeholder %{}",
                        other.map(String::from).unwrap_or_default()
                    )))
                }
            },
            '\\' => {
                match chars.next() {
                    Some('n') => lit.push(b'\n'),
                    Some('t') => lit.push(b'\t'),
                    Some('r') => lit.push(b'\r'),
                    Some('\\') => lit.push(b'\\'),
                    Some(o) => {
                        lit.push(b'\\');
                        let mut b = [0; 4];
                        lit.extend_from_slice(o.encode_utf8(&mut b).as_bytes());
                    }
                    None => lit.push(b'\\'),
                }
                continue;
            }
            c => {
                let mut b = [0; 4];
                lit.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
                continue;
            }
        };
        if !lit.is_empty() {
            out.push(Piece::Lit(std::mem::take(&mut lit)));
        }
        out.push(piece);
    }
    if !lit.is_empty() {
        out.push(Piece::Lit(lit));
    }
    Ok(out)
}

fn render(out: &mut Vec<u8>, fmt: &[Piece], topic: &str, partition: i32, r: &Record) {
    for p in fmt {
        match p {
            Piece::Lit(l) => out.extend_from_slice(l),
            Piece::Topic => out.extend_from_slice(topic.as_bytes()),
            Piece::Partition => out.extend_from_slice(partition.to_string().as_bytes()),
            Piece::Offset => out.extend_from_slice(r.offset.to_string().as_bytes()),
            Piece::Key => out.extend_from_slice(r.key.as_deref().unwrap_or_default()),
            Piece::Value => out.extend_from_slice(r.value.as_deref().unwrap_or_default()),
            Piece::Timestamp => out.extend_from_slice(r.timestamp.to_string().as_bytes()),
            Piece::KeyLen => {
                let n = r.key.as_ref().map_or(-1, |k| k.len() as i64);
                out.extend_from_slice(n.to_string().as_bytes())
            }
            Piece::ValueLen => {
                let n = r.value.as_ref().map_or(-1, |v| v.len() as i64);
                out.extend_from_slice(n.to_string().as_bytes())
            }
            Piece::Headers => {
                for (i, (k, v)) in r.headers.iter().enumerate() {
                    if i > 0 {
                        out.push(b',');
                    }
                    out.extend_from_slice(k.as_bytes());
                    out.push(b'=');
                    out.extend_from_slice(v.as_deref().unwrap_or_default());
                }
            }
        }
    }
}

fn lossy(b: &Option<bytes::Bytes>) -> serde_json::Value {
    match b {
        Some(b) => json!(String::from_utf8_lossy(b)),
        None => serde_json::Value::Null,
    }
}

fn sb(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

struct PartState {
    position: i64,
    leader: i32,
    high_watermark: i64,
    max_bytes: i32,
}

type Offsets = HashMap<(String, i32), std::result::Result<i64, i16>>;

/// The consuming state: partitions read, their positions, what is printed.
struct Consumer<'a> {
    cluster: Cluster,
    topic: String,
    args: &'a ConsumeArgs,
    json: bool,
    fmt: Vec<Piece>,
    start: Start,
    max_wait: i32,
    parts: BTreeMap<i32, PartState>,
    printed: u64,
    last_record: Instant,
    /// Positions last committed (or read from the group), per partition.
    committed_at: HashMap<i32, i64>,
    buf: Vec<u8>,
    /// Since when some partition has had no leader we could fetch from.
    leaderless_since: Option<Instant>,
    /// How long to look for a new leader before giving up.
    leader_wait: Duration,
}

impl Consumer<'_> {
    fn offset(&self, m: &Offsets, p: i32) -> Result<i64> {
        let ctx = || format!("listing offsets of {}-{p}", self.topic);
        match m.get(&(self.topic.clone(), p)) {
            Some(Ok(o)) => Ok(*o),
            Some(Err(c)) => Err(CliError::kafka(ctx(), *c, None)),
            None => Err(CliError::kafka(ctx(), 3, None)),
        }
    }

    /// Read `partitions` from now on: from the group's committed offsets
    /// when there are any, else from the start option.
    fn assign(&mut self, partitions: &[i32], group: Option<&str>) -> Result<()> {
        let topic = self.topic.clone();
        let md = self.cluster.metadata(Some(std::slice::from_ref(&topic)))?;
        let leaders: HashMap<i32, i32> = md
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| (p.partition_index, p.leader_id.0))
            .collect();
        let mut committed: HashMap<i32, i64> = HashMap::new();
        if let (Some(group), false) = (group, partitions.is_empty()) {
            let conn = self.cluster.coordinator(group)?;
            // v1: offsets in __consumer_offsets; v7: the last single-group shape.
            let version = conn.version::<OffsetFetchRequest>(1, 7)?;
            let mut req = OffsetFetchRequest::default();
            req.group_id = GroupId(sb(group));
            let mut ft = OffsetFetchRequestTopic::default();
            ft.name = TopicName(sb(&topic));
            ft.partition_indexes = partitions.to_vec();
            req.topics = Some(vec![ft]);
            let resp = conn.send_at(&req, version)?;
            let ctx = || format!("fetching offsets of group {group}");
            check(ctx, resp.error_code, None)?;
            for t in resp.topics {
                for p in t.partitions {
                    check(ctx, p.error_code, None)?;
                    if p.committed_offset >= 0 {
                        committed.insert(p.partition_index, p.committed_offset);
                    }
                }
            }
        }
        let wanted: Vec<(String, i32)> = partitions
            .iter()
            .filter(|p| !committed.contains_key(p))
            .map(|&p| (topic.clone(), p))
            .collect();
        let need_ends = matches!(self.start, Start::End | Start::FromEnd(_)) && !wanted.is_empty();
        let need_starts =
            matches!(self.start, Start::Beginning | Start::FromEnd(_)) && !wanted.is_empty();
        let ends = if need_ends {
            list_offsets(&mut self.cluster, &md, &wanted, -1)?
        } else {
            HashMap::new()
        };
        let starts = if need_starts {
            list_offsets(&mut self.cluster, &md, &wanted, -2)?
        } else {
            HashMap::new()
        };
        self.parts.clear();
        for &p in partitions {
            let position = match committed.get(&p) {
                Some(&o) => o,
                None => match self.start {
                    Start::Beginning => self.offset(&starts, p)?,
                    Start::End => self.offset(&ends, p)?,
                    Start::At(n) => n,
                    Start::FromEnd(n) => (self.offset(&ends, p)? - n).max(self.offset(&starts, p)?),
                },
            };
            let leader = *leaders
                .get(&p)
                .ok_or_else(|| CliError::kafka(format!("consuming {topic}-{p}"), 3, None))?;
            self.parts.insert(
                p,
                PartState {
                    position,
                    leader,
                    high_watermark: -1,
                    max_bytes: 1 << 20,
                },
            );
        }
        self.committed_at = committed;
        Ok(())
    }

    fn done(&self) -> bool {
        self.args.max_messages.is_some_and(|m| self.printed >= m)
    }

    fn at_end(&self) -> bool {
        self.parts
            .values()
            .all(|s| s.high_watermark >= 0 && s.position >= s.high_watermark)
    }

    /// One Fetch to each leader; print what comes back.
    fn fetch_round(&mut self) -> Result<()> {
        if self.parts.is_empty() {
            // Nothing assigned (more members than partitions): just wait.
            std::thread::sleep(Duration::from_millis(self.max_wait.max(10) as u64));
            return Ok(());
        }
        let topic = self.topic.clone();
        let mut by_leader: BTreeMap<i32, Vec<i32>> = BTreeMap::new();
        for (&p, s) in &self.parts {
            by_leader.entry(s.leader).or_default().push(p);
        }
        let mut moved = false;
        for (leader, ps) in by_leader {
            if leader < 0 {
                moved = true;
                continue;
            }
            let mut ft = FetchTopic::default();
            ft.topic = TopicName(sb(&topic));
            ft.partitions = ps
                .iter()
                .filter_map(|p| self.parts.get(p).map(|s| (p, s)))
                .map(|(&p, s)| {
                    let mut fp = FetchPartition::default();
                    fp.partition = p;
                    fp.fetch_offset = s.position;
                    fp.partition_max_bytes = s.max_bytes;
                    fp
                })
                .collect();
            let mut req = FetchRequest::default();
            req.max_wait_ms = self.max_wait;
            req.min_bytes = 1;
            req.max_bytes = 16 << 20;
            req.topics = vec![ft];
            // A leader that cannot be reached (killed, say) is a leader
            // change that Metadata may not show yet.
            let Ok(conn) = self.cluster.broker(leader) else {
                moved = true;
                continue;
            };
            // v4: the first with RecordBatch v2; v12: the last by topic name.
            let (_, resp) = conn.send(&req, 4, 12)?;
            check(|| format!("fetching {topic}"), resp.error_code, None)?;
            for rt in resp.responses {
                for pd in rt.partitions {
                    moved |= self.partition_data(pd)?;
                }
            }
        }
        if moved {
            self.follow_leaders()?;
        } else {
            self.leaderless_since = None;
        }
        Ok(())
    }

    /// A partition's leader moved (or is being elected): look it up again,
    /// as a Kafka consumer does, rather than give up; give up only once no
    /// leader was found for a whole request timeout.
    fn follow_leaders(&mut self) -> Result<()> {
        let since = *self.leaderless_since.get_or_insert_with(Instant::now);
        std::thread::sleep(Duration::from_millis(100));
        let topic = self.topic.clone();
        let mut missing = false;
        for (p, leader) in self.cluster.leaders(&topic)? {
            if let Some(s) = self.parts.get_mut(&p) {
                s.leader = leader;
                missing |= leader < 0;
            }
        }
        if missing && since.elapsed() >= self.leader_wait {
            return Err(CliError::kafka(format!("consuming {topic}"), 5, None));
        }
        Ok(())
    }

    /// Print a partition's records; `Ok(true)` when its leader moved
    /// (the caller looks the leaders up again).
    fn partition_data(
        &mut self,
        pd: kafka_protocol::messages::fetch_response::PartitionData,
    ) -> Result<bool> {
        let topic = self.topic.clone();
        let p = pd.partition_index;
        if leader_moved(pd.error_code) {
            return Ok(true);
        }
        if pd.error_code == 1 {
            // OFFSET_OUT_OF_RANGE: before the log start (retention deleted
            // the records) go to the start; past the end, to the end.
            let md = self.cluster.metadata(Some(std::slice::from_ref(&topic)))?;
            let tp = [(topic.clone(), p)];
            let firsts = list_offsets(&mut self.cluster, &md, &tp, -2)?;
            let ends = list_offsets(&mut self.cluster, &md, &tp, -1)?;
            let (first, end) = (self.offset(&firsts, p)?, self.offset(&ends, p)?);
            let at = self.parts.get(&p).map_or(0, |s| s.position);
            let o = if at < first { first } else { end };
            if let Some(state) = self.parts.get_mut(&p) {
                eprintln!(
                    "odradek: {topic}-{p}: offset {} out of range, resetting to {o}",
                    state.position
                );
                state.position = o;
            }
            return Ok(false);
        }
        check(|| format!("fetching {topic}-{p}"), pd.error_code, None)?;
        let Some(state) = self.parts.get_mut(&p) else {
            return Ok(false);
        };
        state.high_watermark = pd.high_watermark;
        let Some(data) = pd.records else {
            return Ok(false);
        };
        let (recs, next) = records::decode(&data).map_err(|e| CliError::Malformed {
            addr: format!("{topic}-{p}"),
            detail: e.to_string(),
        })?;
        if next.is_none() && !data.is_empty() {
            // Only a partial batch fits: ask for more next time.
            state.max_bytes = state
                .max_bytes
                .saturating_mul(2)
                .min((MAX_FRAME / 2) as i32);
        }
        self.buf.clear();
        let from = state.position;
        for r in recs.iter().filter(|r| r.offset >= from) {
            if self.args.max_messages.is_some_and(|m| self.printed >= m) {
                break;
            }
            if self.json {
                let headers: serde_json::Map<String, serde_json::Value> = r
                    .headers
                    .iter()
                    .map(|(k, v)| (k.clone(), lossy(v)))
                    .collect();
                let line = json!({
                    "topic": topic, "partition": p, "offset": r.offset,
                    "timestamp": r.timestamp, "key": lossy(&r.key),
                    "value": lossy(&r.value), "headers": headers,
                });
                self.buf.extend_from_slice(line.to_string().as_bytes());
                self.buf.push(b'\n');
            } else {
                render(&mut self.buf, &self.fmt, &topic, p, r);
            }
            self.printed += 1;
            state.position = r.offset + 1;
            self.last_record = Instant::now();
        }
        if self.args.max_messages.is_none_or(|m| self.printed < m) {
            if let Some(n) = next {
                state.position = state.position.max(n);
            }
        }
        let mut out = std::io::stdout().lock();
        out.write_all(&self.buf)
            .and_then(|_| out.flush())
            .map_err(CliError::output)?;
        Ok(false)
    }

    /// Commit the positions that moved since the last commit. `Ok(true)`
    /// when the group is rebalancing and the member must rejoin.
    fn commit(&mut self, member: &Member) -> Result<bool> {
        let moved: Vec<(i32, i64)> = self
            .parts
            .iter()
            .filter(|(p, s)| self.committed_at.get(p) != Some(&s.position))
            .map(|(&p, s)| (p, s.position))
            .collect();
        if moved.is_empty() {
            return Ok(false);
        }
        let mut t = OffsetCommitRequestTopic::default();
        t.name = TopicName(sb(&self.topic));
        t.partitions = moved
            .iter()
            .map(|&(p, o)| {
                let mut cp = OffsetCommitRequestPartition::default();
                cp.partition_index = p;
                cp.committed_offset = o;
                cp
            })
            .collect();
        let mut req = OffsetCommitRequest::default();
        req.group_id = GroupId(sb(&member.group));
        req.generation_id_or_member_epoch = member.generation;
        req.member_id = sb(&member.member_id);
        req.topics = vec![t];
        // A coordinator that is moving (its offsets partition changed
        // leader) is found again and asked again, within the timeout.
        let deadline = Instant::now() + self.cluster.timeout();
        let resp = loop {
            let conn = self.cluster.coordinator(&member.group)?;
            // v2: stored in __consumer_offsets; v9: the last by topic name.
            let (_, resp) = conn.send(&req, 2, 9)?;
            let moving = resp
                .topics
                .iter()
                .flat_map(|t| t.partitions.iter())
                .any(|p| crate::cli::member::coordinator_moving(p.error_code));
            if !moving || Instant::now() >= deadline {
                break resp;
            }
            std::thread::sleep(Duration::from_millis(100));
        };
        for rt in resp.topics {
            for p in rt.partitions {
                if needs_rejoin(p.error_code) {
                    return Ok(true);
                }
                check(
                    || format!("committing offsets of group {}", member.group),
                    p.error_code,
                    None,
                )?;
            }
        }
        for (p, o) in moved {
            self.committed_at.insert(p, o);
        }
        Ok(false)
    }
}

pub fn run(args: ConsumeArgs, g: &GlobalArgs) -> Result<()> {
    let start = parse_start(&args)?;
    let fmt = parse_format(&args.format)?;
    let mut cluster = Cluster::connect(&g.bootstrap, g.timeout())?;
    let topic = args.topic.clone();
    let md = cluster.metadata(Some(std::slice::from_ref(&topic)))?;
    let t = md.topics.first().ok_or_else(|| CliError::Malformed {
        addr: g.bootstrap.clone(),
        detail: "Metadata answered no topic".into(),
    })?;
    check(|| format!("consuming {topic}"), t.error_code, None)?;
    let all: Vec<i32> = t.partitions.iter().map(|p| p.partition_index).collect();
    let idle = args.timeout_ms.map(Duration::from_millis);
    // Long-poll at most 500 ms (so idle timeouts and heartbeats stay
    // timely) and well inside the request timeout.
    let max_wait = idle
        .map_or(500, |d| d.as_millis().clamp(10, 500))
        .min(g.timeout().as_millis() / 2) as i32;

    let (mut member, initial) = match &args.group {
        Some(group) => {
            let (m, ps) = Member::join(&mut cluster, group, &topic)?;
            (Some(m), ps)
        }
        None => match args.partition {
            Some(p) if !all.contains(&p) => {
                return Err(CliError::kafka(format!("consuming {topic}-{p}"), 3, None))
            }
            Some(p) => (None, vec![p]),
            None => (None, all),
        },
    };
    let mut c = Consumer {
        cluster,
        topic,
        args: &args,
        json: g.json,
        fmt,
        start,
        max_wait,
        parts: BTreeMap::new(),
        printed: 0,
        last_record: Instant::now(),
        committed_at: HashMap::new(),
        buf: Vec::new(),
        leaderless_since: None,
        leader_wait: Duration::from_millis(g.request_timeout_ms.max(1000)),
    };
    c.assign(&initial, args.group.as_deref())?;

    let mut last_commit = Instant::now();
    let result = (|| -> Result<()> {
        loop {
            if c.done() || (args.exit_at_end && c.at_end()) {
                return Ok(());
            }
            c.fetch_round()?;
            if let Some(m) = member.as_mut() {
                let mut rejoin = m.heartbeat(&mut c.cluster)?;
                if !rejoin && last_commit.elapsed() >= Duration::from_secs(1) {
                    rejoin = c.commit(m)?;
                    last_commit = Instant::now();
                }
                if rejoin {
                    // Hand over what we read before the partitions move.
                    let _ = c.commit(m);
                    let ps = m.rejoin(&mut c.cluster)?;
                    c.assign(&ps, Some(&m.group.clone()))?;
                }
            }
            if idle.is_some_and(|d| c.last_record.elapsed() >= d) {
                return Ok(());
            }
        }
    })();
    if let Some(m) = &member {
        // Commit what was printed, also after an error or a closed stdout,
        // then leave so the rest of the group rebalances at once.
        let committed = c.commit(m);
        let left = m.leave(&mut c.cluster);
        if result.is_ok() {
            if committed? {
                eprintln!(
                    "odradek: group {} rebalanced; last offsets not committed",
                    m.group
                );
            }
            left?;
        }
    }
    result
}
