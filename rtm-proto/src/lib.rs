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

/// The protocol version carried in the first frame ([`Hello`] and [`Welcome`]).
pub const PROTOCOL_VERSION: u16 = 1;
