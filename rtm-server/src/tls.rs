//! TLS for the QUIC endpoint: load the configured certificate, or generate and keep a
//! self-signed one in the data directory.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use quinn::crypto::rustls::QuicServerConfig;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use crate::config::ServerConfig;

/// A TLS setup problem.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum TlsError {
    /// A certificate or key file could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// Why.
        source: std::io::Error,
    },
    /// A PEM file holds no usable certificate or key.
    #[error("{path}: {what}")]
    Pem {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        what: String,
    },
    /// Generating the self-signed certificate failed.
    #[error("generating a self-signed certificate: {0}")]
    Generate(#[from] rcgen::Error),
    /// rustls refused the certificate and key.
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    /// The TLS configuration is not usable for QUIC.
    #[error("QUIC TLS configuration: {0}")]
    Quic(String),
}

/// Where the certificate came from.
#[derive(Clone, Debug)]
pub struct CertSource {
    /// The certificate file in use.
    pub cert_path: PathBuf,
    /// Whether the server generated it (self-signed).
    pub generated: bool,
}

/// The certificate chain and key the server uses, and where they came from.
pub(crate) struct Identity {
    pub(crate) chain: Vec<CertificateDer<'static>>,
    pub(crate) key: PrivateKeyDer<'static>,
    pub(crate) source: CertSource,
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> TlsError + '_ {
    move |source| TlsError::Io {
        path: path.into(),
        source,
    }
}

/// Loads the configured certificate, or the self-signed one in the data directory, generating
/// it on first start.
pub(crate) fn identity(config: &ServerConfig) -> Result<Identity, TlsError> {
    let (cert_path, key_path, generated) = match (&config.cert_file, &config.key_file) {
        (Some(c), Some(k)) => (c.clone(), k.clone(), false),
        _ => {
            let cert = config.data_dir.join("cert.pem");
            let key = config.data_dir.join("key.pem");
            if !cert.exists() || !key.exists() {
                generate_self_signed(&config.data_dir, &cert, &key)?;
            }
            (cert, key, true)
        }
    };
    let chain = CertificateDer::pem_file_iter(&cert_path)
        .map_err(|e| TlsError::Pem {
            path: cert_path.clone(),
            what: e.to_string(),
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Pem {
            path: cert_path.clone(),
            what: e.to_string(),
        })?;
    if chain.is_empty() {
        return Err(TlsError::Pem {
            path: cert_path,
            what: "no certificate found".into(),
        });
    }
    let key = PrivateKeyDer::from_pem_file(&key_path).map_err(|e| TlsError::Pem {
        path: key_path.clone(),
        what: e.to_string(),
    })?;
    Ok(Identity {
        chain,
        key,
        source: CertSource {
            cert_path,
            generated,
        },
    })
}

/// Writes a new self-signed certificate for `localhost` and `127.0.0.1`.
fn generate_self_signed(dir: &Path, cert_path: &Path, key_path: &Path) -> Result<(), TlsError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    let names = vec![
        "localhost".to_owned(),
        "127.0.0.1".to_owned(),
        "::1".to_owned(),
    ];
    let certified = rcgen::generate_simple_self_signed(names)?;
    std::fs::write(cert_path, certified.cert.pem()).map_err(io_err(cert_path))?;
    write_private(key_path, certified.signing_key.serialize_pem().as_bytes())?;
    tracing::info!(cert = %cert_path.display(), "generated a self-signed certificate");
    Ok(())
}

fn write_private(path: &Path, data: &[u8]) -> Result<(), TlsError> {
    use std::io::Write;
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    let mut file = options.open(path).map_err(io_err(path))?;
    file.write_all(data).map_err(io_err(path))
}

/// The quinn server configuration: TLS 1.3 with the ring provider, ALPN `rtm/1`, and transport
/// settings for many connections (`docs/architecture.md`, "Transport").
pub(crate) fn quic_server_config(
    identity: Identity,
    client_ack_delay_ms: u32,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_single_cert(identity.chain, identity.key)?;
    tls.alpn_protocols = vec![rtm_proto::ALPN.to_vec()];
    tls.max_early_data_size = 0;
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(client_ack_delay_ms)));
    Ok(server)
}

/// Transport settings. quinn's defaults suit one fast long link; a signaling server holds many
/// connections with small messages, so the windows are smaller (bounded memory per
/// connection). The idle timeout is the longest the reference's heartbeat allows (1 800 s +
/// 10 s, and some slack): QUIC uses the smaller of both ends' values, and the client asks for
/// its heartbeat interval + 10 s, so that is when the server notices a silent client
/// (`docs/protocol.md` §5.6).
fn transport_config(client_ack_delay_ms: u32) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // One control stream per connection; clients never open unidirectional streams.
    t.max_concurrent_bidi_streams(1u32.into());
    t.max_concurrent_uni_streams(0u32.into());
    t.stream_receive_window((256u32 * 1024).into());
    // Small until the client logs in: a connection that never does holds little
    // (`transport::connection` raises it at login).
    t.receive_window(crate::transport::PRE_LOGIN_WINDOW.into());
    t.send_window(2 * 1024 * 1024);
    let idle_secs = 1800 + 10 + 20;
    t.max_idle_timeout(Some(quinn::IdleTimeout::from(quinn::VarInt::from_u32(
        idle_secs * 1000,
    ))));
    t.initial_rtt(Duration::from_millis(50));
    t.datagram_receive_buffer_size(None);
    // Ask clients to acknowledge every 10th packet (or within 5 ms) instead of every 2nd:
    // events flow one way, and each ACK is a UDP packet both sides pay a system call for.
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(quinn::VarInt::from_u32(10))
        .max_ack_delay(Some(Duration::from_millis(client_ack_delay_ms.into())));
    t.ack_frequency_config(Some(ack));
    t
}
