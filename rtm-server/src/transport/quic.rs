//! The QUIC implementation of [`Link`]: native QUIC (ALPN `rtm/1`) and WebTransport (ALPN
//! `h3`) on the same UDP endpoint. After the handshake the negotiated ALPN decides: a native
//! connection is used as it is (a "raw" `web_transport_quinn::Session`), a WebTransport one first
//! completes its HTTP/3 CONNECT to `/rtm`. Both then carry the same stream layout: the client's
//! bidirectional control stream and server-opened unidirectional delivery lanes
//! (`docs/protocol.md` §1.2, §1.4).

use std::sync::Arc;

use bytes::{Bytes, BytesMut};
use rtm_proto::frame::encode_frame;
use rtm_proto::{FrameDecoder, FrameError, ServerMsg};
use web_transport_quinn::{Session, SessionError, WebTransportError};

use super::link::{ControlRecv, ControlSend, Inbound, LaneWriter, Link, LinkError};
use super::origins::Origins;
use super::quic_stream::{RecvHalf, SendHalf};

/// The path of the WebTransport endpoint.
pub(crate) const WEBTRANSPORT_PATH: &str = "/rtm";

/// A QUIC connection serving one session.
#[derive(Clone)]
pub(crate) struct QuicLink {
    conn: Conn,
}

/// What a link holds of its connection.
#[derive(Clone)]
enum Conn {
    /// Native QUIC: quinn's handle (one pointer), nothing of the WebTransport layer.
    Native(quinn::Connection),
    /// WebTransport. Shared: a session is large (close to 1 KiB), and every part of the
    /// connection holds it.
    Web(Arc<Session>),
}

impl QuicLink {
    /// Takes over an established connection: native QUIC as it is, WebTransport once its
    /// CONNECT request has been accepted. `None` when the request was refused (answered with
    /// an HTTP status) or the HTTP/3 exchange failed.
    pub(crate) async fn open(conn: quinn::Connection, origins: &Origins) -> Option<Self> {
        let alpn = conn
            .handshake_data()
            .and_then(|data| data.downcast::<quinn::crypto::rustls::HandshakeData>().ok())
            .and_then(|data| data.protocol);
        if alpn.as_deref() != Some(web_transport_quinn::ALPN.as_bytes()) {
            // The protocol has no client-opened unidirectional stream: no credit for more
            // (the three of the handshake are for HTTP/3, and a native client that used them
            // would only fill its own flow-control window, which the server never reads).
            conn.set_max_concurrent_uni_streams(0u32.into());
            return Some(Self {
                conn: Conn::Native(conn),
            });
        }
        // HTTP/3 needs the client's CONNECT request stream besides the control stream the
        // protocol uses (`docs/protocol.md` §1.4); its three unidirectional streams were allowed
        // in the handshake.
        conn.set_max_concurrent_bi_streams(2u32.into());
        let request = match web_transport_quinn::Request::accept(conn).await {
            Ok(request) => request,
            Err(e) => {
                tracing::debug!("WebTransport handshake failed: {e}");
                return None;
            }
        };
        let origin = request
            .headers
            .get("origin")
            .and_then(|value| value.to_str().ok());
        let refusal = if request.url.path() != WEBTRANSPORT_PATH {
            Some(http_status(404))
        } else if !origins.allows(origin) {
            tracing::info!(?origin, "WebTransport session refused: origin not allowed");
            Some(http_status(403))
        } else {
            None
        };
        if let Some(status) = refusal {
            tracing::debug!(url = %request.url, %status, "WebTransport request refused");
            let _ = request.reject(status).await;
            return None;
        }
        match request.ok().await {
            Ok(session) => Some(Self {
                conn: Conn::Web(Arc::new(session)),
            }),
            Err(e) => {
                tracing::debug!("WebTransport handshake failed: {e}");
                None
            }
        }
    }

    /// Why the connection is gone, as the session loop needs it. The QUIC connection's own
    /// reason comes first: a WebTransport session reports an idle timeout or a reset as a
    /// local close. Only an explicit code 0 is a normal close; anything unclear is a loss (the
    /// session waits for a resume rather than ending).
    fn error(&self, what: &dyn std::fmt::Display) -> LinkError {
        match (self.quinn().close_reason(), &self.conn) {
            (Some(quinn::ConnectionError::TimedOut), _) => return LinkError::TimedOut,
            (Some(quinn::ConnectionError::ApplicationClosed(close)), Conn::Native(_))
                if close.error_code == 0u32.into() =>
            {
                return LinkError::Closed;
            }
            _ => {}
        }
        let web_reason = match &self.conn {
            Conn::Web(session) => session.close_reason(),
            Conn::Native(_) => None,
        };
        match web_reason {
            Some(SessionError::WebTransportError(WebTransportError::Closed(0, _))) => {
                LinkError::Closed
            }
            _ => LinkError::Lost(what.to_string()),
        }
    }

    /// The QUIC connection under the link, whichever kind it is.
    fn quinn(&self) -> &quinn::Connection {
        match &self.conn {
            Conn::Native(conn) => conn,
            Conn::Web(session) => session,
        }
    }

    fn is_web(&self) -> bool {
        matches!(self.conn, Conn::Web(_))
    }

    /// Opens a delivery stream.
    async fn open_uni(&self) -> Result<SendHalf, LinkError> {
        match &self.conn {
            Conn::Native(conn) => conn
                .open_uni()
                .await
                .map(SendHalf::Native)
                .map_err(|e| self.error(&e)),
            Conn::Web(session) => session
                .open_uni()
                .await
                .map(SendHalf::Web)
                .map_err(|e| self.error(&e)),
        }
    }
}

fn http_status(code: u16) -> axum::http::StatusCode {
    axum::http::StatusCode::from_u16(code).unwrap_or(axum::http::StatusCode::BAD_REQUEST)
}

impl Link for QuicLink {
    type Control = QuicControl;
    type Requests = FrameReader;
    type Lanes = QuicLanes;

    async fn accept_control(
        &self,
        max_frame_len: usize,
    ) -> Result<(QuicControl, FrameReader), LinkError> {
        let (send, recv) = match &self.conn {
            Conn::Native(conn) => conn
                .accept_bi()
                .await
                .map(|(send, recv)| (SendHalf::Native(send), RecvHalf::Native(recv)))
                .map_err(|e| self.error(&e))?,
            Conn::Web(session) => session
                .accept_bi()
                .await
                .map(|(send, recv)| (SendHalf::Web(send), RecvHalf::Web(recv)))
                .map_err(|e| self.error(&e))?,
        };
        // The protocol has one client-opened stream: no credit for another, ever.
        self.quinn().set_max_concurrent_bi_streams(0u32.into());
        Ok((
            QuicControl {
                send,
                link: self.clone(),
            },
            FrameReader::new(recv, self.clone(), max_frame_len),
        ))
    }

    fn logged_in(&self) {
        self.quinn()
            .set_receive_window(super::LOGGED_IN_WINDOW.into());
    }

    fn lanes(&self, lanes: u8) -> QuicLanes {
        QuicLanes {
            link: self.clone(),
            lanes,
            streams: Vec::new(),
            by_lane: Vec::new(),
        }
    }

    fn close(&self, code: u32, reason: &str) {
        match &self.conn {
            Conn::Native(conn) => conn.close(code.into(), reason.as_bytes()),
            Conn::Web(session) => session.close(code, reason.as_bytes()),
        }
    }

    fn needs_heartbeats(&self) -> bool {
        self.is_web()
    }

    fn transport(&self) -> crate::metrics::Transport {
        if self.is_web() {
            crate::metrics::Transport::webtransport
        } else {
            crate::metrics::Transport::quic
        }
    }
}

/// The sending side of the control stream.
pub(crate) struct QuicControl {
    send: SendHalf,
    link: QuicLink,
}

impl ControlSend for QuicControl {
    async fn write(&mut self, frames: &[u8]) -> Result<(), LinkError> {
        self.send
            .write_all(frames)
            .await
            .map_err(|e| self.link.error(&e))
    }

    async fn finish(&mut self) {
        self.send.finish();
        let _ = tokio::time::timeout(super::CLOSE_GRACE, self.send.stopped()).await;
    }
}

/// A receive stream split into frames, with the size cap checked before buffering.
pub(crate) struct FrameReader {
    recv: RecvHalf,
    link: QuicLink,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl FrameReader {
    fn new(recv: RecvHalf, link: QuicLink, max_frame_len: usize) -> Self {
        Self {
            recv,
            link,
            // No buffer until bytes arrive: an idle connection should cost little memory.
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(max_frame_len),
        }
    }
}

impl ControlRecv for FrameReader {
    fn set_max_frame_len(&mut self, max: usize) {
        self.decoder.set_max_frame_len(max);
    }

    fn buffered(&mut self) -> Option<Inbound> {
        match self.decoder.decode(&mut self.buf) {
            Ok(Some(body)) => Some(Inbound::Frame(body)),
            Ok(None) => None,
            Err(FrameError::Oversized { len, max, head }) => {
                Some(Inbound::Oversized { len, max, head })
            }
        }
    }

    async fn next(&mut self) -> Result<Option<Inbound>, LinkError> {
        loop {
            if let Some(inbound) = self.buffered() {
                return Ok(Some(inbound));
            }
            match self.recv.read_chunk(64 * 1024).await {
                Ok(Some(chunk)) => self.buf.extend_from_slice(&chunk),
                Ok(None) => {
                    if !self.buf.is_empty() {
                        tracing::debug!(bytes = self.buf.len(), "stream ended inside a frame");
                    }
                    return Ok(None);
                }
                Err(e) => return Err(self.link.error(&e)),
            }
        }
    }
}

/// A connection's delivery streams, opened on first use, each starting with its `Lane` frame.
/// The tables grow to the highest lane used, so an idle connection pays nothing for them.
pub(crate) struct QuicLanes {
    link: QuicLink,
    lanes: u8,
    streams: Vec<Option<SendHalf>>,
    /// Frames of one batch, sorted by lane (kept to reuse the allocations).
    by_lane: Vec<Vec<Bytes>>,
}

impl LaneWriter for QuicLanes {
    async fn write(&mut self, frames: Vec<(u8, Bytes)>) -> Result<(), LinkError> {
        // The common case, every frame on one lane, needs no sorting.
        if let Some(&(first, _)) = frames.first()
            && frames.iter().all(|(lane, _)| *lane == first)
        {
            let mut chunks = coalesce(&frames, |(_, frame)| frame);
            let link = self.link.clone();
            let stream = self.stream(first).await?;
            return stream
                .write_all_chunks(&mut chunks)
                .await
                .map_err(|e| link.error(&e));
        }
        for (lane, frame) in frames {
            let lane = usize::from(lane);
            if lane >= usize::from(self.lanes) {
                continue;
            }
            if self.by_lane.len() <= lane {
                self.by_lane.resize_with(lane + 1, Vec::new);
            }
            self.by_lane[lane].push(frame);
        }
        for lane in 0..self.by_lane.len() {
            if self.by_lane[lane].is_empty() {
                continue;
            }
            let mut chunks = coalesce(&self.by_lane[lane], |frame| frame);
            self.by_lane[lane].clear();
            let link = self.link.clone();
            let stream = self.stream(lane as u8).await?;
            stream
                .write_all_chunks(&mut chunks)
                .await
                .map_err(|e| link.error(&e))?;
        }
        Ok(())
    }

    async fn finish(&mut self) {
        for stream in self.streams.iter_mut().flatten() {
            stream.finish();
        }
        for stream in self.streams.iter().flatten() {
            stream.stopped().await;
        }
    }
}

/// Frames at least this long are written as they are, without a copy.
const OWN_CHUNK: usize = 4 * 1024;
/// Small frames are joined into chunks of this size plus at most one frame.
const JOINED_CHUNK: usize = 16 * 1024;

/// Joins a batch's small frames into a few contiguous chunks.
///
/// quinn keeps every chunk written to a stream as one segment until it is acknowledged, and
/// finds the bytes of each packet it builds by walking those segments from the oldest: with
/// one segment per 130-byte delivery frame, thousands in flight made that walk a fifth of the
/// server's CPU at full throughput (docs/performance.md, fifth session). A copy of a small
/// frame costs far less than the walk.
fn coalesce<T>(frames: &[T], bytes: impl Fn(&T) -> &Bytes) -> Vec<Bytes> {
    let mut chunks = Vec::new();
    let mut start = 0;
    while start < frames.len() {
        // A run of small frames, up to JOINED_CHUNK bytes plus one frame.
        let mut end = start;
        let mut len = 0;
        while end < frames.len() && bytes(&frames[end]).len() < OWN_CHUNK && len < JOINED_CHUNK {
            len += bytes(&frames[end]).len();
            end += 1;
        }
        if end - start <= 1 {
            // A large frame, or a lone small one: written as it is, without a copy.
            chunks.push(bytes(&frames[start]).clone());
            end = start + 1;
        } else {
            let mut joined = BytesMut::with_capacity(len);
            for frame in &frames[start..end] {
                joined.extend_from_slice(bytes(frame));
            }
            chunks.push(joined.freeze());
        }
        start = end;
    }
    chunks
}

impl QuicLanes {
    async fn stream(&mut self, lane: u8) -> Result<&mut SendHalf, LinkError> {
        let index = usize::from(lane);
        if index >= usize::from(self.lanes) {
            return Err(LinkError::Lost(format!("no lane {lane}")));
        }
        if self.streams.len() <= index {
            self.streams.resize_with(index + 1, || None);
        }
        if self.streams[index].is_none() {
            // Once per lane, and its future is several times the size of a write's: boxed, so
            // that it does not size the writer task that every idle connection keeps.
            let stream = Box::pin(open_lane(&self.link, lane)).await?;
            self.streams[index] = Some(stream);
        }
        self.streams[index]
            .as_mut()
            .ok_or_else(|| LinkError::Lost("no stream".into()))
    }
}

/// Opens the delivery stream of `lane` and writes its `Lane` frame.
async fn open_lane(link: &QuicLink, lane: u8) -> Result<SendHalf, LinkError> {
    let mut stream = link.open_uni().await?;
    stream
        .write_all(&encode_frame(&ServerMsg::Lane { lane }))
        .await
        .map_err(|e| link.error(&e))?;
    Ok(stream)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frames(lens: &[usize]) -> Vec<Bytes> {
        lens.iter()
            .enumerate()
            .map(|(i, &len)| Bytes::from(vec![i as u8; len]))
            .collect()
    }

    fn joined(chunks: &[Bytes]) -> Vec<u8> {
        chunks.iter().flat_map(|c| c.iter().copied()).collect()
    }

    #[test]
    fn small_frames_become_one_chunk_in_order() {
        let input = frames(&[100, 130, 1, 200]);
        let chunks = coalesce(&input, |frame| frame);
        assert_eq!(chunks.len(), 1);
        assert_eq!(joined(&chunks), joined(&input));
    }

    #[test]
    fn large_frames_stay_whole_and_keep_their_place() {
        let input = frames(&[100, OWN_CHUNK, 50, 60, OWN_CHUNK + 1]);
        let chunks = coalesce(&input, |frame| frame);
        let lens: Vec<usize> = chunks.iter().map(Bytes::len).collect();
        assert_eq!(lens, [100, OWN_CHUNK, 110, OWN_CHUNK + 1]);
        assert_eq!(joined(&chunks), joined(&input));
        // No copy of a large frame: the chunk is the frame itself.
        assert_eq!(chunks[1].as_ptr(), input[1].as_ptr());
    }

    #[test]
    fn joined_chunks_are_bounded() {
        let input = frames(&vec![1000; 40]);
        let chunks = coalesce(&input, |frame| frame);
        assert!(chunks.len() >= 40 * 1000 / (JOINED_CHUNK + 1000));
        assert!(chunks.iter().all(|c| c.len() < JOINED_CHUNK + OWN_CHUNK));
        assert_eq!(joined(&chunks), joined(&input));
    }

    #[test]
    fn nothing_in_nothing_out() {
        assert!(coalesce(&[], |frame: &Bytes| frame).is_empty());
    }

    #[test]
    fn a_lone_small_frame_is_not_copied() {
        let input = frames(&[100]);
        let chunks = coalesce(&input, |frame| frame);
        assert_eq!(chunks.len(), 1);
        assert_eq!(chunks[0].as_ptr(), input[0].as_ptr());
    }
}
