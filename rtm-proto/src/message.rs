//! The messages carried in frames (`docs/protocol.md` §3–§5).
//!
//! Client to server: [`ClientMsg`], on the client-opened bidirectional control stream. The first
//! frame is always [`ClientMsg::Hello`]; after it come [`ClientMsg::Request`]s, each with a
//! [`RequestId`] that the server's [`ServerMsg::Response`] echoes.
//!
//! Server to client: [`ServerMsg`]. Responses and connection-level errors travel on the control
//! stream; [`Event`]s on server-opened unidirectional delivery streams.
//!
//! Evolution rules: enum variants are only ever appended, never reordered or removed; a struct is
//! frozen once released (a new field means a new variant). A peer that receives a kind it does
//! not know answers with a typed error instead of dropping the connection.

use std::fmt;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::de::NoSizeHint;
use crate::error::{DecodeError, ErrorCode};
use crate::history::{GetMessagesRequest, HistoryMessage, LostMessages};
use crate::presence::{ChannelDetail, PresenceEvent, StateDetail, UserState};
use crate::publish::PublishBatch;
pub use crate::publish::PublishRequest;
use crate::storage::{
    LockDetail, LockEvent, LockRequest, MetadataTarget, MetadataWrite, StorageData, StorageEvent,
};
use crate::stream::{FailedUser, JoinOptions, JoinTopicOptions, PublishTopicRequest, TopicEvent};

/// Identifies a request on a connection; the response carries the same id. Chosen by the
/// client; the server does not require them to be unique or increasing.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct RequestId(pub u32);

impl fmt::Display for RequestId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A frame from the client.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ClientMsg {
    /// The first frame of a connection.
    Hello(Hello),
    /// A request to be answered with a [`ServerMsg::Response`] carrying the same id.
    Request {
        /// The id the response will carry.
        id: RequestId,
        /// What the client asks for.
        request: Request,
    },
    /// How many delivery-stream frames of this session the client has received and handled,
    /// per lane, counted from the session's first. Not answered. The server forgets the frames
    /// it kept for a resume up to those counts (`docs/protocol.md` §5.6).
    Ack {
        /// Frames received so far in this session; entry *i* is lane *i* (missing entries are
        /// 0). At most [`crate::limits::MAX_LANES`] entries.
        received: Vec<u64>,
    },
}

/// Variant index of [`ClientMsg::Request`] on the wire (postcard encodes it as a varint).
const CLIENT_MSG_REQUEST_TAG: u32 = 1;

impl ClientMsg {
    /// Decodes a frame body. All of `body` must be used.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        decode_exact(body)
    }

    /// The request id at the start of a body that is a [`ClientMsg::Request`], read without
    /// decoding the rest. This lets a peer answer a request it cannot decode (a kind it does not
    /// know, a bad field, or an oversized frame) instead of leaving the caller waiting.
    pub fn peek_request_id(body: &[u8]) -> Option<RequestId> {
        // The tag is a varint like every variant index, read as the decoder reads it (which
        // accepts overlong forms such as `81 00` for 1).
        let (tag, rest) = postcard::take_from_bytes::<u32>(body).ok()?;
        if tag != CLIENT_MSG_REQUEST_TAG {
            return None;
        }
        let (id, _) = postcard::take_from_bytes::<u32>(rest).ok()?;
        Some(RequestId(id))
    }
}

/// The first frame a client sends: which protocol version it speaks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    /// [`crate::PROTOCOL_VERSION`] of the client.
    pub version: u16,
    /// Free text naming the client library and version, for the server's logs.
    pub agent: String,
}

/// What a client can ask for.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// Log in to an app as a user. Must come before anything else but [`Request::Ping`] (or be
    /// replaced by [`Request::Resume`]).
    Login(LoginRequest),
    /// Log out; the server answers, then drops the session's subscriptions.
    Logout,
    /// Subscribe to a message channel.
    Subscribe {
        /// The channel name.
        channel: String,
        /// What to receive from it.
        options: SubscribeOptions,
    },
    /// Unsubscribe from a message channel.
    Unsubscribe {
        /// The channel name.
        channel: String,
    },
    /// Publish to a message channel or a user.
    Publish(PublishRequest),
    /// Liveness check, answered with [`Response::Pong`].
    Ping,
    /// Replace the session's login token with a fresh one (the reference's `renewToken`).
    RenewToken {
        /// The new token.
        token: String,
    },
    /// The client's periodic heartbeat, answered with [`Response::Pong`]. It carries the same
    /// count as [`ClientMsg::Ack`].
    Heartbeat {
        /// Delivery-stream frames received so far in this session, per lane, as in
        /// [`ClientMsg::Ack`].
        received: Vec<u64>,
    },
    /// Take over a session that a lost connection left on the server, instead of logging in
    /// (`docs/protocol.md` §5.6).
    Resume(ResumeRequest),
    /// Join a stream channel (`docs/protocol.md` §5.7).
    Join {
        /// The stream channel.
        channel: String,
        /// The token and what to receive.
        options: JoinOptions,
    },
    /// Leave a stream channel, with all of this user's topics and topic subscriptions in it.
    Leave {
        /// The stream channel.
        channel: String,
    },
    /// Join a topic of a joined stream channel as a publisher.
    JoinTopic {
        /// The stream channel.
        channel: String,
        /// The topic.
        topic: String,
        /// Meta, QoS and priority.
        options: JoinTopicOptions,
    },
    /// Stop publishing in a topic.
    LeaveTopic {
        /// The stream channel.
        channel: String,
        /// The topic.
        topic: String,
    },
    /// Publish a message in a joined topic.
    PublishTopic(PublishTopicRequest),
    /// Subscribe to publishers of a topic (incremental).
    SubscribeTopic {
        /// The stream channel.
        channel: String,
        /// The topic.
        topic: String,
        /// The publishers to add; empty for "up to 64 of the topic's publishers, including
        /// later ones".
        users: Vec<String>,
    },
    /// Unsubscribe from publishers of a topic, or (with no users) from the topic.
    UnsubscribeTopic {
        /// The stream channel.
        channel: String,
        /// The topic.
        topic: String,
        /// The publishers to drop; empty for all of them.
        users: Vec<String>,
    },
    /// Replace the token of a joined stream channel with a fresh one.
    RenewChannelToken {
        /// The stream channel.
        channel: String,
        /// The new RTC token.
        token: String,
    },
    /// Merge key/value pairs into this user's temporary state in a channel (`docs/protocol.md`
    /// §5.8.1).
    SetState {
        /// The channel's type (message or stream).
        channel_type: ChannelType,
        /// The channel.
        channel: String,
        /// The pairs to set.
        states: StateDetail,
    },
    /// A present user's temporary state in a channel.
    GetState {
        /// The channel's type.
        channel_type: ChannelType,
        /// The channel.
        channel: String,
        /// The user.
        user_id: String,
    },
    /// Remove keys (all of them when empty) from this user's state in a channel.
    RemoveState {
        /// The channel's type.
        channel_type: ChannelType,
        /// The channel.
        channel: String,
        /// The keys to remove; empty for all.
        keys: Vec<String>,
    },
    /// Who is in a channel, a page at a time (`docs/protocol.md` §5.8.2).
    WhoNow {
        /// The channel's type.
        channel_type: ChannelType,
        /// The channel.
        channel: String,
        /// List the users (otherwise only the count).
        include_user_id: bool,
        /// With their states.
        include_state: bool,
        /// `next_page` of the previous answer; empty for the first page.
        page: String,
    },
    /// The channels a user is in.
    WhereNow {
        /// The user.
        user_id: String,
    },
    /// Set, update or remove metadata items, or a whole set (`docs/protocol.md` §5.9).
    WriteMetadata(MetadataWrite),
    /// A whole metadata set.
    GetMetadata {
        /// Whose set.
        target: MetadataTarget,
    },
    /// Receive the storage events of a user's metadata, starting with a snapshot.
    SubscribeUserMetadata {
        /// The user.
        user_id: String,
    },
    /// Stop receiving the storage events of a user's metadata.
    UnsubscribeUserMetadata {
        /// The user.
        user_id: String,
    },
    /// Create, delete, take, give up or take away a lock (`docs/protocol.md` §5.10).
    Lock(LockRequest),
    /// A channel's locks.
    GetLocks {
        /// The channel's type (message or stream).
        channel_type: ChannelType,
        /// The channel.
        channel: String,
    },
    /// Publish to a message channel or a user, and store the message in the channel's history
    /// (the reference's `store_in_history`; `docs/protocol.md` §5.12).
    PublishAndStore(PublishRequest),
    /// A page of a channel's history.
    GetMessages(GetMessagesRequest),
    /// Several messages to one channel, with the same options, in one request (at most
    /// [`crate::limits::MAX_PUBLISH_BATCH`]); each is served as its own publish, in order, and
    /// the answer is [`Response::PublishBatch`] (`docs/protocol.md` §5.2.1).
    PublishBatch(PublishBatch),
}

impl Request {
    /// The API operation this request serves, as named in errors (`RtmError::operation`).
    pub fn operation(&self) -> &'static str {
        match self {
            Self::Login(_) => "login",
            Self::Logout => "logout",
            Self::Subscribe { .. } => "subscribe",
            Self::Unsubscribe { .. } => "unsubscribe",
            Self::Publish(_) => "publish",
            Self::Ping => "ping",
            Self::RenewToken { .. } => "renewToken",
            Self::Heartbeat { .. } => "heartbeat",
            Self::Resume(_) => "resume",
            Self::Join { .. } => "join",
            Self::Leave { .. } => "leave",
            Self::JoinTopic { .. } => "joinTopic",
            Self::LeaveTopic { .. } => "leaveTopic",
            Self::PublishTopic(_) => "publishTopicMessage",
            Self::SubscribeTopic { .. } => "subscribeTopic",
            Self::UnsubscribeTopic { .. } => "unsubscribeTopic",
            Self::RenewChannelToken { .. } => "renewToken",
            Self::SetState { .. } => "setState",
            Self::GetState { .. } => "getState",
            Self::RemoveState { .. } => "removeState",
            Self::WhoNow { .. } => "whoNow",
            Self::WhereNow { .. } => "whereNow",
            Self::WriteMetadata(write) => write.operation(),
            Self::GetMetadata {
                target: MetadataTarget::Channel { .. },
            } => "getChannelMetadata",
            Self::GetMetadata {
                target: MetadataTarget::User { .. },
            } => "getUserMetadata",
            Self::SubscribeUserMetadata { .. } => "subscribeUserMetadata",
            Self::UnsubscribeUserMetadata { .. } => "unsubscribeUserMetadata",
            Self::Lock(lock) => lock.op.operation(),
            Self::GetLocks { .. } => "getLocks",
            Self::PublishAndStore(_) => "publish",
            Self::GetMessages(_) => "getMessages",
            Self::PublishBatch(_) => "publish",
        }
    }
}

/// The login request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginRequest {
    /// The App ID.
    pub app_id: String,
    /// The user id.
    pub user_id: String,
    /// The token; empty for an app without an App Certificate.
    pub token: String,
    /// When false, the user id must be numeric (the reference's `useStringUserId: false`).
    pub use_string_user_id: bool,
    /// Seconds between the client's heartbeats (the reference's `heartbeatInterval`, 5–1800;
    /// the server clamps it). The server treats the connection as lost after this plus its
    /// grace period (10 s by default) without a frame.
    pub heartbeat_interval: u16,
    /// Seconds the server keeps the session after losing its connection, waiting for a resume
    /// (the reference's `presenceTimeout`, 5–300; the server clamps it).
    pub presence_timeout: u16,
}

/// What a client needs to resume its session on a new connection, given at login.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionTicket {
    /// The session's id on the server.
    pub session_id: u64,
    /// A random secret that proves the client owns the session.
    pub secret: [u8; 16],
}

impl fmt::Debug for SessionTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // The secret stays out of logs.
        write!(f, "SessionTicket({})", self.session_id)
    }
}

/// The resume request (`docs/protocol.md` §5.6).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ResumeRequest {
    /// The App ID of the session.
    pub app_id: String,
    /// The user id of the session.
    pub user_id: String,
    /// The ticket from the login.
    pub ticket: SessionTicket,
    /// Delivery-stream frames of the session the client has received, per lane, as in
    /// [`ClientMsg::Ack`]; the server sends again the ones after these that it still holds.
    pub received: Vec<u64>,
}

/// Options of a subscription, as in the reference's `subscribe`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubscribeOptions {
    /// Receive the channel's messages (default true).
    pub with_message: bool,
    /// Receive presence events (default true).
    pub with_presence: bool,
    /// Stay invisible to other users' presence (default false).
    pub be_quiet: bool,
    /// Receive storage events (default false).
    pub with_metadata: bool,
    /// Receive lock events (default false).
    pub with_lock: bool,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            with_message: true,
            with_presence: true,
            be_quiet: false,
            with_metadata: false,
            with_lock: false,
        }
    }
}

/// The type of a channel. On the wire it is the reference's native number (MESSAGE=1,
/// STREAM=2, USER=3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(into = "u8", try_from = "u8")]
pub enum ChannelType {
    /// A pub/sub message channel.
    #[default]
    Message,
    /// A stream channel with topics.
    Stream,
    /// The channel of one user: messages published to it reach that user.
    User,
}

impl From<ChannelType> for u8 {
    fn from(t: ChannelType) -> Self {
        match t {
            ChannelType::Message => 1,
            ChannelType::Stream => 2,
            ChannelType::User => 3,
        }
    }
}

impl TryFrom<u8> for ChannelType {
    type Error = String;
    fn try_from(n: u8) -> Result<Self, String> {
        match n {
            1 => Ok(Self::Message),
            2 => Ok(Self::Stream),
            3 => Ok(Self::User),
            n => Err(format!("unknown channel type {n}")),
        }
    }
}

impl fmt::Display for ChannelType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Message => "MESSAGE",
            Self::Stream => "STREAM",
            Self::User => "USER",
        })
    }
}

/// A message payload: text (the reference's `STRING`), bytes (`BINARY`), or either of them
/// sealed by the publisher's end-to-end encryption (`docs/protocol.md` §5.11).
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Payload {
    /// UTF-8 text.
    Text(String),
    /// Opaque bytes.
    Binary(Bytes),
    /// A sealed text or binary payload. The server relays and stores it as it is; a client
    /// with the key opens it. In an event handed to the application it means that this
    /// client could not decrypt it (no key, or another one).
    Encrypted(Bytes),
}

impl Payload {
    /// The payload's size in bytes, the figure the message size limit applies to.
    pub fn len(&self) -> usize {
        match self {
            Self::Text(s) => s.len(),
            Self::Binary(b) | Self::Encrypted(b) => b.len(),
        }
    }

    /// Whether the payload is empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The payload's bytes, whichever its type.
    pub fn as_bytes(&self) -> &[u8] {
        match self {
            Self::Text(s) => s.as_bytes(),
            Self::Binary(b) | Self::Encrypted(b) => b,
        }
    }

    /// The text, for a text payload.
    pub fn as_text(&self) -> Option<&str> {
        match self {
            Self::Text(s) => Some(s),
            Self::Binary(_) | Self::Encrypted(_) => None,
        }
    }

    /// Whether the payload is sealed (and, in an event, could not be decrypted).
    pub fn is_encrypted(&self) -> bool {
        matches!(self, Self::Encrypted(_))
    }

    /// The reference's name of the payload's type: `"STRING"` or `"BINARY"` (a sealed
    /// payload is bytes).
    pub fn message_type(&self) -> &'static str {
        match self {
            Self::Text(_) => "STRING",
            Self::Binary(_) | Self::Encrypted(_) => "BINARY",
        }
    }
}

impl fmt::Debug for Payload {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Text(s) if s.len() <= 64 => write!(f, "Text({s:?})"),
            Self::Text(s) => write!(f, "Text(<{} bytes>)", s.len()),
            Self::Binary(b) if b.len() <= 32 => write!(f, "Binary({:?})", &b[..]),
            Self::Binary(b) => write!(f, "Binary(<{} bytes>)", b.len()),
            Self::Encrypted(b) => write!(f, "Encrypted(<{} bytes>)", b.len()),
        }
    }
}

impl From<&str> for Payload {
    fn from(s: &str) -> Self {
        Self::Text(s.to_owned())
    }
}

impl From<String> for Payload {
    fn from(s: String) -> Self {
        Self::Text(s)
    }
}

impl From<Vec<u8>> for Payload {
    fn from(b: Vec<u8>) -> Self {
        Self::Binary(b.into())
    }
}

impl From<&[u8]> for Payload {
    fn from(b: &[u8]) -> Self {
        Self::Binary(Bytes::copy_from_slice(b))
    }
}

impl From<Bytes> for Payload {
    fn from(b: Bytes) -> Self {
        Self::Binary(b)
    }
}

/// A frame from the server.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ServerMsg {
    /// The answer to [`ClientMsg::Hello`]: the protocol is accepted.
    Welcome(Welcome),
    /// The answer to one request.
    Response {
        /// The request's id.
        id: RequestId,
        /// What came of it.
        result: Result<Response, WireError>,
    },
    /// Something that happened: a message, a change of the session.
    Event(Event),
    /// A problem with the connection rather than with one request: a frame that could not be
    /// decoded and carried no request id, an unsupported protocol version.
    Error(WireError),
    /// The first frame of every delivery stream: which lane the stream carries (below
    /// [`crate::limits::MAX_LANES`]). Not counted as a frame of the session.
    Lane {
        /// The lane number.
        lane: u8,
    },
}

impl ServerMsg {
    /// Decodes a frame body. All of `body` must be used.
    pub fn decode(body: &[u8]) -> Result<Self, DecodeError> {
        decode_exact(body)
    }

    /// Whether a body is a [`ServerMsg::Event`] (of any kind, even one this version does not
    /// know), read from its tag alone: over WebSocket every such frame belongs to the current
    /// lane and is counted (`docs/protocol.md` §1.5).
    pub fn is_event(body: &[u8]) -> bool {
        postcard::take_from_bytes::<u32>(body).is_ok_and(|(tag, _)| tag == SERVER_MSG_EVENT_TAG)
    }

    /// The request id at the start of a body that is a [`ServerMsg::Response`], read without
    /// decoding the rest, so that a client can fail the call whose answer it cannot read (too
    /// large, or undecodable) instead of leaving it waiting.
    pub fn peek_response_id(body: &[u8]) -> Option<RequestId> {
        let (tag, rest) = postcard::take_from_bytes::<u32>(body).ok()?;
        if tag != SERVER_MSG_RESPONSE_TAG {
            return None;
        }
        let (id, _) = postcard::take_from_bytes::<u32>(rest).ok()?;
        Some(RequestId(id))
    }

    /// The bytes of the `channel_name` of a whole frame (length header included) that holds a
    /// channel's event ([`Event::Message`], [`Event::Topic`], [`Event::Presence`],
    /// [`Event::Storage`], [`Event::Lock`] or [`Event::MessagesLost`]), read
    /// without decoding the rest; `None` for any other frame. The server picks a frame's
    /// delivery lane from it (`docs/protocol.md` §1.2), so that the events of one channel keep
    /// their order.
    pub fn peek_event_channel(frame: &[u8]) -> Option<&[u8]> {
        let body = frame.get(crate::frame::HEADER_LEN..)?;
        let (kind, rest) = postcard::take_from_bytes::<u32>(body).ok()?;
        if kind != SERVER_MSG_EVENT_TAG {
            return None;
        }
        let (mut event, mut rest) = postcard::take_from_bytes::<u32>(rest).ok()?;
        if event == EVENT_PART_TAG {
            // A part goes on the lane of the event it belongs to.
            let (part, after) = postcard::take_from_bytes::<u32>(rest).ok()?;
            event = match part {
                PART_PRESENCE_TAG => EVENT_PRESENCE_TAG,
                PART_TOPIC_TAG => EVENT_TOPIC_TAG,
                _ => return None,
            };
            rest = after;
        }
        // What comes before the name: enums (a varint variant index, one byte when the encoder
        // wrote it, but the decoder also accepts overlong forms) and `ChannelType`s (one byte).
        use PeekField::{Byte, Tag};
        let before_name: &[PeekField] = match event {
            EVENT_MESSAGE_TAG => &[Byte],           // channel_type
            EVENT_TOPIC_TAG => &[Tag],              // event_type
            EVENT_PRESENCE_TAG => &[Tag, Byte],     // event_type, channel_type
            EVENT_STORAGE_TAG => &[Tag, Tag, Byte], // storage_type, event_type, channel_type
            EVENT_LOCK_TAG => &[Byte, Tag],         // channel_type, event_type
            EVENT_LOST_TAG => &[Byte],              // channel_type
            _ => return None,
        };
        for field in before_name {
            rest = match field {
                Byte => rest.get(1..)?,
                Tag => postcard::take_from_bytes::<u32>(rest).ok()?.1,
            };
        }
        let (len, rest) = postcard::take_from_bytes::<u64>(rest).ok()?;
        rest.get(..usize::try_from(len).ok()?)
    }
}

/// A field that [`ServerMsg::peek_event_channel`] skips on its way to the channel name.
enum PeekField {
    /// An enum's variant index: a varint.
    Tag,
    /// A `ChannelType`: one byte.
    Byte,
}

/// Variant index of [`ServerMsg::Event`] on the wire.
const SERVER_MSG_EVENT_TAG: u32 = 2;
/// Variant index of [`Event::Message`] on the wire.
const EVENT_MESSAGE_TAG: u32 = 0;
/// Variant index of [`Event::Topic`] on the wire.
const EVENT_TOPIC_TAG: u32 = 3;
/// Variant index of [`Event::Presence`] on the wire.
const EVENT_PRESENCE_TAG: u32 = 5;
/// Variant index of [`Event::Storage`] on the wire.
const EVENT_STORAGE_TAG: u32 = 6;
/// Variant index of [`Event::Lock`] on the wire.
const EVENT_LOCK_TAG: u32 = 7;
/// Variant index of [`Event::MessagesLost`] on the wire.
const EVENT_LOST_TAG: u32 = 8;
/// Variant index of [`Event::Part`] on the wire.
const EVENT_PART_TAG: u32 = 9;
/// Variant index of [`EventPart::Presence`] on the wire.
const PART_PRESENCE_TAG: u32 = 0;
/// Variant index of [`EventPart::Topic`] on the wire.
const PART_TOPIC_TAG: u32 = 1;
/// Variant index of [`ServerMsg::Response`] on the wire.
const SERVER_MSG_RESPONSE_TAG: u32 = 1;

/// The server's answer to [`Hello`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Welcome {
    /// The protocol version the server speaks on this connection.
    pub version: u16,
    /// Free text naming the server and its version.
    pub server: String,
}

/// An error as it travels: the code and the reason. The client adds the operation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct WireError {
    /// The stable code.
    pub code: ErrorCode,
    /// Why.
    pub reason: String,
}

impl WireError {
    /// An error with `code` and `reason`.
    pub fn new(code: ErrorCode, reason: impl Into<String>) -> Self {
        Self {
            code,
            reason: reason.into(),
        }
    }
}

/// A successful answer. Every variant carries the server time of the operation, in
/// milliseconds since the Unix epoch.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    /// Logged in.
    Login {
        /// Server time.
        timestamp: u64,
        /// The limits that apply to this session.
        limits: LoginLimits,
        /// What the client presents to resume this session after losing its connection.
        ticket: SessionTicket,
    },
    /// Logged out.
    Logout {
        /// Server time.
        timestamp: u64,
    },
    /// Subscribed.
    Subscribe {
        /// The channel.
        channel: String,
        /// Server time.
        timestamp: u64,
    },
    /// Unsubscribed.
    Unsubscribe {
        /// The channel.
        channel: String,
        /// Server time.
        timestamp: u64,
    },
    /// Published: the message has been handed to every online subscriber's queue.
    Publish {
        /// The channel (or the target user).
        channel: String,
        /// Server time, the same as the message event's.
        timestamp: u64,
    },
    /// The answer to [`Request::Ping`] and [`Request::Heartbeat`].
    Pong {
        /// Server time.
        timestamp: u64,
    },
    /// The token was renewed.
    RenewToken {
        /// Server time.
        timestamp: u64,
    },
    /// The session was resumed on this connection.
    Resume {
        /// Server time.
        timestamp: u64,
        /// The limits that apply to this session.
        limits: LoginLimits,
        /// Per lane, the number of the next delivery-stream frame the server sends: the
        /// client's counts continue from here. Frames between the client's `received` and this
        /// number were lost (the server no longer held them).
        next_frame: Vec<u64>,
    },
    /// Joined a stream channel.
    Join {
        /// The stream channel.
        channel: String,
        /// Server time.
        timestamp: u64,
    },
    /// Left a stream channel.
    Leave {
        /// The stream channel.
        channel: String,
        /// Server time.
        timestamp: u64,
    },
    /// Joined a topic.
    JoinTopic {
        /// The stream channel.
        channel: String,
        /// The topic.
        topic: String,
        /// Server time.
        timestamp: u64,
    },
    /// Left a topic.
    LeaveTopic {
        /// The stream channel.
        channel: String,
        /// The topic.
        topic: String,
        /// Server time.
        timestamp: u64,
    },
    /// Published in a topic: the message has been handed to every subscriber's queue.
    PublishTopic {
        /// The stream channel.
        channel: String,
        /// The topic.
        topic: String,
        /// Server time, the same as the message event's.
        timestamp: u64,
    },
    /// The outcome of a topic subscription, per user.
    SubscribeTopic {
        /// The stream channel.
        channel: String,
        /// The topic.
        topic: String,
        /// Users now subscribed by this call (or already subscribed).
        succeed_users: Vec<String>,
        /// Users that could not be subscribed, with the reason for each.
        failed_users: Vec<FailedUser>,
        /// Server time.
        timestamp: u64,
    },
    /// Unsubscribed from (publishers of) a topic.
    UnsubscribeTopic {
        /// The stream channel.
        channel: String,
        /// The topic.
        topic: String,
        /// Server time.
        timestamp: u64,
    },
    /// The state was set; the answer to [`Request::SetState`] and [`Request::RemoveState`].
    State {
        /// Server time.
        timestamp: u64,
    },
    /// A user's state.
    GetState {
        /// The user.
        user_id: String,
        /// Its state in the channel.
        states: StateDetail,
        /// Server time.
        timestamp: u64,
    },
    /// A page of a channel's users.
    WhoNow {
        /// Visible users in the whole channel.
        total_occupancy: u32,
        /// This page's users (empty without `include_user_id`; states only with
        /// `include_state`).
        occupants: Vec<UserState>,
        /// What to pass as `page` for the next page; empty on the last one.
        next_page: String,
        /// Server time.
        timestamp: u64,
    },
    /// The channels a user is in.
    WhereNow {
        /// The channels.
        channels: Vec<ChannelDetail>,
        /// Server time.
        timestamp: u64,
    },
    /// A metadata write was committed.
    MetadataWritten {
        /// Items in the set after the write (the reference's `totalCount`).
        total_count: u32,
        /// The set's major revision after the write; 0 when the whole set was removed.
        major_revision: i64,
        /// Server time.
        timestamp: u64,
    },
    /// A metadata set.
    Metadata {
        /// The set (no items and major revision 0 when it does not exist).
        data: StorageData,
        /// Server time.
        timestamp: u64,
    },
    /// Done: the answer to [`Request::SubscribeUserMetadata`],
    /// [`Request::UnsubscribeUserMetadata`] and [`Request::Lock`].
    Done {
        /// Server time.
        timestamp: u64,
    },
    /// A channel's locks.
    Locks {
        /// The locks, in the order they were created.
        locks: Vec<LockDetail>,
        /// Server time.
        timestamp: u64,
    },
    /// A page of history, newest first.
    Messages {
        /// The messages.
        messages: Vec<HistoryMessage>,
        /// What to pass as `start` for the next (older) page; 0 when there is none.
        new_start: u64,
        /// Server time.
        timestamp: u64,
    },
    /// The answer to [`Request::PublishBatch`]: per message, in order, the timestamp its
    /// [`Response::Publish`] would carry, or why it was not published.
    PublishBatch {
        /// One result per message of the request.
        results: Vec<Result<u64, WireError>>,
        /// Server time of the answer.
        timestamp: u64,
    },
}

/// The limits of the app, told to the client at login.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LoginLimits {
    /// Largest message payload, in bytes.
    pub max_message_size: u32,
    /// Most message channels subscribed at once.
    pub max_subscriptions: u32,
    /// Messages a client may publish per second.
    pub publish_rate: u32,
    /// Largest frame body the server accepts, in bytes.
    pub max_frame_len: u32,
}

/// A server-pushed event.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Event {
    /// A message in a subscribed channel, or to this user.
    Message(MessageEvent),
    /// The server is ending this session; the connection closes after this event.
    SessionClosed {
        /// Why.
        reason: CloseReason,
    },
    /// A token of this session expires soon (30 s by default): renew it.
    TokenPrivilegeWillExpire {
        /// Empty for the login token; the stream channel's name for its token.
        channel_name: String,
    },
    /// Publishers joined or left topics of a joined stream channel.
    Topic(TopicEvent),
    /// The server took this session out of a channel (a stream channel whose token expired).
    ChannelLeft {
        /// The channel's type.
        channel_type: ChannelType,
        /// The channel.
        channel_name: String,
        /// Why.
        reason: CloseReason,
    },
    /// Who arrived in, left or changed state in a channel this session is in with presence.
    Presence(PresenceEvent),
    /// A metadata set this session listens to changed, or the session started listening.
    Storage(StorageEvent),
    /// A lock of a channel this session is in `with_lock` changed, or the session arrived.
    Lock(LockEvent),
    /// Messages of a channel this session missed while its connection was lost (before the
    /// messages that follow them on its lane).
    MessagesLost(LostMessages),
    /// A leading part of an event too large for one frame (a presence or topic snapshot): the
    /// parts and the event that follows them on the same lane are one event, whose lists the
    /// client joins (`docs/protocol.md` §2.2, [`crate::split`]).
    Part(EventPart),
}

/// A part of a split event: only the events that have parts, so that parts never nest.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventPart {
    /// Part of a presence snapshot.
    Presence(PresenceEvent),
    /// Part of a topic snapshot.
    Topic(TopicEvent),
}

impl From<EventPart> for Event {
    fn from(part: EventPart) -> Self {
        match part {
            EventPart::Presence(p) => Self::Presence(p),
            EventPart::Topic(t) => Self::Topic(t),
        }
    }
}

/// A message event, with the reference's fields.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MessageEvent {
    /// The channel type.
    pub channel_type: ChannelType,
    /// The channel; for a user-channel message, the publisher's user id.
    pub channel_name: String,
    /// The topic, for stream channels; empty otherwise.
    pub topic_name: String,
    /// The payload.
    pub message: Payload,
    /// The publisher's `custom_type`.
    pub custom_type: String,
    /// The publisher's user id.
    pub publisher: String,
    /// Server time of the publish, in milliseconds since the Unix epoch.
    pub timestamp: u64,
}

/// Why the server ended a session.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum CloseReason {
    /// The same user id logged in on another connection.
    SameUidLogin,
    /// The connection did not read its events fast enough and its queue overflowed.
    SlowConsumer,
    /// The server is shutting down.
    ServerShutdown,
    /// The login token expired and was not renewed.
    TokenExpired,
    /// An operator disconnected the user (the admin API).
    Kicked,
}

impl CloseReason {
    /// The QUIC application close code the server uses with this reason (`docs/protocol.md`
    /// §1.3).
    pub fn close_code(self) -> u32 {
        match self {
            Self::SameUidLogin => 0x10,
            Self::SlowConsumer => 0x11,
            Self::ServerShutdown => 0x12,
            Self::TokenExpired => 0x13,
            Self::Kicked => 0x14,
        }
    }
}

impl fmt::Display for CloseReason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::SameUidLogin => "the same user id logged in elsewhere",
            Self::SlowConsumer => "the client did not keep up with its events",
            Self::ServerShutdown => "the server is shutting down",
            Self::TokenExpired => "the login token expired",
            Self::Kicked => "an operator disconnected the user",
        })
    }
}

/// Decodes all of `body` as one `T`. Sequence and map counts are not taken as size hints beyond
/// a few elements ([`NoSizeHint`]): memory follows the elements that arrive, not the counts a
/// peer claims.
fn decode_exact<'de, T: Deserialize<'de>>(body: &'de [u8]) -> Result<T, DecodeError> {
    let mut de = postcard::Deserializer::from_bytes(body);
    let decoded = T::deserialize(NoSizeHint(&mut de)).and_then(|msg| Ok((msg, de.finalize()?)));
    match decoded {
        Ok((msg, [])) => Ok(msg),
        Ok((_, rest)) => Err(DecodeError::TrailingBytes(rest.len())),
        Err(e) => Err(DecodeError::Malformed(e.to_string())),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frame::encode_frame;

    fn body_of<T: Serialize>(msg: &T) -> Vec<u8> {
        encode_frame(msg)[crate::frame::HEADER_LEN..].to_vec()
    }

    #[test]
    fn peek_finds_the_request_id_of_a_kind_it_cannot_decode() {
        // A request with a made-up kind (variant 200) and id 77.
        let body = [CLIENT_MSG_REQUEST_TAG as u8, 77, 200, 1, 0, 0];
        assert!(ClientMsg::decode(&body).is_err());
        assert_eq!(ClientMsg::peek_request_id(&body), Some(RequestId(77)));
        // A hello has no request id.
        let hello = body_of(&ClientMsg::Hello(Hello {
            version: 1,
            agent: "x".into(),
        }));
        assert_eq!(ClientMsg::peek_request_id(&hello), None);
        assert_eq!(ClientMsg::peek_request_id(&[]), None);
    }

    #[test]
    fn peeks_agree_with_the_decoder_on_overlong_varints() {
        // Found by the `client_msg` fuzz target: the decoder reads `81 00` as variant 1 (a
        // request, here id 1, Logout), the peek read the tag as the single byte 0x81.
        let body = [0x81, 0x00, 1, 1];
        assert_eq!(
            ClientMsg::decode(&body),
            Ok(ClientMsg::Request {
                id: RequestId(1),
                request: Request::Logout,
            })
        );
        assert_eq!(ClientMsg::peek_request_id(&body), Some(RequestId(1)));
        // The same for the enums before a channel event's name: a presence event whose
        // event_type (variant 2) is written as `82 00`.
        let event = ServerMsg::Event(Event::Presence(PresenceEvent {
            event_type: crate::PresenceEventType::RemoteStateChanged,
            channel_type: ChannelType::Stream,
            channel_name: "room-42".into(),
            publisher: "p".into(),
            state_changed: Default::default(),
            interval: None,
            snapshot: Vec::new(),
            timestamp: 1,
        }));
        let frame = encode_frame(&event);
        let tag_at = crate::frame::HEADER_LEN + 2;
        assert!(frame[tag_at] < 0x80);
        let mut long = frame[..tag_at].to_vec();
        long.extend([frame[tag_at] | 0x80, 0]);
        long.extend(&frame[tag_at + 1..]);
        let len = (long.len() - crate::frame::HEADER_LEN) as u32;
        long[..crate::frame::HEADER_LEN].copy_from_slice(&len.to_be_bytes());
        assert_eq!(
            ServerMsg::decode(&long[crate::frame::HEADER_LEN..]),
            Ok(event)
        );
        assert_eq!(ServerMsg::peek_event_channel(&long), Some(&b"room-42"[..]));
    }

    #[test]
    fn trailing_bytes_are_refused() {
        let mut body = body_of(&ClientMsg::Request {
            id: RequestId(1),
            request: Request::Ping,
        });
        body.push(0);
        assert_eq!(ClientMsg::decode(&body), Err(DecodeError::TrailingBytes(1)));
    }

    #[test]
    fn unknown_channel_type_is_malformed() {
        let mut body = body_of(&ClientMsg::Request {
            id: RequestId(1),
            request: Request::Publish(PublishRequest {
                channel_type: ChannelType::User,
                channel: "c".into(),
                message: "m".into(),
                custom_type: String::new(),
            }),
        });
        // [tag=1, id=1, Publish=4, channel_type=3, ...]
        assert_eq!(body[3], 3);
        body[3] = 9;
        assert!(matches!(
            ClientMsg::decode(&body),
            Err(DecodeError::Malformed(_))
        ));
    }

    #[test]
    fn parts_do_not_nest() {
        // `Event` tag 2, then part tag 9 over and over: an error, not a recursion per byte.
        let mut body = vec![2u8];
        body.extend(std::iter::repeat_n(9u8, 100_000));
        assert!(ServerMsg::decode(&body).is_err());
    }

    #[test]
    fn peek_finds_the_id_of_a_response_only() {
        let error = encode_frame(&ServerMsg::Response {
            id: RequestId(300),
            result: Err(WireError::new(ErrorCode::InvalidParameter, "x")),
        });
        assert_eq!(
            ServerMsg::peek_response_id(&error[4..]),
            Some(RequestId(300))
        );
        // The first bytes are enough.
        assert_eq!(
            ServerMsg::peek_response_id(&error[4..7]),
            Some(RequestId(300))
        );
        let closed = encode_frame(&ServerMsg::Event(Event::SessionClosed {
            reason: CloseReason::SlowConsumer,
        }));
        assert_eq!(ServerMsg::peek_response_id(&closed[4..]), None);
        assert_eq!(ServerMsg::peek_response_id(&[]), None);
    }

    #[test]
    fn peek_finds_the_channel_of_channel_events_only() {
        let message = |channel_type| {
            encode_frame(&ServerMsg::Event(Event::Message(MessageEvent {
                channel_type,
                channel_name: "room-42".into(),
                topic_name: String::new(),
                message: Payload::Text("hi".into()),
                custom_type: String::new(),
                publisher: "p".into(),
                timestamp: 1,
            })))
        };
        for t in [ChannelType::Message, ChannelType::User, ChannelType::Stream] {
            assert_eq!(
                ServerMsg::peek_event_channel(&message(t)),
                Some(&b"room-42"[..])
            );
        }
        let closed = encode_frame(&ServerMsg::Event(Event::SessionClosed {
            reason: CloseReason::SlowConsumer,
        }));
        assert_eq!(ServerMsg::peek_event_channel(&closed), None);
        // Topic and presence events of a channel travel with its messages.
        let topic = encode_frame(&ServerMsg::Event(Event::Topic(TopicEvent {
            event_type: crate::stream::TopicEventType::RemoteLeave,
            channel_name: "room-42".into(),
            publisher: "p".into(),
            topic_infos: Vec::new(),
            timestamp: 1,
        })));
        assert_eq!(ServerMsg::peek_event_channel(&topic), Some(&b"room-42"[..]));
        let presence = encode_frame(&ServerMsg::Event(Event::Presence(PresenceEvent {
            event_type: crate::PresenceEventType::RemoteStateChanged,
            channel_type: ChannelType::Stream,
            channel_name: "room-42".into(),
            publisher: "p".into(),
            state_changed: Default::default(),
            interval: None,
            snapshot: Vec::new(),
            timestamp: 1,
        })));
        assert_eq!(
            ServerMsg::peek_event_channel(&presence),
            Some(&b"room-42"[..])
        );
        // So do storage and lock events.
        let storage = encode_frame(&ServerMsg::Event(Event::Storage(StorageEvent {
            storage_type: crate::StorageType::Channel,
            event_type: crate::StorageEventType::Update,
            channel_type: ChannelType::Message,
            channel_name: "room-42".into(),
            publisher: "p".into(),
            data: StorageData::default(),
            timestamp: 1,
        })));
        assert_eq!(
            ServerMsg::peek_event_channel(&storage),
            Some(&b"room-42"[..])
        );
        let lock = encode_frame(&ServerMsg::Event(Event::Lock(LockEvent {
            channel_type: ChannelType::Stream,
            event_type: crate::LockEventType::Acquired,
            channel_name: "room-42".into(),
            lock_name: "l".into(),
            ttl: 10,
            owner: "p".into(),
            publisher: "p".into(),
            snapshot: Vec::new(),
            timestamp: 1,
        })));
        assert_eq!(ServerMsg::peek_event_channel(&lock), Some(&b"room-42"[..]));
        let lost = encode_frame(&ServerMsg::Event(Event::MessagesLost(LostMessages {
            channel_type: ChannelType::Message,
            channel_name: "room-42".into(),
            from: 1,
            to: 2,
            count: 2,
        })));
        assert_eq!(ServerMsg::peek_event_channel(&lost), Some(&b"room-42"[..]));
        let pong = encode_frame(&ServerMsg::Response {
            id: RequestId(1),
            result: Ok(Response::Pong { timestamp: 5 }),
        });
        assert_eq!(ServerMsg::peek_event_channel(&pong), None);
        // A part of an event travels on the lane of the event.
        let presence_event = ServerMsg::decode(&presence[4..]).unwrap();
        let ServerMsg::Event(presence_event) = presence_event else {
            panic!()
        };
        let Event::Presence(presence_event) = presence_event else {
            panic!()
        };
        let part = encode_frame(&ServerMsg::Event(Event::Part(EventPart::Presence(
            presence_event,
        ))));
        assert_eq!(ServerMsg::peek_event_channel(&part), Some(&b"room-42"[..]));
        // Cut anywhere, a frame gives no name rather than a wrong one or a panic.
        let full = message(ChannelType::Message);
        for cut in 0..full.len() {
            let peeked = ServerMsg::peek_event_channel(&full[..cut]);
            assert!(peeked.is_none() || peeked == Some(&b"room-42"[..]), "{cut}");
        }
    }

    /// Golden bytes: these must never change within `rtm/1` (`docs/protocol.md` §3).
    #[test]
    fn golden_bytes() {
        let hello = ClientMsg::Hello(Hello {
            version: 1,
            agent: "a".into(),
        });
        assert_eq!(encode_frame(&hello).as_ref(), &[0, 0, 0, 4, 0, 1, 1, b'a']);
        let publish = ClientMsg::Request {
            id: RequestId(300),
            request: Request::Publish(PublishRequest {
                channel_type: ChannelType::Message,
                channel: "ch".into(),
                message: Payload::Binary(Bytes::from_static(&[9])),
                custom_type: "t".into(),
            }),
        };
        assert_eq!(
            encode_frame(&publish).as_ref(),
            &[
                0, 0, 0, 13, 1, 0xac, 0x02, 4, 1, 2, b'c', b'h', 1, 1, 9, 1, b't'
            ]
        );
        let err = ServerMsg::Response {
            id: RequestId(2),
            result: Err(WireError::new(ErrorCode::ChannelReceiverOffline, "")),
        };
        let ack = ClientMsg::Ack {
            received: vec![300, 0, 1],
        };
        assert_eq!(
            encode_frame(&ack).as_ref(),
            &[0, 0, 0, 6, 2, 3, 0xac, 0x02, 0, 1]
        );
        let ticket = SessionTicket {
            session_id: 1,
            secret: [7; 16],
        };
        let mut resume = vec![0, 0, 0, 26, 1, 5, 8, 1, b'a', 1, b'u', 1];
        resume.extend([7; 16]);
        resume.extend([1, 9]);
        assert_eq!(
            encode_frame(&ClientMsg::Request {
                id: RequestId(5),
                request: Request::Resume(ResumeRequest {
                    app_id: "a".into(),
                    user_id: "u".into(),
                    ticket,
                    received: vec![9],
                }),
            })
            .as_ref(),
            resume.as_slice()
        );
        // Stream channels start at request variant 9.
        let join = ClientMsg::Request {
            id: RequestId(1),
            request: Request::Join {
                channel: "c".into(),
                options: JoinOptions::default(),
            },
        };
        assert_eq!(
            encode_frame(&join).as_ref(),
            &[0, 0, 0, 10, 1, 1, 9, 1, b'c', 0, 1, 0, 0, 0]
        );
        // -11033 zigzag-encoded is 22065 = varint [0xb1, 0xac, 0x01].
        assert_eq!(
            encode_frame(&err).as_ref(),
            &[0, 0, 0, 7, 1, 2, 1, 0xb1, 0xac, 0x01, 0]
        );
    }
}
