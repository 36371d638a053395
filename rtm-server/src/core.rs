//! The core: what a request means, independent of how it arrived (`docs/architecture.md`,
//! "Core").
//!
//! [`Session`] holds one connection's login state and turns [`Request`]s into [`Response`]s:
//! it validates names and sizes, applies the app's limits, encodes each event once, and hands
//! it to the [`Engine`] for fan-out. It knows nothing of QUIC; the transport feeds it decoded
//! requests and writes back what it returns.

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{SystemTime, UNIX_EPOCH};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rtm_proto::message::LoginRequest;
use rtm_proto::{
    ChannelType, ErrorCode, Event, MessageEvent, PublishRequest, Request, Response, ServerMsg,
    SubscribeOptions, WireError, encode_frame, validate,
};

use crate::config::{AppPolicy, Apps, ConnectionLimits, ServerConfig};
use crate::engine::{Engine, SessionHandle, SessionId};
use crate::metrics::Metrics;
use crate::outbox::Outbox;

/// State shared by every connection of a server.
#[derive(Debug)]
pub(crate) struct Core<E> {
    pub(crate) engine: E,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) connection: ConnectionLimits,
    apps: Apps,
    next_session: AtomicU64,
}

impl<E: Engine> Core<E> {
    pub(crate) fn new(config: &ServerConfig, engine: E, metrics: Arc<Metrics>) -> Self {
        Self {
            engine,
            metrics,
            connection: config.connection,
            apps: config.apps(),
            next_session: AtomicU64::new(1),
        }
    }

    /// Whether any App ID is accepted (no apps configured).
    pub(crate) fn open_apps(&self) -> bool {
        self.apps.open
    }
}

/// Server time in milliseconds since the Unix epoch.
pub(crate) fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

/// One connection's session: logged out, or logged in as one user of one app.
pub(crate) struct Session<E> {
    core: Arc<Core<E>>,
    outbox: Outbox,
    state: Option<LoggedIn>,
}

struct LoggedIn {
    handle: SessionHandle,
    policy: Arc<AppPolicy>,
    subscriptions: HashMap<String, SubscribeOptions>,
    publish_limiter: DefaultDirectRateLimiter,
}

fn err(code: ErrorCode, reason: impl Into<String>) -> WireError {
    WireError::new(code, reason)
}

fn logged_in(state: &mut Option<LoggedIn>) -> Result<&mut LoggedIn, WireError> {
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

    /// Serves one request.
    pub(crate) async fn handle(&mut self, request: Request) -> Result<Response, WireError> {
        match request {
            Request::Ping => Ok(Response::Pong {
                timestamp: now_ms(),
            }),
            Request::Login(login) => self.login(login).await,
            Request::Logout => {
                self.end().await;
                Ok(Response::Logout {
                    timestamp: now_ms(),
                })
            }
            Request::Subscribe { channel, options } => self.subscribe(channel, options).await,
            Request::Unsubscribe { channel } => self.unsubscribe(channel).await,
            Request::Publish(publish) => self.publish(publish).await,
        }
    }

    async fn login(&mut self, login: LoginRequest) -> Result<Response, WireError> {
        if self.state.is_some() {
            return Err(err(
                ErrorCode::DuplicateOperation,
                "already logged in; log out first",
            ));
        }
        validate::app_id(&login.app_id).map_err(|e| err(e.code, e.what))?;
        let Some(policy) = self.core.apps.get(&login.app_id) else {
            return Err(err(
                ErrorCode::InvalidAppId,
                "this server does not serve that App ID",
            ));
        };
        validate::user_id(&login.user_id, login.use_string_user_id)
            .map_err(|e| err(e.code, e.what))?;
        if policy.certificate.is_some() {
            // Verifying AccessToken2 tokens is the next piece of work (the auth issue). Until
            // then an app with a certificate refuses logins rather than accept unverified ones.
            return Err(err(
                ErrorCode::InvalidToken,
                "this app requires token authentication, which this server version cannot verify",
            ));
        }
        let id = SessionId(self.core.next_session.fetch_add(1, Ordering::Relaxed));
        let handle = SessionHandle::new(id, &login.app_id, &login.user_id, self.outbox.clone());
        self.core
            .engine
            .attach(&handle)
            .await
            .map_err(|e| err(ErrorCode::LoginRejected, e.to_string()))?;
        self.core.metrics.sessions.fetch_add(1, Ordering::Relaxed);
        let rate = NonZeroU32::new(policy.limits.publish_rate).unwrap_or(NonZeroU32::MIN);
        let limits = policy.login_limits(self.core.connection.max_frame_len);
        tracing::debug!(session = %id, app = %login.app_id, user = %login.user_id, "logged in");
        self.state = Some(LoggedIn {
            handle,
            policy,
            subscriptions: HashMap::new(),
            publish_limiter: RateLimiter::direct(Quota::per_second(rate)),
        });
        Ok(Response::Login {
            timestamp: now_ms(),
            limits,
        })
    }

    async fn subscribe(
        &mut self,
        channel: String,
        options: SubscribeOptions,
    ) -> Result<Response, WireError> {
        let engine = &self.core.engine;
        let state = logged_in(&mut self.state)?;
        validate::channel_name(&channel).map_err(|e| err(e.code, e.what))?;
        let max = state.policy.limits.max_subscriptions as usize;
        if !state.subscriptions.contains_key(&channel) && state.subscriptions.len() >= max {
            return Err(err(
                ErrorCode::ChannelInstanceExceedLimitation,
                format!("already subscribed to {max} channels, the limit"),
            ));
        }
        engine
            .subscribe(&state.handle, &channel, options)
            .await
            .map_err(|e| err(ErrorCode::ChannelSubscribeFailed, e.to_string()))?;
        state.subscriptions.insert(channel.clone(), options);
        Ok(Response::Subscribe {
            channel,
            timestamp: now_ms(),
        })
    }

    async fn unsubscribe(&mut self, channel: String) -> Result<Response, WireError> {
        let engine = &self.core.engine;
        let state = logged_in(&mut self.state)?;
        validate::channel_name(&channel).map_err(|e| err(e.code, e.what))?;
        if state.subscriptions.remove(&channel).is_none() {
            return Err(err(
                ErrorCode::ChannelNotSubscribed,
                "not subscribed to this channel",
            ));
        }
        engine
            .unsubscribe(&state.handle, &channel)
            .await
            .map_err(|e| err(ErrorCode::ChannelUnsubscribeFailed, e.to_string()))?;
        Ok(Response::Unsubscribe {
            channel,
            timestamp: now_ms(),
        })
    }

    async fn publish(&mut self, publish: PublishRequest) -> Result<Response, WireError> {
        let metrics = &self.core.metrics;
        let engine = &self.core.engine;
        let state = logged_in(&mut self.state)?;
        let PublishRequest {
            channel_type,
            channel,
            message,
            custom_type,
        } = publish;
        match channel_type {
            ChannelType::Message => validate::channel_name(&channel),
            ChannelType::User => validate::user_id(&channel, true),
            ChannelType::Stream => {
                return Err(err(
                    ErrorCode::InvalidChannelType,
                    "publish serves message and user channels; stream channels use topics",
                ));
            }
        }
        .map_err(|e| err(e.code, e.what))?;
        validate::custom_type(&custom_type).map_err(|e| err(e.code, e.what))?;
        let max = state.policy.limits.max_message_size as usize;
        if message.len() > max {
            return Err(err(
                ErrorCode::ChannelMessageLengthExceedLimitation,
                format!("message is {} bytes, the limit is {max}", message.len()),
            ));
        }
        if state.publish_limiter.check().is_err() {
            metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
            return Err(err(
                ErrorCode::ChannelPublishMessageTooFrequent,
                format!(
                    "publishing faster than {} messages per second",
                    state.policy.limits.publish_rate
                ),
            ));
        }
        let timestamp = now_ms();
        let app_id = state.handle.app_id();
        let publisher = state.handle.user_id();
        // A user-channel message is seen by its receiver as coming from the publisher's own
        // user channel.
        let channel_name = match channel_type {
            ChannelType::User => publisher.to_owned(),
            _ => channel.clone(),
        };
        let frame = encode_frame(&ServerMsg::Event(Event::Message(MessageEvent {
            channel_type,
            channel_name,
            topic_name: String::new(),
            message,
            custom_type,
            publisher: publisher.to_owned(),
            timestamp,
        })));
        let delivery = match channel_type {
            ChannelType::User => match engine.send_to_user(app_id, &channel, frame).await {
                Ok(Some(d)) => d,
                Ok(None) => {
                    return Err(err(
                        ErrorCode::ChannelReceiverOffline,
                        format!("user {channel} is not online"),
                    ));
                }
                Err(e) => return Err(err(ErrorCode::ChannelPublishMessageFailed, e.to_string())),
            },
            _ => engine
                .publish(app_id, &channel, frame)
                .await
                .map_err(|e| err(ErrorCode::ChannelPublishMessageFailed, e.to_string()))?,
        };
        metrics.messages_published.fetch_add(1, Ordering::Relaxed);
        metrics
            .frames_delivered
            .fetch_add(delivery.queued as u64, Ordering::Relaxed);
        Ok(Response::Publish { channel, timestamp })
    }

    /// Ends the login, if any: drops every subscription and unregisters the session.
    pub(crate) async fn end(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        self.core.engine.detach(&state.handle).await;
        self.core.metrics.sessions.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(session = %state.handle.id(), "session ended");
    }
}
