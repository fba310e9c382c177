//! Starting and stopping a broker: shards, recovery of every partition,
//! one SO_REUSEPORT listener per shard, clean shutdown.

use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use odradek_engine::shard::{ShardConfig, ShardPool};
use socket2::{Domain, Protocol, Socket, Type};

use crate::broker::{Broker, Ctx};
use crate::config::BrokerConfig;
use crate::connection;
use crate::metadata::Registry;

/// A running broker.
pub struct Server {
    pub broker: Arc<Broker>,
    pub local_addr: SocketAddr,
    /// Where `/metrics` and `/health` are served, if they are.
    pub metrics_addr: Option<SocketAddr>,
    pool: ShardPool,
}

/// Fail with `AddrInUse` if anything listens on `addr` already. The shard
/// listeners share their port through SO_REUSEPORT, which would also let a
/// second broker of the same user join the group and silently take half
/// the connections; a plain bind (SO_REUSEADDR only, so a restart is not
/// refused for connections in TIME_WAIT) is refused by any listener. With
/// port 0 it picks the free port the group then binds.
///
/// A broker that just stopped can hold its port a few milliseconds longer
/// (its io_uring, with the accepts in flight, is torn down after it
/// exits), so a busy port is retried for up to 2 s before giving up.
fn claim_port(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    let deadline = std::time::Instant::now() + Duration::from_secs(2);
    loop {
        match try_claim_port(addr) {
            Err(e)
                if e.kind() == std::io::ErrorKind::AddrInUse
                    && std::time::Instant::now() < deadline =>
            {
                std::thread::sleep(Duration::from_millis(50));
            }
            r => return r,
        }
    }
}

fn try_claim_port(addr: SocketAddr) -> std::io::Result<SocketAddr> {
    bound(addr, false)?
        .local_addr()?
        .as_socket()
        .ok_or_else(|| std::io::Error::other("not an inet address"))
}

/// A TCP socket bound to `addr` with SO_REUSEADDR (and SO_REUSEPORT if asked).
fn bound(addr: SocketAddr, reuse_port: bool) -> std::io::Result<Socket> {
    let s = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    s.set_reuse_port(reuse_port)?;
    s.bind(&addr.into())?;
    Ok(s)
}

fn reuseport_listener(addr: SocketAddr) -> std::io::Result<TcpListener> {
    let s = bound(addr, true)?;
    s.listen(1024)?;
    Ok(s.into())
}

impl Server {
    /// Start: recover every partition, then listen on every shard.
    pub fn start(mut config: BrokerConfig, advertised_explicit: bool) -> Result<Self, String> {
        let cluster = crate::cluster::runtime::Cluster::from_config(&config)?;
        // A cluster member's topics come from the controller log.
        let registry = match &cluster {
            Some(_) => {
                std::fs::create_dir_all(&config.log_dir)
                    .map_err(|e| format!("creating {}: {e}", config.log_dir.display()))?;
                Registry::in_memory()
            }
            None => Registry::load(&config.log_dir)
                .map_err(|e| format!("loading topics from {}: {e}", config.log_dir.display()))?,
        };
        let producer_ids = crate::producer_ids::ProducerIds::load(&config.log_dir)
            .map_err(|e| format!("loading producer ids: {e}"))?;
        let mut shard_cfg = ShardConfig::new(&config.log_dir);
        shard_cfg.shards = crate::config::resolve_shards(config.shards);
        shard_cfg.retention_check = config.retention_check;
        shard_cfg.cleaner_backoff = config.log_cleaner_backoff;
        shard_cfg.cache_bytes = config.log_cache_bytes_per_shard;
        let pool = ShardPool::start(shard_cfg).map_err(|e| format!("starting shards: {e}"))?;
        // Claim the port (0 = any free port; refused if in use), then one
        // SO_REUSEPORT listener per shard on it.
        let first = claim_port(config.listener)
            .and_then(reuseport_listener)
            .map_err(|e| format!("listening on {}: {e}", config.listener))?;
        let local_addr = first.local_addr().map_err(|e| e.to_string())?;
        if !advertised_explicit {
            config.advertised = (local_addr.ip().to_string(), local_addr.port());
        }
        let mut listeners = vec![first];
        for _ in 1..pool.len() {
            listeners.push(
                reuseport_listener(local_addr)
                    .map_err(|e| format!("listening on {local_addr}: {e}"))?,
            );
        }
        let config_limits = config.group_limits();
        let broker = Arc::new(Broker {
            cluster_id: match &cluster {
                Some(c) => c.cluster_id.clone(),
                None => cluster_id(&config),
            },
            cluster: cluster.clone(),
            config,
            registry,
            shards: pool.handle(),
            stopping: Default::default(),
            groups: crate::groups::Coordinator::new(config_limits, cluster.is_some()),
            metrics: crate::metrics::Metrics::new(pool.len()),
            producer_ids,
        });
        // Recover every partition on its owner before serving.
        let b = broker.clone();
        pool.call(0, move |shard| async move {
            let ctx = Ctx {
                broker: b.clone(),
                shard,
                peer: None,
            };
            for meta in b.registry.snapshot().topics.values() {
                ctx.open_partitions(meta, 0, meta.partitions).await?;
            }
            // Groups and offsets of an existing offsets topic come back
            // before the first client does.
            if b.registry
                .snapshot()
                .get(crate::groups::OFFSETS_TOPIC)
                .is_some()
            {
                b.groups
                    .ensure(&ctx)
                    .await
                    .map_err(|e| format!("loading consumer groups: {e:?}"))?;
            }
            compio::runtime::spawn(crate::groups::Coordinator::run_ticks(ctx.clone())).detach();
            // In a cluster, groups follow their offsets partitions' leaders.
            compio::runtime::spawn(crate::groups::Coordinator::run_leadership(ctx.clone()))
                .detach();
            Ok::<(), String>(())
        })
        .map_err(|e| e.to_string())??;
        if let Some(c) = &cluster {
            c.start(&broker)?;
        }
        for (i, l) in listeners.into_iter().enumerate() {
            let b = broker.clone();
            // The accept loop lives as long as the shard.
            pool.call(i, move |shard| async move {
                compio::runtime::spawn(accept_loop(
                    Ctx {
                        broker: b,
                        shard,
                        peer: None,
                    },
                    l,
                ))
                .detach();
            })
            .map_err(|e| e.to_string())?;
        }
        let metrics_addr = match broker.config.metrics_listener {
            None => None,
            Some(addr) => match crate::metrics::bind(addr) {
                Ok(l) => {
                    let bound = l.local_addr().ok();
                    crate::metrics::serve(broker.clone(), l);
                    if let Some(a) = bound {
                        tracing::info!(address = %a, "metrics and health on http://{a}/metrics");
                    }
                    bound
                }
                Err(e) => {
                    tracing::warn!(address = %addr, "metrics listener not started: {e}");
                    None
                }
            },
        };
        tracing::info!(address = %local_addr, advertised = %format!("{}:{}", broker.config.advertised.0, broker.config.advertised.1), shards = pool.len(), log_dir = %broker.config.log_dir.display(), "odradek broker listening on {local_addr}");
        Ok(Self {
            broker,
            local_addr,
            metrics_addr,
            pool,
        })
    }

    /// Stop taking requests, give in-flight ones a moment, flush and close
    /// every partition, stop the shards.
    pub fn shutdown(self) {
        self.broker.stopping.store(true, Ordering::Relaxed);
        if let Some(c) = &self.broker.cluster {
            c.stop();
        }
        std::thread::sleep(Duration::from_millis(200));
        self.pool.shutdown();
        tracing::info!("odradek broker stopped");
    }
}

fn cluster_id(config: &BrokerConfig) -> String {
    // Stable per data directory.
    let path = config.log_dir.join("cluster.id");
    if let Ok(id) = std::fs::read_to_string(&path) {
        let id = id.trim().to_string();
        if !id.is_empty() {
            return id;
        }
    }
    let id = uuid::Uuid::new_v4().simple().to_string();
    let _ = std::fs::write(&path, &id);
    id
}

async fn accept_loop(ctx: Ctx, listener: TcpListener) {
    let listener = match compio::net::TcpListener::from_std(listener) {
        Ok(l) => l,
        Err(e) => {
            tracing::error!(shard = ctx.shard.id, "listener: {e}");
            return;
        }
    };
    loop {
        match listener.accept().await {
            Ok((stream, peer)) => {
                if ctx.broker.is_stopping() {
                    continue;
                }
                let _ = stream.set_nodelay(true);
                let ctx = Ctx {
                    peer: Some(peer),
                    ..ctx.clone()
                };
                compio::runtime::spawn(connection::serve(ctx, stream, peer)).detach();
            }
            Err(e) => {
                tracing::warn!(shard = ctx.shard.id, "accept failed: {e}");
                compio::time::sleep(Duration::from_millis(10)).await;
            }
        }
    }
}
