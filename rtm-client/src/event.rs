//! Events: what [`RtmClient::events`](crate::RtmClient::events) yields.

use std::pin::Pin;
use std::sync::{Arc, Mutex, PoisonError};
use std::task::{Context, Poll};

pub use rtm_proto::{MessageEvent, PresenceEvent, TopicEvent};
use tokio::sync::mpsc;

/// An event, the reference's event listener types in one enum.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum RtmEvent {
    /// A message in a subscribed channel or topic, or sent to this user (`message`).
    Message(MessageEvent),
    /// Publishers joined or left topics of a joined stream channel, or (`SNAPSHOT`) the
    /// channel's topics when this client joined it (`topic`).
    Topic(TopicEvent),
    /// Users arrived in or left a channel this client is in with presence, or (`SNAPSHOT`) who
    /// was there when it arrived (`presence`).
    Presence(PresenceEvent),
    /// A metadata set this client listens to changed (`UPDATE`, with the whole set), or
    /// (`SNAPSHOT`) the set when it started listening (`storage`).
    Storage(rtm_proto::StorageEvent),
    /// A lock of a channel this client is in `with_lock` changed, or (`SNAPSHOT`) the
    /// channel's locks when it arrived, or (`EXPIRED`) a lock it held was released while it
    /// was away (`lock`).
    Lock(rtm_proto::LockEvent),
    /// Messages of a channel (or from a user) that this client missed while its connection
    /// was lost, and that the history could not give back (they were not stored, or the app
    /// keeps no history). An rtm addition: a gap is never silent (`docs/protocol.md` §5.12.1).
    /// After a session had to be rebuilt (its node was gone: [`RtmConfig::other_nodes`]) the
    /// number is unknown: `count` is 0, and `from`..`to` is the window in which messages not
    /// stored in the history may have been missed (the stored ones came before it).
    ///
    /// [`RtmConfig::other_nodes`]: crate::RtmConfig::other_nodes
    MessagesLost(rtm_proto::LostMessages),
    /// The connection's state changed (`linkState`).
    LinkState(LinkStateEvent),
    /// A token expires soon (`tokenPrivilegeWillExpire`): call
    /// [`renew_token`](crate::RtmClient::renew_token).
    TokenPrivilegeWillExpire {
        /// Empty for the login token; the stream channel's name for its token.
        channel_name: String,
    },
    /// An event from the server that this client could not read (larger than the protocol
    /// allows, `CHANNEL_MESSAGE_LENGTH_EXCEED_LIMITATION`): it was skipped, and the events
    /// after it are delivered as usual. An rtm addition: a dropped event is never silent.
    Error(rtm_proto::RtmError),
}

/// The state of the client's link to the server (the reference's `LinkState`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkState {
    /// Not logged in.
    Idle,
    /// Logging in.
    Connecting,
    /// Logged in and connected.
    Connected,
    /// The connection was lost for a while; the client is trying to restore it.
    Disconnected,
    /// The connection has been lost for long; the client retries slowly.
    Suspended,
    /// The session ended for a reason that retrying cannot fix; log in again.
    Failed,
}

/// The operation that caused a link-state change (the reference's `LinkOperation`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinkOperation {
    /// `login`.
    Login,
    /// `logout`.
    Logout,
    /// Joining a stream channel.
    Join,
    /// Leaving a stream channel.
    Leave,
    /// The server ended or refused the session.
    ServerReject,
    /// The client is reconnecting by itself.
    AutoReconnect,
    /// The client reconnected.
    Reconnected,
    /// Heartbeats stopped being answered.
    HeartbeatTimeout,
    /// The server stopped answering.
    ServerTimeout,
    /// The network changed.
    NetworkChange,
}

/// Why the link state changed (the reference's `LinkStateChangeReason`, with its numbers).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum LinkStateReason {
    /// Unknown.
    Unknown = 0,
    /// Logging in.
    Login = 1,
    /// Logged in.
    LoginSuccess = 2,
    /// The login timed out.
    LoginTimeout = 3,
    /// The login was not authorized.
    LoginNotAuthorized = 4,
    /// The login was rejected.
    LoginRejected = 5,
    /// Logging in again.
    Relogin = 6,
    /// Logged out.
    Logout = 7,
    /// Reconnecting.
    AutoReconnect = 8,
    /// Reconnecting timed out.
    ReconnectTimeout = 9,
    /// Reconnected.
    ReconnectSuccess = 10,
    /// The token is not valid.
    InvalidToken = 16,
    /// The token expired.
    TokenExpired = 17,
    /// The token was issued for another App ID.
    InconsistentAppId = 18,
    /// The user id is not valid.
    InvalidUserId = 20,
    /// The same user id logged in elsewhere.
    SameUidLogin = 27,
    /// The server ended the session.
    KickedOutByServer = 28,
    /// Keep-alives went unanswered.
    KeepAliveTimeout = 29,
    /// The connection failed.
    ConnectionError = 30,
}

impl LinkStateReason {
    /// The reference's number.
    pub fn code(self) -> u32 {
        self as u32
    }
}

/// Which service a link-state event is about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum ServiceType {
    /// Message and user channels.
    Message,
    /// Stream channels.
    Stream,
}

/// A link-state change (the reference's `LinkStateEvent`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct LinkStateEvent {
    /// The state now.
    pub current_state: LinkState,
    /// The state before.
    pub previous_state: LinkState,
    /// The service concerned.
    pub service_type: ServiceType,
    /// What caused the change.
    pub operation: LinkOperation,
    /// Why, as a code.
    pub reason_code: LinkStateReason,
    /// Why, in words.
    pub reason: String,
    /// Channels affected by the change.
    pub affected_channels: Vec<String>,
    /// Channels that could not be restored (normally empty).
    pub unrestored_channels: Vec<String>,
    /// Whether the session was resumed after a short disconnection.
    pub is_resumed: bool,
    /// Client time of the change, in milliseconds since the Unix epoch.
    pub timestamp: u64,
}

/// An independent stream of events. Every [`events`](crate::RtmClient::events) call makes one;
/// dropping it removes the listener.
///
/// It implements [`futures_core::Stream`]; [`EventStream::recv`] is the same without a
/// combinator crate. Events are buffered without bound until read, so a listener that is never
/// read should be dropped.
#[derive(Debug)]
pub struct EventStream {
    rx: mpsc::UnboundedReceiver<Delivery>,
    /// The rest of a delivery of several events, handed out one by one.
    held: std::vec::IntoIter<RtmEvent>,
}

/// What a listener's channel carries: events that arrived together go over as one, so that a
/// burst wakes the listener's task once rather than once per event.
#[derive(Debug)]
enum Delivery {
    One(RtmEvent),
    /// Never empty.
    Many(Vec<RtmEvent>),
}

impl EventStream {
    /// The next event; `None` once the client is gone.
    pub async fn recv(&mut self) -> Option<RtmEvent> {
        std::future::poll_fn(|cx| self.poll_event(cx)).await
    }

    /// The next event if one is waiting.
    pub fn try_recv(&mut self) -> Option<RtmEvent> {
        loop {
            if let Some(event) = self.held.next() {
                return Some(event);
            }
            match self.rx.try_recv().ok()? {
                Delivery::One(event) => return Some(event),
                Delivery::Many(events) => self.held = events.into_iter(),
            }
        }
    }

    /// Hand-offs waiting in the channel (a burst handed over at once is one).
    #[cfg(test)]
    pub(crate) fn waiting_hand_offs(&self) -> usize {
        self.rx.len()
    }

    fn poll_event(&mut self, cx: &mut Context<'_>) -> Poll<Option<RtmEvent>> {
        loop {
            if let Some(event) = self.held.next() {
                return Poll::Ready(Some(event));
            }
            match std::task::ready!(self.rx.poll_recv(cx)) {
                None => return Poll::Ready(None),
                Some(Delivery::One(event)) => return Poll::Ready(Some(event)),
                Some(Delivery::Many(events)) => self.held = events.into_iter(),
            }
        }
    }
}

impl futures_core::Stream for EventStream {
    type Item = RtmEvent;
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<RtmEvent>> {
        self.poll_event(cx)
    }
}

/// The registered listeners, shared by the client handle and its connection task; and the
/// timestamp of the last message delivered from each message channel, which a session rebuilt
/// on another node recovers from (`gap.rs`).
#[derive(Clone, Debug, Default)]
pub(crate) struct Listeners {
    senders: Arc<Mutex<Vec<mpsc::UnboundedSender<Delivery>>>>,
    last_message: Arc<Mutex<std::collections::HashMap<String, u64>>>,
}

impl Listeners {
    /// Notes a message of a message channel, delivered.
    pub(crate) fn note_message(&self, channel: &str, timestamp: u64) {
        let mut last = self
            .last_message
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        match last.get_mut(channel) {
            Some(t) => *t = (*t).max(timestamp),
            None => {
                last.insert(channel.to_owned(), timestamp);
            }
        }
    }

    /// Forgets the last message of `channel` (unsubscribed).
    pub(crate) fn forget_channel(&self, channel: &str) {
        self.last_message
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(channel);
    }

    /// The timestamp of the last message delivered from `channel`.
    pub(crate) fn last_message(&self, channel: &str) -> Option<u64> {
        self.last_message
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(channel)
            .copied()
    }

    pub(crate) fn add(&self) -> EventStream {
        let (tx, rx) = mpsc::unbounded_channel();
        self.lock().push(tx);
        EventStream {
            rx,
            held: Vec::new().into_iter(),
        }
    }

    /// Gives `event` to every listener, forgetting those that were dropped.
    pub(crate) fn emit(&self, event: RtmEvent) {
        self.hand_over(Delivery::One(event));
    }

    /// Gives `events` (taken, in order) to every listener at once, forgetting those that were
    /// dropped.
    pub(crate) fn emit_all(&self, events: &mut Vec<RtmEvent>) {
        match events.len() {
            0 => {}
            1 => {
                if let Some(event) = events.pop() {
                    self.emit(event);
                }
            }
            _ => self.hand_over(Delivery::Many(std::mem::take(events))),
        }
    }

    fn hand_over(&self, delivery: Delivery) {
        let mut senders = self.lock();
        if let [only] = senders.as_slice() {
            if only.send(delivery).is_err() {
                senders.clear();
            }
            return;
        }
        senders.retain(|tx| {
            let copy = match &delivery {
                Delivery::One(event) => Delivery::One(event.clone()),
                Delivery::Many(events) => Delivery::Many(events.clone()),
            };
            tx.send(copy).is_ok()
        });
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<mpsc::UnboundedSender<Delivery>>> {
        self.senders.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event(n: u32) -> RtmEvent {
        RtmEvent::TokenPrivilegeWillExpire {
            channel_name: n.to_string(),
        }
    }

    /// Events handed over together reach every listener one by one, in order, between the
    /// events handed over alone; a dropped listener is forgotten.
    #[tokio::test]
    async fn a_burst_handed_over_at_once_comes_out_in_order_to_every_listener() {
        let listeners = Listeners::default();
        let (mut a, mut b) = (listeners.add(), listeners.add());
        listeners.emit(event(0));
        let mut burst = vec![event(1), event(2), event(3)];
        listeners.emit_all(&mut burst);
        assert!(burst.is_empty());
        listeners.emit_all(&mut burst);
        listeners.emit_all(&mut vec![event(4)]);
        assert_eq!(a.waiting_hand_offs(), 3);
        for n in 0..5 {
            assert_eq!(a.recv().await, Some(event(n)));
            assert_eq!(b.try_recv(), Some(event(n)));
        }
        assert_eq!(b.try_recv(), None);

        drop(a);
        listeners.emit_all(&mut vec![event(5), event(6)]);
        assert_eq!(listeners.lock().len(), 1);
        assert_eq!(b.recv().await, Some(event(5)));
        assert_eq!(b.recv().await, Some(event(6)));
    }
}
