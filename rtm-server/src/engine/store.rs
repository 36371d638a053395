//! The store: metadata, locks and history, the state that outlives a session
//! (`docs/architecture.md`, "Engine").

use std::future::Future;

use rtm_proto::{
    ChannelType, HistoryMessage, LockDetail, LockRequest, MetadataTarget, MetadataWrite,
    StorageData,
};

use super::{
    EngineError, HistoryKey, HistoryPage, LockError, LockOutcome, MetadataError, Retention,
    SessionHandle,
};

/// Metadata, locks and history, and who listens to their changes.
///
/// Every operation can fail with [`EngineError`] (or an error that wraps it). A write is
/// committed (as far as the store promises: see `docs/operators.md`) before it returns.
pub trait Store: Send + Sync + 'static {
    /// Closes the store: once it returns, nothing of it has the server's data directory's
    /// files open, and storage operations fail. The server calls it when it shuts down (or its
    /// handle is dropped), before it releases the data directory's lock, so that a successor
    /// never opens the files while this server still writes them.
    fn close(&self);

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
    /// changes that follow. The session turns both off when it leaves the channel.
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
    /// are released unless a session of the user is back ([`Store::session_back`]).
    /// [`Store::session_ended`] does the same for a session that ends.
    fn session_away(
        &self,
        session: &SessionHandle,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// `session` is online (logged in, or resumed): it holds its user's locks again, and gets
    /// an `EXPIRED` lock event for each one released while the user was away.
    fn session_back(
        &self,
        session: &SessionHandle,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// `session` ended: it stops listening to everything, and the locks its user holds stay
    /// held for their ttl unless another session of the user is online
    /// ([`Store::session_away`]).
    fn session_ended(
        &self,
        session: &SessionHandle,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

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
