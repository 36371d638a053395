//! The node's side of Redis pub/sub: which buses it listens to, and the task that hands what
//! arrives to the local sessions.
//!
//! One pub/sub connection per shard (RESP3, subscribed again automatically after a reconnect)
//! feeds one bounded queue. A node that cannot keep up drops what does not fit and counts it
//! ([`Bus::dropped`]) rather than making Redis hold it: Redis would otherwise buffer for the slow
//! node until it disconnects it, and every other node would wait on nothing.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use redis::aio::ConnectionManager;
use redis::{PushInfo, PushKind, Value};
use rtm_proto::ChannelType;
use tokio::sync::mpsc;

use super::envelope::Envelope;
use super::listeners::Listeners;
use super::lock_waits::LockWaits;
use super::topics::StaleTopics;
use super::{keys, unavailable};
use crate::clock::now_ms;
use crate::engine::relay::Relays;
use crate::engine::{EngineError, MemoryEngine, Router};

/// Most events waiting for the dispatcher; more are dropped and counted.
const QUEUE: usize = 1 << 16;

/// The channel a bus belongs to, and the shard it is on.
#[derive(Clone, Debug)]
struct Route {
    app_id: Box<str>,
    channel_type: ChannelType,
    channel: Box<str>,
    shard: usize,
}

/// The channel of each subscribed bus.
type Routes = RwLock<HashMap<String, Route>>;

/// What the dispatcher gets: what a shard's pub/sub connection received, or the news that a
/// shard's connection is back after it was lost (since `since`, Unix ms; back at `at`).
enum Item {
    Push(usize, PushInfo),
    Back { shard: usize, since: u64, at: u64 },
}

/// A lost pub/sub connection may already have missed what came just before its loss was seen.
const GAP_MARGIN_MS: u64 = 1_000;

/// The node's pub/sub connections and subscriptions.
pub(super) struct Bus {
    conns: Vec<ConnectionManager>,
    /// Local members per bus: the bus is subscribed while this is above 0. An async mutex,
    /// held across the (un)subscribe command, so that the commands for one bus go out in the
    /// order of the changes.
    refs: tokio::sync::Mutex<HashMap<String, usize>>,
    /// The channel of each subscribed bus, for the dispatcher.
    routes: Arc<RwLock<HashMap<String, Route>>>,
    inbox: String,
    dropped: Arc<AtomicU64>,
    /// Per shard: since when its pub/sub connection is lost (Unix ms; 0 while it is up).
    gaps: Arc<Vec<AtomicU64>>,
    tx: mpsc::Sender<Item>,
    rx: Mutex<Option<mpsc::Receiver<Item>>>,
    /// The dispatcher and the keep-alive, stopped when the bus goes.
    tasks: Mutex<Vec<tokio::task::JoinHandle<()>>>,
    timeout: Duration,
}

impl Drop for Bus {
    fn drop(&mut self) {
        for task in self
            .tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .drain(..)
        {
            task.abort();
        }
    }
}

/// How often each pub/sub connection is pinged. The connection manager reconnects (and
/// subscribes again) when a command finds the connection broken, but gives up after its
/// retries if Redis stays away longer; a connection that only receives then never sends again,
/// so without these pings a node would stay deaf after a Redis restart.
const KEEPALIVE: Duration = Duration::from_secs(1);

/// Pings every pub/sub connection every [`KEEPALIVE`], until the bus goes; tells the
/// dispatcher when a connection that was lost answers again (it has subscribed again by then:
/// the connection manager does that first).
async fn keepalive(
    conns: Vec<ConnectionManager>,
    timeout: Duration,
    gaps: Arc<Vec<AtomicU64>>,
    tx: mpsc::Sender<Item>,
) {
    let mut tick = tokio::time::interval(KEEPALIVE);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        for (shard, conn) in conns.iter().enumerate() {
            let mut conn = conn.clone();
            let cmd = redis::cmd("PING");
            let ping = cmd.query_async::<()>(&mut conn);
            match tokio::time::timeout(timeout, ping).await {
                Ok(Ok(())) => {
                    let since = gaps[shard].swap(0, Ordering::AcqRel);
                    if since != 0 {
                        let back = Item::Back {
                            shard,
                            since,
                            at: now_ms(),
                        };
                        if tx.send(back).await.is_err() {
                            return;
                        }
                    }
                }
                Ok(Err(e)) => tracing::debug!("pub/sub connection not answering yet: {e}"),
                Err(_) => tracing::debug!("pub/sub connection not answering yet"),
            }
        }
    }
}

impl Bus {
    /// Opens a pub/sub connection to every shard and subscribes to node `node`'s inbox.
    pub(super) async fn connect(
        clients: &[redis::Client],
        node: u32,
        timeout: Duration,
    ) -> Result<Self, EngineError> {
        let (tx, rx) = mpsc::channel(QUEUE);
        let dropped = Arc::new(AtomicU64::new(0));
        let mut conns = Vec::with_capacity(clients.len());
        for (shard, client) in clients.iter().enumerate() {
            let tx = tx.clone();
            let dropped = dropped.clone();
            let sender = move |info: PushInfo| -> Result<(), redis::aio::SendError> {
                match tx.try_send(Item::Push(shard, info)) {
                    Ok(()) => Ok(()),
                    Err(mpsc::error::TrySendError::Full(_)) => {
                        dropped.fetch_add(1, Ordering::Relaxed);
                        Ok(())
                    }
                    Err(mpsc::error::TrySendError::Closed(_)) => Err(redis::aio::SendError),
                }
            };
            let config = redis::aio::ConnectionManagerConfig::new()
                .set_connection_timeout(Some(timeout))
                .set_response_timeout(Some(timeout))
                .set_max_delay(Duration::from_secs(1))
                .set_push_sender(sender)
                .set_automatic_resubscription();
            let conn =
                tokio::time::timeout(timeout, client.get_connection_manager_with_config(config))
                    .await
                    .map_err(|_| unavailable("pub/sub connection: no answer within the timeout"))?
                    .map_err(unavailable)?;
            conns.push(conn);
        }
        // The inbox on every shard: a script on any shard may publish to it (lock answers).
        let inbox = keys::inbox(node);
        for conn in &conns {
            let mut conn = conn.clone();
            tokio::time::timeout(timeout, conn.subscribe(&inbox))
                .await
                .map_err(|_| unavailable("inbox: no answer within the timeout"))?
                .map_err(unavailable)?;
        }
        let gaps = Arc::new((0..conns.len()).map(|_| AtomicU64::new(0)).collect());
        Ok(Self {
            conns,
            refs: tokio::sync::Mutex::default(),
            routes: Arc::default(),
            inbox,
            dropped,
            gaps,
            tx,
            rx: Mutex::new(Some(rx)),
            tasks: Mutex::new(Vec::new()),
            timeout,
        })
    }

    /// Starts handing what arrives to the node's sessions, listeners and waiters.
    pub(super) fn start(&self, receivers: Receivers) {
        let Some(rx) = self
            .rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        else {
            return;
        };
        let routes = self.routes.clone();
        let inbox = self.inbox.clone();
        let dropped = self.dropped.clone();
        let gaps = self.gaps.clone();
        let dispatcher = tokio::spawn(dispatch(
            rx,
            (routes, gaps.clone()),
            inbox,
            receivers,
            dropped,
        ));
        let pinger = tokio::spawn(keepalive(
            self.conns.clone(),
            self.timeout,
            gaps,
            self.tx.clone(),
        ));
        self.tasks
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .extend([dispatcher, pinger]);
    }

    /// Events dropped because the node could not keep up.
    pub(super) fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// One more local member of the channel of `bus` (on shard `shard`): listens to the bus
    /// if it is the first.
    pub(super) async fn join(
        &self,
        shard: usize,
        bus: &str,
        (app_id, channel_type, channel): (&str, ChannelType, &str),
    ) -> Result<(), EngineError> {
        let mut refs = self.refs.lock().await;
        let count = refs.get(bus).copied().unwrap_or(0);
        if count == 0 {
            self.routes
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(
                    bus.to_owned(),
                    Route {
                        app_id: app_id.into(),
                        channel_type,
                        channel: channel.into(),
                        shard,
                    },
                );
            let mut conn = self.conns[shard].clone();
            let subscribed = tokio::time::timeout(self.timeout, conn.subscribe(bus)).await;
            if let Err(e) = flatten(subscribed) {
                self.routes
                    .write()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(bus);
                return Err(e);
            }
        }
        refs.insert(bus.to_owned(), count + 1);
        Ok(())
    }

    /// One local member fewer: stops listening to the bus after the last (then true).
    pub(super) async fn leave(&self, shard: usize, bus: &str) -> bool {
        self.leave_then(shard, bus, async {}).await
    }

    /// [`Bus::leave`], and after the last member also `on_last`, before any other change of
    /// this node's members of the bus (a join that follows waits for it).
    pub(super) async fn leave_then(
        &self,
        shard: usize,
        bus: &str,
        on_last: impl Future<Output = ()>,
    ) -> bool {
        let mut refs = self.refs.lock().await;
        let Some(count) = refs.get_mut(bus) else {
            return false;
        };
        *count -= 1;
        if *count > 0 {
            return false;
        }
        refs.remove(bus);
        self.routes
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(bus);
        let mut conn = self.conns[shard].clone();
        let unsubscribed = tokio::time::timeout(self.timeout, conn.unsubscribe(bus)).await;
        if let Err(e) = flatten(unsubscribed) {
            // Events that still come are dropped (no route); a reconnect forgets it for good.
            tracing::warn!(bus, "still subscribed: {e}");
        }
        on_last.await;
        true
    }
}

fn flatten(
    result: Result<redis::RedisResult<()>, tokio::time::error::Elapsed>,
) -> Result<(), EngineError> {
    match result {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => Err(unavailable(e)),
        Err(_) => Err(unavailable("no answer within the timeout")),
    }
}

/// The pub/sub channel and payload of a published message.
fn message(info: PushInfo) -> Option<(String, Bytes)> {
    if info.kind != PushKind::Message {
        return None;
    }
    let mut data = info.data.into_iter();
    let channel = match data.next()? {
        Value::BulkString(b) => String::from_utf8(b).ok()?,
        _ => return None,
    };
    let payload = match data.next()? {
        Value::BulkString(b) => Bytes::from(b),
        _ => return None,
    };
    Some((channel, payload))
}

/// Who on this node gets what arrives.
pub(super) struct Receivers {
    /// The node's sessions.
    pub(super) local: Arc<MemoryEngine>,
    /// Its listeners of metadata sets.
    pub(super) listeners: Arc<Listeners>,
    /// Its listeners of lock events.
    pub(super) lock_listeners: Arc<Listeners>,
    /// Its sessions waiting for locks.
    pub(super) lock_waits: Arc<LockWaits>,
    /// Its relayed connections.
    pub(super) relays: Arc<Relays>,
    /// The stream channels whose topic lists may have been missed.
    pub(super) stale_topics: Arc<StaleTopics>,
}

/// Hands each arriving event to the local sessions it is for, in arrival order.
async fn dispatch(
    mut rx: mpsc::Receiver<Item>,
    (routes, gaps): (Arc<Routes>, Arc<Vec<AtomicU64>>),
    inbox: String,
    receivers: Receivers,
    dropped: Arc<AtomicU64>,
) {
    let Receivers {
        local,
        listeners,
        lock_listeners,
        lock_waits,
        relays,
        stale_topics,
    } = receivers;
    let mut dropped_seen = 0;
    let mut last_marked = None;
    while let Some(item) = rx.recv().await {
        let (shard, info) = match item {
            Item::Push(shard, info) => (shard, info),
            Item::Back { shard, since, at } => {
                tell_gap(&local, &routes, shard, (since, at)).await;
                mark_streams(&routes, &stale_topics, Some(shard));
                continue;
            }
        };
        if info.kind == PushKind::Disconnection {
            tracing::warn!(shard, "pub/sub connection to Redis lost; reconnecting");
            let _ = gaps[shard].compare_exchange(
                0,
                now_ms().saturating_sub(GAP_MARGIN_MS).max(1),
                Ordering::AcqRel,
                Ordering::Acquire,
            );
            continue;
        }
        let dropped_now = dropped.load(Ordering::Relaxed);
        if dropped_now > dropped_seen {
            // The events that did not fit are gone for this node's sessions: say so.
            tracing::warn!(
                dropped = dropped_now - dropped_seen,
                total = dropped_now,
                "this node could not keep up with events from Redis; some were dropped"
            );
            dropped_seen = dropped_now;
            // Which channels lost what is not known: every stream channel's lists are asked for
            // again, at most once a second while drops go on.
            if last_marked.is_none_or(|at: Instant| at.elapsed() >= Duration::from_secs(1)) {
                mark_streams(&routes, &stale_topics, None);
                last_marked = Some(Instant::now());
            }
        }
        let Some((channel, payload)) = message(info) else {
            continue;
        };
        let Some(envelope) = Envelope::decode(payload) else {
            tracing::warn!(%channel, "unreadable message on the bus, dropped");
            continue;
        };
        if channel == inbox {
            match envelope {
                Envelope::LockGrant(grant) => lock_waits.answer(grant),
                Envelope::Relay(msg) => relays.deliver(msg),
                envelope => deliver_to_node(&local, envelope).await,
            }
            continue;
        }
        let route = routes
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&channel)
            .cloned();
        // Left since: nobody here to give it to.
        let Some(route) = route else {
            continue;
        };
        let Route {
            app_id,
            channel_type,
            channel,
            ..
        } = &route;
        // The local engine completes at once: these never wait.
        let delivered = match envelope {
            Envelope::Message(frame) => local.publish(app_id, channel, frame).await,
            Envelope::Presence { except, frame } => {
                local
                    .broadcast_presence(app_id, *channel_type, channel, except, frame)
                    .await
            }
            Envelope::Stream { except, frame } => {
                local.broadcast_stream(app_id, channel, except, frame).await
            }
            Envelope::Topic {
                publisher,
                topic,
                frame,
            } => Ok(local.publish_topic_from(app_id, channel, &topic, publisher, &frame)),
            Envelope::Storage { revision, frame } => {
                let set = (app_id.clone(), *channel_type, channel.clone());
                listeners.deliver(&set, revision, &frame);
                continue;
            }
            Envelope::Lock { version, frame } => {
                let set = (app_id.clone(), *channel_type, channel.clone());
                lock_listeners.deliver(&set, version, &frame);
                continue;
            }
            Envelope::Topics(list) => {
                super::topics::apply(&local, app_id, channel, list);
                continue;
            }
            Envelope::ToUser { .. }
            | Envelope::Kick { .. }
            | Envelope::LockGrant(_)
            | Envelope::Relay(_) => continue,
        };
        if let Err(e) = delivered {
            tracing::warn!(%channel, "event not delivered: {e}");
        }
    }
}

/// A shard's pub/sub connection was lost from `since` to `at`: what its buses carried meanwhile
/// did not reach this node. Each local subscriber of a message channel on that shard is told,
/// on the channel's lane, as `MessagesLost` with an unknown count (0); its client recovers what
/// the history has of that window (`docs/protocol.md` §5.12.1).
async fn tell_gap(local: &MemoryEngine, routes: &Routes, shard: usize, (since, at): (u64, u64)) {
    let affected: Vec<Route> = routes
        .read()
        .unwrap_or_else(PoisonError::into_inner)
        .values()
        .filter(|r| r.shard == shard && r.channel_type == ChannelType::Message)
        .cloned()
        .collect();
    tracing::warn!(
        shard,
        channels = affected.len(),
        "pub/sub connection back after {} ms: telling subscribers what they may have missed",
        at.saturating_sub(since)
    );
    for route in affected {
        let lost = rtm_proto::Event::MessagesLost(rtm_proto::LostMessages {
            channel_type: ChannelType::Message,
            channel_name: route.channel.to_string(),
            from: since,
            to: at,
            count: 0,
        });
        let frame = rtm_proto::encode_frame(&rtm_proto::ServerMsg::Event(lost));
        if let Err(e) = local.publish(&route.app_id, &route.channel, frame).await {
            tracing::warn!(channel = %route.channel, "gap not told: {e}");
        }
    }
}

/// Marks the stream channels with members here (on `shard`, or on every shard) for their topic
/// lists to be read again: lists that did not come are not missed for good.
fn mark_streams(routes: &Routes, stale: &StaleTopics, shard: Option<usize>) {
    let routes = routes.read().unwrap_or_else(PoisonError::into_inner);
    for route in routes.values() {
        if route.channel_type == ChannelType::Stream && shard.is_none_or(|s| s == route.shard) {
            stale.mark(&route.app_id, &route.channel);
        }
    }
}

/// Serves what came to this node's inbox.
async fn deliver_to_node(local: &MemoryEngine, envelope: Envelope) {
    match envelope {
        Envelope::ToUser { app, user, frame } => {
            if let Err(e) = local.send_to_user(&app, &user, frame).await {
                tracing::warn!(%user, "user message not delivered: {e}");
            }
        }
        Envelope::Kick {
            app,
            user,
            session,
            reason,
        } => {
            if let Some(handle) = local.session(&app, &user).filter(|s| s.id() == session) {
                handle.close(reason);
            }
        }
        _ => tracing::warn!("a channel event came to the inbox, dropped"),
    }
}
