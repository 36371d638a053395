//! The frame decoder over arbitrary bytes, fed in arbitrary chunk sizes, with a maximum frame
//! length taken from the input. Every frame it yields goes to both message decoders.
//!
//! Input: 4 bytes of maximum (big-endian `u32`), 4 bytes of chunk sizes (each 1 to 64, used in
//! turn), then the stream.
#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use rtm_proto::frame::HEADER_LEN;
use rtm_proto::{ClientMsg, FrameDecoder, FrameError, ServerMsg, encode_frame};

fuzz_target!(|data: &[u8]| {
    let Some((head, stream)) = data.split_first_chunk::<8>() else {
        return;
    };
    let max = u32::from_be_bytes([head[0], head[1], head[2], head[3]]) as usize;
    let chunks = [head[4], head[5], head[6], head[7]].map(|b| 1 + usize::from(b % 64));
    let biggest = chunks.iter().max().copied().unwrap_or(0);
    let mut decoder = FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut rest = stream;
    for &chunk in chunks.iter().cycle() {
        if rest.is_empty() {
            break;
        }
        let (piece, after) = rest.split_at(chunk.min(rest.len()));
        rest = after;
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(body)) => {
                    assert!(body.len() <= max);
                    check_body(&body);
                }
                Ok(None) => break,
                Err(FrameError::Oversized { len, max: m, head }) => {
                    assert!(len > max && m == max);
                    assert!(head.len() <= rtm_proto::frame::OVERSIZED_HEAD_LEN);
                }
            }
        }
        // Only what arrived is buffered, whatever a header claims: with the usual doubling,
        // and a buffer may get back the room an earlier, bigger chunk took.
        assert!(buf.capacity() <= 2 * (max.min(stream.len()) + HEADER_LEN + biggest) + 64);
    }
});

fn check_body(body: &[u8]) {
    if let Ok(msg) = ClientMsg::decode(body) {
        let again = encode_frame(&msg);
        assert_eq!(ClientMsg::decode(&again[HEADER_LEN..]).as_ref(), Ok(&msg));
    }
    if let Ok(msg) = ServerMsg::decode(body) {
        let again = encode_frame(&msg);
        assert_eq!(ServerMsg::decode(&again[HEADER_LEN..]).as_ref(), Ok(&msg));
    }
    let _ = ClientMsg::peek_request_id(body);
}
