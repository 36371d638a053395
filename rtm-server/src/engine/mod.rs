//! The engine boundary: where shared state and fan-out live (`docs/architecture.md`, "Engine").
//!
//! The core decides *what* should happen (validation, limits, permissions, encoding an event
//! once); the engine decides *where* it goes and keeps what must be shared. It has two sides:
//!
//! - the [`Router`]: which sessions are online, who is in which channel with which presence
//!   state, and how an encoded frame reaches their [`Outbox`]es;
//! - the [`Store`]: metadata, locks and history, and who listens to their changes.
//!
//! An [`Engine`] is both. The in-memory engine ([`MemoryEngine`]) serves one node, with metadata
//! and history in SQLite. An engine for several nodes implements the same traits over a shared
//! service: its `publish` reaches the nodes that have subscribers, and its session registry is
//! shared, so that a login on one node can close the same user's session on another. Every
//! operation that reaches shared state can fail with [`EngineError`], which the core turns into
//! the operation's error code; nothing waits without a bound.
//!
//! Every item is scoped by App ID: nothing of one app is visible to another.

mod any;
mod inspect;
mod memory;
mod redis;
pub mod relay;
mod router;
mod store;

use std::fmt;
use std::sync::Arc;

use bytes::Bytes;
use rtm_proto::{
    ChannelType, CloseReason, ErrorCode, HistoryMessage, StateDetail, SubscribeTopicCode,
    UserState, limits,
};
use tokio::sync::oneshot;

use crate::outbox::{Outbox, Pushed};

pub use any::AnyEngine;
pub use inspect::{ChannelCount, Inspect, LocalCounts, NodeInfo};
#[cfg(test)]
pub(crate) use memory::METADATA_DB_FILE;
pub use memory::{Durability, MemoryEngine};
pub use redis::{RedisConfig, RedisEngine};
pub use router::Router;
pub use store::Store;

/// Shared state and fan-out: a [`Router`] and a [`Store`], which operators can [`Inspect`].
/// See the module documentation.
pub trait Engine: Router + Store + Inspect {}

impl<T: Router + Store + Inspect> Engine for T {}

/// Identifies a session across every node of a service.
///
/// The high [`SessionId::NODE_BITS`] bits are the number of the node that issued it (0 on a
/// server that runs alone), the rest a counter of that node, from 1. A resume ticket carries
/// the id, so any node can tell which node holds the session. 0 is never issued.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl SessionId {
    /// Bits of the node number.
    pub const NODE_BITS: u32 = 24;
    /// Bits of the per-node counter.
    pub const COUNTER_BITS: u32 = 64 - Self::NODE_BITS;

    /// The `counter`th session of node `node` (both truncated to their bits).
    pub fn new(node: u32, counter: u64) -> Self {
        let node = u64::from(node) & ((1 << Self::NODE_BITS) - 1);
        let counter = counter & ((1 << Self::COUNTER_BITS) - 1);
        Self((node << Self::COUNTER_BITS) | counter)
    }

    /// The number of the node that issued the id.
    pub fn node(self) -> u32 {
        (self.0 >> Self::COUNTER_BITS) as u32
    }
}

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.node() {
            0 => write!(f, "s{}", self.0),
            node => write!(f, "s{node}.{}", self.0 & ((1 << Self::COUNTER_BITS) - 1)),
        }
    }
}

/// A logged-in session as the engine sees it: who it is and where its frames go. Cheap to clone.
#[derive(Clone, Debug)]
pub struct SessionHandle {
    inner: Arc<SessionInner>,
}

#[derive(Debug)]
struct SessionInner {
    id: SessionId,
    app_id: Box<str>,
    user_id: Box<str>,
    outbox: Outbox,
}

impl SessionHandle {
    /// A handle for session `id` of `user_id` in `app_id`, delivering to `outbox`.
    pub fn new(id: SessionId, app_id: &str, user_id: &str, outbox: Outbox) -> Self {
        Self {
            inner: Arc::new(SessionInner {
                id,
                app_id: app_id.into(),
                user_id: user_id.into(),
                outbox,
            }),
        }
    }

    /// The session's id.
    pub fn id(&self) -> SessionId {
        self.inner.id
    }

    /// The App ID the session logged in to.
    pub fn app_id(&self) -> &str {
        &self.inner.app_id
    }

    /// The session's user id.
    pub fn user_id(&self) -> &str {
        &self.inner.user_id
    }

    /// Queues a frame to the session without waiting.
    pub fn push(&self, frame: Bytes) -> Pushed {
        self.inner.outbox.push(frame)
    }

    /// Queues the frames of one event together (see [`rtm_proto::split::event_frames`]).
    pub fn push_event(&self, event: rtm_proto::Event) -> Pushed {
        self.inner
            .outbox
            .push_all(rtm_proto::split::event_frames(event))
    }

    /// Ends the session for `reason`: the client is told, then the connection closes.
    pub fn close(&self, reason: CloseReason) -> bool {
        self.inner.outbox.close(reason)
    }
}

/// What became of a frame handed to the engine.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Sessions whose queue took the frame.
    pub queued: usize,
    /// Sessions whose queue was full (they are being closed as slow consumers).
    pub overflowed: usize,
}

/// A failure of the engine itself (not of the caller's request).
#[derive(Clone, Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EngineError {
    /// The backing store could not be reached or answered with an error.
    #[error("engine unavailable: {0}")]
    Unavailable(String),
    /// The durable storage found at start cannot be used as it is (damaged, or not this
    /// server's); the text names it, says what is wrong and what the operator can do.
    #[error("{0}")]
    Unusable(String),
}

/// Why the engine refused a stream-channel operation.
#[derive(Debug, thiserror::Error)]
pub enum StreamError {
    /// The engine itself failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The stream channel already has its most users.
    #[error("the stream channel already has {0} users, the limit")]
    Full(usize),
    /// The session is not a member of the stream channel.
    #[error("not joined to this stream channel")]
    NotJoined,
    /// The session already subscribes to its most topics in this channel.
    #[error("already subscribed to {0} topics in this channel, the limit")]
    TooManyTopics(usize),
    /// The session does not subscribe to this topic.
    #[error("not subscribed to this topic")]
    NotSubscribed,
}

/// How a member takes part in a channel's presence.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PresenceFlags {
    /// It receives presence events.
    pub with_presence: bool,
    /// It is invisible to others (`be_quiet`).
    pub quiet: bool,
}

/// A member of a channel whose session was on a node that died ([`Router::departures`]).
#[derive(Clone, Debug)]
pub struct GoneMember {
    /// The session, as a handle that delivers nowhere.
    pub session: SessionHandle,
    /// The channel's type.
    pub channel_type: ChannelType,
    /// The channel.
    pub channel: String,
    /// How it was in the channel.
    pub flags: PresenceFlags,
    /// False: the session was still a member (it timed out with its node). True: it had left,
    /// and its node died before the leave's debounce window ended (the leave is told, after a
    /// window of the reaper's node).
    pub left: bool,
}

/// What the reaper of a dead node hands to the core to tell.
#[derive(Debug)]
pub enum Departed {
    /// A member of a channel.
    Member(GoneMember),
    /// A session of the dead node, whose user is no longer online (its user's name was freed).
    Session(SessionHandle),
}

/// A page of a channel's present users.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PresentPage {
    /// Visible users in the whole channel.
    pub total: usize,
    /// This page's users.
    pub users: Vec<UserState>,
    /// Whether more users follow this page.
    pub more: bool,
}

/// A change of a user's temporary state in a channel.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StateChange {
    /// Merge these pairs.
    Set(StateDetail),
    /// Remove these keys; `None` for all of them.
    Remove(Option<Vec<String>>),
}

impl StateChange {
    /// Applies the change to `current`, keeping at most `max_pairs` pairs.
    pub(crate) fn apply(
        self,
        current: &mut StateDetail,
        max_pairs: usize,
    ) -> Result<(), StateError> {
        match self {
            Self::Set(pairs) => {
                let added = pairs.keys().filter(|k| !current.contains_key(*k)).count();
                if current.len() + added > max_pairs {
                    return Err(StateError::TooMany(current.len() + added, max_pairs));
                }
                current.extend(pairs);
            }
            Self::Remove(None) => current.clear(),
            Self::Remove(Some(keys)) => {
                for key in keys {
                    current.remove(&key);
                }
            }
        }
        Ok(())
    }
}

/// Why the engine refused a state change.
#[derive(Debug, thiserror::Error)]
pub enum StateError {
    /// The engine itself failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The session is not in that channel.
    #[error("not in this channel: subscribe or join first")]
    NotPresent,
    /// The merged state would have more pairs than allowed.
    #[error("the state would have {0} pairs, the limit is {1}")]
    TooMany(usize, usize),
}

/// Why a metadata write failed (`docs/protocol.md` §5.9.1).
#[derive(Debug, thiserror::Error)]
pub enum MetadataError {
    /// The engine itself failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// The set's major revision is not the one the write expects.
    #[error("the set's major revision is {actual}, the write expects {expected}")]
    OutdatedMajor {
        /// What the write expects (0: no set).
        expected: i64,
        /// What the set has (0: no set).
        actual: i64,
    },
    /// An item's revision is not the one the write expects, or the item is missing (update,
    /// remove) or present (revision 0).
    #[error("key {key:?} is at revision {actual:?} (None: missing), the write expects {expected}")]
    Outdated {
        /// The item.
        key: String,
        /// What the write expects.
        expected: i64,
        /// What the set has.
        actual: Option<i64>,
    },
    /// The whole set was to be removed, but there is none.
    #[error("there is no metadata set to remove")]
    NoSet,
    /// The set would hold too many items.
    #[error("the set would hold {0} items, the limit is {max}", max = limits::MAX_METADATA_ITEMS)]
    TooManyItems(usize),
    /// The set would be too large.
    #[error("the set would be {0} bytes, the limit is {max}", max = limits::MAX_METADATA_SET_SIZE)]
    TooLarge(usize),
    /// The write names a lock that the writer does not hold.
    #[error("lock {0:?} of this channel is not held by you")]
    LockNotHeld(String),
}

impl MetadataError {
    /// The reference's code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Engine(_) => ErrorCode::StorageOperationFailed,
            Self::OutdatedMajor { .. } | Self::Outdated { .. } | Self::NoSet => {
                ErrorCode::StorageOutdatedRevision
            }
            Self::TooManyItems(_) => ErrorCode::StorageMetadataItemExceedLimitation,
            Self::TooLarge(_) => ErrorCode::StorageMetadataLengthOverflow,
            Self::LockNotHeld(_) => ErrorCode::StorageLockNotAcquired,
        }
    }
}

/// Why a lock operation failed (`docs/protocol.md` §5.10).
#[derive(Debug, thiserror::Error)]
pub enum LockError {
    /// The engine itself failed.
    #[error(transparent)]
    Engine(#[from] EngineError),
    /// `set_lock` of a name that exists.
    #[error("a lock of that name exists in this channel")]
    AlreadyExists,
    /// The channel has its most locks.
    #[error("the channel already has {0} locks, the limit")]
    TooMany(usize),
    /// No lock of that name in the channel.
    #[error("no lock of that name in this channel")]
    NotExist,
    /// Release or revoke of a lock that the named user does not hold.
    #[error("the lock is not held by {0:?}")]
    NotHeld(String),
    /// Acquire without retry of a lock that another user holds.
    #[error("the lock is held by {0:?}")]
    HeldBy(String),
    /// Acquire with retry while this session already waits for the lock.
    #[error("already waiting for this lock")]
    AlreadyWaiting,
}

impl LockError {
    /// The reference's code for this failure.
    pub fn code(&self) -> ErrorCode {
        match self {
            Self::Engine(_) | Self::TooMany(_) => ErrorCode::LockOperationFailed,
            Self::AlreadyExists => ErrorCode::LockAlreadyExist,
            Self::NotExist => ErrorCode::LockNotExist,
            Self::NotHeld(_) => ErrorCode::LockNotAcquired,
            Self::HeldBy(_) => ErrorCode::LockAcquireFailed,
            Self::AlreadyWaiting => ErrorCode::LockOperationPerforming,
        }
    }
}

/// What a lock operation did.
#[derive(Debug)]
pub enum LockOutcome {
    /// Done.
    Done,
    /// An acquire with retry of a lock another user holds: the answer comes when the caller
    /// gets the lock, or fails (the lock was removed). Dropping the receiver gives up.
    Waiting(oneshot::Receiver<Result<(), LockError>>),
}

/// Whose history: a message channel's, or the conversation of two users (both directions of
/// their user-channel messages).
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct HistoryKey {
    /// [`ChannelType::Message`] or [`ChannelType::User`].
    pub channel_type: ChannelType,
    /// The channel, or the two user ids, the smaller first, separated by a line feed (which no
    /// user id contains).
    pub name: String,
}

impl HistoryKey {
    /// A message channel's history.
    pub fn channel(channel: &str) -> Self {
        Self {
            channel_type: ChannelType::Message,
            name: channel.to_owned(),
        }
    }

    /// The history of the user-channel messages between `a` and `b`.
    pub fn conversation(a: &str, b: &str) -> Self {
        let (first, second) = if a <= b { (a, b) } else { (b, a) };
        Self {
            channel_type: ChannelType::User,
            name: format!("{first}\n{second}"),
        }
    }
}

/// How much history an app keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Retention {
    /// Messages per history (above 0).
    pub max_messages: u32,
    /// Milliseconds a message is kept; 0 for no age limit.
    pub max_age_ms: u64,
}

/// A page of history, as [`Store::get_messages`] answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryPage {
    /// The messages, newest first.
    pub messages: Vec<HistoryMessage>,
    /// The `start` of the next (older) page; 0 when there is none.
    pub new_start: u64,
}

impl HistoryPage {
    /// A page of at most `count` messages out of `messages`, newest first, read with one more
    /// than asked: the next page starts below the last one kept, if there was more.
    pub(crate) fn from_newest(mut messages: Vec<HistoryMessage>, count: u32) -> Self {
        let more = messages.len() > count as usize;
        messages.truncate(count as usize);
        let new_start = if more {
            messages.last().map_or(0, |m| m.timestamp)
        } else {
            0
        };
        Self {
            messages,
            new_start,
        }
    }
}

/// Sorts where-now answers by channel name, then type (both engines answer in this order).
pub(crate) fn sort_channels(channels: &mut [rtm_proto::ChannelDetail]) {
    channels.sort_by(|a, b| {
        (a.channel_name.as_str(), u8::from(a.channel_type))
            .cmp(&(b.channel_name.as_str(), u8::from(b.channel_type)))
    });
}

/// What a topic subscription did, per user.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicSubscribed {
    /// The publishers now subscribed that the call asked for (all of them, for a call without
    /// users).
    pub succeed: Vec<String>,
    /// The users the call asked for that could not be taken.
    pub failed: Vec<(String, SubscribeTopicCode)>,
}

/// Tallies one push into a [`Delivery`].
fn tally(delivery: &mut Delivery, pushed: Pushed) {
    match pushed {
        Pushed::Queued => delivery.queued += 1,
        Pushed::Overflowed => delivery.overflowed += 1,
        Pushed::Closed => {}
    }
}
