//! One client connection, served on the shard that accepted it.
//!
//! The reader takes frames off the socket, checks them, and runs each
//! request's first phase in arrival order (for a produce: queueing the
//! appends to this shard's logs, and the appends on other shards or
//! through Raft, so pipelined produces keep their order per partition).
//! What is left (a local append being written, a durability wait, a fetch
//! long poll) becomes a future queued to the writer, which awaits them
//! strictly in request order and writes each response: a frame, or for a
//! fetch a header followed by file slices sent by splice. So the next
//! request is read while this one's bytes are written, and the log's
//! writer can combine both into one write. A bad frame closes this
//! connection only, with a log line.

use std::future::Future;
use std::pin::Pin;

use bytes::{Bytes, BytesMut};
use compio::buf::BufResult;
use compio::io::{AsyncReadExt, AsyncWriteExt};
use compio::net::TcpStream;
use odradek_engine::io::splice::{send_file_range, SplicePipe};
use odradek_engine::io::uring::UringFile;
use odradek_engine::log::FileSlice;

use crate::broker::Ctx;
use crate::handlers;
use crate::protocol::{self, FrameError};

/// A response ready to write.
pub enum Reply {
    /// acks=0 produce: nothing goes back.
    None,
    /// A whole encoded frame.
    Frame(Bytes),
    /// A frame whose record bytes come from segment files.
    Parts(Vec<Part>),
    /// Close the connection (e.g. an acks=0 produce failed).
    Close(String),
}

/// A piece of a response.
pub enum Part {
    Bytes(Bytes),
    File(FileSlice<UringFile>),
}

/// The second phase of a request.
pub type Pending = Pin<Box<dyn Future<Output = Reply>>>;

/// A request whose reply the writer awaits, with what metrics need.
struct InFlight {
    key: kafka_protocol::messages::ApiKey,
    started: std::time::Instant,
    reply: Pending,
}

/// Requests in flight per connection before the reader waits.
const MAX_IN_FLIGHT: usize = 32;
/// Read granularity: a frame's buffer grows by at most this per read, so a
/// peer that announces a large frame and stalls holds little memory.
const READ_CHUNK: usize = 1 << 20;

/// Serve one connection until the peer closes it, it misbehaves, or the
/// broker stops.
pub async fn serve(ctx: Ctx, stream: TcpStream, peer: std::net::SocketAddr) {
    let m = ctx.broker.metrics.shard(ctx.shard.id);
    m.connections_accepted
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    m.connections
        .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let (reader, writer) = stream.into_split();
    let (tx, rx) = flume::bounded::<InFlight>(MAX_IN_FLIGHT);
    let write_task = compio::runtime::spawn(write_loop(ctx.clone(), writer, rx, peer));
    match read_loop(&ctx, reader, tx).await {
        Ok(()) => tracing::debug!(%peer, "connection closed by peer"),
        // A reset socket is the peer's business; bad input (a frame cut
        // short included) is worth a line.
        Err(FrameError::Io(e)) if e.kind() != std::io::ErrorKind::UnexpectedEof => {
            tracing::debug!(%peer, "connection lost: {e}")
        }
        Err(e) => {
            m.connections_closed_bad_input
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::info!(%peer, "closing connection: {e}")
        }
    }
    let _ = write_task.await;
    m.connections
        .fetch_sub(1, std::sync::atomic::Ordering::Relaxed);
}

async fn read_more(
    stream: &mut TcpStream,
    buf: BytesMut,
    want: usize,
) -> Result<BytesMut, FrameError> {
    let mut buf = buf;
    buf.reserve(want.clamp(1, READ_CHUNK));
    let BufResult(res, buf) = stream.append(buf).await;
    match res? {
        0 => Err(FrameError::Io(std::io::ErrorKind::UnexpectedEof.into())),
        _ => Ok(buf),
    }
}

async fn read_loop(
    ctx: &Ctx,
    mut stream: TcpStream,
    tx: flume::Sender<InFlight>,
) -> Result<(), FrameError> {
    let max = ctx.broker.config.socket_request_max_bytes;
    let mut buf = BytesMut::with_capacity(64 * 1024);
    loop {
        if ctx.broker.is_stopping() {
            return Ok(());
        }
        while buf.len() < 4 {
            buf = match read_more(&mut stream, buf, 64 * 1024).await {
                Ok(b) => b,
                Err(FrameError::Io(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                    return Ok(())
                }
                Err(e) => return Err(e),
            };
        }
        let size = protocol::check_size(i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]), max)?;
        while buf.len() < 4 + size {
            let want = 4 + size - buf.len();
            buf = read_more(&mut stream, buf, want).await?;
        }
        let mut frame = buf.split_to(4 + size);
        let _ = frame.split_to(4);
        let started = std::time::Instant::now();
        let (key, reply) = handlers::dispatch(ctx, frame.freeze()).await?;
        let in_flight = InFlight {
            key,
            started,
            reply,
        };
        if tx.send_async(in_flight).await.is_err() {
            return Ok(()); // writer gone: the socket failed
        }
    }
}

async fn write_loop(
    ctx: Ctx,
    mut stream: TcpStream,
    rx: flume::Receiver<InFlight>,
    peer: std::net::SocketAddr,
) {
    let mut pipe: Option<SplicePipe> = None;
    while let Ok(in_flight) = rx.recv_async().await {
        let reply = in_flight.reply.await;
        ctx.broker
            .metrics
            .request(ctx.shard.id, in_flight.key, in_flight.started.elapsed());
        let res = match reply {
            Reply::None => Ok(()),
            Reply::Frame(b) => write_bytes(&mut stream, b).await,
            Reply::Parts(parts) => write_parts(&mut stream, parts, &mut pipe).await,
            Reply::Close(why) => {
                tracing::info!(%peer, "closing connection: {why}");
                break;
            }
        };
        if let Err(e) = res {
            tracing::debug!(%peer, "write failed: {e}");
            break;
        }
    }
    // Wake a reader blocked on the socket.
    let _ = compio::io::AsyncWrite::shutdown(&mut stream).await;
}

async fn write_bytes(stream: &mut TcpStream, b: Bytes) -> std::io::Result<()> {
    let BufResult(res, _) = stream.write_all(b).await;
    res
}

async fn write_parts(
    stream: &mut TcpStream,
    parts: Vec<Part>,
    pipe: &mut Option<SplicePipe>,
) -> std::io::Result<()> {
    for part in parts {
        match part {
            Part::Bytes(b) => write_bytes(stream, b).await?,
            Part::File(slice) => {
                if pipe.is_none() {
                    *pipe = Some(SplicePipe::new()?);
                }
                let p = pipe.as_mut().expect("pipe created above");
                send_file_range(&slice.file, slice.position, slice.len, &*stream, p).await?;
            }
        }
    }
    Ok(())
}

/// A reply that is already known.
pub fn ready(reply: Reply) -> Pending {
    Box::pin(std::future::ready(reply))
}

/// Shared by handlers that answer with an encoded message.
pub fn frame(bytes: Result<Bytes, FrameError>) -> Result<Pending, FrameError> {
    Ok(ready(Reply::Frame(bytes?)))
}
