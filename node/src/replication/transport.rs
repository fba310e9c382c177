//! The inter-broker transport: Raft messages of every group (the
//! controller and each partition) between brokers, over one TCP connection
//! per ordered pair of brokers (each broker dials every peer it sends to).
//!
//! Wire format (all integers big-endian; see `docs/replication-transport.md`):
//!
//! - a connection starts with a hello from the dialing broker:
//!   `magic "ODRT"`, `version: u16`, `cluster_id: u16-length string`,
//!   `node_id: u64`; the listener checks it and closes the connection on
//!   a wrong magic, version or cluster id, or an unknown node id;
//! - then frames `[length: u32][kind: u8][payload]`, `length` counting
//!   kind and payload, capped by [`TransportConfig::max_frame`];
//! - kind 1 is a Raft batch: `count: u32`, then `count` items
//!   `{group, message: u32-length protobuf bytes}`; a group is tag 0
//!   (controller) or tag 1 followed by `topic: u16-length UTF-8` and
//!   `partition: i32`.
//!
//! Decoding is pure and never trusts a length or count: each is checked
//! against the bytes that are actually left before anything is allocated.
//!
//! Coalescing: each peer has one writer task; what is queued for the peer
//! while a write is in flight goes out in the next single frame, so the
//! heartbeats of all groups between two brokers share one frame and one
//! syscall. [`Transport::stats`] counts frames and messages.
//!
//! Runtime: the transport runs on its own thread with its own compio
//! runtime (accept loop, one reader task per inbound connection, one writer
//! task per peer). [`Transport::send`] is callable from any thread: it puts
//! the message on the peer's bounded queue and never blocks.

use std::cell::Cell;
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::net::SocketAddr;
use std::rc::Rc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use bytes::{BufMut, Bytes, BytesMut};
use compio::buf::BufResult;
use compio::io::{AsyncRead, AsyncReadExt, AsyncWriteExt};
use compio::net::{TcpListener, TcpStream};
use raft::eraftpb::Message;

// ---------------------------------------------------------------------------
// Wire format
// ---------------------------------------------------------------------------

/// First bytes of every connection.
pub const MAGIC: [u8; 4] = *b"ODRT";
/// The protocol version this broker speaks (and the only one it accepts).
pub const VERSION: u16 = 1;
/// Longest cluster id in a hello.
pub const MAX_CLUSTER_ID: usize = 255;
/// Longest topic name in a group id (Kafka's limit).
pub const MAX_TOPIC: usize = 249;
/// Default cap of a frame's `length`.
pub const DEFAULT_MAX_FRAME: usize = 64 << 20;
/// Frame kind: a batch of Raft messages.
pub const KIND_RAFT_BATCH: u8 = 1;
/// `length` and `kind`.
pub const FRAME_HEADER_LEN: usize = 5;
/// Smallest possible batch item: a controller tag and an empty message.
const MIN_ITEM_LEN: usize = 1 + 4;
/// Fixed part of a hello: magic, version, cluster id length, node id.
const HELLO_FIXED_LEN: usize = 4 + 2 + 2 + 8;

/// A Raft group: the controller's or one partition's.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum GroupId {
    Controller,
    Partition { topic: Arc<str>, partition: i32 },
}

impl GroupId {
    pub fn partition(topic: &str, partition: i32) -> Self {
        GroupId::Partition {
            topic: topic.into(),
            partition,
        }
    }

    fn encoded_len(&self) -> usize {
        match self {
            GroupId::Controller => 1,
            GroupId::Partition { topic, .. } => 1 + 2 + topic.len() + 4,
        }
    }

    fn check(&self) -> Result<(), WireError> {
        match self {
            GroupId::Controller => Ok(()),
            GroupId::Partition { topic, partition } => {
                if topic.len() > MAX_TOPIC {
                    return Err(WireError::TopicTooLong(topic.len()));
                }
                if *partition < 0 {
                    return Err(WireError::NegativePartition(*partition));
                }
                Ok(())
            }
        }
    }
}

impl From<&odradek_engine::shard::TopicPartition> for GroupId {
    fn from(tp: &odradek_engine::shard::TopicPartition) -> Self {
        GroupId::Partition {
            topic: tp.topic.clone(),
            partition: tp.partition,
        }
    }
}

impl std::fmt::Display for GroupId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            GroupId::Controller => f.write_str("controller"),
            GroupId::Partition { topic, partition } => write!(f, "{topic}-{partition}"),
        }
    }
}

/// Why bytes from (or for) the wire are not valid.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WireError {
    #[error("bad magic {0:02x?} (not an odradek broker transport connection)")]
    BadMagic(Vec<u8>),
    #[error("protocol version {0}, this broker speaks {VERSION}")]
    Version(u16),
    #[error("cluster id of {0} bytes exceeds {MAX_CLUSTER_ID}")]
    ClusterIdTooLong(usize),
    #[error("node id 0 is not valid")]
    NodeIdZero,
    #[error("{0} is not UTF-8")]
    Utf8(&'static str),
    #[error("frame of {size} bytes exceeds the cap of {max}")]
    FrameTooLarge { size: usize, max: usize },
    #[error("frame without a kind byte")]
    EmptyFrame,
    #[error("unknown frame kind {0}")]
    UnknownKind(u8),
    #[error("{what} of {n} exceeds the {left} bytes left")]
    Overrun {
        what: &'static str,
        n: u64,
        left: usize,
    },
    #[error("unknown group tag {0}")]
    UnknownGroup(u8),
    #[error("topic name of {0} bytes exceeds {MAX_TOPIC}")]
    TopicTooLong(usize),
    #[error("negative partition {0}")]
    NegativePartition(i32),
    #[error("{0} bytes after the last item of a batch")]
    Trailing(usize),
    #[error("raft message: {0}")]
    Protobuf(String),
    #[error("a message of {0} bytes does not fit in a frame")]
    MessageTooLarge(usize),
}

/// A checked hello.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub cluster_id: String,
    pub node_id: u64,
}

/// The hello a broker sends first on each connection it dials.
pub fn encode_hello(cluster_id: &str, node_id: u64) -> Result<Bytes, WireError> {
    if cluster_id.len() > MAX_CLUSTER_ID {
        return Err(WireError::ClusterIdTooLong(cluster_id.len()));
    }
    if node_id == 0 {
        return Err(WireError::NodeIdZero);
    }
    let mut b = BytesMut::with_capacity(HELLO_FIXED_LEN + cluster_id.len());
    b.put_slice(&MAGIC);
    b.put_u16(VERSION);
    b.put_u16(cluster_id.len() as u16);
    b.put_slice(cluster_id.as_bytes());
    b.put_u64(node_id);
    Ok(b.freeze())
}

/// Decode a hello from the start of `buf`: `Ok(None)` while more bytes are
/// needed, else the hello and its length. A wrong magic or version is
/// reported as soon as its bytes are there.
pub fn decode_hello(buf: &[u8]) -> Result<Option<(Hello, usize)>, WireError> {
    let m = buf.len().min(MAGIC.len());
    if buf[..m] != MAGIC[..m] {
        return Err(WireError::BadMagic(buf[..m].to_vec()));
    }
    if buf.len() < 6 {
        return Ok(None);
    }
    let version = u16::from_be_bytes([buf[4], buf[5]]);
    if version != VERSION {
        return Err(WireError::Version(version));
    }
    if buf.len() < 8 {
        return Ok(None);
    }
    let id_len = u16::from_be_bytes([buf[6], buf[7]]) as usize;
    if id_len > MAX_CLUSTER_ID {
        return Err(WireError::ClusterIdTooLong(id_len));
    }
    let total = HELLO_FIXED_LEN + id_len;
    if buf.len() < total {
        return Ok(None);
    }
    let cluster_id = std::str::from_utf8(&buf[8..8 + id_len])
        .map_err(|_| WireError::Utf8("cluster id"))?
        .to_string();
    let mut id = [0u8; 8];
    id.copy_from_slice(&buf[8 + id_len..total]);
    let node_id = u64::from_be_bytes(id);
    if node_id == 0 {
        return Err(WireError::NodeIdZero);
    }
    Ok(Some((
        Hello {
            cluster_id,
            node_id,
        },
        total,
    )))
}

/// Read a frame header from the start of `buf`: `Ok(None)` while fewer
/// than [`FRAME_HEADER_LEN`] bytes are there, else the kind and the
/// payload length. The length is checked against `max` (and the kind is
/// known) before the caller reads or allocates the payload.
pub fn decode_frame_header(buf: &[u8], max: usize) -> Result<Option<(u8, usize)>, WireError> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let length = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
    if length == 0 {
        return Err(WireError::EmptyFrame);
    }
    if length > max {
        return Err(WireError::FrameTooLarge { size: length, max });
    }
    if buf.len() < FRAME_HEADER_LEN {
        return Ok(None);
    }
    let kind = buf[4];
    if kind != KIND_RAFT_BATCH {
        return Err(WireError::UnknownKind(kind));
    }
    Ok(Some((kind, length - 1)))
}

/// Builds one Raft-batch frame, refusing items that would take it past
/// its cap.
pub struct BatchEncoder {
    buf: BytesMut,
    count: u32,
    max_frame: usize,
}

impl BatchEncoder {
    /// An empty batch whose `length` will stay within `max_frame`.
    pub fn new(max_frame: usize) -> Self {
        let mut buf = BytesMut::with_capacity(4096);
        buf.put_u32(0); // length, patched by `finish`
        buf.put_u8(KIND_RAFT_BATCH);
        buf.put_u32(0); // count, patched by `finish`
        Self {
            buf,
            count: 0,
            max_frame,
        }
    }

    /// Append an item: `Ok(true)` if added, `Ok(false)` if it does not fit
    /// in this (non-empty) frame and belongs in the next one. An item that
    /// fits in no frame, or an invalid group, is an error.
    pub fn push(&mut self, group: &GroupId, msg: &Message) -> Result<bool, WireError> {
        group.check()?;
        let size = protobuf::Message::compute_size(msg) as usize;
        let item = group.encoded_len() + 4 + size;
        // `length` counts everything after itself.
        let empty_len = 1 + 4;
        if empty_len + item > self.max_frame || size > u32::MAX as usize {
            return Err(WireError::MessageTooLarge(size));
        }
        if self.buf.len() - 4 + item > self.max_frame || self.count == u32::MAX {
            return Ok(false);
        }
        let before = self.buf.len();
        match group {
            GroupId::Controller => self.buf.put_u8(0),
            GroupId::Partition { topic, partition } => {
                self.buf.put_u8(1);
                self.buf.put_u16(topic.len() as u16);
                self.buf.put_slice(topic.as_bytes());
                self.buf.put_i32(*partition);
            }
        }
        self.buf.put_u32(size as u32);
        let start = self.buf.len();
        let written = {
            let mut w = (&mut self.buf).writer();
            let mut os = protobuf::CodedOutputStream::new(&mut w);
            protobuf::Message::write_to_with_cached_sizes(msg, &mut os).and_then(|()| os.flush())
        };
        let wrote = self.buf.len() - start;
        if let Err(e) = written {
            self.buf.truncate(before);
            return Err(WireError::Protobuf(e.to_string()));
        }
        if wrote != size {
            // compute_size and the write disagree: never send a frame
            // whose lengths lie.
            self.buf.truncate(before);
            return Err(WireError::Protobuf(format!(
                "encoded {wrote} bytes, sized {size}"
            )));
        }
        self.count += 1;
        Ok(true)
    }

    pub fn count(&self) -> u32 {
        self.count
    }

    pub fn is_empty(&self) -> bool {
        self.count == 0
    }

    /// Bytes of the frame so far, header included.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    /// The whole frame.
    pub fn finish(mut self) -> Bytes {
        let length = (self.buf.len() - 4) as u32;
        self.buf[0..4].copy_from_slice(&length.to_be_bytes());
        self.buf[5..9].copy_from_slice(&self.count.to_be_bytes());
        self.buf.freeze()
    }
}

/// Encode `items` as one Raft-batch frame (header included).
pub fn encode_raft_batch(
    items: &[(GroupId, Message)],
    max_frame: usize,
) -> Result<Bytes, WireError> {
    let mut enc = BatchEncoder::new(max_frame);
    for (g, m) in items {
        if !enc.push(g, m)? {
            return Err(WireError::FrameTooLarge {
                size: enc.len() - 4 + g.encoded_len() + 4,
                max: max_frame,
            });
        }
    }
    Ok(enc.finish())
}

struct Reader<'a> {
    buf: &'a Bytes,
    pos: usize,
}

impl Reader<'_> {
    fn left(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: &'static str) -> Result<&[u8], WireError> {
        if n > self.left() {
            return Err(WireError::Overrun {
                what,
                n: n as u64,
                left: self.left(),
            });
        }
        let s = &self.buf[self.pos..self.pos + n];
        self.pos += n;
        Ok(s)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, WireError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, WireError> {
        let b = self.take(2, what)?;
        Ok(u16::from_be_bytes([b[0], b[1]]))
    }

    fn u32(&mut self, what: &'static str) -> Result<u32, WireError> {
        let b = self.take(4, what)?;
        Ok(u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    }

    /// A length-prefixed field's length, checked against what is left.
    fn len(&mut self, n: u64, what: &'static str) -> Result<usize, WireError> {
        if n > self.left() as u64 {
            return Err(WireError::Overrun {
                what,
                n,
                left: self.left(),
            });
        }
        Ok(n as usize)
    }
}

/// Decode a Raft batch's payload (what follows the kind byte). Message
/// bytes are parsed zero-copy out of `payload` (entries' data share it).
pub fn decode_raft_batch(payload: &Bytes) -> Result<Vec<(GroupId, Message)>, WireError> {
    let mut r = Reader {
        buf: payload,
        pos: 0,
    };
    let count = r.u32("batch count")?;
    // Every item takes at least MIN_ITEM_LEN bytes: a count beyond what
    // the payload can hold is refused before the vector is allocated.
    if count as u64 > (r.left() / MIN_ITEM_LEN) as u64 {
        return Err(WireError::Overrun {
            what: "batch count",
            n: count as u64,
            left: r.left(),
        });
    }
    let mut items = Vec::with_capacity(count as usize);
    for _ in 0..count {
        let group = match r.u8("group tag")? {
            0 => GroupId::Controller,
            1 => {
                let n = r.u16("topic length")? as usize;
                if n > MAX_TOPIC {
                    return Err(WireError::TopicTooLong(n));
                }
                let topic = std::str::from_utf8(r.take(n, "topic")?)
                    .map_err(|_| WireError::Utf8("topic"))?;
                let topic: Arc<str> = topic.into();
                let partition = r.u32("partition")? as i32;
                if partition < 0 {
                    return Err(WireError::NegativePartition(partition));
                }
                GroupId::Partition { topic, partition }
            }
            t => return Err(WireError::UnknownGroup(t)),
        };
        let n = r.u32("message length")?;
        let n = r.len(n as u64, "message length")?;
        let bytes = payload.slice(r.pos..r.pos + n);
        r.pos += n;
        let msg: Message = protobuf::Message::parse_from_carllerche_bytes(&bytes)
            .map_err(|e| WireError::Protobuf(e.to_string()))?;
        items.push((group, msg));
    }
    if r.left() != 0 {
        return Err(WireError::Trailing(r.left()));
    }
    Ok(items)
}

// ---------------------------------------------------------------------------
// Runtime
// ---------------------------------------------------------------------------

/// Called on the transport thread with each received batch: the sender's
/// node id and its messages in the order sent. Must not block (hand the
/// messages to the shards' channels).
pub type Deliver = Arc<dyn Fn(u64, Vec<(GroupId, Message)>) + Send + Sync>;
/// Called on the transport thread each time messages to a peer were
/// dropped because it could not be reached (a failed connect or write):
/// where the replica driver calls raft's `report_unreachable`.
pub type OnUnreachable = Arc<dyn Fn(u64) + Send + Sync>;

#[derive(Debug, Clone)]
pub struct TransportConfig {
    /// This broker's node id (never 0).
    pub node_id: u64,
    /// Connections whose hello names another cluster are refused.
    pub cluster_id: String,
    pub listen: SocketAddr,
    /// Every other broker: where it listens. Only these may connect.
    pub peers: BTreeMap<u64, SocketAddr>,
    /// Cap of a frame's length, both ways.
    pub max_frame: usize,
    /// Messages queued per peer; beyond, `send` drops (Raft resends).
    pub queue_capacity: usize,
    pub connect_timeout: Duration,
    /// A write that takes longer drops the connection.
    pub write_timeout: Duration,
    /// An inbound connection must complete its hello within this.
    pub hello_timeout: Duration,
    /// Wait after a failed connect, doubling up to `backoff_max`.
    pub backoff_min: Duration,
    pub backoff_max: Duration,
    /// Inbound connections open at once; more are closed on accept.
    pub max_inbound: usize,
}

impl TransportConfig {
    pub fn new(
        node_id: u64,
        cluster_id: impl Into<String>,
        listen: SocketAddr,
        peers: BTreeMap<u64, SocketAddr>,
    ) -> Self {
        Self {
            node_id,
            cluster_id: cluster_id.into(),
            listen,
            peers,
            max_frame: DEFAULT_MAX_FRAME,
            queue_capacity: 16 * 1024,
            connect_timeout: Duration::from_secs(3),
            write_timeout: Duration::from_secs(10),
            hello_timeout: Duration::from_secs(5),
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(2),
            max_inbound: 1024,
        }
    }
}

/// Counters since start.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TransportStats {
    pub frames_sent: u64,
    pub messages_sent: u64,
    pub bytes_sent: u64,
    pub frames_received: u64,
    pub messages_received: u64,
    /// `send` found the peer's queue full.
    pub dropped_queue_full: u64,
    /// Queued or in-flight messages lost with a failed connect or write.
    pub dropped_unreachable: u64,
    /// Messages that cannot be encoded (too large for a frame, bad group).
    pub dropped_invalid: u64,
    /// Successful outbound connects.
    pub connects: u64,
    /// Inbound connections closed for bad input (hello, frame) or over
    /// `max_inbound`.
    pub inbound_rejected: u64,
}

#[derive(Default)]
struct Counters {
    frames_sent: AtomicU64,
    messages_sent: AtomicU64,
    bytes_sent: AtomicU64,
    frames_received: AtomicU64,
    messages_received: AtomicU64,
    dropped_queue_full: AtomicU64,
    dropped_unreachable: AtomicU64,
    dropped_invalid: AtomicU64,
    connects: AtomicU64,
    inbound_rejected: AtomicU64,
}

fn add(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

struct Shared {
    cfg: TransportConfig,
    counters: Counters,
    unreachable: Mutex<BTreeSet<u64>>,
    deliver: Deliver,
    on_unreachable: Option<OnUnreachable>,
}

impl Shared {
    fn set_reachable(&self, peer: u64, reachable: bool) {
        let mut set = self.unreachable.lock().unwrap_or_else(|e| e.into_inner());
        if reachable {
            set.remove(&peer);
        } else {
            set.insert(peer);
        }
    }

    fn report_unreachable(&self, peer: u64) {
        self.set_reachable(peer, false);
        if let Some(f) = &self.on_unreachable {
            f(peer);
        }
    }
}

/// Why [`Transport::send`] did not queue a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum SendError {
    #[error("node {0} is not a configured peer")]
    UnknownPeer(u64),
    #[error("the queue to node {0} is full; message dropped")]
    QueueFull(u64),
    #[error("the transport is stopped")]
    Stopped,
}

type Queued = (GroupId, Message);

/// A running transport; dropping it (or [`Transport::shutdown`]) stops it.
pub struct Transport {
    node_id: u64,
    local_addr: SocketAddr,
    queues: BTreeMap<u64, flume::Sender<Queued>>,
    shared: Arc<Shared>,
    stop: Option<flume::Sender<()>>,
    thread: Option<JoinHandle<()>>,
}

impl Transport {
    /// Bind `cfg.listen` and start the transport thread.
    pub fn start(cfg: TransportConfig, deliver: Deliver) -> io::Result<Self> {
        Self::start_with(cfg, deliver, None)
    }

    /// [`Self::start`] with a hook for unreachable peers.
    pub fn start_with(
        cfg: TransportConfig,
        deliver: Deliver,
        on_unreachable: Option<OnUnreachable>,
    ) -> io::Result<Self> {
        let invalid = |why: String| io::Error::new(io::ErrorKind::InvalidInput, why);
        let hello =
            encode_hello(&cfg.cluster_id, cfg.node_id).map_err(|e| invalid(e.to_string()))?;
        if cfg.peers.contains_key(&cfg.node_id) || cfg.peers.contains_key(&0) {
            return Err(invalid("peers must not contain this node or node 0".into()));
        }
        if cfg.max_frame < 64 || cfg.max_frame > u32::MAX as usize || cfg.queue_capacity == 0 {
            return Err(invalid("max_frame or queue_capacity out of range".into()));
        }
        let listener = bind(cfg.listen)?;
        let local_addr = listener.local_addr()?;
        let mut queues = BTreeMap::new();
        let mut receivers = Vec::new();
        for (&id, &addr) in &cfg.peers {
            let (tx, rx) = flume::bounded(cfg.queue_capacity);
            queues.insert(id, tx);
            receivers.push((id, addr, rx));
        }
        let node_id = cfg.node_id;
        let shared = Arc::new(Shared {
            cfg,
            counters: Counters::default(),
            unreachable: Mutex::new(BTreeSet::new()),
            deliver,
            on_unreachable,
        });
        let (stop_tx, stop_rx) = flume::bounded::<()>(1);
        let (ready_tx, ready_rx) = flume::bounded::<io::Result<()>>(1);
        let sh = shared.clone();
        let thread = std::thread::Builder::new()
            .name(format!("odradek-transport-{node_id}"))
            .spawn(move || run(sh, listener, receivers, hello, stop_rx, ready_tx))?;
        match ready_rx.recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                let _ = thread.join();
                return Err(io::Error::other("the transport thread died while starting"));
            }
        }
        tracing::info!(node = node_id, address = %local_addr, "broker transport listening");
        Ok(Self {
            node_id,
            local_addr,
            queues,
            shared,
            stop: Some(stop_tx),
            thread: Some(thread),
        })
    }

    pub fn node_id(&self) -> u64 {
        self.node_id
    }

    /// Where the transport listens (the port if `listen` asked for 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// Queue `msg` of `group` for node `to`; never blocks. A full queue
    /// drops the message (counted; Raft retransmits).
    pub fn send(&self, to: u64, group: GroupId, msg: Message) -> Result<(), SendError> {
        let q = self.queues.get(&to).ok_or(SendError::UnknownPeer(to))?;
        match q.try_send((group, msg)) {
            Ok(()) => Ok(()),
            Err(flume::TrySendError::Full(_)) => {
                add(&self.shared.counters.dropped_queue_full, 1);
                Err(SendError::QueueFull(to))
            }
            Err(flume::TrySendError::Disconnected(_)) => Err(SendError::Stopped),
        }
    }

    /// Peers whose last connect or write failed (cleared on a connect).
    pub fn unreachable_peers(&self) -> BTreeSet<u64> {
        self.shared
            .unreachable
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn stats(&self) -> TransportStats {
        let c = &self.shared.counters;
        let g = |a: &AtomicU64| a.load(Ordering::Relaxed);
        TransportStats {
            frames_sent: g(&c.frames_sent),
            messages_sent: g(&c.messages_sent),
            bytes_sent: g(&c.bytes_sent),
            frames_received: g(&c.frames_received),
            messages_received: g(&c.messages_received),
            dropped_queue_full: g(&c.dropped_queue_full),
            dropped_unreachable: g(&c.dropped_unreachable),
            dropped_invalid: g(&c.dropped_invalid),
            connects: g(&c.connects),
            inbound_rejected: g(&c.inbound_rejected),
        }
    }

    /// Stop: close the listener and every connection, drop what is
    /// queued, join the thread.
    pub fn shutdown(mut self) {
        self.stop_now();
    }

    fn stop_now(&mut self) {
        // Stop the thread before dropping the queues: a dropped sender
        // wakes its writer task across threads, and compio aborts the
        // process if that happens while this thread unwinds a panic.
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(t) = self.thread.take() {
            if t.join().is_err() {
                tracing::error!(node = self.node_id, "the transport thread panicked");
            }
            tracing::info!(node = self.node_id, "broker transport stopped");
        }
        self.queues.clear();
    }
}

impl Drop for Transport {
    fn drop(&mut self) {
        self.stop_now();
    }
}

fn bind(addr: SocketAddr) -> io::Result<std::net::TcpListener> {
    use socket2::{Domain, Protocol, Socket, Type};
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    // A restarted broker binds its port again while old connections linger.
    s.set_reuse_address(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}

fn run(
    sh: Arc<Shared>,
    listener: std::net::TcpListener,
    peers: Vec<(u64, SocketAddr, flume::Receiver<Queued>)>,
    hello: Bytes,
    stop: flume::Receiver<()>,
    ready: flume::Sender<io::Result<()>>,
) {
    let rt = match compio::runtime::RuntimeBuilder::new().build() {
        Ok(rt) => rt,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let listen_guard = match listener.try_clone() {
        Ok(l) => l,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    rt.block_on(async move {
        let listener = match TcpListener::from_std(listener) {
            Ok(l) => l,
            Err(e) => {
                let _ = ready.send(Err(e));
                return;
            }
        };
        let _ = ready.send(Ok(()));
        drop(ready);
        // Dropping the handles (at stop) cancels the tasks; inbound
        // connections' tasks go with the runtime.
        let _acceptor = compio::runtime::spawn(accept_loop(sh.clone(), listener));
        let _writers: Vec<_> = peers
            .into_iter()
            .map(|(id, addr, rx)| {
                compio::runtime::spawn(peer_writer(sh.clone(), id, addr, rx, hello.clone()))
            })
            .collect();
        let _ = stop.recv_async().await;
        // End the listening state now, not when io_uring lets go of the
        // socket (ring teardown is asynchronous in the kernel): a broker
        // restarted in this process binds the port again at once.
        let _ = socket2::SockRef::from(&listen_guard).shutdown(std::net::Shutdown::Both);
        drop(_acceptor);
        drop(_writers);
        // Let the driver reap the cancelled operations.
        compio::time::sleep(Duration::from_millis(2)).await;
    });
    // The runtime's drop cancels what is left (inbound connections) and
    // closes its sockets.
    drop(rt);
}

// --- outbound ---------------------------------------------------------------

struct Conn {
    stream: TcpStream,
    /// Set by the watcher when the peer closed or reset the connection.
    dead: Rc<Cell<bool>>,
    _watcher: compio::runtime::JoinHandle<()>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum PeerState {
    Idle,
    Connected,
    Disconnected,
    Unreachable,
    /// Connections are accepted and then dropped at once (a peer that is
    /// down behind a proxy, or restarting): back off as for a refused one.
    Flapping,
}

/// A connection that lasted less than this before it was lost counts as
/// a failed connect: it is retried after the backoff, and logged once.
const STABLE_CONNECTION: Duration = Duration::from_secs(1);

/// After a failed or dropped connection: what is queued is stale by the
/// next attempt, so drop it (Raft retransmits) along with the `lost`
/// messages already taken, and wait out the backoff (doubling it), so no
/// message waits longer than one backoff.
async fn back_off(
    sh: &Shared,
    peer: u64,
    rx: &flume::Receiver<Queued>,
    backoff: &mut Duration,
    lost: u64,
) {
    let dropped = lost + rx.drain().count() as u64;
    add(&sh.counters.dropped_unreachable, dropped);
    sh.report_unreachable(peer);
    compio::time::sleep(*backoff).await;
    *backoff = (*backoff * 2).min(sh.cfg.backoff_max);
}

async fn connect(sh: &Shared, addr: SocketAddr, hello: &Bytes) -> io::Result<Conn> {
    let stream = compio::time::timeout(sh.cfg.connect_timeout, TcpStream::connect(addr))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "connect timed out"))??;
    stream.set_nodelay(true)?;
    let mut s = stream.clone();
    let BufResult(res, _) = compio::time::timeout(sh.cfg.write_timeout, s.write_all(hello.clone()))
        .await
        .map_err(|_| io::Error::new(io::ErrorKind::TimedOut, "hello write timed out"))?;
    res?;
    let dead = Rc::new(Cell::new(false));
    let watcher = compio::runtime::spawn(watch(stream.clone(), dead.clone()));
    Ok(Conn {
        stream,
        dead,
        _watcher: watcher,
    })
}

/// The listener never writes on a connection it accepted: a read that
/// ends means the peer closed or reset it.
async fn watch(mut stream: TcpStream, dead: Rc<Cell<bool>>) {
    let _ = stream.read(Vec::with_capacity(64)).await;
    dead.set(true);
}

async fn peer_writer(
    sh: Arc<Shared>,
    peer: u64,
    addr: SocketAddr,
    rx: flume::Receiver<Queued>,
    hello: Bytes,
) {
    let c = &sh.counters;
    let mut conn: Option<Conn> = None;
    let mut state = PeerState::Idle;
    let mut backoff = sh.cfg.backoff_min;
    let mut carry: Option<Queued> = None;
    let mut connected_at = Instant::now();
    loop {
        let first = match carry.take() {
            Some(m) => m,
            None => match rx.recv_async().await {
                Ok(m) => m,
                Err(_) => return, // the transport stopped
            },
        };
        if conn.as_ref().is_some_and(|c| c.dead.get()) {
            conn = None;
            if connected_at.elapsed() < STABLE_CONNECTION {
                if state != PeerState::Flapping {
                    tracing::info!(peer, %addr, "connections to peer are dropped at once; retrying with backoff");
                }
                state = PeerState::Flapping;
                back_off(&sh, peer, &rx, &mut backoff, 1).await;
                continue;
            }
            tracing::info!(peer, %addr, "connection to peer closed by the peer");
            state = PeerState::Disconnected;
        }
        if conn.is_none() {
            match connect(&sh, addr, &hello).await {
                Ok(new) => {
                    if !matches!(state, PeerState::Connected | PeerState::Flapping) {
                        tracing::info!(peer, %addr, "connected to peer");
                    }
                    if state != PeerState::Flapping {
                        state = PeerState::Connected;
                        backoff = sh.cfg.backoff_min;
                    }
                    connected_at = Instant::now();
                    add(&c.connects, 1);
                    sh.set_reachable(peer, true);
                    conn = Some(new);
                }
                Err(e) => {
                    if state != PeerState::Unreachable {
                        tracing::warn!(peer, %addr, "peer unreachable, retrying with backoff: {e}");
                    } else {
                        tracing::debug!(peer, %addr, "connect failed: {e}");
                    }
                    state = PeerState::Unreachable;
                    back_off(&sh, peer, &rx, &mut backoff, 1).await;
                    continue;
                }
            }
        }
        // Everything queued now goes in one frame (up to its cap).
        let mut enc = BatchEncoder::new(sh.cfg.max_frame);
        let mut next = Some(first);
        while let Some((group, msg)) = next.take() {
            match enc.push(&group, &msg) {
                Ok(true) => {}
                Ok(false) => {
                    carry = Some((group, msg));
                    break;
                }
                Err(e) => {
                    add(&c.dropped_invalid, 1);
                    tracing::warn!(peer, %group, "dropping a message: {e}");
                }
            }
            next = rx.try_recv().ok();
        }
        if enc.is_empty() {
            continue;
        }
        let n = enc.count() as u64;
        let frame = enc.finish();
        let len = frame.len() as u64;
        let Some(cn) = conn.as_mut() else { continue };
        let res =
            match compio::time::timeout(sh.cfg.write_timeout, cn.stream.write_all(frame)).await {
                Ok(BufResult(res, _)) => res,
                Err(_) => Err(io::Error::new(io::ErrorKind::TimedOut, "write timed out")),
            };
        match res {
            Ok(()) => {
                add(&c.frames_sent, 1);
                add(&c.messages_sent, n);
                add(&c.bytes_sent, len);
                if state == PeerState::Flapping && connected_at.elapsed() >= STABLE_CONNECTION {
                    tracing::info!(peer, %addr, "connected to peer");
                    state = PeerState::Connected;
                    backoff = sh.cfg.backoff_min;
                }
            }
            Err(e) => {
                conn = None;
                if connected_at.elapsed() < STABLE_CONNECTION {
                    if state != PeerState::Flapping {
                        tracing::info!(peer, %addr, "connections to peer are dropped at once ({e}); retrying with backoff");
                    }
                    state = PeerState::Flapping;
                    back_off(&sh, peer, &rx, &mut backoff, n).await;
                } else {
                    tracing::info!(peer, %addr, "connection to peer lost: {e}");
                    state = PeerState::Disconnected;
                    add(&c.dropped_unreachable, n);
                    sh.report_unreachable(peer);
                }
            }
        }
    }
}

// --- inbound ----------------------------------------------------------------

/// Why an inbound connection was closed.
#[derive(Debug, thiserror::Error)]
enum InboundError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("I/O: {0}")]
    Io(#[from] io::Error),
    #[error("no hello within {0:?}")]
    HelloTimeout(Duration),
    #[error("cluster id {theirs:?} is not ours ({ours:?})")]
    WrongCluster { theirs: String, ours: String },
    #[error("node {0} is not a configured peer")]
    UnknownNode(u64),
    #[error("closed in the middle of a frame or hello")]
    Truncated,
}

async fn accept_loop(sh: Arc<Shared>, listener: TcpListener) {
    let open = Rc::new(Cell::new(0usize));
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if open.get() >= sh.cfg.max_inbound {
                    add(&sh.counters.inbound_rejected, 1);
                    tracing::warn!(%peer, max = sh.cfg.max_inbound, "too many inbound transport connections; closing");
                    continue;
                }
                let _ = stream.set_nodelay(true);
                open.set(open.get() + 1);
                let sh = sh.clone();
                let open = open.clone();
                compio::runtime::spawn(async move {
                    match serve_inbound(&sh, stream).await {
                        Ok(from) => {
                            tracing::debug!(%peer, from, "inbound transport connection closed")
                        }
                        Err(InboundError::Io(e)) => {
                            tracing::debug!(%peer, "inbound transport connection lost: {e}")
                        }
                        Err(e) => {
                            add(&sh.counters.inbound_rejected, 1);
                            tracing::warn!(%peer, "closing inbound transport connection: {e}");
                        }
                    }
                    open.set(open.get() - 1);
                })
                .detach();
            }
            Err(e) => {
                tracing::warn!("transport accept failed: {e}");
                compio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}

/// Read granularity: a buffer grows by at most this per read, so a peer
/// that announces a large frame and stalls holds little memory.
const READ_CHUNK: usize = 1 << 20;

/// Read more into `buf`; `Ok(false)` at end of stream.
async fn read_more(stream: &mut TcpStream, buf: &mut BytesMut, want: usize) -> io::Result<bool> {
    let mut b = std::mem::take(buf);
    b.reserve(want.clamp(1, READ_CHUNK));
    let BufResult(res, b) = stream.append(b).await;
    *buf = b;
    Ok(res? > 0)
}

async fn read_hello(stream: &mut TcpStream, buf: &mut BytesMut) -> Result<Hello, InboundError> {
    loop {
        if let Some((hello, n)) = decode_hello(buf)? {
            let _ = buf.split_to(n);
            return Ok(hello);
        }
        if !read_more(stream, buf, 512).await? {
            return Err(InboundError::Truncated);
        }
    }
}

/// Serve one inbound connection; returns the sender's id when it closed
/// the connection cleanly (between frames).
async fn serve_inbound(sh: &Shared, mut stream: TcpStream) -> Result<u64, InboundError> {
    let mut buf = BytesMut::with_capacity(64 * 1024);
    let hello = compio::time::timeout(sh.cfg.hello_timeout, read_hello(&mut stream, &mut buf))
        .await
        .map_err(|_| InboundError::HelloTimeout(sh.cfg.hello_timeout))??;
    if hello.cluster_id != sh.cfg.cluster_id {
        return Err(InboundError::WrongCluster {
            theirs: hello.cluster_id,
            ours: sh.cfg.cluster_id.clone(),
        });
    }
    let from = hello.node_id;
    if !sh.cfg.peers.contains_key(&from) {
        return Err(InboundError::UnknownNode(from));
    }
    tracing::debug!(from, "inbound transport connection from peer");
    loop {
        let header = loop {
            if let Some(h) = decode_frame_header(&buf, sh.cfg.max_frame)? {
                break h;
            }
            if !read_more(&mut stream, &mut buf, 64 * 1024).await? {
                return if buf.is_empty() {
                    Ok(from)
                } else {
                    Err(InboundError::Truncated)
                };
            }
        };
        let (_kind, len) = header;
        while buf.len() < FRAME_HEADER_LEN + len {
            let want = FRAME_HEADER_LEN + len - buf.len();
            if !read_more(&mut stream, &mut buf, want).await? {
                return Err(InboundError::Truncated);
            }
        }
        let mut frame = buf.split_to(FRAME_HEADER_LEN + len);
        let payload = frame.split_off(FRAME_HEADER_LEN).freeze();
        let items = decode_raft_batch(&payload)?;
        add(&sh.counters.frames_received, 1);
        add(&sh.counters.messages_received, items.len() as u64);
        (sh.deliver)(from, items);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use raft::eraftpb::{Entry, MessageType};

    fn msg(to: u64, from: u64, term: u64, data: &[u8]) -> Message {
        let mut m = Message::default();
        m.set_msg_type(MessageType::MsgAppend);
        m.to = to;
        m.from = from;
        m.term = term;
        m.index = term * 3;
        if !data.is_empty() {
            m.entries.push(Entry {
                index: m.index + 1,
                term,
                data: Bytes::copy_from_slice(data),
                ..Default::default()
            });
        }
        m
    }

    fn payload_of(frame: &Bytes, max: usize) -> Bytes {
        let (kind, len) = decode_frame_header(frame, max).unwrap().unwrap();
        assert_eq!(kind, KIND_RAFT_BATCH);
        assert_eq!(frame.len(), FRAME_HEADER_LEN + len);
        frame.slice(FRAME_HEADER_LEN..)
    }

    #[test]
    fn batch_roundtrip() {
        let items = vec![
            (GroupId::Controller, msg(2, 1, 1, b"")),
            (GroupId::partition("orders", 3), msg(2, 1, 7, b"payload")),
            (GroupId::partition("", 0), Message::default()),
        ];
        let frame = encode_raft_batch(&items, DEFAULT_MAX_FRAME).unwrap();
        let back = decode_raft_batch(&payload_of(&frame, DEFAULT_MAX_FRAME)).unwrap();
        assert_eq!(back, items);
    }

    #[test]
    fn hello_roundtrip_and_rejections() {
        let h = encode_hello("cluster-a", 7).unwrap();
        let (hello, n) = decode_hello(&h).unwrap().unwrap();
        assert_eq!(n, h.len());
        assert_eq!(
            hello,
            Hello {
                cluster_id: "cluster-a".into(),
                node_id: 7
            }
        );
        // Every strict prefix asks for more.
        for i in 0..h.len() {
            assert_eq!(decode_hello(&h[..i]).unwrap(), None, "prefix {i}");
        }
        assert!(matches!(
            decode_hello(b"GET / HTTP/1.1"),
            Err(WireError::BadMagic(_))
        ));
        assert!(matches!(decode_hello(b"OD!"), Err(WireError::BadMagic(_))));
        let mut v2 = h.to_vec();
        v2[5] = 2;
        assert_eq!(decode_hello(&v2[..6]), Err(WireError::Version(2)));
        let mut long = h.to_vec();
        long[6] = 0xff;
        long[7] = 0xff;
        assert_eq!(
            decode_hello(&long[..8]),
            Err(WireError::ClusterIdTooLong(0xffff))
        );
        let mut bad = h.to_vec();
        bad[8] = 0xff;
        assert_eq!(decode_hello(&bad), Err(WireError::Utf8("cluster id")));
        assert_eq!(encode_hello("c", 0), Err(WireError::NodeIdZero));
        assert!(encode_hello(&"x".repeat(256), 1).is_err());
    }

    #[test]
    fn frame_header_is_checked_before_the_payload() {
        assert_eq!(decode_frame_header(&[0, 0], 100), Ok(None));
        assert_eq!(
            decode_frame_header(&[0, 0, 0, 0], 100),
            Err(WireError::EmptyFrame)
        );
        // Too large is known from the length alone.
        assert_eq!(
            decode_frame_header(&[0xff, 0xff, 0xff, 0xff], 100),
            Err(WireError::FrameTooLarge {
                size: u32::MAX as usize,
                max: 100
            })
        );
        assert_eq!(decode_frame_header(&[0, 0, 0, 9], 100), Ok(None));
        assert_eq!(
            decode_frame_header(&[0, 0, 0, 9, 7], 100),
            Err(WireError::UnknownKind(7))
        );
        assert_eq!(decode_frame_header(&[0, 0, 0, 9, 1], 100), Ok(Some((1, 8))));
    }

    #[test]
    fn counts_and_lengths_beyond_the_payload_are_refused() {
        // A huge count in a tiny payload: refused, nothing allocated.
        let p = Bytes::from_static(&[0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0, 0]);
        assert!(matches!(
            decode_raft_batch(&p),
            Err(WireError::Overrun {
                what: "batch count",
                ..
            })
        ));
        // A message length beyond the payload.
        let p = Bytes::from_static(&[0, 0, 0, 1, 0, 0xff, 0xff, 0xff, 0xff]);
        assert!(matches!(
            decode_raft_batch(&p),
            Err(WireError::Overrun {
                what: "message length",
                ..
            })
        ));
        // A topic length beyond the cap.
        let p = Bytes::from_static(&[0, 0, 0, 1, 1, 0xff, 0xff, 0, 0, 0, 0]);
        assert_eq!(decode_raft_batch(&p), Err(WireError::TopicTooLong(0xffff)));
        // Unknown tag, negative partition, trailing bytes, bad protobuf.
        let p = Bytes::from_static(&[0, 0, 0, 1, 9, 0, 0, 0, 0]);
        assert_eq!(decode_raft_batch(&p), Err(WireError::UnknownGroup(9)));
        let p = Bytes::from_static(&[
            0, 0, 0, 1, 1, 0, 1, b'a', 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0,
        ]);
        assert_eq!(decode_raft_batch(&p), Err(WireError::NegativePartition(-1)));
        let p = Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0, 0, 0, 42]);
        assert_eq!(decode_raft_batch(&p), Err(WireError::Trailing(1)));
        let p = Bytes::from_static(&[0, 0, 0, 1, 0, 0, 0, 0, 2, 0xff, 0xff]);
        assert!(matches!(decode_raft_batch(&p), Err(WireError::Protobuf(_))));
    }

    #[test]
    fn encoder_respects_the_frame_cap() {
        let max = 1024;
        let m = msg(2, 1, 1, &[7u8; 300]);
        let mut enc = BatchEncoder::new(max);
        let mut n = 0;
        while enc.push(&GroupId::partition("t", 0), &m).unwrap() {
            n += 1;
        }
        assert!(n >= 2, "{n}");
        let frame = enc.finish();
        assert!(frame.len() - 4 <= max);
        assert_eq!(
            decode_raft_batch(&payload_of(&frame, max)).unwrap().len(),
            n
        );
        // A message that fits no frame is an error, not an endless carry.
        let big = msg(2, 1, 1, &[7u8; 2000]);
        assert!(matches!(
            BatchEncoder::new(max).push(&GroupId::Controller, &big),
            Err(WireError::MessageTooLarge(_))
        ));
        assert_eq!(
            BatchEncoder::new(max).push(&GroupId::partition(&"t".repeat(250), 0), &m),
            Err(WireError::TopicTooLong(250))
        );
    }

    fn arb_group() -> impl Strategy<Value = GroupId> {
        prop_oneof![
            Just(GroupId::Controller),
            ("\\PC{0,40}", 0..i32::MAX).prop_filter_map("topic too long", |(t, p)| {
                (t.len() <= MAX_TOPIC).then(|| GroupId::partition(&t, p))
            }),
        ]
    }

    fn arb_msg() -> impl Strategy<Value = Message> {
        (
            0u64..10,
            0u64..10,
            any::<u64>(),
            any::<u64>(),
            any::<bool>(),
            proptest::collection::vec(proptest::collection::vec(any::<u8>(), 0..64), 0..4),
        )
            .prop_map(|(to, from, term, commit, reject, entries)| {
                let mut m = Message::default();
                m.set_msg_type(MessageType::MsgHeartbeat);
                m.to = to;
                m.from = from;
                m.term = term;
                m.commit = commit;
                m.reject = reject;
                for (i, d) in entries.into_iter().enumerate() {
                    m.entries.push(Entry {
                        index: i as u64 + 1,
                        data: Bytes::from(d),
                        ..Default::default()
                    });
                }
                m
            })
    }

    proptest! {
        #[test]
        fn prop_roundtrip(items in proptest::collection::vec((arb_group(), arb_msg()), 0..20)) {
            let frame = encode_raft_batch(&items, DEFAULT_MAX_FRAME).unwrap();
            let back = decode_raft_batch(&payload_of(&frame, DEFAULT_MAX_FRAME)).unwrap();
            prop_assert_eq!(back, items);
        }

        #[test]
        fn prop_random_bytes_never_panic(b in proptest::collection::vec(any::<u8>(), 0..512)) {
            let b = Bytes::from(b);
            let _ = decode_raft_batch(&b);
            let _ = decode_hello(&b);
            let _ = decode_frame_header(&b, 1 << 20);
        }

        #[test]
        fn prop_mutated_frames_never_panic(
            items in proptest::collection::vec((arb_group(), arb_msg()), 1..6),
            flips in proptest::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..8),
            cut in any::<prop::sample::Index>(),
        ) {
            let frame = encode_raft_batch(&items, DEFAULT_MAX_FRAME).unwrap();
            let mut p = frame[FRAME_HEADER_LEN..].to_vec();
            for (i, v) in flips {
                let i = i.index(p.len());
                p[i] ^= v;
            }
            let _ = decode_raft_batch(&Bytes::from(p.clone()));
            let cut = cut.index(p.len());
            p.truncate(cut);
            // A truncated batch never decodes as the whole batch.
            if let Ok(back) = decode_raft_batch(&Bytes::from(p)) {
                prop_assert!(back.len() < items.len() || back != items);
            }
            let mut h = encode_hello("c", 1).unwrap().to_vec();
            let n = h.len();
            h[cut % n] ^= 0x5a;
            let _ = decode_hello(&h);
        }
    }
}
