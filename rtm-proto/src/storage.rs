//! Metadata and locks on the wire (`docs/protocol.md` §5.9 and §5.10).
//!
//! Metadata: one durable set of key/value items per channel (per channel type) and per user,
//! written with revisions for compare-and-set. Locks: named, channel-scoped, held by one user at
//! a time, kept for a time-to-live after their holder's connection is lost.

use serde::{Deserialize, Serialize};

use crate::message::ChannelType;

/// Whose metadata set an operation is about.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MetadataTarget {
    /// A message or stream channel's set.
    Channel {
        /// The channel's type (message or stream); the two kinds have separate sets.
        channel_type: ChannelType,
        /// The channel.
        channel: String,
    },
    /// A user's set.
    User {
        /// The user.
        user_id: String,
    },
}

/// An item as a write names it: the key, the value, and the revision the caller expects.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataItem {
    /// The key: 1 to 32 bytes, no control characters.
    pub key: String,
    /// The value: at most 16 KiB (ignored by a remove).
    pub value: String,
    /// `-1`: no check. `0`: the item must not exist yet. Positive: the item's current
    /// revision, or the write fails with `STORAGE_OUTDATED_REVISION`.
    pub revision: i64,
}

impl MetadataItem {
    /// An item without a revision check.
    pub fn new(key: impl Into<String>, value: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            value: value.into(),
            revision: -1,
        }
    }
}

/// How a write treats the set and what the server records (the reference's `MetadataOptions`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataOptions {
    /// `-1`: no check. `0`: the set must not exist yet. Positive: the set's current major
    /// revision, or the write fails with `STORAGE_OUTDATED_REVISION`. Checked before the items'
    /// revisions.
    pub major_revision: i64,
    /// When not empty, only the current holder of this lock (in the same channel) may write;
    /// channel metadata only.
    pub lock_name: String,
    /// Record the time of the change in each item written.
    pub add_timestamp: bool,
    /// Record the writer's user id in each item written.
    pub add_user_id: bool,
}

impl Default for MetadataOptions {
    fn default() -> Self {
        Self {
            major_revision: -1,
            lock_name: String::new(),
            add_timestamp: false,
            add_user_id: false,
        }
    }
}

/// What a write does with its items.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum MetadataOp {
    /// Insert or overwrite each item (`set*Metadata`).
    Set,
    /// Overwrite items that exist; a missing one fails the write (`update*Metadata`).
    Update,
    /// Remove the items (a missing one fails the write), or the whole set when there are none
    /// (`remove*Metadata`).
    Remove,
}

/// A metadata write: all of it or nothing.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct MetadataWrite {
    /// Set, update or remove.
    pub op: MetadataOp,
    /// Whose set.
    pub target: MetadataTarget,
    /// The items.
    pub items: Vec<MetadataItem>,
    /// Revision check, lock and what to record.
    pub options: MetadataOptions,
}

impl MetadataWrite {
    /// The reference's name of the API call this write serves.
    pub fn operation(&self) -> &'static str {
        let channel = matches!(self.target, MetadataTarget::Channel { .. });
        match (self.op, channel) {
            (MetadataOp::Set, true) => "setChannelMetadata",
            (MetadataOp::Update, true) => "updateChannelMetadata",
            (MetadataOp::Remove, true) => "removeChannelMetadata",
            (MetadataOp::Set, false) => "setUserMetadata",
            (MetadataOp::Update, false) => "updateUserMetadata",
            (MetadataOp::Remove, false) => "removeUserMetadata",
        }
    }
}

/// A stored item (the reference's `MetaDataDetail` with its key).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredItem {
    /// The key.
    pub key: String,
    /// The value.
    pub value: String,
    /// The revision the server gave the item's last change.
    pub revision: i64,
    /// When it last changed, in milliseconds since the Unix epoch, if a write asked for it
    /// (`add_timestamp`); 0 otherwise.
    pub updated: u64,
    /// Who last changed it, if a write asked for it (`add_user_id`); empty otherwise.
    pub author_user_id: String,
}

/// A whole metadata set (the reference's `StorageData`): its items in the order their keys
/// were first set.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageData {
    /// The revision of the set's last change; 0 for a set that does not exist.
    pub major_revision: i64,
    /// The items.
    pub items: Vec<StoredItem>,
}

impl StorageData {
    /// The reference's `totalCount`: how many items the set has.
    pub fn total_count(&self) -> usize {
        self.items.len()
    }

    /// The item with `key`.
    pub fn get(&self, key: &str) -> Option<&StoredItem> {
        self.items.iter().find(|item| item.key == key)
    }
}

/// Whose metadata a [`StorageEvent`] is about (the reference's `StorageType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StorageType {
    /// A user's.
    User,
    /// A channel's.
    Channel,
}

/// The kind of a [`StorageEvent`] (the reference's `StorageEventType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum StorageEventType {
    /// The whole set, when a session starts listening.
    Snapshot,
    /// Reserved for an incremental mode; not sent.
    Set,
    /// The whole set after a change (set, update or remove: the reference's full-data mode).
    Update,
    /// Reserved for an incremental mode; not sent.
    Remove,
}

/// A metadata set changed, or a session started listening to it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct StorageEvent {
    /// Whose set.
    pub storage_type: StorageType,
    /// Snapshot or update.
    pub event_type: StorageEventType,
    /// The channel's type; [`ChannelType::User`] for a user's set.
    pub channel_type: ChannelType,
    /// The channel, or for a user's set, the user.
    pub channel_name: String,
    /// Who changed the set (empty for a snapshot).
    pub publisher: String,
    /// The whole set after the change.
    pub data: StorageData,
    /// Server time, in milliseconds since the Unix epoch.
    pub timestamp: u64,
}

/// What a lock request does (`docs/protocol.md` §5.10).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum LockOp {
    /// Create the lock, not held by anyone.
    Set {
        /// Seconds the lock stays held after its holder's connection is lost (clamped to
        /// 10–300; 0 means the default, 10).
        ttl: u32,
    },
    /// Delete the lock.
    Remove,
    /// Take the lock.
    Acquire {
        /// When another user holds it: wait for it instead of failing.
        retry: bool,
    },
    /// Give the lock up.
    Release,
    /// Take the lock away from `owner`.
    Revoke {
        /// The user that must hold it.
        owner: String,
    },
}

impl LockOp {
    /// The reference's name of the API call.
    pub fn operation(&self) -> &'static str {
        match self {
            Self::Set { .. } => "setLock",
            Self::Remove => "removeLock",
            Self::Acquire { .. } => "acquireLock",
            Self::Release => "releaseLock",
            Self::Revoke { .. } => "revokeLock",
        }
    }
}

/// A lock request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockRequest {
    /// The channel's type (message or stream).
    pub channel_type: ChannelType,
    /// The channel.
    pub channel: String,
    /// The lock: 1 to 64 printable ASCII characters.
    pub lock_name: String,
    /// What to do.
    pub op: LockOp,
}

/// A lock as `GetLocks` and snapshots show it (the reference's `LockDetail`).
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockDetail {
    /// The lock.
    pub lock_name: String,
    /// The user holding it; empty when free.
    pub owner: String,
    /// Its time-to-live, in seconds.
    pub ttl: u32,
}

/// The kind of a [`LockEvent`] (the reference's `LockEventType`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum LockEventType {
    /// Every lock of the channel, when a session arrives `with_lock`.
    Snapshot,
    /// A lock was created.
    Set,
    /// A lock was deleted.
    Removed,
    /// A user took a lock.
    Acquired,
    /// A lock became free (released, revoked, or its holder did not come back within its
    /// ttl).
    Released,
    /// To a returning user: a lock it held was released while it was away.
    Expired,
}

/// A lock changed, to the sessions of its channel that asked for locks.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LockEvent {
    /// The channel's type.
    pub channel_type: ChannelType,
    /// What happened.
    pub event_type: LockEventType,
    /// The channel.
    pub channel_name: String,
    /// The lock (empty for a snapshot).
    pub lock_name: String,
    /// The lock's ttl, in seconds.
    pub ttl: u32,
    /// The user holding the lock after the event; empty when free.
    pub owner: String,
    /// The user whose call caused the event (empty when the server did it, as for a ttl).
    pub publisher: String,
    /// The channel's locks, for a snapshot; empty otherwise.
    pub snapshot: Vec<LockDetail>,
    /// Server time, in milliseconds since the Unix epoch.
    pub timestamp: u64,
}
