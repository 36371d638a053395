//! The transports: the QUIC endpoint (native QUIC and WebTransport) and the WebSocket
//! listener, and the transport-neutral session loop they all feed (`docs/architecture.md`,
//! "Transport").
//!
//! Each connection runs one task that reads the client's control channel, passes decoded
//! requests to its [`Session`](crate::session::Session) and writes the responses back, batched per
//! read. Once the client logs in, a second task drains the session's
//! [`Outbox`](crate::outbox::Outbox) into its delivery lanes. Both go through a [`link::Link`],
//! so that neither knows which transport the client came in by.

pub(crate) mod admission;
mod connection;
mod link;
pub(crate) mod origins;
mod quic;
mod quic_stream;
pub(crate) mod relay;
pub(crate) mod websocket;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use self::admission::{Admission, Admit};
use self::origins::Origins;
use crate::engine::Engine;
use crate::session::Node;

pub(crate) use quic::WEBTRANSPORT_PATH;

/// How long a closing connection may take to deliver its last frames.
pub(crate) const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// The connection's receive window (QUIC flow control over all its streams) until it logs in
/// or resumes: room for the hello and a login, so that a client that never logs in cannot make
/// the server buffer more (`docs/operators.md`, "Connection limits").
pub(crate) const PRE_LOGIN_WINDOW: u32 = 8 * 1024;
/// The largest frame accepted before a login (a hello, a login or a resume are far smaller).
pub(crate) const PRE_LOGIN_FRAME: usize = 8 * 1024;
/// Frames a connection may send before it logs in (the hello, a login or resume, a few pings
/// or refused requests); one more closes it (code `0x01`). Each is answered, so this bounds
/// what a client that never reads its answers nor logs in makes the server buffer.
pub(crate) const PRE_LOGIN_FRAMES: usize = 16;
/// The connection's receive window once logged in.
pub(crate) const LOGGED_IN_WINDOW: u32 = 1024 * 1024;

/// Binds a UDP socket with large buffers (one socket carries every connection) and makes the
/// endpoint.
pub(crate) fn endpoint(
    addr: SocketAddr,
    server_config: quinn::ServerConfig,
) -> std::io::Result<quinn::Endpoint> {
    let socket = socket2::Socket::new(
        socket2::Domain::for_address(addr),
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    // Best effort: the kernel caps these at net.core.{r,w}mem_max.
    for size in [8 << 20, 4 << 20, 1 << 20] {
        if socket.set_recv_buffer_size(size).is_ok() {
            break;
        }
    }
    for size in [8 << 20, 4 << 20, 1 << 20] {
        if socket.set_send_buffer_size(size).is_ok() {
            break;
        }
    }
    if addr.is_ipv6() {
        // Accept IPv4-mapped addresses too when bound to [::].
        let _ = socket.set_only_v6(false);
    }
    socket.bind(&addr.into())?;
    quinn::Endpoint::new(
        quinn::EndpointConfig::default(),
        Some(server_config),
        socket.into(),
        Arc::new(quinn::TokioRuntime),
    )
}

/// Accepts connections until `shutdown` turns true. Each connection task holds a clone of
/// `done`, so the caller knows all have finished when its receiver yields `None`.
pub(crate) async fn accept_loop<E: Engine>(
    endpoint: quinn::Endpoint,
    node: Arc<Node<E>>,
    admission: Arc<Admission>,
    origins: Arc<Origins>,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let remote = incoming.remote_address();
                let ticket = match admission.admit(
                    remote.ip(),
                    incoming.remote_address_validated(),
                    incoming.may_retry(),
                ) {
                    Admit::Serve(ticket) => ticket,
                    Admit::Retry => {
                        if let Err(e) = incoming.retry() {
                            e.into_incoming().ignore();
                        }
                        continue;
                    }
                    Admit::Refuse(why) => {
                        tracing::debug!(%remote, "connection refused: {why}");
                        incoming.refuse();
                        continue;
                    }
                };
                let node = node.clone();
                let origins = origins.clone();
                let shutdown = shutdown.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    // The handshake's state (the `Incoming`, quinn's `Connecting`, the
                    // WebTransport CONNECT) is larger than what a connection keeps while it
                    // waits for requests: a task of its own, so that it does not size the
                    // connection's task for its whole life (docs/performance.md, fifth session).
                    let limit = Duration::from_secs(node.core.connection.login_timeout_secs.into());
                    let Some((link, span)) = handshake(incoming, &origins, limit).await else {
                        return;
                    };
                    tokio::spawn(
                        async move {
                            connection::serve(node, link, shutdown).await;
                            drop((ticket, done));
                        }
                        .instrument(span),
                    );
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    tracing::debug!("accept loop stopped");
}

/// Completes the handshake of an incoming QUIC connection (and, for WebTransport, its CONNECT
/// request) within the login timeout; gives the link to serve and the connection's span.
async fn handshake(
    incoming: quinn::Incoming,
    origins: &Origins,
    limit: Duration,
) -> Option<(quic::QuicLink, tracing::Span)> {
    let remote = incoming.remote_address();
    let deadline = tokio::time::Instant::now() + limit;
    let connecting = match incoming.accept() {
        Ok(connecting) => connecting,
        Err(e) => {
            tracing::debug!(%remote, "connection refused: {e}");
            return None;
        }
    };
    let conn = match tokio::time::timeout_at(deadline, connecting).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) => {
            tracing::debug!(%remote, "handshake failed: {e}");
            return None;
        }
        Err(_) => {
            tracing::debug!(%remote, "handshake timed out");
            return None;
        }
    };
    let span = tracing::debug_span!("conn", %remote, id = conn.stable_id());
    let opened = tokio::time::timeout_at(deadline, quic::QuicLink::open(conn.clone(), origins))
        .instrument(span.clone())
        .await;
    match opened {
        Ok(Some(link)) => Some((link, span)),
        Ok(None) => None,
        Err(_) => {
            span.in_scope(|| tracing::debug!("WebTransport handshake timed out"));
            conn.close(
                connection::close_code::LOGIN_TIMEOUT.into(),
                b"handshake timeout",
            );
            None
        }
    }
}
