//! TLS for the QUIC endpoint and the WebSocket listener: load the configured certificate, or
//! generate and keep a self-signed one in the data directory; and, for browsers, a
//! short-lived certificate for WebTransport (`docs/operators.md`, "Browsers").

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, SystemTime};

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

/// The quinn server configuration: TLS 1.3 with the ring provider, ALPN `rtm/1` (and `h3` when
/// `web` is given: WebTransport, served the short-lived certificate when there is one), and
/// transport settings for many connections (`docs/architecture.md`, "Transport").
pub(crate) fn quic_server_config(
    identity: &Identity,
    connection: &crate::config::ConnectionLimits,
    web: Option<Option<Arc<ShortLivedCert>>>,
) -> Result<quinn::ServerConfig, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let main = certified_key(&provider, identity.chain.clone(), identity.key.clone_key())?;
    let resolver = ByAlpn {
        main,
        web: web.clone().flatten(),
    };
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(Arc::new(resolver));
    tls.alpn_protocols = vec![rtm_proto::ALPN.to_vec()];
    if web.is_some() {
        tls.alpn_protocols
            .push(web_transport_quinn::ALPN.as_bytes().to_vec());
    }
    tls.max_early_data_size = 0;
    // No TLS session resumption: rtm resumes sessions itself (`docs/protocol.md` §5.6), and
    // each ticket sent costs bytes and a cache entry per handshake.
    tls.send_tls13_tickets = 0;
    tls.session_storage = Arc::new(rustls::server::NoServerSessionStorage {});
    let crypto = QuicServerConfig::try_from(tls).map_err(|e| TlsError::Quic(e.to_string()))?;
    let mut server = quinn::ServerConfig::with_crypto(Arc::new(crypto));
    server.transport_config(Arc::new(transport_config(connection, web.is_some())));
    Ok(server)
}

/// TLS for `wss://`: the server's certificate, HTTP/1.1.
pub(crate) fn websocket_tls(identity: &Identity) -> Result<tokio_rustls::TlsAcceptor, TlsError> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()?
        .with_no_client_auth()
        .with_single_cert(identity.chain.clone(), identity.key.clone_key())?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsAcceptor::from(Arc::new(tls)))
}

fn certified_key(
    provider: &rustls::crypto::CryptoProvider,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
) -> Result<Arc<rustls::sign::CertifiedKey>, TlsError> {
    let key = provider.key_provider.load_private_key(key)?;
    Ok(Arc::new(rustls::sign::CertifiedKey::new(chain, key)))
}

/// Chooses the certificate by ALPN: WebTransport (`h3`) gets the short-lived one when there
/// is one, everything else the server's own.
#[derive(Debug)]
struct ByAlpn {
    main: Arc<rustls::sign::CertifiedKey>,
    web: Option<Arc<ShortLivedCert>>,
}

impl rustls::server::ResolvesServerCert for ByAlpn {
    fn resolve(
        &self,
        hello: rustls::server::ClientHello<'_>,
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        if let Some(web) = &self.web
            && hello
                .alpn()
                .is_some_and(|mut alpn| alpn.any(|p| p == web_transport_quinn::ALPN.as_bytes()))
        {
            return Some(web.current().key);
        }
        Some(self.main.clone())
    }
}

/// How long a short-lived certificate is valid. Browsers accept a certificate pinned by
/// `serverCertificateHashes` only if it is valid for at most 14 days, and only ECDSA P-256.
pub(crate) const SHORT_LIVED_VALIDITY: Duration = Duration::from_secs(10 * 24 * 3600);
/// A short-lived certificate is replaced when this much of its validity is left.
pub(crate) const SHORT_LIVED_RENEW_BEFORE: Duration = Duration::from_secs(4 * 24 * 3600);

/// The self-signed certificate a development server gives WebTransport clients: ECDSA P-256,
/// valid for 10 days, made at start and replaced before it expires. Browsers pin it by its
/// SHA-256 (`serverCertificateHashes`), which the server logs and serves at
/// `/rtm/certificate-hash` on its WebSocket listener.
#[derive(Debug)]
pub(crate) struct ShortLivedCert {
    current: RwLock<Current>,
}

/// One generation of the short-lived certificate.
#[derive(Clone, Debug)]
pub(crate) struct Current {
    key: Arc<rustls::sign::CertifiedKey>,
    /// SHA-256 of the certificate (DER), lowercase hex.
    pub(crate) hash: String,
    /// Unix seconds after which it is no longer valid.
    pub(crate) not_after: u64,
}

impl ShortLivedCert {
    /// Makes the first certificate.
    pub(crate) fn new() -> Result<Self, TlsError> {
        Ok(Self {
            current: RwLock::new(Self::generate()?),
        })
    }

    /// The certificate in use.
    pub(crate) fn current(&self) -> Current {
        self.current
            .read()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone()
    }

    /// Its hash (hex) and expiry (Unix seconds).
    pub(crate) fn current_hash(&self) -> (String, u64) {
        let current = self.current();
        (current.hash, current.not_after)
    }

    /// Replaces the certificate with a new one; connections made with the old one go on.
    pub(crate) fn renew(&self) -> Result<(), TlsError> {
        let next = Self::generate()?;
        *self
            .current
            .write()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = next;
        Ok(())
    }

    fn generate() -> Result<Current, TlsError> {
        use sha2::Digest;
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // A little before now, for clients whose clock is slightly behind; the whole period
        // stays under the browsers' 14 days.
        let not_before = now.saturating_sub(3600);
        let not_after = now + SHORT_LIVED_VALIDITY.as_secs();
        let mut params = rcgen::CertificateParams::new(vec![
            "localhost".to_owned(),
            "127.0.0.1".to_owned(),
            "::1".to_owned(),
        ])?;
        params.not_before = unix_time(not_before)?;
        params.not_after = unix_time(not_after)?;
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256)?;
        let cert = params.self_signed(&key_pair)?;
        let der = cert.der().clone();
        let hash: String = sha2::Sha256::digest(&der)
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        let provider = rustls::crypto::ring::default_provider();
        let key = PrivateKeyDer::Pkcs8(key_pair.serialize_der().into());
        Ok(Current {
            key: certified_key(&provider, vec![der], key)?,
            hash,
            not_after,
        })
    }
}

fn unix_time(secs: u64) -> Result<time::OffsetDateTime, TlsError> {
    i64::try_from(secs)
        .ok()
        .and_then(|secs| time::OffsetDateTime::from_unix_timestamp(secs).ok())
        .ok_or_else(|| TlsError::Quic("the clock is out of range".into()))
}

/// Transport settings. quinn's defaults suit one fast long link; a signaling server holds many
/// connections with small messages, so the windows are smaller (bounded memory per
/// connection). The idle timeout is the longest the reference's heartbeat allows (1 800 s +
/// 10 s, and some slack): QUIC uses the smaller of both ends' values, and the client asks for
/// its heartbeat interval + 10 s, so that is when the server notices a silent client
/// (`docs/protocol.md` §5.6).
fn transport_config(
    connection: &crate::config::ConnectionLimits,
    web: bool,
) -> quinn::TransportConfig {
    let mut t = quinn::TransportConfig::default();
    // One control stream per connection; native clients never open unidirectional streams
    // (`transport::quic` takes the credit back after the handshake), but browsers refuse an
    // HTTP/3 server that does not let them open their three (control and QPACK).
    t.max_concurrent_bidi_streams(1u32.into());
    t.max_concurrent_uni_streams(if web { 3u32 } else { 0 }.into());
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
    // Datagrams are not part of the protocol, but a WebTransport client expects the transport
    // to offer them: a small buffer, allocated only if one arrives.
    t.datagram_receive_buffer_size(web.then_some(4096));
    // Ask clients to acknowledge every 10th packet (or within 5 ms) instead of every 2nd:
    // events flow one way, and each ACK is a UDP packet both sides pay a system call for.
    let mut ack = quinn::AckFrequencyConfig::default();
    ack.ack_eliciting_threshold(quinn::VarInt::from_u32(10))
        .max_ack_delay(Some(Duration::from_millis(
            connection.client_ack_delay_ms.into(),
        )));
    t.ack_frequency_config(Some(ack));
    if !connection.mtu_discovery {
        t.mtu_discovery_config(None);
    }
    t
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What browsers require of a certificate pinned by `serverCertificateHashes`: ECDSA P-256,
    /// valid for at most 14 days; and the hash served is the certificate's.
    #[test]
    fn the_short_lived_certificate_is_one_browsers_accept_and_renewal_changes_it() {
        use sha2::Digest;
        let cert = ShortLivedCert::new().unwrap();
        let current = cert.current();
        let der = &current.key.cert[0];
        let expected: String = sha2::Sha256::digest(der.as_ref())
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        assert_eq!(current.hash, expected);
        // The key is ECDSA (P-256, from rcgen's PKCS_ECDSA_P256_SHA256).
        assert_eq!(
            current.key.key.algorithm(),
            rustls::SignatureAlgorithm::ECDSA
        );
        // The validity period, read back from the DER: under 14 days.
        let (not_before, not_after) = validity(der.as_ref());
        assert!(
            not_after - not_before < 14 * 24 * 3600,
            "{not_before} .. {not_after}"
        );
        assert_eq!(not_after as u64, current.not_after);
        cert.renew().unwrap();
        assert_ne!(cert.current_hash().0, current.hash);
    }

    /// The notBefore and notAfter of a certificate made by rcgen (UTCTime), as Unix seconds.
    fn validity(der: &[u8]) -> (i64, i64) {
        // Tag 0x17 (UTCTime), length 13, "YYMMDDHHMMSSZ": the first two are the validity.
        let times: Vec<i64> = der
            .windows(15)
            .filter(|w| w[0] == 0x17 && w[1] == 13 && w[14] == b'Z')
            .map(|w| {
                let d = |i: usize| i64::from(w[2 + i] - b'0') * 10 + i64::from(w[3 + i] - b'0');
                let date = time::Date::from_calendar_date(
                    2000 + d(0) as i32,
                    time::Month::try_from(d(2) as u8).unwrap(),
                    d(4) as u8,
                )
                .unwrap();
                let at = date
                    .with_hms(d(6) as u8, d(8) as u8, d(10) as u8)
                    .unwrap()
                    .assume_utc();
                at.unix_timestamp()
            })
            .take(2)
            .collect();
        (times[0], times[1])
    }
}
