//! Publishing to message channels and users (`docs/protocol.md` §5.2, §5.2.1, §5.3): one
//! message per [`PublishRequest`], or several to one channel in a [`PublishBatch`].

use serde::{Deserialize, Serialize};

use crate::message::{ChannelType, Payload};

/// A publish request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishRequest {
    /// [`ChannelType::Message`] for a channel, [`ChannelType::User`] for a user.
    pub channel_type: ChannelType,
    /// The channel name, or the target user id for [`ChannelType::User`].
    pub channel: String,
    /// The payload.
    pub message: Payload,
    /// An application-defined type, empty when unused.
    pub custom_type: String,
}

/// Several publishes to one channel with the same options, sent as one request: the server
/// serves each message as a [`PublishRequest`] of its own, in order (the same checks, rate
/// limit and history), and answers once with a result per message. A client sends one when
/// calls queue up faster than its connection writes them; it saves a request and an answer per
/// message.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishBatch {
    /// [`ChannelType::Message`] for a channel, [`ChannelType::User`] for a user.
    pub channel_type: ChannelType,
    /// The channel name, or the target user id for [`ChannelType::User`].
    pub channel: String,
    /// An application-defined type, empty when unused.
    pub custom_type: String,
    /// Store every message in the channel's history (as [`crate::Request::PublishAndStore`]).
    pub store: bool,
    /// The payloads, in publish order; at most [`crate::limits::MAX_PUBLISH_BATCH`].
    pub messages: Vec<Payload>,
}

impl PublishBatch {
    /// Message `message` of the batch as a request of its own.
    pub fn request(&self, message: Payload) -> PublishRequest {
        PublishRequest {
            channel_type: self.channel_type,
            channel: self.channel.clone(),
            message,
            custom_type: self.custom_type.clone(),
        }
    }
}
