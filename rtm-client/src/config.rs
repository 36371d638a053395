//! Client configuration: [`RtmConfig`], where the server is ([`Endpoint`]) and how to trust it
//! ([`Trust`]), and the options of each call.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

pub use rtm_proto::{ChannelType, SubscribeOptions};

use crate::transport::QuicSocket;

/// The client's configuration, the reference's `RTMConfig`.
#[derive(Clone)]
pub struct RtmConfig {
    /// Where the server is and how to trust it (the JS `privateConfig.accessPointHosts`).
    pub endpoint: Endpoint,
    /// When false, the user id must be numeric (default true).
    pub use_string_user_id: bool,
    /// Seconds between heartbeats (QUIC keep-alives), [5, 1800] (default 5; out-of-range
    /// values are clamped). Either end counts the connection as lost after this interval + 10 s
    /// without a packet from the other.
    pub heartbeat_interval: u32,
    /// Seconds the server keeps the session after losing the connection, waiting for the client
    /// to come back and resume it, [5, 300] (default 300; out-of-range values are clamped).
    /// Others see this user time out only after it.
    pub presence_timeout: u32,
    /// How long a call waits for the server's answer before failing with a timeout code
    /// (default 10 s).
    pub request_timeout: Duration,
    /// How to reach the server: native QUIC (the default), WebTransport, or WebSocket where
    /// UDP is blocked.
    pub transport: Transport,
    /// A UDP socket to share with other clients (QUIC and WebTransport); by default each
    /// client binds its own.
    pub socket: Option<QuicSocket>,
    /// End-to-end encryption of message payloads (default none). Every client of an app must
    /// use the same mode, key and salt (`docs/protocol.md` §5.11).
    pub encryption_mode: EncryptionMode,
    /// The key the encryption key is derived from; required with a mode. Use a random one
    /// (`openssl rand -hex 32`): it is not stretched like a password.
    pub cipher_key: String,
    /// Up to 32 bytes of salt for the key derivation (shorter salts are zero-padded).
    pub salt: Vec<u8>,
    /// Other nodes of the same service (a cluster: `docs/operators.md`), tried in turn when
    /// the current one cannot be reached: at login, and when reconnecting. A session resumed on
    /// another node while its own node lives is relayed there whole. When its node is gone,
    /// the client logs in again on the new node, restores its channels, and recovers what it
    /// missed from the history (see [`RtmEvent::MessagesLost`](crate::RtmEvent::MessagesLost)).
    /// Empty by default.
    pub other_nodes: Vec<ServerNode>,
}

/// Another node of the service: where it is and how to reach it (like [`RtmConfig::endpoint`]
/// and [`RtmConfig::transport`]).
#[derive(Clone, Debug)]
pub struct ServerNode {
    /// Where the node is and how to trust it.
    pub endpoint: Endpoint,
    /// How to reach it.
    pub transport: Transport,
}

impl std::fmt::Debug for RtmConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The cipher key stays out of logs.
        f.debug_struct("RtmConfig")
            .field("endpoint", &self.endpoint)
            .field("use_string_user_id", &self.use_string_user_id)
            .field("heartbeat_interval", &self.heartbeat_interval)
            .field("presence_timeout", &self.presence_timeout)
            .field("request_timeout", &self.request_timeout)
            .field("transport", &self.transport)
            .field("socket", &self.socket)
            .field("other_nodes", &self.other_nodes)
            .field("encryption_mode", &self.encryption_mode)
            .finish_non_exhaustive()
    }
}

/// End-to-end encryption of payloads (the reference's `EncryptionMode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum EncryptionMode {
    /// No encryption (the default).
    #[default]
    None,
    /// AES-128-GCM.
    Aes128Gcm,
    /// AES-256-GCM.
    Aes256Gcm,
}

impl RtmConfig {
    /// How many nodes the configuration names (the endpoint and the others).
    pub(crate) fn node_count(&self) -> usize {
        1 + self.other_nodes.len()
    }

    /// The configuration for reaching node `i` (0: the endpoint; then the others, in turn).
    pub(crate) fn for_node(&self, i: usize) -> std::borrow::Cow<'_, Self> {
        match i % self.node_count() {
            0 => std::borrow::Cow::Borrowed(self),
            i => {
                let node = &self.other_nodes[i - 1];
                let mut config = self.clone();
                config.endpoint = node.endpoint.clone();
                config.transport = node.transport;
                std::borrow::Cow::Owned(config)
            }
        }
    }

    /// A configuration for the server that `cargo run -p rtm-server` starts:
    /// `127.0.0.1:4433`, trusting the self-signed certificate it wrote to `cert_path`
    /// (`./rtm-data/cert.pem` when run from the same folder).
    pub fn local_dev(cert_path: impl Into<PathBuf>) -> Self {
        Self::new(Endpoint {
            addr: SocketAddr::from(([127, 0, 0, 1], 4433)),
            server_name: "localhost".into(),
            trust: Trust::PinnedCertFile(cert_path.into()),
        })
    }

    /// A configuration with defaults for everything but the endpoint.
    pub fn new(endpoint: Endpoint) -> Self {
        Self {
            endpoint,
            use_string_user_id: true,
            heartbeat_interval: 5,
            presence_timeout: 300,
            request_timeout: Duration::from_secs(10),
            transport: Transport::Quic,
            socket: None,
            encryption_mode: EncryptionMode::None,
            cipher_key: String::new(),
            salt: Vec::new(),
            other_nodes: Vec::new(),
        }
    }
}

/// How the client reaches the server (`docs/protocol.md` §1). All three carry the same
/// sessions: every call and event works the same way over each.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Transport {
    /// Native QUIC (ALPN `rtm/1`) to [`Endpoint::addr`]: the default, and the fastest.
    #[default]
    Quic,
    /// WebTransport (HTTP/3, ALPN `h3`) to `https://{Endpoint::addr}/rtm`, the same UDP port:
    /// what browsers use.
    WebTransport,
    /// WebSocket over TCP to `ws://{addr}/rtm` (`wss://` with `tls`), subprotocol `rtm.v1`:
    /// for networks that block UDP. The certificate is checked against
    /// [`Endpoint::server_name`] and [`Endpoint::trust`], like QUIC's.
    WebSocket {
        /// The server's WebSocket (TCP) address.
        addr: SocketAddr,
        /// Whether the listener speaks TLS.
        tls: bool,
    },
}

/// Where the server is.
#[derive(Clone, Debug)]
pub struct Endpoint {
    /// The server's UDP address (QUIC and WebTransport).
    pub addr: SocketAddr,
    /// The name its certificate must carry (SNI and verification).
    pub server_name: String,
    /// Which certificates to trust.
    pub trust: Trust,
}

impl Endpoint {
    /// The endpoint at `host_port` (`rtm.example.com:4433`, `[::1]:4433` or `127.0.0.1:4433`),
    /// trusting `trust`. A DNS name is looked up now (its first address is used) and is the
    /// name the certificate must carry; for an IP address the name is `localhost`, what a
    /// development server's self-signed certificate carries (change
    /// [`Endpoint::server_name`] for another).
    pub async fn lookup(host_port: &str, trust: Trust) -> std::io::Result<Self> {
        let (host, _) = host_port.rsplit_once(':').ok_or_else(|| {
            std::io::Error::new(
                std::io::ErrorKind::InvalidInput,
                format!("{host_port:?} is not host:port"),
            )
        })?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let is_ip = host.parse::<std::net::IpAddr>().is_ok();
        let addr = tokio::net::lookup_host(host_port)
            .await?
            .next()
            .ok_or_else(|| {
                std::io::Error::new(
                    std::io::ErrorKind::NotFound,
                    format!("{host_port}: the name has no address"),
                )
            })?;
        Ok(Self {
            addr,
            server_name: if is_ip {
                "localhost".to_owned()
            } else {
                host.to_owned()
            },
            trust,
        })
    }
}

/// Which server certificates the client accepts. There is no option that skips verification.
#[derive(Clone, Debug)]
pub enum Trust {
    /// The operating system's root certificates (for servers with publicly trusted
    /// certificates).
    PlatformRoots,
    /// The CA certificates in this PEM file.
    CaFile(PathBuf),
    /// Exactly the certificate in this PEM file (a self-signed server certificate). The name
    /// and validity are still checked.
    PinnedCertFile(PathBuf),
    /// Exactly this DER-encoded certificate.
    PinnedCertDer(Vec<u8>),
    /// Exactly the certificates with these SHA-256 hashes, whatever their name or issuer (what
    /// browsers call `serverCertificateHashes`): for the short-lived certificate a development
    /// server gives WebTransport clients, whose hash it prints and serves.
    CertificateHashes(Vec<[u8; 32]>),
}

impl Trust {
    /// Pins the certificate in `path`.
    pub fn pinned(path: impl AsRef<Path>) -> Self {
        Self::PinnedCertFile(path.as_ref().to_owned())
    }
}

/// Options of [`login`](crate::RtmClient::login).
#[derive(Clone, Debug, Default)]
pub struct LoginOptions {
    /// The token; `None` or empty for an app without an App Certificate.
    pub token: Option<String>,
}

/// Options of [`publish`](crate::RtmClient::publish).
#[derive(Clone, Debug, Default)]
pub struct PublishOptions {
    /// An application-defined type, up to 32 printable ASCII characters.
    pub custom_type: Option<String>,
    /// [`ChannelType::Message`] (the default) to publish to a channel, [`ChannelType::User`]
    /// to send to one user (the channel argument is then the user id).
    pub channel_type: ChannelType,
    /// Also store the message in the channel's history (default false; the app must keep
    /// history, or the publish fails with `HISTORY_NOT_AVAILABLE`).
    pub store_in_history: bool,
}

/// Options of [`renew_token`](crate::RtmClient::renew_token).
#[derive(Clone, Debug, Default)]
pub struct RenewTokenOptions {
    /// The stream channel whose (RTC) token this is; `None` for the login token.
    pub channel_name: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_name_is_looked_up_and_becomes_the_certificate_name() {
        let by_name = Endpoint::lookup("localhost:4433", Trust::PlatformRoots)
            .await
            .unwrap();
        assert!(by_name.addr.ip().is_loopback(), "{}", by_name.addr);
        assert_eq!(by_name.addr.port(), 4433);
        assert_eq!(by_name.server_name, "localhost");
        let by_ip = Endpoint::lookup("[::1]:9", Trust::PlatformRoots)
            .await
            .unwrap();
        assert_eq!(by_ip.addr, "[::1]:9".parse().unwrap());
        assert_eq!(by_ip.server_name, "localhost");
        for bad in ["no-port", "localhost:notaport"] {
            assert!(
                Endpoint::lookup(bad, Trust::PlatformRoots).await.is_err(),
                "{bad}"
            );
        }
    }
}
