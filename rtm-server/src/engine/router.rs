//! The router: where sessions are, who is in which channel, and how an encoded frame reaches
//! their outboxes (`docs/architecture.md`, "Engine").

use std::future::Future;

use bytes::Bytes;
use rtm_proto::{
    ChannelDetail, ChannelType, CloseReason, StateDetail, SubscribeOptions, TopicInfo, UserState,
};

#[cfg(doc)]
use super::Store;
use tokio::sync::mpsc;

use super::{
    Delivery, Departed, EngineError, PresenceFlags, PresentPage, SessionHandle, SessionId,
    StateChange, StateError, StreamError, TopicSubscribed,
};
#[cfg(doc)]
use rtm_proto::SubscribeTopicCode;

/// Sessions, channels, presence and fan-out: the part of the engine that every node of a
/// cluster shares live.
///
/// Methods are `async` so that an engine backed by a network store fits; the in-memory engine
/// completes them without waiting. Every method that reaches shared state can fail with
/// [`EngineError`]. Implementations keep the frames of one publisher to one channel in the
/// order they were published.
pub trait Router: Send + Sync + 'static {
    /// A new session id, unique across every node of the service for as long as it runs
    /// ([`SessionId`] says how).
    fn next_session_id(&self) -> SessionId;

    /// Registers a logged-in session. Any other session of the same user in the same app is
    /// closed with [`CloseReason::SameUidLogin`] (on whichever node it lives).
    fn attach(
        &self,
        session: &SessionHandle,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Removes a session with its subscriptions, stream channels and states. A session that
    /// was already replaced by a newer login of the same user leaves the newer one in place.
    /// What the session listens to and the locks its user holds are the [`Store`]'s
    /// ([`Store::session_ended`]).
    fn detach(
        &self,
        session: &SessionHandle,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Adds (or updates the options of) the session's subscription to a message channel.
    fn subscribe(
        &self,
        session: &SessionHandle,
        channel: &str,
        options: SubscribeOptions,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Removes the session's subscription to a message channel, if any.
    fn unsubscribe(
        &self,
        session: &SessionHandle,
        channel: &str,
    ) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// Delivers an encoded message event to every subscriber of `channel` in `app_id` that
    /// subscribed `with_message`.
    fn publish(
        &self,
        app_id: &str,
        channel: &str,
        frame: Bytes,
    ) -> impl Future<Output = Result<Delivery, EngineError>> + Send;

    /// Delivers an encoded event to the session of `user_id` in `app_id`. `Ok(None)` means the
    /// user is not online.
    fn send_to_user(
        &self,
        app_id: &str,
        user_id: &str,
        frame: Bytes,
    ) -> impl Future<Output = Result<Option<Delivery>, EngineError>> + Send;

    /// Makes the session a member of a stream channel that has fewer than `max_users` members,
    /// and returns the channel's topics with their publishers (for the joining user's
    /// snapshot). Joining again changes nothing.
    fn join_stream(
        &self,
        session: &SessionHandle,
        channel: &str,
        presence: PresenceFlags,
        max_users: usize,
    ) -> impl Future<Output = Result<Vec<TopicInfo>, StreamError>> + Send;

    /// Removes the session from a stream channel with its topics and topic subscriptions, and
    /// returns the topics it had joined as a publisher (for the others' `REMOTE_LEAVE`).
    fn leave_stream(
        &self,
        session: &SessionHandle,
        channel: &str,
    ) -> impl Future<Output = Result<Vec<String>, StreamError>> + Send;

    /// Makes the session a publisher in a topic of a channel it has joined, with `meta` (a
    /// second join replaces the meta).
    fn join_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        meta: &str,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;

    /// Stops the session publishing in a topic; its subscribers keep their subscription to it.
    fn leave_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;

    /// Adds publishers to the session's subscription of a topic: `users` (valid user ids), or
    /// with `None`, up to `max_users` of the topic's publishers, including ones that join
    /// later. A session subscribes to at most `max_topics` topics per channel and `max_users`
    /// publishers per topic; users beyond that fail with
    /// [`SubscribeTopicCode::SubUserExceedLimitation`].
    fn subscribe_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        users: Option<&[String]>,
        max_topics: usize,
        max_users: usize,
    ) -> impl Future<Output = Result<TopicSubscribed, StreamError>> + Send;

    /// Removes publishers (`Some`) or the whole topic (`None`) from the session's subscription.
    fn unsubscribe_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        users: Option<&[String]>,
    ) -> impl Future<Output = Result<(), StreamError>> + Send;

    /// Delivers an encoded topic message of `publisher` (a session that joined the topic) to the
    /// sessions subscribed to it in that topic.
    fn publish_topic(
        &self,
        publisher: &SessionHandle,
        channel: &str,
        topic: &str,
        frame: Bytes,
    ) -> impl Future<Output = Result<Delivery, EngineError>> + Send;

    /// The visible (not quiet) users of a message or stream channel with their states, sorted
    /// by user id.
    fn present_users(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> impl Future<Output = Result<Vec<UserState>, EngineError>> + Send;

    /// A page of a channel's visible users, sorted by user id: the `limit` first after `after`
    /// (with their states if `with_states`), the total count of visible users, and whether
    /// more follow.
    fn present_page(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        after: Option<&str>,
        limit: usize,
        with_states: bool,
    ) -> impl Future<Output = Result<PresentPage, EngineError>> + Send;

    /// The channels where a user is visibly present (not quiet), sorted.
    fn user_channels(
        &self,
        app_id: &str,
        user_id: &str,
    ) -> impl Future<Output = Result<Vec<ChannelDetail>, EngineError>> + Send;

    /// Changes the session's temporary state in a channel it is in, keeping at most
    /// `max_pairs` pairs, and returns the whole state after the change. The state goes when the
    /// session leaves the channel.
    fn update_state(
        &self,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
        change: StateChange,
        max_pairs: usize,
    ) -> impl Future<Output = Result<StateDetail, StateError>> + Send;

    /// The state of a visible user of a channel; `None` if the user is not there (or quiet).
    fn get_state(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
    ) -> impl Future<Output = Result<Option<StateDetail>, EngineError>> + Send;

    /// How many visible (not quiet) users a message or stream channel has.
    fn present_count(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> impl Future<Output = Result<usize, EngineError>> + Send;

    /// Delivers an encoded presence event to the members of a message or stream channel that
    /// asked for presence, but `except`.
    fn broadcast_presence(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        except: SessionId,
        frame: Bytes,
    ) -> impl Future<Output = Result<Delivery, EngineError>> + Send;

    /// Delivers an encoded event to every member of a stream channel but `except`.
    fn broadcast_stream(
        &self,
        app_id: &str,
        channel: &str,
        except: SessionId,
        frame: Bytes,
    ) -> impl Future<Output = Result<Delivery, EngineError>> + Send;

    /// A user left a channel and the app debounces leaves (`presence_debounce_ms`): records the
    /// pending leave and returns its ticket. A later leave of the same user in the same channel
    /// replaces it.
    fn hold_leave(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
    ) -> impl Future<Output = Result<u64, EngineError>> + Send;

    /// The debounce window of the leave with `ticket` has passed: true if that leave is still
    /// pending (it is forgotten, and the caller tells it), false if the user came back or left
    /// again since.
    fn release_leave(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
        ticket: u64,
    ) -> impl Future<Output = Result<bool, EngineError>> + Send;

    /// Members of channels whose sessions were on a node that died, for the core to tell the
    /// others they timed out: the receiving end, taken once (`None` for an engine that has
    /// no other nodes, or after the first call).
    fn departures(&self) -> Option<mpsc::UnboundedReceiver<Departed>> {
        None
    }

    /// The node's hub of connections relayed to and from other nodes (a resume on another
    /// node, [`super::relay`]); `None` for an engine that has no other nodes.
    fn relays(&self) -> Option<std::sync::Arc<super::relay::Relays>> {
        None
    }

    /// The user arrived in the channel: true if a leave of it was pending (it is dropped, and
    /// the others never hear of the leave nor of the return).
    fn cancel_leave(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
    ) -> impl Future<Output = Result<bool, EngineError>> + Send;

    /// Ends the session of `user_id` in `app_id`, wherever it is, telling its client `reason`
    /// (an operator's disconnect): true if the user had a session.
    fn disconnect(
        &self,
        app_id: &str,
        user_id: &str,
        reason: CloseReason,
    ) -> impl Future<Output = Result<bool, EngineError>> + Send;
}
