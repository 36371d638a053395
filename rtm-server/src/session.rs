//! Sessions: one per connection, logged out or logged in as one user of one app
//! (`docs/architecture.md`, "Session").
//!
//! A [`Session`] turns each [`Request`] into a [`Response`]: it owns the login, the list of
//! subscriptions (for the per-client limit and for cleanup), and the publish rate limiter, and
//! asks the [`Core`] for the channel operations themselves, and keeps the session's clocks
//! (heartbeat, presence timeout, token expiry). A session can outlive its connection: see
//! [`crate::resume`].

mod history;
mod storage;

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rtm_proto::message::LoginRequest;
use rtm_proto::{
    ChannelType, CloseReason, ErrorCode, Event, FailedUser, JoinOptions, JoinTopicOptions,
    LoginLimits, PublishRequest, PublishTopicRequest, Request, Response, ServerMsg,
    SubscribeOptions, SubscribeTopicCode, WireError, encode_frame, limits, validate,
};

use crate::config::AppPolicy;
use crate::core::{Core, engine_failed, err, invalid, now_ms};
use crate::engine::SessionId;
use crate::engine::{Engine, PresenceFlags, SessionHandle, StateChange, StateError};
use crate::outbox::Outbox;
use crate::presence::Departure;
use crate::resume::{Claim, Claims};
use crate::token::AccessToken;

/// One connection's session.
pub(crate) struct Session<E> {
    core: Arc<Core<E>>,
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

/// Presence is for message and stream channels, with valid names.
fn check_presence_channel(channel_type: ChannelType, channel: &str) -> Result<(), WireError> {
    if channel_type == ChannelType::User {
        return Err(err(
            ErrorCode::InvalidChannelType,
            "presence is for message and stream channels",
        ));
    }
    validate::channel_name(channel).map_err(invalid)
}

/// The error for a channel this session is not in.
fn not_in(channel_type: ChannelType) -> WireError {
    match channel_type {
        ChannelType::Stream => not_joined(),
        _ => err(
            ErrorCode::ChannelNotSubscribed,
            "not subscribed to this channel",
        ),
    }
}

/// Checks a stream-channel topic call's names, and returns the joined channel.
fn topic_of<'a, E>(
    state: &'a mut LoggedIn<E>,
    channel: &str,
    topic: &str,
) -> Result<&'a mut Joined, WireError> {
    validate::channel_name(channel).map_err(invalid)?;
    validate::topic_name(topic).map_err(invalid)?;
    state.streams.get_mut(channel).ok_or_else(not_joined)
}

/// Checks the number of users of one topic (un)subscription; returns the limit.
fn check_topic_users(users: &[String]) -> Result<usize, WireError> {
    let max_users = limits::MAX_TOPIC_SUBSCRIBED_USERS;
    if users.len() > max_users {
        return Err(err(
            ErrorCode::ChannelExceedTopicUserLimitation,
            format!(
                "{} users given, a topic subscription takes at most {max_users}",
                users.len()
            ),
        ));
    }
    Ok(max_users)
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
    /// A logged-out session whose events will go to `outbox`.
    pub(crate) fn new(core: Arc<Core<E>>, outbox: Outbox) -> Self {
        Self {
            core,
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
    pub(crate) async fn handle(&mut self, request: Request, waits: usize) -> Handled {
        match request {
            Request::Lock(lock) => self.lock(lock, waits).await,
            request => Handled::Now(self.serve(request).await),
        }
    }

    async fn serve(&mut self, request: Request) -> Result<Response, WireError> {
        match request {
            Request::Ping => Ok(Response::Pong {
                timestamp: now_ms(),
            }),
            Request::Login(login) => self.login(login).await,
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
        self.core
            .engine
            .attach(&handle)
            .await
            .map_err(|e| engine_failed(ErrorCode::LoginRejected, &e))?;
        self.core.metrics.sessions.fetch_add(1, Ordering::Relaxed);
        let limits = policy.login_limits(self.core.connection.max_frame_len);
        let (ticket, claims) = self
            .core
            .sessions
            .register(id, &login.app_id, &login.user_id);
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
        // A new login of a user that held locks (and was away) holds them again.
        self.back().await;
        Ok(Response::Login {
            timestamp: now_ms(),
            limits,
            ticket,
        })
    }

    async fn subscribe(
        &mut self,
        channel: String,
        options: SubscribeOptions,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::channel_name(&channel).map_err(invalid)?;
        let max = state.policy.limits.max_subscriptions as usize;
        if !state.subscriptions.contains_key(&channel) && state.subscriptions.len() >= max {
            return Err(err(
                ErrorCode::ChannelInstanceExceedLimitation,
                format!("already subscribed to {max} channels, the limit"),
            ));
        }
        self.core
            .subscribe(&state.handle, &channel, options)
            .await?;
        let first = state
            .subscriptions
            .insert(channel.clone(), options)
            .is_none();
        if first {
            let presence = subscription_presence(&options);
            self.core
                .arrive(&state.handle, ChannelType::Message, &channel, presence)
                .await;
        }
        storage::listen_channel(
            &self.core,
            &state.handle,
            ChannelType::Message,
            &channel,
            options.with_metadata,
            options.with_lock,
        )
        .await;
        Ok(Response::Subscribe {
            channel,
            timestamp: now_ms(),
        })
    }

    async fn unsubscribe(&mut self, channel: String) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::channel_name(&channel).map_err(invalid)?;
        let Some(options) = state.subscriptions.remove(&channel) else {
            return Err(err(
                ErrorCode::ChannelNotSubscribed,
                "not subscribed to this channel",
            ));
        };
        self.core.unsubscribe(&state.handle, &channel).await?;
        let presence = subscription_presence(&options);
        self.core
            .depart(
                &state.handle,
                ChannelType::Message,
                &channel,
                presence,
                Departure::Left,
            )
            .await;
        Ok(Response::Unsubscribe {
            channel,
            timestamp: now_ms(),
        })
    }

    async fn publish(
        &mut self,
        publish: PublishRequest,
        store: bool,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        self.core.check_publish(&state.policy, &publish)?;
        let retention = if store {
            Some(history::retention(&state.policy)?)
        } else {
            None
        };
        // Only a valid message uses up the allowance.
        if state.publish_limiter.check().is_err() {
            self.core
                .metrics
                .rate_limited
                .fetch_add(1, Ordering::Relaxed);
            return Err(err(
                ErrorCode::ChannelPublishMessageTooFrequent,
                format!(
                    "publishing faster than {} messages per second",
                    state.policy.limits.publish_rate
                ),
            ));
        }
        let channel = publish.channel.clone();
        let timestamp = self.core.publish(&state.handle, publish, retention).await?;
        Ok(Response::Publish { channel, timestamp })
    }

    async fn join(&mut self, channel: String, options: JoinOptions) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::channel_name(&channel).map_err(invalid)?;
        if state.streams.contains_key(&channel) {
            return Err(err(
                ErrorCode::DuplicateOperation,
                "already joined to this stream channel",
            ));
        }
        if state.streams.len() >= limits::MAX_STREAM_CHANNELS {
            return Err(err(
                ErrorCode::ChannelInstanceExceedLimitation,
                format!(
                    "already joined to {} stream channels, the limit",
                    limits::MAX_STREAM_CHANNELS
                ),
            ));
        }
        // docs/protocol.md §5.7.1: an app with an App Certificate needs an RTC token for this
        // channel and user.
        let token_ends_ms = check_join_token(
            &state.policy,
            state.handle.app_id(),
            &channel,
            state.handle.user_id(),
            &options.token,
        )?;
        let max_users = state.policy.limits.stream_channel_users as usize;
        let presence = PresenceFlags {
            with_presence: options.with_presence,
            quiet: options.be_quiet,
        };
        let timestamp = self
            .core
            .join_stream(&state.handle, &channel, presence, max_users)
            .await?;
        state.streams.insert(
            channel.clone(),
            Joined {
                presence,
                token: TokenClock::new(token_ends_ms),
                topics: HashMap::new(),
            },
        );
        self.core
            .arrive(&state.handle, ChannelType::Stream, &channel, presence)
            .await;
        storage::listen_channel(
            &self.core,
            &state.handle,
            ChannelType::Stream,
            &channel,
            options.with_metadata,
            options.with_lock,
        )
        .await;
        Ok(Response::Join { channel, timestamp })
    }

    async fn leave(&mut self, channel: String) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::channel_name(&channel).map_err(invalid)?;
        let Some(joined) = state.streams.remove(&channel) else {
            return Err(not_joined());
        };
        let timestamp = self.core.leave_stream(&state.handle, &channel).await?;
        self.core
            .depart(
                &state.handle,
                ChannelType::Stream,
                &channel,
                joined.presence,
                Departure::Left,
            )
            .await;
        Ok(Response::Leave { channel, timestamp })
    }

    async fn join_topic(
        &mut self,
        channel: String,
        topic: String,
        options: JoinTopicOptions,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::channel_name(&channel).map_err(invalid)?;
        validate::topic_name(&topic).map_err(invalid)?;
        validate::topic_meta(&options.meta).map_err(invalid)?;
        let joined = state.streams.get_mut(&channel).ok_or_else(not_joined)?;
        if !joined.topics.contains_key(&topic) && joined.topics.len() >= limits::MAX_JOINED_TOPICS {
            return Err(err(
                ErrorCode::ChannelExceedTopicLimitation,
                format!(
                    "already joined to {} topics in this channel, the limit",
                    limits::MAX_JOINED_TOPICS
                ),
            ));
        }
        let timestamp = self
            .core
            .join_topic(&state.handle, &channel, &topic, &options.meta)
            .await?;
        let rate = state.policy.limits.topic_publish_rate;
        joined
            .topics
            .entry(topic.clone())
            .or_insert_with(|| rate_limiter(rate));
        Ok(Response::JoinTopic {
            channel,
            topic,
            timestamp,
        })
    }

    async fn leave_topic(&mut self, channel: String, topic: String) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        let joined = topic_of(state, &channel, &topic)?;
        if joined.topics.remove(&topic).is_none() {
            return Err(err(
                ErrorCode::ChannelTopicNotJoined,
                "not joined to this topic",
            ));
        }
        let timestamp = self
            .core
            .leave_topic(&state.handle, &channel, &topic)
            .await?;
        Ok(Response::LeaveTopic {
            channel,
            topic,
            timestamp,
        })
    }

    async fn publish_topic(&mut self, publish: PublishTopicRequest) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::channel_name(&publish.channel).map_err(invalid)?;
        validate::topic_name(&publish.topic).map_err(invalid)?;
        validate::custom_type(&publish.custom_type).map_err(invalid)?;
        let max = limits::MAX_TOPIC_MESSAGE_SIZE;
        if publish.message.len() > max {
            return Err(err(
                ErrorCode::ChannelMessageLengthExceedLimitation,
                format!(
                    "topic message is {} bytes, the limit is {max}",
                    publish.message.len()
                ),
            ));
        }
        let joined = state
            .streams
            .get_mut(&publish.channel)
            .ok_or_else(not_joined)?;
        let limiter = joined.topics.get(&publish.topic).ok_or_else(|| {
            err(
                ErrorCode::ChannelTopicNotJoined,
                "join the topic before publishing in it",
            )
        })?;
        if limiter.check().is_err() {
            self.core
                .metrics
                .rate_limited
                .fetch_add(1, Ordering::Relaxed);
            return Err(err(
                ErrorCode::ChannelPublishMessageTooFrequent,
                format!(
                    "publishing faster than {} messages per second in this topic",
                    state.policy.limits.topic_publish_rate
                ),
            ));
        }
        let (channel, topic) = (publish.channel.clone(), publish.topic.clone());
        let timestamp = self.core.publish_topic(&state.handle, publish).await?;
        Ok(Response::PublishTopic {
            channel,
            topic,
            timestamp,
        })
    }

    async fn subscribe_topic(
        &mut self,
        channel: String,
        topic: String,
        users: Vec<String>,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        topic_of(state, &channel, &topic)?;
        let max_users = check_topic_users(&users)?;
        // Each user once; the ones that are not user ids fail on their own.
        let mut valid: Vec<String> = Vec::with_capacity(users.len());
        let mut failed_users = Vec::new();
        for user in users.iter() {
            if valid.contains(user) || failed_users.iter().any(|f: &FailedUser| &f.user == user) {
                continue;
            }
            match validate::user_id(user, true) {
                Ok(()) => valid.push(user.clone()),
                Err(e) => failed_users.push(FailedUser {
                    user: user.clone(),
                    error_code: SubscribeTopicCode::InvalidRemoteUser.code(),
                    reason: e.what,
                }),
            }
        }
        let mut succeed_users = Vec::new();
        if users.is_empty() || !valid.is_empty() {
            let asked = (!users.is_empty()).then_some(valid.as_slice());
            let done = self
                .core
                .subscribe_topic(
                    &state.handle,
                    &channel,
                    &topic,
                    asked,
                    limits::MAX_SUBSCRIBED_TOPICS,
                    max_users,
                )
                .await?;
            succeed_users = done.succeed;
            failed_users.extend(done.failed.into_iter().map(|(user, code)| FailedUser {
                user,
                error_code: code.code(),
                reason: format!("a topic subscription takes at most {max_users} publishers"),
            }));
        }
        Ok(Response::SubscribeTopic {
            channel,
            topic,
            succeed_users,
            failed_users,
            timestamp: now_ms(),
        })
    }

    async fn unsubscribe_topic(
        &mut self,
        channel: String,
        topic: String,
        users: Vec<String>,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        topic_of(state, &channel, &topic)?;
        check_topic_users(&users)?;
        let users = (!users.is_empty()).then_some(users.as_slice());
        let timestamp = self
            .core
            .unsubscribe_topic(&state.handle, &channel, &topic, users)
            .await?;
        Ok(Response::UnsubscribeTopic {
            channel,
            topic,
            timestamp,
        })
    }

    /// Sets or removes pairs of this user's state in a channel it is in, and tells the others.
    async fn change_state(
        &mut self,
        channel_type: ChannelType,
        channel: String,
        change: StateChange,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        check_presence_channel(channel_type, &channel)?;
        let flags = match channel_type {
            ChannelType::Stream => state.streams.get(&channel).map(|j| j.presence),
            _ => state.subscriptions.get(&channel).map(subscription_presence),
        };
        let Some(flags) = flags else {
            return Err(not_in(channel_type));
        };
        let full = self
            .core
            .engine
            .update_state(
                &state.handle,
                channel_type,
                &channel,
                change,
                limits::MAX_STATE_PAIRS,
            )
            .await
            .map_err(|e| match e {
                StateError::NotPresent => not_in(channel_type),
                StateError::TooMany(..) => {
                    err(ErrorCode::PresenceStateCountOverflow, e.to_string())
                }
                StateError::Engine(e) => engine_failed(ErrorCode::PresenceOperationFailed, &e),
            })?;
        self.core
            .state_changed(&state.handle, channel_type, &channel, flags, full)
            .await;
        Ok(Response::State {
            timestamp: now_ms(),
        })
    }

    /// A present user's state.
    async fn get_state(
        &mut self,
        channel_type: ChannelType,
        channel: String,
        user_id: String,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        check_presence_channel(channel_type, &channel)?;
        validate::user_id(&user_id, true).map_err(invalid)?;
        let states = self
            .core
            .engine
            .get_state(state.handle.app_id(), channel_type, &channel, &user_id)
            .await
            .map_err(|e| engine_failed(ErrorCode::PresenceOperationFailed, &e))?
            .ok_or_else(|| {
                err(
                    ErrorCode::PresenceUserNotExist,
                    format!("user {user_id} is not present in this channel"),
                )
            })?;
        Ok(Response::GetState {
            user_id,
            states,
            timestamp: now_ms(),
        })
    }

    /// A page of the channel's visible users (docs/protocol.md §5.8.2).
    async fn who_now(
        &mut self,
        channel_type: ChannelType,
        channel: String,
        include_user_id: bool,
        include_state: bool,
        page: String,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        check_presence_channel(channel_type, &channel)?;
        if include_state && !include_user_id {
            return Err(err(
                ErrorCode::PresenceInvalidArgument,
                "include_state needs include_user_id",
            ));
        }
        let after = (!page.is_empty()).then_some(page.as_str());
        if let Some(after) = after {
            validate::user_id(after, true).map_err(|_| {
                err(
                    ErrorCode::PresenceInvalidArgument,
                    "page is not a next_page this server gave",
                )
            })?;
        }
        let limit = if include_user_id {
            state.policy.limits.presence_page_size as usize
        } else {
            0
        };
        let page = self
            .core
            .engine
            .present_page(
                state.handle.app_id(),
                channel_type,
                &channel,
                after,
                limit,
                include_state,
            )
            .await
            .map_err(|e| engine_failed(ErrorCode::PresenceOperationFailed, &e))?;
        let mut users = page.users;
        // docs/protocol.md §2.2: a page of users with large states is cut short by bytes.
        let fit = rtm_proto::split::fitting(&users, limits::LIST_BUDGET);
        let more = page.more || fit < users.len();
        users.truncate(fit);
        let next_page = match users.last() {
            Some(last) if more => last.user_id.clone(),
            _ => String::new(),
        };
        Ok(Response::WhoNow {
            total_occupancy: u32::try_from(page.total).unwrap_or(u32::MAX),
            occupants: users,
            next_page,
            timestamp: now_ms(),
        })
    }

    /// The channels where a user is visibly present.
    async fn where_now(&mut self, user_id: String) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::user_id(&user_id, true).map_err(invalid)?;
        let channels = self
            .core
            .engine
            .user_channels(state.handle.app_id(), &user_id)
            .await
            .map_err(|e| engine_failed(ErrorCode::PresenceOperationFailed, &e))?;
        Ok(Response::WhereNow {
            channels,
            timestamp: now_ms(),
        })
    }

    /// Replaces the token of a joined stream channel.
    fn renew_channel_token(&mut self, channel: &str, token: &str) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::channel_name(channel).map_err(invalid)?;
        let app_id = state.handle.app_id();
        let user_id = state.handle.user_id();
        let ends = check_join_token(&state.policy, app_id, channel, user_id, token)?;
        let joined = state.streams.get_mut(channel).ok_or_else(not_joined)?;
        joined.token = TokenClock::new(ends);
        Ok(Response::RenewToken {
            timestamp: now_ms(),
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
        self.core.sessions.remove(state.handle.id());
        self.core.engine.detach(&state.handle).await;
        for (channel, options) in &state.subscriptions {
            let presence = subscription_presence(options);
            self.core
                .depart(&state.handle, ChannelType::Message, channel, presence, how)
                .await;
        }
        self.core.metrics.sessions.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(session = %state.handle.id(), "session ended");
    }
}
