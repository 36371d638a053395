//! Message history on the wire (`docs/protocol.md` §5.12): messages published with
//! `store_in_history`, read back a page at a time, newest first.

use serde::{Deserialize, Serialize};

use crate::message::{ChannelType, Payload};

/// Most messages one `GetMessages` returns.
pub const MAX_HISTORY_PAGE: u32 = 100;

/// A stored message (the reference's `HistoryMessage`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct HistoryMessage {
    /// The payload, as published (sealed, if the publisher encrypts).
    pub message: Payload,
    /// The publisher's custom type.
    pub custom_type: String,
    /// The publisher.
    pub publisher: String,
    /// Server time of the publish, in milliseconds since the Unix epoch; unique within a
    /// channel's history.
    pub timestamp: u64,
}

/// Messages of one channel that a resumed session missed: the server no longer held them when
/// the client came back (`docs/protocol.md` §5.12.1).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LostMessages {
    /// [`ChannelType::Message`] or [`ChannelType::User`] (then `channel_name` is the
    /// publisher).
    pub channel_type: ChannelType,
    /// The channel, or the user who sent them.
    pub channel_name: String,
    /// The timestamp of the first message missed.
    pub from: u64,
    /// The timestamp of the last message missed.
    pub to: u64,
    /// How many were missed.
    pub count: u32,
}

/// A history query (the reference's `getMessages` with `GetHistoryMessageOptions`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct GetMessagesRequest {
    /// [`ChannelType::Message`], or [`ChannelType::User`] for the messages between the caller
    /// and the user named by `channel`.
    pub channel_type: ChannelType,
    /// The channel, or the other user.
    pub channel: String,
    /// At most this many messages (1–100; 0 means 100).
    pub message_count: u32,
    /// Only messages strictly older than this timestamp (0: no bound): the previous page's
    /// `new_start`.
    pub start: u64,
    /// Only messages at this timestamp or newer (0: no bound).
    pub end: u64,
}
