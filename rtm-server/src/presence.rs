//! Presence in the core (`docs/protocol.md` §5.8): the events of users arriving in and leaving
//! channels. Who is in a channel, and how (with presence events, quiet), lives in the
//! [`Engine`]; the session says when it arrives and leaves.

use rtm_proto::{
    ChannelType, Event, PresenceEvent, PresenceEventType, ServerMsg, UserState, encode_frame,
};

use crate::core::{Core, now_ms};
use crate::engine::{Engine, PresenceFlags, SessionHandle};

/// How a user left a channel, as the others are told.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Departure {
    /// It asked to (unsubscribe, leave, logout) or was replaced: `REMOTE_LEAVE`.
    Left,
    /// Its connection was lost and it did not come back in time: `REMOTE_TIMEOUT`.
    TimedOut,
}

fn event(
    event_type: PresenceEventType,
    channel_type: ChannelType,
    channel: &str,
    publisher: &str,
    snapshot: Vec<UserState>,
) -> bytes::Bytes {
    encode_frame(&ServerMsg::Event(Event::Presence(PresenceEvent {
        event_type,
        channel_type,
        channel_name: channel.to_owned(),
        publisher: publisher.to_owned(),
        state_changed: Default::default(),
        interval: None,
        snapshot,
        timestamp: now_ms(),
    })))
}

impl<E: Engine> Core<E> {
    /// `session` has just arrived in a channel: the others with presence see it join (unless
    /// it is quiet), and it gets the snapshot of who is there (if it asked for presence).
    pub(crate) async fn arrive(
        &self,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
        flags: PresenceFlags,
    ) {
        let app_id = session.app_id();
        if !flags.quiet {
            let frame = event(
                PresenceEventType::RemoteJoin,
                channel_type,
                channel,
                session.user_id(),
                Vec::new(),
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
            let snapshot = users
                .into_iter()
                .map(|user_id| UserState {
                    user_id,
                    states: Default::default(),
                })
                .collect();
            session.push(event(
                PresenceEventType::Snapshot,
                channel_type,
                channel,
                "",
                snapshot,
            ));
        }
    }

    /// `session` has left a channel: the others with presence are told how (unless it was
    /// quiet).
    pub(crate) async fn depart(
        &self,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
        flags: PresenceFlags,
        how: Departure,
    ) {
        if flags.quiet {
            return;
        }
        let kind = match how {
            Departure::Left => PresenceEventType::RemoteLeave,
            Departure::TimedOut => PresenceEventType::RemoteTimeout,
        };
        let frame = event(kind, channel_type, channel, session.user_id(), Vec::new());
        self.tell(session.app_id(), channel_type, channel, session, frame)
            .await;
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
