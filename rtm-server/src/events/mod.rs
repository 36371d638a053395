//! The app's events for its backend: logins and logouts, arrivals in and departures from
//! channels, and (for chosen channels) published messages. They go to the app's webhook
//! (`[apps.webhook]`), POSTed in signed batches (`docs/operators.md`, "Webhooks"), and, for an
//! app with `rest_credentials`, to the queues the Signaling REST API reads ([`log`]).
//!
//! The core [`Events::emit`]s each event as it happens, on this node: every arrival and
//! departure, quiet users included, without the debounce window other users see. Emitting never
//! waits: each app has a bounded queue, and an event that finds it full is dropped and counted
//! (`rtm_webhook_events_dropped_total`). A worker per app drains the queue ([`worker`]),
//! retrying a batch with backoff; a slow or dead receiver holds up only its own queue.

pub(crate) mod log;
mod post;
#[cfg(test)]
mod tests;
mod worker;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rtm_proto::{ChannelType, Payload};
use serde::Serialize;
use tokio::sync::mpsc;

use crate::clock::now_ms;
use crate::config::{ServerConfig, WebhookConfig};
use crate::metrics::Metrics;

/// What happened.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
pub(crate) enum EventKind {
    /// A user logged in.
    #[serde(rename = "user.login")]
    Login,
    /// A user's session ended: it logged out, was replaced or disconnected (`reason`).
    #[serde(rename = "user.logout")]
    Logout,
    /// A user's session ended because its connection was lost and it did not come back.
    #[serde(rename = "user.timeout")]
    Timeout,
    /// A user subscribed to a message channel or joined a stream channel.
    #[serde(rename = "channel.join")]
    Join,
    /// A user left a channel (or its session ended).
    #[serde(rename = "channel.leave")]
    Leave,
    /// A user's session timed out (or its node died) while in a channel.
    #[serde(rename = "channel.timeout")]
    ChannelTimeout,
    /// A message was published to a channel the webhook lists.
    #[serde(rename = "message")]
    Message,
}

/// One event as the backend receives it (one element of a batch's `events`).
#[derive(Clone, Debug, Serialize)]
pub(crate) struct Record {
    /// Unique per node and event (`<node>-<n>`): a batch posted again after a failure that
    /// had in fact arrived carries the same ids.
    pub(crate) id: String,
    #[serde(rename = "type")]
    pub(crate) kind: EventKind,
    /// Server time, Unix ms.
    pub(crate) ts: u64,
    pub(crate) user_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) channel: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) channel_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message: Option<String>,
    /// `text`, or `binary`/`encrypted` with `message` in base64.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) message_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub(crate) custom_type: Option<String>,
}

/// An event before it has an id and a time.
#[derive(Clone, Debug)]
pub(crate) struct AppEvent {
    pub(crate) kind: EventKind,
    pub(crate) user_id: String,
    pub(crate) channel: Option<(ChannelType, String)>,
    pub(crate) message: Option<(Payload, String)>,
}

impl AppEvent {
    /// An event of `user_id` outside channels.
    pub(crate) fn user(kind: EventKind, user_id: &str) -> Self {
        Self {
            kind,
            user_id: user_id.to_owned(),
            channel: None,
            message: None,
        }
    }

    /// An event of `user_id` in a channel.
    pub(crate) fn channel(
        kind: EventKind,
        user_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Self {
        Self {
            kind,
            user_id: user_id.to_owned(),
            channel: Some((channel_type, channel.to_owned())),
            message: None,
        }
    }
}

fn channel_type_name(t: ChannelType) -> &'static str {
    match t {
        ChannelType::Message => "message",
        ChannelType::User => "user",
        ChannelType::Stream => "stream",
    }
}

/// One app's webhook, as the core sees it.
struct Hook {
    queue: mpsc::Sender<Record>,
    message_channels: HashSet<String>,
}

/// Where one app's events go.
#[derive(Default)]
struct Sinks {
    hook: Option<Hook>,
    log: Option<Arc<log::EventLog>>,
}

/// The apps' event queues. For an app without a webhook or REST credentials, emitting costs
/// one map lookup.
pub(crate) struct Events {
    hooks: HashMap<String, Sinks>,
    node: u32,
    next: AtomicU64,
    metrics: Arc<Metrics>,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events")
            .field("apps", &self.hooks.len())
            .finish_non_exhaustive()
    }
}

impl Events {
    /// The queues of the apps of `config` that have a webhook, each with its worker (on the
    /// current runtime); `node` makes event ids unique in a cluster.
    pub(crate) fn start(config: &ServerConfig, node: u32, metrics: Arc<Metrics>) -> Self {
        let mut hooks = HashMap::new();
        for app in &config.apps {
            let mut sinks = Sinks::default();
            if let Some(hook) = &app.webhook {
                match post::HttpPost::new(hook) {
                    Ok(poster) => {
                        sinks.hook = Some(Hook {
                            queue: spawn(&app.app_id, hook, poster, metrics.clone()),
                            message_channels: hook.message_channels.iter().cloned().collect(),
                        });
                    }
                    Err(e) => tracing::error!(app = %app.app_id, "webhook not started: {e}"),
                }
            }
            if !app.rest_credentials.is_empty() {
                sinks.log = Some(Arc::default());
            }
            if sinks.hook.is_some() || sinks.log.is_some() {
                hooks.insert(app.app_id.clone(), sinks);
            }
        }
        Self {
            hooks,
            node,
            next: AtomicU64::new(1),
            metrics,
        }
    }

    /// Whether messages published to `channel` of `app_id` are posted.
    pub(crate) fn wants_message(&self, app_id: &str, channel: &str) -> bool {
        self.hooks
            .get(app_id)
            .and_then(|s| s.hook.as_ref())
            .is_some_and(|h| h.message_channels.contains(channel))
    }

    /// The REST API's event queues of `app_id`, if it has REST credentials.
    pub(crate) fn log(&self, app_id: &str) -> Option<Arc<log::EventLog>> {
        self.hooks.get(app_id).and_then(|s| s.log.clone())
    }

    /// Queues the event `make` makes for `app_id`'s webhook, if it has one (otherwise nothing
    /// is made); drops it (counted) when the queue is full.
    pub(crate) fn emit(&self, app_id: &str, make: impl FnOnce() -> AppEvent) {
        let Some(sinks) = self.hooks.get(app_id) else {
            return;
        };
        let event = make();
        if let Some(log) = &sinks.log {
            record_for_rest(log, &event);
        }
        let Some(hook) = &sinks.hook else {
            return;
        };
        let n = self.next.fetch_add(1, Ordering::Relaxed);
        let (channel_type, channel) = match event.channel {
            Some((t, c)) => (Some(channel_type_name(t)), Some(c)),
            None => (None, None),
        };
        let (message, message_type, custom_type) = match event.message {
            Some((payload, custom_type)) => {
                let (message, message_type) = encode_payload(payload);
                (Some(message), Some(message_type), Some(custom_type))
            }
            None => (None, None, None),
        };
        let record = Record {
            id: format!("{}-{n}", self.node),
            kind: event.kind,
            ts: now_ms(),
            user_id: event.user_id,
            channel,
            channel_type,
            message,
            message_type,
            custom_type,
        };
        match hook.queue.try_send(record) {
            Ok(()) => self.metrics.webhook_queued(app_id, 1),
            Err(_) => self.metrics.webhook_dropped(app_id, "queue_full", 1),
        }
    }
}

/// Adds `event` to the REST API's queues, as the reference names it.
fn record_for_rest(log: &log::EventLog, event: &AppEvent) {
    let ms = now_ms();
    let user_id = event.user_id.clone();
    match (event.kind, &event.channel) {
        (EventKind::Login, _) => log.push_user(log::UserEvent {
            user_id,
            kind: "Login",
            ms,
        }),
        (EventKind::Logout | EventKind::Timeout, _) => log.push_user(log::UserEvent {
            user_id,
            kind: "Logout",
            ms,
        }),
        (EventKind::Join, Some((_, channel))) => log.push_channel(log::ChannelEvent {
            channel: channel.clone(),
            user_id,
            kind: "Join",
            ms,
        }),
        (EventKind::Leave | EventKind::ChannelTimeout, Some((_, channel))) => {
            log.push_channel(log::ChannelEvent {
                channel: channel.clone(),
                user_id,
                kind: "Leave",
                ms,
            });
        }
        _ => {}
    }
}

/// A payload as JSON carries it: text as it is, bytes in base64.
pub(crate) fn encode_payload(payload: Payload) -> (String, &'static str) {
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    match payload {
        Payload::Text(text) => (text, "text"),
        Payload::Binary(bytes) => (b64.encode(bytes), "binary"),
        Payload::Encrypted(bytes) => (b64.encode(bytes), "encrypted"),
    }
}

/// Starts the worker of one app's webhook; returns its queue.
fn spawn<P: worker::Post>(
    app_id: &str,
    hook: &WebhookConfig,
    poster: P,
    metrics: Arc<Metrics>,
) -> mpsc::Sender<Record> {
    let (tx, rx) = mpsc::channel(hook.queue);
    let settings = worker::Settings {
        app_id: app_id.to_owned(),
        secret: hook.secret.clone().into_bytes(),
        timeout: Duration::from_millis(hook.timeout_ms.into()),
        max_attempts: hook.max_attempts,
        retry_base: worker::RETRY_BASE,
    };
    tokio::spawn(worker::run(rx, poster, settings, metrics));
    tx
}
