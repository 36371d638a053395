//! The in-memory engine's stream channels: members, topics, publishers and topic subscriptions.
//!
//! Each publisher of a topic keeps its *audience*, the sessions subscribed to it, as an
//! `Arc<[SessionHandle]>` rebuilt whenever the topic's publishers or subscriptions change, so a
//! topic message clones one `Arc` under the engine's lock and is pushed after releasing it (the
//! same scheme as message channels). Changes are rare next to messages.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use rtm_proto::{PublisherInfo, SubscribeTopicCode, TopicInfo};

use crate::engine::{PresenceFlags, SessionHandle, SessionId, StreamError, TopicSubscribed};

/// One stream channel of one app.
#[derive(Debug, Default)]
pub(super) struct StreamChannel {
    members: HashMap<SessionId, Member>,
    topics: HashMap<Box<str>, Topic>,
    /// In a cluster: the version of each topic's publisher list last applied
    /// ([`StreamChannel::set_publishers`]), kept while the channel has members here, so that an
    /// older list never replaces a newer one.
    versions: HashMap<Box<str>, u64>,
    /// In a cluster: publisher lists change only in [`StreamChannel::set_publishers`], in the
    /// order the cluster's bus delivers them. A publisher that leaves keeps its entry here
    /// until the list without it arrives, behind the messages it sent before leaving, so those
    /// still reach its audience.
    listed: bool,
}

/// A publisher of a topic as a cluster lists it: session, user, meta.
pub(crate) type ListedPublisher = (SessionId, String, String);

/// A member and what it has in the channel, so that leaving does not scan every topic.
#[derive(Debug)]
struct Member {
    session: SessionHandle,
    presence: PresenceFlags,
    /// Topics it publishes in.
    joined: HashSet<Box<str>>,
    /// Topics it subscribes to.
    subscribed: HashSet<Box<str>>,
}

#[derive(Debug, Default)]
struct Topic {
    /// In the order they joined: "up to 64 publishers" takes the first ones.
    publishers: Vec<Publisher>,
    subscribers: HashMap<SessionId, TopicSub>,
}

#[derive(Debug)]
struct Publisher {
    session: SessionId,
    user_id: Box<str>,
    meta: String,
    /// The sessions subscribed to this publisher in this topic.
    audience: Arc<[SessionHandle]>,
}

/// Most publishers one subscription remembers as unsubscribed by name; the oldest are
/// forgotten first.
const MAX_EXCLUDED: usize = 1024;

#[derive(Debug)]
struct TopicSub {
    session: SessionHandle,
    /// Publishers asked for by name, in the order asked (kept while they are away).
    explicit: Vec<Box<str>>,
    /// Also take the topic's first publishers (other than itself) up to the limit.
    auto: bool,
    /// Publishers unsubscribed by name while `auto`: not taken again automatically.
    excluded: Vec<Box<str>>,
    /// The limit of publishers for this subscription.
    max_users: usize,
}

impl TopicSub {
    /// Whether this subscription takes `publisher`, given the topic's publishers in order.
    fn effective(&self, publishers: &[Publisher]) -> Vec<Box<str>> {
        let mut users = self.explicit.clone();
        if self.auto {
            for p in publishers {
                if users.len() >= self.max_users {
                    break;
                }
                if p.session != self.session.id()
                    && !users.contains(&p.user_id)
                    && !self.excluded.contains(&p.user_id)
                {
                    users.push(p.user_id.clone());
                }
            }
        }
        users
    }
}

impl Topic {
    /// Rebuilds every publisher's audience from the subscriptions.
    fn rebuild(&mut self) {
        let effective: Vec<(SessionHandle, Vec<Box<str>>)> = self
            .subscribers
            .values()
            .map(|s| (s.session.clone(), s.effective(&self.publishers)))
            .collect();
        for p in &mut self.publishers {
            p.audience = effective
                .iter()
                .filter(|(_, users)| users.contains(&p.user_id))
                .map(|(session, _)| session.clone())
                .collect();
        }
    }

    fn is_empty(&self) -> bool {
        self.publishers.is_empty() && self.subscribers.is_empty()
    }

    fn info(&self, name: &str) -> TopicInfo {
        TopicInfo {
            topic_name: name.to_owned(),
            publishers: self
                .publishers
                .iter()
                .map(|p| PublisherInfo {
                    user_id: p.user_id.to_string(),
                    meta: p.meta.clone(),
                })
                .collect(),
        }
    }
}

impl StreamChannel {
    /// A stream channel whose publisher lists come from a cluster (see `listed`).
    pub(super) fn listed() -> Self {
        Self {
            listed: true,
            ..Self::default()
        }
    }

    /// How many sessions are members.
    pub(super) fn member_count(&self) -> usize {
        self.members.len()
    }

    pub(super) fn is_empty(&self) -> bool {
        self.members.is_empty()
    }

    pub(super) fn join(
        &mut self,
        session: &SessionHandle,
        presence: PresenceFlags,
        max_users: usize,
    ) -> Result<Vec<TopicInfo>, StreamError> {
        if !self.members.contains_key(&session.id()) {
            if self.members.len() >= max_users {
                return Err(StreamError::Full(max_users));
            }
            self.members.insert(
                session.id(),
                Member {
                    session: session.clone(),
                    presence,
                    joined: HashSet::new(),
                    subscribed: HashSet::new(),
                },
            );
        }
        Ok(self.topic_infos())
    }

    /// The topics whose lists came from the cluster (with a version).
    pub(super) fn listed_topics(&self) -> Vec<String> {
        self.versions.keys().map(|t| t.to_string()).collect()
    }

    /// The topics that have publishers, by name: a joining member's snapshot.
    pub(super) fn topic_infos(&self) -> Vec<TopicInfo> {
        let mut snapshot: Vec<TopicInfo> = self
            .topics
            .iter()
            .filter(|(_, t)| !t.publishers.is_empty())
            .map(|(name, t)| t.info(name))
            .collect();
        snapshot.sort_by(|a, b| a.topic_name.cmp(&b.topic_name));
        snapshot
    }

    /// Removes a member; returns the topics it published in.
    pub(super) fn leave(&mut self, id: SessionId) -> Result<Vec<String>, StreamError> {
        let member = self.members.remove(&id).ok_or(StreamError::NotJoined)?;
        let mut left: Vec<String> = member.joined.iter().map(|t| t.to_string()).collect();
        left.sort();
        for name in member.joined.iter().chain(member.subscribed.iter()) {
            if let Some(topic) = self.topics.get_mut(name) {
                if !self.listed {
                    topic.publishers.retain(|p| p.session != id);
                }
                topic.subscribers.remove(&id);
                topic.rebuild();
                if topic.is_empty() {
                    self.topics.remove(name);
                }
            }
        }
        Ok(left)
    }

    fn member(&mut self, id: SessionId) -> Result<&mut Member, StreamError> {
        self.members.get_mut(&id).ok_or(StreamError::NotJoined)
    }

    pub(super) fn join_topic(
        &mut self,
        session: &SessionHandle,
        name: &str,
        meta: &str,
    ) -> Result<(), StreamError> {
        self.member(session.id())?.joined.insert(name.into());
        let topic = self.topics.entry(name.into()).or_default();
        match topic
            .publishers
            .iter_mut()
            .find(|p| p.session == session.id())
        {
            Some(p) => p.meta = meta.to_owned(),
            None => topic.publishers.push(Publisher {
                session: session.id(),
                user_id: session.user_id().into(),
                meta: meta.to_owned(),
                audience: Arc::from([]),
            }),
        }
        topic.rebuild();
        Ok(())
    }

    /// If session `id` has joined topic `name`: its meta as a publisher of it, if listed (a
    /// cluster's list may not show it yet).
    pub(super) fn joined_meta(&self, id: SessionId, name: &str) -> Option<Option<&str>> {
        if !self.members.get(&id)?.joined.contains(name) {
            return None;
        }
        let listed = self
            .topics
            .get(name)
            .and_then(|t| t.publishers.iter().find(|p| p.session == id));
        Some(listed.map(|p| p.meta.as_str()))
    }

    pub(super) fn leave_topic(&mut self, id: SessionId, name: &str) -> Result<(), StreamError> {
        self.member(id)?.joined.remove(name);
        if !self.listed {
            self.unlist(id, name);
        }
        Ok(())
    }

    /// Takes session `id` off the publishers of topic `name` now, even in a cluster (a join
    /// the cluster refused).
    pub(super) fn unlist(&mut self, id: SessionId, name: &str) {
        if let Some(topic) = self.topics.get_mut(name) {
            topic.publishers.retain(|p| p.session != id);
            topic.rebuild();
            if topic.is_empty() {
                self.topics.remove(name);
            }
        }
    }

    pub(super) fn subscribe_topic(
        &mut self,
        session: &SessionHandle,
        name: &str,
        users: Option<&[String]>,
        max_topics: usize,
        max_users: usize,
    ) -> Result<TopicSubscribed, StreamError> {
        let member = self.member(session.id())?;
        if !member.subscribed.contains(name) && member.subscribed.len() >= max_topics {
            return Err(StreamError::TooManyTopics(max_topics));
        }
        member.subscribed.insert(name.into());
        let topic = self.topics.entry(name.into()).or_default();
        let sub = topic
            .subscribers
            .entry(session.id())
            .or_insert_with(|| TopicSub {
                session: session.clone(),
                explicit: Vec::new(),
                auto: false,
                excluded: Vec::new(),
                max_users,
            });
        let mut result = TopicSubscribed::default();
        match users {
            Some(users) => {
                for user in users {
                    sub.excluded.retain(|u| **u != **user);
                    if sub.explicit.iter().any(|u| **u == **user) {
                        result.succeed.push(user.clone());
                    } else if sub.explicit.len() >= max_users {
                        result
                            .failed
                            .push((user.clone(), SubscribeTopicCode::SubUserExceedLimitation));
                    } else {
                        sub.explicit.push(user.as_str().into());
                        result.succeed.push(user.clone());
                    }
                }
            }
            None => {
                sub.auto = true;
                result.succeed = sub
                    .effective(&topic.publishers)
                    .into_iter()
                    .map(String::from)
                    .collect();
            }
        }
        topic.rebuild();
        Ok(result)
    }

    pub(super) fn unsubscribe_topic(
        &mut self,
        id: SessionId,
        name: &str,
        users: Option<&[String]>,
    ) -> Result<(), StreamError> {
        let member = self.member(id)?;
        if !member.subscribed.contains(name) {
            return Err(StreamError::NotSubscribed);
        }
        let topic = self
            .topics
            .get_mut(name)
            .ok_or(StreamError::NotSubscribed)?;
        let whole = match (users, topic.subscribers.get_mut(&id)) {
            (Some(users), Some(sub)) => {
                sub.explicit.retain(|u| !users.iter().any(|x| **x == **u));
                if sub.auto {
                    // Only publishers of the topic, and a bounded list: a client cannot grow it
                    // with names of its choosing.
                    for user in users {
                        let publishing = topic.publishers.iter().any(|p| *p.user_id == **user);
                        if publishing && !sub.excluded.iter().any(|x| **x == **user) {
                            sub.excluded.push(user.as_str().into());
                        }
                    }
                    let over = sub.excluded.len().saturating_sub(MAX_EXCLUDED);
                    sub.excluded.drain(..over);
                }
                sub.explicit.is_empty() && !sub.auto
            }
            _ => true,
        };
        if whole {
            topic.subscribers.remove(&id);
            if let Some(member) = self.members.get_mut(&id) {
                member.subscribed.remove(name);
            }
        }
        topic.rebuild();
        if topic.is_empty() {
            self.topics.remove(name);
        }
        Ok(())
    }

    /// In a cluster: the topic's publishers, in join order, are now `publishers` (version
    /// `version` of the list); ignored if a newer version was applied. Publishers on other
    /// nodes have no member here; local ones keep their audience.
    pub(super) fn set_publishers(
        &mut self,
        name: &str,
        version: u64,
        publishers: &[ListedPublisher],
    ) -> bool {
        let applied = self.versions.entry(name.into()).or_insert(0);
        if version <= *applied {
            return false;
        }
        *applied = version;
        let topic = self.topics.entry(name.into()).or_default();
        let mut old = std::mem::take(&mut topic.publishers);
        topic.publishers = publishers
            .iter()
            .map(|(session, user_id, meta)| {
                let audience = old.iter_mut().find(|p| p.session == *session).map_or_else(
                    || Arc::from([]),
                    |p| std::mem::replace(&mut p.audience, Arc::from([])),
                );
                Publisher {
                    session: *session,
                    user_id: user_id.as_str().into(),
                    meta: meta.clone(),
                    audience,
                }
            })
            .collect();
        topic.rebuild();
        if topic.is_empty() {
            self.topics.remove(name);
        }
        true
    }

    /// In a cluster: a list read from the cluster's store rather than received in order with
    /// the topic's messages, applied only to a topic this channel knows nothing of yet (no list,
    /// no local publisher or subscriber). A known topic follows the lists that come in order
    /// with its messages: one read from the store may be ahead of messages still on their way,
    /// and those of a publisher it no longer lists would find no audience here.
    pub(super) fn seed_publishers(
        &mut self,
        name: &str,
        version: u64,
        publishers: &[ListedPublisher],
    ) -> bool {
        if self.versions.contains_key(name) || self.topics.contains_key(name) {
            return false;
        }
        self.set_publishers(name, version, publishers)
    }

    /// The audience of `publisher` in `topic`, if it publishes there.
    pub(super) fn audience(
        &self,
        publisher: SessionId,
        topic: &str,
    ) -> Option<Arc<[SessionHandle]>> {
        self.topics
            .get(topic)?
            .publishers
            .iter()
            .find(|p| p.session == publisher)
            .map(|p| p.audience.clone())
    }

    /// The visible (not quiet) members' user ids.
    pub(super) fn present_user_ids(&self) -> Vec<&str> {
        self.members
            .values()
            .filter(|m| !m.presence.quiet)
            .map(|m| m.session.user_id())
            .collect()
    }

    /// Whether session `id` is a visible member.
    pub(super) fn is_visible(&self, id: SessionId) -> bool {
        self.members.get(&id).is_some_and(|m| !m.presence.quiet)
    }

    /// The members that receive presence events, but `except`.
    pub(super) fn presence_audience(&self, except: SessionId) -> Vec<SessionHandle> {
        self.members
            .values()
            .filter(|m| m.presence.with_presence && m.session.id() != except)
            .map(|m| m.session.clone())
            .collect()
    }

    /// Every member but `except`.
    pub(super) fn members_except(&self, except: SessionId) -> Vec<SessionHandle> {
        self.members
            .values()
            .filter(|m| m.session.id() != except)
            .map(|m| m.session.clone())
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::outbox::Outbox;

    fn session(id: u64, user: &str) -> SessionHandle {
        let (outbox, rx) = Outbox::new(8, Arc::new(Metrics::default()));
        std::mem::forget(rx);
        SessionHandle::new(SessionId(id), "app", user, outbox)
    }

    fn audience(ch: &StreamChannel, publisher: &SessionHandle, topic: &str) -> Vec<String> {
        let mut users: Vec<String> = ch
            .audience(publisher.id(), topic)
            .unwrap_or_else(|| Arc::from([]))
            .iter()
            .map(|s| s.user_id().to_owned())
            .collect();
        users.sort();
        users
    }

    #[test]
    fn auto_subscription_takes_later_publishers_up_to_the_limit() {
        let mut ch = StreamChannel::default();
        let sub = session(1, "sub");
        let pubs: Vec<_> = (0..4).map(|i| session(10 + i, &format!("p{i}"))).collect();
        ch.join(&sub, PresenceFlags::default(), 10).unwrap();
        for p in &pubs {
            ch.join(p, PresenceFlags::default(), 10).unwrap();
        }
        ch.join_topic(&pubs[0], "t", "").unwrap();
        let r = ch.subscribe_topic(&sub, "t", None, 50, 2).unwrap();
        assert_eq!(r.succeed, vec!["p0".to_owned()]);
        ch.join_topic(&pubs[1], "t", "").unwrap();
        ch.join_topic(&pubs[2], "t", "").unwrap();
        assert_eq!(audience(&ch, &pubs[1], "t"), vec!["sub"]);
        // The limit (2 here) is reached: the third publisher is not taken...
        assert!(audience(&ch, &pubs[2], "t").is_empty());
        // ...until one of the first two leaves.
        ch.leave_topic(pubs[0].id(), "t").unwrap();
        assert_eq!(audience(&ch, &pubs[2], "t"), vec!["sub"]);
    }

    #[test]
    fn unsubscribing_a_user_by_name_holds_under_auto_subscription() {
        let mut ch = StreamChannel::default();
        let sub = session(1, "sub");
        let a = session(2, "a");
        for s in [&sub, &a] {
            ch.join(s, PresenceFlags::default(), 10).unwrap();
        }
        ch.join_topic(&a, "t", "").unwrap();
        ch.subscribe_topic(&sub, "t", None, 50, 64).unwrap();
        assert_eq!(audience(&ch, &a, "t"), vec!["sub"]);
        ch.unsubscribe_topic(sub.id(), "t", Some(&["a".into()]))
            .unwrap();
        assert!(audience(&ch, &a, "t").is_empty());
        // Naming the user again brings it back.
        ch.subscribe_topic(&sub, "t", Some(&["a".into()]), 50, 64)
            .unwrap();
        assert_eq!(audience(&ch, &a, "t"), vec!["sub"]);
    }

    #[test]
    fn unsubscribing_names_of_non_publishers_keeps_nothing() {
        let mut ch = StreamChannel::default();
        let sub = session(1, "sub");
        ch.join(&sub, PresenceFlags::default(), 10).unwrap();
        ch.subscribe_topic(&sub, "t", None, 50, 64).unwrap();
        for i in 0..100 {
            let names: Vec<String> = (0..64).map(|j| format!("n{i}-{j}")).collect();
            ch.unsubscribe_topic(sub.id(), "t", Some(&names)).unwrap();
        }
        let kept = ch.topics["t"].subscribers[&sub.id()].excluded.len();
        assert_eq!(kept, 0);
    }

    /// In a cluster, a publisher's messages still on the bus when it leaves reach its audience:
    /// its entry goes with the list that leaves it out, not with the local leave.
    #[test]
    fn a_listed_publisher_keeps_its_audience_until_the_list_without_it() {
        let mut ch = StreamChannel::listed();
        let (sub, a, b) = (session(1, "sub"), session(2, "a"), session(3, "b"));
        for s in [&sub, &a, &b] {
            ch.join(s, PresenceFlags::default(), 10).unwrap();
        }
        ch.join_topic(&a, "t", "").unwrap();
        ch.join_topic(&b, "t", "").unwrap();
        let listed = |v: &[&SessionHandle]| -> Vec<ListedPublisher> {
            v.iter()
                .map(|s| (s.id(), s.user_id().to_owned(), String::new()))
                .collect()
        };
        assert!(ch.set_publishers("t", 2, &listed(&[&a, &b])));
        ch.subscribe_topic(&sub, "t", Some(&["a".into(), "b".into()]), 50, 64)
            .unwrap();
        // a leaves the topic, b the whole channel: both still have their audience...
        ch.leave_topic(a.id(), "t").unwrap();
        ch.leave(b.id()).unwrap();
        assert_eq!(audience(&ch, &a, "t"), vec!["sub"]);
        assert_eq!(audience(&ch, &b, "t"), vec!["sub"]);
        // ...until the lists that leave them out arrive.
        assert!(ch.set_publishers("t", 3, &listed(&[&b])));
        assert!(audience(&ch, &a, "t").is_empty());
        assert_eq!(audience(&ch, &b, "t"), vec!["sub"]);
        assert!(ch.set_publishers("t", 4, &[]));
        assert!(audience(&ch, &b, "t").is_empty());
        // A join the cluster refused is taken back at once.
        ch.join_topic(&a, "u", "").unwrap();
        ch.unlist(a.id(), "u");
        assert!(ch.audience(a.id(), "u").is_none());
    }

    /// In a cluster, the lists read from the store when a session joins fill in unknown topics
    /// only: a known one may have messages of a publisher still on the bus, ahead of the list
    /// that leaves it out, and the stored list (already without it) would drop them.
    #[test]
    fn a_stored_list_fills_in_only_topics_not_known_here() {
        let mut ch = StreamChannel::listed();
        let (sub, remote) = (session(1, "sub"), session(2, "remote"));
        ch.join(&sub, PresenceFlags::default(), 10).unwrap();
        let listed = vec![(remote.id(), "remote".to_owned(), String::new())];
        assert!(ch.set_publishers("t", 1, &listed));
        ch.subscribe_topic(&sub, "t", None, 50, 64).unwrap();
        // The store has moved on (the publisher left) while the bus still carries its messages.
        assert!(!ch.seed_publishers("t", 2, &[]));
        assert_eq!(audience(&ch, &remote, "t"), vec!["sub"]);
        // A topic a local subscriber waits on is known too.
        ch.subscribe_topic(&sub, "u", Some(&["remote".into()]), 50, 64)
            .unwrap();
        assert!(!ch.seed_publishers("u", 5, &listed));
        // An unknown topic takes the stored list, and the bus's older copy of it is ignored.
        assert!(ch.seed_publishers("v", 3, &listed));
        assert!(!ch.set_publishers("v", 2, &[]));
        let topics: Vec<String> = ch.topic_infos().into_iter().map(|t| t.topic_name).collect();
        assert_eq!(topics, ["t", "v"]);
    }

    #[test]
    fn leaving_the_channel_drops_topics_and_subscriptions() {
        let mut ch = StreamChannel::default();
        let a = session(1, "a");
        let b = session(2, "b");
        ch.join(&a, PresenceFlags::default(), 10).unwrap();
        ch.join(&b, PresenceFlags::default(), 10).unwrap();
        ch.join_topic(&a, "t", "m").unwrap();
        ch.join_topic(&b, "t", "").unwrap();
        ch.subscribe_topic(&a, "t", Some(&["b".into()]), 50, 64)
            .unwrap();
        ch.subscribe_topic(&b, "t", Some(&["a".into()]), 50, 64)
            .unwrap();
        assert_eq!(audience(&ch, &b, "t"), vec!["a"]);
        assert_eq!(ch.leave(a.id()).unwrap(), vec!["t".to_owned()]);
        assert!(audience(&ch, &b, "t").is_empty());
        assert!(ch.audience(a.id(), "t").is_none());
        assert!(matches!(ch.leave(a.id()), Err(StreamError::NotJoined)));
        ch.leave(b.id()).unwrap();
        assert!(ch.topics.is_empty() && ch.is_empty());
    }

    #[test]
    fn members_beyond_the_limit_are_refused() {
        let mut ch = StreamChannel::default();
        ch.join(&session(1, "a"), PresenceFlags::default(), 2)
            .unwrap();
        ch.join(&session(2, "b"), PresenceFlags::default(), 2)
            .unwrap();
        assert!(matches!(
            ch.join(&session(3, "c"), PresenceFlags::default(), 2),
            Err(StreamError::Full(2))
        ));
        // A member joining again is not a new member.
        ch.join(&session(1, "a"), PresenceFlags::default(), 2)
            .unwrap();
    }
}
