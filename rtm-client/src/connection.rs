//! One connection to the server, whatever its transport, and the tasks that serve it.
//!
//! The client handle sends [`Command`]s over an unbounded channel, at the moment a call is made
//! (so calls are sent in the order they were made, however their futures are awaited). The
//! driver task writes them on the control channel, batching whatever is queued into one write
//! (consecutive publishes to one channel as one `PublishBatch` request, `batch.rs`), and keeps
//! each reply sender in a table keyed by request id. A second task reads the control
//! channel and completes those replies; one more task per delivery lane decodes events and
//! hands them to the listeners, counting them for the resume (`docs/protocol.md` §5.6,
//! `lanes.rs`). Reading and writing are separate tasks so that a burst of requests can never
//! deadlock against a burst of responses.
//!
//! Over QUIC and WebTransport the control channel is a bidirectional stream and each lane a
//! stream of its own. Over WebSocket one socket carries everything: its reader completes
//! replies itself and passes each event to its lane's task through a channel (so that a lane
//! recovering missed messages, which waits for replies, never blocks the reading).
//!
//! The driver also acknowledges received events, and over WebSocket and WebTransport sends the
//! protocol's heartbeat (native QUIC uses QUIC's keep-alive, `transport.rs`). When the
//! connection ends, the driver's [`Outcome`] tells the session supervisor (`session.rs`)
//! whether to reconnect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use rtm_proto::frame::encode_frame_into;
use rtm_proto::limits::MAX_LANES;
use rtm_proto::{
    ClientMsg, CloseReason, ErrorCode, Hello, PROTOCOL_VERSION, Request, RequestId, Response,
    RtmError, ServerMsg, WireError,
};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};
use web_transport_quinn::{SessionError, WebTransportError};

use crate::batch::{Batcher, Waiting, Writer};
use crate::config::{RtmConfig, Transport};
use crate::event::{LinkOperation, LinkStateReason, Listeners};
use crate::parts::Parts;
use crate::transport::{FrameReader, QuicSocket, Read, client_config, oversized};
use crate::{lanes, websocket};

/// The answer to one request, as the server sent it.
pub(crate) type Reply = oneshot::Sender<Result<Response, WireError>>;

/// A request from the handle to the connection task.
pub(crate) struct Command {
    pub(crate) request: Request,
    pub(crate) reply: Reply,
}

/// The client acknowledges received events at least this often (in events of a lane), and at
/// every heartbeat interval when some arrived, so that the server can forget them. Each Ack is
/// a packet the server handles; between two, the server keeps a 32-byte handle per event (the
/// event's bytes are shared with every other subscriber). 512 keeps both small next to the
/// events themselves and well inside the outbound queue's 4 096.
pub(crate) const ACK_EVERY: u64 = 512;
/// The client also acknowledges every this many bytes of events: the server holds what is not
/// acknowledged against the session's byte bound (`max_session_bytes`, at least 4 MiB).
pub(crate) const ACK_BYTES: u64 = 256 * 1024;
/// How long closing a WebSocket may take.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// How a connection ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Outcome {
    /// The user closed it (logout, or the client was dropped).
    Closed,
    /// The server ended the session for good: no reconnect.
    Rejected {
        reason: LinkStateReason,
        text: String,
    },
    /// The connection was lost: reconnect and resume.
    Lost {
        operation: LinkOperation,
        reason: LinkStateReason,
        text: String,
    },
}

/// How the transport said the connection ended.
#[derive(Clone, Debug)]
pub(crate) enum Ended {
    /// Closed with one of the protocol's close codes (`docs/protocol.md` §1.3).
    Code(u64, String),
    /// Nothing heard from the server for the heartbeat interval + 10 s.
    TimedOut,
    /// Anything else.
    Other(String),
}

/// The handle's side of a live connection.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    /// The QUIC session, to close it at once; `None` for a WebSocket (its driver closes it).
    quic: Option<Arc<web_transport_quinn::Session>>,
    shared: Arc<Shared>,
    /// Opens the delivery lanes to the listeners (see [`Connection::deliver_events`]).
    deliver: watch::Sender<bool>,
}

#[derive(Debug, Default)]
pub(crate) struct Shared {
    /// The user is closing the connection (logout): its end is not a failure.
    closing: AtomicBool,
    /// Tells the driver to close the connection (a WebSocket needs its close frame sent).
    close: Notify,
    /// Why the server ended the session, when it said so in an event.
    pub(crate) closed_by_server: Mutex<Option<CloseReason>>,
    /// How a WebSocket ended, as its reader saw it.
    pub(crate) ws_ended: Mutex<Option<Ended>>,
    /// Tells a WebSocket's reader to stop (the driver has given up on the connection).
    pub(crate) stop_reading: Notify,
    /// Delivery-lane frames of the session handled so far, per lane.
    pub(crate) received: [AtomicU64; MAX_LANES],
    /// Bytes of delivery-lane frames handled on this connection (for [`ACK_BYTES`]).
    pub(crate) received_bytes: AtomicU64,
    /// Events in parts, waiting for their last frame; the session's, carried over a resume.
    pub(crate) parts: Parts,
    /// Wakes the driver to send an acknowledgement.
    pub(crate) ack: Notify,
    /// Opens sealed message payloads, when the client encrypts.
    pub(crate) cipher: Option<crate::crypto::Cipher>,
    /// Sends requests from the event readers (to recover lost messages from the history);
    /// weak, so that it does not keep the connection alive.
    pub(crate) requests: std::sync::OnceLock<mpsc::WeakUnboundedSender<Command>>,
}

pub(crate) type Pending = Arc<Mutex<HashMap<u32, Waiting>>>;

/// Commands written in one batch, at most.
const WRITE_BATCH: usize = 64;

/// A connection that has said hello and had its first request (login or resume) answered.
pub(crate) struct Opened {
    pub(crate) connection: Connection,
    /// The answer to the first request.
    pub(crate) response: Response,
    /// Completes when the connection ends.
    pub(crate) ended: JoinHandle<Outcome>,
    /// The session's count of received frames, live.
    pub(crate) received: ReceivedCounter,
}

/// Reads a connection's counts of received delivery-stream frames.
#[derive(Clone, Debug)]
pub(crate) struct ReceivedCounter(Arc<Shared>);

impl ReceivedCounter {
    /// Per lane, without trailing zeros (the protocol's form).
    pub(crate) fn get(&self) -> Vec<u64> {
        self.0.counts()
    }

    /// What a resume of this session carries over: the counts, and the events in parts.
    pub(crate) fn carry(&self) -> Carried {
        Carried {
            received: self.get(),
            parts: self.0.parts.clone(),
        }
    }
}

/// What a connection takes over from the session's previous one: nothing for a new login.
#[derive(Debug, Default)]
pub(crate) struct Carried {
    /// Delivery-stream frames received per lane.
    pub(crate) received: Vec<u64>,
    /// Events whose leading parts arrived and whose last frame had not.
    pub(crate) parts: Parts,
}

impl Shared {
    fn counts(&self) -> Vec<u64> {
        let mut counts: Vec<u64> = self
            .received
            .iter()
            .map(|c| c.load(Ordering::Acquire))
            .collect();
        while counts.last() == Some(&0) {
            counts.pop();
        }
        counts
    }
}

/// Why opening a connection failed.
#[derive(Debug)]
pub(crate) enum OpenError {
    /// The server could not be reached or the connection broke: worth retrying.
    Unreachable(RtmError),
    /// The server answered the first request with an error.
    Refused(RtmError),
}

impl OpenError {
    pub(crate) fn into_error(self) -> RtmError {
        match self {
            Self::Unreachable(e) | Self::Refused(e) => e,
        }
    }
}

impl Connection {
    /// Connects, says hello and sends `first` (a login or a resume). On an answer that is not an
    /// error, the connection's tasks are running, counting received frames from
    /// `carried.received`.
    pub(crate) async fn open(
        config: &RtmConfig,
        operation: &'static str,
        first: Request,
        listeners: Listeners,
        carried: Carried,
    ) -> Result<Opened, OpenError> {
        let fail = |code, reason: String| RtmError::new(code, operation, reason);
        let unreachable =
            |reason: String| OpenError::Unreachable(fail(ErrorCode::NotConnected, reason));
        let mut out = BytesMut::new();
        let hello = Hello {
            version: PROTOCOL_VERSION,
            agent: concat!("rtm-client/", env!("CARGO_PKG_VERSION")).into(),
        };
        encode_frame_into(&ClientMsg::Hello(hello), &mut out);
        encode_frame_into(
            &ClientMsg::Request {
                id: RequestId(0),
                request: first,
            },
            &mut out,
        );
        let handshake = async {
            let (mut wire, mut reader) = Wire::connect(config).await.map_err(unreachable)?;
            let lost = |e: &dyn std::fmt::Display| unreachable(e.to_string());
            wire.send(&out).await.map_err(|e| lost(&e))?;
            // Over WebSocket, events may come before the answer: kept for the lanes.
            let mut early = Vec::new();
            let mut welcomed = None;
            loop {
                let body = reader
                    .next()
                    .await
                    .map_err(|e| lost(&e))?
                    .ok_or_else(|| lost(&"the server closed the control channel"))?
                    .into_frame()
                    .map_err(|e| lost(&e))?;
                let msg = ServerMsg::decode(&body).map_err(|e| lost(&e))?;
                match msg {
                    ServerMsg::Welcome(w) => {
                        if !(rtm_proto::MIN_PROTOCOL_VERSION..=PROTOCOL_VERSION)
                            .contains(&w.version)
                        {
                            return Err(lost(&format!(
                                "the server speaks protocol version {}, this client {} to \
                                 {PROTOCOL_VERSION}",
                                w.version,
                                rtm_proto::MIN_PROTOCOL_VERSION
                            )));
                        }
                        welcomed = Some(w.version);
                    }
                    ServerMsg::Error(e) => return Err(OpenError::Refused(fail(e.code, e.reason))),
                    ServerMsg::Response {
                        id: RequestId(0),
                        result,
                    } if welcomed.is_some() => {
                        let version = welcomed.unwrap_or(rtm_proto::MIN_PROTOCOL_VERSION);
                        return match result {
                            Ok(response) => Ok((wire, reader, early, response, version)),
                            Err(e) => Err(OpenError::Refused(fail(e.code, e.reason))),
                        };
                    }
                    ServerMsg::Lane { .. } | ServerMsg::Event(_)
                        if welcomed.is_some() && matches!(reader, ControlReader::Ws(_)) =>
                    {
                        early.push(body);
                    }
                    other => return Err(lost(&format!("unexpected frame {other:?}"))),
                }
            }
        };
        let (wire, reader, early, response, version) =
            match timeout(config.request_timeout, handshake).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(OpenError::Unreachable(fail(
                        ErrorCode::LoginTimeout,
                        format!("no answer from {}", config.endpoint.addr),
                    )));
                }
            };

        let Carried { received, parts } = carried;
        // After a resume the count goes on from the server's next frame (frames it no longer
        // held are skipped, and with them any event in parts they belonged to).
        let received = match &response {
            Response::Resume { next_frame, .. } => {
                parts.forget(
                    next_frame
                        .iter()
                        .enumerate()
                        .filter(|&(lane, &next)| next > received.get(lane).copied().unwrap_or(0))
                        .map(|(lane, _)| lane),
                );
                next_frame
            }
            _ => &received,
        };
        let shared = Arc::new(Shared {
            // Checked when the client was made: an error here cannot happen.
            cipher: crate::crypto::Cipher::from_config(config).ok().flatten(),
            parts,
            ..Shared::default()
        });
        for (count, &value) in shared.received.iter().zip(received) {
            count.store(value, Ordering::Release);
        }
        let pending: Pending = Arc::default();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        let _ = shared.requests.set(commands.downgrade());
        let (deliver, deliver_rx) = watch::channel(false);
        let heartbeat = Duration::from_secs(config.heartbeat_interval.clamp(5, 1800).into());
        let quic = match &wire {
            Wire::Quic { session, .. } => Some(session.clone()),
            Wire::Ws(_) => None,
        };
        let events = EventGate {
            listeners,
            open: deliver_rx,
        };
        let reading = match reader {
            ControlReader::Quic(reader) => {
                tokio::spawn(read_responses(reader, pending.clone()));
                None
            }
            ControlReader::Ws(stream) => Some(tokio::spawn(websocket::read_socket(
                stream,
                early,
                pending.clone(),
                shared.clone(),
                EventGate {
                    listeners: events.listeners.clone(),
                    open: events.open.clone(),
                },
                heartbeat,
            ))),
        };
        // Publish batches must fit in the server's frames, and the server must know them.
        let batcher = Batcher::new(
            version,
            match &response {
                Response::Login { limits, .. } | Response::Resume { limits, .. } => {
                    limits.max_frame_len as usize
                }
                _ => 0,
            },
        );
        let ended = tokio::spawn(drive(
            wire,
            reading,
            commands_rx,
            pending,
            shared.clone(),
            events,
            (heartbeat, batcher),
        ));
        Ok(Opened {
            connection: Self {
                commands,
                quic,
                shared: shared.clone(),
                deliver,
            },
            response,
            ended,
            received: ReceivedCounter(shared),
        })
    }

    /// Starts handing the session's events to the listeners. Until then the delivery lanes
    /// wait in the transport's buffers, so that nothing of a new or resumed connection reaches
    /// the application before the link-state event that says it is connected.
    pub(crate) fn deliver_events(&self) {
        self.deliver.send_replace(true);
    }

    /// Closes the connection on the user's behalf (after a logout): no failure is reported.
    pub(crate) fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
        match &self.quic {
            Some(session) => session.close(0, b"logout"),
            None => self.shared.close.notify_one(),
        }
    }

    /// Whether the connection task is still running.
    pub(crate) fn is_alive(&self) -> bool {
        !self.commands.is_closed()
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        // The last handle is gone: end the session now rather than at the idle timeout.
        self.close();
    }
}

/// Where a connection's events go, and the gate that holds them until the link state says
/// connected.
pub(crate) struct EventGate {
    pub(crate) listeners: Listeners,
    pub(crate) open: watch::Receiver<bool>,
}

/// The writing side of a connection.
enum Wire {
    /// Native QUIC or WebTransport: the session and its control stream.
    Quic {
        session: Arc<web_transport_quinn::Session>,
        send: web_transport_quinn::SendStream,
        web: bool,
    },
    /// The sending half of a WebSocket.
    Ws(websocket::Sink),
}

/// The reading side of the control channel.
enum ControlReader {
    Quic(FrameReader),
    Ws(websocket::Stream),
}

impl ControlReader {
    /// The next frame; `Ok(None)` at the end.
    async fn next(&mut self) -> Result<Option<Read>, String> {
        match self {
            Self::Quic(reader) => reader.next().await.map_err(|e| e.to_string()),
            Self::Ws(stream) => match websocket::next(stream).await {
                websocket::Received::Frame(read) => Ok(Some(read)),
                websocket::Received::Closed(None) => Ok(None),
                websocket::Received::Closed(Some((code, reason))) => Err(format!(
                    "the server closed the WebSocket ({code}): {reason}"
                )),
                websocket::Received::Failed(e) => Err(e),
            },
        }
    }
}

impl Wire {
    /// Connects as the configuration's transport says and opens the control channel.
    async fn connect(config: &RtmConfig) -> Result<(Self, ControlReader), String> {
        let addr = config.endpoint.addr;
        let web = match config.transport {
            Transport::Quic => false,
            Transport::WebTransport => true,
            Transport::WebSocket { addr, tls } => {
                let (sink, stream) = websocket::connect(config, addr, tls).await?;
                return Ok((Self::Ws(sink), ControlReader::Ws(stream)));
            }
        };
        let socket = match &config.socket {
            Some(socket) => socket.clone(),
            None => QuicSocket::bind(addr).map_err(|e| format!("binding a UDP socket: {e}"))?,
        };
        let client_config = client_config(config, web).map_err(|e| format!("TLS setup: {e}"))?;
        let conn = socket
            .endpoint()
            .connect_with(client_config, addr, &config.endpoint.server_name)
            .map_err(|e| format!("connecting to {addr}: {e}"))?
            .await
            .map_err(|e| format!("connecting to {addr}: {e}"))?;
        let session = if web {
            let url = format!(
                "https://{}:{}{}",
                config.endpoint.server_name,
                addr.port(),
                websocket::PATH
            );
            let url = url::Url::parse(&url).map_err(|e| format!("{url}: {e}"))?;
            web_transport_quinn::Session::connect(conn, url)
                .await
                .map_err(|e| format!("WebTransport session with {addr}: {e}"))?
        } else {
            web_transport_quinn::Session::raw(conn)
        };
        let (send, recv) = session.open_bi().await.map_err(|e| e.to_string())?;
        Ok((
            Self::Quic {
                session: Arc::new(session),
                send,
                web,
            },
            ControlReader::Quic(FrameReader::new(recv)),
        ))
    }

    /// Writes encoded frames.
    async fn send(&mut self, frames: &[u8]) -> Result<(), String> {
        match self {
            Self::Quic { send, .. } => send.write_all(frames).await.map_err(|e| e.to_string()),
            Self::Ws(sink) => websocket::send_frames(sink, frames)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Whether the server needs the protocol's heartbeat (it has no transport keep-alive it
    /// can rely on: WebSocket and WebTransport, `docs/protocol.md` §5.6).
    fn needs_heartbeats(&self) -> bool {
        match self {
            Self::Quic { web, .. } => *web,
            Self::Ws(_) => true,
        }
    }
}

/// Writes commands, heartbeats and acknowledgements, and accepts QUIC delivery streams, until
/// the connection ends; then says how it ended.
async fn drive(
    mut wire: Wire,
    mut reading: Option<JoinHandle<()>>,
    mut commands: mpsc::UnboundedReceiver<Command>,
    pending: Pending,
    shared: Arc<Shared>,
    events: EventGate,
    (heartbeat, mut batcher): (Duration, Batcher),
) -> Outcome {
    let EventGate {
        listeners,
        open: mut deliver,
    } = events;
    let quic = match &wire {
        Wire::Quic { session, .. } => Some(session.clone()),
        Wire::Ws(_) => None,
    };
    let heartbeats = wire.needs_heartbeats();
    let mut next_id: u32 = 1;
    let mut out = BytesMut::new();
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    let mut readers: Vec<JoinHandle<()>> = Vec::new();
    let mut ack_tick = tokio::time::interval_at(Instant::now() + heartbeat, heartbeat);
    ack_tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut acked = shared.counts();
    let mut delivering = false;
    loop {
        tokio::select! {
            changed = deliver.changed(), if !delivering => {
                // A dropped sender (the connection handle is gone) opens the gate too: the
                // connection is closing and its streams must be drained to end.
                delivering = changed.is_err() || *deliver.borrow();
            }
            n = commands.recv_many(&mut batch, WRITE_BATCH) => {
                if n == 0 {
                    break;
                }
                let mut table = pending.lock().unwrap_or_else(PoisonError::into_inner);
                let mut writer = Writer { table: &mut table, next_id: &mut next_id, out: &mut out };
                for command in batch.drain(..) {
                    batcher.push(command, &mut writer);
                }
                batcher.flush(&mut writer);
            }
            _ = ack_tick.tick() => {
                let received = shared.counts();
                if heartbeats {
                    // docs/protocol.md §5.6: the heartbeat carries the acknowledgement.
                    acked = received.clone();
                    let id = next_id;
                    next_id = next_id.wrapping_add(1).max(1);
                    // Its Pong completes a reply nobody waits for.
                    let (reply, _) = oneshot::channel();
                    pending
                        .lock()
                        .unwrap_or_else(PoisonError::into_inner)
                        .insert(id, Waiting::One(reply));
                    let request = Request::Heartbeat { received };
                    encode_frame_into(&ClientMsg::Request { id: RequestId(id), request }, &mut out);
                } else if received != acked {
                    acked = received.clone();
                    encode_frame_into(&ClientMsg::Ack { received }, &mut out);
                }
            }
            () = shared.ack.notified() => {
                let received = shared.counts();
                if received != acked {
                    acked = received.clone();
                    encode_frame_into(&ClientMsg::Ack { received }, &mut out);
                }
            }
            () = shared.close.notified() => break,
            stream = async { quic.as_ref()?.accept_uni().await.ok() }, if delivering && quic.is_some() => {
                match stream {
                    Some(recv) => readers.push(tokio::spawn(lanes::read_stream(
                        recv,
                        listeners.clone(),
                        shared.clone(),
                    ))),
                    None => break,
                }
            }
            _ = async { reading.as_mut()?.await.ok() }, if reading.is_some() => {
                reading = None;
                break;
            }
        }
        if !out.is_empty() {
            if wire.send(&out).await.is_err() {
                break;
            }
            out.clear();
        }
    }
    // Fail the calls still waiting: dropping their reply senders tells them the connection is
    // gone.
    pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    let ended = match wire {
        Wire::Quic { session, .. } => {
            let ended = quic_ended(&session);
            session.close(0, b"");
            ended
        }
        Wire::Ws(mut sink) => {
            if shared.closing.load(Ordering::Acquire) {
                // A logout: status 1000 ends the session on the server.
                let _ = timeout(CLOSE_GRACE, websocket::close(&mut sink, 1000, "")).await;
            }
            // Otherwise the connection is dropped without a close frame: to the server, as to
            // us, it was lost, and the session waits for a resume.
            drop(sink);
            if let Some(mut reading) = reading {
                // The server answers a close frame, or the socket ends; the reader then ends.
                if timeout(CLOSE_GRACE, &mut reading).await.is_err() {
                    shared.stop_reading.notify_one();
                    // The lanes finish what they were given: their counts are what a resume
                    // starts from.
                    let _ = reading.await;
                }
            }
            shared
                .ws_ended
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .clone()
        }
    };
    if shared.closing.load(Ordering::Acquire) {
        return Outcome::Closed;
    }
    let told = *shared
        .closed_by_server
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    // The event readers end with the connection; the count they leave is what a resume starts
    // from.
    for reader in readers {
        let _ = reader.await;
    }
    let outcome = outcome(told, ended);
    tracing::debug!(?outcome, "connection ended");
    outcome
}

/// How a QUIC (or WebTransport) session ended: the QUIC connection's own reason first (a
/// WebTransport session reports an idle timeout as a local close), then the session's.
fn quic_ended(session: &web_transport_quinn::Session) -> Option<Ended> {
    if let Some(quinn::ConnectionError::TimedOut) = (**session).close_reason() {
        return Some(Ended::TimedOut);
    }
    session.close_reason().map(|e| session_ended(&e))
}

fn session_ended(e: &SessionError) -> Ended {
    match e {
        SessionError::ConnectionError(quinn::ConnectionError::ApplicationClosed(c)) => Ended::Code(
            c.error_code.into_inner(),
            String::from_utf8_lossy(&c.reason).into_owned(),
        ),
        SessionError::WebTransportError(WebTransportError::Closed(code, reason)) => {
            Ended::Code(u64::from(*code), reason.clone())
        }
        SessionError::ConnectionError(quinn::ConnectionError::TimedOut) => Ended::TimedOut,
        other => Ended::Other(other.to_string()),
    }
}

/// Classifies the end of a connection.
fn outcome(told: Option<CloseReason>, ended: Option<Ended>) -> Outcome {
    let app_code = match &ended {
        Some(Ended::Code(code, _)) => Some(*code),
        _ => None,
    };
    let reason = told.or_else(|| {
        [
            CloseReason::SameUidLogin,
            CloseReason::SlowConsumer,
            CloseReason::ServerShutdown,
            CloseReason::TokenExpired,
            CloseReason::Kicked,
        ]
        .into_iter()
        .find(|r| Some(u64::from(r.close_code())) == app_code)
    });
    let rejected = |reason, text: &str| Outcome::Rejected {
        reason,
        text: text.to_owned(),
    };
    match reason {
        Some(CloseReason::SameUidLogin) => rejected(
            LinkStateReason::SameUidLogin,
            "The same uid login on another device",
        ),
        Some(CloseReason::TokenExpired) => {
            rejected(LinkStateReason::TokenExpired, "the login token expired")
        }
        Some(CloseReason::SlowConsumer) => rejected(
            LinkStateReason::KickedOutByServer,
            "Kicked out by server: the client did not keep up with its events",
        ),
        Some(CloseReason::Kicked) => rejected(
            LinkStateReason::KickedOutByServer,
            "Kicked out by server: an operator disconnected this user",
        ),
        // The server went away; another (or the same, restarted) one may take the client back.
        Some(CloseReason::ServerShutdown) => Outcome::Lost {
            operation: LinkOperation::ServerReject,
            reason: LinkStateReason::ConnectionError,
            text: "the server is shutting down".into(),
        },
        None => match ended {
            Some(Ended::TimedOut) => Outcome::Lost {
                operation: LinkOperation::HeartbeatTimeout,
                reason: LinkStateReason::KeepAliveTimeout,
                text: "nothing heard from the server for the heartbeat interval + 10 s".into(),
            },
            other => Outcome::Lost {
                operation: LinkOperation::ServerTimeout,
                reason: LinkStateReason::ConnectionError,
                text: match other {
                    Some(Ended::Code(code, reason)) => {
                        format!("closed by the server (code {code:#x}): {reason}")
                    }
                    Some(Ended::Other(text)) => text,
                    _ => "the connection closed".to_owned(),
                },
            },
        },
    }
}

/// Completes pending calls with the server's answers.
async fn read_responses(mut reader: FrameReader, pending: Pending) {
    while let Ok(Some(read)) = reader.next().await {
        answer(read, &pending);
    }
}

/// Completes the pending call a control frame answers.
pub(crate) fn answer(read: Read, pending: &Pending) {
    let reply_to = |id: RequestId| {
        pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id.0)
    };
    {
        let body = match read {
            Read::Frame(body) => body,
            // docs/protocol.md §2.2: the call whose answer cannot be read fails; the others go on.
            Read::Oversized { len, head } => {
                tracing::warn!("{}", oversized(len));
                if let Some(waiting) = ServerMsg::peek_response_id(&head).and_then(reply_to) {
                    let error = WireError::new(
                        ErrorCode::ChannelMessageLengthExceedLimitation,
                        oversized(len),
                    );
                    waiting.complete(Err(error));
                }
                return;
            }
        };
        match ServerMsg::decode(&body) {
            Ok(ServerMsg::Response { id, result }) => {
                if let Some(waiting) = reply_to(id) {
                    waiting.complete(result);
                }
            }
            Ok(ServerMsg::Error(e)) => tracing::warn!("server error: {} ({})", e.reason, e.code),
            Ok(other) => tracing::debug!("ignoring {other:?} on the control stream"),
            Err(e) => {
                tracing::warn!("undecodable frame from the server: {e}");
                if let Some(waiting) = ServerMsg::peek_response_id(&body).and_then(reply_to) {
                    let error = WireError::new(
                        ErrorCode::InvalidParameter,
                        format!("the server's answer could not be decoded: {e}"),
                    );
                    waiting.complete(Err(error));
                }
            }
        }
    }
}
