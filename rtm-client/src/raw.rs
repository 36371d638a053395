//! A bare QUIC connection to an rtm server, with the client's TLS and ALPN but none of its
//! protocol. For tests that play a broken or hostile peer; not part of the stable API.

use rtm_proto::{ErrorCode, RtmError};

use crate::config::RtmConfig;
use crate::transport::{QuicSocket, client_config};

/// Connects to the server of `config` and completes the QUIC handshake, nothing more.
pub async fn connect(config: &RtmConfig) -> Result<quinn::Connection, RtmError> {
    let fail = |reason: String| RtmError::new(ErrorCode::NotConnected, "connect", reason);
    let addr = config.endpoint.addr;
    let transport = match &config.socket {
        Some(t) => t.clone(),
        None => QuicSocket::bind(addr).map_err(|e| fail(e.to_string()))?,
    };
    let client_config = client_config(config, false).map_err(|e| fail(e.to_string()))?;
    transport
        .endpoint()
        .connect_with(client_config, addr, &config.endpoint.server_name)
        .map_err(|e| fail(e.to_string()))?
        .await
        .map_err(|e| fail(e.to_string()))
}
