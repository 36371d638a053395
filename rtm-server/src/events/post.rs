//! POSTing a batch to the receiver: HTTP/1.1 over TCP, or over TLS (the system's roots) for an
//! `https://` URL; one connection per POST.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, header};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use super::worker::{Post, Signed};
use crate::config::WebhookConfig;

/// The receiver of one app's webhook.
pub(crate) struct HttpPost {
    url: url::Url,
    host: String,
    port: u16,
    /// For `https://`.
    tls: Option<tokio_rustls::TlsConnector>,
}

impl HttpPost {
    /// A poster for `hook`'s URL (checked with the configuration).
    pub(crate) fn new(hook: &WebhookConfig) -> Result<Self, String> {
        let url = url::Url::parse(&hook.url).map_err(|e| e.to_string())?;
        // Without the brackets of an IPv6 address: the name to connect to and to verify.
        let host = match url.host().ok_or("the URL has no host")? {
            url::Host::Ipv6(addr) => addr.to_string(),
            other => other.to_string(),
        };
        let port = url.port_or_known_default().ok_or("the URL has no port")?;
        let tls = match url.scheme() {
            "https" => {
                let mut roots = rustls::RootCertStore::empty();
                let found = rustls_native_certs::load_native_certs();
                roots.add_parsable_certificates(found.certs);
                let config = rustls::ClientConfig::builder_with_provider(Arc::new(
                    rustls::crypto::ring::default_provider(),
                ))
                .with_safe_default_protocol_versions()
                .map_err(|e| e.to_string())?
                .with_root_certificates(roots)
                .with_no_client_auth();
                Some(tokio_rustls::TlsConnector::from(Arc::new(config)))
            }
            _ => None,
        };
        Ok(Self {
            url,
            host,
            port,
            tls,
        })
    }

    fn request(&self, batch: &Signed) -> Result<Request<Body>, String> {
        let path = match self.url.query() {
            Some(query) => format!("{}?{query}", self.url.path()),
            None => self.url.path().to_owned(),
        };
        let host = match (self.url.host_str(), self.url.port()) {
            (Some(host), Some(port)) => format!("{host}:{port}"),
            (Some(host), None) => host.to_owned(),
            (None, _) => self.host.clone(),
        };
        Request::post(path)
            .header(header::HOST, host)
            .header(header::CONTENT_TYPE, "application/json")
            .header(
                header::USER_AGENT,
                concat!("rtm/", env!("CARGO_PKG_VERSION")),
            )
            .header("X-Rtm-Timestamp", batch.timestamp.to_string())
            .header("X-Rtm-Signature", &batch.signature)
            .body(Body::from(batch.body.clone()))
            .map_err(|e| e.to_string())
    }
}

/// Sends `request` on `io` and checks for a 2xx answer.
async fn exchange<T>(io: T, request: Request<Body>) -> Result<(), String>
where
    T: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
        .await
        .map_err(|e| format!("HTTP handshake: {e}"))?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(|e| format!("request: {e}"))?;
    if response.status().is_success() {
        Ok(())
    } else {
        Err(format!("the receiver answered {}", response.status()))
    }
}

impl Post for HttpPost {
    async fn post(&self, batch: &Signed) -> Result<(), String> {
        let request = self.request(batch)?;
        let tcp = TcpStream::connect((self.host.as_str(), self.port))
            .await
            .map_err(|e| format!("connecting to {}:{}: {e}", self.host, self.port))?;
        let _ = tcp.set_nodelay(true);
        match &self.tls {
            None => exchange(tcp, request).await,
            Some(tls) => {
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|e| format!("{}: {e}", self.host))?;
                let stream = tls
                    .connect(name, tcp)
                    .await
                    .map_err(|e| format!("TLS with {}: {e}", self.host))?;
                exchange(stream, request).await
            }
        }
    }
}
