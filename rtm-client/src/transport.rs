//! The QUIC side (native QUIC and WebTransport): sockets, TLS, and frame reading.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use quinn::crypto::rustls::QuicClientConfig;
use rtm_proto::{FrameDecoder, FrameError};
use rustls::RootCertStore;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use crate::config::{RtmConfig, Trust};

/// A client UDP socket (a QUIC endpoint) that several clients can share.
///
/// Each [`RtmClient`](crate::RtmClient) binds its own socket unless its configuration carries a
/// `QuicSocket` (used by [`Transport::Quic`](crate::Transport::Quic) and
/// [`Transport::WebTransport`](crate::Transport::WebTransport)). Sharing one saves a socket and a driver task per client, which matters when one
/// process runs hundreds of clients (test kits, load generators).
#[derive(Clone, Debug)]
pub struct QuicSocket {
    endpoint: quinn::Endpoint,
}

impl QuicSocket {
    /// Binds a new client socket on an ephemeral port of `127.0.0.1` or `0.0.0.0`, matching the
    /// server address family.
    pub fn bind(server: SocketAddr) -> std::io::Result<Self> {
        let local: SocketAddr = if server.is_ipv6() {
            (std::net::Ipv6Addr::UNSPECIFIED, 0).into()
        } else {
            (std::net::Ipv4Addr::UNSPECIFIED, 0).into()
        };
        let socket = socket2::Socket::new(
            socket2::Domain::for_address(local),
            socket2::Type::DGRAM,
            Some(socket2::Protocol::UDP),
        )?;
        // Best effort; a shared socket receives for every client on it.
        let _ = socket.set_recv_buffer_size(4 << 20);
        let _ = socket.set_send_buffer_size(4 << 20);
        socket.bind(&local.into())?;
        let endpoint = quinn::Endpoint::new(
            quinn::EndpointConfig::default(),
            None,
            socket.into(),
            Arc::new(quinn::TokioRuntime),
        )?;
        Ok(Self { endpoint })
    }

    pub(crate) fn endpoint(&self) -> &quinn::Endpoint {
        &self.endpoint
    }
}

/// Why a TLS configuration could not be made.
#[derive(Debug, thiserror::Error)]
pub(crate) enum TlsSetupError {
    #[error("{0}")]
    Certs(String),
    #[error(transparent)]
    Rustls(#[from] rustls::Error),
}

/// A TLS client configuration with the trust `config` asks for (ALPN not set).
pub(crate) fn tls_config(
    config: &RtmConfig,
    versions: &[&'static rustls::SupportedProtocolVersion],
) -> Result<rustls::ClientConfig, TlsSetupError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_protocol_versions(versions)?;
    Ok(match &config.endpoint.trust {
        Trust::CertificateHashes(hashes) => builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(HashPin {
                hashes: hashes.clone(),
                provider,
            }))
            .with_no_client_auth(),
        _ => builder
            .with_root_certificates(root_store(config)?)
            .with_no_client_auth(),
    })
}

/// Trusts exactly the certificates of these SHA-256 hashes, as browsers do for
/// `serverCertificateHashes`: the certificate's bytes are pinned, so neither its issuer nor its
/// name matter; the handshake's signature is still checked against it.
#[derive(Debug)]
struct HashPin {
    hashes: Vec<[u8; 32]>,
    provider: Arc<rustls::crypto::CryptoProvider>,
}

impl rustls::client::danger::ServerCertVerifier for HashPin {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &rustls::pki_types::ServerName<'_>,
        _ocsp_response: &[u8],
        _now: rustls::pki_types::UnixTime,
    ) -> Result<rustls::client::danger::ServerCertVerified, rustls::Error> {
        use sha2::Digest;
        let hash: [u8; 32] = sha2::Sha256::digest(end_entity.as_ref()).into();
        if self.hashes.contains(&hash) {
            Ok(rustls::client::danger::ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &rustls::DigitallySignedStruct,
    ) -> Result<rustls::client::danger::HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<rustls::SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

/// The certificates `config` trusts.
fn root_store(config: &RtmConfig) -> Result<RootCertStore, TlsSetupError> {
    let mut roots = RootCertStore::empty();
    let certs_err = |what: String| TlsSetupError::Certs(what);
    match &config.endpoint.trust {
        Trust::PlatformRoots => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = roots.add_parsable_certificates(found.certs);
            if added == 0 {
                return Err(certs_err("no usable platform root certificates".into()));
            }
        }
        Trust::CaFile(path) | Trust::PinnedCertFile(path) => {
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|it| it.collect::<Result<Vec<_>, _>>())
                .map_err(|e| certs_err(format!("{}: {e}", path.display())))?;
            if certs.is_empty() {
                return Err(certs_err(format!(
                    "{}: no certificate found",
                    path.display()
                )));
            }
            for cert in certs {
                roots.add(cert)?;
            }
        }
        Trust::PinnedCertDer(der) => roots.add(CertificateDer::from(der.clone()))?,
        Trust::CertificateHashes(_) => {}
    }
    Ok(roots)
}

/// The quinn client configuration for `config`: TLS 1.3 with the ring provider, ALPN `rtm/1`
/// (or `h3` for WebTransport), the configured trust, and keep-alives at the heartbeat interval.
pub(crate) fn client_config(
    config: &RtmConfig,
    web: bool,
) -> Result<quinn::ClientConfig, TlsSetupError> {
    let mut tls = tls_config(config, &[&rustls::version::TLS13])?;
    tls.alpn_protocols = vec![if web {
        web_transport_quinn::ALPN.as_bytes().to_vec()
    } else {
        rtm_proto::ALPN.to_vec()
    }];
    let crypto =
        QuicClientConfig::try_from(tls).map_err(|e| TlsSetupError::Certs(e.to_string()))?;
    let mut client = quinn::ClientConfig::new(Arc::new(crypto));
    let mut transport = quinn::TransportConfig::default();
    // docs/protocol.md §5.6: the heartbeat is QUIC's keep-alive, and a connection with no
    // packet from the peer for the interval + 10 s is lost. QUIC takes the smaller idle timeout
    // of both ends, so the server notices a silent client at the same point.
    let heartbeat = config.heartbeat_interval.clamp(5, 1800);
    transport.keep_alive_interval(Some(Duration::from_secs(heartbeat.into())));
    transport.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        (heartbeat + 10) * 1000,
    ))));
    transport.max_concurrent_bidi_streams(0u32.into());
    // One delivery stream per lane (docs/protocol.md §1.2), and HTTP/3's control and QPACK
    // streams for WebTransport.
    transport.max_concurrent_uni_streams((rtm_proto::limits::MAX_LANES as u32 + 3).into());
    transport.stream_receive_window((1024u32 * 1024).into());
    transport.receive_window((4u32 * 1024 * 1024).into());
    transport.initial_rtt(Duration::from_millis(50));
    transport.datagram_receive_buffer_size(web.then_some(4096));
    client.transport_config(Arc::new(transport));
    Ok(client)
}

/// A receive stream split into frames.
pub(crate) struct FrameReader {
    recv: web_transport_quinn::RecvStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

/// What came off a stream.
#[derive(Debug)]
pub(crate) enum Read {
    /// A frame body.
    Frame(Bytes),
    /// A frame larger than the protocol allows (`docs/protocol.md` §2.2), skipped; `head` holds
    /// its first bytes.
    Oversized { len: usize, head: Bytes },
}

impl FrameReader {
    pub(crate) fn new(recv: web_transport_quinn::RecvStream) -> Self {
        Self {
            recv,
            buf: BytesMut::with_capacity(4096),
            // docs/protocol.md §2.2: a server never sends more in one frame.
            decoder: FrameDecoder::new(rtm_proto::limits::MAX_SERVER_FRAME_LEN),
        }
    }

    /// The next frame body, or the news of one too large (which the reader skips, going on
    /// with the next); `Ok(None)` at the end of the stream.
    pub(crate) async fn next(&mut self) -> Result<Option<Read>, web_transport_quinn::ReadError> {
        loop {
            if let Some(read) = self.buffered() {
                return Ok(Some(read));
            }
            match self.recv.read_chunk(64 * 1024, true).await? {
                Some(chunk) => self.buf.extend_from_slice(&chunk.bytes),
                None => return Ok(None),
            }
        }
    }

    /// Reads what has already arrived on the stream, without waiting for more; whether
    /// anything was read. (The end of the stream, or an error, is left for [`Self::next`] to
    /// meet again.)
    pub(crate) async fn read_arrived(&mut self) -> bool {
        let chunk = {
            let mut read = std::pin::pin!(self.recv.read_chunk(64 * 1024, true));
            std::future::poll_fn(|cx| std::task::Poll::Ready(read.as_mut().poll(cx))).await
        };
        match chunk {
            std::task::Poll::Ready(Ok(Some(chunk))) => {
                self.buf.extend_from_slice(&chunk.bytes);
                true
            }
            _ => false,
        }
    }

    /// The next frame (or news of one too large) among the bytes already read, without
    /// reading more.
    pub(crate) fn buffered(&mut self) -> Option<Read> {
        match self.decoder.decode(&mut self.buf) {
            Ok(Some(body)) => Some(Read::Frame(body)),
            Ok(None) => None,
            Err(FrameError::Oversized { len, head, .. }) => Some(Read::Oversized { len, head }),
        }
    }
}

impl Read {
    /// The body of a frame; an error naming the size of one too large.
    pub(crate) fn into_frame(self) -> Result<Bytes, String> {
        match self {
            Self::Frame(body) => Ok(body),
            Self::Oversized { len, .. } => Err(oversized(len)),
        }
    }
}

/// Why a frame of `len` bytes was not read.
pub(crate) fn oversized(len: usize) -> String {
    format!(
        "the server sent a frame of {len} bytes, more than the protocol's {} (docs/protocol.md §2.2)",
        rtm_proto::limits::MAX_SERVER_FRAME_LEN
    )
}
