//! Sessions: one per connection, logged out or logged in as one user of one app
//! (`docs/architecture.md`, "Session").
//!
//! A [`Session`] turns each [`Request`] into a [`Response`]: it owns the login, the list of
//! subscriptions (for the per-client limit and for cleanup), and the publish rate limiter, and
//! asks the [`Core`] for the channel operations themselves, and keeps the session's clocks
//! (heartbeat, presence timeout, token expiry). A session can outlive its connection: see
//! [`crate::resume`].

use std::collections::HashMap;
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rtm_proto::message::LoginRequest;
use rtm_proto::{
    ErrorCode, LoginLimits, PublishRequest, Request, Response, SubscribeOptions, WireError,
    validate,
};

use crate::config::AppPolicy;
use crate::core::{Core, err, invalid, now_ms};
use crate::engine::SessionId;
use crate::engine::{Engine, SessionHandle};
use crate::outbox::Outbox;
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
    policy: Arc<AppPolicy>,
    subscriptions: HashMap<String, SubscribeOptions>,
    publish_limiter: DefaultDirectRateLimiter,
    /// When the login token ends (Unix ms), for apps with an App Certificate.
    token_ends_ms: Option<u64>,
    /// Whether the client was warned about `token_ends_ms`.
    token_warned: bool,
}

/// What the session's token clock asks of the connection, and when.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum TokenDeadline {
    /// Tell the client its token expires soon, at this Unix time (ms).
    Warn(u64),
    /// End the session, at this Unix time (ms).
    Expire(u64),
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

    /// Queues an event to the client.
    pub(crate) fn push_event(&self, event: &rtm_proto::Event) {
        let frame = rtm_proto::encode_frame(&rtm_proto::ServerMsg::Event(event.clone()));
        self.outbox.push(frame);
    }

    /// Ends the session for `reason`: the client is told, then the connection closes.
    pub(crate) fn close(&self, reason: rtm_proto::CloseReason) {
        self.outbox.close(reason);
    }

    /// The client has received the first `received` delivery frames of the session.
    pub(crate) fn ack(&self, received: &[u64]) {
        if self.state.is_some() {
            self.outbox.ack(received);
        }
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
            Request::RenewToken { token } => self.renew_token(&token),
            Request::Heartbeat { received } => {
                self.ack(&received);
                Ok(Response::Pong {
                    timestamp: now_ms(),
                })
            }
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
        state.token_ends_ms = ends;
        state.token_warned = false;
        Ok(Response::RenewToken {
            timestamp: now_ms(),
        })
    }

    /// The next thing the token clock asks for, if any.
    pub(crate) fn token_deadline(&self) -> Option<TokenDeadline> {
        let state = self.state.as_ref()?;
        let ends = state.token_ends_ms?;
        let warning = u64::from(self.core.connection.token_warning_secs) * 1000;
        if !state.token_warned && ends > warning {
            Some(TokenDeadline::Warn(ends - warning))
        } else {
            Some(TokenDeadline::Expire(ends))
        }
    }

    /// Records that the client was warned.
    pub(crate) fn token_warned(&mut self) {
        if let Some(state) = self.state.as_mut() {
            state.token_warned = true;
        }
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
        self.core
            .engine
            .attach(&handle)
            .await
            .map_err(|e| err(ErrorCode::LoginRejected, e.to_string()))?;
        self.core.metrics.sessions.fetch_add(1, Ordering::Relaxed);
        let rate = NonZeroU32::new(policy.limits.publish_rate).unwrap_or(NonZeroU32::MIN);
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
        self.state = Some(LoggedIn {
            handle,
            claims,
            limits,
            // The reference's ranges (`reference/extended-api.md` §6.4).
            presence_timeout: Duration::from_secs(login.presence_timeout.clamp(5, 300).into()),
            policy,
            subscriptions: HashMap::new(),
            publish_limiter: RateLimiter::direct(Quota::per_second(rate)),
            token_ends_ms,
            token_warned: false,
        });
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
        state.subscriptions.insert(channel.clone(), options);
        Ok(Response::Subscribe {
            channel,
            timestamp: now_ms(),
        })
    }

    async fn unsubscribe(&mut self, channel: String) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::channel_name(&channel).map_err(invalid)?;
        if state.subscriptions.remove(&channel).is_none() {
            return Err(err(
                ErrorCode::ChannelNotSubscribed,
                "not subscribed to this channel",
            ));
        }
        self.core.unsubscribe(&state.handle, &channel).await?;
        Ok(Response::Unsubscribe {
            channel,
            timestamp: now_ms(),
        })
    }

    async fn publish(&mut self, publish: PublishRequest) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        self.core.check_publish(&state.policy, &publish)?;
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
        let timestamp = self.core.publish(&state.handle, publish).await?;
        Ok(Response::Publish { channel, timestamp })
    }

    /// Ends the login, if any: drops every subscription and unregisters the session.
    pub(crate) async fn end(&mut self) {
        let Some(state) = self.state.take() else {
            return;
        };
        self.core.sessions.remove(state.handle.id());
        self.core.engine.detach(&state.handle).await;
        self.core.metrics.sessions.fetch_sub(1, Ordering::Relaxed);
        tracing::debug!(session = %state.handle.id(), "session ended");
    }
}
