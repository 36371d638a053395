//! The per-connection outbound queue (`docs/architecture.md`, "Slow consumers").
//!
//! Every logged-in connection has one [`Outbox`]: a bounded queue of encoded frames, filled by
//! publishers (through the engine) and drained by the connection's single writer task. Pushing
//! never waits. When the queue is full the connection is a slow consumer: the outbox asks its
//! writer to close the session with [`CloseReason::SlowConsumer`] and counts it, so one stalled
//! subscriber never delays a publisher or the other subscribers.
//!
//! The outbox also keeps, after the writer has taken them, the frames the client has not yet
//! acknowledged (`ClientMsg::Ack`), up to the same capacity. When a connection is lost and the
//! client resumes the session on a new one, [`OutboxRx::rewind`] puts those back at the head of
//! the queue, so that nothing written into the dead connection is lost (`docs/protocol.md`
//! §5.6). Frames are counted from the session's first: the writer takes frame number
//! `written`, the client acknowledges `received` of them.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rtm_proto::CloseReason;
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// The sending side of a connection's outbound queue. Cheap to clone; when the last clone is
/// dropped the writer finishes.
#[derive(Clone, Debug)]
pub struct Outbox {
    sender: Arc<Sender>,
}

/// Owned by every [`Outbox`] clone through one `Arc`: its drop means no sender is left.
#[derive(Debug)]
struct Sender {
    shared: Arc<Shared>,
}

#[derive(Debug)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the writer: frames arrived, a close was asked for, or the senders are gone.
    notify: Notify,
    capacity: usize,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Bytes>,
    /// Frames taken by the writer and not yet acknowledged, oldest first: numbers
    /// `written - sent.len() .. written`.
    sent: VecDeque<Bytes>,
    /// Frames taken by the writer since the session began.
    written: u64,
    /// Set once: why the session is being closed.
    closing: Option<CloseReason>,
    senders_gone: bool,
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
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
            metrics,
        });
        let sender = Arc::new(Sender {
            shared: shared.clone(),
        });
        (Self { sender }, OutboxRx { shared })
    }

    fn shared(&self) -> &Shared {
        &self.sender.shared
    }

    /// Queues one encoded frame without waiting.
    ///
    /// This is the fan-out hot path: one short lock, and a wake-up of the writer only when it
    /// may be waiting (the queue was empty).
    pub fn push(&self, frame: Bytes) -> Pushed {
        let shared = self.shared();
        let mut state = lock(&shared.state);
        match state.closing {
            None => {}
            Some(CloseReason::SlowConsumer) => {
                // Every frame a slow consumer misses is counted.
                shared
                    .metrics
                    .frames_dropped
                    .fetch_add(1, Ordering::Relaxed);
                return Pushed::Overflowed;
            }
            Some(_) => return Pushed::Closed,
        }
        if state.queue.len() >= shared.capacity {
            state.closing = Some(CloseReason::SlowConsumer);
            drop(state);
            shared.notify.notify_one();
            shared
                .metrics
                .slow_consumer_disconnects
                .fetch_add(1, Ordering::Relaxed);
            shared
                .metrics
                .frames_dropped
                .fetch_add(1, Ordering::Relaxed);
            tracing::info!("closing a slow consumer: its outbound queue is full");
            return Pushed::Overflowed;
        }
        let was_empty = state.queue.is_empty();
        state.queue.push_back(frame);
        drop(state);
        if was_empty {
            // `notify_one` stores a permit, so a writer that is busy writing sees it next time.
            shared.notify.notify_one();
        }
        Pushed::Queued
    }

    /// Forgets the kept frames the client says it has received (the first `received` of the
    /// session).
    pub fn ack(&self, received: u64) {
        let mut state = lock(&self.shared().state);
        let first_kept = state.written - state.sent.len() as u64;
        let done = received.min(state.written).saturating_sub(first_kept);
        state.sent.drain(..done as usize);
        if state.sent.is_empty() && state.sent.capacity() > 64 {
            // A burst is over: give the memory back.
            state.sent = VecDeque::new();
        }
    }

    /// Whether the session is being closed.
    pub fn is_closing(&self) -> bool {
        lock(&self.shared().state).closing.is_some()
    }

    /// Asks the writer to end the session for `reason`. Returns false if it was already closing.
    pub fn close(&self, reason: CloseReason) -> bool {
        let shared = self.shared();
        let mut state = lock(&shared.state);
        if state.closing.is_some() {
            return false;
        }
        state.closing = Some(reason);
        drop(state);
        shared.notify.notify_one();
        true
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        lock(&self.shared.state).senders_gone = true;
        self.shared.notify.notify_one();
    }
}

/// The receiving side of an [`Outbox`], owned by the connection's writer.
#[derive(Debug)]
pub struct OutboxRx {
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
    /// Waits for frames or a close request, and takes up to `max_batch` queued frames at once so
    /// the writer hands them to QUIC in one call. A close request comes before queued frames.
    pub async fn next(&mut self, max_batch: usize) -> Next {
        loop {
            {
                let mut state = lock(&self.shared.state);
                if let Some(reason) = state.closing {
                    return Next::Close(reason);
                }
                if !state.queue.is_empty() {
                    let n = state.queue.len().min(max_batch.max(1));
                    let frames: Vec<Bytes> = state.queue.drain(..n).collect();
                    // Keep them until acknowledged, dropping the oldest beyond the capacity.
                    let capacity = self.shared.capacity;
                    let kept = state.sent.len();
                    let overflow = (kept + n).saturating_sub(capacity);
                    state.sent.drain(..overflow.min(kept));
                    let skip = n.saturating_sub(capacity);
                    state.sent.extend(frames.iter().skip(skip).cloned());
                    state.written += n as u64;
                    return Next::Frames(frames);
                }
                if state.senders_gone {
                    // The session ended without a reason to tell the client.
                    return Next::Close(CloseReason::ServerShutdown);
                }
            }
            self.shared.notify.notified().await;
        }
    }

    /// Waits until the session is asked to close, and says why.
    pub async fn closed(&mut self) -> CloseReason {
        loop {
            if let Some(reason) = lock(&self.shared.state).closing {
                return reason;
            }
            self.shared.notify.notified().await;
        }
    }

    /// Prepares the queue for a new connection after the client has received `received` frames
    /// of the session: the kept frames after those go back to the head of the queue. Returns the
    /// number of the next frame the writer will take, which is more than `received` when some
    /// frames were no longer kept (they are lost).
    pub fn rewind(&mut self, received: u64) -> u64 {
        let mut state = lock(&self.shared.state);
        let state = &mut *state;
        let first_kept = state.written - state.sent.len() as u64;
        let from = received.min(state.written).max(first_kept);
        let resend = state.sent.split_off((from - first_kept) as usize);
        state.sent.clear();
        for frame in resend.into_iter().rev() {
            state.queue.push_front(frame);
        }
        state.written = from;
        if !state.queue.is_empty() {
            self.shared.notify.notify_one();
        }
        from
    }

    /// Takes the frames still queued, without waiting.
    pub fn drain(&mut self) -> Vec<Bytes> {
        lock(&self.shared.state).queue.drain(..).collect()
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

    fn frames(next: Next) -> Vec<u8> {
        match next {
            Next::Frames(f) => f.iter().map(|b| b[0]).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn rewind_resends_what_was_not_acknowledged() {
        let (outbox, mut rx) = Outbox::new(16, Arc::new(Metrics::default()));
        for i in 0..6u8 {
            outbox.push(Bytes::from(vec![i]));
        }
        assert_eq!(frames(rx.next(4).await), [0, 1, 2, 3]);
        outbox.ack(2);
        // The client got frames 0..3; 3 was lost with the connection, 4 and 5 never left.
        assert_eq!(rx.rewind(3), 3);
        assert_eq!(frames(rx.next(16).await), [3, 4, 5]);
        // A client that says it has more than was written is held to what was written.
        assert_eq!(rx.rewind(100), 6);
        outbox.push(Bytes::from(vec![6]));
        assert_eq!(frames(rx.next(16).await), [6]);
    }

    #[tokio::test]
    async fn frames_beyond_the_kept_window_are_reported_lost() {
        let (outbox, mut rx) = Outbox::new(2, Arc::new(Metrics::default()));
        for round in 0..3u8 {
            outbox.push(Bytes::from(vec![2 * round]));
            outbox.push(Bytes::from(vec![2 * round + 1]));
            assert_eq!(frames(rx.next(8).await), [2 * round, 2 * round + 1]);
        }
        // Six written, only the last two kept: a client that got one frame lost three.
        assert_eq!(rx.rewind(1), 4);
        assert_eq!(frames(rx.next(8).await), [4, 5]);
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
