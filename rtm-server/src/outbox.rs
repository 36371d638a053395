//! The per-connection outbound queue (`docs/architecture.md`, "Slow consumers").
//!
//! Every logged-in connection has one [`Outbox`]: a bounded queue of encoded frames, filled by
//! publishers (through the engine) and drained by the connection's single writer task. Pushing
//! never waits. When the queue is full the connection is a slow consumer: the outbox asks its
//! writer to close the session with [`CloseReason::SlowConsumer`] and counts it, so one stalled
//! subscriber never delays a publisher or the other subscribers.
//!
//! Each frame goes to one of the connection's delivery **lanes** (`docs/protocol.md` §1.2): a
//! message event's lane is a hash of its channel name modulo the number of lanes, so that one
//! channel's events stay in order on one QUIC stream while a packet lost on one lane does not
//! hold up the others. The lane is worked out by the writer when it takes a frame (from the
//! frame itself, [`lane_of`]), so the fan-out path only queues a refcounted `Bytes`.
//!
//! The outbox also keeps, after the writer has taken them, the frames the client has not yet
//! acknowledged (`ClientMsg::Ack`), up to the same capacity per lane. When a connection is lost
//! and the client resumes the session on a new one, [`OutboxRx::rewind`] puts those back at the
//! head of the queue, so that nothing written into the dead connection is lost
//! (`docs/protocol.md` §5.6). Frames are counted per lane from the session's first: the writer
//! takes frame number `written[lane]`, the client acknowledges `received[lane]` of them.
//!
//! What a session holds is bounded in bytes as well: the frames queued and the frames kept
//! until acknowledged together may take at most `max_bytes` (`[connection] max_session_bytes`).
//! A client beyond it (one that never acknowledges, or reads too slowly) is a slow consumer
//! like one whose queue is full.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use bytes::Bytes;
use rtm_proto::limits::MAX_LANES;
use rtm_proto::{ChannelType, CloseReason, Event, LostMessages, ServerMsg, encode_frame};
use tokio::sync::Notify;

use crate::metrics::Metrics;

/// The lane of an encoded frame among `lanes` (a power of two): FNV-1a of the channel name of a
/// message, topic or presence event, masked; 0 for every other frame. FNV-1a is stable across processes and
/// versions, so every node of a cluster picks the same lane for a channel.
pub fn lane_of(frame: &[u8], lanes: u8) -> u8 {
    let Some(channel) = ServerMsg::peek_event_channel(frame) else {
        return 0;
    };
    let hash = channel.iter().fold(0x811c_9dc5u32, |hash, &byte| {
        (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193)
    });
    (hash & (u32::from(lanes.max(1)) - 1)) as u8
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
    /// Most bytes of frames queued and kept at once.
    max_bytes: usize,
    /// Bytes of the frames kept now (taken by the writer, not yet acknowledged or given up).
    /// Changed by the writer and the acknowledgements, once per batch; publishers only read
    /// it. The queued frames' bytes are `State::queued_bytes`.
    kept_bytes: AtomicUsize,
    /// Who the session is, for the log (set at login).
    owner: Mutex<String>,
    lanes: u8,
    /// What was written and not yet acknowledged. Apart from `state` so that publishers never
    /// wait for the writer's or the acknowledgements' bookkeeping.
    kept: Mutex<Kept>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct State {
    queue: VecDeque<Bytes>,
    /// The bytes of the frames in `queue`.
    queued_bytes: usize,
    /// Set once: why the session is being closed.
    closing: Option<CloseReason>,
    senders_gone: bool,
}

/// Per lane (created on first use), the frames taken by the writer and not yet acknowledged,
/// oldest first (numbers `written - sent.len() .. written` of that lane), and how many the
/// writer has taken since the session began. Message frames dropped from `sent` beyond the
/// capacity are remembered in `dropped` (their number, channel and time), so that a resume can
/// tell the client which messages it missed (`docs/protocol.md` §5.12.1).
#[derive(Debug, Default)]
struct Kept {
    sent: Vec<VecDeque<Bytes>>,
    written: Vec<u64>,
    dropped: Vec<VecDeque<Dropped>>,
    /// Per lane, one past the highest frame number whose record was given up (`dropped` holds
    /// at most the capacity): a client that has not received up to it cannot be told exactly
    /// what it missed.
    untracked: Vec<u64>,
}

/// A message frame the outbox no longer holds.
#[derive(Debug)]
struct Dropped {
    number: u64,
    channel_type: ChannelType,
    channel_name: String,
    timestamp: u64,
}

impl Kept {
    fn lanes(&mut self, lanes: usize) {
        if self.written.len() < lanes {
            self.written.resize(lanes, 0);
            self.sent.resize_with(lanes, VecDeque::new);
            self.dropped.resize_with(lanes, VecDeque::new);
            self.untracked.resize(lanes, 0);
        }
    }
}

/// The channel and time of a message-event frame, for [`Dropped`].
fn message_of(frame: &[u8]) -> Option<(ChannelType, String, u64)> {
    let body = frame.get(rtm_proto::frame::HEADER_LEN..)?;
    match ServerMsg::decode(body).ok()? {
        ServerMsg::Event(Event::Message(m)) if m.channel_type != ChannelType::Stream => {
            Some((m.channel_type, m.channel_name, m.timestamp))
        }
        _ => None,
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
        Self::bounded(capacity, usize::MAX, lanes, metrics)
    }

    /// Like [`Outbox::with_lanes`], holding at most `max_bytes` of frames queued and kept.
    pub fn bounded(
        capacity: usize,
        max_bytes: usize,
        lanes: u8,
        metrics: Arc<Metrics>,
    ) -> (Self, OutboxRx) {
        let lanes = lanes.clamp(1, MAX_LANES as u8);
        let shared = Arc::new(Shared {
            state: Mutex::new(State::default()),
            notify: Notify::new(),
            capacity: capacity.max(1),
            max_bytes,
            kept_bytes: AtomicUsize::new(0),
            owner: Mutex::new(String::new()),
            lanes: 1u8 << lanes.ilog2(),
            kept: Mutex::new(Kept::default()),
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

    /// Names the session in the log lines about it (at login).
    pub fn set_owner(&self, owner: impl Into<String>) {
        *lock(&self.shared().owner) = owner.into();
    }

    /// Queues one encoded frame without waiting.
    ///
    /// This is the fan-out hot path: one short lock, and a wake-up of the writer only when it
    /// may be waiting (the queue was empty).
    pub fn push(&self, frame: Bytes) -> Pushed {
        let shared = self.shared();
        let mut state = lock(&shared.state);
        if let Some(reason) = state.closing {
            return refused(shared, reason, 1);
        }
        let queued_bytes = state.queued_bytes + frame.len();
        if state.queue.len() >= shared.capacity
            || queued_bytes + shared.kept_bytes.load(Ordering::Relaxed) > shared.max_bytes
        {
            return overflowed(shared, state, 1);
        }
        let was_empty = state.queue.is_empty();
        state.queued_bytes = queued_bytes;
        state.queue.push_back(frame);
        drop(state);
        if was_empty {
            // `notify_one` stores a permit, so a writer that is busy writing sees it next time.
            shared.notify.notify_one();
        }
        Pushed::Queued
    }

    /// Queues frames that must stay together (the parts of one event): all of them, one after
    /// the other, or none.
    pub fn push_all(&self, frames: Vec<Bytes>) -> Pushed {
        let shared = self.shared();
        let count = frames.len();
        let bytes: usize = frames.iter().map(Bytes::len).sum();
        let mut state = lock(&shared.state);
        if let Some(reason) = state.closing {
            return refused(shared, reason, count);
        }
        if state.queue.len() + count > shared.capacity
            || state.queued_bytes + bytes + shared.kept_bytes.load(Ordering::Relaxed)
                > shared.max_bytes
        {
            return overflowed(shared, state, count);
        }
        let was_empty = state.queue.is_empty();
        state.queued_bytes += bytes;
        state.queue.extend(frames);
        drop(state);
        if was_empty && count > 0 {
            shared.notify.notify_one();
        }
        Pushed::Queued
    }

    /// Forgets the kept frames the client says it has received: per lane, the first
    /// `received[lane]` of the session.
    pub fn ack(&self, received: &[u64]) {
        let mut kept = lock(&self.shared().kept);
        let kept = &mut *kept;
        for (((sent, &written), dropped), &received) in kept
            .sent
            .iter_mut()
            .zip(&kept.written)
            .zip(&mut kept.dropped)
            .zip(received)
        {
            // What the client has received is not lost.
            while dropped.front().is_some_and(|d| d.number < received) {
                dropped.pop_front();
            }
            let first_kept = written - sent.len() as u64;
            let done = received.min(written).saturating_sub(first_kept);
            let freed: usize = sent.drain(..done as usize).map(|f| f.len()).sum();
            if freed > 0 {
                self.shared().kept_bytes.fetch_sub(freed, Ordering::Relaxed);
            }
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

/// A push to a session that is closing: counted if it is closing as a slow consumer.
fn refused(shared: &Shared, reason: CloseReason, frames: usize) -> Pushed {
    if reason == CloseReason::SlowConsumer {
        // Every frame a slow consumer misses is counted.
        shared
            .metrics
            .frames_dropped
            .fetch_add(frames as u64, Ordering::Relaxed);
        return Pushed::Overflowed;
    }
    Pushed::Closed
}

/// A push that does not fit: the session is closed as a slow consumer.
#[cold]
fn overflowed(
    shared: &Shared,
    mut state: std::sync::MutexGuard<'_, State>,
    frames: usize,
) -> Pushed {
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
        .fetch_add(frames as u64, Ordering::Relaxed);
    Pushed::Overflowed
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
    /// Write these frames (at least one), each to its lane, in this order within each lane.
    Frames(Vec<(u8, Bytes)>),
    /// End the session for this reason.
    Close(CloseReason),
}

impl OutboxRx {
    /// The number of delivery lanes.
    pub fn lanes(&self) -> u8 {
        self.shared.lanes
    }

    /// The session's name for the log, once logged in (empty before).
    pub fn owner(&self) -> String {
        lock(&self.shared.owner).clone()
    }

    /// Bytes of frames queued or kept now.
    pub fn held_bytes(&self) -> usize {
        lock(&self.shared.state).queued_bytes + self.shared.kept_bytes.load(Ordering::Relaxed)
    }

    /// Waits for frames or a close request, and takes up to `max_batch` queued frames at once so
    /// the writer hands them to QUIC in few calls. A close request comes before queued frames.
    pub async fn next(&mut self, max_batch: usize) -> Next {
        loop {
            let taken = {
                let mut state = lock(&self.shared.state);
                if let Some(reason) = state.closing {
                    if reason == CloseReason::SlowConsumer {
                        // Here, in the writer of the session being closed (its connection's
                        // span), not in the publisher that found it full.
                        tracing::info!(
                            session = %self.owner(),
                            held_bytes = state.queued_bytes
                                + self.shared.kept_bytes.load(Ordering::Relaxed),
                            queued = state.queue.len(),
                            "closing a slow consumer: it did not read or acknowledge its events in time"
                        );
                    }
                    return Next::Close(reason);
                }
                if state.queue.is_empty() {
                    if state.senders_gone {
                        // The session ended without a reason to tell the client.
                        return Next::Close(CloseReason::ServerShutdown);
                    }
                    None
                } else {
                    let n = state.queue.len().min(max_batch.max(1));
                    let frames = state.queue.drain(..n).collect::<Vec<Bytes>>();
                    // From queued to kept under the queue's lock: a publisher never sees them
                    // counted twice or not at all.
                    let bytes = frames.iter().map(Bytes::len).sum::<usize>();
                    state.queued_bytes -= bytes;
                    self.shared.kept_bytes.fetch_add(bytes, Ordering::Relaxed);
                    Some(frames)
                }
            };
            if let Some(frames) = taken {
                let lanes = self.shared.lanes;
                let frames: Vec<(u8, Bytes)> = frames
                    .into_iter()
                    .map(|frame| (lane_of(&frame, lanes), frame))
                    .collect();
                self.keep(&frames);
                return Next::Frames(frames);
            }
            self.shared.notify.notified().await;
        }
    }

    /// Keeps the frames the writer takes until they are acknowledged, dropping a lane's oldest
    /// beyond the capacity.
    fn keep(&self, frames: &[(u8, Bytes)]) {
        let mut kept = lock(&self.shared.kept);
        let kept = &mut *kept;
        kept.lanes(usize::from(self.shared.lanes));
        let capacity = self.shared.capacity;
        let mut given_up: usize = 0;
        for (lane, frame) in frames {
            let lane = usize::from(*lane);
            let sent = &mut kept.sent[lane];
            if sent.len() >= capacity {
                let number = kept.written[lane] - sent.len() as u64;
                let old = sent.pop_front();
                given_up += old.as_ref().map_or(0, Bytes::len);
                if let Some(old) = old
                    && let Some((channel_type, channel_name, timestamp)) = message_of(&old)
                {
                    let dropped = &mut kept.dropped[lane];
                    if dropped.len() >= capacity
                        && let Some(given_up) = dropped.pop_front()
                    {
                        kept.untracked[lane] = given_up.number + 1;
                    }
                    dropped.push_back(Dropped {
                        number,
                        channel_type,
                        channel_name,
                        timestamp,
                    });
                }
            }
            sent.push_back(frame.clone());
            kept.written[lane] += 1;
        }
        // (Counted as kept when `next` took them.)
        self.shared
            .kept_bytes
            .fetch_sub(given_up, Ordering::Relaxed);
    }

    /// Whether a client that has received `received[lane]` frames per lane can resume: false
    /// when it missed messages the outbox no longer has a record of (more than its capacity
    /// per lane), which a resume could not report (`docs/protocol.md` §5.12.1).
    pub fn can_resume(&self, received: &[u64]) -> bool {
        let kept = lock(&self.shared.kept);
        kept.untracked
            .iter()
            .enumerate()
            .all(|(lane, &untracked)| received.get(lane).copied().unwrap_or(0) >= untracked)
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
    /// is more than `received` when some frames were no longer kept (they are lost). For the
    /// message events among those, a `MessagesLost` event per channel goes first, ahead of
    /// what is sent again (`docs/protocol.md` §5.12.1).
    pub fn rewind(&mut self, received: &[u64]) -> Vec<u64> {
        let mut kept = lock(&self.shared.kept);
        let kept = &mut *kept;
        kept.lanes(usize::from(self.shared.lanes));
        let mut resend = Vec::new();
        let mut lost: Vec<LostMessages> = Vec::new();
        for (lane, ((sent, written), dropped)) in kept
            .sent
            .iter_mut()
            .zip(&mut kept.written)
            .zip(&mut kept.dropped)
            .enumerate()
        {
            let first_kept = *written - sent.len() as u64;
            let got = received.get(lane).copied().unwrap_or(0);
            let from = got.min(*written).max(first_kept);
            // What the client had received is no longer held; what is sent again is queued.
            let again: Vec<Bytes> = sent.drain((from - first_kept) as usize..).collect();
            let no_longer_kept = sent.drain(..).map(|f| f.len()).sum::<usize>()
                + again.iter().map(Bytes::len).sum::<usize>();
            resend.extend(again);
            self.shared
                .kept_bytes
                .fetch_sub(no_longer_kept, Ordering::Relaxed);
            *written = from;
            for d in dropped.drain(..).filter(|d| d.number >= got) {
                match lost
                    .iter_mut()
                    .find(|l| l.channel_type == d.channel_type && l.channel_name == d.channel_name)
                {
                    Some(l) => {
                        l.from = l.from.min(d.timestamp);
                        l.to = l.to.max(d.timestamp);
                        l.count += 1;
                    }
                    None => lost.push(LostMessages {
                        channel_type: d.channel_type,
                        channel_name: d.channel_name,
                        from: d.timestamp,
                        to: d.timestamp,
                        count: 1,
                    }),
                }
            }
        }
        let mut state = lock(&self.shared.state);
        // Lane by lane, each in order: the order within a lane is all that counts.
        for frame in resend.into_iter().rev() {
            state.queued_bytes += frame.len();
            state.queue.push_front(frame);
        }
        for notice in lost.into_iter().rev() {
            let frame = encode_frame(&ServerMsg::Event(Event::MessagesLost(notice)));
            state.queued_bytes += frame.len();
            state.queue.push_front(frame);
        }
        if !state.queue.is_empty() {
            self.shared.notify.notify_one();
        }
        kept.written.clone()
    }

    /// Takes the frames still queued, without waiting, with their lanes.
    pub fn drain(&mut self) -> Vec<(u8, Bytes)> {
        let frames: Vec<Bytes> = {
            let mut state = lock(&self.shared.state);
            state.queued_bytes = 0;
            state.queue.drain(..).collect()
        };
        let lanes = self.shared.lanes;
        frames
            .into_iter()
            .map(|frame| (lane_of(&frame, lanes), frame))
            .collect()
    }
}

/// Locks a mutex whose data stays consistent even if a holder panicked (we only store plain
/// values under it).
fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use rtm_proto::{ChannelType, Event, MessageEvent, encode_frame};

    use super::*;

    /// A frame the outbox does not look into: lane 0, told apart by its one byte.
    fn one(b: u8) -> Bytes {
        Bytes::from(vec![b])
    }

    /// A message event of `channel` carrying `b`.
    fn message(channel: &str, b: u8) -> Bytes {
        stamped(channel, b, 0)
    }

    fn byte_of(frame: &Bytes) -> u8 {
        let body = frame
            .get(rtm_proto::frame::HEADER_LEN..)
            .unwrap_or_default();
        match ServerMsg::decode(body) {
            Ok(ServerMsg::Event(Event::Message(m))) => m.message.as_bytes()[0],
            _ => frame[0],
        }
    }

    fn frames(next: Next) -> Vec<u8> {
        match next {
            Next::Frames(f) => f.iter().map(|(_, b)| byte_of(b)).collect(),
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
        let (outbox, mut rx) = Outbox::with_lanes(16, 16, Arc::new(Metrics::default()));
        // "room" and "side0" share lane 10, "side1" is on lane 13, "side2" on lane 4.
        let sent = [
            ("room", 0),
            ("side1", 1),
            ("side0", 2),
            ("side2", 3),
            ("room", 4),
        ];
        for (channel, b) in sent {
            outbox.push(message(channel, b));
        }
        match rx.next(16).await {
            Next::Frames(f) => {
                let lanes: Vec<u8> = f.iter().map(|(lane, _)| *lane).collect();
                assert_eq!(lanes, [10, 13, 10, 4, 10]);
            }
            other => panic!("{other:?}"),
        }
        // The client got two frames of lane 10 and the one of lane 13, none of lane 4.
        let mut received = vec![0; 16];
        received[10] = 2;
        received[13] = 1;
        let next = rx.rewind(&received);
        assert_eq!((next[4], next[10], next[13]), (0, 2, 1));
        // Held: the two frames to send again, nothing kept.
        let again = message("side2", 3).len() + message("room", 4).len();
        assert_eq!(rx.held_bytes(), again);
        // Lane 4's frame and lane 10's third come again, in lane order.
        assert_eq!(frames(rx.next(16).await), [3, 4]);
    }

    #[test]
    fn a_channel_always_gets_the_same_lane() {
        assert_eq!(lane_of(&message("room", 1), 16), 10);
        assert_eq!(lane_of(&message("room", 2), 16), 10);
        assert_eq!(lane_of(&message("room", 2), 4), 10 & 3);
        assert_eq!(lane_of(&message("room", 2), 1), 0);
        // Not a message event: lane 0.
        assert_eq!(lane_of(&one(9), 16), 0);
    }

    /// The channel, payload byte and timestamp of message frames, and the lost-message notices.
    fn described(next: Next) -> Vec<String> {
        let Next::Frames(frames) = next else {
            panic!("{next:?}")
        };
        frames
            .iter()
            .map(|(_, frame)| match ServerMsg::decode(&frame[4..]).unwrap() {
                ServerMsg::Event(Event::Message(m)) => {
                    format!("{}:{}", m.channel_name, m.message.as_bytes()[0])
                }
                ServerMsg::Event(Event::MessagesLost(l)) => {
                    format!("lost {} {} {}..{}", l.channel_name, l.count, l.from, l.to)
                }
                other => format!("{other:?}"),
            })
            .collect()
    }

    #[tokio::test]
    async fn a_resume_says_which_messages_were_lost_before_the_rest() {
        let (outbox, mut rx) = Outbox::new(4, Arc::new(Metrics::default()));
        for i in 0..8u8 {
            let channel = if i % 2 == 0 { "a" } else { "b" };
            outbox.push(stamped(channel, i, 100 + u64::from(i)));
            rx.next(8).await;
        }
        // Eight written, the last four kept (4..8); the client got 0 and 1: 2 and 3 are lost.
        // (One lane: the test's outbox.)
        assert_eq!(rx.rewind(&[2]), [4]);
        assert_eq!(
            described(rx.next(16).await),
            [
                "lost a 1 102..102",
                "lost b 1 103..103",
                "a:4",
                "b:5",
                "a:6",
                "b:7"
            ]
        );
        // Reported once: another resume finds nothing lost (and nothing to send again).
        outbox.ack(&[10]);
        assert_eq!(rx.rewind(&[10]), [10]);
        outbox.push(stamped("a", 9, 200));
        assert_eq!(described(rx.next(16).await), ["a:9"]);
    }

    /// A message event of `channel` carrying `b`, at `timestamp`.
    fn stamped(channel: &str, b: u8, timestamp: u64) -> Bytes {
        encode_frame(&ServerMsg::Event(Event::Message(MessageEvent {
            channel_type: ChannelType::Message,
            channel_name: channel.into(),
            topic_name: String::new(),
            message: vec![b].into(),
            custom_type: String::new(),
            publisher: "p".into(),
            timestamp,
        })))
    }

    #[tokio::test]
    async fn a_session_that_missed_more_than_it_can_account_for_cannot_resume() {
        let metrics = Arc::new(Metrics::default());
        let (outbox, mut rx) = Outbox::new(2, metrics.clone());
        // Two kept and two dropped ones on record: frames 0..6 written, records of 2 and 3,
        // the records of 0 and 1 given up.
        for i in 0..6u8 {
            outbox.push(message("a", i));
            rx.next(8).await;
        }
        // A client without 0 and 1 could not be told about them.
        assert!(!rx.can_resume(&[0]));
        assert!(!rx.can_resume(&[1]));
        assert!(rx.can_resume(&[2]));
        // Acknowledged or not, a healthy session is never closed for it.
        assert!(!outbox.is_closing());
        assert_eq!(metrics.slow_consumer_disconnects.load(Ordering::Relaxed), 0);
    }

    #[tokio::test]
    async fn a_session_holding_more_bytes_than_allowed_is_a_slow_consumer() {
        let metrics = Arc::new(Metrics::default());
        let (outbox, mut rx) = Outbox::bounded(4096, 1000, 1, metrics.clone());
        let big = |b: u8| Bytes::from(vec![b; 300]);
        for b in 0..3 {
            assert_eq!(outbox.push(big(b)), Pushed::Queued);
        }
        // Taken by the writer and never acknowledged, they are still held.
        assert_eq!(frames(rx.next(8).await).len(), 3);
        assert_eq!(rx.held_bytes(), 900);
        assert_eq!(outbox.push(big(3)), Pushed::Overflowed);
        assert!(matches!(
            rx.next(8).await,
            Next::Close(CloseReason::SlowConsumer)
        ));
        assert_eq!(metrics.slow_consumer_disconnects.load(Ordering::Relaxed), 1);
    }

    #[tokio::test]
    async fn acknowledged_and_received_bytes_are_no_longer_held() {
        let (outbox, mut rx) = Outbox::bounded(4096, 1000, 1, Arc::new(Metrics::default()));
        let big = |b: u8| Bytes::from(vec![b; 300]);
        for round in 0..10u8 {
            for b in 0..3 {
                assert_eq!(outbox.push(big(3 * round + b)), Pushed::Queued);
            }
            assert_eq!(frames(rx.next(8).await).len(), 3);
            outbox.ack(&[3 * u64::from(round) + 3]);
            assert_eq!(rx.held_bytes(), 0);
        }
        // A resume forgets what the client says it has, and keeps the rest for it.
        for b in 0..3 {
            outbox.push(big(b));
        }
        rx.next(8).await;
        rx.rewind(&[32]);
        assert_eq!(rx.held_bytes(), 300);
        // Frames given up beyond the kept window are not held either.
        let (outbox, mut rx) = Outbox::bounded(2, 1000, 1, Arc::new(Metrics::default()));
        for b in 0..9 {
            outbox.push(big(b));
            rx.next(8).await;
        }
        assert_eq!(rx.held_bytes(), 600);
    }

    #[test]
    fn frames_pushed_together_are_queued_together_or_not_at_all() {
        let metrics = Arc::new(Metrics::default());
        let (outbox, _rx) = Outbox::new(4, metrics.clone());
        assert_eq!(outbox.push_all(vec![one(1), one(2)]), Pushed::Queued);
        assert_eq!(
            outbox.push_all(vec![one(3), one(4), one(5)]),
            Pushed::Overflowed
        );
        assert_eq!(metrics.frames_dropped.load(Ordering::Relaxed), 3);
    }

    /// A log sink for one test.
    #[derive(Clone, Default)]
    struct Captured(Arc<Mutex<Vec<u8>>>);

    impl std::io::Write for Captured {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            lock(&self.0).extend_from_slice(data);
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn the_slow_consumer_line_is_the_writers_and_names_its_session() {
        let log = Captured::default();
        let sink = log.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .build()
                .unwrap();
            let (outbox, mut rx) = Outbox::new(1, Arc::new(Metrics::default()));
            outbox.set_owner("s7 (app/slow-bob)");
            tracing::info_span!("publisher", user = "alice").in_scope(|| {
                outbox.push(one(1));
                assert_eq!(outbox.push(one(2)), Pushed::Overflowed);
            });
            let writer = tracing::info_span!("conn", remote = "10.0.0.7:4000");
            let next = runtime.block_on(tracing::Instrument::instrument(rx.next(8), writer));
            assert!(matches!(next, Next::Close(CloseReason::SlowConsumer)));
        });
        let text = String::from_utf8(lock(&log.0).clone()).unwrap();
        let lines: Vec<&str> = text
            .lines()
            .filter(|l| l.contains("slow consumer"))
            .collect();
        assert_eq!(lines.len(), 1, "{text}");
        assert!(lines[0].contains("s7 (app/slow-bob)"), "{text}");
        assert!(
            lines[0].contains("conn{remote=\"10.0.0.7:4000\"}"),
            "{text}"
        );
        assert!(!lines[0].contains("alice"), "{text}");
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
