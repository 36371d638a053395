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

    /// Why the session is closing, if it is.
    pub fn closing_reason(&self) -> Option<CloseReason> {
        lock(&self.shared().state).closing
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
    let owner = shared
        .owner
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .clone();
    shared.metrics.recent_errors.note(format!(
        "slow consumer {owner} closed: its queue of events overflowed"
    ));
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
mod tests;
