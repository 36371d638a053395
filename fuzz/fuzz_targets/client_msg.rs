//! `ClientMsg::decode` and `ClientMsg::peek_request_id` over arbitrary frame bodies: no panic,
//! and whatever decodes survives a round trip.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtm_proto::frame::HEADER_LEN;
use rtm_proto::{ClientMsg, encode_frame};

fuzz_target!(|body: &[u8]| {
    let peeked = ClientMsg::peek_request_id(body);
    if let Ok(msg) = ClientMsg::decode(body) {
        if let ClientMsg::Request { id, .. } = &msg {
            assert_eq!(peeked, Some(*id));
        }
        let again = encode_frame(&msg);
        assert_eq!(ClientMsg::decode(&again[HEADER_LEN..]).as_ref(), Ok(&msg));
    }
});
