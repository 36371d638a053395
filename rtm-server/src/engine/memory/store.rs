//! The in-memory engine's [`Store`]: locks in memory, metadata and history in SQLite
//! ([`Storage`](super::storage::Storage)).

use rtm_proto::{
    ChannelType, HistoryMessage, LockDetail, LockRequest, MetadataTarget, MetadataWrite,
    StorageData,
};

use super::MemoryEngine;
use crate::engine::{
    EngineError, HistoryKey, HistoryPage, LockError, LockOutcome, MetadataError, Retention,
    SessionHandle, Store,
};

impl Store for MemoryEngine {
    fn close(&self) {
        self.store.close();
    }

    async fn write_metadata(
        &self,
        author: &SessionHandle,
        write: MetadataWrite,
    ) -> Result<StorageData, MetadataError> {
        self.store.write(author, write).await
    }

    async fn get_metadata(
        &self,
        app_id: &str,
        target: MetadataTarget,
    ) -> Result<StorageData, EngineError> {
        self.store.get(app_id, &target)
    }

    async fn listen_channel(
        &self,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
        metadata: bool,
        locks: bool,
    ) -> Result<(), EngineError> {
        self.store
            .listen_channel(session, channel_type, channel, metadata, locks)
            .await
    }

    async fn listen_user(
        &self,
        session: &SessionHandle,
        user_id: &str,
        on: bool,
    ) -> Result<usize, EngineError> {
        self.store.listen_user(session, user_id, on).await
    }

    async fn lock(
        &self,
        session: &SessionHandle,
        request: LockRequest,
    ) -> Result<LockOutcome, LockError> {
        self.store.lock(session, request)
    }

    async fn get_locks(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<Vec<LockDetail>, EngineError> {
        Ok(self.store.get_locks(app_id, channel_type, channel))
    }

    async fn session_away(&self, session: &SessionHandle) -> Result<(), EngineError> {
        self.store.away(session);
        Ok(())
    }

    async fn session_back(&self, session: &SessionHandle) -> Result<(), EngineError> {
        self.store.back(session);
        Ok(())
    }

    async fn session_ended(&self, session: &SessionHandle) -> Result<(), EngineError> {
        self.store.forget(session);
        self.store.away(session);
        Ok(())
    }

    async fn store_message(
        &self,
        app_id: &str,
        key: HistoryKey,
        message: HistoryMessage,
        retention: Retention,
    ) -> Result<u64, EngineError> {
        self.store
            .store_message(app_id, key, message, retention)
            .await
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
        self.store
            .get_messages(app_id, &key, (count, start, end), retention)
    }
}
