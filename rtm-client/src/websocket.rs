//! The WebSocket way in (`Transport::WebSocket`, `docs/protocol.md` §1.5): for networks that
//! block UDP. One binary message carries one frame body; the server interleaves its answers and
//! the events of every lane on the one socket, a `Lane` frame before each change of lane.

use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use futures_util::stream::{SplitSink, SplitStream};
use futures_util::{SinkExt, StreamExt};
use rtm_proto::frame::HEADER_LEN;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio_tungstenite::WebSocketStream;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;
use tokio_tungstenite::tungstenite::{self, Message};

use std::sync::PoisonError;
use std::time::Duration;

use rtm_proto::ServerMsg;
use rtm_proto::limits::MAX_LANES;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::timeout;

use crate::config::RtmConfig;
use crate::connection::{Ended, EventGate, Pending, Shared, answer};
use crate::lanes;
use crate::transport::{Read, TlsSetupError, tls_config};

/// The path of the server's WebSocket endpoint.
pub(crate) const PATH: &str = "/rtm";
/// The subprotocol the client asks for.
pub(crate) const SUBPROTOCOL: &str = "rtm.v1";

/// A TCP stream, plain or TLS.
pub(crate) trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

/// The socket's halves.
pub(crate) type Sink = SplitSink<WebSocketStream<Box<dyn Io>>, Message>;
pub(crate) type Stream = SplitStream<WebSocketStream<Box<dyn Io>>>;

/// Connects to `addr` and upgrades to a WebSocket on `/rtm` with the subprotocol `rtm.v1`
/// (over TLS, checked as the configuration's trust says, when `tls`).
pub(crate) async fn connect(
    config: &RtmConfig,
    addr: SocketAddr,
    tls: bool,
) -> Result<(Sink, Stream), String> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| format!("connecting to {addr}: {e}"))?;
    let _ = tcp.set_nodelay(true);
    let name = &config.endpoint.server_name;
    let io: Box<dyn Io> = if tls {
        let connector = tls_connector(config).map_err(|e| format!("TLS setup: {e}"))?;
        let server_name = rustls::pki_types::ServerName::try_from(name.clone())
            .map_err(|e| format!("server name {name}: {e}"))?;
        Box::new(
            connector
                .connect(server_name, tcp)
                .await
                .map_err(|e| format!("TLS with {addr}: {e}"))?,
        )
    } else {
        Box::new(tcp)
    };
    let scheme = if tls { "wss" } else { "ws" };
    let mut request = format!("{scheme}://{name}:{}{PATH}", addr.port())
        .into_client_request()
        .map_err(|e| e.to_string())?;
    request.headers_mut().insert(
        "sec-websocket-protocol",
        tungstenite::http::HeaderValue::from_static(SUBPROTOCOL),
    );
    let ws_config = WebSocketConfig::default()
        // docs/protocol.md §2.2: a frame of the server is at most this; a larger one is read
        // (up to twice as much) only to be reported and skipped, like on QUIC.
        .max_message_size(Some(2 * rtm_proto::limits::MAX_SERVER_FRAME_LEN))
        .max_frame_size(Some(2 * rtm_proto::limits::MAX_SERVER_FRAME_LEN))
        .read_buffer_size(16 * 1024)
        .write_buffer_size(16 * 1024);
    let (socket, response) =
        tokio_tungstenite::client_async_with_config(request, io, Some(ws_config))
            .await
            .map_err(|e| match e {
                tungstenite::Error::Http(response) => {
                    let body = response
                        .body()
                        .as_deref()
                        .map(String::from_utf8_lossy)
                        .unwrap_or_default();
                    format!(
                        "the server refused the WebSocket ({}): {}",
                        response.status(),
                        body.trim()
                    )
                }
                e => format!("WebSocket upgrade with {addr}: {e}"),
            })?;
    let chosen = response
        .headers()
        .get("sec-websocket-protocol")
        .and_then(|v| v.to_str().ok());
    if chosen != Some(SUBPROTOCOL) {
        return Err(format!(
            "the server did not accept the subprotocol {SUBPROTOCOL} (it chose {chosen:?})"
        ));
    }
    Ok(socket.split())
}

fn tls_connector(config: &RtmConfig) -> Result<tokio_rustls::TlsConnector, TlsSetupError> {
    let mut tls = tls_config(config, rustls::DEFAULT_VERSIONS)?;
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tokio_rustls::TlsConnector::from(Arc::new(tls)))
}

/// Sends the length-prefixed frames in `frames` (as `encode_frame_into` makes them), one
/// message each, and flushes.
pub(crate) async fn send_frames(sink: &mut Sink, frames: &[u8]) -> Result<(), tungstenite::Error> {
    let mut rest = frames;
    while rest.len() >= HEADER_LEN {
        let len = u32::from_be_bytes([rest[0], rest[1], rest[2], rest[3]]) as usize;
        let Some(body) = rest.get(HEADER_LEN..HEADER_LEN + len) else {
            break;
        };
        sink.feed(Message::Binary(Bytes::copy_from_slice(body)))
            .await?;
        rest = &rest[HEADER_LEN + len..];
    }
    sink.flush().await
}

/// What came off the socket.
pub(crate) enum Received {
    /// A frame (or the news of one too large).
    Frame(Read),
    /// The server closed the socket with this code and reason.
    Closed(Option<(u16, String)>),
    /// The socket broke.
    Failed(String),
}

/// The next frame or the end, skipping pings and pongs (tungstenite answers pings itself).
pub(crate) async fn next(stream: &mut Stream) -> Received {
    loop {
        return match stream.next().await {
            Some(Ok(Message::Binary(body)))
                if body.len() > rtm_proto::limits::MAX_SERVER_FRAME_LEN =>
            {
                Received::Frame(Read::Oversized {
                    len: body.len(),
                    head: body.slice(..body.len().min(16)),
                })
            }
            Some(Ok(Message::Binary(body))) => Received::Frame(Read::Frame(body)),
            Some(Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_))) => continue,
            Some(Ok(Message::Text(_))) => Received::Failed("the server sent a text message".into()),
            Some(Ok(Message::Close(frame))) => {
                Received::Closed(frame.map(|f| (u16::from(f.code), f.reason.to_string())))
            }
            Some(Err(e)) => Received::Failed(e.to_string()),
            None => Received::Closed(None),
        };
    }
}

/// Sends a close frame (1000 for a logout) and ends the socket.
pub(crate) async fn close(sink: &mut Sink, code: u16, reason: &str) {
    use tungstenite::protocol::CloseFrame;
    let frame = CloseFrame {
        code: code.into(),
        reason: reason.to_owned().into(),
    };
    let _ = sink.send(Message::Close(Some(frame))).await;
    let _ = sink.close().await;
}

/// The protocol's close code (`docs/protocol.md` §1.3) of a WebSocket close code: 1000 is 0,
/// 4000 + n is n.
pub(crate) fn protocol_code(ws_code: u16) -> Option<u64> {
    match ws_code {
        1000 => Some(0),
        4000..=4999 => Some(u64::from(ws_code - 4000)),
        _ => None,
    }
}

/// Reads a WebSocket: completes replies, and passes each event to its lane's task (`Lane`
/// frames say which lane the events after them belong to). Ends when the socket does, or when
/// nothing came for the heartbeat interval + 10 s (the server answers every heartbeat).
pub(crate) async fn read_socket(
    mut stream: Stream,
    early: Vec<Bytes>,
    pending: Pending,
    shared: Arc<Shared>,
    events: EventGate,
    heartbeat: Duration,
) {
    let mut lanes: Vec<Option<mpsc::UnboundedSender<Read>>> = Vec::new();
    let mut tasks: Vec<JoinHandle<()>> = Vec::new();
    let mut lane: Option<usize> = None;
    let mut early = early.into_iter();
    let silence = heartbeat + Duration::from_secs(10);
    let ended = loop {
        let read = match early.next() {
            Some(body) => Read::Frame(body),
            None => match tokio::select! {
                next = timeout(silence, next(&mut stream)) => next,
                // The driver is done with the connection and waited long enough.
                () = shared.stop_reading.notified() => {
                    break Ended::Other("the connection was closed".into());
                }
            } {
                Err(_) => break Ended::TimedOut,
                Ok(Received::Frame(read)) => read,
                Ok(Received::Closed(Some((code, reason)))) => {
                    break match protocol_code(code) {
                        Some(code) => Ended::Code(code, reason),
                        None => Ended::Other(format!("closed with {code}: {reason}")),
                    };
                }
                Ok(Received::Closed(None)) => {
                    break Ended::Other("the server closed the WebSocket".into());
                }
                Ok(Received::Failed(e)) => break Ended::Other(e),
            },
        };
        // Events (by their tag: even one this client cannot decode is counted, as on a QUIC
        // lane) go to the lanes, `Lane` frames switch the lane, and the rest answers calls.
        let event = match &read {
            Read::Frame(body) if ServerMsg::is_event(body) => true,
            Read::Frame(body) => {
                if let Ok(ServerMsg::Lane { lane: next }) = ServerMsg::decode(body) {
                    if usize::from(next) < MAX_LANES {
                        lane = Some(usize::from(next));
                    }
                    continue;
                }
                false
            }
            Read::Oversized { head, .. } => ServerMsg::peek_response_id(head).is_none(),
        };
        if !event {
            answer(read, &pending);
            continue;
        }
        let Some(lane) = lane else {
            tracing::warn!("an event before any Lane frame on the WebSocket");
            continue;
        };
        if lanes.len() <= lane {
            lanes.resize_with(lane + 1, || None);
        }
        let sender = lanes[lane].get_or_insert_with(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tasks.push(tokio::spawn(lanes::read_channel(
                lane,
                rx,
                events.open.clone(),
                events.listeners.clone(),
                shared.clone(),
            )));
            tx
        });
        let _ = sender.send(read);
    };
    *shared
        .ws_ended
        .lock()
        .unwrap_or_else(PoisonError::into_inner) = Some(ended);
    // The lanes handle what they were given, then end; their counts are what a resume starts
    // from.
    drop(lanes);
    for task in tasks {
        let _ = task.await;
    }
}
