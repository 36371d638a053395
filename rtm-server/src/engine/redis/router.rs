//! The Redis engine's [`Router`]: the local engine routes to this node's sessions, Redis keeps
//! what the cluster shares, and events cross nodes on the channels' buses.

use std::sync::atomic::Ordering;
use std::sync::{LazyLock, PoisonError};

use bytes::Bytes;
use redis::Script;
use rtm_proto::{ChannelDetail, ChannelType, StateDetail, SubscribeOptions, TopicInfo, UserState};

use super::envelope::Envelope;
use super::keys::{self, ChannelKeys};
use super::topic_repairs::Wanted;
use super::{RedisEngine, topics};
use crate::engine::{
    Delivery, EngineError, PresenceFlags, PresentPage, Router, SessionHandle, SessionId,
    StateChange, StateError, StreamError, TopicSubscribed,
};

/// Deletes the user's session key if it still names this session (ARGV[1]), and then the
/// user's entry (ARGV[2]) in its node's list (KEYS[2]).
static RELEASE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then
            redis.call('SREM', KEYS[2], ARGV[2])
            return redis.call('DEL', KEYS[1])
        end
        return 0
        ",
    )
});

/// No limit on a message channel's members.
const UNLIMITED: usize = usize::MAX >> 1;

impl RedisEngine {
    /// Starts counting `session` as a local member of a channel; true if it was not one.
    fn track(&self, session: SessionId, channel_type: ChannelType, channel: &str) -> bool {
        self.inner
            .memberships
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .entry(session)
            .or_default()
            .insert((channel_type, channel.into()))
    }

    /// Stops counting `session` as a local member of a channel; true if it was one.
    fn untrack(&self, session: SessionId, channel_type: ChannelType, channel: &str) -> bool {
        let mut memberships = self
            .inner
            .memberships
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let Some(of) = memberships.get_mut(&session) else {
            return false;
        };
        let was = of.remove(&(channel_type, Box::<str>::from(channel)));
        if of.is_empty() {
            memberships.remove(&session);
        }
        was
    }

    /// Listens to a channel's bus for one more local member.
    async fn bus_join(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<(), EngineError> {
        let (shard, _) = self.channel_shard(app_id, channel);
        let bus = ChannelKeys::new(app_id, channel_type, channel).bus;
        self.inner
            .bus
            .join(shard, &bus, (app_id, channel_type, channel))
            .await
    }

    /// One local member of a channel fewer on its bus. `removed`: whether the member was
    /// removed from Redis (if not, the channel stays in the node's list, for a reaper to find
    /// the entry).
    async fn bus_leave(
        &self,
        app_id: &str,
        (channel_type, channel): (ChannelType, &str),
        removed: bool,
    ) {
        let (shard, mut conn) = self.channel_shard(app_id, channel);
        let bus = ChannelKeys::new(app_id, channel_type, channel).bus;
        // No member here any more: nothing for a reaper to look at if this node dies. Under
        // the bus's lock, so that a local join that follows lists the channel again after.
        let unlist = async {
            if !removed {
                return;
            }
            let mut cmd = redis::cmd("SREM");
            cmd.arg(keys::node_channels(self.inner.node))
                .arg(keys::lock_channel(app_id, channel_type, channel));
            if let Err(e) = self
                .run("node channels", cmd.query_async::<()>(&mut conn))
                .await
            {
                tracing::debug!(%channel, "node's channel list not updated: {e}");
            }
        };
        self.inner.bus.leave_then(shard, &bus, unlist).await;
    }

    /// Publishes `envelope` on a channel's bus; returns how many nodes took it.
    async fn publish_on(
        &self,
        app_id: &str,
        (channel_type, channel): (ChannelType, &str),
        envelope: Envelope,
    ) -> Result<Delivery, EngineError> {
        if self.inner.fenced.load(Ordering::Relaxed) {
            // Declared dead: what its sessions do (their leaves as it closes them) is not news
            // to the others, who timed them out already.
            return Err(EngineError::Unavailable(
                "this node was declared dead by the cluster".into(),
            ));
        }
        let bus = ChannelKeys::new(app_id, channel_type, channel).bus;
        let (_, mut conn) = self.channel_shard(app_id, channel);
        let mut publish_cmd = redis::cmd("PUBLISH");
        publish_cmd.arg(bus).arg(envelope.encode().as_ref());
        let publish = publish_cmd.query_async::<usize>(&mut conn);
        let nodes = self.run("publish", publish).await?;
        Ok(Delivery {
            queued: nodes,
            overflowed: 0,
        })
    }

    /// A local session leaves a channel: it is no longer a member in Redis, and the node stops
    /// listening to the bus after its last local member.
    async fn forget_member(
        &self,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<(), EngineError> {
        // Leaving a channel ends listening to its metadata.
        let set = (session.app_id().into(), channel_type, channel.into());
        self.inner.listeners.stop(session.id(), &set);
        self.inner.lock_listeners.stop(session.id(), &set);
        let removed = self.remove_member(session, channel_type, channel).await;
        if self.untrack(session.id(), channel_type, channel) {
            self.bus_leave(session.app_id(), (channel_type, channel), removed.is_ok())
                .await;
        }
        removed
    }
}

impl Router for RedisEngine {
    fn departures(&self) -> Option<tokio::sync::mpsc::UnboundedReceiver<crate::engine::Departed>> {
        self.inner
            .departures_rx
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
    }

    fn relays(&self) -> Option<std::sync::Arc<crate::engine::relay::Relays>> {
        Some(self.inner.relays.clone())
    }

    fn next_session_id(&self) -> SessionId {
        SessionId::new(
            self.inner.node,
            self.inner.sessions.fetch_add(1, Ordering::Relaxed),
        )
    }

    async fn attach(&self, session: &SessionHandle) -> Result<(), EngineError> {
        let (app_id, user) = (session.app_id(), session.user_id());
        // One login at a time on this node, from the local registration to the key write: two
        // logins of a user here leave the key naming the one that stays (the later), never a
        // closed one.
        let _one_at_a_time = self.inner.logins.lock().await;
        if self.inner.fenced.load(Ordering::Relaxed) {
            return Err(EngineError::Unavailable(
                "this node was declared dead by the cluster; it must be restarted".into(),
            ));
        }
        // Registered here first (closing a session of the user on this node), so that a kick
        // from a login on another node that comes right after the key write finds it.
        self.inner.local.attach(session).await?;
        let mut conn = self.user_shard(app_id, user);
        let mut pipe = redis::pipe();
        pipe.cmd("SET")
            .arg(keys::user_session(app_id, user))
            .arg(session.id().0)
            .arg("GET")
            .cmd("SADD")
            .arg(keys::node_users(self.inner.node))
            .arg(format!("{app_id}:{user}"))
            .ignore();
        let set = pipe.query_async::<(Option<u64>,)>(&mut conn);
        let previous = match self.run("login", set).await {
            Ok((previous,)) => previous.map(SessionId),
            Err(e) => {
                let _ = self.inner.local.detach(session).await;
                return Err(e);
            }
        };
        // A session of the user on another node is closed by that node, told through its inbox.
        if let Some(previous) =
            previous.filter(|p| *p != session.id() && p.node() != self.inner.node)
        {
            let kick = Envelope::Kick {
                app: app_id.to_owned(),
                user: user.to_owned(),
                session: previous,
                reason: rtm_proto::CloseReason::SameUidLogin,
            };
            let mut first = self.first_shard();
            let mut publish_cmd = redis::cmd("PUBLISH");
            publish_cmd
                .arg(keys::inbox(previous.node()))
                .arg(kick.encode().as_ref());
            let publish = publish_cmd.query_async::<usize>(&mut first);
            // The login stands: the key names it. An old session that missed its kick is
            // replaced for every user message and presence query anyway.
            if let Err(e) = self.run("kick", publish).await {
                tracing::warn!(session = %previous, "the replaced session was not told to close: {e}");
            }
        }
        Ok(())
    }

    async fn detach(&self, session: &SessionHandle) -> Result<(), EngineError> {
        let channels = self
            .inner
            .memberships
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&session.id())
            .unwrap_or_default();
        self.inner.local.detach(session).await?;
        let mut failed = None;
        for (channel_type, channel) in channels {
            let removed = self.remove_member(session, channel_type, &channel).await;
            self.bus_leave(session.app_id(), (channel_type, &channel), removed.is_ok())
                .await;
            if let Err(e) = removed {
                failed = Some(e);
            }
        }
        let (app_id, user) = (session.app_id(), session.user_id());
        let mut conn = self.user_shard(app_id, user);
        let mut invocation = RELEASE_USER.prepare_invoke();
        invocation
            .key(keys::user_session(app_id, user))
            .key(keys::node_users(self.inner.node))
            .arg(session.id().0.to_string())
            .arg(format!("{app_id}:{user}"));
        self.run("logout", invocation.invoke_async::<i64>(&mut conn))
            .await?;
        failed.map_or(Ok(()), Err)
    }

    async fn subscribe(
        &self,
        session: &SessionHandle,
        channel: &str,
        options: SubscribeOptions,
    ) -> Result<(), EngineError> {
        let app_id = session.app_id();
        let m = ChannelType::Message;
        if self.track(session.id(), m, channel)
            && let Err(e) = self.bus_join(app_id, m, channel).await
        {
            self.untrack(session.id(), m, channel);
            return Err(e);
        }
        self.inner
            .local
            .subscribe(session, channel, options)
            .await?;
        if let Err(e) = self
            .add_member(session, (m, channel), options.be_quiet, UNLIMITED)
            .await
        {
            // All or nothing: the session does not count the subscription either.
            let _ = self.inner.local.unsubscribe(session, channel).await;
            let _ = self.forget_member(session, m, channel).await;
            return Err(e);
        }
        Ok(())
    }

    async fn unsubscribe(&self, session: &SessionHandle, channel: &str) -> Result<(), EngineError> {
        self.inner.local.unsubscribe(session, channel).await?;
        self.forget_member(session, ChannelType::Message, channel)
            .await
    }

    async fn publish(
        &self,
        app_id: &str,
        channel: &str,
        frame: Bytes,
    ) -> Result<Delivery, EngineError> {
        self.publish_on(
            app_id,
            (ChannelType::Message, channel),
            Envelope::Message(frame),
        )
        .await
    }

    async fn send_to_user(
        &self,
        app_id: &str,
        user_id: &str,
        frame: Bytes,
    ) -> Result<Option<Delivery>, EngineError> {
        let mut conn = self.user_shard(app_id, user_id);
        let mut get_cmd = redis::cmd("GET");
        get_cmd.arg(keys::user_session(app_id, user_id));
        let get = get_cmd.query_async::<Option<u64>>(&mut conn);
        let Some(session) = self.run("user", get).await?.map(SessionId) else {
            return Ok(None);
        };
        if session.node() == self.inner.node {
            return self.inner.local.send_to_user(app_id, user_id, frame).await;
        }
        let envelope = Envelope::ToUser {
            app: app_id.to_owned(),
            user: user_id.to_owned(),
            frame,
        };
        let mut first = self.first_shard();
        let mut publish_cmd = redis::cmd("PUBLISH");
        publish_cmd
            .arg(keys::inbox(session.node()))
            .arg(envelope.encode().as_ref());
        let publish = publish_cmd.query_async::<usize>(&mut first);
        // No node listening: the user's node is gone, and the user with it.
        Ok(match self.run("user message", publish).await? {
            0 => None,
            _ => Some(Delivery {
                queued: 1,
                overflowed: 0,
            }),
        })
    }

    async fn join_stream(
        &self,
        session: &SessionHandle,
        channel: &str,
        presence: PresenceFlags,
        max_users: usize,
    ) -> Result<Vec<TopicInfo>, StreamError> {
        let app_id = session.app_id();
        let s = ChannelType::Stream;
        if !self
            .add_member(session, (s, channel), presence.quiet, max_users)
            .await?
        {
            return Err(StreamError::Full(max_users));
        }
        if self.track(session.id(), s, channel)
            && let Err(e) = self.bus_join(app_id, s, channel).await
        {
            self.untrack(session.id(), s, channel);
            let _ = self.remove_member(session, s, channel).await;
            return Err(e.into());
        }
        // The limit was checked in Redis for the whole cluster.
        self.inner
            .local
            .join_stream(session, channel, presence, usize::MAX)
            .await?;
        // The bus is listened to: from here on no change of a topic is missed. The lists read
        // now fill in only the topics this node knows nothing of (`load_topics`).
        match self.load_topics(app_id, channel).await {
            Ok(topics) => Ok(topics),
            Err(e) => {
                // Not joined after all: undone everywhere.
                let _ = self.inner.local.leave_stream(session, channel).await;
                let _ = self.forget_member(session, s, channel).await;
                Err(e.into())
            }
        }
    }

    async fn leave_stream(
        &self,
        session: &SessionHandle,
        channel: &str,
    ) -> Result<Vec<String>, StreamError> {
        let topics = self.inner.local.leave_stream(session, channel).await?;
        let mut failed = None;
        for topic in &topics {
            if let Err(e) = self.leave_in_cluster(session, channel, topic).await {
                failed = Some(e);
            }
        }
        self.forget_member(session, ChannelType::Stream, channel)
            .await?;
        failed.map_or(Ok(topics), |e| Err(e.into()))
    }

    async fn join_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        meta: &str,
    ) -> Result<(), StreamError> {
        // A second join of a topic changes the publisher's meta: if that fails, the publisher
        // stays, with the meta it had.
        let before = self.inner.local.joined_meta(session, channel, topic);
        // The local engine checks that the session is a member, and records the topic with it.
        self.inner
            .local
            .join_topic(session, channel, topic, meta)
            .await?;
        // A repair still waiting to put back a refused change's meta knows the meta to keep
        // better than the list here, which the refused change may have reached since.
        let before = match self
            .inner
            .topic_repairs
            .cancel(session, channel, topic)
            .await
        {
            Some(Wanted::Listed(meta)) => Some(Some(meta)),
            _ => before,
        };
        if let Err(e) = self.publish_in_topic(session, channel, topic, meta).await {
            // The script may have run before the failure was seen (a timeout), or may still
            // run: the upkeep puts the entry back as it was (`topic_repairs.rs`).
            match before {
                Some(listed) => {
                    let meta = listed.as_deref().unwrap_or_default();
                    let _ = self
                        .inner
                        .local
                        .join_topic(session, channel, topic, meta)
                        .await;
                    // Only a meta the cluster's list showed is known to be Redis's.
                    if let Some(meta) = listed {
                        self.inner.topic_repairs.record(
                            session,
                            channel,
                            topic,
                            Wanted::Listed(meta),
                        );
                    }
                }
                None => {
                    let _ = self.inner.local.leave_topic(session, channel, topic).await;
                    self.inner
                        .local
                        .unlist_topic_publisher(session, channel, topic);
                    let _ = self.leave_in_cluster(session, channel, topic).await;
                }
            }
            return Err(e.into());
        }
        Ok(())
    }

    async fn leave_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
    ) -> Result<(), StreamError> {
        self.inner
            .local
            .leave_topic(session, channel, topic)
            .await?;
        // Left here all the same if that fails: the upkeep takes the entry out once it can.
        self.leave_in_cluster(session, channel, topic).await?;
        Ok(())
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
        // Subscriptions live where the subscriber is; the publishers are known on every node
        // with members (topics.rs).
        self.inner
            .local
            .subscribe_topic(session, channel, topic, users, max_topics, max_users)
            .await
    }

    async fn unsubscribe_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        users: Option<&[String]>,
    ) -> Result<(), StreamError> {
        self.inner
            .local
            .unsubscribe_topic(session, channel, topic, users)
            .await
    }

    async fn publish_topic(
        &self,
        publisher: &SessionHandle,
        channel: &str,
        topic: &str,
        frame: Bytes,
    ) -> Result<Delivery, EngineError> {
        self.publish_on(
            publisher.app_id(),
            (ChannelType::Stream, channel),
            topics::message(publisher.id(), topic, frame),
        )
        .await
    }

    async fn present_users(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<Vec<UserState>, EngineError> {
        self.all_present(app_id, channel_type, channel).await
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
        self.page_present(app_id, (channel_type, channel), after, limit, with_states)
            .await
    }

    async fn user_channels(
        &self,
        app_id: &str,
        user_id: &str,
    ) -> Result<Vec<ChannelDetail>, EngineError> {
        self.channels_of_user(app_id, user_id).await
    }

    async fn update_state(
        &self,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
        change: StateChange,
        max_pairs: usize,
    ) -> Result<StateDetail, StateError> {
        self.change_state(session, (channel_type, channel), change, max_pairs)
            .await
    }

    async fn get_state(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
    ) -> Result<Option<StateDetail>, EngineError> {
        self.state_of(app_id, (channel_type, channel), user_id)
            .await
    }

    async fn present_count(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<usize, EngineError> {
        self.count_present(app_id, channel_type, channel).await
    }

    async fn broadcast_presence(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        except: SessionId,
        frame: Bytes,
    ) -> Result<Delivery, EngineError> {
        self.publish_on(
            app_id,
            (channel_type, channel),
            Envelope::Presence { except, frame },
        )
        .await
    }

    async fn broadcast_stream(
        &self,
        app_id: &str,
        channel: &str,
        except: SessionId,
        frame: Bytes,
    ) -> Result<Delivery, EngineError> {
        self.publish_on(
            app_id,
            (ChannelType::Stream, channel),
            Envelope::Stream { except, frame },
        )
        .await
    }

    async fn hold_leave(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
    ) -> Result<u64, EngineError> {
        if self.inner.fenced.load(Ordering::Relaxed) {
            // As in `publish_on`: a fenced node's leaves are not news, nor to be held.
            return Err(EngineError::Unavailable(
                "this node was declared dead by the cluster".into(),
            ));
        }
        self.hold(app_id, (channel_type, channel), user_id).await
    }

    async fn release_leave(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
        ticket: u64,
    ) -> Result<bool, EngineError> {
        self.release(app_id, (channel_type, channel), user_id, ticket)
            .await
    }

    async fn cancel_leave(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
    ) -> Result<bool, EngineError> {
        self.cancel(app_id, (channel_type, channel), user_id).await
    }

    async fn disconnect(
        &self,
        app_id: &str,
        user_id: &str,
        reason: rtm_proto::CloseReason,
    ) -> Result<bool, EngineError> {
        if let Some(session) = self.inner.local.session(app_id, user_id) {
            session.close(reason);
            return Ok(true);
        }
        let mut conn = self.user_shard(app_id, user_id);
        let mut get = redis::cmd("GET");
        get.arg(keys::user_session(app_id, user_id));
        let listed: Option<u64> = self.run("disconnect", get.query_async(&mut conn)).await?;
        let Some(session) = listed.map(SessionId) else {
            return Ok(false);
        };
        if session.node() == self.inner.node {
            // Listed here but gone: the key outlived its session by a moment.
            return Ok(false);
        }
        let kick = Envelope::Kick {
            app: app_id.to_owned(),
            user: user_id.to_owned(),
            session,
            reason,
        };
        let mut first = self.first_shard();
        let mut publish = redis::cmd("PUBLISH");
        publish
            .arg(keys::inbox(session.node()))
            .arg(kick.encode().as_ref());
        let receivers: usize = self
            .run("disconnect", publish.query_async(&mut first))
            .await?;
        Ok(receivers > 0)
    }
}
