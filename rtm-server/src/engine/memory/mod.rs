//! The in-memory engine: one node's sessions and channels in a mutex-guarded map.
//!
//! The lock is a `std::sync::Mutex`, held only for map lookups and updates and never across an
//! `.await`. Publishing does not fan out under the lock: a publish clones one `Arc` of the
//! channel's subscriber snapshot under the lock and pushes to the queues after releasing it
//! ([`subscribers`]), so many publishers never wait on each other's fan-out, and joins and
//! leaves cost O(1) under the lock whatever the channel's size.

mod commit;
mod debounce;
mod history;
mod inspect;
mod listed;
mod locks;
mod metadata;
mod storage;
mod store;
mod stream;
mod subscribers;

use std::collections::{HashMap, HashSet};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use rtm_proto::{
    ChannelDetail, ChannelType, CloseReason, StateDetail, SubscribeOptions, TopicInfo, UserState,
};

use self::debounce::Debounce;
pub(crate) use self::listed::StoredList;
pub(crate) use self::locks::LockChange;
#[cfg(test)]
pub(crate) use self::metadata::DB_FILE as METADATA_DB_FILE;
pub use self::metadata::Durability;
pub(crate) use self::metadata::apply as apply_metadata;
use self::storage::Storage;
pub(crate) use self::storage::{lock_frame, snapshot_change, storage_frame};
pub(crate) use self::stream::ListedPublisher;
use self::stream::StreamChannel;
use self::subscribers::{Subscriber, Subscribers};
use super::{
    Delivery, EngineError, PresenceFlags, PresentPage, Router, SessionHandle, SessionId,
    StateChange, StateError, StreamError, TopicSubscribed, tally,
};

/// The default, single-node engine. Sessions, channels, presence and locks live in memory;
/// metadata and history live in SQLite in the server's data directory.
#[derive(Debug)]
pub struct MemoryEngine {
    state: Mutex<State>,
    store: Arc<Storage>,
    /// Leaves waiting out the presence debounce window.
    debounce: Debounce,
    next_session: AtomicU64,
    /// The local part of a cluster's engine: topic publisher lists come from the cluster
    /// ([`MemoryEngine::set_topic_publishers`]).
    cluster: bool,
}

impl Default for MemoryEngine {
    fn default() -> Self {
        Self {
            state: Mutex::default(),
            store: Arc::default(),
            debounce: Debounce::default(),
            next_session: AtomicU64::new(1),
            cluster: false,
        }
    }
}

#[derive(Debug, Default)]
struct State {
    apps: HashMap<Box<str>, App>,
}

/// The temporary states of a channel's users, each with the session that set it.
type UserStates = HashMap<Box<str>, (SessionId, StateDetail)>;

#[derive(Debug, Default)]
struct App {
    users: HashMap<Box<str>, SessionHandle>,
    channels: HashMap<Box<str>, Subscribers>,
    /// The channels of each session, so that detaching does not scan every channel.
    subscribed: HashMap<SessionId, HashSet<Box<str>>>,
    streams: HashMap<Box<str>, StreamChannel>,
    /// The stream channels of each session.
    joined: HashMap<SessionId, HashSet<Box<str>>>,
    /// Temporary user states per channel: by user, with the session that set it.
    states: HashMap<(ChannelType, Box<str>), UserStates>,
}

impl App {
    /// Removes `id` from the subscribers of `channel`, dropping the channel when it empties.
    fn remove_subscriber(&mut self, channel: &str, id: SessionId) {
        let Some(subs) = self.channels.get_mut(channel) else {
            return;
        };
        subs.remove(id);
        if subs.is_empty() {
            self.channels.remove(channel);
        }
    }
}

impl App {
    /// Drops the state `session` set in a channel it leaves.
    fn clear_state(&mut self, channel_type: ChannelType, channel: &str, session: &SessionHandle) {
        let key = (channel_type, Box::<str>::from(channel));
        if let Some(users) = self.states.get_mut(&key) {
            if users
                .get(session.user_id())
                .is_some_and(|(id, _)| *id == session.id())
            {
                users.remove(session.user_id());
            }
            if users.is_empty() {
                self.states.remove(&key);
            }
        }
    }

    /// Whether `session` is in the channel.
    fn is_in(&self, session: SessionId, channel_type: ChannelType, channel: &str) -> bool {
        let of = match channel_type {
            ChannelType::Stream => &self.joined,
            _ => &self.subscribed,
        };
        of.get(&session).is_some_and(|c| c.contains(channel))
    }

    /// The visible (not quiet) users of a message or stream channel, in no order.
    fn visible_users(&self, channel_type: ChannelType, channel: &str) -> Vec<&str> {
        match channel_type {
            ChannelType::Stream => self
                .streams
                .get(channel)
                .map(StreamChannel::present_user_ids)
                .unwrap_or_default(),
            _ => self
                .channels
                .get(channel)
                .map(|subs| {
                    subs.iter()
                        .filter(|s| !s.presence.quiet)
                        .map(|s| s.session.user_id())
                        .collect()
                })
                .unwrap_or_default(),
        }
    }

    /// The state of a user in a channel (empty if none was set).
    fn state_of(&self, channel_type: ChannelType, channel: &str, user: &str) -> StateDetail {
        self.states
            .get(&(channel_type, Box::<str>::from(channel)))
            .and_then(|users| users.get(user))
            .map(|(_, s)| s.clone())
            .unwrap_or_default()
    }

    /// Removes session `id` from a stream channel, dropping the channel when it empties.
    fn leave_stream(&mut self, channel: &str, id: SessionId) -> Result<Vec<String>, StreamError> {
        let stream = self
            .streams
            .get_mut(channel)
            .ok_or(StreamError::NotJoined)?;
        let left = stream.leave(id)?;
        if stream.is_empty() {
            self.streams.remove(channel);
        }
        if let Some(joined) = self.joined.get_mut(&id) {
            joined.remove(channel);
            if joined.is_empty() {
                self.joined.remove(&id);
            }
        }
        Ok(left)
    }
}

impl MemoryEngine {
    /// An empty engine without storage: metadata and history operations fail with
    /// `STORAGE_NOT_AVAILABLE` (for benches and tests of the router alone).
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty engine without storage that keeps the sessions of one node of a cluster: a
    /// stream channel's topic publishers are the lists the cluster sends, applied in the order
    /// they come, and a local publisher's leave waits for its list.
    pub(crate) fn for_cluster() -> Self {
        Self {
            cluster: true,
            ..Self::default()
        }
    }

    /// An empty engine whose metadata and history live in `data_dir`, committed as
    /// `durability` says.
    pub fn open(data_dir: &Path, durability: Durability) -> Result<Self, EngineError> {
        let engine = Self::default();
        engine.store.open(data_dir, durability)?;
        Ok(engine)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // Every update below leaves the maps consistent before it can panic, so a poisoned
        // lock still guards valid data.
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Every session here.
    pub(crate) fn all_sessions(&self) -> Vec<SessionHandle> {
        self.state()
            .apps
            .values()
            .flat_map(|app| app.users.values().cloned())
            .collect()
    }

    /// The session of `user_id` in `app_id`, if it is here.
    pub(crate) fn session(&self, app_id: &str, user_id: &str) -> Option<SessionHandle> {
        self.state().apps.get(app_id)?.users.get(user_id).cloned()
    }

    /// Transactions and writes committed to the metadata and history database so far (fewer
    /// transactions than writes when concurrent writes shared a commit).
    pub fn commit_counts(&self) -> (u64, u64) {
        self.store.commit_counts()
    }

    /// The subscribers of a message channel, to walk after the engine's lock is released.
    fn subscribers(&self, app_id: &str, channel: &str) -> Option<Arc<[Subscriber]>> {
        self.state()
            .apps
            .get_mut(app_id)
            .and_then(|app| app.channels.get_mut(channel))
            .map(Subscribers::snapshot)
    }

    /// How many sessions subscribe to `channel` in `app_id` (for tests and metrics).
    pub fn subscriber_count(&self, app_id: &str, channel: &str) -> usize {
        self.state()
            .apps
            .get(app_id)
            .and_then(|app| app.channels.get(channel))
            .map_or(0, |subs| subs.len())
    }
}

impl Router for MemoryEngine {
    fn next_session_id(&self) -> SessionId {
        SessionId::new(0, self.next_session.fetch_add(1, Ordering::Relaxed))
    }

    async fn attach(&self, session: &SessionHandle) -> Result<(), EngineError> {
        let previous = {
            let mut state = self.state();
            let app = state.apps.entry(session.app_id().into()).or_default();
            app.users.insert(session.user_id().into(), session.clone())
        };
        if let Some(previous) = previous.filter(|p| p.id() != session.id()) {
            previous.close(CloseReason::SameUidLogin);
        }
        Ok(())
    }

    async fn detach(&self, session: &SessionHandle) -> Result<(), EngineError> {
        let mut state = self.state();
        let Some(app) = state.apps.get_mut(session.app_id()) else {
            return Ok(());
        };
        if app
            .users
            .get(session.user_id())
            .is_some_and(|s| s.id() == session.id())
        {
            app.users.remove(session.user_id());
        }
        for channel in app.subscribed.remove(&session.id()).unwrap_or_default() {
            app.remove_subscriber(&channel, session.id());
            app.clear_state(ChannelType::Message, &channel, session);
        }
        // The session normally left its stream channels first (telling the other members).
        for channel in app.joined.get(&session.id()).cloned().unwrap_or_default() {
            let _ = app.leave_stream(&channel, session.id());
            app.clear_state(ChannelType::Stream, &channel, session);
        }
        if app.users.is_empty() && app.channels.is_empty() && app.streams.is_empty() {
            state.apps.remove(session.app_id());
        }
        Ok(())
    }

    async fn subscribe(
        &self,
        session: &SessionHandle,
        channel: &str,
        options: SubscribeOptions,
    ) -> Result<(), EngineError> {
        let mut state = self.state();
        let app = state.apps.entry(session.app_id().into()).or_default();
        app.channels
            .entry(channel.into())
            .or_default()
            .insert(Subscriber {
                session: session.clone(),
                with_message: options.with_message,
                presence: PresenceFlags {
                    with_presence: options.with_presence,
                    quiet: options.be_quiet,
                },
            });
        app.subscribed
            .entry(session.id())
            .or_default()
            .insert(channel.into());
        Ok(())
    }

    async fn unsubscribe(&self, session: &SessionHandle, channel: &str) -> Result<(), EngineError> {
        let mut state = self.state();
        let Some(app) = state.apps.get_mut(session.app_id()) else {
            return Ok(());
        };
        app.remove_subscriber(channel, session.id());
        if let Some(channels) = app.subscribed.get_mut(&session.id()) {
            channels.remove(channel);
        }
        app.clear_state(ChannelType::Message, channel, session);
        drop(state);
        self.store
            .stop_listening(session, ChannelType::Message, channel);
        Ok(())
    }

    async fn publish(
        &self,
        app_id: &str,
        channel: &str,
        frame: Bytes,
    ) -> Result<Delivery, EngineError> {
        // Clone the list under the lock; push to the queues after releasing it.
        let subs = self.subscribers(app_id, channel);
        let Some(subs) = subs else {
            return Ok(Delivery::default());
        };
        let mut delivery = Delivery::default();
        for sub in subs.iter().filter(|s| s.with_message) {
            tally(&mut delivery, sub.session.push(frame.clone()));
        }
        Ok(delivery)
    }

    async fn send_to_user(
        &self,
        app_id: &str,
        user_id: &str,
        frame: Bytes,
    ) -> Result<Option<Delivery>, EngineError> {
        let session = self
            .state()
            .apps
            .get(app_id)
            .and_then(|a| a.users.get(user_id))
            .cloned();
        let Some(session) = session else {
            return Ok(None);
        };
        let mut delivery = Delivery::default();
        tally(&mut delivery, session.push(frame));
        Ok(Some(delivery))
    }

    async fn join_stream(
        &self,
        session: &SessionHandle,
        channel: &str,
        presence: PresenceFlags,
        max_users: usize,
    ) -> Result<Vec<TopicInfo>, StreamError> {
        let cluster = self.cluster;
        let mut state = self.state();
        let app = state.apps.entry(session.app_id().into()).or_default();
        let snapshot = app
            .streams
            .entry(channel.into())
            .or_insert_with(|| {
                if cluster {
                    StreamChannel::listed()
                } else {
                    StreamChannel::default()
                }
            })
            .join(session, presence, max_users);
        match snapshot {
            Ok(snapshot) => {
                app.joined
                    .entry(session.id())
                    .or_default()
                    .insert(channel.into());
                Ok(snapshot)
            }
            Err(e) => {
                if app
                    .streams
                    .get(channel)
                    .is_some_and(StreamChannel::is_empty)
                {
                    app.streams.remove(channel);
                }
                Err(e)
            }
        }
    }

    async fn leave_stream(
        &self,
        session: &SessionHandle,
        channel: &str,
    ) -> Result<Vec<String>, StreamError> {
        let mut state = self.state();
        let app = state
            .apps
            .get_mut(session.app_id())
            .ok_or(StreamError::NotJoined)?;
        let left = app.leave_stream(channel, session.id())?;
        app.clear_state(ChannelType::Stream, channel, session);
        drop(state);
        self.store
            .stop_listening(session, ChannelType::Stream, channel);
        Ok(left)
    }

    async fn join_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        meta: &str,
    ) -> Result<(), StreamError> {
        self.with_stream(session, channel, |s| s.join_topic(session, topic, meta))
    }

    async fn leave_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
    ) -> Result<(), StreamError> {
        self.with_stream(session, channel, |s| s.leave_topic(session.id(), topic))
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
        self.with_stream(session, channel, |s| {
            s.subscribe_topic(session, topic, users, max_topics, max_users)
        })
    }

    async fn unsubscribe_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        users: Option<&[String]>,
    ) -> Result<(), StreamError> {
        self.with_stream(session, channel, |s| {
            s.unsubscribe_topic(session.id(), topic, users)
        })
    }

    async fn publish_topic(
        &self,
        publisher: &SessionHandle,
        channel: &str,
        topic: &str,
        frame: Bytes,
    ) -> Result<Delivery, EngineError> {
        // Clone the audience under the lock; push after releasing it.
        let audience = self
            .state()
            .apps
            .get(publisher.app_id())
            .and_then(|a| a.streams.get(channel))
            .and_then(|s| s.audience(publisher.id(), topic));
        Ok(audience.map_or_else(Delivery::default, |to| Self::push_all(to.iter(), &frame)))
    }

    async fn present_users(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<Vec<UserState>, EngineError> {
        let state = self.state();
        let Some(app) = state.apps.get(app_id) else {
            return Ok(Vec::new());
        };
        let mut users = app.visible_users(channel_type, channel);
        users.sort_unstable();
        Ok(users
            .into_iter()
            .map(|user| UserState {
                states: app.state_of(channel_type, channel, user),
                user_id: user.to_owned(),
            })
            .collect())
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
        let state = self.state();
        let Some(app) = state.apps.get(app_id) else {
            return Ok(PresentPage::default());
        };
        let mut users = app.visible_users(channel_type, channel);
        users.sort_unstable();
        let total = users.len();
        let start = after.map_or(0, |after| users.partition_point(|u| *u <= after));
        let page = &users[start.min(total)..];
        let more = page.len() > limit;
        let users = page
            .iter()
            .take(limit)
            .map(|user| UserState {
                user_id: (*user).to_owned(),
                states: if with_states {
                    app.state_of(channel_type, channel, user)
                } else {
                    StateDetail::new()
                },
            })
            .collect();
        Ok(PresentPage { total, users, more })
    }

    async fn user_channels(
        &self,
        app_id: &str,
        user_id: &str,
    ) -> Result<Vec<ChannelDetail>, EngineError> {
        let state = self.state();
        let Some(app) = state.apps.get(app_id) else {
            return Ok(Vec::new());
        };
        let Some(id) = app.users.get(user_id).map(SessionHandle::id) else {
            return Ok(Vec::new());
        };
        let mut channels = Vec::new();
        for channel in app.subscribed.get(&id).into_iter().flatten() {
            let visible = app
                .channels
                .get(channel)
                .and_then(|subs| subs.get(id))
                .is_some_and(|s| !s.presence.quiet);
            if visible {
                channels.push(ChannelDetail {
                    channel_name: channel.to_string(),
                    channel_type: ChannelType::Message,
                });
            }
        }
        for channel in app.joined.get(&id).into_iter().flatten() {
            if app.streams.get(channel).is_some_and(|s| s.is_visible(id)) {
                channels.push(ChannelDetail {
                    channel_name: channel.to_string(),
                    channel_type: ChannelType::Stream,
                });
            }
        }
        crate::engine::sort_channels(&mut channels);
        Ok(channels)
    }

    async fn update_state(
        &self,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
        change: StateChange,
        max_pairs: usize,
    ) -> Result<StateDetail, StateError> {
        let mut state = self.state();
        let app = state
            .apps
            .get_mut(session.app_id())
            .ok_or(StateError::NotPresent)?;
        if !app.is_in(session.id(), channel_type, channel) {
            return Err(StateError::NotPresent);
        }
        let mut current = app.state_of(channel_type, channel, session.user_id());
        change.apply(&mut current, max_pairs)?;
        app.states
            .entry((channel_type, channel.into()))
            .or_default()
            .insert(session.user_id().into(), (session.id(), current.clone()));
        Ok(current)
    }

    async fn get_state(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
    ) -> Result<Option<StateDetail>, EngineError> {
        let state = self.state();
        let Some(app) = state.apps.get(app_id) else {
            return Ok(None);
        };
        let visible = app.visible_users(channel_type, channel).contains(&user_id);
        Ok(visible.then(|| app.state_of(channel_type, channel, user_id)))
    }

    async fn present_count(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<usize, EngineError> {
        let state = self.state();
        let Some(app) = state.apps.get(app_id) else {
            return Ok(0);
        };
        Ok(app.visible_users(channel_type, channel).len())
    }

    async fn broadcast_presence(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        except: SessionId,
        frame: Bytes,
    ) -> Result<Delivery, EngineError> {
        if channel_type == ChannelType::Stream {
            let to: Vec<SessionHandle> = self
                .state()
                .apps
                .get(app_id)
                .and_then(|app| app.streams.get(channel))
                .map(|s| s.presence_audience(except))
                .unwrap_or_default();
            return Ok(Self::push_all(to.iter(), &frame));
        }
        // The subscribers' snapshot, walked after the lock is released.
        let subs = self.subscribers(app_id, channel);
        let Some(subs) = subs else {
            return Ok(Delivery::default());
        };
        let to = subs
            .iter()
            .filter(|s| s.presence.with_presence && s.session.id() != except)
            .map(|s| &s.session);
        Ok(Self::push_all(to, &frame))
    }

    async fn broadcast_stream(
        &self,
        app_id: &str,
        channel: &str,
        except: SessionId,
        frame: Bytes,
    ) -> Result<Delivery, EngineError> {
        let members = self
            .state()
            .apps
            .get(app_id)
            .and_then(|a| a.streams.get(channel))
            .map(|s| s.members_except(except))
            .unwrap_or_default();
        Ok(Self::push_all(members.iter(), &frame))
    }

    async fn hold_leave(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
    ) -> Result<u64, EngineError> {
        Ok(self.debounce.hold(app_id, channel_type, channel, user_id))
    }

    async fn release_leave(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
        ticket: u64,
    ) -> Result<bool, EngineError> {
        Ok(self
            .debounce
            .release(app_id, channel_type, channel, user_id, ticket))
    }

    async fn cancel_leave(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
    ) -> Result<bool, EngineError> {
        Ok(self.debounce.cancel(app_id, channel_type, channel, user_id))
    }

    async fn disconnect(
        &self,
        app_id: &str,
        user_id: &str,
        reason: CloseReason,
    ) -> Result<bool, EngineError> {
        Ok(self
            .session(app_id, user_id)
            .map(|session| session.close(reason))
            .is_some())
    }
}

impl MemoryEngine {
    /// Runs `f` on a stream channel of the session's app.
    fn with_stream<T>(
        &self,
        session: &SessionHandle,
        channel: &str,
        f: impl FnOnce(&mut StreamChannel) -> Result<T, StreamError>,
    ) -> Result<T, StreamError> {
        let mut state = self.state();
        let stream = state
            .apps
            .get_mut(session.app_id())
            .and_then(|app| app.streams.get_mut(channel))
            .ok_or(StreamError::NotJoined)?;
        f(stream)
    }

    /// Pushes `frame` to each session in `to`.
    fn push_all<'a>(to: impl Iterator<Item = &'a SessionHandle>, frame: &Bytes) -> Delivery {
        let mut delivery = Delivery::default();
        for session in to {
            tally(&mut delivery, session.push(frame.clone()));
        }
        delivery
    }
}

#[cfg(test)]
mod tests;
