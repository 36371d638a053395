//! One QUIC connection to the server, and the tasks that serve it.
//!
//! The client handle sends [`Command`]s over an unbounded channel, at the moment a call is made
//! (so calls are sent in the order they were made, however their futures are awaited). The
//! driver task writes them on the control stream, batching whatever is queued into one write,
//! and keeps each reply sender in a table keyed by request id. A second task reads the control
//! stream and completes those replies; one more task per delivery stream decodes events and
//! hands them to the listeners, counting them for the resume (`docs/protocol.md` §5.6). Reading
//! and writing are separate tasks so that a burst of requests can never deadlock against a
//! burst of responses.
//!
//! The driver also acknowledges received events; the heartbeat is QUIC's keep-alive
//! (`transport.rs`). When the connection ends, the driver's [`Outcome`] tells the session
//! supervisor (`session.rs`) whether to reconnect.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use bytes::BytesMut;
use rtm_proto::frame::encode_frame_into;
use rtm_proto::limits::MAX_LANES;
use rtm_proto::{
    ChannelType, ClientMsg, CloseReason, ErrorCode, Event, GetMessagesRequest, Hello, LostMessages,
    MessageEvent, PROTOCOL_VERSION, Request, RequestId, Response, RtmError, ServerMsg, WireError,
};
use tokio::sync::{Notify, mpsc, oneshot, watch};
use tokio::task::JoinHandle;
use tokio::time::{Instant, timeout};

use crate::config::RtmConfig;
use crate::event::{LinkOperation, LinkStateReason, Listeners, RtmEvent};
use crate::parts::Parts;
use crate::transport::{FrameReader, Read, Transport, client_config, oversized};

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
const ACK_EVERY: u64 = 512;
/// The client also acknowledges every this many bytes of events: the server holds what is not
/// acknowledged against the session's byte bound (`max_session_bytes`, at least 4 MiB).
const ACK_BYTES: u64 = 256 * 1024;

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

/// The handle's side of a live connection.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    conn: quinn::Connection,
    shared: Arc<Shared>,
    /// Opens the delivery streams to the listeners (see [`Connection::deliver_events`]).
    deliver: watch::Sender<bool>,
}

#[derive(Debug, Default)]
struct Shared {
    /// The user is closing the connection (logout): its end is not a failure.
    closing: AtomicBool,
    /// Why the server ended the session, when it said so in an event.
    closed_by_server: Mutex<Option<CloseReason>>,
    /// Delivery-stream frames of the session handled so far, per lane.
    received: [AtomicU64; MAX_LANES],
    /// Bytes of delivery-stream frames handled on this connection (for [`ACK_BYTES`]).
    received_bytes: AtomicU64,
    /// Events in parts, waiting for their last frame; the session's, carried over a resume.
    parts: Parts,
    /// Wakes the driver to send an acknowledgement.
    ack: Notify,
    /// Opens sealed message payloads, when the client encrypts.
    cipher: Option<crate::crypto::Cipher>,
    /// Sends requests from the event readers (to recover lost messages from the history);
    /// weak, so that it does not keep the connection alive.
    requests: std::sync::OnceLock<mpsc::WeakUnboundedSender<Command>>,
}

type Pending = Arc<Mutex<HashMap<u32, Reply>>>;

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
        let addr = config.endpoint.addr;
        let transport = match &config.transport {
            Some(t) => t.clone(),
            None => Transport::bind(addr)
                .map_err(|e| unreachable(format!("binding a UDP socket: {e}")))?,
        };
        let client_config = client_config(config).map_err(|e| {
            OpenError::Refused(fail(ErrorCode::InvalidParameter, format!("TLS setup: {e}")))
        })?;
        let connecting = transport
            .endpoint()
            .connect_with(client_config, addr, &config.endpoint.server_name)
            .map_err(|e| unreachable(format!("connecting to {addr}: {e}")))?;
        let handshake = async {
            let conn = connecting
                .await
                .map_err(|e| unreachable(format!("connecting to {addr}: {e}")))?;
            let lost = |e: &dyn std::fmt::Display| unreachable(e.to_string());
            let (mut send, recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
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
            send.write_all(&out).await.map_err(|e| lost(&e))?;
            let mut reader = FrameReader::new(recv);
            let mut welcomed = false;
            loop {
                let body = reader
                    .next()
                    .await
                    .map_err(|e| lost(&e))?
                    .ok_or_else(|| lost(&"the server closed the control stream"))?
                    .into_frame()
                    .map_err(|e| lost(&e))?;
                let msg = ServerMsg::decode(&body).map_err(|e| lost(&e))?;
                match msg {
                    ServerMsg::Welcome(_) => welcomed = true,
                    ServerMsg::Error(e) => return Err(OpenError::Refused(fail(e.code, e.reason))),
                    ServerMsg::Response {
                        id: RequestId(0),
                        result,
                    } if welcomed => {
                        return match result {
                            Ok(response) => Ok((conn, send, reader, response)),
                            Err(e) => Err(OpenError::Refused(fail(e.code, e.reason))),
                        };
                    }
                    other => return Err(lost(&format!("unexpected frame {other:?}"))),
                }
            }
        };
        let (conn, send, reader, response) = match timeout(config.request_timeout, handshake).await
        {
            Ok(result) => result?,
            Err(_) => {
                return Err(OpenError::Unreachable(fail(
                    ErrorCode::LoginTimeout,
                    format!("no answer from {addr}"),
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
        tokio::spawn(read_responses(reader, pending.clone()));
        let heartbeat = Duration::from_secs(config.heartbeat_interval.clamp(5, 1800).into());
        let ended = tokio::spawn(drive(
            conn.clone(),
            send,
            commands_rx,
            pending,
            shared.clone(),
            EventGate {
                listeners,
                open: deliver_rx,
            },
            heartbeat,
        ));
        Ok(Opened {
            connection: Self {
                commands,
                conn,
                shared: shared.clone(),
                deliver,
            },
            response,
            ended,
            received: ReceivedCounter(shared),
        })
    }

    /// Starts handing the session's events to the listeners. Until then the delivery streams
    /// wait in QUIC's buffers, so that nothing of a new or resumed connection reaches the
    /// application before the link-state event that says it is connected.
    pub(crate) fn deliver_events(&self) {
        self.deliver.send_replace(true);
    }

    /// Closes the connection on the user's behalf (after a logout): no failure is reported.
    pub(crate) fn close(&self) {
        self.shared.closing.store(true, Ordering::Release);
        self.conn.close(0u32.into(), b"logout");
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
struct EventGate {
    listeners: Listeners,
    open: watch::Receiver<bool>,
}

/// Writes commands, heartbeats and acknowledgements, and accepts delivery streams, until the
/// connection ends; then says how it ended.
async fn drive(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut commands: mpsc::UnboundedReceiver<Command>,
    pending: Pending,
    shared: Arc<Shared>,
    events: EventGate,
    heartbeat: Duration,
) -> Outcome {
    let EventGate {
        listeners,
        open: mut deliver,
    } = events;
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
                {
                    let mut table = pending.lock().unwrap_or_else(PoisonError::into_inner);
                    for Command { request, reply } in batch.drain(..) {
                        let id = next_id;
                        next_id = next_id.wrapping_add(1).max(1);
                        table.insert(id, reply);
                        encode_frame_into(&ClientMsg::Request { id: RequestId(id), request }, &mut out);
                    }
                }
            }
            _ = ack_tick.tick() => {
                let received = shared.counts();
                if received != acked {
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
            stream = conn.accept_uni(), if delivering => match stream {
                Ok(recv) => {
                    readers.push(tokio::spawn(read_events(recv, listeners.clone(), shared.clone())));
                }
                Err(_) => break,
            },
        }
        if !out.is_empty() {
            if send.write_all(&out).await.is_err() {
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
    if shared.closing.load(Ordering::Acquire) {
        return Outcome::Closed;
    }
    let told = *shared
        .closed_by_server
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let close = conn.close_reason();
    conn.close(0u32.into(), b"");
    // The event readers end with the connection; the count they leave is what a resume starts
    // from.
    for reader in readers {
        let _ = reader.await;
    }
    let outcome = outcome(told, close);
    tracing::debug!(?outcome, "connection ended");
    outcome
}

/// Classifies the end of a connection.
fn outcome(told: Option<CloseReason>, close: Option<quinn::ConnectionError>) -> Outcome {
    use quinn::ConnectionError as E;
    let app_code = match &close {
        Some(E::ApplicationClosed(c)) => Some(c.error_code.into_inner()),
        _ => None,
    };
    let reason = told.or_else(|| {
        [
            CloseReason::SameUidLogin,
            CloseReason::SlowConsumer,
            CloseReason::ServerShutdown,
            CloseReason::TokenExpired,
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
        // The server went away; another (or the same, restarted) one may take the client back.
        Some(CloseReason::ServerShutdown) => Outcome::Lost {
            operation: LinkOperation::ServerReject,
            reason: LinkStateReason::ConnectionError,
            text: "the server is shutting down".into(),
        },
        None => match close {
            Some(E::TimedOut) => Outcome::Lost {
                operation: LinkOperation::HeartbeatTimeout,
                reason: LinkStateReason::KeepAliveTimeout,
                text: "nothing heard from the server for the heartbeat interval + 10 s".into(),
            },
            other => Outcome::Lost {
                operation: LinkOperation::ServerTimeout,
                reason: LinkStateReason::ConnectionError,
                text: other.map_or_else(|| "the connection closed".to_owned(), |e| e.to_string()),
            },
        },
    }
}

/// Completes pending calls with the server's answers.
async fn read_responses(mut reader: FrameReader, pending: Pending) {
    let reply_to = |id: RequestId| {
        pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id.0)
    };
    while let Ok(Some(read)) = reader.next().await {
        let body = match read {
            Read::Frame(body) => body,
            // docs/protocol.md §2.2: the call whose answer cannot be read fails; the others go on.
            Read::Oversized { len, head } => {
                tracing::warn!("{}", oversized(len));
                if let Some(reply) = ServerMsg::peek_response_id(&head).and_then(reply_to) {
                    let error = WireError::new(
                        ErrorCode::ChannelMessageLengthExceedLimitation,
                        oversized(len),
                    );
                    let _ = reply.send(Err(error));
                }
                continue;
            }
        };
        match ServerMsg::decode(&body) {
            Ok(ServerMsg::Response { id, result }) => {
                if let Some(reply) = reply_to(id) {
                    let _ = reply.send(result);
                }
            }
            Ok(ServerMsg::Error(e)) => tracing::warn!("server error: {} ({})", e.reason, e.code),
            Ok(other) => tracing::debug!("ignoring {other:?} on the control stream"),
            Err(e) => {
                tracing::warn!("undecodable frame from the server: {e}");
                if let Some(reply) = ServerMsg::peek_response_id(&body).and_then(reply_to) {
                    let error = WireError::new(
                        ErrorCode::InvalidParameter,
                        format!("the server's answer could not be decoded: {e}"),
                    );
                    let _ = reply.send(Err(error));
                }
            }
        }
    }
}

/// How long recovering one channel's missed messages may take before they are reported lost.
const RECOVERY_DEADLINE: Duration = Duration::from_secs(10);

/// Delivers, oldest first, the messages the server says this session missed, from the
/// channel's history (`docs/protocol.md` §5.12.1); reports the ones the history does not have
/// (not stored, or history off) with [`RtmEvent::MessagesLost`].
async fn recover(lost: LostMessages, listeners: &Listeners, shared: &Shared) {
    let mut recovered = Vec::new();
    let mut start = lost.to.saturating_add(1);
    let fetched = async {
        loop {
            let Some(requests) = shared.requests.get().and_then(|w| w.upgrade()) else {
                return;
            };
            let (reply, answer) = oneshot::channel();
            let request = Request::GetMessages(GetMessagesRequest {
                channel_type: lost.channel_type,
                channel: lost.channel_name.clone(),
                message_count: 100,
                start,
                end: lost.from,
            });
            if requests.send(Command { request, reply }).is_err() {
                return;
            }
            drop(requests);
            let Ok(Ok(Response::Messages {
                messages,
                new_start,
                ..
            })) = answer.await
            else {
                return;
            };
            recovered.extend(messages);
            if new_start == 0 {
                return;
            }
            start = new_start;
        }
    };
    let _ = timeout(RECOVERY_DEADLINE, fetched).await;
    // A user's history is the conversation: only what that user sent was missed.
    if lost.channel_type == ChannelType::User {
        recovered.retain(|m| m.publisher == lost.channel_name);
    }
    let found = recovered.len();
    for m in recovered.into_iter().rev() {
        let message = match &shared.cipher {
            Some(cipher) => cipher.open(m.message),
            None => m.message,
        };
        listeners.emit(RtmEvent::Message(MessageEvent {
            channel_type: lost.channel_type,
            channel_name: lost.channel_name.clone(),
            topic_name: String::new(),
            message,
            custom_type: m.custom_type,
            publisher: m.publisher,
            timestamp: m.timestamp,
        }));
    }
    let missing = (lost.count as usize).saturating_sub(found);
    if missing > 0 {
        tracing::info!(
            channel = %lost.channel_name,
            missing,
            "messages missed while away could not be recovered from the history"
        );
        listeners.emit(RtmEvent::MessagesLost(LostMessages {
            count: missing as u32,
            ..lost
        }));
    }
}

/// Hands the events of one delivery stream to the listeners, counting them for its lane.
async fn read_events(recv: quinn::RecvStream, listeners: Listeners, shared: Arc<Shared>) {
    let mut reader = FrameReader::new(recv);
    // docs/protocol.md §1.2: the first frame says which lane the stream carries.
    let lane = match reader.next().await {
        Ok(Some(Read::Frame(body))) => match ServerMsg::decode(&body) {
            Ok(ServerMsg::Lane { lane }) if usize::from(lane) < MAX_LANES => usize::from(lane),
            other => {
                tracing::warn!("a delivery stream without a valid lane: {other:?}");
                return;
            }
        },
        _ => return,
    };
    while let Ok(Some(read)) = reader.next().await {
        let len = match &read {
            Read::Frame(body) => body.len(),
            Read::Oversized { len, .. } => *len,
        };
        match read {
            Read::Frame(body) => match ServerMsg::decode(&body) {
                Ok(ServerMsg::Event(Event::Part(part))) => shared.parts.add(lane, part.into()),
                Ok(ServerMsg::Event(event)) => match shared.parts.complete(lane, event) {
                    Ok(event) => deliver(event, &listeners, &shared).await,
                    Err(error) => listeners.emit(RtmEvent::Error(error)),
                },
                Ok(other) => tracing::debug!("ignoring {other:?} on a delivery stream"),
                Err(e) => tracing::warn!("undecodable event from the server: {e}"),
            },
            // docs/protocol.md §2.2: said, skipped and counted, so that the lane goes on (and a
            // resume does not send it again).
            Read::Oversized { len, .. } => {
                tracing::warn!("{}", oversized(len));
                shared.parts.forget(std::iter::once(lane));
                listeners.emit(RtmEvent::Error(RtmError::new(
                    ErrorCode::ChannelMessageLengthExceedLimitation,
                    "event",
                    oversized(len),
                )));
            }
        }
        let received = shared.received[lane].fetch_add(1, Ordering::AcqRel) + 1;
        let len = len as u64;
        let bytes = shared.received_bytes.fetch_add(len, Ordering::AcqRel);
        if received.is_multiple_of(ACK_EVERY) || (bytes + len) / ACK_BYTES > bytes / ACK_BYTES {
            shared.ack.notify_one();
        }
    }
}

/// Hands one whole event to the listeners.
async fn deliver(event: Event, listeners: &Listeners, shared: &Shared) {
    match event {
        Event::Message(mut m) => {
            if let Some(cipher) = &shared.cipher {
                m.message = cipher.open(m.message);
            }
            listeners.emit(RtmEvent::Message(m));
        }
        Event::Topic(t) => listeners.emit(RtmEvent::Topic(t)),
        Event::Presence(p) => listeners.emit(RtmEvent::Presence(p)),
        Event::Storage(s) => listeners.emit(RtmEvent::Storage(s)),
        // Read nothing more of this lane until the missed messages are delivered: they come
        // before what follows them.
        Event::MessagesLost(lost) => recover(lost, listeners, shared).await,
        Event::Lock(l) => listeners.emit(RtmEvent::Lock(l)),
        Event::ChannelLeft {
            channel_name,
            reason,
            ..
        } => listeners.emit(crate::link::stream_channel_failed(channel_name, reason)),
        Event::TokenPrivilegeWillExpire { channel_name } => {
            listeners.emit(RtmEvent::TokenPrivilegeWillExpire { channel_name });
        }
        Event::SessionClosed { reason } => {
            *shared
                .closed_by_server
                .lock()
                .unwrap_or_else(PoisonError::into_inner) = Some(reason);
        }
        Event::Part(_) => tracing::debug!("a part is joined before delivery"),
    }
}
