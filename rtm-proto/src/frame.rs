//! Length-prefixed framing (`docs/protocol.md` §2).
//!
//! A frame is a big-endian `u32` body length followed by that many bytes of body. The decoder
//! checks the length against its maximum before it copies anything, treats "not enough bytes
//! yet" as the normal `Ok(None)`, and keeps whatever follows a complete frame for the next call.
//! It never reserves room for the declared length: a peer can declare any length up to the
//! maximum in four bytes, so the caller's buffer grows only as the body's bytes arrive. An
//! oversized frame is not fatal: the decoder reports it once, then discards its body as it
//! arrives, so the connection can go on with the next frame.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use serde::Serialize;

/// The size of the length prefix.
pub const HEADER_LEN: usize = 4;

/// How many bytes of an oversized frame's body the decoder keeps, so that the caller can still
/// read the request id at its start and answer that request (`docs/protocol.md` §2.2).
pub const OVERSIZED_HEAD_LEN: usize = 16;

/// A frame the decoder refused.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    /// The frame's declared length is above the maximum. Its body is being skipped; `head` holds
    /// its first bytes (up to [`OVERSIZED_HEAD_LEN`]), as far as they had arrived.
    #[error("frame of {len} bytes exceeds the maximum of {max}")]
    Oversized {
        /// The declared body length.
        len: usize,
        /// The decoder's maximum.
        max: usize,
        /// The first bytes of the body.
        head: Bytes,
    },
}

/// Splits a byte stream into frame bodies.
#[derive(Debug)]
pub struct FrameDecoder {
    max_frame_len: usize,
    /// Bytes of an oversized frame still to be thrown away.
    skipping: usize,
}

impl FrameDecoder {
    /// A decoder that refuses bodies longer than `max_frame_len` bytes.
    pub fn new(max_frame_len: usize) -> Self {
        Self {
            max_frame_len,
            skipping: 0,
        }
    }

    /// The largest body this decoder accepts.
    pub fn max_frame_len(&self) -> usize {
        self.max_frame_len
    }

    /// Changes the largest body accepted from the next frame on (a server accepts little
    /// before a login, more after).
    pub fn set_max_frame_len(&mut self, max_frame_len: usize) {
        self.max_frame_len = max_frame_len;
    }

    /// Takes the next complete frame body out of `buf`.
    ///
    /// Returns `Ok(None)` when `buf` does not hold a whole frame yet (append more bytes and call
    /// again), `Ok(Some(body))` for a frame, and [`FrameError::Oversized`] once per frame that is
    /// too long; call again after that error to go on with the bytes that follow it.
    ///
    /// It never grows `buf`, whatever length a header declares: memory follows the bytes that
    /// have arrived, not the peer's claims.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Bytes>, FrameError> {
        if self.skipping > 0 {
            let n = self.skipping.min(buf.len());
            buf.advance(n);
            self.skipping -= n;
            if self.skipping > 0 {
                return Ok(None);
            }
        }
        if buf.len() < HEADER_LEN {
            return Ok(None);
        }
        let len = u32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]) as usize;
        if len > self.max_frame_len {
            buf.advance(HEADER_LEN);
            let head = buf
                .split_to(buf.len().min(len).min(OVERSIZED_HEAD_LEN))
                .freeze();
            let rest = len - head.len();
            let now = rest.min(buf.len());
            buf.advance(now);
            self.skipping = rest - now;
            return Err(FrameError::Oversized {
                len,
                max: self.max_frame_len,
                head,
            });
        }
        if buf.len() < HEADER_LEN + len {
            // No reservation for the rest of the body: the declared length is the peer's word,
            // and the buffer grows as its bytes arrive.
            return Ok(None);
        }
        buf.advance(HEADER_LEN);
        Ok(Some(buf.split_to(len).freeze()))
    }
}

/// Encodes `msg` as one frame (length prefix and postcard body) into a new buffer.
///
/// The result is a cheap-to-clone [`Bytes`], so one event can be encoded once and queued to many
/// connections.
pub fn encode_frame<T: Serialize + ?Sized>(msg: &T) -> Bytes {
    let mut buf = BytesMut::with_capacity(64);
    encode_frame_into(msg, &mut buf);
    buf.freeze()
}

/// Appends `msg` as one frame to `buf`.
pub fn encode_frame_into<T: Serialize + ?Sized>(msg: &T, buf: &mut BytesMut) {
    let start = buf.len();
    buf.put_u32(0);
    let mut writer = buf.writer();
    // Writing into memory cannot fail, and every message type serializes: its fields are plain
    // data with no fallible `Serialize` impls.
    postcard::to_io(msg, &mut writer).expect("serializing into memory cannot fail");
    let buf = writer.into_inner();
    let len = (buf.len() - start - HEADER_LEN) as u32;
    buf[start..start + HEADER_LEN].copy_from_slice(&len.to_be_bytes());
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(body: &[u8]) -> Vec<u8> {
        let mut v = (body.len() as u32).to_be_bytes().to_vec();
        v.extend_from_slice(body);
        v
    }

    #[test]
    fn needs_more_bytes_is_not_an_error() {
        let mut d = FrameDecoder::new(100);
        let bytes = frame(b"hello");
        for cut in 0..bytes.len() {
            let mut buf = BytesMut::from(&bytes[..cut]);
            assert_eq!(d.decode(&mut buf), Ok(None), "cut at {cut}");
        }
    }

    #[test]
    fn decodes_back_to_back_frames_and_keeps_the_rest() {
        let mut d = FrameDecoder::new(100);
        let mut bytes = frame(b"one");
        bytes.extend(frame(b""));
        bytes.extend(frame(b"three"));
        bytes.extend(&[0, 0]);
        let mut buf = BytesMut::from(&bytes[..]);
        assert_eq!(d.decode(&mut buf).unwrap().unwrap(), &b"one"[..]);
        assert_eq!(d.decode(&mut buf).unwrap().unwrap(), &b""[..]);
        assert_eq!(d.decode(&mut buf).unwrap().unwrap(), &b"three"[..]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert_eq!(&buf[..], &[0, 0]);
    }

    #[test]
    fn oversized_frame_is_refused_before_allocation_and_skipped() {
        let mut d = FrameDecoder::new(8);
        // A header claiming 4 GiB must not make the decoder reserve anything.
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xff, 1, 2][..]);
        let cap = buf.capacity();
        match d.decode(&mut buf) {
            Err(FrameError::Oversized { len, max, head }) => {
                assert_eq!(len, u32::MAX as usize);
                assert_eq!(max, 8);
                assert_eq!(&head[..], &[1, 2]);
            }
            other => panic!("expected oversized, got {other:?}"),
        }
        assert!(buf.capacity() <= cap);
    }

    #[test]
    fn a_declared_length_within_the_maximum_reserves_nothing() {
        // Issue 14, defect 4: with a maximum of 4 GiB, these 5 bytes made the decoder reserve
        // 4 GiB and the process abort.
        let mut d = FrameDecoder::new(u32::MAX as usize);
        let mut buf = BytesMut::with_capacity(64);
        buf.extend_from_slice(&[0xff, 0xff, 0xff, 0xff, 0]);
        assert_eq!(d.decode(&mut buf), Ok(None));
        assert!(buf.capacity() <= 64, "capacity grew to {}", buf.capacity());
        assert_eq!(buf.len(), 5);
        // The body still decodes as it arrives, whatever the chunks.
        let mut d = FrameDecoder::new(u32::MAX as usize);
        let bytes = frame(&[3u8; 1000]);
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        for chunk in bytes.chunks(7) {
            buf.extend_from_slice(chunk);
            if let Some(f) = d.decode(&mut buf).unwrap() {
                out.push(f);
            }
        }
        assert_eq!(out, vec![Bytes::from(vec![3u8; 1000])]);
    }

    #[test]
    fn the_frame_after_an_oversized_one_decodes() {
        let mut d = FrameDecoder::new(8);
        let big = vec![7u8; 40];
        let mut bytes = frame(&big);
        bytes.extend(frame(b"next"));
        // Feed it in small pieces, as a network would.
        let mut buf = BytesMut::new();
        let mut out = Vec::new();
        let mut errors = 0;
        for chunk in bytes.chunks(5) {
            buf.extend_from_slice(chunk);
            loop {
                match d.decode(&mut buf) {
                    Ok(Some(f)) => out.push(f),
                    Ok(None) => break,
                    Err(FrameError::Oversized { head, .. }) => {
                        errors += 1;
                        assert!(head.iter().all(|&b| b == 7));
                    }
                }
            }
        }
        assert_eq!(errors, 1);
        assert_eq!(out, vec![Bytes::from_static(b"next")]);
    }

    #[test]
    fn encode_writes_the_length_prefix() {
        let f = encode_frame(&(1u8, 2u8));
        assert_eq!(&f[..], &[0, 0, 0, 2, 1, 2]);
        let mut d = FrameDecoder::new(16);
        let mut buf = BytesMut::from(&f[..]);
        assert_eq!(d.decode(&mut buf).unwrap().unwrap(), &[1u8, 2][..]);
    }
}
