//! The rtm server: a self-hosted real-time signaling server over QUIC.
//!
//! Start one with [`Server::builder`], or run the `rtm-server` binary. The server speaks the
//! protocol of `rtm-proto` (`docs/protocol.md`) to `rtm-client`s.
//!
//! ```no_run
//! # async fn demo() -> Result<(), rtm_server::ServerError> {
//! let handle = rtm_server::Server::builder().start().await?;
//! println!("listening on {}", handle.local_addr());
//! handle.shutdown().await;
//! # Ok(()) }
//! ```
//!
//! # Layout
//!
//! The layers of `docs/architecture.md`, from the network inwards:
//!
//! - `transport`: the QUIC endpoint (native QUIC and WebTransport) and the WebSocket listener,
//!   behind one transport-neutral link; one task per connection reading the control channel,
//!   and one writer per logged-in connection draining its [`outbox`].
//! - `session`: one per connection: login, the client's subscriptions and rate limit.
//! - `core`: what a channel operation means: validation against the app's limits, and each
//!   event encoded once.
//! - [`engine`]: shared state and fan-out behind the [`Engine`] trait; [`MemoryEngine`] is the
//!   single-node default, and a Redis engine will be a second implementation.
//! - [`config`]: the TOML configuration; `tls`: certificates.
//!
//! What this crate does not do: it never blocks a publisher on a subscriber, and it never
//! panics on what a client sends.
#![warn(missing_docs)]

mod clock;
pub mod config;
mod core;
mod data_dir;
pub mod engine;
mod events;
mod http;
pub mod metrics;
pub mod outbox;
mod session;
mod tls;
pub mod token;
mod transport;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

pub use crate::config::ServerConfig;
pub use crate::data_dir::DataDirError;
pub use crate::engine::{Engine, MemoryEngine};
pub use crate::metrics::Metrics;
pub use crate::tls::{CertSource, TlsError};

/// A server that could not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServerError {
    /// The configuration is not usable.
    #[error(transparent)]
    Config(#[from] config::ConfigError),
    /// The certificate could not be loaded or made.
    #[error(transparent)]
    Tls(#[from] TlsError),
    /// The data directory is in use by another server, or cannot be locked.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The metadata store in the data directory could not be opened, or is damaged or not
    /// this server's.
    #[error("cannot open the metadata store: {0}")]
    Storage(engine::EngineError),
    /// The engine (Redis) could not be reached or used.
    #[error("cannot start the engine: {0}")]
    Engine(engine::EngineError),
    /// A socket (UDP for QUIC, TCP for WebSocket) could not be bound.
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        /// The address.
        addr: SocketAddr,
        /// Why.
        source: std::io::Error,
    },
}

/// Entry point: see [`Server::builder`].
#[derive(Debug)]
pub struct Server;

impl Server {
    /// A builder with the embedded defaults.
    pub fn builder() -> ServerBuilder {
        ServerBuilder {
            config: ServerConfig::default(),
        }
    }
}

/// Configures and starts a server.
#[derive(Debug)]
pub struct ServerBuilder {
    config: ServerConfig,
}

impl ServerBuilder {
    /// Uses this configuration (replacing the defaults).
    pub fn config(mut self, config: ServerConfig) -> Self {
        self.config = config;
        self
    }

    /// Listens on `addr` instead of the configured address; port 0 picks a free port.
    pub fn listen(mut self, addr: SocketAddr) -> Self {
        self.config.listen = addr;
        self
    }

    /// Binds the endpoint (and the WebSocket listener, when configured) and starts serving on
    /// the current tokio runtime.
    pub async fn start(self) -> Result<ServerHandle, ServerError> {
        let config = self.config;
        config.check()?;
        // First, so that nothing else in the directory (the generated certificate, the
        // database) is touched while another server has it.
        let lock = data_dir::DataDirLock::acquire(&config.data_dir)?;
        let identity = tls::identity(&config)?;
        let cert = identity.source.clone();
        // Browsers pin a self-signed certificate only if it is short-lived (tls.rs).
        let web_cert = if config.web.webtransport && cert.generated {
            Some(Arc::new(tls::ShortLivedCert::new()?))
        } else {
            None
        };
        let server_config = tls::quic_server_config(
            &identity,
            &config.connection,
            config.web.webtransport.then(|| web_cert.clone()),
        )?;
        let endpoint = transport::endpoint(config.listen, server_config).map_err(|source| {
            ServerError::Bind {
                addr: config.listen,
                source,
            }
        })?;
        let local_addr = endpoint.local_addr().map_err(|source| ServerError::Bind {
            addr: config.listen,
            source,
        })?;
        let websocket = match config.websocket.listen {
            Some(addr) => {
                let bind_err = |source| ServerError::Bind { addr, source };
                let listener = tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(bind_err)?;
                let bound = listener.local_addr().map_err(bind_err)?;
                let tls = if config.websocket.uses_tls() {
                    Some(tls::websocket_tls(&identity)?)
                } else {
                    None
                };
                Some((listener, bound, tls))
            }
            None => None,
        };
        let http_listener = if config.http.enabled {
            let addr = config.http.listen;
            let bind_err = |source| ServerError::Bind { addr, source };
            Some(
                tokio::net::TcpListener::bind(addr)
                    .await
                    .map_err(bind_err)?,
            )
        } else {
            None
        };
        let http_addr = match &http_listener {
            Some(listener) => Some(listener.local_addr().map_err(|source| ServerError::Bind {
                addr: config.http.listen,
                source,
            })?),
            None => None,
        };
        let metrics = Arc::new(Metrics::default());
        let engine = open_engine(&config, &metrics).await?;
        let core = Arc::new(core::Core::new(&config, engine, metrics.clone()));
        core.watch_departures();
        let open_apps = core.open_apps();
        let storage = {
            let core = core.clone();
            Storage {
                close: Box::new(move || core.close_store()),
                lock: Some(lock),
            }
        };
        let core_handle = core.clone();
        let node = Arc::new(session::Node::new(core));
        let (shutdown_tx, shutdown_rx) = watch::channel(false);
        let (done_tx, done_rx) = mpsc::channel(1);
        if let Some(listener) = http_listener {
            let ops = Arc::new(http::Ops {
                node: node.clone(),
                started: std::time::Instant::now(),
                shutdown: shutdown_rx.clone(),
                admin_key: config
                    .http
                    .admin_key
                    .as_deref()
                    .map(|key| http::digest(key.as_bytes())),
                admin_rate: governor::RateLimiter::direct(governor::Quota::per_second(
                    std::num::NonZeroU32::new(config.http.admin_rate)
                        .unwrap_or(std::num::NonZeroU32::MIN),
                )),
                rest: http::RestApps::from_config(&config),
                rates: Default::default(),
            });
            tokio::spawn(http::serve(listener, ops));
        }
        let admission = Arc::new(transport::admission::Admission::new(
            &config.connection,
            metrics.clone(),
        ));
        let configured_origins = config.web.allowed_origins.as_deref();
        let mut websocket_addr = None;
        if let Some((listener, bound, tls)) = websocket {
            websocket_addr = Some(WebSocketAddr {
                addr: bound,
                tls: tls.is_some(),
            });
            let listener_state = Arc::new(transport::websocket::Listener {
                node: node.clone(),
                origins: transport::origins::Origins::new(configured_origins, bound),
                tls,
                dev_cert: web_cert.clone(),
                admission: admission.clone(),
            });
            tokio::spawn(transport::websocket::accept_loop(
                listener,
                listener_state,
                shutdown_rx.clone(),
                done_tx.clone(),
            ));
        }
        if let Some(accepted) = core_handle.relays().and_then(|r| r.accepted()) {
            tokio::spawn(transport::relay::accept_loop(
                node.clone(),
                accepted,
                shutdown_rx.clone(),
                done_tx.clone(),
            ));
        }
        if let Some(web_cert) = &web_cert {
            tokio::spawn(renew_certificate(web_cert.clone(), shutdown_rx.clone()));
        }
        tokio::spawn(transport::accept_loop(
            endpoint.clone(),
            node,
            admission,
            Arc::new(transport::origins::Origins::new(
                configured_origins,
                local_addr,
            )),
            shutdown_rx,
            done_tx,
        ));
        Ok(ServerHandle {
            local_addr,
            cert,
            open_apps,
            data_dir: config.data_dir,
            websocket_addr,
            http_addr,
            webtransport: config.web.webtransport,
            web_cert,
            endpoint,
            metrics,
            shutdown_tx,
            done_rx,
            core: core_handle,
            storage,
        })
    }
}

/// The engine `config` asks for.
async fn open_engine(
    config: &ServerConfig,
    metrics: &Arc<Metrics>,
) -> Result<engine::AnyEngine, ServerError> {
    Ok(match config.engine.kind {
        config::EngineKind::Memory => engine::AnyEngine::Memory(
            MemoryEngine::open(&config.data_dir, config.storage.durability.into())
                .map_err(ServerError::Storage)?,
        ),
        config::EngineKind::Redis => {
            let mut redis = engine::RedisConfig::new(config.engine.urls.clone());
            redis.node_name.clone_from(&config.engine.node_name);
            redis.metrics = Some(metrics.clone());
            if let Some(ms) = config.engine.node_timeout_ms {
                redis.node_timeout = Duration::from_millis(ms.max(1).into());
            }
            if let Some(ms) = config.engine.command_timeout_ms {
                redis.command_timeout = Duration::from_millis(ms.max(1).into());
            }
            engine::AnyEngine::Redis(
                engine::RedisEngine::open(redis)
                    .await
                    .map_err(ServerError::Engine)?,
            )
        }
    })
}

/// Replaces the short-lived WebTransport certificate before it expires, until shutdown.
async fn renew_certificate(cert: Arc<tls::ShortLivedCert>, mut shutdown: watch::Receiver<bool>) {
    let every = tls::SHORT_LIVED_VALIDITY - tls::SHORT_LIVED_RENEW_BEFORE;
    loop {
        tokio::select! {
            () = tokio::time::sleep(every) => {}
            _ = shutdown.changed() => return,
        }
        match cert.renew() {
            Ok(()) => tracing::info!(
                sha256 = %cert.current_hash().0,
                "renewed the WebTransport certificate (pages pinning the old hash must fetch the new one)"
            ),
            Err(e) => tracing::error!("renewing the WebTransport certificate: {e}"),
        }
    }
}

/// Where the WebSocket listener is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct WebSocketAddr {
    /// The TCP address it listens on.
    pub addr: SocketAddr,
    /// Whether it speaks TLS (`wss://`).
    pub tls: bool,
}

impl fmt::Display for WebSocketAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let scheme = if self.tls { "wss" } else { "ws" };
        write!(
            f,
            "{scheme}://{}{}",
            self.addr,
            transport::websocket::WEBSOCKET_PATH
        )
    }
}

/// What a running server holds in its data directory: the engine's storage and the
/// directory's lock. Tasks of the server (lock and presence timers) may outlive its handle, so
/// the storage is closed explicitly rather than when the last of them ends.
struct Storage {
    close: Box<dyn Fn() + Send + Sync>,
    /// `None` once closed.
    lock: Option<data_dir::DataDirLock>,
}

impl Storage {
    /// Closes the engine's storage, then lets go of the directory: a successor never opens
    /// the database while this server still has it open.
    fn close(&mut self) {
        if let Some(lock) = self.lock.take() {
            (self.close)();
            drop(lock);
        }
    }
}

impl fmt::Debug for Storage {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Storage")
            .field("lock", &self.lock)
            .finish_non_exhaustive()
    }
}

/// A running server. Dropping it signals shutdown and closes the storage without waiting for
/// the connections; [`ServerHandle::shutdown`] waits for them to close first. Either way the
/// data directory is free for another server afterwards.
#[derive(Debug)]
pub struct ServerHandle {
    local_addr: SocketAddr,
    cert: CertSource,
    open_apps: bool,
    data_dir: std::path::PathBuf,
    websocket_addr: Option<WebSocketAddr>,
    http_addr: Option<SocketAddr>,
    webtransport: bool,
    web_cert: Option<Arc<tls::ShortLivedCert>>,
    endpoint: quinn::Endpoint,
    metrics: Arc<Metrics>,
    shutdown_tx: watch::Sender<bool>,
    done_rx: mpsc::Receiver<()>,
    /// For a graceful stop's presence work ([`ServerHandle::shutdown`]).
    core: Arc<core::Core<engine::AnyEngine>>,
    storage: Storage,
}

impl ServerHandle {
    /// The address the server listens on (with the real port when 0 was asked for).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The WebSocket listener, when there is one.
    pub fn websocket_addr(&self) -> Option<WebSocketAddr> {
        self.websocket_addr
    }

    /// The internal HTTP listener (health, metrics), when there is one.
    pub fn http_addr(&self) -> Option<SocketAddr> {
        self.http_addr
    }

    /// The WebTransport URL (`https://ADDR/rtm`), when WebTransport is on.
    pub fn webtransport_url(&self) -> Option<String> {
        self.webtransport.then(|| {
            format!(
                "https://{}{}",
                self.local_addr,
                transport::WEBTRANSPORT_PATH
            )
        })
    }

    /// The SHA-256 (lowercase hex) of the short-lived certificate WebTransport clients get,
    /// for `serverCertificateHashes`; `None` when the server has a configured certificate
    /// (browsers verify that one as usual) or WebTransport is off.
    pub fn webtransport_cert_hash(&self) -> Option<String> {
        self.web_cert.as_ref().map(|cert| cert.current_hash().0)
    }

    /// The certificate in use, and whether it was generated.
    pub fn cert(&self) -> &CertSource {
        &self.cert
    }

    /// Where the server keeps its data.
    pub fn data_dir(&self) -> &std::path::Path {
        &self.data_dir
    }

    /// Whether any App ID is accepted without a token (no apps configured).
    pub fn accepts_any_app(&self) -> bool {
        self.open_apps
    }

    /// The server's counters.
    pub fn metrics(&self) -> &Arc<Metrics> {
        &self.metrics
    }

    /// Stops accepting, tells every session the server is shutting down, waits (up to a
    /// few seconds) for the connections to close, then closes the storage and releases the
    /// data directory.
    pub async fn shutdown(mut self) {
        // Leaves are told at once from now, and those waiting out their debounce window are
        // told once the sessions have ended: no task that dies with the server holds any.
        self.core.stop_debouncing();
        let _ = self.shutdown_tx.send(true);
        // Each connection task holds a sender; all gone means all finished.
        let _ = tokio::time::timeout(Duration::from_secs(5), self.done_rx.recv()).await;
        self.core.flush_leaves().await;
        self.endpoint.close(0u32.into(), b"server shutdown");
        let _ = tokio::time::timeout(Duration::from_secs(2), self.endpoint.wait_idle()).await;
        self.storage.close();
    }
}

impl Drop for ServerHandle {
    fn drop(&mut self) {
        let _ = self.shutdown_tx.send(true);
        self.storage.close();
    }
}
