//! Presence in the core (`docs/protocol.md` §5.8): the events of users arriving in and leaving
//! channels. Who is in a channel, and how (with presence events, quiet), lives in the
//! [`Engine`]; the session says when it arrives and leaves.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rtm_proto::{
    ChannelType, Event, IntervalDetail, PresenceEvent, PresenceEventType, ServerMsg, StateDetail,
    UserState, encode_frame,
};

use rtm_proto::{ChannelDetail, ErrorCode, WireError, limits};

use super::{Core, engine_failed, err, now_ms};
use crate::engine::{
    Departed, Engine, PresenceFlags, PresentPage, SessionHandle, SessionId, StateChange, StateError,
};
use crate::events::{AppEvent, EventKind};

/// A channel, as interval mode keys it.
type ChannelKey = (Box<str>, ChannelType, Box<str>);

/// Interval mode (`docs/protocol.md` §5.8): the changes of busy channels, waiting for their
/// channel's next `INTERVAL` event. A channel has an entry from its first batched change until
/// that event is sent. Per server: in a cluster each node batches the changes of its own
/// sessions.
#[derive(Debug, Default)]
pub(crate) struct Intervals {
    pending: Mutex<HashMap<ChannelKey, IntervalDetail>>,
}

impl Intervals {
    /// Adds a change; returns true if the channel had none waiting (a flush must be scheduled).
    fn add(&self, key: ChannelKey, change: impl FnOnce(&mut IntervalDetail)) -> bool {
        let mut pending = self.pending.lock().unwrap_or_else(PoisonError::into_inner);
        let mut first = false;
        let detail = pending.entry(key).or_insert_with(|| {
            first = true;
            IntervalDetail::default()
        });
        change(detail);
        first
    }

    fn take(&self, key: &ChannelKey) -> Option<IntervalDetail> {
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(key)
    }
}

/// A leave waiting out the debounce window: what to tell if it is still pending.
#[derive(Debug)]
struct PendingLeave {
    session: SessionHandle,
    channel_type: ChannelType,
    channel: String,
    frame: bytes::Bytes,
}

/// The leaves this server is debouncing, by ticket; and whether it is stopping (then leaves are
/// told at once: a task waiting out a window would die with the server, and the leave with it).
#[derive(Debug, Default)]
pub(crate) struct PendingLeaves {
    pending: Mutex<HashMap<u64, PendingLeave>>,
    stopping: std::sync::atomic::AtomicBool,
}

impl PendingLeaves {
    fn insert(&self, ticket: u64, leave: PendingLeave) {
        self.lock().insert(ticket, leave);
    }

    /// Takes the leave of `ticket`, if nobody has yet: whoever takes it tells it.
    fn take(&self, ticket: u64) -> Option<PendingLeave> {
        self.lock().remove(&ticket)
    }

    fn stopping(&self) -> bool {
        self.stopping.load(std::sync::atomic::Ordering::Relaxed)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, PendingLeave>> {
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// No session: an `except` that excludes nobody.
const NOBODY: SessionId = SessionId(0);

/// How a user left a channel, as the others are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Departure {
    /// It asked to (unsubscribe, leave, logout) or was replaced: `REMOTE_LEAVE`.
    Left,
    /// Its connection was lost and it did not come back in time: `REMOTE_TIMEOUT`.
    TimedOut,
}

fn presence_event(
    event_type: PresenceEventType,
    channel_type: ChannelType,
    channel: &str,
    publisher: &str,
    snapshot: Vec<UserState>,
) -> Event {
    Event::Presence(PresenceEvent {
        event_type,
        channel_type,
        channel_name: channel.to_owned(),
        publisher: publisher.to_owned(),
        state_changed: Default::default(),
        interval: None,
        snapshot,
        timestamp: now_ms(),
    })
}

/// A presence event about one user, encoded (it fits one frame).
fn event(
    event_type: PresenceEventType,
    channel_type: ChannelType,
    channel: &str,
    publisher: &str,
) -> bytes::Bytes {
    let event = presence_event(event_type, channel_type, channel, publisher, Vec::new());
    encode_frame(&ServerMsg::Event(event))
}

impl<E: Engine> Core<E> {
    /// Tells the departures of the members of channels whose node died
    /// ([`Router::departures`](crate::engine::Router::departures)) as timeouts, until the
    /// core goes. Does nothing for an engine without other nodes.
    pub(crate) fn watch_departures(self: &Arc<Self>) {
        let Some(mut departures) = self.engine.departures() else {
            return;
        };
        let core = Arc::downgrade(self);
        tokio::spawn(async move {
            while let Some(departed) = departures.recv().await {
                let Some(core) = core.upgrade() else { return };
                let gone = match departed {
                    Departed::Member(gone) => gone,
                    Departed::Session(session) => {
                        core.events.emit(session.app_id(), || {
                            AppEvent::user(EventKind::Timeout, session.user_id())
                        });
                        continue;
                    }
                };
                let (channel_type, channel) = (gone.channel_type, gone.channel.as_str());
                // A leave whose debounce window its node did not live to end is held for a
                // window here (how much of the first one had passed is not known): told late
                // rather than early, and not at all if the user comes back meanwhile. Its
                // backend event went out when the user left.
                let (how, tell_backend) = if gone.left {
                    (Departure::Left, false)
                } else {
                    (Departure::TimedOut, true)
                };
                core.depart_as(
                    &gone.session,
                    (channel_type, channel),
                    gone.flags,
                    how,
                    tell_backend,
                )
                .await;
            }
        });
    }

    /// `session` has just arrived in a channel: the others with presence see it join (unless
    /// it is quiet), and it gets the snapshot of who is there (if it asked for presence).
    pub(crate) async fn arrive(
        self: &Arc<Self>,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
        flags: PresenceFlags,
    ) {
        let app_id = session.app_id();
        self.events.emit(app_id, || {
            AppEvent::channel(EventKind::Join, session.user_id(), channel_type, channel)
        });
        // Counted with the arriving user.
        let present = self.present_count(app_id, channel_type, channel).await;
        let user = session.user_id().to_owned();
        if !flags.quiet
            && !self
                .batched(session, channel_type, channel, present, |d| {
                    d.join.push(user)
                })
                .await
            // Back within the debounce window: the others never saw it leave.
            && !self.returned(session, channel_type, channel).await
        {
            let frame = event(
                PresenceEventType::RemoteJoin,
                channel_type,
                channel,
                session.user_id(),
            );
            self.tell(app_id, channel_type, channel, session, frame)
                .await;
        }
        if flags.with_presence {
            let users = match self
                .engine
                .present_users(app_id, channel_type, channel)
                .await
            {
                Ok(users) => users,
                Err(e) => {
                    tracing::warn!(%channel, "no presence snapshot: {e}");
                    return;
                }
            };
            // docs/protocol.md §2.2: in parts when it does not fit one frame.
            let snapshot = PresenceEventType::Snapshot;
            session.push_event(presence_event(snapshot, channel_type, channel, "", users));
        }
    }

    /// `session` has left a channel: the others with presence are told how (unless it was
    /// quiet).
    pub(crate) async fn depart(
        self: &Arc<Self>,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
        flags: PresenceFlags,
        how: Departure,
    ) {
        self.depart_as(session, (channel_type, channel), flags, how, true)
            .await;
    }

    /// [`Core::depart`], telling the app's backend (webhook, REST queues) or not.
    async fn depart_as(
        self: &Arc<Self>,
        session: &SessionHandle,
        (channel_type, channel): (ChannelType, &str),
        flags: PresenceFlags,
        how: Departure,
        tell_backend: bool,
    ) {
        if tell_backend {
            let kind = match how {
                Departure::Left => EventKind::Leave,
                Departure::TimedOut => EventKind::ChannelTimeout,
            };
            self.events.emit(session.app_id(), || {
                AppEvent::channel(kind, session.user_id(), channel_type, channel)
            });
        }
        if flags.quiet {
            return;
        }
        // Counted without the departing user: the channel was busy if it had one more.
        let present = self
            .present_count(session.app_id(), channel_type, channel)
            .await
            + 1;
        let user = session.user_id().to_owned();
        let change = |d: &mut IntervalDetail| match how {
            Departure::Left => d.leave.push(user),
            Departure::TimedOut => d.timeout.push(user),
        };
        if self
            .batched(session, channel_type, channel, present, change)
            .await
        {
            return;
        }
        let kind = match how {
            Departure::Left => PresenceEventType::RemoteLeave,
            Departure::TimedOut => PresenceEventType::RemoteTimeout,
        };
        let frame = event(kind, channel_type, channel, session.user_id());
        let window = self
            .app(session.app_id())
            .map_or(0, |p| p.limits.presence_debounce_ms);
        if how == Departure::Left && window > 0 && !self.leaves.stopping() {
            // docs/protocol.md §5.8: a leave is told once the debounce window has passed
            // without the user coming back (to this node or another).
            let (app_id, user_id) = (session.app_id(), session.user_id());
            match self
                .engine
                .hold_leave(app_id, channel_type, channel, user_id)
                .await
            {
                Ok(ticket) => {
                    self.leaves.insert(
                        ticket,
                        PendingLeave {
                            session: session.clone(),
                            channel_type,
                            channel: channel.to_owned(),
                            frame,
                        },
                    );
                    let core = Arc::clone(self);
                    tokio::spawn(async move {
                        tokio::time::sleep(Duration::from_millis(window.into())).await;
                        if let Some(leave) = core.leaves.take(ticket) {
                            core.end_leave(ticket, leave).await;
                        }
                    });
                    return;
                }
                // Told at once rather than never.
                Err(e) => tracing::warn!(%channel, "leave not debounced: {e}"),
            }
        }
        self.tell(session.app_id(), channel_type, channel, session, frame)
            .await;
    }

    /// The debounce window of a leave has passed (or the server stops): told unless the user
    /// came back meanwhile.
    async fn end_leave(&self, ticket: u64, leave: PendingLeave) {
        let PendingLeave {
            session,
            channel_type,
            channel,
            frame,
        } = leave;
        let (app_id, user_id) = (session.app_id(), session.user_id());
        match self
            .engine
            .release_leave(app_id, channel_type, &channel, user_id, ticket)
            .await
        {
            Ok(true) => {
                self.tell(app_id, channel_type, &channel, &session, frame)
                    .await;
            }
            Ok(false) => {}
            Err(e) => tracing::warn!(%channel, "debounced leave lost: {e}"),
        }
    }

    /// The server is stopping: from now on leaves are told at once.
    pub(crate) fn stop_debouncing(&self) {
        self.leaves
            .stopping
            .store(true, std::sync::atomic::Ordering::Relaxed);
    }

    /// Tells now the leaves still in their debounce window (the server is stopping).
    pub(crate) async fn flush_leaves(&self) {
        let pending: Vec<(u64, PendingLeave)> = self.leaves.lock().drain().collect();
        for (ticket, leave) in pending {
            self.end_leave(ticket, leave).await;
        }
    }

    /// `session`'s state in a channel is now `state`: the others with presence get
    /// `REMOTE_STATE_CHANGED` with the full state (in a busy channel, the next `INTERVAL`
    /// event's `user_state_list`), unless it is quiet.
    pub(crate) async fn state_changed(
        self: &Arc<Self>,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
        flags: PresenceFlags,
        state: StateDetail,
    ) {
        if flags.quiet {
            return;
        }
        let present = self
            .present_count(session.app_id(), channel_type, channel)
            .await;
        let user_state = UserState {
            user_id: session.user_id().to_owned(),
            states: state.clone(),
        };
        let batch = |d: &mut IntervalDetail| {
            d.user_state_list
                .retain(|u| u.user_id != user_state.user_id);
            d.user_state_list.push(user_state);
        };
        if self
            .batched(session, channel_type, channel, present, batch)
            .await
        {
            return;
        }
        let frame = encode_frame(&ServerMsg::Event(Event::Presence(PresenceEvent {
            event_type: PresenceEventType::RemoteStateChanged,
            channel_type,
            channel_name: channel.to_owned(),
            publisher: session.user_id().to_owned(),
            state_changed: state,
            interval: None,
            snapshot: Vec::new(),
            timestamp: now_ms(),
        })));
        self.tell(session.app_id(), channel_type, channel, session, frame)
            .await;
    }

    /// Changes `session`'s state in a channel it is in; returns the whole state after it.
    pub(crate) async fn update_state(
        &self,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
        change: StateChange,
    ) -> Result<StateDetail, WireError> {
        self.engine
            .update_state(
                session,
                channel_type,
                channel,
                change,
                limits::MAX_STATE_PAIRS,
            )
            .await
            .map_err(|e| match e {
                // The session was there when it asked: it left meanwhile.
                StateError::NotPresent => match channel_type {
                    ChannelType::Stream => err(
                        ErrorCode::ChannelNotJoined,
                        "not joined to this stream channel",
                    ),
                    _ => err(
                        ErrorCode::ChannelNotSubscribed,
                        "not subscribed to this channel",
                    ),
                },
                StateError::TooMany(..) => {
                    err(ErrorCode::PresenceStateCountOverflow, e.to_string())
                }
                StateError::Engine(e) => engine_failed(ErrorCode::PresenceOperationFailed, &e),
            })
    }

    /// The state of a visible user of a channel; `None` if the user is not there.
    pub(crate) async fn get_state(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
    ) -> Result<Option<StateDetail>, WireError> {
        self.engine
            .get_state(app_id, channel_type, channel, user_id)
            .await
            .map_err(|e| engine_failed(ErrorCode::PresenceOperationFailed, &e))
    }

    /// A page of a channel's visible users (see [`Router::present_page`](crate::engine::Router::present_page)).
    pub(crate) async fn present_page(
        &self,
        app_id: &str,
        (channel_type, channel): (ChannelType, &str),
        after: Option<&str>,
        limit: usize,
        with_states: bool,
    ) -> Result<PresentPage, WireError> {
        self.engine
            .present_page(app_id, channel_type, channel, after, limit, with_states)
            .await
            .map_err(|e| engine_failed(ErrorCode::PresenceOperationFailed, &e))
    }

    /// The channels where a user is visibly present.
    pub(crate) async fn user_channels(
        &self,
        app_id: &str,
        user_id: &str,
    ) -> Result<Vec<ChannelDetail>, WireError> {
        self.engine
            .user_channels(app_id, user_id)
            .await
            .map_err(|e| engine_failed(ErrorCode::PresenceOperationFailed, &e))
    }

    /// Whether the arriving user comes back within the debounce window of its leave (which is
    /// then never told).
    async fn returned(
        &self,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
    ) -> bool {
        self.engine
            .cancel_leave(session.app_id(), channel_type, channel, session.user_id())
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(%channel, "pending leave unknown: {e}");
                false
            })
    }

    async fn present_count(&self, app_id: &str, channel_type: ChannelType, channel: &str) -> usize {
        self.engine
            .present_count(app_id, channel_type, channel)
            .await
            .unwrap_or_else(|e| {
                tracing::warn!(%channel, "presence count unknown: {e}");
                0
            })
    }

    /// In a channel of more than the app's `presence_announce_max` present users, records a
    /// change for the channel's next `INTERVAL` event (scheduling it if needed) and returns
    /// true; otherwise returns false (the change is announced at once).
    async fn batched(
        self: &Arc<Self>,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
        present: usize,
        change: impl FnOnce(&mut IntervalDetail),
    ) -> bool {
        let Some(policy) = self.app(session.app_id()) else {
            return false;
        };
        if present <= policy.limits.presence_announce_max as usize {
            return false;
        }
        let key: ChannelKey = (session.app_id().into(), channel_type, channel.into());
        if self.intervals.add(key.clone(), change) {
            let core = Arc::clone(self);
            let period = Duration::from_secs(policy.limits.presence_interval_secs.into());
            tokio::spawn(async move {
                tokio::time::sleep(period).await;
                core.flush_interval(key).await;
            });
        }
        true
    }

    /// Sends a channel's `INTERVAL` event with the changes batched since the last one.
    async fn flush_interval(&self, key: ChannelKey) {
        let Some(detail) = self.intervals.take(&key) else {
            return;
        };
        let (app_id, channel_type, channel) = &key;
        // docs/protocol.md §2.2: a busy period's changes may take several INTERVAL events.
        let frames = rtm_proto::split::event_frames(Event::Presence(PresenceEvent {
            event_type: PresenceEventType::Interval,
            channel_type: *channel_type,
            channel_name: channel.to_string(),
            publisher: String::new(),
            state_changed: Default::default(),
            interval: Some(detail),
            snapshot: Vec::new(),
            timestamp: now_ms(),
        }));
        for frame in frames {
            if let Err(e) = self
                .engine
                .broadcast_presence(app_id, *channel_type, channel, NOBODY, frame)
                .await
            {
                tracing::warn!(%channel, "interval event not delivered: {e}");
            }
        }
    }

    async fn tell(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        about: &SessionHandle,
        frame: bytes::Bytes,
    ) {
        if let Err(e) = self
            .engine
            .broadcast_presence(app_id, channel_type, channel, about.id(), frame)
            .await
        {
            tracing::warn!(%channel, "presence event not delivered: {e}");
        }
    }
}
