//! The per-connection outbound queue (`docs/architecture.md`, "Slow consumers").
//!
//! Every logged-in connection has one [`Outbox`]: a bounded queue of encoded frames, filled by
//! publishers (through the engine) and drained by the connection's single writer task. Pushing
//! never waits. When the queue is full the connection is a slow consumer: the outbox asks its
//! writer to close the session with [`CloseReason::SlowConsumer`] and counts it, so one stalled
//! subscriber never delays a publisher or the other subscribers.

use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rtm_proto::CloseReason;
use tokio::sync::{Notify, mpsc};

use crate::metrics::Metrics;

/// The sending side of a connection's outbound queue. Cheap to clone.
#[derive(Clone, Debug)]
pub struct Outbox {
    tx: mpsc::Sender<Bytes>,
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    /// Set once: why the session is being closed.
    closing: Mutex<Option<CloseReason>>,
    notify: Notify,
    metrics: Arc<Metrics>,
}

/// What [`Outbox::push`] did with a frame.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Pushed {
    /// Queued for the writer.
    Queued,
    /// Not queued: the queue was full, and the session is now being closed as a slow consumer.
    Overflowed,
    /// Not queued: the session is already closed or closing.
    Closed,
}

impl Outbox {
    /// A queue that holds up to `capacity` frames, and the receiving side for the writer.
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> (Self, OutboxRx) {
        let (tx, rx) = mpsc::channel(capacity.max(1));
        let shared = Arc::new(Shared {
            closing: Mutex::new(None),
            notify: Notify::new(),
            metrics,
        });
        (
            Self {
                tx,
                shared: shared.clone(),
            },
            OutboxRx { rx, shared },
        )
    }

    /// Queues one encoded frame without waiting.
    pub fn push(&self, frame: Bytes) -> Pushed {
        match self.tx.try_send(frame) {
            Ok(()) => Pushed::Queued,
            Err(mpsc::error::TrySendError::Full(_)) => {
                if self.close(CloseReason::SlowConsumer) {
                    self.shared
                        .metrics
                        .slow_consumer_disconnects
                        .fetch_add(1, Ordering::Relaxed);
                    tracing::info!("closing a slow consumer: its outbound queue is full");
                }
                self.shared
                    .metrics
                    .frames_dropped
                    .fetch_add(1, Ordering::Relaxed);
                Pushed::Overflowed
            }
            Err(mpsc::error::TrySendError::Closed(_)) => Pushed::Closed,
        }
    }

    /// Asks the writer to end the session for `reason`. Returns false if it was already closing.
    pub fn close(&self, reason: CloseReason) -> bool {
        let mut closing = lock(&self.shared.closing);
        if closing.is_some() {
            return false;
        }
        *closing = Some(reason);
        drop(closing);
        // `notify_one` stores a permit, so a writer that is busy writing sees it next time.
        self.shared.notify.notify_one();
        true
    }

    /// Whether this and `other` are the same queue.
    pub fn same(&self, other: &Self) -> bool {
        Arc::ptr_eq(&self.shared, &other.shared)
    }
}

/// The receiving side of an [`Outbox`], owned by the connection's writer.
#[derive(Debug)]
pub struct OutboxRx {
    rx: mpsc::Receiver<Bytes>,
    shared: Arc<Shared>,
}

/// What the writer should do next.
#[derive(Debug)]
pub enum Next {
    /// Write these frames (at least one).
    Frames(Vec<Bytes>),
    /// End the session for this reason.
    Close(CloseReason),
}

impl OutboxRx {
    /// Waits for frames or a close request. Frames already queued are taken together, up to
    /// `max_batch`, so the writer hands them to QUIC in one call.
    pub async fn next(&mut self, max_batch: usize) -> Next {
        tokio::select! {
            biased;
            () = self.shared.notify.notified() => {
                if let Some(reason) = *lock(&self.shared.closing) {
                    return Next::Close(reason);
                }
                // A stale permit; nothing to do but wait again.
                Next::Frames(Vec::new())
            }
            frame = self.rx.recv() => match frame {
                Some(frame) => {
                    let mut batch = Vec::with_capacity(max_batch.min(16));
                    batch.push(frame);
                    while batch.len() < max_batch {
                        match self.rx.try_recv() {
                            Ok(f) => batch.push(f),
                            Err(_) => break,
                        }
                    }
                    Next::Frames(batch)
                }
                // Every sender is gone: the session ended without a reason to tell the client.
                None => Next::Close(CloseReason::ServerShutdown),
            },
        }
    }

    /// Waits until the session is asked to close, and says why.
    pub async fn closed(&mut self) -> CloseReason {
        loop {
            self.shared.notify.notified().await;
            if let Some(reason) = *lock(&self.shared.closing) {
                return reason;
            }
        }
    }

    /// Takes the frames still queued, without waiting.
    pub fn drain(&mut self) -> Vec<Bytes> {
        let mut out = Vec::new();
        while let Ok(f) = self.rx.try_recv() {
            out.push(f);
        }
        out
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (we only store plain
/// values under it).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn overflow_closes_as_slow_consumer_once() {
        let metrics = Arc::new(Metrics::default());
        let (outbox, mut rx) = Outbox::new(2, metrics.clone());
        assert_eq!(outbox.push(Bytes::from_static(b"1")), Pushed::Queued);
        assert_eq!(outbox.push(Bytes::from_static(b"2")), Pushed::Queued);
        assert_eq!(outbox.push(Bytes::from_static(b"3")), Pushed::Overflowed);
        assert_eq!(outbox.push(Bytes::from_static(b"4")), Pushed::Overflowed);
        assert_eq!(metrics.slow_consumer_disconnects.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.frames_dropped.load(Ordering::Relaxed), 2);
        assert!(matches!(
            rx.next(8).await,
            Next::Close(CloseReason::SlowConsumer)
        ));
    }

    #[tokio::test]
    async fn frames_come_out_in_order_and_batched() {
        let (outbox, mut rx) = Outbox::new(16, Arc::new(Metrics::default()));
        for i in 0..5u8 {
            outbox.push(Bytes::from(vec![i]));
        }
        match rx.next(3).await {
            Next::Frames(f) => assert_eq!(f, vec![vec![0u8], vec![1], vec![2]]),
            other => panic!("{other:?}"),
        }
        match rx.next(8).await {
            Next::Frames(f) => assert_eq!(f, vec![vec![3u8], vec![4]]),
            other => panic!("{other:?}"),
        }
    }
}
