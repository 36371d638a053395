//! Presence on the wire (`docs/protocol.md` §5.8): who is in a channel, and their temporary
//! state.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::message::ChannelType;

/// A user's temporary state in a channel: string keys to string values.
pub type StateDetail = BTreeMap<String, String>;

/// A channel a user is in, as `WhereNow` answers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChannelDetail {
    /// The channel.
    pub channel_name: String,
    /// Its type (message or stream).
    pub channel_type: ChannelType,
}

/// A present user and its state.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UserState {
    /// The user id.
    pub user_id: String,
    /// Its temporary state in the channel.
    pub states: StateDetail,
}

/// The users that joined, left or timed out during one period of interval mode, and the
/// states that changed.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct IntervalDetail {
    /// Users that joined.
    pub join: Vec<String>,
    /// Users that left.
    pub leave: Vec<String>,
    /// Users that timed out.
    pub timeout: Vec<String>,
    /// Users whose state changed, with their full state.
    pub user_state_list: Vec<UserState>,
}

/// The kind of a [`PresenceEvent`] (the reference's `PresenceEventType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum PresenceEventType {
    /// Every present user with its state, to a user that just arrived.
    Snapshot,
    /// The changes of one period, in a channel with many users.
    Interval,
    /// Another user arrived.
    RemoteJoin,
    /// Another user left (unsubscribe, leave, logout).
    RemoteLeave,
    /// Another user's connection was lost and it did not come back within its presence
    /// timeout.
    RemoteTimeout,
    /// Another user's state changed; the event carries its full state.
    RemoteStateChanged,
}

/// A presence event, to the users of a channel that asked for presence.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceEvent {
    /// What happened.
    pub event_type: PresenceEventType,
    /// The channel's type (message or stream).
    pub channel_type: ChannelType,
    /// The channel.
    pub channel_name: String,
    /// The user it is about (empty for a snapshot or an interval).
    pub publisher: String,
    /// The user's full state, for [`PresenceEventType::RemoteStateChanged`]; empty otherwise.
    pub state_changed: StateDetail,
    /// The period's changes, for [`PresenceEventType::Interval`].
    pub interval: Option<IntervalDetail>,
    /// The present users, for [`PresenceEventType::Snapshot`]; empty otherwise.
    pub snapshot: Vec<UserState>,
    /// Server time, in milliseconds since the Unix epoch.
    pub timestamp: u64,
}
