//! Metadata, locks and history in the core (`docs/protocol.md` §5.9, §5.10, §5.12): the
//! [`Store`](crate::engine::Store)'s operations, with the error each failure means to the
//! client. The session checks names, its own limits and rates first.

use rtm_proto::{
    ChannelType, ErrorCode, LockDetail, LockRequest, MetadataTarget, MetadataWrite, StorageData,
    WireError,
};
use tokio::sync::oneshot;

use super::{Core, engine_failed, err};
use crate::engine::{
    Engine, HistoryKey, HistoryPage, LockError, LockOutcome, MetadataError, Retention,
    SessionHandle,
};

/// The error a client sees for a refused metadata write: the rule it broke, or, for a failure
/// of the store, a generic reason (see [`engine_failed`]).
pub(crate) fn metadata_failed(e: &MetadataError) -> WireError {
    match e {
        MetadataError::Engine(inner) => engine_failed(e.code(), inner),
        _ => err(e.code(), e.to_string()),
    }
}

/// The error a client sees for a refused lock call.
pub(crate) fn lock_failed(e: &LockError) -> WireError {
    match e {
        LockError::Engine(inner) => engine_failed(e.code(), inner),
        _ => err(e.code(), e.to_string()),
    }
}

/// What came of a lock call.
pub(crate) enum LockAnswer {
    /// Done.
    Done,
    /// An acquire with retry of a lock another user holds: its answer comes later.
    Waiting(oneshot::Receiver<Result<(), LockError>>),
}

impl<E: Engine> Core<E> {
    /// Writes metadata for `author`; returns the set after the write.
    pub(crate) async fn write_metadata(
        &self,
        author: &SessionHandle,
        write: MetadataWrite,
    ) -> Result<StorageData, WireError> {
        let started = tokio::time::Instant::now();
        let written = self.engine.write_metadata(author, write).await;
        self.metrics
            .storage_write_took("metadata", started.elapsed());
        written.map_err(|e| metadata_failed(&e))
    }

    /// A metadata set of `app_id`.
    pub(crate) async fn get_metadata(
        &self,
        app_id: &str,
        target: MetadataTarget,
    ) -> Result<StorageData, WireError> {
        self.engine
            .get_metadata(app_id, target)
            .await
            .map_err(|e| engine_failed(ErrorCode::StorageOperationFailed, &e))
    }

    /// Starts or stops `session` hearing of `user_id`'s metadata.
    pub(crate) async fn listen_user(
        &self,
        session: &SessionHandle,
        user_id: &str,
        on: bool,
    ) -> Result<(), WireError> {
        self.engine
            .listen_user(session, user_id, on)
            .await
            .map(drop)
            .map_err(|e| engine_failed(ErrorCode::StorageOperationFailed, &e))
    }

    /// Sets which storage and lock events of a channel `session` receives. A failure is logged:
    /// the subscribe or join that asked goes on without them.
    pub(crate) async fn listen_channel(
        &self,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
        metadata: bool,
        locks: bool,
    ) {
        if let Err(e) = self
            .engine
            .listen_channel(session, channel_type, channel, metadata, locks)
            .await
        {
            tracing::warn!(channel, "storage and lock events unavailable: {e}");
        }
    }

    /// A lock call of `session`.
    pub(crate) async fn lock(
        &self,
        session: &SessionHandle,
        request: LockRequest,
    ) -> Result<LockAnswer, WireError> {
        match self.engine.lock(session, request).await {
            Ok(LockOutcome::Done) => Ok(LockAnswer::Done),
            Ok(LockOutcome::Waiting(answer)) => Ok(LockAnswer::Waiting(answer)),
            Err(e) => Err(lock_failed(&e)),
        }
    }

    /// A channel's locks.
    pub(crate) async fn get_locks(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<Vec<LockDetail>, WireError> {
        self.engine
            .get_locks(app_id, channel_type, channel)
            .await
            .map_err(|e| engine_failed(ErrorCode::LockOperationFailed, &e))
    }

    /// A page of a history.
    pub(crate) async fn get_messages(
        &self,
        app_id: &str,
        key: HistoryKey,
        (count, start, end): (u32, u64, u64),
        retention: Retention,
    ) -> Result<HistoryPage, WireError> {
        self.engine
            .get_messages(app_id, key, count, start, end, retention)
            .await
            .map_err(|e| engine_failed(ErrorCode::HistoryOperationFailed, &e))
    }

    /// `session` lost its connection: its user's locks stay held for their ttl.
    pub(crate) async fn session_away(&self, session: &SessionHandle) {
        if let Err(e) = self.engine.session_away(session).await {
            // The locks then stay held until the session ends or comes back.
            tracing::warn!(session = %session.id(), "locks not set to expire: {e}");
        }
    }

    /// `session` is online again: it holds its user's locks, and hears of the ones it lost.
    pub(crate) async fn session_back(&self, session: &SessionHandle) {
        if let Err(e) = self.engine.session_back(session).await {
            tracing::warn!(session = %session.id(), "locks not taken back: {e}");
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use rtm_proto::ChannelType;

    use super::*;
    use crate::engine::SessionId;
    use crate::metrics::Metrics;
    use crate::outbox::Outbox;

    #[tokio::test]
    async fn a_failing_store_tells_the_client_neither_sql_nor_paths() {
        use crate::engine::{Durability, MemoryEngine, Store};
        use rtm_proto::{MetadataItem, MetadataOp, MetadataOptions};

        let dir = tempfile::tempdir().unwrap();
        let engine = MemoryEngine::open(dir.path(), Durability::Full).unwrap();
        // The schema changed behind the server's back: every call now fails inside SQLite.
        let other =
            rusqlite::Connection::open(dir.path().join(crate::engine::METADATA_DB_FILE)).unwrap();
        other
            .execute_batch(
                "DROP TABLE meta_set; CREATE TABLE meta_set (x INTEGER); \
                 DROP TABLE meta_item; CREATE TABLE meta_item (x INTEGER);",
            )
            .unwrap();
        let (outbox, _rx) = Outbox::new(8, Arc::new(Metrics::default()));
        let author = SessionHandle::new(SessionId(1), "app", "u", outbox);
        let target = MetadataTarget::Channel {
            channel_type: ChannelType::Message,
            channel: "room".into(),
        };
        let write = MetadataWrite {
            op: MetadataOp::Set,
            target: target.clone(),
            items: vec![MetadataItem {
                key: "k".into(),
                value: "v".into(),
                revision: -1,
            }],
            options: MetadataOptions::default(),
        };
        let written = engine.write_metadata(&author, write).await.unwrap_err();
        let read = engine.get_metadata("app", target).await.unwrap_err();
        // The detail is there for the log...
        assert!(written.to_string().contains("no such column"), "{written}");
        assert!(read.to_string().contains("no such column"), "{read}");
        // ...and the client gets the code and a reason without it.
        let answers = [
            metadata_failed(&written),
            engine_failed(ErrorCode::StorageOperationFailed, &read),
        ];
        let path = dir.path().display().to_string();
        for answer in answers {
            assert_eq!(answer.code, ErrorCode::StorageOperationFailed);
            for leak in ["meta_", "SELECT", "column", "sqlite", &path] {
                assert!(!answer.reason.contains(leak), "{leak}: {}", answer.reason);
            }
        }
    }
}
