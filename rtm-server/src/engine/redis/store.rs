//! The Redis engine's [`Store`]: metadata (`metadata.rs`, its listeners in `listeners.rs`),
//! locks (`lock_store.rs`) and history (`history.rs`) in Redis.

use rtm_proto::{
    ChannelType, HistoryMessage, LockDetail, LockRequest, MetadataTarget, MetadataWrite,
    StorageData,
};

use super::RedisEngine;
use super::metadata::{set_key, user_bus};
use crate::engine::{
    EngineError, HistoryKey, HistoryPage, LockError, LockOutcome, MetadataError, Retention,
    SessionHandle, Store,
};

impl Store for RedisEngine {
    fn close(&self) {}

    async fn write_metadata(
        &self,
        author: &SessionHandle,
        write: MetadataWrite,
    ) -> Result<StorageData, MetadataError> {
        self.write_set(author, write).await
    }

    async fn get_metadata(
        &self,
        app_id: &str,
        target: MetadataTarget,
    ) -> Result<StorageData, EngineError> {
        Ok(self.read_set(app_id, &target).await?.0.unwrap_or_default())
    }

    async fn listen_channel(
        &self,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
        metadata: bool,
        locks: bool,
    ) -> Result<(), EngineError> {
        let target = MetadataTarget::Channel {
            channel_type,
            channel: channel.to_owned(),
        };
        if metadata {
            // The session is a member: its node listens to the channel's bus already.
            self.listen_set(session, target).await?;
        } else {
            self.inner
                .listeners
                .stop(session.id(), &set_key(session.app_id(), &target));
        }
        if locks {
            self.listen_locks(session, channel_type, channel).await?;
        } else {
            let key = (session.app_id().into(), channel_type, channel.into());
            self.inner.lock_listeners.stop(session.id(), &key);
        }
        Ok(())
    }

    async fn listen_user(
        &self,
        session: &SessionHandle,
        user_id: &str,
        on: bool,
    ) -> Result<usize, EngineError> {
        let app_id = session.app_id();
        let target = MetadataTarget::User {
            user_id: user_id.to_owned(),
        };
        let set = set_key(app_id, &target);
        let shard = self.user_shard_index(app_id, user_id);
        let bus = user_bus(app_id, user_id);
        if on {
            if self.inner.listeners.is_listening(session.id(), &set) {
                return Ok(self.inner.listeners.users_of(session.id()));
            }
            self.inner
                .bus
                .join(shard, &bus, (app_id, ChannelType::User, user_id))
                .await?;
            if let Err(e) = self.listen_set(session, target).await {
                self.inner.bus.leave(shard, &bus).await;
                return Err(e);
            }
        } else if self.inner.listeners.stop(session.id(), &set) {
            self.inner.bus.leave(shard, &bus).await;
        }
        Ok(self.inner.listeners.users_of(session.id()))
    }

    async fn lock(
        &self,
        session: &SessionHandle,
        request: LockRequest,
    ) -> Result<LockOutcome, LockError> {
        self.lock_op(session, request).await
    }

    async fn get_locks(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<Vec<LockDetail>, EngineError> {
        self.lock_details(app_id, channel_type, channel).await
    }

    async fn session_away(&self, session: &SessionHandle) -> Result<(), EngineError> {
        self.locks_away(session).await
    }

    async fn session_back(&self, session: &SessionHandle) -> Result<(), EngineError> {
        self.locks_back(session).await
    }

    async fn session_ended(&self, session: &SessionHandle) -> Result<(), EngineError> {
        self.inner.lock_listeners.forget(session.id());
        for (app_id, kind, name) in self.inner.listeners.forget(session.id()) {
            if kind == ChannelType::User {
                let shard = self.user_shard_index(&app_id, &name);
                self.inner.bus.leave(shard, &user_bus(&app_id, &name)).await;
            }
        }
        self.locks_away(session).await
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
