//! The engine boundary: where shared state and fan-out live (`docs/architecture.md`, "Engine").
//!
//! The core decides *what* should happen (validation, limits, permissions, encoding an event
//! once); the engine decides *where* it goes: which sessions are online, who subscribes to a
//! channel, and how an encoded frame reaches their [`Outbox`]es. The in-memory engine
//! ([`MemoryEngine`]) serves one node. A Redis engine for several nodes implements the same
//! trait: its `publish` goes through Redis pub/sub to the nodes that have subscribers, and its
//! session registry lives in Redis, so that a login on one node can close the same user's session
//! on another.
//!
//! Every item is scoped by App ID: nothing of one app is visible to another.

mod memory;

use std::fmt;
use std::future::Future;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use rtm_proto::{
    ChannelDetail, ChannelType, CloseReason, ErrorCode, HistoryMessage, LockDetail, LockRequest,
    MetadataTarget, MetadataWrite, StateDetail, StorageData, SubscribeOptions, SubscribeTopicCode,
    TopicInfo, UserState, limits,
};
use tokio::sync::oneshot;

use crate::outbox::{Outbox, Pushed};

pub use memory::{Durability, MemoryEngine};

/// Identifies a session on this server. Unique for the life of the process.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SessionId(pub u64);

impl fmt::Display for SessionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "s{}", self.0)
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
#[derive(Debug, thiserror::Error)]
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

/// A page of history, as [`Engine::get_messages`] answers.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct HistoryPage {
    /// The messages, newest first.
    pub messages: Vec<HistoryMessage>,
    /// The `start` of the next (older) page; 0 when there is none.
    pub new_start: u64,
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

/// Shared state and fan-out. See the module documentation.
///
/// Methods are `async` so that an engine backed by a network store fits; the in-memory engine
/// completes them without waiting. Implementations must keep the frames of one publisher to one
/// channel in the order they were published.
pub trait Engine: Send + Sync + 'static {
    /// Opens the engine's durable storage (metadata) in `data_dir`. The server calls it once,
    /// before serving; until then, metadata operations fail with `STORAGE_NOT_AVAILABLE`.
    fn open_storage(&mut self, data_dir: &Path, durability: Durability) -> Result<(), EngineError>;

    /// Closes the durable storage: once it returns, nothing of the engine has the data
    /// directory's files open, and storage operations fail. The server calls it when it shuts
    /// down (or its handle is dropped), before it releases the data directory's lock, so a
    /// successor never opens the files while this server still writes them.
    fn close_storage(&self);

    /// Registers a logged-in session. Any other session of the same user in the same app is
    /// closed with [`CloseReason::SameUidLogin`] (on whichever node it lives).
    fn attach(
        &self,
        session: &SessionHandle,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Removes a session and all its subscriptions. A session that was already replaced by a
    /// newer login of the same user leaves the newer one in place.
    fn detach(&self, session: &SessionHandle) -> impl Future<Output = ()> + Send;

    /// Adds (or updates the options of) the session's subscription to a message channel.
    fn subscribe(
        &self,
        session: &SessionHandle,
        channel: &str,
        options: SubscribeOptions,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Removes the session's subscription to a message channel, if any.
    fn unsubscribe(
        &self,
        session: &SessionHandle,
        channel: &str,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Delivers an encoded message event to every subscriber of `channel` in `app_id` that
    /// subscribed `with_message`.
    fn publish(
        &self,
        app_id: &str,
        channel: &str,
        frame: Bytes,
    ) -> impl Future<Output = Result<Delivery, EngineError>> + Send;

    /// Delivers an encoded event to the session of `user_id` in `app_id`. `Ok(None)` means the
    /// user is not online.
    fn send_to_user(
        &self,
        app_id: &str,
        user_id: &str,
        frame: Bytes,
    ) -> impl Future<Output = Result<Option<Delivery>, EngineError>> + Send;

    /// Makes the session a member of a stream channel that has fewer than `max_users` members,
    /// and returns the channel's topics with their publishers (for the joining user's
    /// snapshot). Joining again changes nothing.
    fn join_stream(
        &self,
        session: &SessionHandle,
        channel: &str,
        presence: PresenceFlags,
        max_users: usize,
    ) -> impl Future<Output = Result<Vec<TopicInfo>, StreamError>> + Send;

    /// Removes the session from a stream channel with its topics and topic subscriptions, and
    /// returns the topics it had joined as a publisher (for the others' `REMOTE_LEAVE`).
    fn leave_stream(
        &self,
        session: &SessionHandle,
        channel: &str,
    ) -> impl Future<Output = Result<Vec<String>, StreamError>> + Send;

    /// Makes the session a publisher in a topic of a channel it has joined, with `meta` (a
    /// second join replaces the meta).
    fn join_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        meta: &str,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;

    /// Stops the session publishing in a topic; its subscribers keep their subscription to it.
    fn leave_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;

    /// Adds publishers to the session's subscription of a topic: `users` (valid user ids), or
    /// with `None`, up to `max_users` of the topic's publishers, including ones that join
    /// later. A session subscribes to at most `max_topics` topics per channel and `max_users`
    /// publishers per topic; users beyond that fail with
    /// [`SubscribeTopicCode::SubUserExceedLimitation`].
    fn subscribe_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        users: Option<&[String]>,
        max_topics: usize,
        max_users: usize,
    ) -> impl Future<Output = Result<TopicSubscribed, StreamError>> + Send;

    /// Removes publishers (`Some`) or the whole topic (`None`) from the session's subscription.
    fn unsubscribe_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        users: Option<&[String]>,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;

    /// Delivers an encoded topic message of `publisher` (a session that joined the topic) to the
    /// sessions subscribed to it in that topic.
    fn publish_topic(
        &self,
        publisher: &SessionHandle,
        channel: &str,
        topic: &str,
        frame: Bytes,
    ) -> impl Future<Output = Result<Delivery, EngineError>> + Send;

    /// The visible (not quiet) users of a message or stream channel with their states, sorted
    /// by user id.
    fn present_users(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> impl Future<Output = Result<Vec<UserState>, EngineError>> + Send;

    /// A page of a channel's visible users, sorted by user id: the `limit` first after `after`
    /// (with their states if `with_states`), the total count of visible users, and whether
    /// more follow.
    fn present_page(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        after: Option<&str>,
        limit: usize,
        with_states: bool,
    ) -> impl Future<Output = Result<PresentPage, EngineError>> + Send;

    /// The channels where a user is visibly present (not quiet), sorted.
    fn user_channels(
        &self,
        app_id: &str,
        user_id: &str,
    ) -> impl Future<Output = Result<Vec<ChannelDetail>, EngineError>> + Send;

    /// Changes the session's temporary state in a channel it is in, keeping at most
    /// `max_pairs` pairs, and returns the whole state after the change. The state goes when the
    /// session leaves the channel.
    fn update_state(
        &self,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
        change: StateChange,
        max_pairs: usize,
    ) -> impl Future<Output = Result<StateDetail, StateError>> + Send;

    /// The state of a visible user of a channel; `None` if the user is not there (or quiet).
    fn get_state(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
    ) -> impl Future<Output = Result<Option<StateDetail>, EngineError>> + Send;

    /// How many visible (not quiet) users a message or stream channel has.
    fn present_count(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> impl Future<Output = Result<usize, EngineError>> + Send;

    /// Delivers an encoded presence event to the members of a message or stream channel that
    /// asked for presence, but `except`.
    fn broadcast_presence(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        except: SessionId,
        frame: Bytes,
    ) -> impl Future<Output = Result<Delivery, EngineError>> + Send;

    /// Delivers an encoded event to every member of a stream channel but `except`.
    fn broadcast_stream(
        &self,
        app_id: &str,
        channel: &str,
        except: SessionId,
        frame: Bytes,
    ) -> impl Future<Output = Result<Delivery, EngineError>> + Send;

    /// Applies a metadata write of `author` and commits it, all or nothing: the revision checks
    /// and (with `lock_name`) the check that `author`'s user holds that lock of the channel
    /// happen atomically with the write. Then the set's listeners get the whole set in an
    /// `UPDATE` storage event, in the order of the writes. Returns the set after the write.
    fn write_metadata(
        &self,
        author: &SessionHandle,
        write: MetadataWrite,
    ) -> impl Future<Output = Result<StorageData, MetadataError>> + Send;

    /// A metadata set (empty, major revision 0, when there is none).
    fn get_metadata(
        &self,
        app_id: &str,
        target: MetadataTarget,
    ) -> impl Future<Output = Result<StorageData, EngineError>> + Send;

    /// Sets whether `session` receives the storage events (`metadata`) and the lock events
    /// (`locks`) of a channel. Turning one on sends its snapshot first, in order with the
    /// changes that follow. Leaving the channel ([`Engine::unsubscribe`],
    /// [`Engine::leave_stream`], [`Engine::detach`]) turns both off.
    fn listen_channel(
        &self,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
        metadata: bool,
        locks: bool,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Sets whether `session` receives the storage events of `user_id`'s metadata; turning it
    /// on sends a snapshot. Returns how many users' metadata the session now listens to.
    fn listen_user(
        &self,
        session: &SessionHandle,
        user_id: &str,
        on: bool,
    ) -> impl Future<Output = Result<usize, EngineError>> + Send;

    /// Creates, deletes, takes, gives up or takes away a lock for `session`; the channel's
    /// lock listeners get the events.
    fn lock(
        &self,
        session: &SessionHandle,
        request: LockRequest,
    ) -> impl Future<Output = Result<LockOutcome, LockError>> + Send;

    /// A channel's locks, in creation order.
    fn get_locks(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> impl Future<Output = Result<Vec<LockDetail>, EngineError>> + Send;

    /// `session` lost its connection: the locks its user holds stay held for their ttl, then
    /// are released unless a session of the user is back ([`Engine::session_back`]).
    /// [`Engine::detach`] does the same for a session that ends.
    fn session_away(&self, session: &SessionHandle) -> impl Future<Output = ()> + Send;

    /// `session` is online (logged in, or resumed): it holds its user's locks again, and gets
    /// an `EXPIRED` lock event for each one released while the user was away.
    fn session_back(&self, session: &SessionHandle) -> impl Future<Output = ()> + Send;

    /// Stores `message` in a history, committed before this returns, with a timestamp of now
    /// or, if that is not after the history's newest, 1 ms after it (so that timestamps are
    /// unique within a history and grow); drops what `retention` no longer keeps. Returns the
    /// timestamp given.
    fn store_message(
        &self,
        app_id: &str,
        key: HistoryKey,
        message: HistoryMessage,
        retention: Retention,
    ) -> impl Future<Output = Result<u64, EngineError>> + Send;

    /// Up to `count` messages of a history, newest first, older than `start` (if not 0) and
    /// not older than `end` (if not 0), within `retention`.
    fn get_messages(
        &self,
        app_id: &str,
        key: HistoryKey,
        count: u32,
        start: u64,
        end: u64,
        retention: Retention,
    ) -> impl Future<Output = Result<HistoryPage, EngineError>> + Send;
}

/// Tallies one push into a [`Delivery`].
fn tally(delivery: &mut Delivery, pushed: Pushed) {
    match pushed {
        Pushed::Queued => delivery.queued += 1,
        Pushed::Overflowed => delivery.overflowed += 1,
        Pushed::Closed => {}
    }
}
