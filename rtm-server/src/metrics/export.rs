//! The Prometheus text format of a server's metrics (`GET /metrics`, OpenMetrics 1.0).
//!
//! Each scrape builds a registry over the server's own [`Metrics`] (so two servers in one
//! process never mix) plus a [`Snapshot`] of what is counted rather than kept: sessions per app,
//! channels, nodes. Names follow Prometheus' conventions: `rtm_` first, `_total` on counters,
//! the unit in the name (`_seconds`).

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::ConstCounter;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::registry::{Registry, Unit};

use super::Metrics;
use crate::engine::LocalCounts;

/// The sessions of one app on this node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct AppSessions {
    /// The App ID.
    pub(crate) app_id: String,
    /// Sessions logged in (connected or waiting for a resume).
    pub(crate) sessions: u64,
    /// Distinct users among them.
    pub(crate) users: u64,
}

/// What a scrape counts at the time it is made.
#[derive(Clone, Debug, Default)]
pub(crate) struct Snapshot {
    /// Per app, in App ID order.
    pub(crate) apps: Vec<AppSessions>,
    /// What the engine holds on this node.
    pub(crate) local: LocalCounts,
    /// Nodes in the cluster's registry; `None` for a server alone (or Redis not answering).
    pub(crate) nodes: Option<u64>,
    /// Events from other nodes this node dropped (Redis engine only).
    pub(crate) bus_dropped: Option<u64>,
    /// Seconds since the server started.
    pub(crate) uptime_secs: f64,
}

/// The `app_id` label.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct AppLabel {
    app_id: String,
}

/// The `type` label of channel counts.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ChannelTypeLabel {
    r#type: &'static str,
}

/// Renders `metrics` and `snapshot` in the OpenMetrics text format.
pub(crate) fn render(metrics: &Arc<Metrics>, snapshot: Snapshot) -> Result<String, fmt::Error> {
    let mut registry = Registry::with_prefix("rtm");
    registry.register(
        "connections_accepted",
        "Connections accepted (completed handshakes), by transport",
        metrics.connections_by_transport.clone(),
    );
    registry.register(
        "connections_open",
        "Connections open now, by transport",
        metrics.connections_open.clone(),
    );
    registry.register(
        "messages_published",
        "Messages published, by kind (message channel, user channel, stream topic)",
        metrics.published.clone(),
    );
    registry.register(
        "logins_refused",
        "Logins refused, by the error code the client got",
        metrics.logins_refused.clone(),
    );
    registry.register_with_unit(
        "request_duration",
        "Time to answer a client's request, by operation",
        Unit::Seconds,
        metrics.request_duration.clone(),
    );
    registry.register_with_unit(
        "storage_write_duration",
        "Time to write metadata or a history message, by store",
        Unit::Seconds,
        metrics.storage_write_duration.clone(),
    );
    registry.register(
        "webhook_queue",
        "Webhook events waiting in their app's queue",
        metrics.webhook_queue.clone(),
    );
    registry.register(
        "webhook_events_delivered",
        "Webhook events delivered (their batch was answered 2xx)",
        metrics.webhook_delivered.clone(),
    );
    registry.register(
        "webhook_events_dropped",
        "Webhook events dropped: queue_full, or failed after every try",
        metrics.webhook_dropped.clone(),
    );
    registry.register(
        "webhook_posts",
        "Webhook POSTs, by outcome",
        metrics.webhook_posts.clone(),
    );
    registry.register_collector(Box::new(Scraped {
        metrics: metrics.clone(),
        snapshot,
    }));
    let mut out = String::new();
    prometheus_client::encoding::text::encode(&mut out, &registry)?;
    Ok(out)
}

/// The plain counters and the snapshot, encoded at scrape time.
#[derive(Debug)]
struct Scraped {
    metrics: Arc<Metrics>,
    snapshot: Snapshot,
}

fn counter(
    encoder: &mut DescriptorEncoder<'_>,
    name: &str,
    help: &str,
    value: &AtomicU64,
) -> fmt::Result {
    let metric = ConstCounter::new(value.load(Ordering::Relaxed));
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

fn gauge(encoder: &mut DescriptorEncoder<'_>, name: &str, help: &str, value: u64) -> fmt::Result {
    let metric = ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX));
    metric.encode(encoder.encode_descriptor(name, help, None, metric.metric_type())?)
}

impl Collector for Scraped {
    fn encode(&self, mut encoder: DescriptorEncoder<'_>) -> fmt::Result {
        let m = &self.metrics;
        let counters: [(&str, &str, &AtomicU64); 14] = [
            ("logins", "Logins that succeeded", &m.logins),
            (
                "frames_delivered",
                "Frames queued to subscribers (one per receiving session)",
                &m.frames_delivered,
            ),
            (
                "frames_dropped",
                "Frames not queued because a subscriber's queue was full",
                &m.frames_dropped,
            ),
            (
                "publish_batches",
                "PublishBatch requests served",
                &m.publish_batches,
            ),
            (
                "publish_batched_messages",
                "Messages that came in PublishBatch requests",
                &m.publish_batched_messages,
            ),
            (
                "slow_consumer_disconnects",
                "Sessions closed because their outbound queue overflowed",
                &m.slow_consumer_disconnects,
            ),
            (
                "malformed_frames",
                "Frames from clients that did not decode",
                &m.malformed_frames,
            ),
            (
                "oversized_frames",
                "Frames from clients over the size limit",
                &m.oversized_frames,
            ),
            (
                "rate_limited",
                "Requests refused by a rate limit (publish, metadata, locks)",
                &m.rate_limited,
            ),
            (
                "resumes",
                "Sessions resumed on a new connection",
                &m.sessions_resumed,
            ),
            (
                "sessions_timed_out",
                "Sessions ended because no resume came within their presence timeout",
                &m.sessions_timed_out,
            ),
            (
                "connections_refused",
                "New connections refused: the server or their address had too many",
                &m.connections_refused,
            ),
            (
                "handshakes_retried",
                "New QUIC connections asked to prove their address (Retry)",
                &m.handshakes_retried,
            ),
            (
                "heartbeat_timeouts",
                "Connections lost because the client fell silent",
                &m.heartbeat_timeouts,
            ),
        ];
        for (name, help, value) in counters {
            counter(&mut encoder, name, help, value)?;
        }
        let s = &self.snapshot;
        gauge(
            &mut encoder,
            "sessions_parked",
            "Sessions waiting for a resume after losing their connection",
            m.sessions_parked.load(Ordering::Relaxed),
        )?;
        for (name, help, pick) in [
            (
                "sessions",
                "Sessions logged in on this node, by app",
                (|a: &AppSessions| a.sessions) as fn(&AppSessions) -> u64,
            ),
            (
                "users",
                "Distinct users logged in on this node, by app",
                |a: &AppSessions| a.users,
            ),
        ] {
            let metric = ConstGauge::new(0i64);
            let mut family = encoder.encode_descriptor(name, help, None, metric.metric_type())?;
            for app in &s.apps {
                let label = AppLabel {
                    app_id: app.app_id.clone(),
                };
                let value = i64::try_from(pick(app)).unwrap_or(i64::MAX);
                ConstGauge::new(value).encode(family.encode_family(&label)?)?;
            }
        }
        let metric = ConstGauge::new(0i64);
        let mut channels = encoder.encode_descriptor(
            "channels",
            "Channels with a subscriber or member on this node, by type",
            None,
            metric.metric_type(),
        )?;
        for (kind, value) in [
            ("message", s.local.message_channels),
            ("stream", s.local.stream_channels),
        ] {
            let value = i64::try_from(value).unwrap_or(i64::MAX);
            ConstGauge::new(value)
                .encode(channels.encode_family(&ChannelTypeLabel { r#type: kind })?)?;
        }
        gauge(
            &mut encoder,
            "subscriptions",
            "Message channel subscriptions of sessions on this node",
            s.local.subscriptions,
        )?;
        gauge(
            &mut encoder,
            "stream_members",
            "Stream channel memberships of sessions on this node",
            s.local.stream_members,
        )?;
        let uptime = ConstGauge::new(s.uptime_secs);
        uptime.encode(encoder.encode_descriptor(
            "uptime",
            "Time since the server started",
            Some(&Unit::Seconds),
            uptime.metric_type(),
        )?)?;
        if let Some(nodes) = s.nodes {
            gauge(
                &mut encoder,
                "cluster_nodes",
                "Nodes in the cluster's registry (Redis engine)",
                nodes,
            )?;
        }
        if let Some(dropped) = s.bus_dropped {
            let metric = ConstCounter::new(dropped);
            metric.encode(encoder.encode_descriptor(
                "bus_events_dropped",
                "Events from other nodes dropped because this node could not keep up",
                None,
                metric.metric_type(),
            )?)?;
        }
        if s.nodes.is_some() || s.bus_dropped.is_some() {
            let h = m.redis_command_duration.clone();
            h.encode(encoder.encode_descriptor(
                "redis_command_duration",
                "Time a Redis command took, answered or not",
                Some(&Unit::Seconds),
                h.metric_type(),
            )?)?;
            let c = m.redis_errors.clone();
            c.encode(encoder.encode_descriptor(
                "redis_errors",
                "Redis commands that failed or got no answer within the timeout",
                None,
                c.metric_type(),
            )?)?;
        }
        Ok(())
    }
}
