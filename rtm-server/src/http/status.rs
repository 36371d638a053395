//! The status page (`GET /`): a read-only page for operators, and what it reads every two
//! seconds (`GET /status`, JSON): connections, apps, the busiest channels, message rates over
//! the last ten minutes, recent problems. Like `/metrics`, it has no authentication: the
//! internal listener is for the operator's network only.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::Json;
use axum::extract::State;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

use super::Ops;
use crate::clock::now_ms;
use crate::engine::Inspect;
use crate::metrics::{Transport, TransportLabel};

/// The page.
const PAGE: &str = include_str!("status.html");
/// How often the rates are sampled.
pub(crate) const SAMPLE_EVERY: Duration = Duration::from_secs(2);
/// Samples kept: ten minutes.
const SAMPLES: usize = 300;
/// Channels listed.
const BUSIEST: usize = 10;

/// One sample of the message rates.
#[derive(Clone, Copy, Debug, Serialize)]
pub(crate) struct Sample {
    at_ms: u64,
    published_per_sec: f64,
    delivered_per_sec: f64,
}

/// The rates of the last ten minutes, and the counters at the last sample.
#[derive(Debug, Default)]
pub(crate) struct Rates {
    samples: Mutex<VecDeque<Sample>>,
    last: Mutex<Option<(tokio::time::Instant, u64, u64)>>,
}

impl Rates {
    /// Records the counters now: a sample of the rates since the last call (none the first
    /// time).
    fn record(&self, published: u64, delivered: u64) {
        let now = tokio::time::Instant::now();
        let mut last = self.last.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some((at, p, d)) = last.replace((now, published, delivered)) {
            let secs = now.duration_since(at).as_secs_f64().max(0.001);
            let mut samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
            if samples.len() == SAMPLES {
                samples.pop_front();
            }
            samples.push_back(Sample {
                at_ms: now_ms(),
                published_per_sec: published.saturating_sub(p) as f64 / secs,
                delivered_per_sec: delivered.saturating_sub(d) as f64 / secs,
            });
        }
    }

    fn list(&self) -> Vec<Sample> {
        let samples = self.samples.lock().unwrap_or_else(PoisonError::into_inner);
        samples.iter().copied().collect()
    }
}

/// Samples the rates every [`SAMPLE_EVERY`] until the server is gone.
pub(crate) async fn sample(ops: Arc<Ops>) {
    let mut shutdown = ops.shutdown.clone();
    let mut tick = tokio::time::interval(SAMPLE_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            gone = shutdown.changed() => if gone.is_err() { return },
        }
        let m = &ops.node.core.metrics;
        ops.rates.record(
            m.messages_published.load(Ordering::Relaxed),
            m.frames_delivered.load(Ordering::Relaxed),
        );
    }
}

#[derive(Serialize)]
pub(super) struct Status {
    version: &'static str,
    uptime_secs: u64,
    node: u32,
    nodes: usize,
    connections: Connections,
    sessions_parked: u64,
    apps: Vec<App>,
    message_channels: u64,
    stream_channels: u64,
    subscriptions: u64,
    busiest: Vec<Channel>,
    totals: Totals,
    rates: Vec<Sample>,
    errors: Vec<Problem>,
}

#[derive(Serialize)]
struct Connections {
    quic: i64,
    webtransport: i64,
    websocket: i64,
    relay: i64,
    total: i64,
}

#[derive(Serialize)]
struct App {
    app_id: String,
    sessions: u64,
    users: u64,
}

#[derive(Serialize)]
struct Channel {
    app_id: String,
    channel: String,
    channel_type: &'static str,
    sessions: u64,
}

#[derive(Serialize)]
struct Totals {
    published: u64,
    delivered: u64,
    dropped: u64,
    slow_consumers: u64,
    logins: u64,
}

#[derive(Serialize)]
struct Problem {
    at_ms: u64,
    text: String,
}

/// `GET /`: the page.
pub(super) async fn page() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8")], PAGE).into_response()
}

/// `GET /status`: what the page shows, now.
pub(super) async fn status(State(ops): State<Arc<Ops>>) -> Json<Status> {
    let core = &ops.node.core;
    let m = &core.metrics;
    let engine = core.inspect();
    let open = |transport| {
        m.connections_open
            .get_or_create(&TransportLabel { transport })
            .get()
    };
    let connections = Connections {
        quic: open(Transport::quic),
        webtransport: open(Transport::webtransport),
        websocket: open(Transport::websocket),
        relay: open(Transport::relay),
        total: 0,
    };
    let connections = Connections {
        total: connections.quic
            + connections.webtransport
            + connections.websocket
            + connections.relay,
        ..connections
    };
    let apps = ops.node.registry.per_app();
    let mut busiest: Vec<Channel> = apps
        .iter()
        .flat_map(|app| {
            engine
                .local_channels(&app.app_id, BUSIEST)
                .into_iter()
                .map(|c| Channel {
                    app_id: app.app_id.clone(),
                    channel: c.channel,
                    channel_type: match c.channel_type {
                        rtm_proto::ChannelType::Stream => "stream",
                        _ => "message",
                    },
                    sessions: c.sessions,
                })
        })
        .collect();
    busiest.sort_by(|a, b| b.sessions.cmp(&a.sessions).then(a.channel.cmp(&b.channel)));
    busiest.truncate(BUSIEST);
    let local = engine.local_counts();
    let nodes = engine.nodes().await.map_or(1, |n| n.len());
    let load = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
    Json(Status {
        version: env!("CARGO_PKG_VERSION"),
        uptime_secs: ops.started.elapsed().as_secs(),
        node: engine.node(),
        nodes,
        connections,
        sessions_parked: load(&m.sessions_parked),
        apps: apps
            .into_iter()
            .map(|a| App {
                app_id: a.app_id,
                sessions: a.sessions,
                users: a.users,
            })
            .collect(),
        message_channels: local.message_channels,
        stream_channels: local.stream_channels,
        subscriptions: local.subscriptions,
        busiest,
        totals: Totals {
            published: load(&m.messages_published),
            delivered: load(&m.frames_delivered),
            dropped: load(&m.frames_dropped),
            slow_consumers: load(&m.slow_consumer_disconnects),
            logins: load(&m.logins),
        },
        rates: ops.rates.list(),
        errors: m
            .recent_errors
            .list()
            .into_iter()
            .rev()
            .map(|n| Problem {
                at_ms: n.at_ms,
                text: n.text,
            })
            .collect(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn rates_are_per_second_between_samples_and_bounded() {
        let rates = Rates::default();
        rates.record(100, 1000);
        assert!(
            rates.list().is_empty(),
            "the first call only sets the baseline"
        );
        tokio::time::advance(Duration::from_secs(2)).await;
        rates.record(140, 1400);
        let list = rates.list();
        assert_eq!(list.len(), 1);
        assert_eq!(list[0].published_per_sec, 20.0);
        assert_eq!(list[0].delivered_per_sec, 200.0);
        for n in 0..SAMPLES + 5 {
            tokio::time::advance(Duration::from_secs(2)).await;
            rates.record(140 + n as u64, 1400);
        }
        assert_eq!(rates.list().len(), SAMPLES);
    }
}
