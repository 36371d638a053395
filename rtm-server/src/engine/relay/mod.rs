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

use bytes::Bytes;
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

mod codec;

pub use codec::{RelayBody, RelayMsg};

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
