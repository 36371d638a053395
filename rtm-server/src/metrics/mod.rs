//! What the server counts about itself: the counters below, read by tests and the load
//! generator through [`crate::ServerHandle::metrics`], and by operators in the Prometheus text
//! format on the internal HTTP listener (`/metrics`, [`export`]).
//!
//! Counting stays cheap on the delivery path: the plain counters are one relaxed atomic add,
//! and the labelled ones (by transport, operation or reason) are `prometheus-client` families
//! whose label sets are small and fixed.

pub(crate) mod export;
mod notes;

pub use notes::{Note, Notes};

use std::sync::atomic::AtomicU64;
use std::time::Duration;

use prometheus_client::encoding::{EncodeLabelSet, EncodeLabelValue};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use rtm_proto::ErrorCode;

/// How a connection reached the server.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum Transport {
    /// Native QUIC (ALPN `rtm/1`).
    quic,
    /// WebTransport over HTTP/3.
    webtransport,
    /// WebSocket over TCP.
    websocket,
    /// Relayed from another node of the cluster (a resume there of a session of this node).
    relay,
}

/// The `transport` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TransportLabel {
    /// The transport.
    pub transport: Transport,
}

/// What kind of message was published.
#[derive(Clone, Copy, Debug, Hash, PartialEq, Eq, EncodeLabelValue)]
#[allow(non_camel_case_types)]
pub enum MessageKind {
    /// To a message channel.
    message,
    /// To a user channel (one user).
    user,
    /// To a topic of a stream channel.
    topic,
}

/// The `kind` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct KindLabel {
    /// The kind.
    pub kind: MessageKind,
}

/// The `reason` label: the reference's name of an error code (`INVALID_TOKEN`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ReasonLabel {
    /// The reason.
    pub reason: &'static str,
}

/// The `operation` label: the request's name in `docs/protocol.md` (`publish`, `login`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct OperationLabel {
    /// The operation.
    pub operation: &'static str,
}

/// The `store` label of storage writes.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct StoreLabel {
    /// `metadata` or `history`.
    pub store: &'static str,
}

/// The `app_id` label of webhook queues and deliveries.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct AppLabel {
    /// The App ID.
    pub app_id: String,
}

/// The labels of webhook drops and posts: the app, and why (drops) or how (posts).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct WebhookLabel {
    /// The App ID.
    pub app_id: String,
    /// `queue_full` or `failed` (drops), `ok` or `error` (posts).
    pub outcome: &'static str,
}

/// Buckets (seconds) for request and storage latencies: 50 µs to about 3.3 s.
fn latency_histogram() -> Histogram {
    Histogram::new(prometheus_client::metrics::histogram::exponential_buckets(
        0.000_05, 2.0, 17,
    ))
}

type Histograms<L> = Family<L, Histogram, fn() -> Histogram>;

/// Server-wide counters. The plain ones are monotonic except `sessions` and
/// `sessions_parked`.
#[derive(Debug)]
pub struct Metrics {
    /// Connections accepted (completed handshakes), every transport together.
    pub connections: AtomicU64,
    /// Sessions logged in now.
    pub sessions: AtomicU64,
    /// Messages published (to message channels, users and stream topics).
    pub messages_published: AtomicU64,
    /// `PublishBatch` requests served (refused ones not counted).
    pub publish_batches: AtomicU64,
    /// The messages those batches carried (each also counted in `messages_published` once
    /// published).
    pub publish_batched_messages: AtomicU64,
    /// Frames queued to subscribers.
    pub frames_delivered: AtomicU64,
    /// Frames not queued because a subscriber's queue was full.
    pub frames_dropped: AtomicU64,
    /// Sessions closed because their outbound queue overflowed.
    pub slow_consumer_disconnects: AtomicU64,
    /// Frames from clients that did not decode.
    pub malformed_frames: AtomicU64,
    /// Frames from clients over the size limit.
    pub oversized_frames: AtomicU64,
    /// Publishes refused by the rate limit.
    pub rate_limited: AtomicU64,
    /// Sessions kept now after losing their connection, waiting for a resume.
    pub sessions_parked: AtomicU64,
    /// Sessions resumed on a new connection.
    pub sessions_resumed: AtomicU64,
    /// Kept sessions ended because no resume came within their presence timeout.
    pub sessions_timed_out: AtomicU64,
    /// New connections refused: the server or their address had too many.
    pub connections_refused: AtomicU64,
    /// New connections asked to prove their address (QUIC Retry) because handshakes came
    /// faster than `handshake_rate`.
    pub handshakes_retried: AtomicU64,
    /// Connections lost because the client fell silent (the QUIC idle timeout: its heartbeat
    /// interval + 10 s without a packet).
    pub heartbeat_timeouts: AtomicU64,
    /// Logins that succeeded.
    pub logins: AtomicU64,
    /// Connections accepted, by transport.
    pub connections_by_transport: Family<TransportLabel, Counter>,
    /// Connections open now, by transport.
    pub connections_open: Family<TransportLabel, Gauge>,
    /// Messages published, by kind (message channel, user channel, stream topic).
    pub published: Family<KindLabel, Counter>,
    /// Logins refused, by the error code the client got.
    pub logins_refused: Family<ReasonLabel, Counter>,
    /// How long requests took to answer, by operation.
    pub request_duration: Histograms<OperationLabel>,
    /// How long storage writes took (metadata, history), whichever engine keeps them.
    pub storage_write_duration: Histograms<StoreLabel>,
    /// How long Redis commands took (Redis engine only).
    pub redis_command_duration: Histogram,
    /// Redis commands that failed or timed out (Redis engine only).
    pub redis_errors: Counter,
    /// Webhook events waiting in their app's queue.
    pub webhook_queue: Family<AppLabel, Gauge>,
    /// Webhook events delivered (their batch was answered 2xx).
    pub webhook_delivered: Family<AppLabel, Counter>,
    /// Webhook events dropped: `queue_full`, or `failed` after every try.
    pub webhook_dropped: Family<WebhookLabel, Counter>,
    /// Webhook POSTs, `ok` or `error`.
    pub webhook_posts: Family<WebhookLabel, Counter>,
    /// The last problems worth an operator's look, for the status page.
    pub recent_errors: Notes,
}

impl Default for Metrics {
    /// Zeroes, with every transport and message kind listed from the start (a series that
    /// appears only with its first event hides that event from `rate()`).
    fn default() -> Self {
        let metrics = Self {
            connections: AtomicU64::default(),
            sessions: AtomicU64::default(),
            messages_published: AtomicU64::default(),
            publish_batches: AtomicU64::default(),
            publish_batched_messages: AtomicU64::default(),
            frames_delivered: AtomicU64::default(),
            frames_dropped: AtomicU64::default(),
            slow_consumer_disconnects: AtomicU64::default(),
            malformed_frames: AtomicU64::default(),
            oversized_frames: AtomicU64::default(),
            rate_limited: AtomicU64::default(),
            sessions_parked: AtomicU64::default(),
            sessions_resumed: AtomicU64::default(),
            sessions_timed_out: AtomicU64::default(),
            connections_refused: AtomicU64::default(),
            handshakes_retried: AtomicU64::default(),
            heartbeat_timeouts: AtomicU64::default(),
            logins: AtomicU64::default(),
            connections_by_transport: Family::default(),
            connections_open: Family::default(),
            published: Family::default(),
            logins_refused: Family::default(),
            request_duration: Family::new_with_constructor(latency_histogram),
            storage_write_duration: Family::new_with_constructor(latency_histogram),
            redis_command_duration: latency_histogram(),
            redis_errors: Counter::default(),
            webhook_queue: Family::default(),
            webhook_delivered: Family::default(),
            webhook_dropped: Family::default(),
            webhook_posts: Family::default(),
            recent_errors: Notes::default(),
        };
        for transport in [
            Transport::quic,
            Transport::webtransport,
            Transport::websocket,
        ] {
            let label = TransportLabel { transport };
            let _ = metrics.connections_by_transport.get_or_create(&label);
            let _ = metrics.connections_open.get_or_create(&label);
        }
        for kind in [MessageKind::message, MessageKind::user, MessageKind::topic] {
            let _ = metrics.published.get_or_create(&KindLabel { kind });
        }
        metrics
    }
}

impl Metrics {
    /// Counts a login refused with `code`.
    pub fn login_refused(&self, code: ErrorCode) {
        self.logins_refused
            .get_or_create(&ReasonLabel {
                reason: code.name(),
            })
            .inc();
    }

    /// Records how long an `operation` took.
    pub fn request_took(&self, operation: &'static str, took: Duration) {
        self.request_duration
            .get_or_create(&OperationLabel { operation })
            .observe(took.as_secs_f64());
    }

    /// Records how long a write to `store` took.
    pub fn storage_write_took(&self, store: &'static str, took: Duration) {
        self.storage_write_duration
            .get_or_create(&StoreLabel { store })
            .observe(took.as_secs_f64());
    }

    /// Counts a published message of `kind`.
    pub fn published(&self, kind: MessageKind) {
        self.published.get_or_create(&KindLabel { kind }).inc();
    }

    /// Adds `n` (negative: takes) to `app_id`'s webhook queue gauge.
    pub fn webhook_queued(&self, app_id: &str, n: i64) {
        self.webhook_queue
            .get_or_create(&AppLabel {
                app_id: app_id.to_owned(),
            })
            .inc_by(n);
    }

    /// Counts `n` webhook events of `app_id` dropped for `why`.
    pub fn webhook_dropped(&self, app_id: &str, why: &'static str, n: u64) {
        self.webhook_dropped
            .get_or_create(&WebhookLabel {
                app_id: app_id.to_owned(),
                outcome: why,
            })
            .inc_by(n);
    }

    /// Counts `n` webhook events of `app_id` delivered.
    pub fn webhook_delivered(&self, app_id: &str, n: u64) {
        self.webhook_delivered
            .get_or_create(&AppLabel {
                app_id: app_id.to_owned(),
            })
            .inc_by(n);
    }

    /// Counts one webhook POST of `app_id`.
    pub fn webhook_post(&self, app_id: &str, ok: bool) {
        self.webhook_posts
            .get_or_create(&WebhookLabel {
                app_id: app_id.to_owned(),
                outcome: if ok { "ok" } else { "error" },
            })
            .inc();
    }

    /// Counts a connection opened over `transport`; the guard counts it closed when dropped.
    pub fn connection_opened(&self, transport: Transport) -> OpenConnection {
        let label = TransportLabel { transport };
        self.connections_by_transport.get_or_create(&label).inc();
        let open = self.connections_open.get_or_create(&label).clone();
        open.inc();
        OpenConnection(open)
    }
}

/// One open connection in `rtm_connections{transport}`, until dropped.
#[derive(Debug)]
pub struct OpenConnection(Gauge);

impl Drop for OpenConnection {
    fn drop(&mut self) {
        self.0.dec();
    }
}
