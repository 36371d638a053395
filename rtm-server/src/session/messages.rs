//! The session's message-channel calls: subscribe, unsubscribe, publish and publish batches
//! (`docs/protocol.md` §5.2–§5.4).

use std::sync::atomic::Ordering;

use rtm_proto::limits::MAX_PUBLISH_BATCH;
use rtm_proto::{
    ChannelType, ErrorCode, PublishBatch, PublishRequest, Response, SubscribeOptions, WireError,
    validate,
};

use super::{Session, logged_in, subscription_presence};
use crate::core::{Departure, err, invalid, now_ms};
use crate::engine::Engine;

impl<E: Engine> Session<E> {
    pub(super) async fn subscribe(
        &mut self,
        channel: String,
        options: SubscribeOptions,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::channel_name(&channel).map_err(invalid)?;
        let max = state.policy.limits.max_subscriptions as usize;
        if !state.subscriptions.contains_key(&channel) && state.subscriptions.len() >= max {
            return Err(err(
                ErrorCode::ChannelInstanceExceedLimitation,
                format!("already subscribed to {max} channels, the limit"),
            ));
        }
        self.core
            .subscribe(&state.handle, &channel, options)
            .await?;
        let first = state
            .subscriptions
            .insert(channel.clone(), options)
            .is_none();
        if first {
            let presence = subscription_presence(&options);
            self.core
                .arrive(&state.handle, ChannelType::Message, &channel, presence)
                .await;
        }
        self.core
            .listen_channel(
                &state.handle,
                ChannelType::Message,
                &channel,
                options.with_metadata,
                options.with_lock,
            )
            .await;
        Ok(Response::Subscribe {
            channel,
            timestamp: now_ms(),
        })
    }

    pub(super) async fn unsubscribe(&mut self, channel: String) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::channel_name(&channel).map_err(invalid)?;
        let Some(options) = state.subscriptions.remove(&channel) else {
            return Err(err(
                ErrorCode::ChannelNotSubscribed,
                "not subscribed to this channel",
            ));
        };
        self.core.unsubscribe(&state.handle, &channel).await?;
        let presence = subscription_presence(&options);
        self.core
            .depart(
                &state.handle,
                ChannelType::Message,
                &channel,
                presence,
                Departure::Left,
            )
            .await;
        Ok(Response::Unsubscribe {
            channel,
            timestamp: now_ms(),
        })
    }

    pub(super) async fn publish(
        &mut self,
        publish: PublishRequest,
        store: bool,
    ) -> Result<Response, WireError> {
        let channel = publish.channel.clone();
        let timestamp = self.publish_one(publish, store).await?;
        Ok(Response::Publish { channel, timestamp })
    }

    /// Serves each message of a batch as a publish of its own, in order, and answers once.
    pub(super) async fn publish_batch(
        &mut self,
        mut batch: PublishBatch,
    ) -> Result<Response, WireError> {
        logged_in(&mut self.state)?;
        let count = batch.messages.len();
        if count == 0 || count > MAX_PUBLISH_BATCH {
            return Err(err(
                ErrorCode::InvalidParameter,
                format!("a batch of {count} messages; from 1 to {MAX_PUBLISH_BATCH}"),
            ));
        }
        let metrics = &self.core.metrics;
        metrics.publish_batches.fetch_add(1, Ordering::Relaxed);
        metrics
            .publish_batched_messages
            .fetch_add(count as u64, Ordering::Relaxed);
        let mut results = Vec::with_capacity(count);
        for message in std::mem::take(&mut batch.messages) {
            let publish = batch.request(message);
            results.push(self.publish_one(publish, batch.store).await);
        }
        Ok(Response::PublishBatch {
            results,
            timestamp: now_ms(),
        })
    }

    /// Publishes one message; its timestamp.
    async fn publish_one(
        &mut self,
        publish: PublishRequest,
        store: bool,
    ) -> Result<u64, WireError> {
        let state = logged_in(&mut self.state)?;
        self.core.check_publish(&state.policy, &publish)?;
        let retention = if store {
            Some(crate::core::retention(&state.policy)?)
        } else {
            None
        };
        // Only a valid message uses up the allowance.
        if state.publish_limiter.check().is_err() {
            self.core
                .metrics
                .rate_limited
                .fetch_add(1, Ordering::Relaxed);
            return Err(err(
                ErrorCode::ChannelPublishMessageTooFrequent,
                format!(
                    "publishing faster than {} messages per second",
                    state.policy.limits.publish_rate
                ),
            ));
        }
        self.core
            .publish((&state.handle).into(), publish, retention)
            .await
    }
}
