//! Stream channels and topics in the core (`docs/protocol.md` §5.7): what joining, leaving and
//! publishing mean, and the topic events they cause. The per-session side (which channels a
//! session joined, its topics and their rate limits, the tokens) lives in
//! session; who receives what lives in the [`Engine`].

use rtm_proto::{
    ChannelType, ErrorCode, Event, MessageEvent, PublishTopicRequest, PublisherInfo, ServerMsg,
    TopicEvent, TopicEventType, TopicInfo, WireError, encode_frame,
};

use super::{Core, engine_failed, err, now_ms};
use crate::engine::{Engine, PresenceFlags, SessionHandle, StreamError, TopicSubscribed};

/// The error a client sees for a refused stream operation; `failed` is the code of the
/// operation's own failure (for an engine error).
fn refused(e: StreamError, failed: ErrorCode) -> WireError {
    let code = match &e {
        StreamError::Engine(inner) => return engine_failed(failed, inner),
        StreamError::Full(_) => ErrorCode::ChannelJoinFailed,
        StreamError::NotJoined => ErrorCode::ChannelNotJoined,
        StreamError::TooManyTopics(_) => ErrorCode::ChannelExceedTopicLimitation,
        StreamError::NotSubscribed => ErrorCode::ChannelTopicNotSubscribed,
    };
    err(code, e.to_string())
}

impl<E: Engine> Core<E> {
    /// Makes `session` a member of a stream channel and queues it the channel's topic snapshot.
    pub(crate) async fn join_stream(
        &self,
        session: &SessionHandle,
        channel: &str,
        presence: PresenceFlags,
        max_users: usize,
    ) -> Result<u64, WireError> {
        let topic_infos = self
            .engine
            .join_stream(session, channel, presence, max_users)
            .await
            .map_err(|e| refused(e, ErrorCode::ChannelJoinFailed))?;
        let timestamp = now_ms();
        // docs/protocol.md §2.2: in parts when it does not fit one frame.
        session.push_event(Event::Topic(TopicEvent {
            event_type: TopicEventType::Snapshot,
            channel_name: channel.to_owned(),
            publisher: String::new(),
            topic_infos,
            timestamp,
        }));
        Ok(timestamp)
    }

    /// Removes `session` from a stream channel; the other members see it leave its topics.
    pub(crate) async fn leave_stream(
        &self,
        session: &SessionHandle,
        channel: &str,
    ) -> Result<u64, WireError> {
        let topics = self
            .engine
            .leave_stream(session, channel)
            .await
            .map_err(|e| refused(e, ErrorCode::ChannelLeaveFailed))?;
        let timestamp = now_ms();
        if !topics.is_empty() {
            let infos = topics
                .into_iter()
                .map(|topic| topic_info(topic, session, String::new()))
                .collect();
            self.topic_event(
                session,
                channel,
                TopicEventType::RemoteLeave,
                infos,
                timestamp,
            )
            .await;
        }
        Ok(timestamp)
    }

    /// Makes `session` a publisher in a topic; the other members see it join.
    pub(crate) async fn join_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        meta: &str,
    ) -> Result<u64, WireError> {
        self.engine
            .join_topic(session, channel, topic, meta)
            .await
            .map_err(|e| refused(e, ErrorCode::ChannelJoinTopicFailed))?;
        let timestamp = now_ms();
        let info = topic_info(topic.to_owned(), session, meta.to_owned());
        self.topic_event(
            session,
            channel,
            TopicEventType::RemoteJoin,
            vec![info],
            timestamp,
        )
        .await;
        Ok(timestamp)
    }

    /// Stops `session` publishing in a topic; the other members see it leave.
    pub(crate) async fn leave_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
    ) -> Result<u64, WireError> {
        self.engine
            .leave_topic(session, channel, topic)
            .await
            .map_err(|e| refused(e, ErrorCode::ChannelLeaveFailed))?;
        let timestamp = now_ms();
        let info = topic_info(topic.to_owned(), session, String::new());
        self.topic_event(
            session,
            channel,
            TopicEventType::RemoteLeave,
            vec![info],
            timestamp,
        )
        .await;
        Ok(timestamp)
    }

    /// Adds publishers to `session`'s subscription of a topic.
    pub(crate) async fn subscribe_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        users: Option<&[String]>,
        max_topics: usize,
        max_users: usize,
    ) -> Result<TopicSubscribed, WireError> {
        self.engine
            .subscribe_topic(session, channel, topic, users, max_topics, max_users)
            .await
            .map_err(|e| refused(e, ErrorCode::ChannelSubscribeFailed))
    }

    /// Removes publishers (or the whole topic) from `session`'s subscription.
    pub(crate) async fn unsubscribe_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        users: Option<&[String]>,
    ) -> Result<u64, WireError> {
        self.engine
            .unsubscribe_topic(session, channel, topic, users)
            .await
            .map_err(|e| refused(e, ErrorCode::ChannelUnsubscribeFailed))?;
        Ok(now_ms())
    }

    /// Publishes a checked topic message: encodes the event once and hands it to the engine.
    /// Returns the message's timestamp.
    pub(crate) async fn publish_topic(
        &self,
        publisher: &SessionHandle,
        publish: PublishTopicRequest,
    ) -> Result<u64, WireError> {
        let PublishTopicRequest {
            channel,
            topic,
            message,
            custom_type,
        } = publish;
        let timestamp = now_ms();
        let frame = encode_frame(&ServerMsg::Event(Event::Message(MessageEvent {
            channel_type: ChannelType::Stream,
            channel_name: channel.clone(),
            topic_name: topic.clone(),
            message,
            custom_type,
            publisher: publisher.user_id().to_owned(),
            timestamp,
        })));
        let delivery = self
            .engine
            .publish_topic(publisher, &channel, &topic, frame)
            .await
            .map_err(|e| engine_failed(ErrorCode::ChannelPublishMessageFailed, &e))?;
        self.count_published(crate::metrics::MessageKind::topic, delivery);
        Ok(timestamp)
    }

    /// Tells the other members of a stream channel what `session` did.
    async fn topic_event(
        &self,
        session: &SessionHandle,
        channel: &str,
        event_type: TopicEventType,
        topic_infos: Vec<TopicInfo>,
        timestamp: u64,
    ) {
        let frame = encode_topic_event(TopicEvent {
            event_type,
            channel_name: channel.to_owned(),
            publisher: session.user_id().to_owned(),
            topic_infos,
            timestamp,
        });
        if let Err(e) = self
            .engine
            .broadcast_stream(session.app_id(), channel, session.id(), frame)
            .await
        {
            tracing::warn!(%channel, "topic event not delivered: {e}");
        }
    }
}

fn topic_info(topic: String, session: &SessionHandle, meta: String) -> TopicInfo {
    TopicInfo {
        topic_name: topic,
        publishers: vec![PublisherInfo {
            user_id: session.user_id().to_owned(),
            meta,
        }],
    }
}

fn encode_topic_event(event: TopicEvent) -> bytes::Bytes {
    encode_frame(&ServerMsg::Event(Event::Topic(event)))
}
