//! The transport: the QUIC endpoint and its connections (`docs/architecture.md`, "Transport").
//!
//! Each connection runs one task that reads the client's control stream, passes decoded
//! requests to its [`Session`](crate::session::Session) and writes the responses back, batched per
//! read. Once the client logs in, a second task drains the session's
//! [`Outbox`](crate::outbox::Outbox) into a server-opened unidirectional delivery stream.

mod admission;
mod connection;
mod reader;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use self::admission::{Admission, Admit};
use crate::core::Core;
use crate::engine::Engine;

pub(crate) use connection::serve;

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
    core: Arc<Core<E>>,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let admission = Admission::new(&core.connection, core.metrics.clone());
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
                let core = core.clone();
                let shutdown = shutdown.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    serve(core, incoming, shutdown).await;
                    drop((ticket, done));
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    tracing::debug!("accept loop stopped");
}
