//! Stream channels and topics on the wire (`docs/protocol.md` §5.7).
//!
//! A user joins a stream channel, joins topics in it as a publisher, and subscribes to chosen
//! publishers of a topic. Topic messages travel as [`crate::Event::Message`] with
//! [`crate::ChannelType::Stream`] and a `topic_name`; who publishes in which topic travels as
//! [`TopicEvent`]s to every member of the channel.

use serde::{Deserialize, Serialize};

use crate::message::Payload;

/// Options of a stream channel join, as in the reference's `join`.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinOptions {
    /// An RTC token for this channel and user; required when the app has an App Certificate,
    /// ignored otherwise.
    pub token: String,
    /// Receive presence events (default true).
    pub with_presence: bool,
    /// Stay invisible to other users' presence (default false).
    pub be_quiet: bool,
    /// Receive storage events (default false).
    pub with_metadata: bool,
    /// Receive lock events (default false).
    pub with_lock: bool,
}

impl Default for JoinOptions {
    fn default() -> Self {
        Self {
            token: String::new(),
            with_presence: true,
            be_quiet: false,
            with_metadata: false,
            with_lock: false,
        }
    }
}

/// Delivery of a topic's messages (the reference's `RTM_MESSAGE_QOS`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TopicQos {
    /// Every message arrives, in the order its publisher sent it.
    #[default]
    Ordered,
    /// Every message arrives, but the client may not rely on the order
    /// (`docs/protocol.md` §5.7.3).
    Unordered,
}

/// Priority of a publisher's topic messages relative to its other traffic (the reference's
/// `RTM_MESSAGE_PRIORITY`). Advisory in this version (`docs/protocol.md` §5.7.3).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TopicPriority {
    /// Highest.
    Highest,
    /// High.
    High,
    /// Normal (the default).
    #[default]
    Normal,
    /// Low.
    Low,
}

/// Options of a topic join.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct JoinTopicOptions {
    /// Free data about this publisher, shown to others in topic events (at most
    /// [`crate::limits::MAX_TOPIC_META_LEN`] bytes).
    pub meta: String,
    /// Ordered or unordered delivery.
    pub qos: TopicQos,
    /// Priority.
    pub priority: TopicPriority,
}

/// A topic message to publish.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublishTopicRequest {
    /// The stream channel.
    pub channel: String,
    /// The topic, joined before.
    pub topic: String,
    /// The payload (at most [`crate::limits::MAX_TOPIC_MESSAGE_SIZE`] bytes).
    pub message: Payload,
    /// An application-defined type, empty when unused.
    pub custom_type: String,
}

/// A user that a topic subscription could not include, and why.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FailedUser {
    /// The user id as given.
    pub user: String,
    /// The reference's per-user code ([`SubscribeTopicCode`] as a number).
    pub error_code: i32,
    /// Why, in words.
    pub reason: String,
}

/// The reference's per-user codes of `subscribeTopic` (`SubscribeTopicErrorCode`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum SubscribeTopicCode {
    /// The user id is not a valid user id.
    InvalidRemoteUser = 6,
    /// Taking this user would exceed the publishers per topic subscription
    /// ([`crate::limits::MAX_TOPIC_SUBSCRIBED_USERS`]).
    SubUserExceedLimitation = 20003,
    /// (Unsubscribe) the user was not subscribed.
    NotSubscribedUser = 20004,
}

impl SubscribeTopicCode {
    /// The number on the wire and in the reference.
    pub fn code(self) -> i32 {
        self as i32
    }
}

/// A publisher in a topic, as topic events show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PublisherInfo {
    /// The publisher's user id.
    pub user_id: String,
    /// The meta it joined the topic with.
    pub meta: String,
}

/// A topic and (some of) its publishers, as topic events show it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicInfo {
    /// The topic.
    pub topic_name: String,
    /// The publishers this event is about: all of them in a snapshot, the one that joined or
    /// left otherwise.
    pub publishers: Vec<PublisherInfo>,
}

/// The kind of a [`TopicEvent`] (the reference's `eventType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum TopicEventType {
    /// Every topic of the channel with its publishers, to a user that just joined the channel.
    Snapshot,
    /// Another member joined a topic as a publisher.
    RemoteJoin,
    /// Another member left a topic (or the channel).
    RemoteLeave,
}

/// A topic event, to the members of a stream channel.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopicEvent {
    /// What happened.
    pub event_type: TopicEventType,
    /// The stream channel.
    pub channel_name: String,
    /// Who did it (empty in a snapshot).
    pub publisher: String,
    /// The topics concerned.
    pub topic_infos: Vec<TopicInfo>,
    /// Server time, in milliseconds since the Unix epoch.
    pub timestamp: u64,
}
