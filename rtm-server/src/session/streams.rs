//! The session's stream-channel calls: join and leave, topics and topic subscriptions
//! (`docs/protocol.md` §5.7).

use std::collections::HashMap;
use std::sync::atomic::Ordering;

use rtm_proto::{
    ChannelType, ErrorCode, FailedUser, JoinOptions, JoinTopicOptions, PublishTopicRequest,
    Response, SubscribeTopicCode, WireError, limits, validate,
};

use super::{
    Joined, LoggedIn, Session, TokenClock, check_join_token, logged_in, not_joined, rate_limiter,
};
use crate::core::{Departure, err, invalid, now_ms};
use crate::engine::{Engine, PresenceFlags};

/// Checks a stream-channel topic call's names, and returns the joined channel.
fn topic_of<'a, E>(
    state: &'a mut LoggedIn<E>,
    channel: &str,
    topic: &str,
) -> Result<&'a mut Joined, WireError> {
    validate::channel_name(channel).map_err(invalid)?;
    validate::topic_name(topic).map_err(invalid)?;
    state.streams.get_mut(channel).ok_or_else(not_joined)
}

/// Checks the number of users of one topic (un)subscription; returns the limit.
fn check_topic_users(users: &[String]) -> Result<usize, WireError> {
    let max_users = limits::MAX_TOPIC_SUBSCRIBED_USERS;
    if users.len() > max_users {
        return Err(err(
            ErrorCode::ChannelExceedTopicUserLimitation,
            format!(
                "{} users given, a topic subscription takes at most {max_users}",
                users.len()
            ),
        ));
    }
    Ok(max_users)
}

impl<E: Engine> Session<E> {
    pub(super) async fn join(
        &mut self,
        channel: String,
        options: JoinOptions,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::channel_name(&channel).map_err(invalid)?;
        if state.streams.contains_key(&channel) {
            return Err(err(
                ErrorCode::DuplicateOperation,
                "already joined to this stream channel",
            ));
        }
        if state.streams.len() >= limits::MAX_STREAM_CHANNELS {
            return Err(err(
                ErrorCode::ChannelInstanceExceedLimitation,
                format!(
                    "already joined to {} stream channels, the limit",
                    limits::MAX_STREAM_CHANNELS
                ),
            ));
        }
        // docs/protocol.md §5.7.1: an app with an App Certificate needs an RTC token for this
        // channel and user.
        let token_ends_ms = check_join_token(
            &state.policy,
            state.handle.app_id(),
            &channel,
            state.handle.user_id(),
            &options.token,
        )?;
        let max_users = state.policy.limits.stream_channel_users as usize;
        let presence = PresenceFlags {
            with_presence: options.with_presence,
            quiet: options.be_quiet,
        };
        let timestamp = self
            .core
            .join_stream(&state.handle, &channel, presence, max_users)
            .await?;
        state.streams.insert(
            channel.clone(),
            Joined {
                presence,
                token: TokenClock::new(token_ends_ms),
                topics: HashMap::new(),
            },
        );
        self.core
            .arrive(&state.handle, ChannelType::Stream, &channel, presence)
            .await;
        self.core
            .listen_channel(
                &state.handle,
                ChannelType::Stream,
                &channel,
                options.with_metadata,
                options.with_lock,
            )
            .await;
        Ok(Response::Join { channel, timestamp })
    }

    pub(super) async fn leave(&mut self, channel: String) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::channel_name(&channel).map_err(invalid)?;
        let Some(joined) = state.streams.remove(&channel) else {
            return Err(not_joined());
        };
        let timestamp = self.core.leave_stream(&state.handle, &channel).await?;
        self.core
            .depart(
                &state.handle,
                ChannelType::Stream,
                &channel,
                joined.presence,
                Departure::Left,
            )
            .await;
        Ok(Response::Leave { channel, timestamp })
    }

    pub(super) async fn join_topic(
        &mut self,
        channel: String,
        topic: String,
        options: JoinTopicOptions,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::channel_name(&channel).map_err(invalid)?;
        validate::topic_name(&topic).map_err(invalid)?;
        validate::topic_meta(&options.meta).map_err(invalid)?;
        let joined = state.streams.get_mut(&channel).ok_or_else(not_joined)?;
        if !joined.topics.contains_key(&topic) && joined.topics.len() >= limits::MAX_JOINED_TOPICS {
            return Err(err(
                ErrorCode::ChannelExceedTopicLimitation,
                format!(
                    "already joined to {} topics in this channel, the limit",
                    limits::MAX_JOINED_TOPICS
                ),
            ));
        }
        let timestamp = self
            .core
            .join_topic(&state.handle, &channel, &topic, &options.meta)
            .await?;
        let rate = state.policy.limits.topic_publish_rate;
        joined
            .topics
            .entry(topic.clone())
            .or_insert_with(|| rate_limiter(rate));
        Ok(Response::JoinTopic {
            channel,
            topic,
            timestamp,
        })
    }

    pub(super) async fn leave_topic(
        &mut self,
        channel: String,
        topic: String,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        let joined = topic_of(state, &channel, &topic)?;
        if joined.topics.remove(&topic).is_none() {
            return Err(err(
                ErrorCode::ChannelTopicNotJoined,
                "not joined to this topic",
            ));
        }
        let timestamp = self
            .core
            .leave_topic(&state.handle, &channel, &topic)
            .await?;
        Ok(Response::LeaveTopic {
            channel,
            topic,
            timestamp,
        })
    }

    pub(super) async fn publish_topic(
        &mut self,
        publish: PublishTopicRequest,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::channel_name(&publish.channel).map_err(invalid)?;
        validate::topic_name(&publish.topic).map_err(invalid)?;
        validate::custom_type(&publish.custom_type).map_err(invalid)?;
        let max = limits::MAX_TOPIC_MESSAGE_SIZE;
        if publish.message.len() > max {
            return Err(err(
                ErrorCode::ChannelMessageLengthExceedLimitation,
                format!(
                    "topic message is {} bytes, the limit is {max}",
                    publish.message.len()
                ),
            ));
        }
        let joined = state
            .streams
            .get_mut(&publish.channel)
            .ok_or_else(not_joined)?;
        let limiter = joined.topics.get(&publish.topic).ok_or_else(|| {
            err(
                ErrorCode::ChannelTopicNotJoined,
                "join the topic before publishing in it",
            )
        })?;
        if limiter.check().is_err() {
            self.core
                .metrics
                .rate_limited
                .fetch_add(1, Ordering::Relaxed);
            return Err(err(
                ErrorCode::ChannelPublishMessageTooFrequent,
                format!(
                    "publishing faster than {} messages per second in this topic",
                    state.policy.limits.topic_publish_rate
                ),
            ));
        }
        let (channel, topic) = (publish.channel.clone(), publish.topic.clone());
        let timestamp = self.core.publish_topic(&state.handle, publish).await?;
        Ok(Response::PublishTopic {
            channel,
            topic,
            timestamp,
        })
    }

    pub(super) async fn subscribe_topic(
        &mut self,
        channel: String,
        topic: String,
        users: Vec<String>,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        topic_of(state, &channel, &topic)?;
        let max_users = check_topic_users(&users)?;
        // Each user once; the ones that are not user ids fail on their own.
        let mut valid: Vec<String> = Vec::with_capacity(users.len());
        let mut failed_users = Vec::new();
        for user in users.iter() {
            if valid.contains(user) || failed_users.iter().any(|f: &FailedUser| &f.user == user) {
                continue;
            }
            match validate::user_id(user, true) {
                Ok(()) => valid.push(user.clone()),
                Err(e) => failed_users.push(FailedUser {
                    user: user.clone(),
                    error_code: SubscribeTopicCode::InvalidRemoteUser.code(),
                    reason: e.what,
                }),
            }
        }
        let mut succeed_users = Vec::new();
        if users.is_empty() || !valid.is_empty() {
            let asked = (!users.is_empty()).then_some(valid.as_slice());
            let done = self
                .core
                .subscribe_topic(
                    &state.handle,
                    &channel,
                    &topic,
                    asked,
                    limits::MAX_SUBSCRIBED_TOPICS,
                    max_users,
                )
                .await?;
            succeed_users = done.succeed;
            failed_users.extend(done.failed.into_iter().map(|(user, code)| FailedUser {
                user,
                error_code: code.code(),
                reason: format!("a topic subscription takes at most {max_users} publishers"),
            }));
        }
        Ok(Response::SubscribeTopic {
            channel,
            topic,
            succeed_users,
            failed_users,
            timestamp: now_ms(),
        })
    }

    pub(super) async fn unsubscribe_topic(
        &mut self,
        channel: String,
        topic: String,
        users: Vec<String>,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        topic_of(state, &channel, &topic)?;
        check_topic_users(&users)?;
        let users = (!users.is_empty()).then_some(users.as_slice());
        let timestamp = self
            .core
            .unsubscribe_topic(&state.handle, &channel, &topic, users)
            .await?;
        Ok(Response::UnsubscribeTopic {
            channel,
            topic,
            timestamp,
        })
    }

    /// Replaces the token of a joined stream channel.
    pub(super) fn renew_channel_token(
        &mut self,
        channel: &str,
        token: &str,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::channel_name(channel).map_err(invalid)?;
        let app_id = state.handle.app_id();
        let user_id = state.handle.user_id();
        let ends = check_join_token(&state.policy, app_id, channel, user_id, token)?;
        let joined = state.streams.get_mut(channel).ok_or_else(not_joined)?;
        joined.token = TokenClock::new(ends);
        Ok(Response::RenewToken {
            timestamp: now_ms(),
        })
    }
}
