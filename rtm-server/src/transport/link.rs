//! The transport-neutral connection that the session loop (`connection.rs`) serves: send frames
//! on a lane, receive frames, close with a code. QUIC (native and WebTransport, `quic.rs`) and
//! WebSocket (`websocket.rs`) implement it; the session and its outbox never learn which one a
//! client came in by (`docs/architecture.md`, "Transport").

use std::future::Future;

use bytes::Bytes;

/// What came off the control channel.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// One frame body.
    Frame(Bytes),
    /// A frame over the size limit, not kept: only its first bytes, to answer it.
    Oversized { len: usize, max: usize, head: Bytes },
}

/// Why a link stopped working.
#[derive(Debug, thiserror::Error)]
pub(crate) enum LinkError {
    /// The client closed the connection normally (code 0).
    #[error("closed by the client")]
    Closed,
    /// Nothing came from the client for longer than its heartbeat allows.
    #[error("the client fell silent")]
    TimedOut,
    /// The connection broke, or the client closed it with an error.
    #[error("{0}")]
    Lost(String),
}

/// One client connection, whatever carries it. Cloning gives another handle to the same
/// connection (the event writer holds one).
pub(crate) trait Link: Clone + Send + Sync + 'static {
    /// Where the session's answers go.
    type Control: ControlSend;
    /// Where the client's frames come from.
    type Requests: ControlRecv;
    /// Where the session's events go.
    type Lanes: LaneWriter;

    /// Waits for the client's control channel (its bidirectional stream on QUIC; the socket
    /// itself on WebSocket), reading frames of at most `max_frame_len` bytes.
    fn accept_control(
        &self,
        max_frame_len: usize,
    ) -> impl Future<Output = Result<(Self::Control, Self::Requests), LinkError>> + Send;

    /// Whether the client's hello was already answered (a connection relayed from another
    /// node, which did that): the first frame is then a request.
    fn greeted(&self) -> bool {
        false
    }

    /// The client logged in (or resumed): it may now send what its limits allow.
    fn logged_in(&self);

    /// The writer of this connection's delivery lanes (a session has `lanes` of them).
    fn lanes(&self, lanes: u8) -> Self::Lanes;

    /// Closes the connection with one of the codes of `docs/protocol.md` §1.3 and a reason.
    fn close(&self, code: u32, reason: &str);

    /// Whether the client must show it is alive with frames (a `Heartbeat` request at its
    /// heartbeat interval, `docs/protocol.md` §5.6): true where the transport has no keep-alive
    /// of its own that the server can rely on (WebSocket, and WebTransport, whose keep-alives
    /// a browser does not let the page set).
    fn needs_heartbeats(&self) -> bool;

    /// What carries the connection, for the metrics.
    fn transport(&self) -> crate::metrics::Transport;
}

/// The sending side of the control channel.
pub(crate) trait ControlSend: Send + 'static {
    /// Writes encoded frames (each with its length prefix, as `encode_frame_into` makes them).
    fn write(&mut self, frames: &[u8]) -> impl Future<Output = Result<(), LinkError>> + Send;

    /// Ends the channel and waits a little for the client to have read it (after an error
    /// answer to a bad hello).
    fn finish(&mut self) -> impl Future<Output = ()> + Send;
}

/// The receiving side of the control channel.
pub(crate) trait ControlRecv: Send + 'static {
    /// The next frame, reading as needed; `Ok(None)` when the client ended the channel.
    fn next(&mut self) -> impl Future<Output = Result<Option<Inbound>, LinkError>> + Send;

    /// The next frame already received, without waiting.
    fn buffered(&mut self) -> Option<Inbound>;

    /// Accepts frames of up to `max` bytes from the next one on.
    fn set_max_frame_len(&mut self, max: usize);
}

/// The delivery side: frames of a session's lanes, each frame in order within its lane.
pub(crate) trait LaneWriter: Send + 'static {
    /// Writes a batch of `(lane, frame)`; frames are encoded with their length prefix.
    fn write(
        &mut self,
        frames: Vec<(u8, Bytes)>,
    ) -> impl Future<Output = Result<(), LinkError>> + Send;

    /// Ends the lanes and waits for the client to have received them.
    fn finish(&mut self) -> impl Future<Output = ()> + Send;
}
