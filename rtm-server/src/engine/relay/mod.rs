//! Client connections relayed between nodes (`docs/architecture.md`, "Resume on another node").
//!
//! A client that resumes on node B a session that lives on node A, while A is alive, is served
//! by A through B: B keeps the client's connection and passes its frames to A, A serves the
//! session as on a connection of its own and passes its answers and events back. The session
//! never moves, so nothing is lost, doubled or reordered by the switch: exactly what a resume on
//! A itself would give.
//!
//! This module is the engine-neutral part: the messages of a relayed link, their encoding, and
//! the hub that numbers them, checks their order and notices silence. An engine with other
//! nodes carries the encoded messages between hubs ([`Router::relays`]); the transport layer
//! turns a link into a connection.
//!
//! Every message of a link carries a sequence number per direction. A receiver that sees a
//! number out of turn (a message lost on the way) breaks the link, and so does one that hears
//! nothing for [`SILENCE`] (each end sends a beat every [`BEAT`]): the client's connection then
//! closes as lost, and its next resume finds the session kept on A with every frame the client
//! has not acknowledged.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use tokio::sync::mpsc;
use tokio::time::Instant;

#[cfg(doc)]
use super::Router;

/// How often each end of a link says it is there.
pub const BEAT: Duration = Duration::from_secs(5);
/// How long an end waits without hearing from the other before the link counts as broken.
pub const SILENCE: Duration = Duration::from_secs(15);
/// Messages waiting for one end of a link; more break it (the other end is not keeping up).
const LINK_QUEUE: usize = 1024;
/// Messages waiting to be sent to other nodes, for all links together; senders wait.
const OUT_QUEUE: usize = 4096;
/// Bytes one end of a link may have waiting to be sent; its sender waits beyond that, so that
/// one busy link (a client that floods its frames, a burst of events) slows itself rather than
/// the node's other links, and the client's transport feels the brake as on a direct
/// connection.
pub const LINK_BYTES: usize = 1 << 20;

/// What one end of a relayed link tells the other.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayBody {
    /// From the client's node: a new link; the client's transport needs protocol heartbeats.
    Open {
        /// See [`crate::transport`]'s `Link::needs_heartbeats`.
        needs_heartbeats: bool,
    },
    /// From the client's node: a frame the client sent.
    Frame(Bytes),
    /// From the client's node: a frame over the size limit (its first bytes).
    Oversized {
        /// Its length.
        len: u32,
        /// The limit.
        max: u32,
        /// Its first bytes.
        head: Bytes,
    },
    /// The client's connection ended (`lost: false`: closed normally), or the link broke
    /// (`lost: true`).
    Gone {
        /// Whether it counts as lost (the session waits for a resume).
        lost: bool,
    },
    /// From the session's node: encoded frames for the client's control channel.
    Control(Bytes),
    /// From the session's node: end the control channel.
    Finish,
    /// From the session's node: the session's events use this many lanes.
    Lanes(u8),
    /// From the session's node: a batch of `(lane, frame)` events.
    Events(Vec<(u8, Bytes)>),
    /// From the session's node: end the lanes.
    FinishLanes,
    /// From the session's node: close the client's connection with this code and reason.
    Close {
        /// A code of `docs/protocol.md` §1.3.
        code: u32,
        /// Why.
        reason: String,
    },
    /// Either end: still there.
    Beat,
}

impl RelayBody {
    /// Whether the body ends the link (accepted whatever its number: the link ends anyway).
    fn is_final(&self) -> bool {
        matches!(self, Self::Gone { .. } | Self::Close { .. })
    }
}

/// One message of a link, as it travels between nodes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RelayMsg {
    /// The link, unique in the cluster (the high bits name the node that opened it).
    pub link: u64,
    /// The node that sent it.
    pub from: u32,
    /// Its number in its direction, from 0.
    pub seq: u64,
    /// What it says.
    pub body: RelayBody,
}

mod kind {
    pub(super) const OPEN: u8 = b'o';
    pub(super) const FRAME: u8 = b'f';
    pub(super) const OVERSIZED: u8 = b'x';
    pub(super) const GONE: u8 = b'g';
    pub(super) const CONTROL: u8 = b'c';
    pub(super) const FINISH: u8 = b'F';
    pub(super) const LANES: u8 = b'l';
    pub(super) const EVENTS: u8 = b'e';
    pub(super) const FINISH_LANES: u8 = b'L';
    pub(super) const CLOSE: u8 = b'C';
    pub(super) const BEAT: u8 = b'b';
}

impl RelayMsg {
    /// The bytes to send: the link (8 bytes), the sender (4), the number (8), a kind byte and
    /// the kind's fields (integers big-endian; an event is its lane, its length in 4 bytes and
    /// its bytes; a trailing frame or text runs to the end).
    pub fn encode(&self) -> Bytes {
        let mut out = BytesMut::with_capacity(32);
        out.put_u64(self.link);
        out.put_u32(self.from);
        out.put_u64(self.seq);
        match &self.body {
            RelayBody::Open { needs_heartbeats } => {
                out.put_u8(kind::OPEN);
                out.put_u8(u8::from(*needs_heartbeats));
            }
            RelayBody::Frame(frame) => {
                out.put_u8(kind::FRAME);
                out.put_slice(frame);
            }
            RelayBody::Oversized { len, max, head } => {
                out.put_u8(kind::OVERSIZED);
                out.put_u32(*len);
                out.put_u32(*max);
                out.put_slice(head);
            }
            RelayBody::Gone { lost } => {
                out.put_u8(kind::GONE);
                out.put_u8(u8::from(*lost));
            }
            RelayBody::Control(frames) => {
                out.put_u8(kind::CONTROL);
                out.put_slice(frames);
            }
            RelayBody::Finish => out.put_u8(kind::FINISH),
            RelayBody::Lanes(n) => {
                out.put_u8(kind::LANES);
                out.put_u8(*n);
            }
            RelayBody::Events(events) => {
                out.reserve(events.iter().map(|(_, f)| 5 + f.len()).sum());
                out.put_u8(kind::EVENTS);
                for (lane, frame) in events {
                    out.put_u8(*lane);
                    // A frame is far below 4 GiB (the protocol's limit is in KiB).
                    out.put_u32(u32::try_from(frame.len()).unwrap_or(u32::MAX));
                    out.put_slice(frame);
                }
            }
            RelayBody::FinishLanes => out.put_u8(kind::FINISH_LANES),
            RelayBody::Close { code, reason } => {
                out.put_u8(kind::CLOSE);
                out.put_u32(*code);
                out.put_slice(reason.as_bytes());
            }
            RelayBody::Beat => out.put_u8(kind::BEAT),
        }
        out.freeze()
    }

    /// Reads a message; `None` if the bytes are not one.
    pub fn decode(mut bytes: Bytes) -> Option<Self> {
        if bytes.remaining() < 21 {
            return None;
        }
        let link = bytes.get_u64();
        let from = bytes.get_u32();
        let seq = bytes.get_u64();
        let flag = |bytes: &mut Bytes| (bytes.remaining() == 1).then(|| bytes.get_u8() == 1);
        let body = match bytes.get_u8() {
            kind::OPEN => RelayBody::Open {
                needs_heartbeats: flag(&mut bytes)?,
            },
            kind::FRAME => RelayBody::Frame(bytes),
            kind::OVERSIZED => {
                if bytes.remaining() < 8 {
                    return None;
                }
                RelayBody::Oversized {
                    len: bytes.get_u32(),
                    max: bytes.get_u32(),
                    head: bytes,
                }
            }
            kind::GONE => RelayBody::Gone {
                lost: flag(&mut bytes)?,
            },
            kind::CONTROL => RelayBody::Control(bytes),
            kind::FINISH if bytes.is_empty() => RelayBody::Finish,
            kind::LANES if bytes.remaining() == 1 => RelayBody::Lanes(bytes.get_u8()),
            kind::EVENTS => {
                let mut events = Vec::new();
                while bytes.has_remaining() {
                    if bytes.remaining() < 5 {
                        return None;
                    }
                    let lane = bytes.get_u8();
                    let len = usize::try_from(bytes.get_u32()).ok()?;
                    if bytes.remaining() < len {
                        return None;
                    }
                    events.push((lane, bytes.split_to(len)));
                }
                RelayBody::Events(events)
            }
            kind::FINISH_LANES if bytes.is_empty() => RelayBody::FinishLanes,
            kind::CLOSE => {
                if bytes.remaining() < 4 {
                    return None;
                }
                let code = bytes.get_u32();
                RelayBody::Close {
                    code,
                    reason: String::from_utf8(bytes.to_vec()).ok()?,
                }
            }
            kind::BEAT if bytes.is_empty() => RelayBody::Beat,
            _ => return None,
        };
        Some(Self {
            link,
            from,
            seq,
            body,
        })
    }
}

/// A message for another node: the engine sends `bytes` to `node`, then calls
/// [`Outgoing::sent`].
#[derive(Debug)]
pub struct Outgoing {
    /// The node it is for.
    pub node: u32,
    /// The link it belongs to (to break it if `node` is not there).
    pub link: u64,
    /// The encoded [`RelayMsg`].
    pub bytes: Bytes,
    /// The link's count of bytes waiting, if the message counts in it.
    queued: Option<Arc<Queued>>,
}

impl Outgoing {
    /// The message has left (or failed to): it no longer counts against its link's budget.
    pub fn sent(&self) {
        if let Some(q) = &self.queued {
            q.bytes.fetch_sub(self.bytes.len(), Ordering::AcqRel);
            q.room.notify_waiters();
        }
    }
}

/// The bytes of one end of a link that wait to be sent, and the wake-up of a sender waiting
/// for room.
#[derive(Debug, Default)]
struct Queued {
    bytes: AtomicUsize,
    room: tokio::sync::Notify,
}

impl Queued {
    /// Waits until fewer than [`LINK_BYTES`] wait.
    async fn room(&self) {
        loop {
            // Registered before the check: a wake-up between both is not missed.
            let room = self.room.notified();
            if self.bytes.load(Ordering::Acquire) < LINK_BYTES {
                return;
            }
            room.await;
        }
    }
}

/// A link opened by another node, for this node's session layer to serve.
#[derive(Debug)]
pub struct Accepted {
    /// This node's end.
    pub end: RelayEnd,
    /// Whether the client's transport needs protocol heartbeats.
    pub needs_heartbeats: bool,
}

/// The numbering of one direction of a link, shared by its senders.
type Numbering = Arc<tokio::sync::Mutex<u64>>;

struct Entry {
    tx: mpsc::Sender<RelayBody>,
    peer: u32,
    /// The number the next message from the peer must carry.
    expect: u64,
    heard: Instant,
    numbering: Numbering,
    queued: Arc<Queued>,
}

/// This node's links: where their messages go, in which order they must come.
pub struct Relays {
    own: u32,
    counter: AtomicU64,
    links: Mutex<HashMap<u64, Entry>>,
    out: mpsc::Sender<Outgoing>,
    accepted: mpsc::UnboundedSender<Accepted>,
    accepted_rx: Mutex<Option<mpsc::UnboundedReceiver<Accepted>>>,
}

impl std::fmt::Debug for Relays {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Relays")
            .field("node", &self.own)
            .field("links", &self.lock().len())
            .finish()
    }
}

/// One end of a link: the messages from the other end, and the way to send it more. Dropping
/// it forgets the link here.
#[derive(Debug)]
pub struct RelayEnd {
    /// Sends to the other end.
    pub sender: RelaySender,
    /// What the other end sends; `None` once the link is broken.
    pub rx: RelayRx,
}

/// The receiving side of a [`RelayEnd`].
#[derive(Debug)]
pub struct RelayRx {
    rx: mpsc::Receiver<RelayBody>,
    relays: Arc<Relays>,
    link: u64,
}

impl RelayRx {
    /// The next message from the other end; `None` once the link is broken.
    pub async fn recv(&mut self) -> Option<RelayBody> {
        self.rx.recv().await
    }

    /// The next message already here, if any (`Err(true)` once the link is broken).
    pub fn try_recv(&mut self) -> Result<RelayBody, bool> {
        self.rx
            .try_recv()
            .map_err(|e| matches!(e, mpsc::error::TryRecvError::Disconnected))
    }
}

impl Drop for RelayRx {
    fn drop(&mut self) {
        self.relays.lock().remove(&self.link);
    }
}

/// Sends the messages of one direction of a link, numbered in the order they are sent.
#[derive(Clone)]
pub struct RelaySender {
    relays: Arc<Relays>,
    link: u64,
    peer: u32,
    numbering: Numbering,
    queued: Arc<Queued>,
}

impl std::fmt::Debug for RelaySender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RelaySender")
            .field("link", &self.link)
            .field("peer", &self.peer)
            .finish()
    }
}

impl RelaySender {
    /// Sends `body`, waiting while the link has [`LINK_BYTES`] waiting to be sent or the
    /// node's queue to other nodes is full; false if the node is shutting down its links.
    pub async fn send(&self, body: RelayBody) -> bool {
        self.queued.room().await;
        let to = (self.link, self.peer);
        send(&self.relays, to, (&self.numbering, &self.queued), body).await
    }
}

async fn send(
    relays: &Relays,
    (link, peer): (u64, u32),
    (numbering, queued): (&Numbering, &Arc<Queued>),
    body: RelayBody,
) -> bool {
    // Numbered and queued under one lock, so that numbers go out in order.
    let mut next = numbering.lock().await;
    let msg = RelayMsg {
        link,
        from: relays.own,
        seq: *next,
        body,
    };
    *next += 1;
    let bytes = msg.encode();
    queued.bytes.fetch_add(bytes.len(), Ordering::AcqRel);
    let out = Outgoing {
        node: peer,
        link,
        bytes,
        queued: Some(queued.clone()),
    };
    match relays.out.send(out).await {
        Ok(()) => true,
        Err(mpsc::error::SendError(out)) => {
            out.sent();
            false
        }
    }
}

impl Relays {
    /// The hub of node `own`, and the receiving side of what it sends to other nodes.
    pub fn new(own: u32) -> (Arc<Self>, mpsc::Receiver<Outgoing>) {
        let (out, out_rx) = mpsc::channel(OUT_QUEUE);
        let (accepted, accepted_rx) = mpsc::unbounded_channel();
        let relays = Arc::new(Self {
            own,
            counter: AtomicU64::new(1),
            links: Mutex::default(),
            out,
            accepted,
            accepted_rx: Mutex::new(Some(accepted_rx)),
        });
        (relays, out_rx)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, Entry>> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// This node's number.
    pub fn node(&self) -> u32 {
        self.own
    }

    /// How many links this node has open.
    pub fn links(&self) -> usize {
        self.lock().len()
    }

    /// Opens a link to node `peer` (which learns of it from the first message sent).
    pub fn open(self: &Arc<Self>, peer: u32) -> RelayEnd {
        let counter = self.counter.fetch_add(1, Ordering::Relaxed);
        let link = (u64::from(self.own) << 40) | (counter & ((1 << 40) - 1));
        self.add(link, peer, 0)
    }

    fn add(self: &Arc<Self>, link: u64, peer: u32, expect: u64) -> RelayEnd {
        let (tx, rx) = mpsc::channel(LINK_QUEUE);
        let numbering = Numbering::default();
        let queued = Arc::<Queued>::default();
        self.lock().insert(
            link,
            Entry {
                tx,
                peer,
                expect,
                heard: Instant::now(),
                numbering: numbering.clone(),
                queued: queued.clone(),
            },
        );
        RelayEnd {
            sender: RelaySender {
                relays: self.clone(),
                link,
                peer,
                numbering,
                queued,
            },
            rx: RelayRx {
                rx,
                relays: self.clone(),
                link,
            },
        }
    }

    /// The links other nodes open here, taken once by the session layer.
    pub fn accepted(&self) -> Option<mpsc::UnboundedReceiver<Accepted>> {
        self.accepted_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    /// Takes a message that came from another node.
    pub fn deliver(self: &Arc<Self>, bytes: Bytes) {
        let Some(msg) = RelayMsg::decode(bytes) else {
            tracing::warn!("unreadable relay message, dropped");
            return;
        };
        let RelayMsg {
            link,
            from,
            seq,
            body,
        } = msg;
        let mut links = self.lock();
        let Some(entry) = links.get_mut(&link) else {
            drop(links);
            if let RelayBody::Open { needs_heartbeats } = body
                && seq == 0
            {
                let end = self.add(link, from, 1);
                if self
                    .accepted
                    .send(Accepted {
                        end,
                        needs_heartbeats,
                    })
                    .is_err()
                {
                    self.lock().remove(&link);
                }
            }
            // Anything else is for a link that ended here: the other end learns it from the
            // silence.
            return;
        };
        if seq != entry.expect && !body.is_final() {
            tracing::warn!(
                link,
                seq,
                expected = entry.expect,
                "relay message lost; breaking the link"
            );
            let peer = entry.peer;
            links.remove(&link);
            drop(links);
            self.tell_broken(link, peer);
            return;
        }
        // A final message may carry any number (u64::MAX from a breaking end).
        entry.expect = seq.wrapping_add(1);
        entry.heard = Instant::now();
        if body == RelayBody::Beat {
            return;
        }
        if entry.tx.try_send(body).is_err() {
            tracing::warn!(link, "relayed connection not keeping up; breaking the link");
            let peer = entry.peer;
            links.remove(&link);
            drop(links);
            self.tell_broken(link, peer);
        }
    }

    /// The node of `link`'s other end is not there: the link is broken.
    pub fn unreachable(&self, link: u64) {
        self.lock().remove(&link);
    }

    /// Tells the other end, if the queue has room, that the link broke here.
    fn tell_broken(&self, link: u64, peer: u32) {
        let msg = RelayMsg {
            link,
            from: self.own,
            seq: u64::MAX,
            body: RelayBody::Gone { lost: true },
        };
        let _ = self.out.try_send(Outgoing {
            node: peer,
            link,
            bytes: msg.encode(),
            queued: None,
        });
    }

    /// Sends every link's beat each [`BEAT`] and breaks the links that were silent for
    /// [`SILENCE`]; runs until the hub goes.
    pub async fn upkeep(self: Arc<Self>) {
        let mut tick = tokio::time::interval(BEAT);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let beats = self.check_silence(Instant::now());
            for (to, numbering, queued) in beats {
                // Beats do not wait for room: a busy link is not a silent one.
                if !send(&self, to, (&numbering, &queued), RelayBody::Beat).await {
                    return;
                }
            }
        }
    }

    /// Breaks the links silent since before `now - SILENCE`; returns the others, to beat.
    fn check_silence(&self, now: Instant) -> Vec<((u64, u32), Numbering, Arc<Queued>)> {
        let mut links = self.lock();
        links.retain(|link, entry| {
            let alive = now.duration_since(entry.heard) < SILENCE;
            if !alive {
                tracing::info!(
                    link,
                    peer = entry.peer,
                    "relayed connection silent; breaking the link"
                );
            }
            alive
        });
        links
            .iter()
            .map(|(link, e)| ((*link, e.peer), e.numbering.clone(), e.queued.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests;
