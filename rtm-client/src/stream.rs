//! Stream channels and topics: the reference's `RTMStreamChannel`.
//!
//! ```no_run
//! use rtm_client::{JoinOptions, JoinTopicOptions, RtmClient, TopicMessageOptions};
//!
//! # async fn demo(rtm: RtmClient, rtc_token: String) -> Result<(), rtm_client::RtmError> {
//! let location = rtm.create_stream_channel("Location")?;
//! location.join(JoinOptions { token: Some(rtc_token), ..Default::default() }).await?;
//! location.join_topic("gesture", JoinTopicOptions::default()).await?;
//! location.publish_topic_message("gesture", vec![1, 2, 3], TopicMessageOptions::default()).await?;
//! # Ok(()) }
//! ```

use std::collections::{BTreeMap, BTreeSet};

use rtm_proto::{ChannelType, PublishTopicRequest, Request, Response, validate};
pub use rtm_proto::{
    JoinTopicOptions, PublisherInfo, TopicEvent, TopicEventType, TopicInfo, TopicPriority, TopicQos,
};

use crate::{Payload, RtmClient, RtmError, check, unexpected};

/// Options of [`StreamChannel::join`], with the reference's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinOptions {
    /// The RTC token for this channel and user; needed when the app has an App Certificate.
    pub token: Option<String>,
    /// Receive presence events (default true).
    pub with_presence: bool,
    /// Stay invisible to other users' presence (default false).
    pub be_quiet: bool,
    /// Receive storage events (default false).
    pub with_metadata: bool,
    /// Receive lock events (default false).
    pub with_lock: bool,
}

impl Default for JoinOptions {
    fn default() -> Self {
        Self {
            token: None,
            with_presence: true,
            be_quiet: false,
            with_metadata: false,
            with_lock: false,
        }
    }
}

impl JoinOptions {
    fn to_wire(&self) -> rtm_proto::JoinOptions {
        rtm_proto::JoinOptions {
            token: self.token.clone().unwrap_or_default(),
            with_presence: self.with_presence,
            be_quiet: self.be_quiet,
            with_metadata: self.with_metadata,
            with_lock: self.with_lock,
        }
    }
}

/// Options of [`StreamChannel::publish_topic_message`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicMessageOptions {
    /// An application-defined type, up to 32 printable ASCII characters.
    pub custom_type: Option<String>,
}

/// Options of [`StreamChannel::subscribe_topic`] and [`StreamChannel::unsubscribe_topic`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TopicSubscribeOptions {
    /// The publishers (user ids). Empty: subscribe to up to 64 of the topic's publishers,
    /// including ones that join later; unsubscribe from the whole topic.
    pub users: Vec<String>,
}

/// The answer to [`StreamChannel::join`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct JoinResponse {
    /// The stream channel.
    pub channel_name: String,
    /// Server time.
    pub timestamp: u64,
}

/// The answer to [`StreamChannel::leave`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LeaveResponse {
    /// The stream channel.
    pub channel_name: String,
    /// Server time.
    pub timestamp: u64,
}

/// The answer to the topic calls that carry no more than the topic
/// ([`StreamChannel::join_topic`], [`leave_topic`](StreamChannel::leave_topic),
/// [`publish_topic_message`](StreamChannel::publish_topic_message),
/// [`unsubscribe_topic`](StreamChannel::unsubscribe_topic)).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TopicResponse {
    /// The topic.
    pub topic_name: String,
    /// Server time.
    pub timestamp: u64,
}

/// The answer to [`StreamChannel::join_topic`] (the reference's `JoinTopicResponse`).
pub type JoinTopicResponse = TopicResponse;
/// The answer to [`StreamChannel::leave_topic`] (the reference's `LeaveTopicResponse`).
pub type LeaveTopicResponse = TopicResponse;
/// The answer to [`StreamChannel::publish_topic_message`] (the reference's
/// `PublishTopicMessageResponse`).
pub type PublishTopicMessageResponse = TopicResponse;
/// The answer to [`StreamChannel::unsubscribe_topic`] (the reference's
/// `UnsubscribeTopicResponse`).
pub type UnsubscribeTopicResponse = TopicResponse;

/// Why one user of a [`StreamChannel::subscribe_topic`] call was not subscribed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct FailedDetail {
    /// The user id.
    pub user: String,
    /// The reference's per-user code (`SubscribeTopicErrorCode`: 6 invalid user, 20003 over the
    /// publisher limit).
    pub error_code: i32,
    /// Why, in words.
    pub reason: String,
}

/// The answer to [`StreamChannel::subscribe_topic`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscribeTopicResponse {
    /// The topic.
    pub topic_name: String,
    /// Users subscribed (by this call or before it).
    pub succeed_users: Vec<String>,
    /// Users not subscribed.
    pub failed_users: Vec<String>,
    /// Why each of `failed_users` failed.
    pub failed_details: Vec<FailedDetail>,
    /// Server time.
    pub timestamp: u64,
}

/// What the client remembers of a joined stream channel, to join it again after a new login.
#[derive(Clone, Debug, Default)]
pub(crate) struct StreamCache {
    pub(crate) options: Option<JoinOptions>,
    pub(crate) topics: BTreeMap<String, JoinTopicOptions>,
    /// Per topic: whether it takes publishers without naming them, and the named ones.
    pub(crate) subscriptions: BTreeMap<String, (bool, BTreeSet<String>)>,
}

impl StreamCache {
    /// The requests that rebuild this channel on a new session, in order.
    pub(crate) fn restore_requests(&self, channel: &str) -> Vec<Request> {
        let Some(options) = &self.options else {
            return Vec::new();
        };
        let mut requests = vec![Request::Join {
            channel: channel.to_owned(),
            options: options.to_wire(),
        }];
        for (topic, options) in &self.topics {
            requests.push(Request::JoinTopic {
                channel: channel.to_owned(),
                topic: topic.clone(),
                options: options.clone(),
            });
        }
        for (topic, (auto, users)) in &self.subscriptions {
            if !users.is_empty() {
                requests.push(Request::SubscribeTopic {
                    channel: channel.to_owned(),
                    topic: topic.clone(),
                    users: users.iter().cloned().collect(),
                });
            }
            if *auto {
                requests.push(Request::SubscribeTopic {
                    channel: channel.to_owned(),
                    topic: topic.clone(),
                    users: Vec::new(),
                });
            }
        }
        requests
    }
}

/// A stream channel: the reference's `RTMStreamChannel`, made by
/// [`RtmClient::create_stream_channel`]. Cheap to clone.
#[derive(Clone, Debug)]
pub struct StreamChannel {
    client: RtmClient,
    name: String,
}

impl RtmClient {
    /// A handle on the stream channel `channel_name` (checks the name; does not join).
    pub fn create_stream_channel(&self, channel_name: &str) -> Result<StreamChannel, RtmError> {
        check(validate::channel_name(channel_name), "createStreamChannel")?;
        Ok(StreamChannel {
            client: self.clone(),
            name: channel_name.to_owned(),
        })
    }
}

impl StreamChannel {
    /// The channel's name.
    pub fn channel_name(&self) -> &str {
        &self.name
    }

    /// Updates the client's cache of this channel (when logged in).
    fn cache(&self, f: impl FnOnce(&mut BTreeMap<String, StreamCache>)) {
        if let Some(session) = self.client.inner.lock().session.as_mut() {
            f(&mut session.streams);
        }
    }

    /// Joins the channel. This client then receives a topic `SNAPSHOT` event (every topic with
    /// its publishers), and topic events when others join or leave topics.
    pub async fn join(&self, options: JoinOptions) -> Result<JoinResponse, RtmError> {
        let request = Request::Join {
            channel: self.name.clone(),
            options: options.to_wire(),
        };
        match self.client.request("join", request).await? {
            Response::Join { channel, timestamp } => {
                let cached = self
                    .client
                    .inner
                    .lock()
                    .session
                    .as_mut()
                    .and_then(|session| {
                        session.streams.entry(channel.clone()).or_default().options = Some(options);
                        session
                            .states
                            .get(&(ChannelType::Stream, channel.clone()))
                            .cloned()
                    });
                if let Some(states) = cached.filter(|s| !s.is_empty()) {
                    // State set before joining (docs/protocol.md §5.8.1).
                    self.client
                        .presence()
                        .apply_cached(ChannelType::Stream, &channel, states)
                        .await;
                }
                Ok(JoinResponse {
                    channel_name: channel,
                    timestamp,
                })
            }
            other => Err(unexpected("join", &other)),
        }
    }

    /// Leaves the channel, with every topic joined and every topic subscription in it.
    pub async fn leave(&self) -> Result<LeaveResponse, RtmError> {
        let request = Request::Leave {
            channel: self.name.clone(),
        };
        match self.client.request("leave", request).await? {
            Response::Leave { channel, timestamp } => {
                if let Some(session) = self.client.inner.lock().session.as_mut() {
                    session.streams.remove(&channel);
                    session
                        .states
                        .remove(&(ChannelType::Stream, channel.clone()));
                }
                Ok(LeaveResponse {
                    channel_name: channel,
                    timestamp,
                })
            }
            other => Err(unexpected("leave", &other)),
        }
    }

    /// Joins a topic as a publisher (at most 8 per channel). The channel's other members get a
    /// `REMOTE_JOIN` topic event with `options.meta`.
    pub async fn join_topic(
        &self,
        topic_name: &str,
        options: JoinTopicOptions,
    ) -> Result<TopicResponse, RtmError> {
        check(validate::topic_name(topic_name), "joinTopic")?;
        check(validate::topic_meta(&options.meta), "joinTopic")?;
        let request = Request::JoinTopic {
            channel: self.name.clone(),
            topic: topic_name.to_owned(),
            options: options.clone(),
        };
        match self.client.request("joinTopic", request).await? {
            Response::JoinTopic {
                topic, timestamp, ..
            } => {
                self.cache(|streams| {
                    if let Some(cache) = streams.get_mut(&self.name) {
                        cache.topics.insert(topic.clone(), options);
                    }
                });
                Ok(TopicResponse {
                    topic_name: topic,
                    timestamp,
                })
            }
            other => Err(unexpected("joinTopic", &other)),
        }
    }

    /// Stops publishing in a topic. Subscriptions are not affected.
    pub async fn leave_topic(&self, topic_name: &str) -> Result<TopicResponse, RtmError> {
        check(validate::topic_name(topic_name), "leaveTopic")?;
        let request = Request::LeaveTopic {
            channel: self.name.clone(),
            topic: topic_name.to_owned(),
        };
        match self.client.request("leaveTopic", request).await? {
            Response::LeaveTopic {
                topic, timestamp, ..
            } => {
                self.cache(|streams| {
                    if let Some(cache) = streams.get_mut(&self.name) {
                        cache.topics.remove(&topic);
                    }
                });
                Ok(TopicResponse {
                    topic_name: topic,
                    timestamp,
                })
            }
            other => Err(unexpected("leaveTopic", &other)),
        }
    }

    /// Publishes a message (at most 1 KB) in a joined topic, to the users subscribed to this
    /// client in it. Like [`RtmClient::publish`], the message is queued when this is called, so
    /// calls made one after another arrive in that order.
    pub fn publish_topic_message<M: Into<Payload>>(
        &self,
        topic_name: &str,
        message: M,
        options: TopicMessageOptions,
    ) -> impl Future<Output = Result<TopicResponse, RtmError>> + Send + 'static + use<M> {
        let answer = self.client.seal(message.into()).map(|message| {
            let request = Request::PublishTopic(PublishTopicRequest {
                channel: self.name.clone(),
                topic: topic_name.to_owned(),
                message,
                custom_type: options.custom_type.unwrap_or_default(),
            });
            self.client.request("publishTopicMessage", request)
        });
        async move {
            match answer?.await? {
                Response::PublishTopic {
                    topic, timestamp, ..
                } => Ok(TopicResponse {
                    topic_name: topic,
                    timestamp,
                }),
                other => Err(unexpected("publishTopicMessage", &other)),
            }
        }
    }

    /// Subscribes to publishers of a topic. Incremental: `[A, B]` then `[B, C]` subscribes to
    /// A, B and C. Without users, takes up to 64 of the topic's publishers, including ones
    /// that join later. At most 50 topics per channel and 64 publishers per topic.
    pub async fn subscribe_topic(
        &self,
        topic_name: &str,
        options: TopicSubscribeOptions,
    ) -> Result<SubscribeTopicResponse, RtmError> {
        check(validate::topic_name(topic_name), "subscribeTopic")?;
        let request = Request::SubscribeTopic {
            channel: self.name.clone(),
            topic: topic_name.to_owned(),
            users: options.users.clone(),
        };
        match self.client.request("subscribeTopic", request).await? {
            Response::SubscribeTopic {
                topic,
                succeed_users,
                failed_users,
                timestamp,
                ..
            } => {
                self.cache(|streams| {
                    if let Some(cache) = streams.get_mut(&self.name) {
                        let entry = cache.subscriptions.entry(topic.clone()).or_default();
                        if options.users.is_empty() {
                            entry.0 = true;
                        } else {
                            entry.1.extend(
                                succeed_users
                                    .iter()
                                    .filter(|u| options.users.contains(u))
                                    .cloned(),
                            );
                        }
                    }
                });
                Ok(SubscribeTopicResponse {
                    topic_name: topic,
                    succeed_users,
                    failed_users: failed_users.iter().map(|f| f.user.clone()).collect(),
                    failed_details: failed_users
                        .into_iter()
                        .map(|f| FailedDetail {
                            user: f.user,
                            error_code: f.error_code,
                            reason: f.reason,
                        })
                        .collect(),
                    timestamp,
                })
            }
            other => Err(unexpected("subscribeTopic", &other)),
        }
    }

    /// Unsubscribes from the given publishers of a topic, or from the whole topic when
    /// `options.users` is empty.
    pub async fn unsubscribe_topic(
        &self,
        topic_name: &str,
        options: TopicSubscribeOptions,
    ) -> Result<TopicResponse, RtmError> {
        check(validate::topic_name(topic_name), "unsubscribeTopic")?;
        let request = Request::UnsubscribeTopic {
            channel: self.name.clone(),
            topic: topic_name.to_owned(),
            users: options.users.clone(),
        };
        match self.client.request("unsubscribeTopic", request).await? {
            Response::UnsubscribeTopic {
                topic, timestamp, ..
            } => {
                self.cache(|streams| {
                    let Some(cache) = streams.get_mut(&self.name) else {
                        return;
                    };
                    if options.users.is_empty() {
                        cache.subscriptions.remove(&topic);
                    } else if let Some((auto, users)) = cache.subscriptions.get_mut(&topic) {
                        users.retain(|u| !options.users.contains(u));
                        if users.is_empty() && !*auto {
                            cache.subscriptions.remove(&topic);
                        }
                    }
                });
                Ok(TopicResponse {
                    topic_name: topic,
                    timestamp,
                })
            }
            other => Err(unexpected("unsubscribeTopic", &other)),
        }
    }
}
