//! Connections relayed between nodes (`engine/relay`; `docs/architecture.md`, "Resume on another
//! node").
//!
//! On the session's node a relayed connection is a [`Link`] like any other ([`RelayLink`]):
//! the session loop serves it without knowing that its client is attached to another node. On
//! the client's node, [`open`] asks the session's node to take a resume, and [`pipe`] then
//! passes frames both ways until either end finishes.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rtm_proto::{ClientMsg, ErrorCode, RequestId, Response, ServerMsg, WireError};
use tokio::sync::{Notify, mpsc, watch};
use tracing::Instrument;

use super::connection::{self, close_code};
use super::link::{ControlRecv, ControlSend, Inbound, LaneWriter, Link, LinkError};
use crate::engine::Engine;
use crate::engine::relay::{Accepted, RelayBody, RelayEnd, RelayRx, RelaySender, Relays};
use crate::session::Node;

/// How long the client's node waits for the session's node to answer a resume.
const OPEN_TIMEOUT: Duration = Duration::from_secs(5);
/// How long the client's node waits for a write to its client before it gives the relay up
/// (a client that stopped reading): the session's node then keeps the session for a resume.
const WRITE_STALL: Duration = crate::engine::relay::SILENCE;

/// Serves the links other nodes open to this one, each as a connection, until shutdown. Each
/// connection task holds a clone of `done` (see `transport::accept_loop`).
pub(crate) async fn accept_loop<E: Engine>(
    node: Arc<Node<E>>,
    mut accepted: mpsc::UnboundedReceiver<Accepted>,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    loop {
        tokio::select! {
            next = accepted.recv() => {
                let Some(Accepted { end, needs_heartbeats }) = next else { break };
                let link = RelayLink::new(end, needs_heartbeats);
                let span = tracing::debug_span!("relayed");
                let (node, shutdown, done) = (node.clone(), shutdown.clone(), done.clone());
                tokio::spawn(
                    async move {
                        connection::serve(node, link, shutdown).await;
                        drop(done);
                    }
                    .instrument(span),
                );
            }
            _ = shutdown.changed() => break,
        }
    }
}

/// The session's node's side of a relayed connection.
#[derive(Clone)]
pub(crate) struct RelayLink {
    sender: RelaySender,
    rx: Arc<Mutex<Option<RelayRx>>>,
    needs_heartbeats: bool,
    closed: Arc<Closed>,
}

/// Whether the session's node closed the link, and the wake-up of its reader.
#[derive(Default)]
struct Closed {
    done: AtomicBool,
    notify: Notify,
}

impl RelayLink {
    fn new(end: RelayEnd, needs_heartbeats: bool) -> Self {
        Self {
            sender: end.sender,
            rx: Arc::new(Mutex::new(Some(end.rx))),
            needs_heartbeats,
            closed: Arc::default(),
        }
    }

    /// Sends `body` without waiting for it (from a method that cannot wait).
    fn send_later(&self, body: RelayBody) {
        let sender = self.sender.clone();
        tokio::spawn(async move { sender.send(body).await });
    }
}

impl Link for RelayLink {
    type Control = RelayControl;
    type Requests = RelayRequests;
    type Lanes = RelayLanes;

    async fn accept_control(
        &self,
        _max_frame_len: usize,
    ) -> Result<(RelayControl, RelayRequests), LinkError> {
        let rx = self
            .rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| LinkError::Lost("the relay's control channel was taken".into()))?;
        Ok((
            RelayControl(self.sender.clone()),
            RelayRequests {
                rx,
                pending: None,
                closed: self.closed.clone(),
            },
        ))
    }

    fn greeted(&self) -> bool {
        // The client's node answered its hello.
        true
    }

    fn logged_in(&self) {}

    fn lanes(&self, lanes: u8) -> RelayLanes {
        RelayLanes {
            sender: self.sender.clone(),
            announce: Some(lanes),
        }
    }

    fn close(&self, code: u32, reason: &str) {
        // The first close is the one the client sees, as on a direct connection.
        if self.closed.done.swap(true, Ordering::AcqRel) {
            return;
        }
        self.send_later(RelayBody::Close {
            code,
            reason: reason.to_owned(),
        });
        // And the reader ends, as a closed connection's does.
        self.closed.notify.notify_waiters();
    }

    fn needs_heartbeats(&self) -> bool {
        self.needs_heartbeats
    }

    fn transport(&self) -> crate::metrics::Transport {
        crate::metrics::Transport::relay
    }
}

/// Answers, sent to the client's node.
pub(crate) struct RelayControl(RelaySender);

impl ControlSend for RelayControl {
    async fn write(&mut self, frames: &[u8]) -> Result<(), LinkError> {
        if self
            .0
            .send(RelayBody::Control(Bytes::copy_from_slice(frames)))
            .await
        {
            Ok(())
        } else {
            Err(LinkError::Lost("the node is stopping its relays".into()))
        }
    }

    async fn finish(&mut self) {
        self.0.send(RelayBody::Finish).await;
    }
}

/// The client's frames, from the client's node.
pub(crate) struct RelayRequests {
    rx: RelayRx,
    /// A message taken by [`ControlRecv::buffered`] that is not a frame.
    pending: Option<RelayBody>,
    closed: Arc<Closed>,
}

/// What a message from the client's node means for the session loop (`None`: not for it).
fn inbound(body: RelayBody) -> Option<Result<Option<Inbound>, LinkError>> {
    Some(match body {
        RelayBody::Frame(body) => Ok(Some(Inbound::Frame(body))),
        RelayBody::Oversized { len, max, head } => Ok(Some(Inbound::Oversized {
            len: len as usize,
            max: max as usize,
            head,
        })),
        RelayBody::Gone { lost: false } => Ok(None),
        RelayBody::Gone { lost: true } => Err(LinkError::Lost(
            "the client's connection to the other node was lost".into(),
        )),
        _ => return None,
    })
}

impl ControlRecv for RelayRequests {
    async fn next(&mut self) -> Result<Option<Inbound>, LinkError> {
        let closed = || Err(LinkError::Lost("the connection was closed".into()));
        if let Some(result) = self.pending.take().and_then(inbound) {
            return result;
        }
        loop {
            let was_closed = self.closed.notify.notified();
            if self.closed.done.load(Ordering::Acquire) {
                return closed();
            }
            let body = tokio::select! {
                body = self.rx.recv() => body,
                () = was_closed => return closed(),
            };
            let Some(body) = body else {
                return Err(LinkError::Lost(
                    "the relay to the client's node broke".into(),
                ));
            };
            if let Some(result) = inbound(body) {
                return result;
            }
        }
    }

    fn buffered(&mut self) -> Option<Inbound> {
        if self.pending.is_some() {
            return None;
        }
        match self.rx.try_recv() {
            Ok(RelayBody::Frame(body)) => Some(Inbound::Frame(body)),
            Ok(body) => {
                self.pending = Some(body);
                None
            }
            Err(_) => None,
        }
    }

    fn set_max_frame_len(&mut self, _max: usize) {
        // The client's node bounds the frames it reads (with the same configuration).
    }
}

/// Events, sent to the client's node.
pub(crate) struct RelayLanes {
    sender: RelaySender,
    /// The number of lanes, told before the first events.
    announce: Option<u8>,
}

impl RelayLanes {
    async fn send(&mut self, body: RelayBody) -> bool {
        if let Some(lanes) = self.announce.take()
            && !self.sender.send(RelayBody::Lanes(lanes)).await
        {
            return false;
        }
        self.sender.send(body).await
    }
}

impl LaneWriter for RelayLanes {
    async fn write(&mut self, frames: Vec<(u8, Bytes)>) -> Result<(), LinkError> {
        if self.send(RelayBody::Events(frames)).await {
            Ok(())
        } else {
            Err(LinkError::Lost("the node is stopping its relays".into()))
        }
    }

    async fn finish(&mut self) {
        self.send(RelayBody::FinishLanes).await;
    }
}

/// A resume that the session's node took: the link, and what came on it besides the answer.
pub(crate) struct Opened {
    end: RelayEnd,
    early: Vec<RelayBody>,
}

/// Asks node `home` to resume a session for a client of this node: sends it the client's
/// `Resume` frame (`body`, request `id`) and waits for the answer. A refusal, or no answer in
/// time (the node is gone or stuck), is the resume's error, and the client logs in again.
pub(crate) async fn open(
    relays: &Arc<Relays>,
    home: u32,
    (id, body): (RequestId, Bytes),
    needs_heartbeats: bool,
) -> Result<(Response, Opened), WireError> {
    let gone = || {
        WireError::new(
            ErrorCode::NotLogin,
            "the session is no longer on the server; log in again",
        )
    };
    let mut end = relays.open(home);
    if !end.sender.send(RelayBody::Open { needs_heartbeats }).await
        || !end.sender.send(RelayBody::Frame(body)).await
    {
        return Err(gone());
    }
    let mut early = Vec::new();
    let answer = tokio::time::timeout(OPEN_TIMEOUT, async {
        loop {
            match end.rx.recv().await? {
                RelayBody::Control(frames) => return Some(frames),
                RelayBody::Close { .. } | RelayBody::Gone { .. } => return None,
                // Events can come before the answer (the session's writer starts first).
                body => early.push(body),
            }
        }
    })
    .await;
    let Ok(Some(frames)) = answer else {
        // Lost rather than ended: if the session's node took the resume after all, it keeps
        // the session for the client's next one.
        end.sender.send(RelayBody::Gone { lost: true }).await;
        return Err(gone());
    };
    match answer_to(&frames, id) {
        Some(Ok(response @ Response::Resume { .. })) => Ok((response, Opened { end, early })),
        Some(Err(e)) => {
            end.sender.send(RelayBody::Gone { lost: false }).await;
            Err(e)
        }
        _ => {
            tracing::warn!(
                home,
                "the session's node answered a resume with something else"
            );
            end.sender.send(RelayBody::Gone { lost: false }).await;
            Err(gone())
        }
    }
}

/// The answer to request `id` among encoded frames.
fn answer_to(frames: &[u8], id: RequestId) -> Option<Result<Response, WireError>> {
    let mut decoder = rtm_proto::FrameDecoder::new(rtm_proto::limits::MAX_SERVER_FRAME_LEN);
    let mut buf = bytes::BytesMut::from(frames);
    while let Ok(Some(frame)) = decoder.decode(&mut buf) {
        if let Ok(ServerMsg::Response { id: got, result }) = ServerMsg::decode(&frame)
            && got == id
        {
            return Some(result);
        }
    }
    None
}

/// How a relayed connection ended on the client's node.
enum PipeEnd {
    /// The session's node closed it (or its client closed normally).
    Done,
    /// The relay broke, or this node is stopping: the client resumes again.
    Broken(&'static str),
}

/// Passes the client's frames to the session's node and its answers and events back, until
/// either ends or the relay breaks. `max_frame_len`: the client's frame limit once logged in.
pub(crate) async fn pipe<L: Link>(
    link: &L,
    (mut send, mut reader): (L::Control, L::Requests),
    opened: Opened,
    max_frame_len: usize,
    mut shutdown: watch::Receiver<bool>,
) {
    let Opened { mut end, early } = opened;
    link.logged_in();
    reader.set_max_frame_len(max_frame_len);
    let mut lanes: Option<L::Lanes> = None;
    let mut ended = None;
    for body in early {
        if let Some(end) = apply(link, &mut send, &mut lanes, body).await {
            ended = Some(end);
            break;
        }
    }
    let ended = match ended {
        Some(ended) => ended,
        None => loop {
            tokio::select! {
                inbound = reader.next() => {
                    let body = match inbound {
                        Ok(Some(Inbound::Frame(body))) => RelayBody::Frame(body),
                        Ok(Some(Inbound::Oversized { len, max, head })) => RelayBody::Oversized {
                            len: u32::try_from(len).unwrap_or(u32::MAX),
                            max: u32::try_from(max).unwrap_or(u32::MAX),
                            head,
                        },
                        Ok(None) | Err(LinkError::Closed) => {
                            end.sender.send(RelayBody::Gone { lost: false }).await;
                            link.close(close_code::NORMAL, "");
                            break PipeEnd::Done;
                        }
                        Err(e) => {
                            tracing::debug!("relayed connection lost: {e}");
                            end.sender.send(RelayBody::Gone { lost: true }).await;
                            break PipeEnd::Done;
                        }
                    };
                    if !end.sender.send(body).await {
                        break PipeEnd::Broken("this node is stopping");
                    }
                }
                body = end.rx.recv() => {
                    let Some(body) = body else {
                        break PipeEnd::Broken("the session's node is out of reach");
                    };
                    if let Some(ended) = apply(link, &mut send, &mut lanes, body).await {
                        break ended;
                    }
                }
                _ = shutdown.changed() => {
                    end.sender.send(RelayBody::Gone { lost: true }).await;
                    break PipeEnd::Broken("this node is stopping");
                }
            }
        },
    };
    if let PipeEnd::Broken(why) = ended {
        tracing::debug!("relayed connection ends: {why}");
        // Not an end of the session: the client resumes it, here or elsewhere.
        link.close(close_code::RELAY_BROKEN, why);
    }
}

/// Does what the session's node asked; `Some` once the connection is over.
async fn apply<L: Link>(
    link: &L,
    send: &mut L::Control,
    lanes: &mut Option<L::Lanes>,
    body: RelayBody,
) -> Option<PipeEnd> {
    match body {
        RelayBody::Control(frames) => {
            if let Some(end) = stalled(tokio::time::timeout(WRITE_STALL, send.write(&frames)).await)
            {
                return Some(end);
            }
        }
        RelayBody::Finish => {
            let _ = tokio::time::timeout(WRITE_STALL, send.finish()).await;
        }
        RelayBody::Lanes(n) => *lanes = Some(link.lanes(n)),
        RelayBody::Events(frames) => {
            let Some(lanes) = lanes.as_mut() else {
                return Some(PipeEnd::Broken("events before lanes"));
            };
            if let Some(end) = stalled(tokio::time::timeout(WRITE_STALL, lanes.write(frames)).await)
            {
                return Some(end);
            }
        }
        RelayBody::FinishLanes => {
            if let Some(lanes) = lanes.as_mut() {
                let _ = tokio::time::timeout(WRITE_STALL, lanes.finish()).await;
            }
        }
        RelayBody::Close { code, reason } => {
            link.close(code, &reason);
            return Some(PipeEnd::Done);
        }
        RelayBody::Gone { .. } => {
            return Some(PipeEnd::Broken("the session's node broke the relay"));
        }
        RelayBody::Open { .. }
        | RelayBody::Frame(_)
        | RelayBody::Oversized { .. }
        | RelayBody::Beat => {}
    }
    None
}

/// Whether `msg` is a resume of a session of another node that this node can relay: the
/// request's id and that node's number.
pub(crate) fn home_of(msg: &ClientMsg, relays: &Relays) -> Option<(RequestId, u32)> {
    let ClientMsg::Request {
        id,
        request: rtm_proto::Request::Resume(resume),
    } = msg
    else {
        return None;
    };
    let home = crate::engine::SessionId(resume.ticket.session_id).node();
    (home != relays.node() && home != 0).then_some((*id, home))
}

/// How a write to the client went: `Some` ends the relay (the write failed, or the client has
/// not read for [`WRITE_STALL`]).
fn stalled(written: Result<Result<(), LinkError>, tokio::time::error::Elapsed>) -> Option<PipeEnd> {
    match written {
        Ok(Ok(())) => None,
        Ok(Err(e)) => {
            tracing::debug!("relayed connection lost: {e}");
            Some(PipeEnd::Broken("the client's connection failed"))
        }
        Err(_) => Some(PipeEnd::Broken("the client does not read")),
    }
}
