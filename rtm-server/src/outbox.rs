//! The per-connection outbound queue (`docs/architecture.md`, "Slow consumers").
//!
//! Every logged-in connection has one [`Outbox`]: a bounded queue of encoded frames, filled by
//! publishers (through the engine) and drained by the connection's single writer task. Pushing
//! never waits. When the queue is full the connection is a slow consumer: the outbox asks its
//! writer to close the session with [`CloseReason::SlowConsumer`] and counts it, so one stalled
//! subscriber never delays a publisher or the other subscribers.
//!
//! Each frame goes to one of the connection's delivery **lanes** (`docs/protocol.md` §1.2): the
//! frame's [`Frame::lane_key`] (a hash of its channel) modulo the number of lanes, so that one
//! channel's events stay in order on one QUIC stream while a packet lost on one lane does not
//! hold up the others.
//!
//! The outbox also keeps, after the writer has taken them, the frames the client has not yet
//! acknowledged (`ClientMsg::Ack`), up to the same capacity per lane. When a connection is lost
//! and the client resumes the session on a new one, [`OutboxRx::rewind`] puts those back at the
//! head of the queue, so that nothing written into the dead connection is lost
//! (`docs/protocol.md` §5.6). Frames are counted per lane from the session's first: the writer
//! takes frame number `written[lane]`, the client acknowledges `received[lane]` of them.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rtm_proto::CloseReason;
use rtm_proto::limits::MAX_LANES;
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// An encoded event on its way to a session, with the key that picks its lane: frames with the
/// same key keep their order.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Frame {
    /// The encoded `ServerMsg`.
    pub bytes: Bytes,
    /// What the lane is chosen by.
    pub lane_key: u32,
}

impl Frame {
    /// A frame ordered with everything else keyed by `key` (a channel name, say).
    pub fn keyed(bytes: Bytes, key: &str) -> Self {
        Self {
            bytes,
            lane_key: lane_key(key),
        }
    }

    /// A frame about the session itself (lane 0).
    pub fn session(bytes: Bytes) -> Self {
        Self { bytes, lane_key: 0 }
    }
}

/// FNV-1a of `key`: stable across processes and versions, so every node of a cluster picks the
/// same lane for a channel.
fn lane_key(key: &str) -> u32 {
    key.bytes().fold(0x811c_9dc5u32, |hash, byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    })
}

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
    lanes: u8,
    /// `lanes - 1`: lanes are a power of two, so a key's lane is a mask, not a division.
    lane_mask: u32,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct State {
    /// Frames not yet taken by the writer, with their lane.
    queue: VecDeque<(u8, Bytes)>,
    /// Per lane (created on first use), the frames taken by the writer and not yet
    /// acknowledged, oldest first: numbers `written - sent.len() .. written` of that lane.
    sent: Vec<VecDeque<Bytes>>,
    /// Per lane, frames taken by the writer since the session began.
    written: Vec<u64>,
    /// Set once: why the session is being closed.
    closing: Option<CloseReason>,
    senders_gone: bool,
}

impl State {
    /// Makes sure the per-lane tables have `lanes` entries.
    fn lanes(&mut self, lanes: usize) {
        if self.written.len() < lanes {
            self.written.resize(lanes, 0);
            self.sent.resize_with(lanes, VecDeque::new);
        }
    }
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
    /// A queue that holds up to `capacity` frames for one delivery lane, and the receiving side
    /// for the writer.
    pub fn new(capacity: usize, metrics: Arc<Metrics>) -> (Self, OutboxRx) {
        Self::with_lanes(capacity, 1, metrics)
    }

    /// A queue that holds up to `capacity` frames for `lanes` delivery lanes (rounded down to
    /// a power of two from 1 to [`MAX_LANES`]), and the receiving side for the writer.
    pub fn with_lanes(capacity: usize, lanes: u8, metrics: Arc<Metrics>) -> (Self, OutboxRx) {
        let lanes = lanes.clamp(1, MAX_LANES as u8);
        let lanes = 1u8 << lanes.ilog2();
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
            lanes,
            lane_mask: u32::from(lanes) - 1,
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

    /// Queues one frame without waiting.
    ///
    /// This is the fan-out hot path: one short lock, and a wake-up of the writer only when it
    /// may be waiting (the queue was empty).
    pub fn push(&self, frame: Frame) -> Pushed {
        let shared = self.shared();
        let lane = (frame.lane_key & shared.lane_mask) as u8;
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
        state.queue.push_back((lane, frame.bytes));
        drop(state);
        if was_empty {
            // `notify_one` stores a permit, so a writer that is busy writing sees it next time.
            shared.notify.notify_one();
        }
        Pushed::Queued
    }

    /// Forgets the kept frames the client says it has received: per lane, the first
    /// `received[lane]` of the session.
    pub fn ack(&self, received: &[u64]) {
        let mut state = lock(&self.shared().state);
        let state = &mut *state;
        for ((sent, &written), &received) in state.sent.iter_mut().zip(&state.written).zip(received)
        {
            let first_kept = written - sent.len() as u64;
            let done = received.min(written).saturating_sub(first_kept);
            sent.drain(..done as usize);
            if sent.is_empty() && sent.capacity() > 64 {
                // A burst is over: give the memory back.
                *sent = VecDeque::new();
            }
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
    /// Write these frames (at least one), each to its lane.
    Frames(Vec<(u8, Bytes)>),
    /// End the session for this reason.
    Close(CloseReason),
}

impl OutboxRx {
    /// The number of delivery lanes.
    pub fn lanes(&self) -> u8 {
        self.shared.lanes
    }

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
                    let frames: Vec<(u8, Bytes)> = state.queue.drain(..n).collect();
                    self.keep(&mut state, &frames);
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

    /// Keeps the frames the writer takes until they are acknowledged, dropping a lane's oldest
    /// beyond the capacity.
    fn keep(&self, state: &mut State, frames: &[(u8, Bytes)]) {
        state.lanes(usize::from(self.shared.lanes));
        let capacity = self.shared.capacity;
        for (lane, frame) in frames {
            let lane = usize::from(*lane);
            let sent = &mut state.sent[lane];
            if sent.len() >= capacity {
                sent.pop_front();
            }
            sent.push_back(frame.clone());
            state.written[lane] += 1;
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

    /// Prepares the queue for a new connection after the client has received, per lane,
    /// `received[lane]` frames of the session: the kept frames after those go back to the head
    /// of the queue. Returns, per lane, the number of the next frame the writer will take, which
    /// is more than `received` when some frames were no longer kept (they are lost).
    pub fn rewind(&mut self, received: &[u64]) -> Vec<u64> {
        let mut state = lock(&self.shared.state);
        let state = &mut *state;
        state.lanes(usize::from(self.shared.lanes));
        let mut resend = Vec::new();
        for (lane, (sent, written)) in state.sent.iter_mut().zip(&mut state.written).enumerate() {
            let first_kept = *written - sent.len() as u64;
            let got = received.get(lane).copied().unwrap_or(0);
            let from = got.min(*written).max(first_kept);
            resend.extend(
                sent.drain((from - first_kept) as usize..)
                    .map(|frame| (lane as u8, frame)),
            );
            sent.clear();
            *written = from;
        }
        for frame in resend.into_iter().rev() {
            state.queue.push_front(frame);
        }
        if !state.queue.is_empty() {
            self.shared.notify.notify_one();
        }
        state.written.clone()
    }

    /// Takes the frames still queued, without waiting.
    pub fn drain(&mut self) -> Vec<(u8, Bytes)> {
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

    fn one(b: u8) -> Frame {
        Frame::session(Bytes::from(vec![b]))
    }

    fn frames(next: Next) -> Vec<u8> {
        match next {
            Next::Frames(f) => f.iter().map(|(_, b)| b[0]).collect(),
            other => panic!("{other:?}"),
        }
    }

    #[tokio::test]
    async fn overflow_closes_as_slow_consumer_once() {
        let metrics = Arc::new(Metrics::default());
        let (outbox, mut rx) = Outbox::new(2, metrics.clone());
        assert_eq!(outbox.push(one(1)), Pushed::Queued);
        assert_eq!(outbox.push(one(2)), Pushed::Queued);
        assert_eq!(outbox.push(one(3)), Pushed::Overflowed);
        assert_eq!(outbox.push(one(4)), Pushed::Overflowed);
        assert_eq!(metrics.slow_consumer_disconnects.load(Ordering::Relaxed), 1);
        assert_eq!(metrics.frames_dropped.load(Ordering::Relaxed), 2);
        assert!(matches!(
            rx.next(8).await,
            Next::Close(CloseReason::SlowConsumer)
        ));
    }

    #[tokio::test]
    async fn rewind_resends_what_was_not_acknowledged() {
        let (outbox, mut rx) = Outbox::new(16, Arc::new(Metrics::default()));
        for i in 0..6u8 {
            outbox.push(one(i));
        }
        assert_eq!(frames(rx.next(4).await), [0, 1, 2, 3]);
        outbox.ack(&[2]);
        // The client got frames 0..3; 3 was lost with the connection, 4 and 5 never left.
        assert_eq!(rx.rewind(&[3]), [3]);
        assert_eq!(frames(rx.next(16).await), [3, 4, 5]);
        // A client that says it has more than was written is held to what was written.
        assert_eq!(rx.rewind(&[100]), [6]);
        outbox.push(one(6));
        assert_eq!(frames(rx.next(16).await), [6]);
    }

    #[tokio::test]
    async fn frames_beyond_the_kept_window_are_reported_lost() {
        let (outbox, mut rx) = Outbox::new(2, Arc::new(Metrics::default()));
        for round in 0..3u8 {
            outbox.push(one(2 * round));
            outbox.push(one(2 * round + 1));
            assert_eq!(frames(rx.next(8).await), [2 * round, 2 * round + 1]);
        }
        // Six written, only the last two kept: a client that got one frame lost three.
        assert_eq!(rx.rewind(&[1]), [4]);
        assert_eq!(frames(rx.next(8).await), [4, 5]);
    }

    #[tokio::test]
    async fn lanes_are_counted_and_rewound_separately() {
        let (outbox, mut rx) = Outbox::with_lanes(16, 4, Arc::new(Metrics::default()));
        // Keys 0..4 on lanes 0..4: frames i and i + 4 share a lane.
        for i in 0..8u8 {
            outbox.push(Frame {
                bytes: Bytes::from(vec![i]),
                lane_key: u32::from(i),
            });
        }
        match rx.next(16).await {
            Next::Frames(f) => {
                let lanes: Vec<u8> = f.iter().map(|(lane, _)| *lane).collect();
                assert_eq!(lanes, [0, 1, 2, 3, 0, 1, 2, 3]);
            }
            other => panic!("{other:?}"),
        }
        // Lane 0 got both of its frames, lane 1 one, lanes 2 and 3 none (a short list means
        // zeros).
        assert_eq!(rx.rewind(&[2, 1]), [2, 1, 0, 0]);
        let mut again = frames(rx.next(16).await);
        again.sort_unstable();
        assert_eq!(again, [2, 3, 5, 6, 7]);
    }

    #[test]
    fn a_channel_always_gets_the_same_lane_key() {
        assert_eq!(
            Frame::keyed(Bytes::new(), "room").lane_key,
            lane_key("room")
        );
        // FNV-1a's published test value for "a".
        assert_eq!(lane_key("a"), 0xe40c_292c);
        assert_ne!(lane_key("room1"), lane_key("room2"));
    }

    #[tokio::test]
    async fn frames_come_out_in_order_and_batched() {
        let (outbox, mut rx) = Outbox::new(16, Arc::new(Metrics::default()));
        for i in 0..5u8 {
            outbox.push(one(i));
        }
        assert_eq!(frames(rx.next(3).await), [0, 1, 2]);
        assert_eq!(frames(rx.next(8).await), [3, 4]);
    }
}
