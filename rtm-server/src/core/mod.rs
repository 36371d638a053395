//! The core: what a channel operation means, independent of who asked or how it arrived
//! (`docs/architecture.md`, "Core").
//!
//! [`Core`] validates names and sizes against the app's limits, encodes each event exactly once,
//! and hands the encoded frame to the [`Engine`] for fan-out. It holds no per-connection state:
//! that lives in the session layer, which reaches the engine only through the core. The core
//! knows nothing of sessions, connections or transports.

mod presence;
mod storage;
mod topics;

use std::sync::Arc;
use std::sync::atomic::Ordering;

use rtm_proto::{
    ChannelType, ErrorCode, Event, HistoryMessage, MessageEvent, PublishRequest, ServerMsg,
    SubscribeOptions, WireError, encode_frame, validate,
};

pub(crate) use crate::clock::now_ms;
use crate::config::{AppPolicy, Apps, ConnectionLimits, ServerConfig};
use crate::engine::{
    Delivery, Engine, EngineError, HistoryKey, Retention, SessionHandle, SessionId,
};
use crate::events::{AppEvent, EventKind, Events};
use crate::metrics::{MessageKind, Metrics};

pub(crate) use self::presence::{Departure, Intervals};
pub(crate) use self::storage::{LockAnswer, lock_failed};

/// State shared by every connection of a server.
#[derive(Debug)]
pub(crate) struct Core<E> {
    /// Reached only through the core's methods.
    engine: E,
    pub(crate) metrics: Arc<Metrics>,
    pub(crate) connection: ConnectionLimits,
    /// Presence changes of busy channels waiting for their `INTERVAL` event.
    intervals: Intervals,
    /// Leaves waiting out the debounce window, told at once when the server stops.
    leaves: presence::PendingLeaves,
    apps: Apps,
    /// The apps' events for their backends (webhooks).
    pub(crate) events: Events,
}

/// Who publishes: a session's user, or a backend (the admin and REST APIs) speaking as a user.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Author<'a> {
    pub(crate) app_id: &'a str,
    pub(crate) user_id: &'a str,
}

impl<'a> From<&'a SessionHandle> for Author<'a> {
    fn from(session: &'a SessionHandle) -> Self {
        Self {
            app_id: session.app_id(),
            user_id: session.user_id(),
        }
    }
}

/// A [`WireError`] with `code` and `reason`.
pub(crate) fn err(code: ErrorCode, reason: impl Into<String>) -> WireError {
    WireError::new(code, reason)
}

/// The reason a client sees when the engine itself fails: the code says which operation, and
/// the server's log has the rest.
pub(crate) const ENGINE_FAILED: &str = "the server could not complete this operation";

/// The error a client sees for a failure inside the engine: `code` and a generic reason. The
/// engine's own words can carry SQL, file paths or a backend's address, so they go to the log,
/// never to the client.
pub(crate) fn engine_failed(code: ErrorCode, e: &EngineError) -> WireError {
    tracing::error!(code = ?code, "engine failure: {e}");
    WireError::new(code, ENGINE_FAILED)
}

/// How much history the app keeps; `-15005` when it keeps none.
pub(crate) fn retention(policy: &AppPolicy) -> Result<Retention, WireError> {
    let limits = &policy.limits;
    if limits.history_max_messages == 0 {
        return Err(err(
            ErrorCode::HistoryNotAvailable,
            "this app keeps no message history (history_max_messages = 0)",
        ));
    }
    Ok(Retention {
        max_messages: limits.history_max_messages,
        max_age_ms: limits.history_max_age_secs.saturating_mul(1000),
    })
}

/// Turns a failed name check into the error the client sees.
pub(crate) fn invalid(e: validate::InvalidName) -> WireError {
    WireError::new(e.code, e.what)
}

impl<E: Engine> Core<E> {
    pub(crate) fn new(config: &ServerConfig, engine: E, metrics: Arc<Metrics>) -> Self {
        let events = Events::start(config, engine.node(), metrics.clone());
        Self {
            events,
            engine,
            metrics,
            connection: config.connection,
            intervals: Intervals::default(),
            leaves: presence::PendingLeaves::default(),
            apps: config.apps(),
        }
    }

    /// Closes the engine's store (the server is stopping).
    pub(crate) fn close_store(&self) {
        self.engine.close();
    }

    /// Whether any App ID is accepted (no apps configured).
    pub(crate) fn open_apps(&self) -> bool {
        self.apps.open
    }

    /// The policy of `app_id`, if this server serves it.
    pub(crate) fn app(&self, app_id: &str) -> Option<Arc<AppPolicy>> {
        self.apps.get(app_id)
    }

    /// The engine, for what operators ask of it ([`crate::engine::Inspect`]): never to change
    /// state past the core's rules.
    pub(crate) fn inspect(&self) -> &E {
        &self.engine
    }

    /// The node's hub of connections relayed to and from other nodes, if it has other nodes.
    pub(crate) fn relays(&self) -> Option<Arc<crate::engine::relay::Relays>> {
        self.engine.relays()
    }

    /// A new session id, unique in the whole service.
    pub(crate) fn next_session_id(&self) -> SessionId {
        self.engine.next_session_id()
    }

    /// Registers a logged-in session (closing the same user's other session, wherever it is)
    /// and gives it its user's locks back.
    pub(crate) async fn attach(&self, session: &SessionHandle) -> Result<(), WireError> {
        self.engine
            .attach(session)
            .await
            .map_err(|e| engine_failed(ErrorCode::LoginRejected, &e))?;
        self.events.emit(session.app_id(), || {
            AppEvent::user(EventKind::Login, session.user_id())
        });
        self.session_back(session).await;
        Ok(())
    }

    /// Removes an ended session from the engine, after it left its channels: its
    /// subscriptions and states go, it stops listening, and its user's locks stay held for
    /// their ttl. A failure is logged; what a Redis engine could not remove stays there until the
    /// node is gone and another reaps it (docs/operators.md, "When a node dies").
    pub(crate) async fn detach(&self, session: &SessionHandle) {
        if let Err(e) = self.engine.detach(session).await {
            tracing::warn!(session = %session.id(), "session not removed from the engine: {e}");
        }
        if let Err(e) = self.engine.session_ended(session).await {
            tracing::warn!(session = %session.id(), "session's listeners and locks kept: {e}");
        }
    }

    /// Subscribes `session` to a message channel.
    pub(crate) async fn subscribe(
        &self,
        session: &SessionHandle,
        channel: &str,
        options: SubscribeOptions,
    ) -> Result<(), WireError> {
        self.engine
            .subscribe(session, channel, options)
            .await
            .map_err(|e| engine_failed(ErrorCode::ChannelSubscribeFailed, &e))
    }

    /// Unsubscribes `session` from a message channel.
    pub(crate) async fn unsubscribe(
        &self,
        session: &SessionHandle,
        channel: &str,
    ) -> Result<(), WireError> {
        self.engine
            .unsubscribe(session, channel)
            .await
            .map_err(|e| engine_failed(ErrorCode::ChannelUnsubscribeFailed, &e))
    }

    /// Checks a publish against the names rules and the app's limits, without doing it.
    pub(crate) fn check_publish(
        &self,
        policy: &AppPolicy,
        publish: &PublishRequest,
    ) -> Result<(), WireError> {
        match publish.channel_type {
            ChannelType::Message => validate::channel_name(&publish.channel),
            ChannelType::User => validate::user_id(&publish.channel, true),
            ChannelType::Stream => {
                return Err(err(
                    ErrorCode::InvalidChannelType,
                    "publish serves message and user channels; stream channels use topics",
                ));
            }
        }
        .map_err(invalid)?;
        validate::custom_type(&publish.custom_type).map_err(invalid)?;
        let max = policy.limits.max_message_size as usize;
        if publish.message.len() > max {
            return Err(err(
                ErrorCode::ChannelMessageLengthExceedLimitation,
                format!(
                    "message is {} bytes, the limit is {max}",
                    publish.message.len()
                ),
            ));
        }
        Ok(())
    }

    /// Publishes a checked message from `publisher`: stores it in the history first when
    /// `store` says how (docs/protocol.md §5.12), then encodes the event once and hands it to
    /// the engine. Returns the message's timestamp.
    pub(crate) async fn publish(
        &self,
        publisher: Author<'_>,
        publish: PublishRequest,
        store: Option<Retention>,
    ) -> Result<u64, WireError> {
        let PublishRequest {
            channel_type,
            channel,
            message,
            custom_type,
        } = publish;
        let timestamp = match store {
            None => now_ms(),
            Some(retention) => {
                let key = match channel_type {
                    ChannelType::User => HistoryKey::conversation(publisher.user_id, &channel),
                    _ => HistoryKey::channel(&channel),
                };
                let stored = HistoryMessage {
                    message: message.clone(),
                    custom_type: custom_type.clone(),
                    publisher: publisher.user_id.to_owned(),
                    timestamp: 0,
                };
                let started = tokio::time::Instant::now();
                let stored = self
                    .engine
                    .store_message(publisher.app_id, key, stored, retention)
                    .await;
                self.metrics
                    .storage_write_took("history", started.elapsed());
                stored.map_err(|e| engine_failed(ErrorCode::HistoryOperationFailed, &e))?
            }
        };
        // The backend hears of messages of the channels its webhook lists.
        let hooked = (channel_type == ChannelType::Message
            && self.events.wants_message(publisher.app_id, &channel))
        .then(|| {
            let mut event = AppEvent::channel(
                EventKind::Message,
                publisher.user_id,
                ChannelType::Message,
                &channel,
            );
            event.message = Some((message.clone(), custom_type.clone()));
            event
        });
        // A user-channel message is seen by its receiver as coming from the publisher's own
        // user channel.
        let channel_name = match channel_type {
            ChannelType::User => publisher.user_id.to_owned(),
            _ => channel.clone(),
        };
        let frame = encode_frame(&ServerMsg::Event(Event::Message(MessageEvent {
            channel_type,
            channel_name,
            topic_name: String::new(),
            message,
            custom_type,
            publisher: publisher.user_id.to_owned(),
            timestamp,
        })));
        let app_id = publisher.app_id;
        let failed = |e: EngineError| engine_failed(ErrorCode::ChannelPublishMessageFailed, &e);
        let delivery = match channel_type {
            ChannelType::User => self
                .engine
                .send_to_user(app_id, &channel, frame)
                .await
                .map_err(failed)?
                .ok_or_else(|| match store {
                    None => err(
                        ErrorCode::ChannelReceiverOffline,
                        format!("user {channel} is not online"),
                    ),
                    Some(_) => err(
                        ErrorCode::ChannelReceiverOfflineButStoreSucceeded,
                        format!("user {channel} is not online; the message is in the history"),
                    ),
                })?,
            _ => self
                .engine
                .publish(app_id, &channel, frame)
                .await
                .map_err(failed)?,
        };
        self.count_published(
            match channel_type {
                ChannelType::User => MessageKind::user,
                _ => MessageKind::message,
            },
            delivery,
        );
        if let Some(event) = hooked {
            self.events.emit(app_id, || event);
        }
        Ok(timestamp)
    }

    /// Ends `user_id`'s session in `app_id`, wherever it is (an operator's disconnect): true if
    /// the user had one.
    pub(crate) async fn disconnect(&self, app_id: &str, user_id: &str) -> Result<bool, WireError> {
        self.engine
            .disconnect(app_id, user_id, rtm_proto::CloseReason::Kicked)
            .await
            .map_err(|e| engine_failed(ErrorCode::InitServiceFailed, &e))
    }

    /// A handle that writes as `user_id` of `app_id` for a backend (the admin and REST APIs):
    /// it has an id of its own and an outbox nobody reads, so nothing is ever sent to it.
    pub(crate) fn backend_author(&self, app_id: &str, user_id: &str) -> SessionHandle {
        let (outbox, _nobody) = crate::outbox::Outbox::new(1, self.metrics.clone());
        SessionHandle::new(self.next_session_id(), app_id, user_id, outbox)
    }

    /// Counts one published message and where it went.
    pub(crate) fn count_published(&self, kind: MessageKind, delivery: Delivery) {
        self.metrics
            .messages_published
            .fetch_add(1, Ordering::Relaxed);
        self.metrics.published(kind);
        self.metrics
            .frames_delivered
            .fetch_add(delivery.queued as u64, Ordering::Relaxed);
    }
}
