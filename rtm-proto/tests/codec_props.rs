//! Property tests of the codec: every message survives encode → frame → decode, and no input,
//! however broken, makes the decoder panic or allocate past its maximum.

mod common;

use bytes::{Bytes, BytesMut};
use proptest::prelude::*;
use rtm_proto::{ClientMsg, FrameDecoder, FrameError, Request, RequestId, ServerMsg, encode_frame};

use common::{client_msg, server_msg};

/// Feeds `bytes` to a decoder in chunks of `chunk` bytes, collecting every frame and error.
fn decode_all(max: usize, bytes: &[u8], chunk: usize) -> (Vec<Bytes>, Vec<FrameError>, BytesMut) {
    let mut decoder = FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    let (mut frames, mut errors) = (Vec::new(), Vec::new());
    for piece in bytes.chunks(chunk.max(1)) {
        buf.extend_from_slice(piece);
        loop {
            match decoder.decode(&mut buf) {
                Ok(Some(f)) => frames.push(f),
                Ok(None) => break,
                Err(e) => errors.push(e),
            }
        }
        // The buffer never holds more than one maximum frame plus what just arrived.
        assert!(
            buf.capacity() <= max + 4 + 2 * chunk.max(1) + 64,
            "buffer grew past the cap"
        );
    }
    (frames, errors, buf)
}

proptest! {
    #[test]
    fn client_messages_round_trip(msgs in prop::collection::vec(client_msg(), 1..8),
                                  chunk in 1usize..64) {
        let mut stream = Vec::new();
        for m in &msgs {
            stream.extend_from_slice(&encode_frame(m));
        }
        let (frames, errors, rest) = decode_all(1 << 20, &stream, chunk);
        prop_assert!(errors.is_empty());
        prop_assert!(rest.is_empty());
        let decoded: Vec<ClientMsg> =
            frames.iter().map(|f| ClientMsg::decode(f).unwrap()).collect();
        prop_assert_eq!(decoded, msgs);
    }

    #[test]
    fn server_messages_round_trip(msg in server_msg()) {
        let frame = encode_frame(&msg);
        let (frames, errors, _) = decode_all(1 << 20, &frame, frame.len());
        prop_assert!(errors.is_empty());
        prop_assert_eq!(ServerMsg::decode(&frames[0]).unwrap(), msg);
    }

    #[test]
    fn garbage_never_panics(bytes in prop::collection::vec(any::<u8>(), 0..512),
                            chunk in 1usize..32) {
        let (frames, _errors, _) = decode_all(64, &bytes, chunk);
        for f in frames {
            // Any outcome is fine as long as it is a value, not a panic.
            let _ = ClientMsg::decode(&f);
            let _ = ServerMsg::decode(&f);
            let _ = ClientMsg::peek_request_id(&f);
        }
        let _ = ServerMsg::peek_event_channel(&bytes);
    }

    #[test]
    fn truncated_bodies_are_errors_not_panics(msg in client_msg(), cut in 0usize..64) {
        let frame = encode_frame(&msg);
        let body = &frame[4..];
        if cut < body.len() {
            prop_assert!(ClientMsg::decode(&body[..cut]).is_err());
        }
    }

    #[test]
    fn oversized_frames_are_reported_once_and_skipped(len in 65usize..4096,
                                                      chunk in 1usize..128) {
        let mut stream = (len as u32).to_be_bytes().to_vec();
        stream.extend(std::iter::repeat_n(0xAAu8, len));
        let after = encode_frame(&ClientMsg::Request { id: RequestId(5), request: Request::Ping });
        stream.extend_from_slice(&after);
        let (frames, errors, rest) = decode_all(64, &stream, chunk);
        prop_assert_eq!(errors.len(), 1);
        prop_assert!(rest.is_empty());
        prop_assert_eq!(frames.len(), 1);
        prop_assert_eq!(ClientMsg::decode(&frames[0]).unwrap(),
                        ClientMsg::Request { id: RequestId(5), request: Request::Ping });
    }
}
