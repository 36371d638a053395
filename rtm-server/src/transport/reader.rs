//! Reading frames from a QUIC receive stream.

use bytes::{Bytes, BytesMut};
use rtm_proto::{FrameDecoder, FrameError};

/// What came off the stream.
#[derive(Debug)]
pub(crate) enum Inbound {
    /// One frame body.
    Frame(Bytes),
    /// A frame over the size limit, whose body is being skipped.
    Oversized { len: usize, max: usize, head: Bytes },
}

/// A receive stream split into frames, with the size cap checked before buffering.
pub(crate) struct FrameReader {
    recv: quinn::RecvStream,
    buf: BytesMut,
    decoder: FrameDecoder,
}

impl FrameReader {
    pub(crate) fn new(recv: quinn::RecvStream, max_frame_len: usize) -> Self {
        Self {
            recv,
            // No buffer until bytes arrive: an idle connection should cost little memory.
            buf: BytesMut::new(),
            decoder: FrameDecoder::new(max_frame_len),
        }
    }

    /// Accepts frames of up to `max` bytes from the next one on.
    pub(crate) fn set_max_frame_len(&mut self, max: usize) {
        self.decoder.set_max_frame_len(max);
    }

    /// The next frame already buffered, without reading.
    pub(crate) fn buffered(&mut self) -> Option<Inbound> {
        match self.decoder.decode(&mut self.buf) {
            Ok(Some(body)) => Some(Inbound::Frame(body)),
            Ok(None) => None,
            Err(FrameError::Oversized { len, max, head }) => {
                Some(Inbound::Oversized { len, max, head })
            }
        }
    }

    /// The next frame, reading as needed. `Ok(None)` when the peer finished the stream.
    pub(crate) async fn next(&mut self) -> Result<Option<Inbound>, quinn::ReadError> {
        loop {
            if let Some(inbound) = self.buffered() {
                return Ok(Some(inbound));
            }
            match self.recv.read_chunk(64 * 1024, true).await? {
                Some(chunk) => self.buf.extend_from_slice(&chunk.bytes),
                None => {
                    if !self.buf.is_empty() {
                        tracing::debug!(bytes = self.buf.len(), "stream ended inside a frame");
                    }
                    return Ok(None);
                }
            }
        }
    }
}
