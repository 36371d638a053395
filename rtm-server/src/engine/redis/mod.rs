//! The Redis engine: one rtm service over many nodes (`docs/architecture.md`, "Cluster").
//!
//! Each node keeps its own sessions in a [`MemoryEngine`] used as a local router: who on this
//! node subscribes to what, with which options, and the outboxes to push to. What the nodes
//! share lives in Redis: who is online where (a key per user holding the session id, whose
//! high bits name the node), who is present in each channel with which state, and the pending
//! leaves of the presence debounce. Events travel through Redis pub/sub, already encoded:
//!
//! - a channel's *bus* carries its messages and presence events; a node subscribes to it while
//!   it has a member of the channel, so an event reaches only nodes that have someone to give
//!   it to, and each node pushes the same bytes to all its members (encode once survives);
//! - a node's *inbox* carries what is for one of its sessions: a user-channel message, or the
//!   order to close a session because its user logged in on another node.
//!
//! Redis delivers the messages of one pub/sub channel in the order it received them, and a
//! node sends its commands in order on one connection, so the frames of one publisher to one
//! channel keep their order. Every command has a deadline: a call made while Redis is
//! unreachable fails with [`EngineError::Unavailable`] instead of hanging, and the connection
//! manager reconnects (and subscribes again) in the background.

mod bus;
mod envelope;
mod history;
mod inspect;
mod keys;
mod listeners;
mod lock_store;
mod lock_waits;
mod locks;
mod metadata;
mod presence;
mod reaper;
mod relay_out;
mod router;
mod shards;
mod store;
mod topic_repairs;
mod topics;
mod upkeep;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rtm_proto::ChannelType;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use self::bus::Bus;
use self::listeners::Listeners;
use self::lock_waits::LockWaits;
use self::topic_repairs::TopicRepairs;
use self::topics::StaleTopics;
#[cfg(doc)]
use super::Router;
use super::relay::Relays;
use super::{Departed, EngineError, MemoryEngine, SessionId};

/// A channel of a session's app, as the membership list keeps it.
type ChannelRef = (ChannelType, Box<str>);

/// How the Redis engine reaches Redis.
#[derive(Clone, Debug)]
pub struct RedisConfig {
    /// One URL per shard (`redis://host:port/`, `rediss://...`, `redis+unix:///path`); each is
    /// an independent server, and every node must list the same ones in the same order.
    pub urls: Vec<String>,
    /// A name for this node in logs; one is made up when absent.
    pub node_name: Option<String>,
    /// How long one Redis command may take before the call that made it fails.
    pub command_timeout: Duration,
    /// How often the node tells the registry that it is alive.
    pub heartbeat: Duration,
    /// How long after its last heartbeat a node is dead for the others: they time its users
    /// out, free its users' names, and start its locks' ttl.
    pub node_timeout: Duration,
    /// Where the engine counts its commands' latency and failures (the server's own
    /// counters; fresh ones when absent).
    pub metrics: Option<Arc<crate::metrics::Metrics>>,
}

impl RedisConfig {
    /// The defaults for `urls`: 2 s per command, a heartbeat every second, a node dead after
    /// 15 s without one.
    pub fn new(urls: Vec<String>) -> Self {
        Self {
            urls,
            node_name: None,
            command_timeout: Duration::from_secs(2),
            heartbeat: Duration::from_secs(1),
            node_timeout: Duration::from_secs(15),
            metrics: None,
        }
    }
}

/// One Redis server: a connection for commands and one for pub/sub (so that a burst of
/// events never queues in front of a command).
struct Shard {
    commands: ConnectionManager,
}

/// The engine for a cluster of nodes sharing Redis. Cheap to clone.
#[derive(Clone)]
pub struct RedisEngine {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for RedisEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisEngine")
            .field("node", &self.inner.node)
            .field("name", &self.inner.name)
            .field("shards", &self.inner.shards.len())
            .finish()
    }
}

struct Inner {
    /// This node's number, from the registry (never 0).
    node: u32,
    name: String,
    shards: Vec<Shard>,
    /// This node's sessions and their subscriptions.
    local: Arc<MemoryEngine>,
    /// Set once the cluster declared this node dead: it takes no more logins.
    fenced: Arc<std::sync::atomic::AtomicBool>,
    bus: Bus,
    /// This node's listeners of metadata sets.
    listeners: Arc<Listeners>,
    /// This node's listeners of channels' lock events.
    lock_listeners: Arc<Listeners>,
    /// This node's sessions waiting for locks.
    lock_waits: Arc<LockWaits>,
    /// Stream channels whose topic lists the bus may have failed to bring.
    stale_topics: Arc<StaleTopics>,
    /// Publisher entries Redis did not confirm, for the upkeep to correct.
    topic_repairs: TopicRepairs,
    /// Held from a login's local registration to its key write ([`Router::attach`]).
    logins: tokio::sync::Mutex<()>,
    /// The channels each local session is a member of, for leaving them all at once.
    memberships: Mutex<HashMap<SessionId, HashSet<ChannelRef>>>,
    timeout: Duration,
    /// Command latency and failures.
    metrics: Arc<crate::metrics::Metrics>,
    /// See [`RedisConfig::node_timeout`].
    node_timeout: Duration,
    /// Members of channels whose node died, for the core to tell their departure.
    departures: mpsc::UnboundedSender<Departed>,
    departures_rx: Mutex<Option<mpsc::UnboundedReceiver<Departed>>>,
    /// The counter of this node's session ids.
    sessions: AtomicU64,
    /// The counter of this node's leave tickets.
    tickets: AtomicU64,
    /// The heartbeat task, stopped when the engine goes.
    heartbeat: tokio::task::JoinHandle<()>,
    /// The upkeep task (`upkeep.rs`), stopped when the engine goes.
    upkeep: Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// This node's relayed connections (`engine/relay`).
    relays: Arc<Relays>,
    /// The tasks that carry and keep them, stopped when the engine goes.
    relay_tasks: [tokio::task::JoinHandle<()>; 2],
}

impl Drop for Inner {
    fn drop(&mut self) {
        self.heartbeat.abort();
        if let Some(upkeep) = self
            .upkeep
            .get_mut()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .take()
        {
            upkeep.abort();
        }
        for task in &self.relay_tasks {
            task.abort();
        }
    }
}

/// A Redis failure as the engine reports it (the text goes to the server's log only).
fn unavailable(e: impl std::fmt::Display) -> EngineError {
    EngineError::Unavailable(format!("redis: {e}"))
}

/// `url` asking for RESP3, which pub/sub on a shared connection needs.
fn with_resp3(url: &str) -> String {
    if url.contains("protocol=") {
        url.to_owned()
    } else if url.contains('?') {
        format!("{url}&protocol=resp3")
    } else {
        format!("{url}?protocol=resp3")
    }
}

impl RedisEngine {
    /// Connects to every shard, takes a node number from the registry, and starts the
    /// heartbeat. Fails if a shard cannot be reached within the command timeout.
    pub async fn open(config: RedisConfig) -> Result<Self, EngineError> {
        if config.urls.is_empty() {
            return Err(EngineError::Unusable(
                "the Redis engine needs at least one URL ([engine] urls)".into(),
            ));
        }
        let timeout = config.command_timeout;
        let mut shards = Vec::with_capacity(config.urls.len());
        let mut clients = Vec::with_capacity(config.urls.len());
        for url in &config.urls {
            let client = redis::Client::open(with_resp3(url)).map_err(|e| {
                EngineError::Unusable(format!("Redis URL {url:?} is not usable: {e}"))
            })?;
            let manager_config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_number_of_retries(2)
                .set_max_delay(Duration::from_secs(1));
            let commands = tokio::time::timeout(
                timeout,
                client.get_connection_manager_with_config(manager_config),
            )
            .await
            .map_err(|_| unavailable(format!("{url}: no answer within {timeout:?}")))?
            .map_err(|e| unavailable(format!("{url}: {e}")))?;
            shards.push(Shard { commands });
            clients.push(client);
        }
        let mut first = shards[0].commands.clone();
        let node: u64 = tokio::time::timeout(
            timeout,
            redis::cmd("INCR")
                .arg(keys::NODE_SEQ)
                .query_async(&mut first),
        )
        .await
        .map_err(|_| unavailable("no node number within the timeout"))?
        .map_err(unavailable)?;
        // Node numbers take SessionId::NODE_BITS bits; 0 is a server that runs alone.
        let node = (node % ((1 << SessionId::NODE_BITS) - 1) + 1) as u32;
        let name = config.node_name.unwrap_or_else(|| format!("node-{node}"));
        let bus = Bus::connect(&clients, node, timeout).await?;
        let local = Arc::new(MemoryEngine::for_cluster());
        // In the registry before the node serves anything, so that a node that dies at once is
        // still found and reaped.
        let mut first_beat = BEAT.prepare_invoke();
        first_beat.key(keys::NODES).arg(node).arg("0");
        match tokio::time::timeout(timeout, first_beat.invoke_async::<i64>(&mut first)).await {
            Ok(Ok(1)) => {}
            Ok(Ok(_)) => return Err(unavailable("the node registry refused this node")),
            Ok(Err(e)) => return Err(unavailable(e)),
            Err(_) => return Err(unavailable("no heartbeat recorded within the timeout")),
        }
        let fenced = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let heartbeat = tokio::spawn(heartbeat(
            first,
            (node, config.heartbeat, timeout),
            local.clone(),
            fenced.clone(),
        ));
        tracing::info!(node, %name, shards = shards.len(), "joined the cluster");
        let (lock_waits, orphans) = LockWaits::new();
        let (departures, departures_rx) = mpsc::unbounded_channel();
        let (relays, relay_out) = Relays::new(node);
        let relay_tasks = [
            tokio::spawn(relay_out::carry(
                relays.clone(),
                shards[0].commands.clone(),
                relay_out,
                timeout,
            )),
            tokio::spawn(relays.clone().upkeep()),
        ];
        let engine = Self {
            inner: Arc::new(Inner {
                node,
                name,
                shards,
                local,
                fenced,
                bus,
                listeners: Arc::default(),
                lock_listeners: Arc::default(),
                lock_waits: Arc::new(lock_waits),
                stale_topics: Arc::default(),
                topic_repairs: TopicRepairs::default(),
                logins: tokio::sync::Mutex::new(()),
                memberships: Mutex::default(),
                timeout,
                metrics: config.metrics.unwrap_or_default(),
                node_timeout: config.node_timeout,
                departures,
                departures_rx: Mutex::new(Some(departures_rx)),
                sessions: AtomicU64::new(1),
                tickets: AtomicU64::new(1),
                heartbeat,
                upkeep: Mutex::new(None),
                relays,
                relay_tasks,
            }),
        };
        engine.inner.bus.start(bus::Receivers {
            local: engine.inner.local.clone(),
            listeners: engine.inner.listeners.clone(),
            lock_listeners: engine.inner.lock_listeners.clone(),
            lock_waits: engine.inner.lock_waits.clone(),
            relays: engine.inner.relays.clone(),
            stale_topics: engine.inner.stale_topics.clone(),
        });
        let upkeep = tokio::spawn(upkeep::upkeep(upkeep::weak(&engine), orphans));
        *engine
            .inner
            .upkeep
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(upkeep);
        Ok(engine)
    }

    /// This node's number in the cluster.
    pub fn node(&self) -> u32 {
        self.inner.node
    }

    /// Events from other nodes dropped because this node could not keep up (see the bus).
    pub fn dropped_events(&self) -> u64 {
        self.inner.bus.dropped()
    }

    /// The shard holding the keys of `parts` (a channel's or a user's).
    fn shard(&self, parts: &[&[u8]]) -> ConnectionManager {
        let shards = &self.inner.shards;
        let index = shards::jump(shards::fnv1a(parts), shards.len());
        shards[index].commands.clone()
    }

    /// The shard of a channel.
    fn channel_shard(&self, app_id: &str, channel: &str) -> (usize, ConnectionManager) {
        let shards = &self.inner.shards;
        let index = shards::jump(
            shards::fnv1a(&[app_id.as_bytes(), channel.as_bytes()]),
            shards.len(),
        );
        (index, shards[index].commands.clone())
    }

    /// The shard of a user's keys.
    fn user_shard(&self, app_id: &str, user_id: &str) -> ConnectionManager {
        self.shard(&[app_id.as_bytes(), b"\x00user", user_id.as_bytes()])
    }

    /// The index of the shard of a user's keys.
    fn user_shard_index(&self, app_id: &str, user_id: &str) -> usize {
        shards::jump(
            shards::fnv1a(&[app_id.as_bytes(), b"\x00user", user_id.as_bytes()]),
            self.inner.shards.len(),
        )
    }

    /// The first shard: the node registry and the inboxes.
    fn first_shard(&self) -> ConnectionManager {
        self.inner.shards[0].commands.clone()
    }

    /// Runs a command (or pipeline, or script) within the command timeout.
    async fn run<T>(
        &self,
        what: &str,
        fut: impl Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, EngineError> {
        let started = tokio::time::Instant::now();
        let answer = tokio::time::timeout(self.inner.timeout, fut).await;
        let metrics = &self.inner.metrics;
        metrics
            .redis_command_duration
            .observe(started.elapsed().as_secs_f64());
        match answer {
            Ok(Ok(value)) => Ok(value),
            Ok(Err(e)) => {
                metrics.redis_errors.inc();
                metrics.recent_errors.note(format!("Redis {what}: {e}"));
                Err(unavailable(format!("{what}: {e}")))
            }
            Err(_) => {
                metrics.redis_errors.inc();
                let timeout = self.inner.timeout;
                metrics
                    .recent_errors
                    .note(format!("Redis {what}: no answer within {timeout:?}"));
                Err(unavailable(format!("{what}: no answer within {timeout:?}")))
            }
        }
    }

    /// A new ticket for a debounced leave, unique in the cluster.
    fn next_ticket(&self) -> u64 {
        SessionId::new(
            self.inner.node,
            self.inner.tickets.fetch_add(1, Ordering::Relaxed),
        )
        .0
    }
}

/// Records a heartbeat at Redis's time (one clock for every node): KEYS[1] the registry,
/// ARGV[1] the node, ARGV[2] '1' once it has beaten before. Returns -1, recording nothing, if
/// the node had beaten before and is no longer in the registry: the others declared it dead.
static BEAT: std::sync::LazyLock<redis::Script> = std::sync::LazyLock::new(|| {
    redis::Script::new(
        r"
        if ARGV[2] == '1' and not redis.call('ZSCORE', KEYS[1], ARGV[1]) then
            return -1
        end
        local t = redis.call('TIME')
        redis.call('ZADD', KEYS[1], tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000),
            ARGV[1])
        return 1
        ",
    )
});

/// Tells the registry every `every` that node `node` is alive, until the engine goes. If the
/// others have declared it dead meanwhile (it was silent past the node timeout, and they timed
/// its users out), it fences itself: it closes every local session, so that their clients log
/// in again (here or elsewhere) and are counted once more, and refuses new logins (`fenced`);
/// the node must be restarted to rejoin.
async fn heartbeat(
    mut conn: ConnectionManager,
    (node, every, timeout): (u32, Duration, Duration),
    local: Arc<MemoryEngine>,
    fenced: Arc<std::sync::atomic::AtomicBool>,
) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    // `open` made the first beat.
    let mut registered = true;
    loop {
        tick.tick().await;
        let mut beat = BEAT.prepare_invoke();
        beat.key(keys::NODES)
            .arg(node)
            .arg(if registered { "1" } else { "0" });
        match tokio::time::timeout(timeout, beat.invoke_async::<i64>(&mut conn)).await {
            Ok(Ok(1)) => registered = true,
            Ok(Ok(_)) => {
                tracing::error!(
                    node,
                    "the cluster declared this node dead (no heartbeat within the node timeout) \
                     and timed its users out: closing its sessions and refusing logins; restart \
                     the node to rejoin"
                );
                fenced.store(true, Ordering::Relaxed);
                for session in local.all_sessions() {
                    session.close(rtm_proto::CloseReason::ServerShutdown);
                }
                return;
            }
            Ok(Err(e)) => tracing::warn!(node, "heartbeat not recorded: {e}"),
            Err(_) => tracing::warn!(node, "heartbeat not recorded within {timeout:?}"),
        }
    }
}
