//! Sessions that survive the network: heartbeats, lost connections, resume and re-login
//! (`docs/protocol.md` §5.6), over the test kit's relay.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rtm_client::{
    ChannelType, ErrorCode, EventStream, JoinOptions, JoinTopicOptions, LinkOperation, LinkState,
    LinkStateEvent, LinkStateReason, LoginOptions, PresenceEventType, PublishOptions, RtmClient,
    RtmEvent, SubscribeOptions, TopicEventType, TopicMessageOptions, TopicSubscribeOptions,
};
use rtm_proto::{Request, Response, ServerMsg};
use rtm_testkit::{
    LossyLink, RawSession, TEST_APP_ID, TestServer, expect_event, expect_message, wait_until,
    within,
};

/// Long enough for the idle timeout (heartbeat interval 5 s + 10 s), plus retries.
const LINK_DEADLINE: Duration = Duration::from_secs(45);

/// Waits (up to [`LINK_DEADLINE`], longer than the test kit's event deadline: a lost link is
/// noticed after up to 20 s) for the link to reach `state`.
async fn link_reaches(events: &mut EventStream, state: LinkState) -> LinkStateEvent {
    let wait = async {
        while let Some(event) = events.recv().await {
            if let RtmEvent::LinkState(s) = event
                && s.current_state == state
            {
                return s;
            }
        }
        panic!("the event stream ended");
    };
    within(LINK_DEADLINE, &format!("the {state:?} link state"), wait).await
}

fn text(m: &rtm_client::MessageEvent) -> &str {
    m.message.as_text().unwrap_or_default()
}

/// Side channels: with 16 lanes, their events travel on several delivery streams.
const SIDES: [&str; 4] = ["side0", "side1", "side2", "side3"];

/// "roamer", logged in through `link` and subscribed to "room" and the [`SIDES`].
async fn roamer_in_all_rooms(server: &TestServer, link: &LossyLink) -> (RtmClient, EventStream) {
    let roamer = RtmClient::new(TEST_APP_ID, "roamer", server.client_config_via(link)).unwrap();
    let events = roamer.events();
    roamer.login(LoginOptions::default()).await.unwrap();
    for channel in std::iter::once("room").chain(SIDES) {
        roamer
            .subscribe(channel, SubscribeOptions::default())
            .await
            .unwrap();
    }
    (roamer, events)
}

/// The link is cut for less than the presence timeout: the client comes back to the same
/// session, receives what was published meanwhile, each channel in order, and the server never
/// let the session go.
///
/// Both ends notice the silence after the heartbeat interval + 10 s; whichever notices first,
/// the client comes back to its session: kept aside by the server, or taken over from the
/// connection the server still held.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_cut_link_resumes_the_session_without_losing_events() {
    let server = TestServer::start().await;
    let link = LossyLink::start(server.addr()).await.unwrap();
    let (roamer, mut events) = roamer_in_all_rooms(&server, &link).await;
    let (other, mut other_events) = server.login("other").await;
    other
        .subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    other
        .publish("room", "before", PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(text(&expect_message(&mut events).await), "before");
    assert_eq!(text(&expect_message(&mut other_events).await), "before");

    link.cut();
    // Published into the dead link: the server writes it, nothing arrives.
    other
        .publish("room", "during 1", PublishOptions::default())
        .await
        .unwrap();
    let lost = link_reaches(&mut events, LinkState::Disconnected).await;
    assert_eq!(lost.previous_state, LinkState::Connected);
    assert_eq!(
        lost.affected_channels,
        ["room", "side0", "side1", "side2", "side3"]
    );
    assert!(!lost.is_resumed);
    // Calls fail at once while the link is down.
    let err = roamer
        .publish("room", "x", PublishOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::NotConnected);
    // The server still has both sessions.
    assert_eq!(server.metrics().sessions.load(Ordering::Relaxed), 2);
    other
        .publish("room", "during 2", PublishOptions::default())
        .await
        .unwrap();
    for i in 0..20 {
        let channel = SIDES[i % SIDES.len()];
        other
            .publish(channel, format!("{i}"), PublishOptions::default())
            .await
            .unwrap();
    }

    link.restore();
    let back = connected_before_any_message(&mut events).await;
    assert!(back.is_resumed, "{back:?}");
    assert_eq!(back.operation, LinkOperation::Reconnected);
    assert_eq!(back.reason_code, LinkStateReason::ReconnectSuccess);
    assert_eq!(back.affected_channels.len(), 1 + SIDES.len());
    assert!(back.unrestored_channels.is_empty());
    // Nothing published while away is lost, and each channel's order holds.
    let mut got: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for _ in 0..22 {
        let m = expect_message(&mut events).await;
        got.entry(m.channel_name.clone())
            .or_default()
            .push(text(&m).to_owned());
    }
    assert_eq!(got["room"], ["during 1", "during 2"]);
    for (c, channel) in SIDES.iter().enumerate() {
        let expected: Vec<String> = (0..20)
            .filter(|i| i % SIDES.len() == c)
            .map(|i| i.to_string())
            .collect();
        assert_eq!(got[*channel], expected, "{channel}");
    }
    // The session goes on: both directions work.
    other
        .publish("room", "after", PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(text(&expect_message(&mut events).await), "after");
    roamer
        .publish("room", "I'm back", PublishOptions::default())
        .await
        .unwrap();
    for expected in ["during 1", "during 2", "after", "I'm back"] {
        assert_eq!(text(&expect_message(&mut other_events).await), expected);
    }
    let metrics = server.metrics();
    assert_eq!(metrics.sessions_resumed.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.sessions_timed_out.load(Ordering::Relaxed), 0);
    assert_eq!(metrics.sessions.load(Ordering::Relaxed), 2);
}

/// The server notices the lost link first and parks the session; the client resumes it from
/// there, and everything published meanwhile arrives, each channel in order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_session_resumes_without_losing_events() {
    let server = TestServer::start().await;
    let link = LossyLink::start(server.addr()).await.unwrap();
    let (_roamer, mut events) = roamer_in_all_rooms(&server, &link).await;
    let (other, mut other_events) = server.login("other").await;
    other
        .subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    assert_eq!(
        presence_of(&mut other_events, "room").await,
        "Snapshot [other, roamer]"
    );
    other
        .publish("room", "before", PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(text(&expect_message(&mut events).await), "before");
    let metrics = server.metrics();
    link.cut();
    other
        .publish("room", "during 1", PublishOptions::default())
        .await
        .unwrap();
    // However the two ends' idle timers fall, the client's attempts go nowhere until the
    // server has given up the connection and parked the session.
    wait_until(LINK_DEADLINE, "the server to park the session", || {
        metrics.sessions_parked.load(Ordering::Relaxed) == 1
    })
    .await;
    for i in 0..20 {
        let channel = SIDES[i % SIDES.len()];
        other
            .publish(channel, format!("{i}"), PublishOptions::default())
            .await
            .unwrap();
    }
    other
        .publish("room", "during 2", PublishOptions::default())
        .await
        .unwrap();
    link.restore();
    let back = connected_before_any_message(&mut events).await;
    assert!(back.is_resumed, "{back:?}");
    let mut got: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for _ in 0..22 {
        let m = expect_message(&mut events).await;
        got.entry(m.channel_name.clone())
            .or_default()
            .push(text(&m).to_owned());
    }
    assert_eq!(got["room"], ["during 1", "during 2"]);
    assert_eq!(metrics.sessions_resumed.load(Ordering::Relaxed), 1);
    // The others saw nothing of it: the next presence event is a newcomer's.
    let (third, _) = server.login("third").await;
    third
        .subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    assert_eq!(
        presence_of(&mut other_events, "room").await,
        "RemoteJoin third"
    );
}

/// The next presence event of `channel`, described: "KIND user" or "Snapshot [users]".
async fn presence_of(events: &mut EventStream, channel: &str) -> String {
    expect_event(events, "a presence event", |e| match e {
        RtmEvent::Presence(p) if p.channel_name != channel => None,
        RtmEvent::Presence(p) if p.event_type == PresenceEventType::Snapshot => {
            let users: Vec<String> = p.snapshot.into_iter().map(|u| u.user_id).collect();
            Some(format!("Snapshot [{}]", users.join(", ")))
        }
        RtmEvent::Presence(p) => Some(format!("{:?} {}", p.event_type, p.publisher)),
        _ => None,
    })
    .await
}

/// Waits for the CONNECTED link state, failing if a message comes first: the application hears
/// that the link is back before it hears anything sent over it.
async fn connected_before_any_message(events: &mut EventStream) -> LinkStateEvent {
    let wait = async {
        while let Some(event) = events.recv().await {
            match event {
                RtmEvent::LinkState(s) if s.current_state == LinkState::Connected => return s,
                RtmEvent::Message(m) => panic!("a message arrived before CONNECTED: {m:?}"),
                _ => {}
            }
        }
        panic!("the event stream ended");
    };
    within(LINK_DEADLINE, "the Connected link state", wait).await
}

/// The link is cut for longer than the presence timeout: the server ends the session; the
/// client logs in again by itself and subscribes to its channels again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_presence_timeout_the_client_logs_in_again_and_resubscribes() {
    let server = TestServer::start().await;
    let link = LossyLink::start(server.addr()).await.unwrap();
    let mut config = server.client_config_via(&link);
    config.presence_timeout = 5;
    let roamer = RtmClient::new(TEST_APP_ID, "roamer", config).unwrap();
    let mut events = roamer.events();
    roamer.login(LoginOptions::default()).await.unwrap();
    for channel in ["a", "b"] {
        roamer
            .subscribe(channel, SubscribeOptions::default())
            .await
            .unwrap();
    }
    // A stream channel with a topic joined and one subscribed.
    let (other, mut other_events) = server.login("other").await;
    other
        .subscribe("a", SubscribeOptions::default())
        .await
        .unwrap();
    assert_eq!(
        presence_of(&mut other_events, "a").await,
        "Snapshot [other, roamer]"
    );
    let mic = std::collections::BTreeMap::from([("mic".to_owned(), "on".to_owned())]);
    roamer
        .presence()
        .set_state("a", ChannelType::Message, mic.clone())
        .await
        .unwrap();
    assert_eq!(
        presence_of(&mut other_events, "a").await,
        "RemoteStateChanged roamer"
    );
    let other_stream = other.create_stream_channel("st").unwrap();
    other_stream.join(JoinOptions::default()).await.unwrap();
    other_stream
        .join_topic("t", JoinTopicOptions::default())
        .await
        .unwrap();
    let stream = roamer.create_stream_channel("st").unwrap();
    stream.join(JoinOptions::default()).await.unwrap();
    stream
        .join_topic("mine", JoinTopicOptions::default())
        .await
        .unwrap();
    stream
        .subscribe_topic("t", topic_users(&["other"]))
        .await
        .unwrap();
    let metrics = server.metrics();
    link.cut();
    // Idle timeout (5 s + 10 s) + presence timeout (5 s).
    wait_until(LINK_DEADLINE, "the session's presence timeout", || {
        metrics.sessions_timed_out.load(Ordering::Relaxed) == 1
    })
    .await;
    // Only "other" is left, and it saw roamer time out (not leave).
    assert_eq!(metrics.sessions.load(Ordering::Relaxed), 1);
    assert_eq!(
        presence_of(&mut other_events, "a").await,
        "RemoteTimeout roamer"
    );
    link_reaches(&mut events, LinkState::Disconnected).await;
    link.restore();
    let back = link_reaches(&mut events, LinkState::Connected).await;
    assert!(!back.is_resumed, "{back:?}");
    assert_eq!(back.affected_channels, ["a", "b", "st"]);
    assert_eq!(
        presence_of(&mut other_events, "a").await,
        "RemoteJoin roamer"
    );
    // The new session has the state again: the client sent it after subscribing.
    assert_eq!(
        presence_of(&mut other_events, "a").await,
        "RemoteStateChanged roamer"
    );
    let got = other
        .presence()
        .get_state("roamer", "a", ChannelType::Message)
        .await
        .unwrap();
    assert_eq!(got.states, mic);
    assert!(back.unrestored_channels.is_empty());
    assert_eq!(metrics.sessions_resumed.load(Ordering::Relaxed), 0);
    // Joined again, with its topic and its topic subscription.
    stream
        .publish_topic_message("mine", "still mine", TopicMessageOptions::default())
        .await
        .unwrap();
    other_stream
        .publish_topic_message("t", "topic", TopicMessageOptions::default())
        .await
        .unwrap();
    let m = expect_message(&mut events).await;
    assert_eq!((m.topic_name.as_str(), text(&m)), ("t", "topic"));
    // Subscribed again: a message to each channel arrives.
    for channel in ["a", "b"] {
        other
            .publish(channel, channel, PublishOptions::default())
            .await
            .unwrap();
        let m = expect_message(&mut events).await;
        assert_eq!((m.channel_name.as_str(), text(&m)), (channel, channel));
    }
}

fn topic_users(users: &[&str]) -> TopicSubscribeOptions {
    TopicSubscribeOptions {
        users: users.iter().map(|u| u.to_string()).collect(),
    }
}

/// A resumed session keeps its stream channels, topics and topic subscriptions; the other
/// members see nothing of the cut.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resumed_session_keeps_its_stream_channels() {
    let server = TestServer::start().await;
    let link = LossyLink::start(server.addr()).await.unwrap();
    let roamer = RtmClient::new(TEST_APP_ID, "roamer", server.client_config_via(&link)).unwrap();
    let mut events = roamer.events();
    roamer.login(LoginOptions::default()).await.unwrap();
    let (other, mut other_events) = server.login("other").await;
    let other_stream = other.create_stream_channel("st").unwrap();
    other_stream.join(JoinOptions::default()).await.unwrap();
    other_stream
        .join_topic("t", JoinTopicOptions::default())
        .await
        .unwrap();
    other_stream
        .subscribe_topic("mine", topic_users(&["roamer"]))
        .await
        .unwrap();
    let stream = roamer.create_stream_channel("st").unwrap();
    stream.join(JoinOptions::default()).await.unwrap();
    stream
        .join_topic("mine", JoinTopicOptions::default())
        .await
        .unwrap();
    stream
        .subscribe_topic("t", topic_users(&["other"]))
        .await
        .unwrap();
    let joined = expect_event(&mut other_events, "roamer's topic join", |e| match e {
        RtmEvent::Topic(t) if t.event_type == TopicEventType::RemoteJoin => Some(t.publisher),
        _ => None,
    })
    .await;
    assert_eq!(joined, "roamer");

    link.cut();
    other_stream
        .publish_topic_message("t", "during", TopicMessageOptions::default())
        .await
        .unwrap();
    let lost = link_reaches(&mut events, LinkState::Disconnected).await;
    assert_eq!(lost.affected_channels, ["st"]);
    link.restore();
    let back = link_reaches(&mut events, LinkState::Connected).await;
    assert!(back.is_resumed, "{back:?}");
    let m = expect_message(&mut events).await;
    assert_eq!((m.topic_name.as_str(), text(&m)), ("t", "during"));
    stream
        .publish_topic_message("mine", "back", TopicMessageOptions::default())
        .await
        .unwrap();
    // The other member saw no leave: the first thing it gets is the message.
    let first = expect_event(&mut other_events, "a message or topic event", |e| match e {
        RtmEvent::Message(m) => Some(format!("message {}", text(&m))),
        RtmEvent::Topic(t) if t.event_type != TopicEventType::Snapshot => {
            Some(format!("{:?} of {}", t.event_type, t.publisher))
        }
        _ => None,
    })
    .await;
    assert_eq!(first, "message back");
}

/// While the client is away, a login of the same user elsewhere ends the kept session for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_session_replaced_by_the_same_user_fails_instead_of_resuming() {
    let server = TestServer::start().await;
    let link = LossyLink::start(server.addr()).await.unwrap();
    let roamer = RtmClient::new(TEST_APP_ID, "twin", server.client_config_via(&link)).unwrap();
    let mut events = roamer.events();
    roamer.login(LoginOptions::default()).await.unwrap();
    let metrics = server.metrics();
    link.cut();
    wait_until(LINK_DEADLINE, "the server to keep the session", || {
        metrics.sessions_parked.load(Ordering::Relaxed) == 1
    })
    .await;
    let (_twin, _) = server.login("twin").await;
    wait_until(LINK_DEADLINE, "the kept session to end", || {
        metrics.sessions_parked.load(Ordering::Relaxed) == 0
    })
    .await;
    link_reaches(&mut events, LinkState::Disconnected).await;
    link.restore();
    // The resume is refused; the client logs in again, which replaces the other login in turn
    // (the reference's same-uid rule: the newest login wins).
    let back = link_reaches(&mut events, LinkState::Connected).await;
    assert!(!back.is_resumed);
    assert_eq!(metrics.sessions_resumed.load(Ordering::Relaxed), 0);
}

/// A resume while the session's connection is still open takes the session from it: the old
/// connection is closed with code 0x04, the new one serves the session (its subscriptions
/// included), and nobody else notices.
#[tokio::test]
async fn a_resume_takes_the_session_from_a_live_connection() {
    let server = TestServer::start().await;
    let (mut old, ticket) = RawSession::login_with_ticket(&server, "mover").await;
    // Without presence, the only event on the channel's lane is the message below.
    let subscribe = Request::Subscribe {
        channel: "room".into(),
        options: SubscribeOptions {
            with_presence: false,
            ..Default::default()
        },
    };
    assert!(old.request(2, subscribe).await.is_ok());

    let mut new = RawSession::hello(&server).await;
    match new.resume(1, "mover", ticket).await {
        Ok(Response::Resume { next_frame, .. }) => assert!(next_frame.iter().all(|n| *n == 0)),
        other => panic!("{other:?}"),
    }
    assert_eq!(old.close_code().await, 0x04);
    // The session, with its subscription, is the new connection's.
    let (other, _) = server.login("other").await;
    other
        .publish("room", "to the mover", PublishOptions::default())
        .await
        .unwrap();
    let frames = new.delivery_frames(2).await;
    assert!(matches!(frames[0], ServerMsg::Lane { .. }));
    match &frames[1] {
        ServerMsg::Event(rtm_proto::Event::Message(m)) => {
            assert_eq!(m.message.as_text(), Some("to the mover"));
        }
        other => panic!("{other:?}"),
    }
    let metrics = server.metrics();
    assert_eq!(metrics.sessions_resumed.load(Ordering::Relaxed), 1);
    assert_eq!(metrics.sessions.load(Ordering::Relaxed), 2);
}

/// A resume must present the ticket of a session of the same app and user.
#[tokio::test]
async fn a_resume_with_a_wrong_ticket_is_refused() {
    let server = TestServer::start().await;
    let (mut owner, ticket) = RawSession::login_with_ticket(&server, "owner").await;
    let mut wrong_secret = ticket;
    wrong_secret.secret[0] ^= 1;
    let attempts = [
        ("owner", wrong_secret),
        ("thief", ticket),
        (
            "owner",
            rtm_proto::SessionTicket {
                session_id: ticket.session_id + 1000,
                secret: ticket.secret,
            },
        ),
    ];
    for (user, ticket) in attempts {
        let mut thief = RawSession::hello(&server).await;
        let err = thief.resume(1, user, ticket).await.unwrap_err();
        assert_eq!(err.code, ErrorCode::NotLogin, "{user}");
    }
    // The owner's session is untouched.
    assert!(matches!(
        owner.request(2, Request::Ping).await,
        Ok(Response::Pong { .. })
    ));
    assert_eq!(server.metrics().sessions_resumed.load(Ordering::Relaxed), 0);
}

/// A client that keeps its heartbeat is never taken for lost, however long it is idle.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn heartbeats_keep_an_idle_session() {
    let server = TestServer::start().await;
    let (client, mut events) = server.login("idle").await;
    let metrics = server.metrics();
    // Longer than the idle timeout (5 s + 10 s) with nothing to say: no link-state change may
    // come.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(18);
    let change = expect_event(&mut events, "a link-state change while idle", |e| match e {
        RtmEvent::LinkState(s) if s.previous_state == LinkState::Connected => Some(s),
        _ => None,
    });
    if let Ok(change) = tokio::time::timeout_at(deadline, change).await {
        panic!("an idle client's link changed: {change:?}");
    }
    assert_eq!(metrics.heartbeat_timeouts.load(Ordering::Relaxed), 0);
    assert_eq!(client.link_state(), LinkState::Connected);
    client
        .publish("c", "still here", PublishOptions::default())
        .await
        .unwrap();
}
