//! One app's webhook worker: takes up to [`BATCH`] queued events, signs them, POSTs them, and
//! tries again with backoff when the receiver fails or does not answer in time.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use hmac::{Hmac, Mac};
use serde::Serialize;
use sha2::Sha256;
use tokio::sync::mpsc;

use super::Record;
use crate::metrics::Metrics;

/// Events per POST, at most.
pub(crate) const BATCH: usize = 100;
/// The wait after the first failed try; each later wait doubles, up to [`RETRY_CAP`].
pub(crate) const RETRY_BASE: Duration = Duration::from_millis(500);
/// The longest wait between tries.
const RETRY_CAP: Duration = Duration::from_secs(30);

/// How a worker posts.
#[derive(Clone, Debug)]
pub(crate) struct Settings {
    pub(crate) app_id: String,
    pub(crate) secret: Vec<u8>,
    pub(crate) timeout: Duration,
    pub(crate) max_attempts: u32,
    pub(crate) retry_base: Duration,
}

/// A signed batch: the body and its headers' values.
#[derive(Clone, Debug)]
pub(crate) struct Signed {
    pub(crate) body: Bytes,
    /// Unix seconds, as `X-Rtm-Timestamp` carries it.
    pub(crate) timestamp: u64,
    /// `sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`, as `X-Rtm-Signature` carries it.
    pub(crate) signature: String,
}

/// Where batches go: the receiver's HTTP endpoint, or a test's stand-in.
pub(crate) trait Post: Send + Sync + 'static {
    /// Posts one batch; `Err` with why when the receiver did not take it (not 2xx).
    fn post(&self, batch: &Signed) -> impl Future<Output = Result<(), String>> + Send;
}

#[derive(Serialize)]
struct Batch<'a> {
    app_id: &'a str,
    events: &'a [Record],
}

/// The signature of `body` sent at `timestamp` with `secret`.
pub(crate) fn sign(secret: &[u8], timestamp: u64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret)
        .unwrap_or_else(|_| unreachable!("HMAC takes a key of any length"));
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    let digest = mac.finalize().into_bytes();
    let mut hex = String::with_capacity(7 + 64);
    hex.push_str("sha256=");
    for byte in digest {
        hex.push_str(&format!("{byte:02x}"));
    }
    hex
}

/// The wait after the `failed`-th failed try (1-based): `base`, doubling, capped, with up to a
/// quarter less or more (`spread` in 0..1 picks where), so that many servers retrying a
/// receiver that came back do not all come at once.
pub(crate) fn backoff(base: Duration, failed: u32, spread: f64) -> Duration {
    let nominal = base
        .saturating_mul(1u32 << failed.saturating_sub(1).min(16))
        .min(RETRY_CAP);
    nominal.mul_f64(0.75 + spread.clamp(0.0, 1.0) * 0.5)
}

/// A number in 0..1 from a small generator seeded by the clock: jitter needs no quality.
struct Spread(u64);

impl Spread {
    fn new() -> Self {
        let seed = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0x9e37_79b9, |d| d.as_nanos() as u64);
        Self(seed | 1)
    }

    fn next(&mut self) -> f64 {
        // xorshift64
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        (self.0 >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Drains `queue` until every sender is gone.
pub(crate) async fn run<P: Post>(
    mut queue: mpsc::Receiver<Record>,
    poster: P,
    settings: Settings,
    metrics: Arc<Metrics>,
) {
    let app = settings.app_id.as_str();
    let mut spread = Spread::new();
    let mut batch = Vec::with_capacity(BATCH);
    while queue.recv_many(&mut batch, BATCH).await > 0 {
        metrics.webhook_queued(app, -(batch.len() as i64));
        let body = match serde_json::to_vec(&Batch {
            app_id: app,
            events: &batch,
        }) {
            Ok(body) => Bytes::from(body),
            Err(e) => {
                tracing::error!(app, "webhook batch not encoded: {e}");
                batch.clear();
                continue;
            }
        };
        let mut delivered = false;
        for attempt in 1..=settings.max_attempts {
            let timestamp = crate::clock::now_ms() / 1000;
            let signed = Signed {
                signature: sign(&settings.secret, timestamp, &body),
                body: body.clone(),
                timestamp,
            };
            let outcome = match tokio::time::timeout(settings.timeout, poster.post(&signed)).await {
                Ok(outcome) => outcome,
                Err(_) => Err(format!("no answer within {:?}", settings.timeout)),
            };
            match outcome {
                Ok(()) => {
                    metrics.webhook_post(app, true);
                    delivered = true;
                    break;
                }
                Err(e) => {
                    metrics.webhook_post(app, false);
                    tracing::warn!(app, attempt, "webhook POST failed: {e}");
                    metrics
                        .recent_errors
                        .note(format!("webhook of {app}, try {attempt}: {e}"));
                    if attempt < settings.max_attempts {
                        let wait = backoff(settings.retry_base, attempt, spread.next());
                        tokio::time::sleep(wait).await;
                    }
                }
            }
        }
        if delivered {
            metrics.webhook_delivered(app, batch.len() as u64);
        } else {
            tracing::error!(
                app,
                events = batch.len(),
                "webhook batch dropped after {} tries",
                settings.max_attempts
            );
            metrics.webhook_dropped(app, "failed", batch.len() as u64);
        }
        batch.clear();
    }
}
