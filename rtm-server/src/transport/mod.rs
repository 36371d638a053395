//! The transport: the QUIC endpoint and its connections (`docs/architecture.md`, "Transport").
//!
//! Each connection runs one task that reads the client's control stream, passes decoded
//! requests to its [`Session`](crate::session::Session) and writes the responses back, batched per
//! read. Once the client logs in, a second task drains the session's
//! [`Outbox`](crate::outbox::Outbox) into a server-opened unidirectional delivery stream.

mod connection;
mod reader;

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::sync::{mpsc, watch};

use crate::core::Core;
use crate::engine::Engine;

pub(crate) use connection::serve;

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
    loop {
        tokio::select! {
            incoming = endpoint.accept() => {
                let Some(incoming) = incoming else { break };
                let core = core.clone();
                let shutdown = shutdown.clone();
                let done = done.clone();
                tokio::spawn(async move {
                    serve(core, incoming, shutdown).await;
                    drop(done);
                });
            }
            _ = shutdown.changed() => break,
        }
    }
    tracing::debug!("accept loop stopped");
}
