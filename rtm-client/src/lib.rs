//! The rtm client: the Signaling API over QUIC.
//!
//! The names follow the Signaling SDK's JavaScript API (`rtm.login`, `rtm.subscribe`,
//! `rtm.publish`, the `message` and `linkState` events …) in Rust's idiom: snake_case methods,
//! option structs with [`Default`], `async fn`s returning `Result<_, RtmError>`, and one event
//! stream instead of listeners.
//!
//! ```no_run
//! use rtm_client::{LoginOptions, PublishOptions, RtmClient, RtmConfig, RtmEvent, SubscribeOptions};
//!
//! # async fn demo() -> Result<(), rtm_client::RtmError> {
//! let rtm = RtmClient::new("my-app", "Tony", RtmConfig::local_dev("rtm-data/cert.pem"))?;
//! let mut events = rtm.events();
//! rtm.login(LoginOptions::default()).await?;
//! rtm.subscribe("chat_room", SubscribeOptions::default()).await?;
//! rtm.publish("chat_room", "Hello world", PublishOptions::default()).await?;
//! while let Some(event) = events.recv().await {
//!     if let RtmEvent::Message(m) = event {
//!         println!("{}: {:?}", m.publisher, m.message);
//!     }
//! }
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! - [`RtmClient`]: the cheap-to-clone handle with the API's methods.
//! - `connection`: the task that owns the QUIC connection once logged in.
//! - [`config`]: [`RtmConfig`], [`Endpoint`], [`Trust`] and the options of each call.
//! - [`event`]: [`RtmEvent`] and the [`EventStream`] that yields it.
//!
//! - `session`: the supervisor that reconnects after a lost connection and resumes the session
//!   (or logs in again and re-subscribes), reporting each step as a [`LinkStateEvent`].
//!
//! - [`stream`]: [`StreamChannel`], its topics and their options.
//!
//! - [`presence`]: who is where, and temporary user state ([`RtmClient::presence`]).
//!
//! What this crate does not do yet: storage and locks. Those arrive with their issues.
#![warn(missing_docs)]

mod batch;
pub mod config;
mod connection;
mod crypto;
pub mod event;
mod gap;
pub mod history;
mod lanes;
mod link;
mod parts;
pub mod presence;
pub mod raw;
mod session;
pub mod storage;
pub mod stream;
mod transport;
mod websocket;

use std::future::Future;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

pub use rtm_proto::{
    ChannelType, ErrorCode, IntervalDetail, LoginLimits, MessageEvent, Payload, PresenceEvent,
    PresenceEventType, RtmError, StateDetail, UserState,
};
use rtm_proto::{PublishRequest, Request, Response, message::LoginRequest, validate};

pub use crate::config::{
    EncryptionMode, Endpoint, LoginOptions, PublishOptions, RenewTokenOptions, RtmConfig,
    ServerNode, SubscribeOptions, Transport, Trust,
};
use crate::connection::{Command, Connection, Opened};
pub use crate::crypto::ENCRYPTION_OVERHEAD;
pub use crate::event::{
    EventStream, LinkOperation, LinkState, LinkStateEvent, LinkStateReason, RtmEvent, ServiceType,
};
pub use crate::history::{GetHistoryMessageOptions, GetMessagesResponse, History, HistoryMessage};
use crate::link::LinkTracker;
pub use crate::presence::{
    ChannelDetail, GetStateResponse, OccupancyDetail, Presence, RemoveStateOptions,
    RemoveStateResponse, SetStateResponse, StateResponse, WhereNowResponse, WhoNowOptions,
    WhoNowResponse,
};
use crate::session::SessionCache;
pub use crate::storage::{
    AcquireLockOptions, AcquireLockResponse, ChannelMetadataResponse, GetChannelMetadataResponse,
    GetLocksResponse, GetUserMetadataOptions, GetUserMetadataResponse, Lock, LockDetail, LockEvent,
    LockEventType, LockResponse, MetadataItem, MetadataOptions, ReleaseLockResponse,
    RemoveChannelMetadataOptions, RemoveChannelMetadataResponse, RemoveLockResponse,
    RemoveUserMetadataOptions, RemoveUserMetadataResponse, RevokeLockResponse,
    SetChannelMetadataResponse, SetLockOptions, SetLockResponse, SetOrUpdateUserMetadataOptions,
    SetUserMetadataResponse, Storage, StorageData, StorageEvent, StorageEventType, StorageType,
    StoredItem, SubscribeUserMetaResponse, UnsubscribeUserMetaResponse,
    UpdateChannelMetadataResponse, UpdateUserMetadataResponse, UserMetadataResponse,
    UserMetadataSubscriptionResponse,
};
pub use crate::stream::{
    FailedDetail, JoinOptions, JoinResponse, JoinTopicOptions, JoinTopicResponse, LeaveResponse,
    LeaveTopicResponse, PublishTopicMessageResponse, PublisherInfo, StreamChannel,
    SubscribeTopicResponse, TopicEvent, TopicEventType, TopicInfo, TopicMessageOptions,
    TopicPriority, TopicQos, TopicResponse, TopicSubscribeOptions, UnsubscribeTopicResponse,
};
pub use crate::transport::QuicSocket;
pub use rtm_proto::LostMessages;

/// The answer to [`RtmClient::login`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LoginResponse {
    /// Server time of the login, in milliseconds since the Unix epoch.
    pub timestamp: u64,
    /// The limits the server applies to this session.
    pub limits: LoginLimits,
}

/// The answer to [`RtmClient::logout`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LogoutResponse {
    /// Server time of the logout (client time if the connection was already gone).
    pub timestamp: u64,
}

/// The answer to [`RtmClient::renew_token`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RenewTokenResponse {
    /// Server time.
    pub timestamp: u64,
}

/// The answer to [`RtmClient::subscribe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeResponse {
    /// The channel.
    pub channel_name: String,
    /// Server time.
    pub timestamp: u64,
}

/// The answer to [`RtmClient::unsubscribe`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct UnsubscribeResponse {
    /// The channel.
    pub channel_name: String,
    /// Server time.
    pub timestamp: u64,
}

/// The answer to [`RtmClient::publish`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct PublishResponse {
    /// The channel, or the target user.
    pub channel_name: String,
    /// Server time of the publish, the same as the message event's `timestamp`.
    pub timestamp: u64,
}

/// A Signaling client: the reference's `RTM` instance.
///
/// Cheap to clone; all clones share one session. Dropping the last clone closes the connection,
/// which ends the session on the server.
#[derive(Clone, Debug)]
pub struct RtmClient {
    inner: Arc<Inner>,
}

#[derive(Debug)]
struct Inner {
    app_id: String,
    user_id: String,
    config: RtmConfig,
    /// The node the client uses ([`RtmConfig::for_node`]); moves on when it cannot be reached.
    node: std::sync::atomic::AtomicUsize,
    /// The end-to-end cipher, when the configuration asks for one.
    cipher: Option<crypto::Cipher>,
    listeners: event::Listeners,
    link: Arc<LinkTracker>,
    /// Serializes login and logout.
    login_lock: tokio::sync::Mutex<()>,
    state: Mutex<State>,
}

/// The session and its connection.
#[derive(Debug, Default)]
struct State {
    /// Counts logins and logouts: a supervisor acts only on the session of its own epoch.
    epoch: u64,
    /// The live connection; `None` while logged out or reconnecting.
    connection: Option<Connection>,
    /// The session, while logged in (connected or not).
    session: Option<SessionCache>,
}

/// What the session supervisor asks of the client. Each returns `None` when the session of
/// `epoch` is no longer the client's (a logout or a new login came first).
impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn session_of(state: &mut State, epoch: u64) -> Option<&mut SessionCache> {
        if state.epoch == epoch {
            state.session.as_mut()
        } else {
            None
        }
    }

    /// The login request for this client with `token`.
    pub(crate) fn login_request(&self, token: String) -> Request {
        Request::Login(LoginRequest {
            app_id: self.app_id.clone(),
            user_id: self.user_id.clone(),
            token,
            use_string_user_id: self.config.use_string_user_id,
            heartbeat_interval: self.config.heartbeat_interval as u16,
            presence_timeout: self.config.presence_timeout as u16,
        })
    }

    /// Ends the session (the server refused it for good).
    pub(crate) fn end_session(&self, epoch: u64) -> Option<()> {
        let mut state = self.lock();
        Self::session_of(&mut state, epoch)?;
        state.session = None;
        state.connection = None;
        Some(())
    }

    /// Forgets the lost connection; returns the subscribed channels.
    pub(crate) fn drop_connection(&self, epoch: u64) -> Option<Vec<String>> {
        let mut state = self.lock();
        let channels = Self::session_of(&mut state, epoch)?.channels();
        state.connection = None;
        Some(channels)
    }

    /// The subscribed channels.
    pub(crate) fn cached_channels(&self, epoch: u64) -> Option<Vec<String>> {
        Some(Self::session_of(&mut self.lock(), epoch)?.channels())
    }

    /// The login token.
    pub(crate) fn cached_token(&self, epoch: u64) -> Option<String> {
        Some(Self::session_of(&mut self.lock(), epoch)?.token.clone())
    }

    /// The subscriptions and their options.
    pub(crate) fn cached_subscriptions(
        &self,
        epoch: u64,
    ) -> Option<std::collections::BTreeMap<String, SubscribeOptions>> {
        Some(
            Self::session_of(&mut self.lock(), epoch)?
                .subscriptions
                .clone(),
        )
    }

    /// The users whose metadata the session listens to.
    pub(crate) fn cached_user_metadata(
        &self,
        epoch: u64,
    ) -> Option<std::collections::BTreeSet<String>> {
        Some(
            Self::session_of(&mut self.lock(), epoch)?
                .user_metadata
                .clone(),
        )
    }

    /// This user's cached states.
    pub(crate) fn cached_states(
        &self,
        epoch: u64,
    ) -> Option<std::collections::HashMap<(ChannelType, String), StateDetail>> {
        Some(Self::session_of(&mut self.lock(), epoch)?.states.clone())
    }

    /// The joined stream channels.
    pub(crate) fn cached_streams(
        &self,
        epoch: u64,
    ) -> Option<std::collections::BTreeMap<String, stream::StreamCache>> {
        Some(Self::session_of(&mut self.lock(), epoch)?.streams.clone())
    }

    /// Lets the live connection's events through, once its link state has been reported.
    pub(crate) fn deliver_events(&self, epoch: u64) {
        let mut state = self.lock();
        if Self::session_of(&mut state, epoch).is_some()
            && let Some(connection) = &state.connection
        {
            connection.deliver_events();
        }
    }

    /// Makes `connection` the live one; returns the subscribed channels.
    pub(crate) fn install(&self, epoch: u64, connection: Connection) -> Option<Vec<String>> {
        let mut state = self.lock();
        let channels = Self::session_of(&mut state, epoch)?.channels();
        state.connection = Some(connection);
        Some(channels)
    }

    /// Makes `connection` (a new login) the live one, forgetting the channels that could not be
    /// subscribed again; returns the channels that were.
    pub(crate) fn install_relogin(
        &self,
        epoch: u64,
        connection: Connection,
        unrestored: &[String],
    ) -> Option<Vec<String>> {
        let mut state = self.lock();
        let session = Self::session_of(&mut state, epoch)?;
        for channel in unrestored {
            session.subscriptions.remove(channel);
            session.streams.remove(channel);
        }
        let channels = session.channels();
        state.connection = Some(connection);
        Some(channels)
    }
}

impl RtmClient {
    /// A client for `user_id` in the app `app_id`. Checks the ids; does not connect.
    pub fn new(
        app_id: impl Into<String>,
        user_id: impl Into<String>,
        mut config: RtmConfig,
    ) -> Result<Self, RtmError> {
        let (app_id, user_id) = (app_id.into(), user_id.into());
        let invalid = |e: validate::InvalidName| RtmError::new(e.code, "new", e.what);
        validate::app_id(&app_id).map_err(invalid)?;
        validate::user_id(&user_id, config.use_string_user_id).map_err(invalid)?;
        // Out-of-range values are clamped, as the reference does.
        config.heartbeat_interval = config.heartbeat_interval.clamp(5, 1800);
        config.presence_timeout = config.presence_timeout.clamp(5, 300);
        let cipher = crypto::Cipher::from_config(&config)?;
        let listeners = event::Listeners::default();
        let link = Arc::new(LinkTracker::new(listeners.clone()));
        Ok(Self {
            inner: Arc::new(Inner {
                app_id,
                user_id,
                config,
                node: std::sync::atomic::AtomicUsize::new(0),
                cipher,
                listeners,
                link,
                login_lock: tokio::sync::Mutex::new(()),
                state: Mutex::new(State::default()),
            }),
        })
    }

    /// The user id this client logs in as.
    pub fn user_id(&self) -> &str {
        &self.inner.user_id
    }

    /// The App ID.
    pub fn app_id(&self) -> &str {
        &self.inner.app_id
    }

    /// The configuration in use, with out-of-range values clamped.
    pub fn config(&self) -> &RtmConfig {
        &self.inner.config
    }

    /// A new, independent stream of events. Dropping it removes the listener.
    pub fn events(&self) -> EventStream {
        self.inner.listeners.add()
    }

    /// The current link state.
    pub fn link_state(&self) -> LinkState {
        self.inner.link.get()
    }

    /// Connects and logs in. Fails with [`ErrorCode::DuplicateOperation`] when already logged
    /// in. While the client is restoring a lost connection (`DISCONNECTED` or `SUSPENDED`), a
    /// login gives up on that session and starts a new one.
    ///
    /// Once logged in, the client keeps the session: it sends a heartbeat every
    /// `heartbeat_interval`, and after a lost connection it reconnects by itself and resumes
    /// (see [`LinkStateEvent`]).
    pub async fn login(&self, options: LoginOptions) -> Result<LoginResponse, RtmError> {
        let inner = &self.inner;
        let _guard = inner.login_lock.lock().await;
        if self.connection_alive() {
            return Err(RtmError::new(
                ErrorCode::DuplicateOperation,
                "login",
                "already logged in",
            ));
        }
        let epoch = {
            let mut state = inner.lock();
            state.session = None;
            state.connection = None;
            state.epoch += 1;
            state.epoch
        };
        inner.link.set(
            LinkState::Connecting,
            LinkOperation::Login,
            LinkStateReason::Login,
            "Perform login operation",
        );
        let token = options.token.unwrap_or_default();
        // Each node once, from the one in use, while they cannot be reached.
        let mut tries = inner.config.node_count();
        let opened = loop {
            let login = inner.login_request(token.clone());
            let opened = Connection::open(
                &inner.node_config(),
                "login",
                login,
                inner.listeners.clone(),
                connection::Carried::default(),
            )
            .await;
            tries -= 1;
            match opened {
                Err(connection::OpenError::Unreachable(_)) if tries > 0 => inner.next_node(),
                Err(connection::OpenError::Refused(e))
                    if tries > 0 && inner.node_may_be_at_fault(&e) =>
                {
                    inner.next_node();
                }
                opened => break opened.map_err(connection::OpenError::into_error),
            }
        };
        let opened = match opened {
            Ok(Opened {
                response:
                    Response::Login {
                        timestamp,
                        limits,
                        ticket,
                    },
                connection,
                ended,
                received,
            }) => {
                let mut state = inner.lock();
                let cache = session::start(
                    Arc::downgrade(&self.inner),
                    epoch,
                    token,
                    ticket,
                    received,
                    ended,
                );
                state.connection = Some(connection);
                state.session = Some(cache);
                Ok(LoginResponse { timestamp, limits })
            }
            Ok(other) => Err(unexpected("login", &other.response)),
            Err(e) => Err(e),
        };
        match opened {
            Ok(response) => {
                inner.link.set(
                    LinkState::Connected,
                    LinkOperation::Login,
                    LinkStateReason::LoginSuccess,
                    "Login success",
                );
                inner.deliver_events(epoch);
                Ok(response)
            }
            Err(e) => {
                inner.link.set(
                    LinkState::Failed,
                    LinkOperation::Login,
                    session::failure_reason(e.code),
                    e.reason.clone(),
                );
                Err(e)
            }
        }
    }

    /// Logs out and closes the connection. Subscriptions end. While the client is restoring a
    /// lost connection, the session is given up locally (the server ends it at its presence
    /// timeout).
    pub async fn logout(&self) -> Result<LogoutResponse, RtmError> {
        let _guard = self.inner.login_lock.lock().await;
        let answer = if self.connection_alive() {
            self.request("logout", Request::Logout).await
        } else if self.inner.lock().session.is_some() {
            Ok(Response::Logout {
                timestamp: now_ms(),
            })
        } else {
            Err(RtmError::new(
                ErrorCode::NotLogin,
                "logout",
                "not logged in",
            ))
        };
        {
            let mut state = self.inner.lock();
            if let Some(connection) = state.connection.take() {
                connection.close();
            }
            state.session = None;
            state.epoch += 1;
        }
        self.inner.link.set(
            LinkState::Idle,
            LinkOperation::Logout,
            LinkStateReason::Logout,
            "Perform logout operation",
        );
        match answer {
            Ok(Response::Logout { timestamp }) => Ok(LogoutResponse { timestamp }),
            Ok(other) => Err(unexpected("logout", &other)),
            Err(e) => Err(e),
        }
    }

    /// Replaces the login token with a fresh one, extending the session (the reference's
    /// `renewToken`); with `options.channel_name`, replaces the RTC token of that joined stream
    /// channel instead.
    pub async fn renew_token(
        &self,
        token: &str,
        options: RenewTokenOptions,
    ) -> Result<RenewTokenResponse, RtmError> {
        if let Some(channel) = options.channel_name.filter(|c| !c.is_empty()) {
            let request = Request::RenewChannelToken {
                channel: channel.clone(),
                token: token.to_owned(),
            };
            return match self.request("renewToken", request).await? {
                Response::RenewToken { timestamp } => {
                    if let Some(session) = self.inner.lock().session.as_mut()
                        && let Some(options) = session
                            .streams
                            .get_mut(&channel)
                            .and_then(|s| s.options.as_mut())
                    {
                        // A later automatic join uses the fresh token.
                        options.token = Some(token.to_owned());
                    }
                    Ok(RenewTokenResponse { timestamp })
                }
                other => Err(unexpected("renewToken", &other)),
            };
        }
        let request = Request::RenewToken {
            token: token.to_owned(),
        };
        match self.request("renewToken", request).await? {
            Response::RenewToken { timestamp } => {
                if let Some(session) = self.inner.lock().session.as_mut() {
                    // A later automatic login uses the fresh token.
                    session.token = token.to_owned();
                }
                Ok(RenewTokenResponse { timestamp })
            }
            other => Err(unexpected("renewToken", &other)),
        }
    }

    /// Subscribes to a message channel.
    pub async fn subscribe(
        &self,
        channel_name: &str,
        options: SubscribeOptions,
    ) -> Result<SubscribeResponse, RtmError> {
        check(validate::channel_name(channel_name), "subscribe")?;
        let request = Request::Subscribe {
            channel: channel_name.to_owned(),
            options,
        };
        match self.request("subscribe", request).await? {
            Response::Subscribe { channel, timestamp } => {
                let cached = self.inner.lock().session.as_mut().and_then(|session| {
                    let first = session
                        .subscriptions
                        .insert(channel.clone(), options)
                        .is_none();
                    let key = (ChannelType::Message, channel.clone());
                    session.states.get(&key).filter(|_| first).cloned()
                });
                if let Some(states) = cached.filter(|s| !s.is_empty()) {
                    // State set before subscribing (docs/protocol.md §5.8.1).
                    self.presence()
                        .apply_cached(ChannelType::Message, &channel, states)
                        .await;
                }
                Ok(SubscribeResponse {
                    channel_name: channel,
                    timestamp,
                })
            }
            other => Err(unexpected("subscribe", &other)),
        }
    }

    /// Unsubscribes from a message channel.
    pub async fn unsubscribe(&self, channel_name: &str) -> Result<UnsubscribeResponse, RtmError> {
        check(validate::channel_name(channel_name), "unsubscribe")?;
        let request = Request::Unsubscribe {
            channel: channel_name.to_owned(),
        };
        match self.request("unsubscribe", request).await? {
            Response::Unsubscribe { channel, timestamp } => {
                if let Some(session) = self.inner.lock().session.as_mut() {
                    session.subscriptions.remove(&channel);
                    // The server dropped the state with the subscription.
                    session
                        .states
                        .remove(&(ChannelType::Message, channel.clone()));
                }
                // A later subscription starts afresh: what was published between is not missed.
                self.inner.listeners.forget_channel(&channel);
                Ok(UnsubscribeResponse {
                    channel_name: channel,
                    timestamp,
                })
            }
            other => Err(unexpected("unsubscribe", &other)),
        }
    }

    /// Publishes a message to a channel, or (with [`ChannelType::User`]) to one user.
    ///
    /// Every subscriber of the channel receives it, this client included when it subscribes.
    /// Messages from one client arrive in the order they were published. The message is queued
    /// for sending when `publish` is called, not when its future is first polled, so calls made
    /// one after another are sent in that order even if their futures are awaited later or
    /// together (as with the JavaScript SDK's promises).
    pub fn publish<M: Into<Payload>>(
        &self,
        channel_name: &str,
        message: M,
        options: PublishOptions,
    ) -> impl Future<Output = Result<PublishResponse, RtmError>> + Send + 'static + use<M> {
        // Sealed and queued now, so that calls keep their order.
        let answer = self.seal(message.into()).map(|message| {
            let publish = PublishRequest {
                channel_type: options.channel_type,
                channel: channel_name.to_owned(),
                message,
                custom_type: options.custom_type.unwrap_or_default(),
            };
            let request = if options.store_in_history {
                Request::PublishAndStore(publish)
            } else {
                Request::Publish(publish)
            };
            self.request("publish", request)
        });
        async move {
            match answer?.await? {
                Response::Publish { channel, timestamp } => Ok(PublishResponse {
                    channel_name: channel,
                    timestamp,
                }),
                other => Err(unexpected("publish", &other)),
            }
        }
    }

    /// The payload as it goes to the server: sealed when the client encrypts.
    fn seal(&self, message: Payload) -> Result<Payload, RtmError> {
        match &self.inner.cipher {
            Some(cipher) => cipher.seal(message),
            None => Ok(message),
        }
    }

    fn connection_alive(&self) -> bool {
        self.inner
            .lock()
            .connection
            .as_ref()
            .is_some_and(Connection::is_alive)
    }

    /// Queues `request` now and returns the future of its answer, which fails after the
    /// configured request timeout.
    fn request(
        &self,
        operation: &'static str,
        request: Request,
    ) -> impl Future<Output = Result<Response, RtmError>> + Send + 'static + use<> {
        self.request_within(operation, request, Some(self.inner.config.request_timeout))
    }

    /// Queues `request` now and returns the future of its answer, waiting at most `timeout`
    /// (`None`: until the answer comes or the connection ends).
    fn request_within(
        &self,
        operation: &'static str,
        request: Request,
        timeout: Option<std::time::Duration>,
    ) -> impl Future<Output = Result<Response, RtmError>> + Send + 'static + use<> {
        let (reply, answer) = tokio::sync::oneshot::channel();
        let state = self.inner.lock();
        let queued = match (&state.connection, &state.session) {
            (None, None) => Err(RtmError::new(
                ErrorCode::NotLogin,
                operation,
                "not logged in",
            )),
            // docs/protocol.md §5.6: calls fail at once while the link is being restored.
            (None, Some(_)) => Err(RtmError::new(
                ErrorCode::NotConnected,
                operation,
                "not connected: the client is restoring its connection",
            )),
            (Some(c), _) => c.commands.send(Command { request, reply }).map_err(|_| {
                RtmError::new(
                    ErrorCode::NotConnected,
                    operation,
                    "the connection is closed",
                )
            }),
        };
        drop(state);
        async move {
            queued?;
            let answered = match timeout {
                Some(timeout) => tokio::time::timeout(timeout, answer).await.map_err(|_| {
                    RtmError::new(
                        timeout_code(operation),
                        operation,
                        format!("no answer within {timeout:?}"),
                    )
                })?,
                None => answer.await,
            };
            match answered {
                Ok(Ok(response)) => Ok(response),
                Ok(Err(e)) => Err(RtmError::new(e.code, operation, e.reason)),
                Err(_) => Err(RtmError::new(
                    ErrorCode::NotConnected,
                    operation,
                    "the connection closed before the server answered",
                )),
            }
        }
    }
}

/// Client time in milliseconds since the Unix epoch.
fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

fn check(result: Result<(), validate::InvalidName>, operation: &str) -> Result<(), RtmError> {
    result.map_err(|e| RtmError::new(e.code, operation, e.what))
}

fn unexpected(operation: &str, response: &Response) -> RtmError {
    RtmError::new(
        ErrorCode::InvalidParameter,
        operation,
        format!("the server answered with {response:?}"),
    )
}

fn timeout_code(operation: &str) -> ErrorCode {
    match operation {
        "publish" => ErrorCode::ChannelPublishMessageTimeout,
        "subscribe" => ErrorCode::ChannelSubscribeTimeout,
        "login" => ErrorCode::LoginTimeout,
        op if op.ends_with("Metadata") => ErrorCode::StorageOperationTimeout,
        op if op.ends_with("Lock") || op == "getLocks" => ErrorCode::LockOperationTimeout,
        _ => ErrorCode::NotConnected,
    }
}
