//! The WebSocket implementation of [`Link`], and its HTTP listener (`[websocket] listen`).
//!
//! `GET /rtm` with `Upgrade: websocket` and the subprotocol `rtm.v1` opens a session. One
//! binary message carries one frame body (no length prefix); the socket is the control channel
//! and all delivery lanes at once, lanes collapsed into one ordered stream in which a `Lane`
//! frame says which lane the events after it belong to (`docs/protocol.md` §1.5). Anything
//! else gets a plain-text HTTP error or a WebSocket close code that says what was wrong.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use axum::extract::ws::{CloseFrame, Message, WebSocket, WebSocketUpgrade};
use axum::extract::{Extension, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{FutureExt, SinkExt, StreamExt};
use rtm_proto::ServerMsg;
use rtm_proto::frame::{HEADER_LEN, encode_frame};
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tracing::Instrument;

use super::admission::{Admission, Admit, Ticket};
use super::link::{ControlRecv, ControlSend, Inbound, LaneWriter, Link, LinkError};
use super::origins::Origins;
use crate::engine::Engine;
use crate::session::Node;
use crate::tls::ShortLivedCert;

/// The path of the WebSocket endpoint.
pub(crate) const WEBSOCKET_PATH: &str = "/rtm";
/// The subprotocol a client must ask for.
pub(crate) const SUBPROTOCOL: &str = "rtm.v1";
/// The largest message read whole (to be answered when over the frame limit): the most any
/// frame may be (`docs/protocol.md` §2.2).
const MAX_MESSAGE: usize = 1024 * 1024;
/// Where a development page finds the hash of the WebTransport certificate.
pub(crate) const CERT_HASH_PATH: &str = "/rtm/certificate-hash";

/// What every connection of the listener shares.
pub(crate) struct Listener<E> {
    pub(crate) node: Arc<Node<E>>,
    pub(crate) origins: Origins,
    pub(crate) tls: Option<tokio_rustls::TlsAcceptor>,
    pub(crate) dev_cert: Option<Arc<ShortLivedCert>>,
    pub(crate) admission: Arc<Admission>,
}

/// Accepts TCP connections until `shutdown` turns true; each connection task holds a clone of
/// `done` until its session has ended.
pub(crate) async fn accept_loop<E: Engine>(
    tcp: TcpListener,
    listener: Arc<Listener<E>>,
    mut shutdown: watch::Receiver<bool>,
    done: mpsc::Sender<()>,
) {
    let router = axum::Router::new()
        .route(WEBSOCKET_PATH, get(upgrade::<E>))
        .route(CERT_HASH_PATH, get(cert_hash::<E>))
        .fallback(not_found)
        .with_state(listener.clone());
    loop {
        let (stream, remote) = tokio::select! {
            accepted = tcp.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors, typically: wait rather than spin.
                    tracing::warn!("accepting a WebSocket connection: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            },
            _ = shutdown.changed() => break,
        };
        let ticket = match listener.admission.admit(remote.ip(), true, false) {
            Admit::Serve(ticket) => ticket,
            Admit::Retry | Admit::Refuse(_) => {
                tracing::debug!(%remote, "WebSocket connection refused: too many connections");
                continue;
            }
        };
        let guard = Arc::new(Mutex::new(Some(Guard {
            _ticket: ticket,
            _done: done.clone(),
            shutdown: shutdown.clone(),
        })));
        let router = router.clone();
        let tls = listener.tls.clone();
        let mut stopping = shutdown.clone();
        let handshake_limit =
            Duration::from_secs(listener.node.core.connection.login_timeout_secs.into());
        let span = tracing::debug_span!("ws", %remote);
        tokio::spawn(
            async move {
                let deadline = tokio::time::Instant::now() + handshake_limit;
                let _ = stream.set_nodelay(true);
                let io: Box<dyn Io> = match tls {
                    None => Box::new(stream),
                    Some(acceptor) => {
                        match tokio::time::timeout_at(deadline, acceptor.accept(stream)).await {
                            Ok(Ok(stream)) => Box::new(stream),
                            Ok(Err(e)) => return tracing::debug!("TLS handshake failed: {e}"),
                            Err(_) => return tracing::debug!("TLS handshake timed out"),
                        }
                    }
                };
                let service = hyper::service::service_fn(move |mut request| {
                    request.extensions_mut().insert(Peer {
                        remote,
                        guard: guard.clone(),
                    });
                    tower_call(router.clone(), request)
                });
                // Everything before the upgrade (requests in, answers out) within the login
                // timeout: a connection that does not upgrade cannot keep its place in the
                // connection counts.
                let conn = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(handshake_limit)
                    .serve_connection(hyper_util::rt::TokioIo::new(io), service)
                    .with_upgrades();
                tokio::pin!(conn);
                let served = tokio::select! {
                    served = tokio::time::timeout_at(deadline, conn.as_mut()) => match served {
                        Ok(served) => served,
                        Err(_) => return tracing::debug!("HTTP request not done in time"),
                    },
                    // An HTTP connection that has not upgraded must not hold the shutdown up.
                    _ = stopping.changed() => {
                        conn.as_mut().graceful_shutdown();
                        return;
                    }
                };
                if let Err(e) = served {
                    tracing::debug!("HTTP connection ended: {e}");
                }
            }
            .instrument(span),
        );
    }
    tracing::debug!("WebSocket accept loop stopped");
}

/// Hands a hyper request to an axum router (the internal listener serves its connections the
/// same way).
pub(crate) async fn tower_call(
    router: axum::Router,
    request: axum::http::Request<hyper::body::Incoming>,
) -> Result<Response, std::convert::Infallible> {
    use tower_service::Service;
    let mut router = router;
    router.call(request.map(axum::body::Body::new)).await
}

/// A connection's stream, plain or TLS.
trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// What a connection holds for as long as it is served: its place in the admission counts and
/// the server's count of live connections. The session takes it at the upgrade.
struct Guard {
    _ticket: Ticket,
    _done: mpsc::Sender<()>,
    shutdown: watch::Receiver<bool>,
}

/// Who sent a request, and its connection's guard.
#[derive(Clone)]
struct Peer {
    remote: SocketAddr,
    guard: Arc<Mutex<Option<Guard>>>,
}

fn refuse(status: StatusCode, why: &str) -> Response {
    tracing::debug!(%status, "WebSocket request refused: {why}");
    (
        status,
        [(header::CONTENT_TYPE, "text/plain; charset=utf-8")],
        format!("{why}\n"),
    )
        .into_response()
}

async fn not_found() -> Response {
    refuse(
        StatusCode::NOT_FOUND,
        "not found: the WebSocket endpoint is /rtm (subprotocol rtm.v1)",
    )
}

/// `GET /rtm`: checks the origin and the subprotocol, then hands the socket to a session.
async fn upgrade<E: Engine>(
    State(listener): State<Arc<Listener<E>>>,
    Extension(peer): Extension<Peer>,
    headers: HeaderMap,
    ws: Result<WebSocketUpgrade, axum::extract::ws::rejection::WebSocketUpgradeRejection>,
) -> Response {
    let ws = match ws {
        Ok(ws) => ws,
        Err(rejection) => {
            let status = rejection.status();
            return refuse(
                status,
                &format!("not a WebSocket upgrade: {}", rejection.body_text()),
            );
        }
    };
    let origin = headers
        .get(header::ORIGIN)
        .and_then(|value| value.to_str().ok());
    if !listener.origins.allows(origin) {
        tracing::info!(remote = %peer.remote, ?origin, "WebSocket refused: origin not allowed");
        return refuse(
            StatusCode::FORBIDDEN,
            &format!(
                "origin {} is not allowed ([web] allowed_origins)",
                origin.unwrap_or("")
            ),
        );
    }
    let offered = ws
        .requested_protocols()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|list| list.split(','))
        .any(|protocol| protocol.trim() == SUBPROTOCOL);
    if !offered {
        return refuse(
            StatusCode::BAD_REQUEST,
            &format!("the WebSocket subprotocol must be {SUBPROTOCOL}"),
        );
    }
    let Some(guard) = peer
        .guard
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take()
    else {
        return refuse(StatusCode::BAD_REQUEST, "one session per connection");
    };
    let max = listener.node.core.connection.max_frame_len as usize;
    let node = listener.node.clone();
    // A message must be read whole before it can be refused: up to this size it is, and a
    // frame over the limit is answered with the usual error (docs/protocol.md §2.2) as on
    // QUIC; beyond, the socket closes (1009) without holding more.
    let largest = MAX_MESSAGE.max(2 * max);
    ws.protocols([SUBPROTOCOL])
        .max_message_size(largest)
        .max_frame_size(largest)
        // Small buffers: most connections are idle most of the time.
        // The read buffer is allocated whole at the upgrade and kept: 1 KiB keeps an idle
        // connection under 10 KiB (docs/performance.md, "Three ways in"); larger messages
        // take a few more reads.
        .read_buffer_size(1024)
        .write_buffer_size(16 * 1024)
        .on_upgrade(move |socket| {
            let span = tracing::debug_span!("ws", remote = %peer.remote);
            // Made here, so that the future does not keep the socket's first place too.
            let link = WsLink::new(socket);
            async move {
                let Guard {
                    _ticket,
                    _done,
                    shutdown,
                } = guard;
                super::connection::serve(node, link, shutdown).await;
                drop((_ticket, _done));
            }
            .instrument(span)
        })
}

/// `GET /rtm/certificate-hash`: the SHA-256 of the short-lived WebTransport certificate, for a
/// development page's `serverCertificateHashes`.
async fn cert_hash<E: Engine>(State(listener): State<Arc<Listener<E>>>) -> Response {
    let Some(cert) = &listener.dev_cert else {
        return refuse(
            StatusCode::NOT_FOUND,
            "this server's WebTransport certificate is not self-signed: no hash to pin",
        );
    };
    let (hash, not_after) = cert.current_hash();
    (
        [
            (header::CONTENT_TYPE, "application/json"),
            (header::ACCESS_CONTROL_ALLOW_ORIGIN, "*"),
            (header::CACHE_CONTROL, "no-store"),
        ],
        format!(r#"{{"algorithm":"sha-256","value":"{hash}","not_after":{not_after}}}"#),
    )
        .into_response()
}

/// WebSocket close code for one of the protocol's close codes (`docs/protocol.md` §1.5).
fn ws_close_code(code: u32) -> u16 {
    match code {
        0 => 1000,
        code => u16::try_from(4000 + code.min(999)).unwrap_or(4999),
    }
}

/// A WebSocket serving one session.
#[derive(Clone)]
pub(crate) struct WsLink {
    inner: Arc<WsInner>,
}

struct WsInner {
    sink: tokio::sync::Mutex<SplitSink<WebSocket, Message>>,
    stream: Mutex<Option<SplitStream<WebSocket>>>,
    /// A close frame was sent (or is being sent).
    closing: AtomicBool,
    /// Turns true at the close: writes blocked on a client that does not read give up, so
    /// that the close (and the session loop) is not held up behind them.
    closed: watch::Sender<bool>,
}

impl WsLink {
    fn new(socket: WebSocket) -> Self {
        let (sink, stream) = socket.split();
        Self {
            inner: Arc::new(WsInner {
                sink: tokio::sync::Mutex::new(sink),
                stream: Mutex::new(Some(stream)),
                closing: AtomicBool::new(false),
                closed: watch::channel(false).0,
            }),
        }
    }

    /// Sends a close frame with `code` (a WebSocket code), in the background.
    fn close_ws(&self, code: u16, reason: String) {
        if self.inner.closing.swap(true, Ordering::AcqRel) {
            return;
        }
        self.inner.closed.send_replace(true);
        let inner = self.inner.clone();
        tokio::spawn(async move {
            let _ = tokio::time::timeout(super::CLOSE_GRACE, async {
                let mut sink = inner.sink.lock().await;
                let frame = CloseFrame {
                    code,
                    reason: reason.into(),
                };
                let _ = sink.send(Message::Close(Some(frame))).await;
                let _ = sink.close().await;
            })
            .await;
        });
    }

    /// Writes `messages` and flushes them; gives up when the link is closed meanwhile.
    async fn send_all(
        &self,
        messages: impl Iterator<Item = Bytes> + Send,
    ) -> Result<(), LinkError> {
        let mut closed = self.inner.closed.subscribe();
        let write = async {
            let mut sink = self.inner.sink.lock().await;
            for message in messages {
                sink.feed(Message::Binary(message))
                    .await
                    .map_err(|e| LinkError::Lost(e.to_string()))?;
            }
            sink.flush()
                .await
                .map_err(|e| LinkError::Lost(e.to_string()))
        };
        tokio::select! {
            written = write => written,
            _ = closed.wait_for(|closed| *closed) => Err(LinkError::Lost("closed".into())),
        }
    }
}

impl Link for WsLink {
    type Control = WsControl;
    type Requests = WsRequests;
    type Lanes = WsLanes;

    async fn accept_control(
        &self,
        max_frame_len: usize,
    ) -> Result<(WsControl, WsRequests), LinkError> {
        let stream = self
            .inner
            .stream
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
            .ok_or_else(|| LinkError::Lost("the control channel was already taken".into()))?;
        Ok((
            WsControl { link: self.clone() },
            WsRequests {
                stream,
                link: self.clone(),
                max: max_frame_len,
                stashed: None,
            },
        ))
    }

    fn logged_in(&self) {}

    fn lanes(&self, _lanes: u8) -> WsLanes {
        WsLanes {
            link: self.clone(),
            current: None,
            batch: Vec::new(),
        }
    }

    fn close(&self, code: u32, reason: &str) {
        self.close_ws(ws_close_code(code), reason.to_owned());
    }

    fn needs_heartbeats(&self) -> bool {
        true
    }

    fn transport(&self) -> crate::metrics::Transport {
        crate::metrics::Transport::websocket
    }
}

/// The session's answers, one message per frame.
pub(crate) struct WsControl {
    link: WsLink,
}

impl ControlSend for WsControl {
    async fn write(&mut self, frames: &[u8]) -> Result<(), LinkError> {
        self.link.send_all(bodies(frames)).await
    }

    async fn finish(&mut self) {
        let _ = tokio::time::timeout(super::CLOSE_GRACE, async {
            let _ = self.link.inner.sink.lock().await.flush().await;
        })
        .await;
    }
}

/// The bodies of the length-prefixed frames in `frames` (which the server made).
fn bodies(frames: &[u8]) -> impl Iterator<Item = Bytes> + '_ {
    let mut rest = frames;
    std::iter::from_fn(move || {
        let len = u32::from_be_bytes(rest.get(..HEADER_LEN)?.try_into().ok()?) as usize;
        let body = rest.get(HEADER_LEN..HEADER_LEN + len)?;
        rest = &rest[HEADER_LEN + len..];
        Some(Bytes::copy_from_slice(body))
    })
}

/// The client's messages, each one frame body.
pub(crate) struct WsRequests {
    stream: SplitStream<WebSocket>,
    link: WsLink,
    max: usize,
    /// A message read by [`ControlRecv::buffered`] that was not a frame.
    stashed: Option<Option<Result<Message, axum::Error>>>,
}

impl WsRequests {
    /// What one message means; `None` for those that carry no frame (pings, pongs).
    fn take(
        &mut self,
        message: Option<Result<Message, axum::Error>>,
    ) -> Option<Result<Option<Inbound>, LinkError>> {
        match message {
            Some(Ok(Message::Binary(body))) if body.len() > self.max => {
                Some(Ok(Some(Inbound::Oversized {
                    len: body.len(),
                    max: self.max,
                    head: body.slice(..body.len().min(16)),
                })))
            }
            Some(Ok(Message::Binary(body))) => Some(Ok(Some(Inbound::Frame(body)))),
            Some(Ok(Message::Ping(_) | Message::Pong(_))) => None,
            Some(Ok(Message::Text(_))) => {
                self.link.close_ws(
                    1003,
                    "text messages are not part of the protocol; send binary frames".into(),
                );
                Some(Err(LinkError::Lost("a text message".into())))
            }
            Some(Ok(Message::Close(frame))) => Some(match frame {
                None => Err(LinkError::Closed),
                Some(frame) if frame.code == 1000 => Err(LinkError::Closed),
                Some(frame) => Err(LinkError::Lost(format!(
                    "closed by the client with code {}: {}",
                    frame.code, frame.reason
                ))),
            }),
            Some(Err(e)) => {
                let text = e.to_string();
                if text.contains("too long") || text.contains("Space limit") {
                    self.link.close_ws(1009, format!("message too big: {text}"));
                }
                Some(Err(LinkError::Lost(text)))
            }
            // The connection ended without a close frame (1006): lost, not finished.
            None => Some(Err(LinkError::Lost(
                "the connection ended without a close frame".into(),
            ))),
        }
    }
}

impl ControlRecv for WsRequests {
    async fn next(&mut self) -> Result<Option<Inbound>, LinkError> {
        if let Some(message) = self.stashed.take()
            && let Some(result) = self.take(message)
        {
            return result;
        }
        let mut closed = self.link.inner.closed.subscribe();
        loop {
            // Once the server closed the link, nothing more is read (as on QUIC, where the
            // close fails a pending read): the close frame may never get through to a client
            // that does not read.
            let message = tokio::select! {
                message = self.stream.next() => message,
                _ = closed.wait_for(|closed| *closed) => {
                    return Err(LinkError::Lost("closed by the server".into()));
                }
            };
            if let Some(result) = self.take(message) {
                return result;
            }
        }
    }

    fn buffered(&mut self) -> Option<Inbound> {
        if self.stashed.is_some() {
            return None;
        }
        match self.stream.next().now_or_never()? {
            Some(Ok(Message::Binary(body))) if body.len() <= self.max => Some(Inbound::Frame(body)),
            other => {
                self.stashed = Some(other);
                None
            }
        }
    }

    fn set_max_frame_len(&mut self, max: usize) {
        self.max = max;
    }
}

/// The delivery side: lanes interleaved on the socket, a `Lane` frame before each change.
pub(crate) struct WsLanes {
    link: WsLink,
    /// The lane of the last event sent; `None` before the first.
    current: Option<u8>,
    batch: Vec<Bytes>,
}

impl LaneWriter for WsLanes {
    async fn write(&mut self, frames: Vec<(u8, Bytes)>) -> Result<(), LinkError> {
        let mut batch = std::mem::take(&mut self.batch);
        for (lane, frame) in frames {
            if self.current != Some(lane) {
                self.current = Some(lane);
                batch.push(encode_frame(&ServerMsg::Lane { lane }).slice(HEADER_LEN..));
            }
            batch.push(frame.slice(HEADER_LEN.min(frame.len())..));
        }
        let written = self.link.send_all(batch.drain(..)).await;
        self.batch = batch;
        written
    }

    async fn finish(&mut self) {
        let _ = self.link.inner.sink.lock().await.flush().await;
    }
}
