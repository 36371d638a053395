//! The rtm wire protocol.
//!
//! `rtm-proto` holds everything that the server and the client must agree on: the frame codec
//! (a big-endian `u32` length followed by a [postcard] body), the messages that travel in those
//! frames, the stable numeric [`ErrorCode`]s, and the validation rules for user ids, channel
//! names and custom types. `docs/protocol.md` describes the same format in prose, for people
//! writing a client in another language; its section numbers are cited in the code.
//!
//! This crate contains no networking code, spawns no tasks and reads no clock: timestamps are
//! arguments, and bytes go in and out through [`bytes`] buffers. The IO lives in `rtm-server`
//! and `rtm-client`.
//!
//! ```
//! use bytes::BytesMut;
//! use rtm_proto::{ClientMsg, FrameDecoder, Hello, PROTOCOL_VERSION, encode_frame, limits};
//!
//! // A client's first frame: its hello.
//! let hello = ClientMsg::Hello(Hello {
//!     version: PROTOCOL_VERSION,
//!     agent: "my-client/1.0".into(),
//! });
//! let frame = encode_frame(&hello);
//!
//! // The other side cuts the byte stream into frame bodies, then decodes each one.
//! let mut received = BytesMut::from(&frame[..]);
//! let mut frames = FrameDecoder::new(limits::MAX_FRAME_LEN);
//! let body = frames.decode(&mut received).unwrap().expect("a whole frame");
//! assert_eq!(ClientMsg::decode(&body).unwrap(), hello);
//! // Nothing is left, and a half-arrived frame waits for its other half.
//! assert!(frames.decode(&mut received).unwrap().is_none());
//! ```
//!
//! # Layout
//!
//! - [`frame`]: length-prefixed framing, with the size cap checked before any allocation.
//! - [`message`]: [`ClientMsg`] and [`ServerMsg`], the requests, responses and events. Their
//!   decoders never reserve memory from a count in the frame (the private `de` module).
//! - [`error`]: [`ErrorCode`], [`RtmError`] and the codec's own errors.
//! - [`presence`]: presence events and temporary user state.
//! - [`stream`]: stream channels and topics.
//! - [`storage`]: metadata with revisions, and locks.
//! - [`history`]: stored messages.
//! - [`split`]: keeping server frames within the size every client accepts.
//! - [`validate`]: the reference's length and character-set rules.
//! - [`limits`]: the reference's default limits.
#![warn(missing_docs)]

mod de;
pub mod error;
pub mod frame;
pub mod history;
pub mod limits;
pub mod message;
pub mod presence;
pub mod publish;
pub mod split;
pub mod storage;
pub mod stream;
pub mod validate;

pub use error::{DecodeError, ErrorCode, RtmError};
pub use frame::{FrameDecoder, FrameError, encode_frame};
pub use history::{GetMessagesRequest, HistoryMessage, LostMessages};
pub use message::{
    ChannelType, ClientMsg, CloseReason, Event, EventPart, Hello, LoginLimits, LoginRequest,
    MessageEvent, Payload, PublishRequest, Request, RequestId, Response, ResumeRequest, ServerMsg,
    SessionTicket, SubscribeOptions, Welcome, WireError,
};
pub use presence::{
    ChannelDetail, IntervalDetail, PresenceEvent, PresenceEventType, StateDetail, UserState,
};
pub use publish::PublishBatch;
pub use storage::{
    LockDetail, LockEvent, LockEventType, LockOp, LockRequest, MetadataItem, MetadataOp,
    MetadataOptions, MetadataTarget, MetadataWrite, StorageData, StorageEvent, StorageEventType,
    StorageType, StoredItem,
};
pub use stream::{
    FailedUser, JoinOptions, JoinTopicOptions, PublishTopicRequest, PublisherInfo,
    SubscribeTopicCode, TopicEvent, TopicEventType, TopicInfo, TopicPriority, TopicQos,
};

/// The ALPN protocol name that clients and servers negotiate. The major version lives here: a
/// breaking change to the wire format gets a new ALPN (`docs/protocol.md` §1).
pub const ALPN: &[u8] = b"rtm/1";

/// The newest protocol version this crate speaks, carried in the first frame ([`Hello`] and
/// [`Welcome`]). Versions within one ALPN only add requests: version 2 added
/// [`Request::PublishBatch`] (`docs/protocol.md` §4.1).
pub const PROTOCOL_VERSION: u16 = 2;

/// The oldest protocol version this crate still speaks.
pub const MIN_PROTOCOL_VERSION: u16 = 1;

/// The first protocol version with [`Request::PublishBatch`]: a client sends batches only on a
/// connection welcomed with this version or a later one.
pub const PUBLISH_BATCH_VERSION: u16 = 2;

/// The version a server speaks with a client whose [`Hello`] offers `offered` (the newest the
/// client speaks): the newest both speak, or `None` when the client is older than
/// [`MIN_PROTOCOL_VERSION`].
pub fn negotiate(offered: u16) -> Option<u16> {
    (offered >= MIN_PROTOCOL_VERSION).then(|| offered.min(PROTOCOL_VERSION))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The newest version both speak; a client older than the oldest supported is refused.
    #[test]
    fn negotiation_picks_the_newest_version_both_speak() {
        assert_eq!(negotiate(0), None);
        assert_eq!(negotiate(1), Some(1));
        assert_eq!(negotiate(PROTOCOL_VERSION), Some(PROTOCOL_VERSION));
        assert_eq!(negotiate(PROTOCOL_VERSION + 1), Some(PROTOCOL_VERSION));
        assert_eq!(negotiate(u16::MAX), Some(PROTOCOL_VERSION));
    }
}
