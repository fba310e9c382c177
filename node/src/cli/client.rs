//! A blocking Kafka-protocol client for the CLI: one TCP connection per
//! broker, ApiVersions first so that every request goes at a version both
//! sides support, and defensive decoding of everything that comes back.

use std::collections::{BTreeMap, HashMap};
use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpStream, ToSocketAddrs};
use std::panic::AssertUnwindSafe;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, MetadataRequest, MetadataResponse,
    RequestHeader, ResponseHeader, TopicName,
};
use kafka_protocol::protocol::{Decodable, Encodable, Request, StrBytes};

use super::error::{CliError, Result};

/// LEADER_NOT_AVAILABLE, NOT_LEADER_OR_FOLLOWER, FENCED_LEADER_EPOCH,
/// UNKNOWN_LEADER_EPOCH: the partition's leader moved or is being elected;
/// look it up again and retry, as Kafka clients do.
pub fn leader_moved(code: i16) -> bool {
    matches!(code, 5 | 6 | 74 | 75)
}

/// Largest response frame accepted. The decoder sizes vectors from counts
/// on the wire, so a frame's size bounds how much a broker can make us touch.
pub const MAX_FRAME: usize = 100 << 20;

/// One connection to one broker, with the API versions it advertised.
pub struct Conn {
    stream: TcpStream,
    addr: String,
    correlation: i32,
    /// API key -> (min, max) served by the broker.
    versions: HashMap<i16, (i16, i16)>,
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_string())
}

/// An API's name for messages, e.g. `Fetch`.
fn api_name(key: i16) -> String {
    ApiKey::try_from(key)
        .map(|k| format!("{k:?}"))
        .unwrap_or_else(|_| format!("API {key}"))
}

impl Conn {
    /// Connect to `addr` (HOST:PORT) and ask for its API versions.
    pub fn connect(addr: &str, timeout: Duration) -> Result<Self> {
        let targets: Vec<SocketAddr> = addr
            .to_socket_addrs()
            .map_err(|e| CliError::Connect {
                addr: addr.into(),
                source: e,
            })?
            .collect();
        let mut last = std::io::Error::new(ErrorKind::NotFound, "no address");
        let mut stream = None;
        for t in targets {
            match TcpStream::connect_timeout(&t, timeout) {
                Ok(s) => {
                    stream = Some(s);
                    break;
                }
                Err(e) => last = e,
            }
        }
        let stream = stream.ok_or_else(|| {
            if last.kind() == ErrorKind::TimedOut {
                CliError::Timeout { addr: addr.into() }
            } else {
                CliError::Connect {
                    addr: addr.into(),
                    source: last,
                }
            }
        })?;
        let io = |e| CliError::Connect {
            addr: addr.into(),
            source: e,
        };
        stream.set_nodelay(true).map_err(io)?;
        stream.set_read_timeout(Some(timeout)).map_err(io)?;
        stream.set_write_timeout(Some(timeout)).map_err(io)?;
        let mut conn = Conn {
            stream,
            addr: addr.into(),
            correlation: 0,
            versions: HashMap::new(),
        };
        conn.negotiate()?;
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// Versions the broker advertised, by API key.
    pub fn api_versions(&self) -> &HashMap<i16, (i16, i16)> {
        &self.versions
    }

    /// Let a slow request (a long-poll Fetch) wait longer than the default.
    pub fn set_read_timeout(&mut self, t: Duration) -> Result<()> {
        self.stream
            .set_read_timeout(Some(t))
            .map_err(|e| self.io_err(e))
    }

    /// ApiVersions at v3; a broker that does not serve v3 answers at v0
    /// with UNSUPPORTED_VERSION and its ranges (KIP-511), and we retry at
    /// the highest version it lists.
    fn negotiate(&mut self) -> Result<()> {
        let mut req = ApiVersionsRequest::default();
        req.client_software_name = str_bytes("odradek-cli");
        req.client_software_version = str_bytes(env!("CARGO_PKG_VERSION"));
        let mut version = 3;
        for _ in 0..2 {
            let frame = self.roundtrip(ApiKey::ApiVersions as i16, version, 0, &req)?;
            let resp = match self.decode::<ApiVersionsResponse>(frame.clone(), version) {
                Ok(r) => r,
                // A v0 answer to a newer request.
                Err(_) if version > 0 => self.decode::<ApiVersionsResponse>(frame, 0)?,
                Err(e) => return Err(e),
            };
            if resp.error_code == 35 && version > 0 {
                let theirs = resp
                    .api_keys
                    .iter()
                    .find(|k| k.api_key == ApiKey::ApiVersions as i16)
                    .map(|k| k.max_version)
                    .unwrap_or(0);
                version = theirs.clamp(0, version - 1);
                if version > 0 {
                    req = ApiVersionsRequest::default();
                }
                continue;
            }
            super::error::check(
                || format!("ApiVersions from {}", self.addr),
                resp.error_code,
                None,
            )?;
            self.versions = resp
                .api_keys
                .iter()
                .map(|k| (k.api_key, (k.min_version, k.max_version)))
                .collect();
            return Ok(());
        }
        Err(CliError::Malformed {
            addr: self.addr.clone(),
            detail: "ApiVersions negotiation did not settle".into(),
        })
    }

    /// The highest version of `R` in `min..=max` (our range, further capped
    /// by what the crate can encode) that the broker also serves.
    pub fn version<R: Request>(&self, min: i16, max: i16) -> Result<i16> {
        let ours_min = min.max(R::VERSIONS.min);
        let ours_max = max.min(R::VERSIONS.max);
        let unsupported = |served: String| CliError::Unsupported {
            addr: self.addr.clone(),
            api: api_name(R::KEY),
            min: ours_min,
            max: ours_max,
            served,
        };
        let (bmin, bmax) = *self
            .versions
            .get(&R::KEY)
            .ok_or_else(|| unsupported("none".into()))?;
        let v = ours_max.min(bmax);
        if v < ours_min.max(bmin) {
            return Err(unsupported(format!("{bmin}..={bmax}")));
        }
        Ok(v)
    }

    /// Send `req` at the best version in `min..=max`; return it and the answer.
    pub fn send<R: Request>(&mut self, req: &R, min: i16, max: i16) -> Result<(i16, R::Response)> {
        let version = self.version::<R>(min, max)?;
        Ok((version, self.send_at(req, version)?))
    }

    /// Send `req` at exactly `version` (already negotiated).
    pub fn send_at<R: Request>(&mut self, req: &R, version: i16) -> Result<R::Response> {
        let header_version =
            <R::Response as kafka_protocol::protocol::HeaderVersion>::header_version(version);
        let frame = self.roundtrip(R::KEY, version, header_version, req)?;
        self.decode::<R::Response>(frame, version)
    }

    /// Send a request for which the broker sends no answer (Produce acks=0).
    pub fn send_no_response<R: Request>(&mut self, req: &R, version: i16) -> Result<()> {
        self.write_request(R::KEY, version, req)
    }

    fn io_err(&self, e: std::io::Error) -> CliError {
        match e.kind() {
            ErrorKind::WouldBlock | ErrorKind::TimedOut => CliError::Timeout {
                addr: self.addr.clone(),
            },
            _ => CliError::Io {
                addr: self.addr.clone(),
                source: e,
            },
        }
    }

    fn write_request<Req: Encodable>(&mut self, key: i16, version: i16, req: &Req) -> Result<()> {
        self.correlation = self.correlation.wrapping_add(1);
        let mut header = RequestHeader::default();
        header.request_api_key = key;
        header.request_api_version = version;
        header.correlation_id = self.correlation;
        header.client_id = Some(str_bytes("odradek-cli"));
        let header_version = ApiKey::try_from(key)
            .map(|k| k.request_header_version(version))
            .unwrap_or(1);
        let mut body = BytesMut::new();
        let encode_err =
            |e: String| CliError::Local(format!("encoding {} v{version}: {e}", api_name(key)));
        header
            .encode(&mut body, header_version)
            .map_err(|e| encode_err(e.to_string()))?;
        req.encode(&mut body, version)
            .map_err(|e| encode_err(e.to_string()))?;
        let mut out = BytesMut::with_capacity(4 + body.len());
        out.put_i32(body.len() as i32);
        out.extend_from_slice(&body);
        self.stream.write_all(&out).map_err(|e| self.io_err(e))
    }

    /// Write one request and read its answer: the frame after the header.
    fn roundtrip<Req: Encodable>(
        &mut self,
        key: i16,
        version: i16,
        response_header_version: i16,
        req: &Req,
    ) -> Result<Bytes> {
        self.write_request(key, version, req)?;
        let mut size = [0u8; 4];
        self.stream
            .read_exact(&mut size)
            .map_err(|e| self.io_err(e))?;
        let size = i32::from_be_bytes(size);
        if size < 4 || size as usize > MAX_FRAME {
            return Err(CliError::Malformed {
                addr: self.addr.clone(),
                detail: format!("response frame of {size} bytes (limit {MAX_FRAME})"),
            });
        }
        let mut frame = vec![0u8; size as usize];
        self.stream
            .read_exact(&mut frame)
            .map_err(|e| self.io_err(e))?;
        let mut frame = Bytes::from(frame);
        let header = guarded(|| ResponseHeader::decode(&mut frame, response_header_version))
            .map_err(|detail| CliError::Malformed {
                addr: self.addr.clone(),
                detail: format!("response header: {detail}"),
            })?;
        if header.correlation_id != self.correlation {
            return Err(CliError::Malformed {
                addr: self.addr.clone(),
                detail: format!(
                    "correlation id {} for request {}",
                    header.correlation_id, self.correlation
                ),
            });
        }
        Ok(frame)
    }

    fn decode<T: Decodable>(&self, mut frame: Bytes, version: i16) -> Result<T> {
        let v =
            guarded(|| T::decode(&mut frame, version)).map_err(|detail| CliError::Malformed {
                addr: self.addr.clone(),
                detail,
            })?;
        if frame.has_remaining() {
            return Err(CliError::Malformed {
                addr: self.addr.clone(),
                detail: format!(
                    "{} trailing bytes after v{version} response",
                    frame.remaining()
                ),
            });
        }
        Ok(v)
    }
}

/// Decode a `T` at `version` from bytes embedded in a response (e.g. a
/// group member's assignment): errors and panics become a message.
pub fn decode_embedded<T: Decodable>(mut b: Bytes, version: i16) -> std::result::Result<T, String> {
    guarded(|| T::decode(&mut b, version))
}

/// Run a decoder on untrusted bytes: its errors and, should it have a bug
/// that panics on some input, its panics become a message.
fn guarded<T, E: std::fmt::Display>(
    f: impl FnOnce() -> std::result::Result<T, E>,
) -> std::result::Result<T, String> {
    match std::panic::catch_unwind(AssertUnwindSafe(f)) {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err("decoder panicked".into()),
    }
}

/// A broker from Metadata.
#[derive(Debug, Clone)]
pub struct BrokerAddr {
    pub node_id: i32,
    pub host: String,
    pub port: i32,
    pub rack: Option<String>,
}

/// The bootstrap connection plus connections to other brokers, opened when
/// a request must go to a partition leader or a group coordinator.
pub struct Cluster {
    pub bootstrap: Conn,
    timeout: Duration,
    brokers: HashMap<i32, BrokerAddr>,
    conns: HashMap<i32, Conn>,
    /// Node id of the bootstrap broker, once Metadata told us.
    bootstrap_id: Option<i32>,
}

impl Cluster {
    /// Connect to the first reachable broker of `bootstrap`, a
    /// comma-separated list of HOST:PORT, as Kafka's tools take it.
    pub fn connect(bootstrap: &str, timeout: Duration) -> Result<Self> {
        let mut last = None;
        for addr in bootstrap
            .split(',')
            .map(str::trim)
            .filter(|a| !a.is_empty())
        {
            match Conn::connect(addr, timeout) {
                Ok(conn) => {
                    return Ok(Cluster {
                        bootstrap: conn,
                        timeout,
                        brokers: HashMap::new(),
                        conns: HashMap::new(),
                        bootstrap_id: None,
                    })
                }
                Err(
                    e @ (CliError::Connect { .. } | CliError::Timeout { .. } | CliError::Io { .. }),
                ) => last = Some(e),
                Err(e) => return Err(e),
            }
        }
        Err(last.unwrap_or_else(|| CliError::Usage("--bootstrap: no HOST:PORT given".into())))
    }

    pub fn timeout(&self) -> Duration {
        self.timeout
    }

    /// Each partition of `topic` and its leader (-1: none), from fresh
    /// Metadata.
    pub fn leaders(&mut self, topic: &str) -> Result<BTreeMap<i32, i32>> {
        let md = self.metadata(Some(&[topic.to_string()]))?;
        Ok(md
            .topics
            .iter()
            .flat_map(|t| t.partitions.iter())
            .map(|p| (p.partition_index, p.leader_id.0))
            .collect())
    }

    /// Metadata for `topics` (None: all topics), never auto-creating. The
    /// broker list it returns is remembered for [`Cluster::broker`].
    pub fn metadata(&mut self, topics: Option<&[String]>) -> Result<MetadataResponse> {
        let mut req = MetadataRequest::default();
        req.allow_auto_topic_creation = false;
        req.topics = topics.map(|ts| {
            ts.iter()
                .map(|t| {
                    let mut mt = MetadataRequestTopic::default();
                    mt.name = Some(TopicName(str_bytes(t)));
                    mt
                })
                .collect()
        });
        // v4: allow_auto_topic_creation exists; v12: newest Odradek serves,
        // and v13 only adds a top-level error code.
        let (_, resp) = self.bootstrap.send(&req, 4, 12)?;
        self.brokers = resp
            .brokers
            .iter()
            .map(|b| {
                (
                    b.node_id.0,
                    BrokerAddr {
                        node_id: b.node_id.0,
                        host: b.host.to_string(),
                        port: b.port,
                        rack: b.rack.as_ref().map(|r| r.to_string()),
                    },
                )
            })
            .collect();
        if self.bootstrap_id.is_none() && self.brokers.len() == 1 {
            self.bootstrap_id = self.brokers.keys().next().copied();
        }
        Ok(resp)
    }

    /// A connection to broker `node_id`. With a single broker in the
    /// cluster that is the bootstrap connection, whatever address it
    /// advertises (so the CLI works through port forwards).
    pub fn broker(&mut self, node_id: i32) -> Result<&mut Conn> {
        if self.bootstrap_id == Some(node_id) {
            return Ok(&mut self.bootstrap);
        }
        if !self.conns.contains_key(&node_id) {
            let b = self
                .brokers
                .get(&node_id)
                .ok_or_else(|| CliError::Malformed {
                    addr: self.bootstrap.addr.clone(),
                    detail: format!("broker {node_id} is not in the Metadata broker list"),
                })?;
            let addr = format!("{}:{}", b.host, b.port);
            if addr == self.bootstrap.addr {
                self.bootstrap_id = Some(node_id);
                return Ok(&mut self.bootstrap);
            }
            let conn = Conn::connect(&addr, self.timeout)?;
            self.conns.insert(node_id, conn);
        }
        self.conns
            .get_mut(&node_id)
            .ok_or_else(|| CliError::Local("connection vanished".into()))
    }

    /// The coordinator of consumer group `group`.
    pub fn coordinator(&mut self, group: &str) -> Result<&mut Conn> {
        if self.brokers.is_empty() {
            self.metadata(Some(&[]))?;
        }
        let mut req = FindCoordinatorRequest::default();
        let version = self.bootstrap.version::<FindCoordinatorRequest>(0, 5)?;
        if version >= 4 {
            req.coordinator_keys = vec![str_bytes(group)];
        } else {
            req.key = str_bytes(group);
        }
        req.key_type = 0;
        // The coordinator may still be loading: retry briefly.
        let deadline = std::time::Instant::now() + self.timeout;
        loop {
            let resp = self.bootstrap.send_at(&req, version)?;
            let (code, msg, node) = if version >= 4 {
                let c = resp
                    .coordinators
                    .first()
                    .ok_or_else(|| CliError::Malformed {
                        addr: self.bootstrap.addr.clone(),
                        detail: "FindCoordinator answered no coordinator".into(),
                    })?;
                (
                    c.error_code,
                    c.error_message.as_ref().map(|m| m.to_string()),
                    c.node_id.0,
                )
            } else {
                (
                    resp.error_code,
                    resp.error_message.as_ref().map(|m| m.to_string()),
                    resp.node_id.0,
                )
            };
            // COORDINATOR_LOAD_IN_PROGRESS, COORDINATOR_NOT_AVAILABLE
            if (code == 14 || code == 15) && std::time::Instant::now() < deadline {
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            super::error::check(
                || format!("finding the coordinator of group {group}"),
                code,
                msg.as_deref(),
            )?;
            if !self.brokers.contains_key(&node) {
                self.metadata(Some(&[]))?;
            }
            // A coordinator that cannot be reached has just died: its
            // successor is named once its offsets partition has a new leader.
            if std::time::Instant::now() < deadline && self.broker(node).is_err() {
                self.conns.remove(&node);
                std::thread::sleep(Duration::from_millis(100));
                continue;
            }
            return self.broker(node);
        }
    }
}
