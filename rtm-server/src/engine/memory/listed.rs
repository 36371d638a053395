//! In a cluster: the stream-channel lists and topic messages the Redis engine hands to the
//! local engine (`engine/redis/topics.rs`), for the channels that have members on this node.

use bytes::Bytes;
use rtm_proto::TopicInfo;

use super::stream::{ListedPublisher, StreamChannel};
use super::{MemoryEngine, SessionHandle, SessionId};
use crate::engine::Delivery;

/// One topic's publisher list as the cluster's store holds it: topic, version, publishers.
pub(crate) type StoredList = (String, u64, Vec<ListedPublisher>);

impl MemoryEngine {
    /// Version `version` of the publisher list of `topic` in a stream channel that has members
    /// here, in the order the bus delivers lists (see `StreamChannel::set_publishers`).
    pub(crate) fn set_topic_publishers(
        &self,
        app_id: &str,
        channel: &str,
        topic: &str,
        version: u64,
        publishers: &[ListedPublisher],
    ) {
        let mut state = self.state();
        if let Some(stream) = state
            .apps
            .get_mut(app_id)
            .and_then(|a| a.streams.get_mut(channel))
        {
            stream.set_publishers(topic, version, publishers);
        }
    }

    /// The lists of a stream channel read from the cluster's store when a session joins it
    /// here: each applied only to a topic the channel knows nothing of yet (all of them when
    /// the session is the channel's first member here; see `StreamChannel::seed_publishers`).
    /// Returns the channel's topics as this node has them: the joining session's snapshot,
    /// which the lists and events that follow continue.
    pub(crate) fn seed_topic_publishers(
        &self,
        app_id: &str,
        channel: &str,
        lists: &[StoredList],
    ) -> Vec<TopicInfo> {
        let mut state = self.state();
        let Some(stream) = state
            .apps
            .get_mut(app_id)
            .and_then(|a| a.streams.get_mut(channel))
        else {
            return Vec::new();
        };
        for (topic, version, publishers) in lists {
            stream.seed_publishers(topic, *version, publishers);
        }
        stream.topic_infos()
    }

    /// The topics of a stream channel with members here whose lists came from the cluster.
    pub(crate) fn listed_topics(&self, app_id: &str, channel: &str) -> Vec<String> {
        self.state()
            .apps
            .get(app_id)
            .and_then(|a| a.streams.get(channel))
            .map(StreamChannel::listed_topics)
            .unwrap_or_default()
    }

    /// If `session` has joined `topic`: the meta it is listed with, if the cluster's list here
    /// shows it yet (to put it back when a change of meta fails in the cluster).
    pub(crate) fn joined_meta(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
    ) -> Option<Option<String>> {
        self.state()
            .apps
            .get(session.app_id())?
            .streams
            .get(channel)?
            .joined_meta(session.id(), topic)
            .map(|listed| listed.map(str::to_owned))
    }

    /// Takes `session` off the publishers of `topic` here at once (its join was refused by the
    /// cluster, so no list will).
    pub(crate) fn unlist_topic_publisher(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
    ) {
        if let Some(stream) = self
            .state()
            .apps
            .get_mut(session.app_id())
            .and_then(|a| a.streams.get_mut(channel))
        {
            stream.unlist(session.id(), topic);
        }
    }

    /// Delivers a topic message of `publisher` (a session on any node) to its audience here.
    pub(crate) fn publish_topic_from(
        &self,
        app_id: &str,
        channel: &str,
        topic: &str,
        publisher: SessionId,
        frame: &Bytes,
    ) -> Delivery {
        let audience = self
            .state()
            .apps
            .get(app_id)
            .and_then(|a| a.streams.get(channel))
            .and_then(|s| s.audience(publisher, topic));
        audience.map_or_else(Delivery::default, |to| Self::push_all(to.iter(), frame))
    }
}
