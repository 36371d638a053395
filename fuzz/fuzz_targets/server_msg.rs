//! `ServerMsg::decode` over arbitrary frame bodies and `ServerMsg::peek_event_channel` over the
//! same bytes as a whole frame: no panic, whatever decodes survives a round trip, and the peeked
//! channel of a decoded channel event is its channel.
#![no_main]

use libfuzzer_sys::fuzz_target;
use rtm_proto::frame::HEADER_LEN;
use rtm_proto::{Event, EventPart, ServerMsg, encode_frame};

fuzz_target!(|body: &[u8]| {
    let _ = ServerMsg::peek_event_channel(body);
    if let Ok(msg) = ServerMsg::decode(body) {
        let again = encode_frame(&msg);
        assert_eq!(ServerMsg::decode(&again[HEADER_LEN..]).as_ref(), Ok(&msg));
        let channel = match &msg {
            ServerMsg::Event(Event::Message(e)) => Some(&e.channel_name),
            ServerMsg::Event(Event::Topic(e)) => Some(&e.channel_name),
            ServerMsg::Event(Event::Presence(e)) => Some(&e.channel_name),
            ServerMsg::Event(Event::Storage(e)) => Some(&e.channel_name),
            ServerMsg::Event(Event::Lock(e)) => Some(&e.channel_name),
            ServerMsg::Event(Event::MessagesLost(e)) => Some(&e.channel_name),
            // A part travels with the event it belongs to.
            ServerMsg::Event(Event::Part(EventPart::Presence(e))) => Some(&e.channel_name),
            ServerMsg::Event(Event::Part(EventPart::Topic(e))) => Some(&e.channel_name),
            _ => None,
        };
        assert_eq!(
            ServerMsg::peek_event_channel(&again),
            channel.map(|c| c.as_bytes())
        );
    }
});
