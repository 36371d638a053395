//! The worker with a stand-in receiver, on paused time: batching, signatures, the retry
//! schedule, and drops after the last try.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;

use super::worker::{self, Post, Settings, Signed, backoff, sign};
use super::{EventKind, Record};
use crate::metrics::{AppLabel, Metrics, WebhookLabel};

/// Records each try (when, what) and fails the first `failures` of them.
#[derive(Clone, Default)]
struct Receiver {
    tries: Arc<Mutex<Vec<(Instant, Signed)>>>,
    failures: usize,
}

impl Post for Receiver {
    async fn post(&self, batch: &Signed) -> Result<(), String> {
        let mut tries = self.tries.lock().unwrap();
        tries.push((Instant::now(), batch.clone()));
        if tries.len() <= self.failures {
            Err("500".into())
        } else {
            Ok(())
        }
    }
}

fn record(n: u64) -> Record {
    Record {
        id: format!("0-{n}"),
        kind: EventKind::Login,
        ts: n,
        user_id: format!("u{n}"),
        channel: None,
        channel_type: None,
        message: None,
        message_type: None,
        custom_type: None,
    }
}

fn settings(max_attempts: u32) -> Settings {
    Settings {
        app_id: "app".into(),
        secret: b"0123456789abcdef".to_vec(),
        timeout: Duration::from_secs(5),
        max_attempts,
        retry_base: Duration::from_millis(500),
    }
}

type Counters<L> =
    prometheus_client::metrics::family::Family<L, prometheus_client::metrics::counter::Counter>;

fn counter(family: &Counters<WebhookLabel>, outcome: &'static str) -> u64 {
    family
        .get_or_create(&WebhookLabel {
            app_id: "app".into(),
            outcome,
        })
        .get()
}

fn delivered(metrics: &Metrics) -> u64 {
    metrics
        .webhook_delivered
        .get_or_create(&AppLabel {
            app_id: "app".into(),
        })
        .get()
}

#[test]
fn the_wait_doubles_within_a_quarter_and_is_capped() {
    let base = Duration::from_millis(500);
    assert_eq!(backoff(base, 1, 0.5), base);
    assert_eq!(backoff(base, 2, 0.5), base * 2);
    assert_eq!(backoff(base, 3, 0.0), base * 4 * 3 / 4);
    assert_eq!(backoff(base, 3, 1.0), base * 4 * 5 / 4);
    assert_eq!(backoff(base, 30, 0.5), Duration::from_secs(30));
}

#[test]
fn the_signature_is_hmac_sha256_of_timestamp_dot_body() {
    // Computed apart: python3 -c "import hmac,hashlib;
    // print(hmac.new(b'Jefe', b'12.x', hashlib.sha256).hexdigest())"
    let signature = sign(b"Jefe", 12, b"x");
    assert_eq!(
        signature,
        "sha256=fb6d2f41b7073846c15426925fffb761ad3135bd1c5db33c2e010c7f8bf33efe"
    );
    assert_ne!(signature, sign(b"Jefe", 13, b"x"));
    assert_ne!(signature, sign(b"Jefe", 12, b"y"));
}

#[tokio::test(start_paused = true)]
async fn a_failing_receiver_is_tried_again_with_backoff_until_it_takes_the_batch() {
    let metrics = Arc::new(Metrics::default());
    let receiver = Receiver {
        failures: 2,
        ..Default::default()
    };
    let (tx, rx) = mpsc::channel(16);
    for n in 1..=3 {
        tx.send(record(n)).await.unwrap();
    }
    drop(tx);
    let started = Instant::now();
    worker::run(rx, receiver.clone(), settings(5), metrics.clone()).await;
    let tries = receiver.tries.lock().unwrap();
    assert_eq!(tries.len(), 3, "two failures, then taken");
    // One batch of three, the same body each time, signed over its own timestamp.
    let body: serde_json::Value = serde_json::from_slice(&tries[0].1.body).unwrap();
    assert_eq!(body["app_id"], "app");
    assert_eq!(body["events"].as_array().unwrap().len(), 3);
    assert_eq!(body["events"][0]["type"], "user.login");
    for (_, signed) in tries.iter() {
        assert_eq!(signed.body, tries[0].1.body);
        assert_eq!(
            signed.signature,
            sign(b"0123456789abcdef", signed.timestamp, &signed.body)
        );
    }
    // Waits of 0.5 s and 1 s, each within a quarter.
    let first = tries[1].0 - tries[0].0;
    let second = tries[2].0 - tries[1].0;
    assert!(
        first >= Duration::from_millis(375) && first <= Duration::from_millis(625),
        "{first:?}"
    );
    assert!(
        second >= Duration::from_millis(750) && second <= Duration::from_millis(1250),
        "{second:?}"
    );
    assert_eq!(tries[0].0, started);
    assert_eq!(delivered(&metrics), 3);
    assert_eq!(counter(&metrics.webhook_posts, "error"), 2);
    assert_eq!(counter(&metrics.webhook_posts, "ok"), 1);
    assert_eq!(counter(&metrics.webhook_dropped, "failed"), 0);
}

#[tokio::test(start_paused = true)]
async fn a_batch_is_dropped_and_counted_after_the_last_try() {
    let metrics = Arc::new(Metrics::default());
    let receiver = Receiver {
        failures: usize::MAX,
        ..Default::default()
    };
    let (tx, rx) = mpsc::channel(16);
    tx.send(record(1)).await.unwrap();
    tx.send(record(2)).await.unwrap();
    drop(tx);
    worker::run(rx, receiver.clone(), settings(3), metrics.clone()).await;
    assert_eq!(receiver.tries.lock().unwrap().len(), 3);
    assert_eq!(counter(&metrics.webhook_dropped, "failed"), 2);
    assert_eq!(delivered(&metrics), 0);
}

/// A receiver that never answers: each try ends at the timeout.
struct Silent;

impl Post for Silent {
    async fn post(&self, _: &Signed) -> Result<(), String> {
        std::future::pending().await
    }
}

#[tokio::test(start_paused = true)]
async fn a_silent_receiver_is_given_up_at_the_timeout() {
    let metrics = Arc::new(Metrics::default());
    let (tx, rx) = mpsc::channel(16);
    tx.send(record(1)).await.unwrap();
    drop(tx);
    let started = Instant::now();
    let mut s = settings(2);
    s.timeout = Duration::from_secs(5);
    worker::run(rx, Silent, s, metrics.clone()).await;
    let took = started.elapsed();
    // Two tries of 5 s and one wait of about 0.5 s between them.
    assert!(
        took >= Duration::from_millis(10_375) && took <= Duration::from_millis(10_625),
        "{took:?}"
    );
    assert_eq!(counter(&metrics.webhook_dropped, "failed"), 1);
}
