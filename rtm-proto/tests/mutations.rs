//! Mutated valid frames against the decoders (issue 14): flipped, cut, grown, shrunk, relabelled
//! and spliced frames of every message kind go through `FrameDecoder` in random chunks and
//! through both message decoders. Nothing panics, and whatever still decodes survives a round
//! trip: encoding the decoded value and decoding it again gives the same value.
//!
//! The fuzz targets in `fuzz/` explore the same ground without a time limit; this test keeps a
//! few seconds of it in the normal suite, on the stable toolchain.

mod common;

use bytes::BytesMut;
use proptest::prelude::*;
use proptest::sample::Index;
use rtm_proto::frame::HEADER_LEN;
use rtm_proto::{ClientMsg, FrameDecoder, ServerMsg, encode_frame};

use common::{client_msg, server_msg};

/// One change to a frame's bytes.
#[derive(Clone, Debug)]
enum Mutation {
    /// XOR one byte with a non-zero mask.
    Flip(Index, u8),
    /// Cut the frame at a point.
    Truncate(Index),
    /// Insert bytes at a point.
    Insert(Index, Vec<u8>),
    /// Remove up to a few bytes from a point.
    Delete(Index, usize),
    /// Write a new length prefix (the frame's first four bytes).
    SetLength(u32),
    /// Keep the start of the frame up to a point and finish it with the end of another frame.
    Splice(Index, Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        4 => (any::<Index>(), 1u8..=255).prop_map(|(at, mask)| Mutation::Flip(at, mask)),
        1 => any::<Index>().prop_map(Mutation::Truncate),
        2 => (any::<Index>(), prop::collection::vec(any::<u8>(), 1..6))
            .prop_map(|(at, bytes)| Mutation::Insert(at, bytes)),
        2 => (any::<Index>(), 1usize..6).prop_map(|(at, n)| Mutation::Delete(at, n)),
        1 => prop_oneof![0u32..64, any::<u32>()].prop_map(Mutation::SetLength),
        1 => (any::<Index>(), any::<Index>()).prop_map(|(a, b)| Mutation::Splice(a, b)),
    ]
}

/// Applies `mutations` to `frame`; `other` is the frame that splices take their ends from.
fn mutate(frame: &[u8], other: &[u8], mutations: &[Mutation]) -> Vec<u8> {
    let mut bytes = frame.to_vec();
    for m in mutations {
        match m {
            Mutation::Flip(at, mask) if !bytes.is_empty() => {
                let at = at.index(bytes.len());
                bytes[at] ^= mask;
            }
            Mutation::Truncate(at) => bytes.truncate(at.index(bytes.len() + 1)),
            Mutation::Insert(at, new) => {
                let at = at.index(bytes.len() + 1);
                bytes.splice(at..at, new.iter().copied());
            }
            Mutation::Delete(at, n) if !bytes.is_empty() => {
                let at = at.index(bytes.len());
                let end = (at + n).min(bytes.len());
                bytes.drain(at..end);
            }
            Mutation::SetLength(len) if bytes.len() >= HEADER_LEN => {
                bytes[..HEADER_LEN].copy_from_slice(&len.to_be_bytes());
            }
            Mutation::Splice(keep, from) => {
                bytes.truncate(keep.index(bytes.len() + 1));
                bytes.extend_from_slice(&other[from.index(other.len() + 1)..]);
            }
            Mutation::Flip(..) | Mutation::Delete(..) | Mutation::SetLength(_) => {}
        }
    }
    bytes
}

/// Whatever a body decodes to, it decodes to again after encoding.
fn check_body(body: &[u8]) -> Result<(), TestCaseError> {
    if let Ok(msg) = ClientMsg::decode(body) {
        let again = encode_frame(&msg);
        prop_assert_eq!(ClientMsg::decode(&again[HEADER_LEN..]), Ok(msg));
    }
    if let Ok(msg) = ServerMsg::decode(body) {
        let again = encode_frame(&msg);
        prop_assert_eq!(ServerMsg::decode(&again[HEADER_LEN..]), Ok(msg));
    }
    let _ = ClientMsg::peek_request_id(body);
    Ok(())
}

/// Feeds `bytes` to a decoder with maximum `max` in chunks of the sizes in `chunks` (cycled),
/// checking each frame it yields.
fn check_stream(bytes: &[u8], max: usize, chunks: &[usize]) -> Result<(), TestCaseError> {
    let _ = ServerMsg::peek_event_channel(bytes);
    let mut decoder = FrameDecoder::new(max);
    let mut buf = BytesMut::new();
    let mut rest = bytes;
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
                    prop_assert!(body.len() <= max);
                    check_body(&body)?;
                }
                Ok(None) => break,
                Err(_) => {}
            }
        }
        // Only what arrived is buffered, with the usual doubling (and a buffer may get back
        // the room an earlier, bigger chunk took): no reservation from a declared length.
        let biggest = chunks.iter().max().copied().unwrap_or(0);
        prop_assert!(buf.capacity() <= 2 * (max.min(bytes.len()) + HEADER_LEN + biggest) + 64);
    }
    Ok(())
}

fn max_frame_len() -> impl Strategy<Value = usize> {
    prop_oneof![Just(1usize << 20), 0usize..64, Just(u32::MAX as usize)]
}

fn chunks() -> impl Strategy<Value = Vec<usize>> {
    prop::collection::vec(1usize..40, 1..8)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 200, ..ProptestConfig::default() })]

    #[test]
    fn mutated_client_frames(msg in client_msg(), other in client_msg(),
                             mutations in prop::collection::vec(mutation(), 1..5),
                             max in max_frame_len(), chunks in chunks()) {
        let frame = encode_frame(&msg);
        let bytes = mutate(&frame, &encode_frame(&other), &mutations);
        check_body(bytes.get(HEADER_LEN..).unwrap_or_default())?;
        check_stream(&bytes, max, &chunks)?;
    }

    #[test]
    fn mutated_server_frames(msg in server_msg(), other in server_msg(),
                             mutations in prop::collection::vec(mutation(), 1..5),
                             max in max_frame_len(), chunks in chunks()) {
        let frame = encode_frame(&msg);
        let bytes = mutate(&frame, &encode_frame(&other), &mutations);
        check_body(bytes.get(HEADER_LEN..).unwrap_or_default())?;
        check_stream(&bytes, max, &chunks)?;
    }

    #[test]
    fn frames_of_mixed_kinds_back_to_back(client in client_msg(), server in server_msg(),
                                          mutations in prop::collection::vec(mutation(), 0..3),
                                          chunks in chunks()) {
        // A mutated frame followed by intact ones: the intact ones still come through when the
        // mutation left the first frame's length alone.
        let first = encode_frame(&client);
        let mutated = mutate(&first, &encode_frame(&server), &mutations);
        let mut bytes = mutated.clone();
        bytes.extend_from_slice(&encode_frame(&server));
        check_stream(&bytes, 1 << 20, &chunks)?;
        if mutated.len() >= HEADER_LEN
            && u32::from_be_bytes(mutated[..HEADER_LEN].try_into().unwrap()) as usize
                == mutated.len() - HEADER_LEN
        {
            let mut decoder = FrameDecoder::new(1 << 20);
            let mut buf = BytesMut::from(&bytes[..]);
            let _ = decoder.decode(&mut buf);
            let last = decoder.decode(&mut buf).unwrap().unwrap();
            prop_assert_eq!(ServerMsg::decode(&last), Ok(server));
        }
    }
}
