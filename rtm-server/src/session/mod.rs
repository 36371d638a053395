//! Sessions: one per connection, logged out or logged in as one user of one app
//! (`docs/architecture.md`, "Session").
//!
//! A [`Session`] turns each [`Request`] into a [`Response`]: it owns the login, the list of
//! subscriptions (for the per-client limit and for cleanup), and the publish rate limiter, and
//! asks the [`Core`] for the channel operations themselves (never the engine directly), and
//! keeps the session's clocks (heartbeat, presence timeout, token expiry). A session can
//! outlive its connection: see [`resume`]. The requests are served by concern: message
//! channels (`messages.rs`), stream channels (`streams.rs`), presence (`presence.rs`), metadata
//! and locks (`storage.rs`) and history (`history.rs`); login, tokens and the end of a session
//! are here.

mod history;
mod messages;
mod presence;
pub(crate) mod resume;
mod storage;
mod streams;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rtm_proto::message::LoginRequest;
use rtm_proto::{
    ChannelType, CloseReason, ErrorCode, Event, LoginLimits, Request, Response, ServerMsg,
    SubscribeOptions, WireError, encode_frame, validate,
};

use self::resume::{Claim, Claims, Registry};
use crate::config::AppPolicy;
use crate::core::{Core, Departure, err, invalid, now_ms};
use crate::engine::{Engine, PresenceFlags, SessionHandle, SessionId, StateChange};
use crate::events::{AppEvent, EventKind};
use crate::outbox::Outbox;
use crate::token::AccessToken;

/// What the sessions of a server share: the core, and the registry of the sessions a resume
/// can reach.
pub(crate) struct Node<E> {
    pub(crate) core: Arc<Core<E>>,
    pub(crate) registry: Arc<Registry<E>>,
}

impl<E: Engine> Node<E> {
    pub(crate) fn new(core: Arc<Core<E>>) -> Self {
        Self {
            core,
            registry: Arc::default(),
        }
    }
}

/// One connection's session.
pub(crate) struct Session<E> {
    core: Arc<Core<E>>,
    registry: Arc<Registry<E>>,
    outbox: Outbox,
    state: Option<LoggedIn<E>>,
}

struct LoggedIn<E> {
    handle: SessionHandle,
    /// Resume requests for this session, from the registry.
    claims: Claims<E>,
    limits: LoginLimits,
    /// How long the session waits for a resume after losing its connection.
    presence_timeout: Duration,
    /// The client's heartbeat interval (from its login).
    heartbeat: Duration,
    policy: Arc<AppPolicy>,
    subscriptions: HashMap<String, SubscribeOptions>,
    publish_limiter: DefaultDirectRateLimiter,
    /// The login token's clock.
    token: TokenClock,
    /// The stream channels joined.
    streams: HashMap<String, Joined>,
    /// Metadata calls per second.
    storage_limiter: DefaultDirectRateLimiter,
    /// Lock calls per second.
    lock_limiter: DefaultDirectRateLimiter,
    /// The users whose metadata the session listens to.
    user_metadata: HashSet<String>,
}

/// What came of a request.
pub(crate) enum Handled {
    /// The answer.
    Now(Result<Response, WireError>),
    /// An acquire with retry that waits for the lock: the answer comes when this does.
    Later(tokio::sync::oneshot::Receiver<Result<(), crate::engine::LockError>>),
}

pub(crate) use self::storage::lock_answer;

/// How a subscription takes part in the channel's presence.
fn subscription_presence(options: &SubscribeOptions) -> PresenceFlags {
    PresenceFlags {
        with_presence: options.with_presence,
        quiet: options.be_quiet,
    }
}

/// A joined stream channel.
struct Joined {
    /// How the session takes part in the channel's presence.
    presence: PresenceFlags,
    /// The channel token's clock.
    token: TokenClock,
    /// The topics joined as a publisher, each with its publish rate limiter.
    topics: HashMap<String, DefaultDirectRateLimiter>,
}

/// When a token ends, for apps with an App Certificate, and whether the client was warned.
#[derive(Clone, Copy, Debug, Default)]
struct TokenClock {
    /// Unix ms; `None` for a token that does not expire.
    ends_ms: Option<u64>,
    warned: bool,
}

impl TokenClock {
    fn new(ends_ms: Option<u64>) -> Self {
        Self {
            ends_ms,
            warned: false,
        }
    }

    /// The next time (Unix ms) this clock asks for something, and whether that is the expiry
    /// (rather than the warning `warning_ms` before it).
    fn next(&self, warning_ms: u64) -> Option<(u64, bool)> {
        let ends = self.ends_ms?;
        if !self.warned && ends > warning_ms {
            Some((ends - warning_ms, false))
        } else {
            Some((ends, true))
        }
    }
}

/// Checks `token` for `user_id` of `app_id` under the app's policy, and returns when it ends
/// (Unix ms; `None` for an app without a certificate, whose sessions do not expire).
fn check_token(
    policy: &AppPolicy,
    app_id: &str,
    user_id: &str,
    token: &str,
) -> Result<Option<u64>, WireError> {
    let Some(certificate) = &policy.certificate else {
        return Ok(None);
    };
    let now = now_ms() / 1000;
    let ends = AccessToken::parse(token)
        .and_then(|t| t.verify_login(app_id, certificate, user_id, now))
        .map_err(|e| err(e.code, e.reason))?;
    Ok(Some(ends.saturating_mul(1000)))
}

/// Checks an RTC `token` for `user_id` joining `channel` of `app_id` (`None` for an app
/// without a certificate).
fn check_join_token(
    policy: &AppPolicy,
    app_id: &str,
    channel: &str,
    user_id: &str,
    token: &str,
) -> Result<Option<u64>, WireError> {
    let Some(certificate) = &policy.certificate else {
        return Ok(None);
    };
    let now = now_ms() / 1000;
    let ends = AccessToken::parse(token)
        .and_then(|t| t.verify_join(app_id, certificate, channel, user_id, now))
        .map_err(|e| err(e.code, e.reason))?;
    Ok(Some(ends.saturating_mul(1000)))
}

fn rate_limiter(per_second: u32) -> DefaultDirectRateLimiter {
    RateLimiter::direct(Quota::per_second(
        NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN),
    ))
}

/// Queues an event to the client.
fn push_event(outbox: &Outbox, event: Event) {
    outbox.push(encode_frame(&ServerMsg::Event(event)));
}

fn not_joined() -> WireError {
    err(
        ErrorCode::ChannelNotJoined,
        "not joined to this stream channel",
    )
}

fn logged_in<E>(state: &mut Option<LoggedIn<E>>) -> Result<&mut LoggedIn<E>, WireError> {
    state
        .as_mut()
        .ok_or_else(|| err(ErrorCode::NotLogin, "log in first"))
}

impl<E: Engine> Session<E> {
    /// A logged-out session of `node` whose events will go to `outbox`.
    pub(crate) fn new(node: &Node<E>, outbox: Outbox) -> Self {
        Self {
            core: node.core.clone(),
            registry: node.registry.clone(),
            outbox,
            state: None,
        }
    }

    pub(crate) fn is_logged_in(&self) -> bool {
        self.state.is_some()
    }

    /// The session's id, when logged in.
    pub(crate) fn id(&self) -> Option<SessionId> {
        self.state.as_ref().map(|s| s.handle.id())
    }

    /// The limits told to the client, when logged in.
    pub(crate) fn limits(&self) -> Option<LoginLimits> {
        self.state.as_ref().map(|s| s.limits)
    }

    /// How long the session is kept after losing its connection, when logged in.
    pub(crate) fn presence_timeout(&self) -> Option<Duration> {
        self.state.as_ref().map(|s| s.presence_timeout)
    }

    /// The client's heartbeat interval, once logged in.
    pub(crate) fn heartbeat(&self) -> Option<Duration> {
        self.state.as_ref().map(|s| s.heartbeat)
    }

    /// Whether the session is being closed by the server (and so cannot be resumed).
    pub(crate) fn is_closing(&self) -> bool {
        self.outbox.is_closing()
    }

    /// Waits for a resume request for this session; never completes when logged out.
    pub(crate) async fn next_claim(&mut self) -> Option<Claim<E>> {
        match self.state.as_mut() {
            Some(state) => state.claims.recv().await,
            None => std::future::pending().await,
        }
    }

    /// Ends the session for `reason`: the client is told, then the connection closes.
    pub(crate) fn close(&self, reason: CloseReason) {
        self.outbox.close(reason);
    }

    /// The client has received the first `received` delivery frames of the session.
    pub(crate) fn ack(&self, received: &[u64]) {
        if self.state.is_some() {
            self.outbox.ack(received);
        }
    }

    /// Serves one request; `waits` is how many acquires the connection already waits for.
    /// Answers are timed by operation (`rtm_request_duration_seconds`); an acquire that waits
    /// for its lock is timed to the decision to wait.
    pub(crate) async fn handle(&mut self, request: Request, waits: usize) -> Handled {
        let operation = request.operation();
        let started = tokio::time::Instant::now();
        let handled = match request {
            Request::Lock(lock) => self.lock(lock, waits).await,
            request => Handled::Now(self.serve(request).await),
        };
        self.core.metrics.request_took(operation, started.elapsed());
        handled
    }

    async fn serve(&mut self, request: Request) -> Result<Response, WireError> {
        match request {
            Request::Ping => Ok(Response::Pong {
                timestamp: now_ms(),
            }),
            Request::Login(login) => {
                let answer = self.login(login).await;
                match &answer {
                    Ok(_) => {
                        self.core.metrics.logins.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => self.core.metrics.login_refused(e.code),
                }
                answer
            }
            Request::Logout => {
                //= docs/protocol.md#5.1
                //# Before login, every request but `Login`, `Resume` and `Ping` is answered with
                //# `-10002` (`NOT_LOGIN`).
                logged_in(&mut self.state)?;
                self.end().await;
                Ok(Response::Logout {
                    timestamp: now_ms(),
                })
            }
            Request::Subscribe { channel, options } => self.subscribe(channel, options).await,
            Request::Unsubscribe { channel } => self.unsubscribe(channel).await,
            Request::Publish(publish) => self.publish(publish, false).await,
            Request::PublishAndStore(publish) => self.publish(publish, true).await,
            Request::PublishBatch(batch) => self.publish_batch(batch).await,
            Request::GetMessages(query) => self.get_messages(query).await,
            Request::RenewToken { token } => self.renew_token(&token),
            Request::Heartbeat { received } => {
                logged_in(&mut self.state)?;
                self.ack(&received);
                Ok(Response::Pong {
                    timestamp: now_ms(),
                })
            }
            Request::Join { channel, options } => self.join(channel, options).await,
            Request::Leave { channel } => self.leave(channel).await,
            Request::JoinTopic {
                channel,
                topic,
                options,
            } => self.join_topic(channel, topic, options).await,
            Request::LeaveTopic { channel, topic } => self.leave_topic(channel, topic).await,
            Request::PublishTopic(publish) => self.publish_topic(publish).await,
            Request::SubscribeTopic {
                channel,
                topic,
                users,
            } => self.subscribe_topic(channel, topic, users).await,
            Request::UnsubscribeTopic {
                channel,
                topic,
                users,
            } => self.unsubscribe_topic(channel, topic, users).await,
            Request::RenewChannelToken { channel, token } => {
                self.renew_channel_token(&channel, &token)
            }
            Request::SetState {
                channel_type,
                channel,
                states,
            } => {
                validate::state(&states).map_err(invalid)?;
                self.change_state(channel_type, channel, StateChange::Set(states))
                    .await
            }
            Request::RemoveState {
                channel_type,
                channel,
                keys,
            } => {
                let keys = (!keys.is_empty()).then_some(keys);
                self.change_state(channel_type, channel, StateChange::Remove(keys))
                    .await
            }
            Request::GetState {
                channel_type,
                channel,
                user_id,
            } => self.get_state(channel_type, channel, user_id).await,
            Request::WhoNow {
                channel_type,
                channel,
                include_user_id,
                include_state,
                page,
            } => {
                self.who_now(channel_type, channel, include_user_id, include_state, page)
                    .await
            }
            Request::WhereNow { user_id } => self.where_now(user_id).await,
            Request::WriteMetadata(write) => self.write_metadata(write).await,
            Request::GetMetadata { target } => self.get_metadata(target).await,
            Request::SubscribeUserMetadata { user_id } => {
                self.listen_user_metadata(user_id, true).await
            }
            Request::UnsubscribeUserMetadata { user_id } => {
                self.listen_user_metadata(user_id, false).await
            }
            Request::GetLocks {
                channel_type,
                channel,
            } => self.get_locks(channel_type, channel).await,
            Request::Lock(_) => Err(err(
                ErrorCode::LockOperationFailed,
                "lock requests are served by Session::handle",
            )),
            // Served by the connection, which owns the outbox a resume replaces.
            Request::Resume(_) => Err(err(
                ErrorCode::DuplicateOperation,
                "resume is the first request of a connection, instead of a login",
            )),
        }
    }

    /// Replaces the login token: the same checks as at login, for this session's user.
    fn renew_token(&mut self, token: &str) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        let ends = check_token(
            &state.policy,
            state.handle.app_id(),
            state.handle.user_id(),
            token,
        )?;
        state.token = TokenClock::new(ends);
        Ok(Response::RenewToken {
            timestamp: now_ms(),
        })
    }

    fn token_warning_ms(&self) -> u64 {
        u64::from(self.core.connection.token_warning_secs) * 1000
    }

    /// When (Unix ms) a token clock next asks for something: the login token's or a stream
    /// channel's; `None` when no token expires.
    pub(crate) fn token_deadline(&self) -> Option<u64> {
        let state = self.state.as_ref()?;
        let warning = self.token_warning_ms();
        let streams = state.streams.values().map(|j| &j.token);
        std::iter::once(&state.token)
            .chain(streams)
            .filter_map(|clock| clock.next(warning))
            .map(|(at, _)| at)
            .min()
    }

    /// Acts on the token clocks that are due (docs/protocol.md §5.1.2): warns once per token
    /// before it ends; ends the session when the login token ends (returns true), and leaves a
    /// stream channel whose token ended, telling the client.
    pub(crate) async fn token_deadline_reached(&mut self) -> bool {
        let warning = self.token_warning_ms();
        let now = now_ms();
        let Some(state) = self.state.as_mut() else {
            return false;
        };
        let due = |clock: &TokenClock| clock.next(warning).filter(|(at, _)| *at <= now);
        if let Some((_, expired)) = due(&state.token) {
            if expired {
                self.outbox.close(CloseReason::TokenExpired);
                return true;
            }
            state.token.warned = true;
            push_event(
                &self.outbox,
                Event::TokenPrivilegeWillExpire {
                    channel_name: String::new(),
                },
            );
        }
        let mut ended = Vec::new();
        for (channel, joined) in state.streams.iter_mut() {
            match due(&joined.token) {
                Some((_, true)) => ended.push(channel.clone()),
                Some((_, false)) => {
                    joined.token.warned = true;
                    push_event(
                        &self.outbox,
                        Event::TokenPrivilegeWillExpire {
                            channel_name: channel.clone(),
                        },
                    );
                }
                None => {}
            }
        }
        for channel in ended {
            let Some(joined) = state.streams.remove(&channel) else {
                continue;
            };
            let _ = self.core.leave_stream(&state.handle, &channel).await;
            self.core
                .depart(
                    &state.handle,
                    ChannelType::Stream,
                    &channel,
                    joined.presence,
                    Departure::Left,
                )
                .await;
            tracing::debug!(%channel, "stream channel token expired");
            push_event(
                &self.outbox,
                Event::ChannelLeft {
                    channel_type: ChannelType::Stream,
                    channel_name: channel,
                    reason: CloseReason::TokenExpired,
                },
            );
        }
        false
    }

    async fn login(&mut self, login: LoginRequest) -> Result<Response, WireError> {
        if self.state.is_some() {
            return Err(err(
                ErrorCode::DuplicateOperation,
                "already logged in; log out first",
            ));
        }
        validate::app_id(&login.app_id).map_err(invalid)?;
        let Some(policy) = self.core.app(&login.app_id) else {
            return Err(err(
                ErrorCode::InvalidAppId,
                "this server does not serve that App ID",
            ));
        };
        validate::user_id(&login.user_id, login.use_string_user_id).map_err(invalid)?;
        // docs/protocol.md §5.1.1: an app with an App Certificate needs an AccessToken2 with
        // the RTM Login privilege for this user.
        let token_ends_ms = check_token(&policy, &login.app_id, &login.user_id, &login.token)?;
        let id = self.core.next_session_id();
        let handle = SessionHandle::new(id, &login.app_id, &login.user_id, self.outbox.clone());
        self.outbox
            .set_owner(format!("{} ({}/{})", id, login.app_id, login.user_id));
        // Also gives the user's locks back to a user that was away.
        self.core.attach(&handle).await?;
        self.core.metrics.sessions.fetch_add(1, Ordering::Relaxed);
        let limits = policy.login_limits(self.core.connection.max_frame_len);
        let (ticket, claims) = self.registry.register(id, &login.app_id, &login.user_id);
        tracing::debug!(
            session = %id,
            app = %login.app_id,
            user = %login.user_id,
            heartbeat = login.heartbeat_interval.clamp(5, 1800),
            "logged in"
        );
        let storage_limiter = storage::burst_limiter(policy.limits.storage_rate);
        let lock_limiter = storage::burst_limiter(policy.limits.lock_rate);
        self.state = Some(LoggedIn {
            handle,
            claims,
            limits,
            // The reference's ranges (`reference/extended-api.md` §6.4).
            presence_timeout: Duration::from_secs(login.presence_timeout.clamp(5, 300).into()),
            heartbeat: Duration::from_secs(login.heartbeat_interval.clamp(5, 1800).into()),
            publish_limiter: rate_limiter(policy.limits.publish_rate),
            policy,
            subscriptions: HashMap::new(),
            token: TokenClock::new(token_ends_ms),
            streams: HashMap::new(),
            storage_limiter,
            lock_limiter,
            user_metadata: HashSet::new(),
        });
        Ok(Response::Login {
            timestamp: now_ms(),
            limits,
            ticket,
        })
    }

    /// Ends the login, if any: leaves every stream channel and message channel (the others
    /// are told: `REMOTE_LEAVE`), and unregisters the session.
    pub(crate) async fn end(&mut self) {
        self.end_as(Departure::Left).await;
    }

    /// Ends the login as [`Session::end`], telling the others how it left.
    pub(crate) async fn end_as(&mut self, how: Departure) {
        let Some(state) = self.state.take() else {
            return;
        };
        for (channel, joined) in &state.streams {
            let _ = self.core.leave_stream(&state.handle, channel).await;
            self.core
                .depart(
                    &state.handle,
                    ChannelType::Stream,
                    channel,
                    joined.presence,
                    how,
                )
                .await;
        }
        self.registry.remove(state.handle.id());
        self.core.detach(&state.handle).await;
        for (channel, options) in &state.subscriptions {
            let presence = subscription_presence(options);
            self.core
                .depart(&state.handle, ChannelType::Message, channel, presence, how)
                .await;
        }
        self.core.metrics.sessions.fetch_sub(1, Ordering::Relaxed);
        let kind = match how {
            Departure::Left => EventKind::Logout,
            Departure::TimedOut => EventKind::Timeout,
        };
        // A session replaced by the same user's new login is not a logout: the user is still
        // online, and the new login was told first.
        if self.outbox.closing_reason() != Some(CloseReason::SameUidLogin) {
            self.core.events.emit(state.handle.app_id(), || {
                AppEvent::user(kind, state.handle.user_id())
            });
        }
        tracing::debug!(session = %state.handle.id(), "session ended");
    }
}
