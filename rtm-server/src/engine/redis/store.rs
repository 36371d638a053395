//! The Redis engine's [`Store`]: history in Redis Streams (`history.rs`). Metadata and locks in
//! Redis are the next step of the cluster work (issue 17); until then those calls fail with a
//! clear [`EngineError::Unavailable`] instead of answering from one node's memory.

use rtm_proto::{
    ChannelType, HistoryMessage, LockDetail, LockRequest, MetadataTarget, MetadataWrite,
    StorageData,
};

use super::RedisEngine;
use crate::engine::{
    EngineError, HistoryKey, HistoryPage, LockError, LockOutcome, MetadataError, Retention,
    SessionHandle, Store,
};

fn not_yet(what: &str) -> EngineError {
    EngineError::Unavailable(format!("{what} is not served by the Redis engine yet"))
}

impl Store for RedisEngine {
    fn close(&self) {}

    async fn write_metadata(
        &self,
        _author: &SessionHandle,
        _write: MetadataWrite,
    ) -> Result<StorageData, MetadataError> {
        Err(not_yet("metadata").into())
    }

    async fn get_metadata(
        &self,
        _app_id: &str,
        _target: MetadataTarget,
    ) -> Result<StorageData, EngineError> {
        Err(not_yet("metadata"))
    }

    async fn listen_channel(
        &self,
        _session: &SessionHandle,
        _channel_type: ChannelType,
        _channel: &str,
        metadata: bool,
        locks: bool,
    ) -> Result<(), EngineError> {
        if metadata || locks {
            return Err(not_yet("metadata and lock events"));
        }
        Ok(())
    }

    async fn listen_user(
        &self,
        _session: &SessionHandle,
        _user_id: &str,
        _on: bool,
    ) -> Result<usize, EngineError> {
        Err(not_yet("user metadata"))
    }

    async fn lock(
        &self,
        _session: &SessionHandle,
        _request: LockRequest,
    ) -> Result<LockOutcome, LockError> {
        Err(not_yet("locks").into())
    }

    async fn get_locks(
        &self,
        _app_id: &str,
        _channel_type: ChannelType,
        _channel: &str,
    ) -> Result<Vec<LockDetail>, EngineError> {
        Err(not_yet("locks"))
    }

    // No lock can be held through this engine yet: nothing to keep or give back.
    async fn session_away(&self, _session: &SessionHandle) -> Result<(), EngineError> {
        Ok(())
    }

    async fn session_back(&self, _session: &SessionHandle) -> Result<(), EngineError> {
        Ok(())
    }

    async fn session_ended(&self, _session: &SessionHandle) -> Result<(), EngineError> {
        Ok(())
    }

    async fn store_message(
        &self,
        app_id: &str,
        key: HistoryKey,
        message: HistoryMessage,
        retention: Retention,
    ) -> Result<u64, EngineError> {
        self.append(app_id, key, message, retention).await
    }

    async fn get_messages(
        &self,
        app_id: &str,
        key: HistoryKey,
        count: u32,
        start: u64,
        end: u64,
        retention: Retention,
    ) -> Result<HistoryPage, EngineError> {
        self.page(app_id, key, (count, start, end), retention).await
    }
}
