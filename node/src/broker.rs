//! Broker state shared by all shards, and routing to partition owners.

use std::future::Future;
use std::rc::Rc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use odradek_engine::log::LogError;
use odradek_engine::shard::{Log, Shard, ShardGone, Shards, TopicPartition};

use crate::config::BrokerConfig;
use crate::metadata::{topic_log_config, AdminError, Registry, TopicMeta};

/// What every shard shares: settings, topics, the shard handles.
pub struct Broker {
    pub config: BrokerConfig,
    pub registry: Registry,
    pub shards: Shards,
    /// Set when shutdown begins: connections stop taking requests.
    pub stopping: AtomicBool,
    pub cluster_id: String,
    /// Counters for the metrics endpoint.
    pub metrics: crate::metrics::Metrics,
    /// Consumer groups and committed offsets.
    pub groups: crate::groups::Coordinator,
    /// InitProducerId's allocator.
    pub producer_ids: crate::producer_ids::ProducerIds,
    /// Set when this broker is one of a cluster (`controller.quorum.voters`):
    /// topics are replicated and decided by the controller.
    pub cluster: Option<Arc<crate::cluster::runtime::Cluster>>,
}

impl Broker {
    pub fn is_stopping(&self) -> bool {
        self.stopping.load(Ordering::Relaxed)
    }

    /// This broker's cluster, and `topic` is one it replicates.
    pub fn replicated(&self, topic: &str) -> Option<&Arc<crate::cluster::runtime::Cluster>> {
        self.cluster.as_ref().filter(|c| c.topic(topic).is_some())
    }
}

/// A request's view of the world: the broker and the shard it runs on.
#[derive(Clone)]
pub struct Ctx {
    pub broker: Arc<Broker>,
    pub shard: Rc<Shard>,
    /// The client's address, on a connection's context.
    pub peer: Option<std::net::SocketAddr>,
}

impl Ctx {
    /// Run `f` on the shard that owns `tp` (directly if that is this one).
    pub async fn on_owner<T, F, Fut>(&self, tp: &TopicPartition, f: F) -> Result<T, ShardGone>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Shard>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let owner = self.broker.shards.owner_of(tp);
        if owner == self.shard.id {
            Ok(f(self.shard.clone()).await)
        } else {
            self.broker.shards.run_on(owner, f).await
        }
    }

    /// Run `f` with the open log of `tp` on its owner shard; `None` if the
    /// partition is not open there.
    pub async fn with_log<T, F, Fut>(
        &self,
        tp: &TopicPartition,
        f: F,
    ) -> Result<Option<T>, ShardGone>
    where
        T: Send + 'static,
        F: FnOnce(Rc<Log>) -> Fut + Send + 'static,
        Fut: Future<Output = T> + 'static,
    {
        let tp2 = tp.clone();
        self.on_owner(tp, move |shard| async move {
            match shard.partition(&tp2) {
                Some(log) => Some(f(log).await),
                None => None,
            }
        })
        .await
    }

    /// Run a registry change off the shard thread (the registry writes and
    /// fsyncs its file).
    pub async fn registry<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Broker) -> Result<T, AdminError> + Send + 'static,
    ) -> Result<T, AdminError> {
        let broker = self.broker.clone();
        compio::runtime::spawn_blocking(move || f(&broker))
            .await
            .unwrap_or_else(|_| {
                Err(AdminError::new(
                    kafka_protocol::ResponseError::UnknownServerError,
                    "registry task panicked",
                ))
            })
    }

    /// Open (create or recover) partitions `from..to` of a topic, each on
    /// its owner shard.
    pub async fn open_partitions(
        &self,
        meta: &TopicMeta,
        from: i32,
        to: i32,
    ) -> Result<(), String> {
        let config = topic_log_config(&self.broker.config, &meta.configs).map_err(|e| e.message)?;
        for p in from..to {
            let tp = TopicPartition::new(&meta.name, p);
            let cfg = config.clone();
            let tp2 = tp.clone();
            let opened = self
                .on_owner(&tp, move |shard| async move {
                    shard
                        .open_partition(&tp2, cfg)
                        .await
                        .map(|(_, report)| report)
                        .map_err(|e: LogError| e.to_string())
                })
                .await
                .map_err(|e| e.to_string())?;
            match opened? {
                Some(r) if r.truncated_bytes > 0 || r.dropped_segments > 0 => {
                    tracing::warn!(partition = %tp, cut = r.truncated_bytes, dropped = r.dropped_segments, reason = r.reason.as_deref().unwrap_or(""), "recovered with data cut")
                }
                _ => {}
            }
        }
        Ok(())
    }
}
