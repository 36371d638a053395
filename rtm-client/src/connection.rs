//! The connection task: one per logged-in client, owning the QUIC connection.
//!
//! The client handle sends [`Command`]s over an unbounded channel, at the moment a call is made
//! (so calls are sent in the order they were made, however their futures are awaited). The task writes them on the
//! control stream, batching whatever is queued into one write, and keeps each reply sender in a
//! table keyed by request id. A second task reads the control stream and completes those
//! replies; one more task per delivery stream decodes events and hands them to the listeners.
//! Reading and writing are separate tasks so that a burst of requests can never deadlock
//! against a burst of responses.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use bytes::BytesMut;
use rtm_proto::frame::encode_frame_into;
use rtm_proto::{
    ClientMsg, CloseReason, ErrorCode, Event, Hello, LoginLimits, PROTOCOL_VERSION, Request,
    RequestId, Response, RtmError, ServerMsg, WireError, message::LoginRequest,
};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use crate::config::RtmConfig;
use crate::event::{LinkOperation, LinkState, LinkStateReason, Listeners, RtmEvent};
use crate::link::LinkTracker;
use crate::transport::{FrameReader, Transport, client_config};

/// The answer to one request, as the server sent it.
pub(crate) type Reply = oneshot::Sender<Result<Response, WireError>>;

/// A request from the handle to the connection task.
pub(crate) struct Command {
    pub(crate) request: Request,
    pub(crate) reply: Reply,
}

/// The handle's side of a live connection.
#[derive(Debug)]
pub(crate) struct Connection {
    pub(crate) commands: mpsc::UnboundedSender<Command>,
    conn: quinn::Connection,
    shared: Arc<Shared>,
}

#[derive(Debug, Default)]
struct Shared {
    /// The user is closing the connection (logout): its end is not a failure.
    closing: AtomicBool,
    /// Why the server ended the session, when it said so in an event.
    closed_by_server: Mutex<Option<CloseReason>>,
}

type Pending = Arc<Mutex<HashMap<u32, Reply>>>;

/// Commands written in one batch, at most.
const WRITE_BATCH: usize = 64;

impl Connection {
    /// Connects, says hello and logs in. On success the connection's tasks are running.
    pub(crate) async fn open(
        config: &RtmConfig,
        login: LoginRequest,
        listeners: Listeners,
        link: Arc<LinkTracker>,
    ) -> Result<(Self, u64, LoginLimits), RtmError> {
        let fail = |code, reason: String| RtmError::new(code, "login", reason);
        let addr = config.endpoint.addr;
        let transport = match &config.transport {
            Some(t) => t.clone(),
            None => Transport::bind(addr).map_err(|e| {
                fail(
                    ErrorCode::NotConnected,
                    format!("binding a UDP socket: {e}"),
                )
            })?,
        };
        let client_config = client_config(config)
            .map_err(|e| fail(ErrorCode::InvalidParameter, format!("TLS setup: {e}")))?;
        let connecting = transport
            .endpoint()
            .connect_with(client_config, addr, &config.endpoint.server_name)
            .map_err(|e| {
                fail(
                    ErrorCode::NotConnected,
                    format!("connecting to {addr}: {e}"),
                )
            })?;
        let handshake = async {
            let conn = connecting.await.map_err(|e| {
                fail(
                    ErrorCode::NotConnected,
                    format!("connecting to {addr}: {e}"),
                )
            })?;
            let lost = |e: &dyn std::fmt::Display| fail(ErrorCode::NotConnected, e.to_string());
            let (mut send, recv) = conn.open_bi().await.map_err(|e| lost(&e))?;
            let mut out = BytesMut::new();
            let hello = Hello {
                version: PROTOCOL_VERSION,
                agent: concat!("rtm-client/", env!("CARGO_PKG_VERSION")).into(),
            };
            encode_frame_into(&ClientMsg::Hello(hello), &mut out);
            let request = Request::Login(login);
            encode_frame_into(
                &ClientMsg::Request {
                    id: RequestId(0),
                    request,
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
                    .ok_or_else(|| lost(&"the server closed the control stream"))?;
                let msg = ServerMsg::decode(&body).map_err(|e| lost(&e))?;
                match msg {
                    ServerMsg::Welcome(_) => welcomed = true,
                    ServerMsg::Error(e) => return Err(fail(e.code, e.reason)),
                    ServerMsg::Response {
                        id: RequestId(0),
                        result,
                    } if welcomed => {
                        return match result {
                            Ok(Response::Login { timestamp, limits }) => {
                                Ok((conn, send, reader, timestamp, limits))
                            }
                            Ok(other) => Err(lost(&format!("unexpected answer {other:?}"))),
                            Err(e) => Err(fail(e.code, e.reason)),
                        };
                    }
                    other => return Err(lost(&format!("unexpected frame {other:?}"))),
                }
            }
        };
        let (conn, send, reader, timestamp, limits) =
            match timeout(config.request_timeout, handshake).await {
                Ok(result) => result?,
                Err(_) => {
                    return Err(fail(
                        ErrorCode::LoginTimeout,
                        format!("no answer from {addr}"),
                    ));
                }
            };

        let shared = Arc::new(Shared::default());
        let pending: Pending = Arc::default();
        let (commands, commands_rx) = mpsc::unbounded_channel();
        tokio::spawn(read_responses(reader, pending.clone()));
        tokio::spawn(drive(
            conn.clone(),
            send,
            commands_rx,
            pending,
            shared.clone(),
            listeners,
            link,
        ));
        Ok((
            Self {
                commands,
                conn,
                shared,
            },
            timestamp,
            limits,
        ))
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

/// Writes commands and accepts delivery streams until the connection ends.
async fn drive(
    conn: quinn::Connection,
    mut send: quinn::SendStream,
    mut commands: mpsc::UnboundedReceiver<Command>,
    pending: Pending,
    shared: Arc<Shared>,
    listeners: Listeners,
    link: Arc<LinkTracker>,
) {
    let mut next_id: u32 = 1;
    let mut out = BytesMut::new();
    let mut batch = Vec::with_capacity(WRITE_BATCH);
    loop {
        tokio::select! {
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
                if send.write_all(&out).await.is_err() {
                    break;
                }
                out.clear();
            }
            stream = conn.accept_uni() => match stream {
                Ok(recv) => {
                    tokio::spawn(read_events(recv, listeners.clone(), shared.clone()));
                }
                Err(_) => break,
            },
        }
    }
    // Fail the calls still waiting: dropping their reply senders tells them the connection is
    // gone.
    pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
    if shared.closing.load(Ordering::Acquire) {
        return;
    }
    conn.close(0u32.into(), b"");
    let told = *shared
        .closed_by_server
        .lock()
        .unwrap_or_else(PoisonError::into_inner);
    let reason = told.or_else(|| match conn.close_reason() {
        Some(quinn::ConnectionError::ApplicationClosed(close)) => [
            CloseReason::SameUidLogin,
            CloseReason::SlowConsumer,
            CloseReason::ServerShutdown,
        ]
        .into_iter()
        .find(|r| u64::from(r.close_code()) == close.error_code.into_inner()),
        _ => None,
    });
    let (operation, code, text) = match (reason, conn.close_reason()) {
        (Some(CloseReason::SameUidLogin), _) => (
            LinkOperation::ServerReject,
            LinkStateReason::SameUidLogin,
            "The same uid login on another device".to_owned(),
        ),
        (Some(CloseReason::TokenExpired), _) => (
            LinkOperation::ServerReject,
            LinkStateReason::TokenExpired,
            "the login token expired".to_owned(),
        ),
        (Some(r), _) => (
            LinkOperation::ServerReject,
            LinkStateReason::KickedOutByServer,
            r.to_string(),
        ),
        (None, Some(quinn::ConnectionError::TimedOut)) => (
            LinkOperation::ServerTimeout,
            LinkStateReason::KeepAliveTimeout,
            "the server stopped answering".to_owned(),
        ),
        (None, other) => (
            LinkOperation::ServerReject,
            LinkStateReason::ConnectionError,
            other.map_or_else(|| "the connection closed".to_owned(), |e| e.to_string()),
        ),
    };
    tracing::debug!(?code, "connection ended: {text}");
    link.set(LinkState::Failed, operation, code, text);
}

/// Completes pending calls with the server's answers.
async fn read_responses(mut reader: FrameReader, pending: Pending) {
    while let Ok(Some(body)) = reader.next().await {
        match ServerMsg::decode(&body) {
            Ok(ServerMsg::Response { id, result }) => {
                let reply = pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id.0);
                if let Some(reply) = reply {
                    let _ = reply.send(result);
                }
            }
            Ok(ServerMsg::Error(e)) => tracing::warn!("server error: {} ({})", e.reason, e.code),
            Ok(other) => tracing::debug!("ignoring {other:?} on the control stream"),
            Err(e) => tracing::warn!("undecodable frame from the server: {e}"),
        }
    }
}

/// Hands the events of one delivery stream to the listeners.
async fn read_events(recv: quinn::RecvStream, listeners: Listeners, shared: Arc<Shared>) {
    let mut reader = FrameReader::new(recv);
    while let Ok(Some(body)) = reader.next().await {
        match ServerMsg::decode(&body) {
            Ok(ServerMsg::Event(Event::Message(m))) => listeners.emit(RtmEvent::Message(m)),
            Ok(ServerMsg::Event(Event::TokenPrivilegeWillExpire { channel_name })) => {
                listeners.emit(RtmEvent::TokenPrivilegeWillExpire { channel_name });
            }
            Ok(ServerMsg::Event(Event::SessionClosed { reason })) => {
                *shared
                    .closed_by_server
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner) = Some(reason);
            }
            Ok(other) => tracing::debug!("ignoring {other:?} on a delivery stream"),
            Err(e) => tracing::warn!("undecodable event from the server: {e}"),
        }
    }
}
