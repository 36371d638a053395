//! The engine a server runs, chosen by its configuration (`[engine] kind`): one type for the
//! rest of the server, so that its code is compiled once rather than once per engine.

use bytes::Bytes;
use rtm_proto::{
    ChannelDetail, ChannelType, HistoryMessage, LockDetail, LockRequest, MetadataTarget,
    MetadataWrite, StateDetail, StorageData, SubscribeOptions, TopicInfo, UserState,
};

use super::{
    Delivery, EngineError, HistoryKey, HistoryPage, LockError, LockOutcome, MemoryEngine,
    MetadataError, PresenceFlags, PresentPage, RedisEngine, Retention, Router, SessionHandle,
    SessionId, StateChange, StateError, Store, StreamError, TopicSubscribed,
};

/// The in-memory engine or the Redis engine.
#[derive(Debug)]
pub enum AnyEngine {
    /// One node.
    Memory(MemoryEngine),
    /// One node of a cluster sharing Redis.
    Redis(RedisEngine),
}

impl Router for AnyEngine {
    fn departures(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<super::Departed>> {
        match self {
            Self::Memory(e) => e.departures(),
            Self::Redis(e) => e.departures(),
        }
    }

    fn relays(&self) -> Option<std::sync::Arc<super::relay::Relays>> {
        match self {
            Self::Memory(e) => e.relays(),
            Self::Redis(e) => e.relays(),
        }
    }

    fn next_session_id(&self) -> SessionId {
        match self {
            Self::Memory(e) => e.next_session_id(),
            Self::Redis(e) => e.next_session_id(),
        }
    }

    async fn attach(&self, session: &SessionHandle) -> Result<(), EngineError> {
        match self {
            Self::Memory(e) => e.attach(session).await,
            Self::Redis(e) => e.attach(session).await,
        }
    }

    async fn detach(&self, session: &SessionHandle) -> Result<(), EngineError> {
        match self {
            Self::Memory(e) => e.detach(session).await,
            Self::Redis(e) => e.detach(session).await,
        }
    }

    async fn subscribe(
        &self,
        session: &SessionHandle,
        channel: &str,
        options: SubscribeOptions,
    ) -> Result<(), EngineError> {
        match self {
            Self::Memory(e) => e.subscribe(session, channel, options).await,
            Self::Redis(e) => e.subscribe(session, channel, options).await,
        }
    }

    async fn unsubscribe(&self, session: &SessionHandle, channel: &str) -> Result<(), EngineError> {
        match self {
            Self::Memory(e) => e.unsubscribe(session, channel).await,
            Self::Redis(e) => e.unsubscribe(session, channel).await,
        }
    }

    async fn publish(
        &self,
        app_id: &str,
        channel: &str,
        frame: Bytes,
    ) -> Result<Delivery, EngineError> {
        match self {
            Self::Memory(e) => e.publish(app_id, channel, frame).await,
            Self::Redis(e) => e.publish(app_id, channel, frame).await,
        }
    }

    async fn send_to_user(
        &self,
        app_id: &str,
        user_id: &str,
        frame: Bytes,
    ) -> Result<Option<Delivery>, EngineError> {
        match self {
            Self::Memory(e) => e.send_to_user(app_id, user_id, frame).await,
            Self::Redis(e) => e.send_to_user(app_id, user_id, frame).await,
        }
    }

    async fn join_stream(
        &self,
        session: &SessionHandle,
        channel: &str,
        presence: PresenceFlags,
        max_users: usize,
    ) -> Result<Vec<TopicInfo>, StreamError> {
        match self {
            Self::Memory(e) => e.join_stream(session, channel, presence, max_users).await,
            Self::Redis(e) => e.join_stream(session, channel, presence, max_users).await,
        }
    }

    async fn leave_stream(
        &self,
        session: &SessionHandle,
        channel: &str,
    ) -> Result<Vec<String>, StreamError> {
        match self {
            Self::Memory(e) => e.leave_stream(session, channel).await,
            Self::Redis(e) => e.leave_stream(session, channel).await,
        }
    }

    async fn join_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        meta: &str,
    ) -> Result<(), StreamError> {
        match self {
            Self::Memory(e) => e.join_topic(session, channel, topic, meta).await,
            Self::Redis(e) => e.join_topic(session, channel, topic, meta).await,
        }
    }

    async fn leave_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
    ) -> Result<(), StreamError> {
        match self {
            Self::Memory(e) => e.leave_topic(session, channel, topic).await,
            Self::Redis(e) => e.leave_topic(session, channel, topic).await,
        }
    }

    async fn subscribe_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        users: Option<&[String]>,
        max_topics: usize,
        max_users: usize,
    ) -> Result<TopicSubscribed, StreamError> {
        match self {
            Self::Memory(e) => {
                e.subscribe_topic(session, channel, topic, users, max_topics, max_users)
                    .await
            }
            Self::Redis(e) => {
                e.subscribe_topic(session, channel, topic, users, max_topics, max_users)
                    .await
            }
        }
    }

    async fn unsubscribe_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        users: Option<&[String]>,
    ) -> Result<(), StreamError> {
        match self {
            Self::Memory(e) => e.unsubscribe_topic(session, channel, topic, users).await,
            Self::Redis(e) => e.unsubscribe_topic(session, channel, topic, users).await,
        }
    }

    async fn publish_topic(
        &self,
        publisher: &SessionHandle,
        channel: &str,
        topic: &str,
        frame: Bytes,
    ) -> Result<Delivery, EngineError> {
        match self {
            Self::Memory(e) => e.publish_topic(publisher, channel, topic, frame).await,
            Self::Redis(e) => e.publish_topic(publisher, channel, topic, frame).await,
        }
    }

    async fn present_users(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<Vec<UserState>, EngineError> {
        match self {
            Self::Memory(e) => e.present_users(app_id, channel_type, channel).await,
            Self::Redis(e) => e.present_users(app_id, channel_type, channel).await,
        }
    }

    async fn present_page(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        after: Option<&str>,
        limit: usize,
        with_states: bool,
    ) -> Result<PresentPage, EngineError> {
        match self {
            Self::Memory(e) => {
                e.present_page(app_id, channel_type, channel, after, limit, with_states)
                    .await
            }
            Self::Redis(e) => {
                e.present_page(app_id, channel_type, channel, after, limit, with_states)
                    .await
            }
        }
    }

    async fn user_channels(
        &self,
        app_id: &str,
        user_id: &str,
    ) -> Result<Vec<ChannelDetail>, EngineError> {
        match self {
            Self::Memory(e) => e.user_channels(app_id, user_id).await,
            Self::Redis(e) => e.user_channels(app_id, user_id).await,
        }
    }

    async fn update_state(
        &self,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
        change: StateChange,
        max_pairs: usize,
    ) -> Result<StateDetail, StateError> {
        match self {
            Self::Memory(e) => {
                e.update_state(session, channel_type, channel, change, max_pairs)
                    .await
            }
            Self::Redis(e) => {
                e.update_state(session, channel_type, channel, change, max_pairs)
                    .await
            }
        }
    }

    async fn get_state(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
    ) -> Result<Option<StateDetail>, EngineError> {
        match self {
            Self::Memory(e) => e.get_state(app_id, channel_type, channel, user_id).await,
            Self::Redis(e) => e.get_state(app_id, channel_type, channel, user_id).await,
        }
    }

    async fn present_count(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<usize, EngineError> {
        match self {
            Self::Memory(e) => e.present_count(app_id, channel_type, channel).await,
            Self::Redis(e) => e.present_count(app_id, channel_type, channel).await,
        }
    }

    async fn broadcast_presence(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        except: SessionId,
        frame: Bytes,
    ) -> Result<Delivery, EngineError> {
        match self {
            Self::Memory(e) => {
                e.broadcast_presence(app_id, channel_type, channel, except, frame)
                    .await
            }
            Self::Redis(e) => {
                e.broadcast_presence(app_id, channel_type, channel, except, frame)
                    .await
            }
        }
    }

    async fn broadcast_stream(
        &self,
        app_id: &str,
        channel: &str,
        except: SessionId,
        frame: Bytes,
    ) -> Result<Delivery, EngineError> {
        match self {
            Self::Memory(e) => e.broadcast_stream(app_id, channel, except, frame).await,
            Self::Redis(e) => e.broadcast_stream(app_id, channel, except, frame).await,
        }
    }

    async fn hold_leave(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
    ) -> Result<u64, EngineError> {
        match self {
            Self::Memory(e) => e.hold_leave(app_id, channel_type, channel, user_id).await,
            Self::Redis(e) => e.hold_leave(app_id, channel_type, channel, user_id).await,
        }
    }

    async fn release_leave(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
        ticket: u64,
    ) -> Result<bool, EngineError> {
        match self {
            Self::Memory(e) => {
                e.release_leave(app_id, channel_type, channel, user_id, ticket)
                    .await
            }
            Self::Redis(e) => {
                e.release_leave(app_id, channel_type, channel, user_id, ticket)
                    .await
            }
        }
    }

    async fn cancel_leave(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
    ) -> Result<bool, EngineError> {
        match self {
            Self::Memory(e) => e.cancel_leave(app_id, channel_type, channel, user_id).await,
            Self::Redis(e) => e.cancel_leave(app_id, channel_type, channel, user_id).await,
        }
    }

    async fn disconnect(
        &self,
        app_id: &str,
        user_id: &str,
        reason: rtm_proto::CloseReason,
    ) -> Result<bool, EngineError> {
        match self {
            Self::Memory(e) => e.disconnect(app_id, user_id, reason).await,
            Self::Redis(e) => e.disconnect(app_id, user_id, reason).await,
        }
    }
}

impl Store for AnyEngine {
    fn close(&self) {
        match self {
            Self::Memory(e) => e.close(),
            Self::Redis(e) => e.close(),
        }
    }

    async fn write_metadata(
        &self,
        author: &SessionHandle,
        write: MetadataWrite,
    ) -> Result<StorageData, MetadataError> {
        match self {
            Self::Memory(e) => e.write_metadata(author, write).await,
            Self::Redis(e) => e.write_metadata(author, write).await,
        }
    }

    async fn get_metadata(
        &self,
        app_id: &str,
        target: MetadataTarget,
    ) -> Result<StorageData, EngineError> {
        match self {
            Self::Memory(e) => e.get_metadata(app_id, target).await,
            Self::Redis(e) => e.get_metadata(app_id, target).await,
        }
    }

    async fn listen_channel(
        &self,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
        metadata: bool,
        locks: bool,
    ) -> Result<(), EngineError> {
        match self {
            Self::Memory(e) => {
                e.listen_channel(session, channel_type, channel, metadata, locks)
                    .await
            }
            Self::Redis(e) => {
                e.listen_channel(session, channel_type, channel, metadata, locks)
                    .await
            }
        }
    }

    async fn listen_user(
        &self,
        session: &SessionHandle,
        user_id: &str,
        on: bool,
    ) -> Result<usize, EngineError> {
        match self {
            Self::Memory(e) => e.listen_user(session, user_id, on).await,
            Self::Redis(e) => e.listen_user(session, user_id, on).await,
        }
    }

    async fn lock(
        &self,
        session: &SessionHandle,
        request: LockRequest,
    ) -> Result<LockOutcome, LockError> {
        match self {
            Self::Memory(e) => e.lock(session, request).await,
            Self::Redis(e) => e.lock(session, request).await,
        }
    }

    async fn get_locks(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<Vec<LockDetail>, EngineError> {
        match self {
            Self::Memory(e) => e.get_locks(app_id, channel_type, channel).await,
            Self::Redis(e) => e.get_locks(app_id, channel_type, channel).await,
        }
    }

    async fn session_away(&self, session: &SessionHandle) -> Result<(), EngineError> {
        match self {
            Self::Memory(e) => e.session_away(session).await,
            Self::Redis(e) => e.session_away(session).await,
        }
    }

    async fn session_back(&self, session: &SessionHandle) -> Result<(), EngineError> {
        match self {
            Self::Memory(e) => e.session_back(session).await,
            Self::Redis(e) => e.session_back(session).await,
        }
    }

    async fn session_ended(&self, session: &SessionHandle) -> Result<(), EngineError> {
        match self {
            Self::Memory(e) => e.session_ended(session).await,
            Self::Redis(e) => e.session_ended(session).await,
        }
    }

    async fn store_message(
        &self,
        app_id: &str,
        key: HistoryKey,
        message: HistoryMessage,
        retention: Retention,
    ) -> Result<u64, EngineError> {
        match self {
            Self::Memory(e) => e.store_message(app_id, key, message, retention).await,
            Self::Redis(e) => e.store_message(app_id, key, message, retention).await,
        }
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
        match self {
            Self::Memory(e) => {
                e.get_messages(app_id, key, count, start, end, retention)
                    .await
            }
            Self::Redis(e) => {
                e.get_messages(app_id, key, count, start, end, retention)
                    .await
            }
        }
    }
}

use super::Inspect;

impl Inspect for AnyEngine {
    fn local_counts(&self) -> super::LocalCounts {
        match self {
            Self::Memory(e) => e.local_counts(),
            Self::Redis(e) => e.local_counts(),
        }
    }

    fn node(&self) -> u32 {
        match self {
            Self::Memory(e) => Inspect::node(e),
            Self::Redis(e) => Inspect::node(e),
        }
    }

    fn local_channels(&self, app_id: &str, limit: usize) -> Vec<super::ChannelCount> {
        match self {
            Self::Memory(e) => e.local_channels(app_id, limit),
            Self::Redis(e) => e.local_channels(app_id, limit),
        }
    }

    async fn health(&self) -> Result<(), EngineError> {
        match self {
            Self::Memory(e) => e.health().await,
            Self::Redis(e) => e.health().await,
        }
    }

    async fn nodes(&self) -> Result<Vec<super::NodeInfo>, EngineError> {
        match self {
            Self::Memory(e) => e.nodes().await,
            Self::Redis(e) => e.nodes().await,
        }
    }
}
