//! The session supervisor: what keeps a logged-in client logged in across lost connections
//! (`docs/architecture.md`, "Reconnect and resume"; `docs/protocol.md` §5.6).
//!
//! One supervisor task runs per login. It waits for the connection to end. A lost connection
//! sends the link to `DISCONNECTED` and starts the retries (after 2, 4, 8 … s, at most 30 s
//! apart; `SUSPENDED` after 2 minutes, then every 30 s). Each wait is drawn at random between
//! half that delay and all of it, so that the clients of a restarted server do not all come
//! back in the same instant. Each attempt first resumes the session
//! with its ticket and the count of events received: the server sends again what the client
//! missed and nobody else notices. When the server no longer has the session, the attempt logs
//! in again with the cached token and re-subscribes the cached channels, and the `CONNECTED`
//! event names the ones it could not restore. A session the server ended for good (same user
//! elsewhere, expired token, slow consumer) goes to `FAILED`.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Weak;
use std::time::Duration;

use aes_gcm::aead::OsRng;
use aes_gcm::aead::rand_core::RngCore;
use rtm_proto::{
    ChannelType, ErrorCode, Request, Response, ResumeRequest, SessionTicket, StateDetail,
    SubscribeOptions,
};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;
use tokio::time::Instant;

use crate::Inner;
use crate::connection::{
    Carried, Command, Connection, OpenError, Opened, Outcome, ReceivedCounter,
};
use crate::event::{LinkOperation, LinkState, LinkStateReason};
use crate::link::LinkChange;
use crate::stream::StreamCache;

/// First delay before a reconnect attempt; it doubles after each failure.
const FIRST_RETRY: Duration = Duration::from_secs(2);
/// Longest delay between attempts, and the delay while suspended.
const MAX_RETRY: Duration = Duration::from_secs(30);
/// How long the client keeps trying its own node before it tries the others (when it knows
/// others: `RtmConfig::other_nodes`). A node that is only out of reach for a moment keeps the
/// session; a resume on another node reaches it too (relayed to it), at the cost of a hop
/// through Redis for every frame, so the client's own node comes first.
const ROTATE_AFTER: Duration = Duration::from_secs(10);
/// How long the link stays `DISCONNECTED` before it is `SUSPENDED`.
const SUSPEND_AFTER: Duration = Duration::from_secs(120);

/// What the client remembers of its session, to restore it (the reference's "session cache").
#[derive(Debug)]
pub(crate) struct SessionCache {
    /// The login token, as last renewed.
    pub(crate) token: String,
    /// The subscribed message channels and their options.
    pub(crate) subscriptions: BTreeMap<String, SubscribeOptions>,
    /// The joined stream channels, their topics and topic subscriptions.
    pub(crate) streams: BTreeMap<String, StreamCache>,
    /// This user's temporary state per channel: applied to the channels it is in, waiting for
    /// the others (set before subscribing or joining).
    pub(crate) states: HashMap<(ChannelType, String), StateDetail>,
    /// The users whose metadata the session listens to.
    pub(crate) user_metadata: BTreeSet<String>,
    /// Dropping it stops the supervisor.
    _stop: oneshot::Sender<()>,
}

impl SessionCache {
    /// Whether the session is in a message or stream channel.
    pub(crate) fn is_in(&self, channel_type: ChannelType, channel: &str) -> bool {
        match channel_type {
            ChannelType::Stream => self.streams.contains_key(channel),
            _ => self.subscriptions.contains_key(channel),
        }
    }

    /// The message channels subscribed and the stream channels joined.
    pub(crate) fn channels(&self) -> Vec<String> {
        let mut channels: Vec<String> = self.subscriptions.keys().cloned().collect();
        channels.extend(self.streams.keys().cloned());
        channels
    }
}

/// What the supervisor needs of the live connection.
struct Live {
    ticket: SessionTicket,
    received: ReceivedCounter,
    ended: JoinHandle<Outcome>,
}

/// Starts supervising a session that just logged in (`ticket`) on a connection (`received`,
/// `ended`); returns its cache.
pub(crate) fn start(
    inner: Weak<Inner>,
    epoch: u64,
    token: String,
    ticket: SessionTicket,
    received: ReceivedCounter,
    ended: JoinHandle<Outcome>,
) -> SessionCache {
    let (stop_tx, stop) = oneshot::channel();
    let live = Live {
        ticket,
        received,
        ended,
    };
    tokio::spawn(supervise(inner, epoch, live, stop));
    SessionCache {
        token,
        subscriptions: BTreeMap::new(),
        streams: BTreeMap::new(),
        states: HashMap::new(),
        user_metadata: BTreeSet::new(),
        _stop: stop_tx,
    }
}

async fn supervise(
    inner: Weak<Inner>,
    epoch: u64,
    mut live: Live,
    mut stop: oneshot::Receiver<()>,
) {
    loop {
        let outcome = tokio::select! {
            outcome = &mut live.ended => outcome.unwrap_or_else(|_| Outcome::Lost {
                operation: LinkOperation::ServerTimeout,
                reason: LinkStateReason::ConnectionError,
                text: "the connection task failed".into(),
            }),
            _ = &mut stop => return,
        };
        let Some(client) = inner.upgrade() else {
            return;
        };
        match outcome {
            Outcome::Closed => return,
            Outcome::Rejected { reason, text } => {
                if client.end_session(epoch).is_some() {
                    client
                        .link
                        .set(LinkState::Failed, LinkOperation::ServerReject, reason, text);
                }
                return;
            }
            Outcome::Lost {
                operation,
                reason,
                text,
            } => {
                let Some(channels) = client.drop_connection(epoch) else {
                    return;
                };
                tracing::debug!(?reason, "connection lost: {text}; reconnecting");
                client.link.change(LinkChange {
                    affected_channels: channels,
                    ..LinkChange::new(LinkState::Disconnected, operation, reason, text)
                });
            }
        }
        drop(client);
        match reconnect(&inner, epoch, &live, &mut stop).await {
            Some(next) => live = next,
            None => return,
        }
    }
}

/// Retries until the session is back (resumed, or logged in again), the user gives up on it,
/// or the server refuses it for good.
async fn reconnect(
    inner: &Weak<Inner>,
    epoch: u64,
    lost: &Live,
    stop: &mut oneshot::Receiver<()>,
) -> Option<Live> {
    let lost_at = Instant::now();
    // Events may have stopped coming up to one heartbeat and the grace before the loss was
    // noticed: from then on, a rebuilt session may have missed messages.
    let client = inner.upgrade()?;
    let grace = u64::from(client.config.heartbeat_interval) * 1000 + 10_000;
    let missed_since = crate::now_ms().saturating_sub(grace);
    drop(client);
    let mut delay = FIRST_RETRY;
    loop {
        tokio::select! {
            () = tokio::time::sleep(retry_wait(delay)) => {}
            _ = &mut *stop => return None,
        }
        let client = inner.upgrade()?;
        let channels = client.cached_channels(epoch)?;
        client.link.set(
            LinkState::Connecting,
            LinkOperation::AutoReconnect,
            LinkStateReason::AutoReconnect,
            "Auto reconnect",
        );
        match attempt(&client, epoch, lost, missed_since).await {
            Attempt::Back(live, change) => {
                client.link.change(change);
                client.deliver_events(epoch);
                return Some(live);
            }
            Attempt::Failed(reason, text) => {
                if client.end_session(epoch).is_some() {
                    client
                        .link
                        .set(LinkState::Failed, LinkOperation::ServerReject, reason, text);
                }
                return None;
            }
            Attempt::Abandoned => return None,
            Attempt::Unreachable(text) => {
                // Another node, if there are others, once this one has been out of reach for
                // a while.
                if lost_at.elapsed() >= ROTATE_AFTER {
                    client.next_node();
                }
                let state;
                (state, delay) = after_failure(lost_at.elapsed(), delay);
                client.link.change(LinkChange {
                    affected_channels: channels,
                    ..LinkChange::new(
                        state,
                        LinkOperation::AutoReconnect,
                        LinkStateReason::ReconnectTimeout,
                        text,
                    )
                });
            }
        }
    }
}

/// The wait before an attempt whose schedule says `delay`: uniformly random between half of it
/// and all of it ("equal jitter"), so that clients that lost their connections together (a
/// server restart) spread their attempts over the second half of the window instead of
/// arriving in lockstep, while the schedule (doubling, the cap, suspension) stays as it was.
fn retry_wait(delay: Duration) -> Duration {
    let mut bytes = [0; 8];
    // Without the system's generator: the whole delay, rather than no retry.
    match OsRng.try_fill_bytes(&mut bytes) {
        Ok(()) => jittered(delay, u64::from_le_bytes(bytes)),
        Err(_) => delay,
    }
}

/// `delay`'s wait for the random number `random`: in [delay / 2, delay], to the millisecond.
fn jittered(delay: Duration, random: u64) -> Duration {
    let half = delay / 2;
    let span = u64::try_from((delay - half).as_millis()).unwrap_or(u64::MAX - 1);
    half + Duration::from_millis(random % (span + 1))
}

/// After a failed attempt, `away` after the connection was lost and `delay` after the previous
/// one (as scheduled, before jitter): the state to report and the next scheduled delay.
fn after_failure(away: Duration, delay: Duration) -> (LinkState, Duration) {
    if away >= SUSPEND_AFTER {
        (LinkState::Suspended, MAX_RETRY)
    } else {
        (LinkState::Disconnected, (delay * 2).min(MAX_RETRY))
    }
}

enum Attempt {
    /// Connected again, with the event to tell.
    Back(Live, LinkChange),
    /// The server will not take the client back.
    Failed(LinkStateReason, String),
    /// The user logged out or in meanwhile.
    Abandoned,
    /// No server answer: try again later.
    Unreachable(String),
}

async fn attempt(client: &Inner, epoch: u64, lost: &Live, missed_since: u64) -> Attempt {
    let carried = lost.received.carry();
    let received = carried.received.clone();
    let resume = Request::Resume(ResumeRequest {
        app_id: client.app_id.clone(),
        user_id: client.user_id.clone(),
        ticket: lost.ticket,
        received: received.clone(),
    });
    let listeners = client.listeners.clone();
    match Connection::open(&client.node_config(), "resume", resume, listeners, carried).await {
        Ok(opened) => {
            let Opened {
                connection,
                ended,
                received,
                ..
            } = opened;
            let Some(channels) = client.install(epoch, connection) else {
                return Attempt::Abandoned;
            };
            let live = Live {
                ticket: lost.ticket,
                received,
                ended,
            };
            let change = LinkChange {
                affected_channels: channels,
                is_resumed: true,
                ..LinkChange::new(
                    LinkState::Connected,
                    LinkOperation::Reconnected,
                    LinkStateReason::ReconnectSuccess,
                    "Reconnect success",
                )
            };
            Attempt::Back(live, change)
        }
        Err(OpenError::Unreachable(e)) => Attempt::Unreachable(e.reason),
        // Anything else (the session is gone, most often): log in again.
        Err(OpenError::Refused(e)) => {
            tracing::debug!("resume refused ({}): logging in again", e.reason);
            relogin(client, epoch, missed_since).await
        }
    }
}

/// Logs in again with the cached token, re-subscribes the cached channels, and recovers what
/// the channels' histories have of what was missed since `missed_since` (`gap.rs`).
async fn relogin(client: &Inner, epoch: u64, missed_since: u64) -> Attempt {
    let Some(token) = client.cached_token(epoch) else {
        return Attempt::Abandoned;
    };
    let login = client.login_request(token);
    let opened = match Connection::open(
        &client.node_config(),
        "login",
        login,
        client.listeners.clone(),
        Carried::default(),
    )
    .await
    {
        Ok(opened) => opened,
        Err(OpenError::Unreachable(e)) => return Attempt::Unreachable(e.reason),
        // The node could not serve it (its engine failed, or the cluster fenced it): another
        // node may.
        Err(OpenError::Refused(e)) if client.node_may_be_at_fault(&e) => {
            return Attempt::Unreachable(e.reason);
        }
        Err(OpenError::Refused(e)) => {
            return Attempt::Failed(failure_reason(e.code), e.reason);
        }
    };
    let Response::Login {
        ticket, timestamp, ..
    } = opened.response
    else {
        return Attempt::Failed(
            LinkStateReason::LoginRejected,
            "the server answered the login with something else".into(),
        );
    };
    let Opened {
        connection,
        ended,
        received,
        ..
    } = opened;
    // Subscribe and join again, all at once, before the connection is handed to the
    // application.
    let (Some(subscriptions), Some(streams), Some(states), Some(user_metadata)) = (
        client.cached_subscriptions(epoch),
        client.cached_streams(epoch),
        client.cached_states(epoch),
        client.cached_user_metadata(epoch),
    ) else {
        return Attempt::Abandoned;
    };
    // Then this user's state in each of them (the new session has none).
    let set_states = states
        .into_iter()
        .filter_map(|((channel_type, channel), states)| {
            let restored = match channel_type {
                ChannelType::Stream => streams.contains_key(&channel),
                _ => subscriptions.contains_key(&channel),
            };
            (restored && !states.is_empty()).then(|| {
                let request = Request::SetState {
                    channel_type,
                    channel: channel.clone(),
                    states,
                };
                (channel, request)
            })
        });
    let requests = subscriptions
        .iter()
        .map(|(channel, options)| {
            let request = Request::Subscribe {
                channel: channel.clone(),
                options: *options,
            };
            (channel.clone(), request)
        })
        .chain(streams.iter().flat_map(|(channel, cache)| {
            cache
                .restore_requests(channel)
                .into_iter()
                .map(|request| (channel.clone(), request))
        }))
        .chain(set_states)
        // And the users' metadata it listened to.
        .chain(user_metadata.into_iter().map(|user_id| {
            let request = Request::SubscribeUserMetadata {
                user_id: user_id.clone(),
            };
            (user_id, request)
        }));
    let mut answers = Vec::with_capacity(subscriptions.len() + streams.len());
    for (channel, request) in requests {
        let (reply, answer) = oneshot::channel();
        if connection
            .commands
            .send(Command { request, reply })
            .is_err()
        {
            return Attempt::Unreachable("the connection closed while re-subscribing".into());
        }
        answers.push((channel, answer));
    }
    let mut unrestored = Vec::new();
    // The server's time once the last channel was restored: messages from then on come live.
    let mut restored_at = timestamp;
    for (channel, answer) in answers {
        match tokio::time::timeout(client.config.request_timeout, answer).await {
            Ok(Ok(Ok(Response::Subscribe { timestamp, .. }))) => {
                restored_at = restored_at.max(timestamp);
            }
            Ok(Ok(Ok(_))) => {}
            Ok(Ok(Err(e))) => {
                tracing::warn!(
                    channel,
                    "could not subscribe again: {} ({})",
                    e.reason,
                    e.code
                );
                if !unrestored.contains(&channel) {
                    unrestored.push(channel);
                }
            }
            _ => return Attempt::Unreachable("no answer while re-subscribing".into()),
        }
    }
    // The channels it takes messages from (not those subscribed without them).
    let restored: Vec<String> = subscriptions
        .iter()
        .filter(|(c, options)| options.with_message && !unrestored.contains(c))
        .map(|(c, _)| c.clone())
        .collect();
    crate::gap::recover(
        &restored,
        &connection.commands,
        (&client.listeners, client.cipher.as_ref()),
        missed_since,
        restored_at,
    )
    .await;
    let Some(channels) = client.install_relogin(epoch, connection, &unrestored) else {
        return Attempt::Abandoned;
    };
    let live = Live {
        ticket,
        received,
        ended,
    };
    let change = LinkChange {
        affected_channels: channels,
        unrestored_channels: unrestored,
        ..LinkChange::new(
            LinkState::Connected,
            LinkOperation::Reconnected,
            LinkStateReason::ReconnectSuccess,
            "Reconnect success: logged in again, the previous session had ended",
        )
    };
    Attempt::Back(live, change)
}

/// Which node of the service the client uses (`RtmConfig::other_nodes`).
impl Inner {
    /// The configuration for the node in use.
    pub(crate) fn node_config(&self) -> std::borrow::Cow<'_, crate::RtmConfig> {
        self.config
            .for_node(self.node.load(std::sync::atomic::Ordering::Relaxed))
    }

    /// Whether a refused login is the node's own failure (`LOGIN_REJECTED`: its engine failed,
    /// or the cluster fenced it) while other nodes could take the client.
    pub(crate) fn node_may_be_at_fault(&self, e: &rtm_proto::RtmError) -> bool {
        e.code == ErrorCode::LoginRejected && self.config.node_count() > 1
    }

    /// The node in use could not be reached: the next one is tried from now on.
    pub(crate) fn next_node(&self) {
        if self.config.node_count() > 1 {
            let next = self.node.fetch_add(1, std::sync::atomic::Ordering::Relaxed) + 1;
            tracing::info!(
                endpoint = %self.config.for_node(next).endpoint.addr,
                "node unreachable: trying the next one"
            );
        }
    }
}

/// The error code a refused login maps to in the link-state event.
pub(crate) fn failure_reason(code: ErrorCode) -> LinkStateReason {
    match code {
        ErrorCode::LoginTimeout => LinkStateReason::LoginTimeout,
        ErrorCode::InvalidToken => LinkStateReason::InvalidToken,
        ErrorCode::TokenExpired => LinkStateReason::TokenExpired,
        ErrorCode::InvalidUserId => LinkStateReason::InvalidUserId,
        ErrorCode::InconsistentAppid => LinkStateReason::InconsistentAppId,
        ErrorCode::NotConnected => LinkStateReason::ConnectionError,
        _ => LinkStateReason::LoginRejected,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retries_back_off_then_suspend() {
        // The reference's schedule: 2, 4, 8, 16 s … at most 30 s; SUSPENDED after 2 minutes,
        // then every 30 s.
        let mut delay = FIRST_RETRY;
        let mut away = Duration::ZERO;
        let mut delays = Vec::new();
        let mut states = Vec::new();
        while away < Duration::from_secs(200) {
            away += delay;
            let state;
            (state, delay) = after_failure(away, delay);
            delays.push(delay.as_secs());
            states.push(state);
        }
        assert_eq!(delays[..5], [4, 8, 16, 30, 30]);
        let suspended_at = states
            .iter()
            .position(|s| *s == LinkState::Suspended)
            .expect("suspended within 200 s");
        // 2 + 4 + 8 + 16 + 30 + 30 + 30 = 120 s: the seventh failure is the first after 2 min.
        assert_eq!(suspended_at, 6);
        assert!(
            states[..suspended_at]
                .iter()
                .all(|s| *s == LinkState::Disconnected)
        );
        assert!(
            states[suspended_at..]
                .iter()
                .all(|s| *s == LinkState::Suspended)
        );
        assert!(delays[suspended_at..].iter().all(|d| *d == 30));
    }

    #[test]
    fn jitter_stays_within_half_and_all_of_the_delay() {
        let d = Duration::from_secs(2);
        assert_eq!(jittered(d, 0), Duration::from_secs(1));
        assert_eq!(jittered(d, 1000), d);
        assert_eq!(jittered(d, 1001), Duration::from_secs(1));
        assert_eq!(
            jittered(d, u64::MAX),
            Duration::from_millis(1000 + u64::MAX % 1001)
        );
        assert_eq!(jittered(Duration::ZERO, 7), Duration::ZERO);
    }

    #[test]
    fn clients_that_lose_the_server_together_retry_apart_on_the_same_schedule() {
        // 200 clients lose their connections at once and the server stays away for 5 minutes:
        // their attempts spread out, each wait within [delay / 2, delay] of the schedule, and
        // each goes to SUSPENDED at its first failure after 2 minutes, then tries every 15–30 s.
        let mut first_attempts = BTreeSet::new();
        for _ in 0..200 {
            let mut delay = FIRST_RETRY;
            let mut away = Duration::ZERO;
            let mut attempt = 0;
            while away < Duration::from_secs(300) {
                let wait = retry_wait(delay);
                assert!(wait >= delay / 2 && wait <= delay, "{wait:?} for {delay:?}");
                away += wait;
                if attempt == 0 {
                    first_attempts.insert(wait);
                }
                attempt += 1;
                let (state, next) = after_failure(away, delay);
                assert_eq!(
                    state == LinkState::Suspended,
                    away >= SUSPEND_AFTER,
                    "{away:?}"
                );
                delay = next;
            }
        }
        // 1 001 possible first waits (1 to 2 s, to the millisecond): 200 clients in lockstep
        // would share one; at random, expect about 180 different ones.
        assert!(first_attempts.len() > 150, "{}", first_attempts.len());
        assert!(
            first_attempts
                .iter()
                .all(|w| *w >= FIRST_RETRY / 2 && *w <= FIRST_RETRY)
        );
    }
}
