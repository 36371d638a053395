//! The two kinds of QUIC stream a [`QuicLink`](super::quic::QuicLink) uses: quinn's own on a
//! native connection, `web_transport_quinn`'s on a WebTransport session.
//!
//! A native connection needs nothing of the WebTransport layer, whose session object is close
//! to 1 KiB; holding quinn's handles directly keeps that off every native connection
//! (docs/performance.md, eighth session). Errors become text here: the link turns them into a
//! [`LinkError`](super::link::LinkError) from the connection's close reason, and only uses the
//! stream's error for the message.

use bytes::Bytes;

/// The sending half of a stream.
pub(crate) enum SendHalf {
    Native(quinn::SendStream),
    Web(web_transport_quinn::SendStream),
}

/// The receiving half of a stream.
pub(crate) enum RecvHalf {
    Native(quinn::RecvStream),
    Web(web_transport_quinn::RecvStream),
}

impl SendHalf {
    /// Writes all of `buf`, waiting for flow-control credit as needed.
    pub(crate) async fn write_all(&mut self, buf: &[u8]) -> Result<(), String> {
        match self {
            Self::Native(stream) => stream.write_all(buf).await.map_err(|e| e.to_string()),
            Self::Web(stream) => stream.write_all(buf).await.map_err(|e| e.to_string()),
        }
    }

    /// Writes all of `chunks`, in order, without copying them.
    pub(crate) async fn write_all_chunks(&mut self, chunks: &mut [Bytes]) -> Result<(), String> {
        match self {
            Self::Native(stream) => stream
                .write_all_chunks(chunks)
                .await
                .map_err(|e| e.to_string()),
            Self::Web(stream) => stream
                .write_all_chunks(chunks)
                .await
                .map_err(|e| e.to_string()),
        }
    }

    /// Ends the stream after what was written (nothing when it is already ended).
    pub(crate) fn finish(&mut self) {
        match self {
            Self::Native(stream) => {
                let _ = stream.finish();
            }
            Self::Web(stream) => {
                let _ = stream.finish();
            }
        }
    }

    /// Waits until the peer has everything written, stopped the stream, or the connection ended.
    pub(crate) async fn stopped(&self) {
        match self {
            Self::Native(stream) => {
                let _ = stream.stopped().await;
            }
            Self::Web(stream) => {
                let _ = stream.stopped().await;
            }
        }
    }
}

impl RecvHalf {
    /// The next bytes of the stream, at most `max` of them, in order; `None` at its end.
    pub(crate) async fn read_chunk(&mut self, max: usize) -> Result<Option<Bytes>, String> {
        let chunk = match self {
            Self::Native(stream) => stream
                .read_chunk(max, true)
                .await
                .map_err(|e| e.to_string())?,
            Self::Web(stream) => stream
                .read_chunk(max, true)
                .await
                .map_err(|e| e.to_string())?,
        };
        Ok(chunk.map(|chunk| chunk.bytes))
    }
}
