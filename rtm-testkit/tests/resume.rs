//! Sessions that survive the network: heartbeats, lost connections, resume and re-login
//! (`docs/protocol.md` §5.6), over the test kit's relay.

use std::sync::atomic::Ordering;
use std::time::Duration;

use rtm_client::{
    ErrorCode, LinkOperation, LinkState, LinkStateReason, LoginOptions, PublishOptions, RtmClient,
    RtmEvent, SubscribeOptions,
};
use rtm_proto::{ClientMsg, Hello, LoginRequest, Request, Response, ResumeRequest, ServerMsg};
use rtm_testkit::{
    LossyLink, RawSession, TEST_APP_ID, TestServer, expect_event, expect_link_state,
    expect_message, wait_until, within,
};

/// Long enough for a heartbeat interval (5 s) plus the pong timeout (10 s), plus a retry.
const LINK_DEADLINE: Duration = Duration::from_secs(45);

fn text(m: &rtm_client::MessageEvent) -> &str {
    m.message.as_text().unwrap_or_default()
}

/// A server whose silence limit is the heartbeat plus `grace` seconds.
async fn server_with_grace(grace: u32) -> TestServer {
    let mut config = TestServer::config();
    config.connection.heartbeat_grace_secs = grace;
    TestServer::start_with(config).await
}

/// Side channels: with 16 lanes, their events travel on several delivery streams.
const SIDES: [&str; 4] = ["side0", "side1", "side2", "side3"];

/// The link is cut for less than the presence timeout: the client comes back to the same
/// session, receives what was published meanwhile, each channel in order, and the server never
/// let the session go.
async fn cut_and_resume(server: TestServer) -> TestServer {
    let link = LossyLink::start(server.addr()).await.unwrap();
    let roamer = RtmClient::new(TEST_APP_ID, "roamer", server.client_config_via(&link)).unwrap();
    let mut events = roamer.events();
    roamer.login(LoginOptions::default()).await.unwrap();
    for channel in std::iter::once("room").chain(SIDES) {
        roamer
            .subscribe(channel, SubscribeOptions::default())
            .await
            .unwrap();
    }
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
    let lost = within(
        LINK_DEADLINE,
        "DISCONNECTED",
        expect_link_state(&mut events, LinkState::Disconnected),
    )
    .await;
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
    let back = within(
        LINK_DEADLINE,
        "CONNECTED again",
        expect_link_state(&mut events, LinkState::Connected),
    )
    .await;
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
    server
}

/// The server has not noticed the loss yet when the client comes back: the new connection
/// takes the session over from the old one.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_takes_the_session_from_a_connection_the_server_still_holds() {
    let server = cut_and_resume(server_with_grace(600).await).await;
    assert_eq!(
        server.metrics().heartbeat_timeouts.load(Ordering::Relaxed),
        0
    );
}

/// The server noticed the silence first (heartbeat + 1 s) and kept the session aside.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn resume_finds_a_session_the_server_kept_after_a_heartbeat_timeout() {
    let server = cut_and_resume(server_with_grace(1).await).await;
    assert!(server.metrics().heartbeat_timeouts.load(Ordering::Relaxed) >= 1);
}

/// The link is cut for longer than the presence timeout: the server ends the session; the
/// client logs in again by itself and subscribes to its channels again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn after_the_presence_timeout_the_client_logs_in_again_and_resubscribes() {
    let server = server_with_grace(1).await;
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
    let metrics = server.metrics();
    link.cut();
    // Heartbeat (5 s) + grace (1 s) + presence timeout (5 s).
    wait_until(LINK_DEADLINE, "the session's presence timeout", || {
        metrics.sessions_timed_out.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(metrics.sessions.load(Ordering::Relaxed), 0);
    within(
        LINK_DEADLINE,
        "DISCONNECTED",
        expect_link_state(&mut events, LinkState::Disconnected),
    )
    .await;
    link.restore();
    let back = within(
        LINK_DEADLINE,
        "CONNECTED again",
        expect_link_state(&mut events, LinkState::Connected),
    )
    .await;
    assert!(!back.is_resumed, "{back:?}");
    assert_eq!(back.affected_channels, ["a", "b"]);
    assert!(back.unrestored_channels.is_empty());
    assert_eq!(metrics.sessions_resumed.load(Ordering::Relaxed), 0);
    // Subscribed again: a message to each channel arrives.
    let (other, _) = server.login("other").await;
    for channel in ["a", "b"] {
        other
            .publish(channel, channel, PublishOptions::default())
            .await
            .unwrap();
        let m = expect_message(&mut events).await;
        assert_eq!((m.channel_name.as_str(), text(&m)), (channel, channel));
    }
}

/// While the client is away, a login of the same user elsewhere ends the kept session for good.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_kept_session_replaced_by_the_same_user_fails_instead_of_resuming() {
    let server = server_with_grace(1).await;
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
    within(
        LINK_DEADLINE,
        "DISCONNECTED",
        expect_link_state(&mut events, LinkState::Disconnected),
    )
    .await;
    link.restore();
    // The resume is refused; the client logs in again, which replaces the other login in turn
    // (the reference's same-uid rule: the newest login wins).
    let back = within(
        LINK_DEADLINE,
        "CONNECTED again",
        expect_link_state(&mut events, LinkState::Connected),
    )
    .await;
    assert!(!back.is_resumed);
    assert_eq!(metrics.sessions_resumed.load(Ordering::Relaxed), 0);
}

/// A resume must present the ticket of a session of the same app and user.
#[tokio::test]
async fn a_resume_with_a_wrong_ticket_is_refused() {
    let server = TestServer::start().await;
    let mut owner = RawSession::open(&server).await;
    owner
        .send_msg(&ClientMsg::Hello(Hello {
            version: rtm_proto::PROTOCOL_VERSION,
            agent: "raw".into(),
        }))
        .await;
    assert!(matches!(owner.next_msg().await, ServerMsg::Welcome(_)));
    let login = Request::Login(LoginRequest {
        app_id: TEST_APP_ID.into(),
        user_id: "owner".into(),
        token: String::new(),
        use_string_user_id: true,
        heartbeat_interval: 1800,
        presence_timeout: 300,
    });
    let ticket = match owner.request(1, login).await {
        Ok(Response::Login { ticket, .. }) => ticket,
        other => panic!("{other:?}"),
    };
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
        let mut thief = RawSession::open(&server).await;
        thief
            .send_msg(&ClientMsg::Hello(Hello {
                version: rtm_proto::PROTOCOL_VERSION,
                agent: "raw".into(),
            }))
            .await;
        assert!(matches!(thief.next_msg().await, ServerMsg::Welcome(_)));
        let resume = Request::Resume(ResumeRequest {
            app_id: TEST_APP_ID.into(),
            user_id: user.into(),
            ticket,
            received: Vec::new(),
        });
        let err = thief.request(1, resume).await.unwrap_err();
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
    let server = server_with_grace(1).await;
    let (client, mut events) = server.login("idle").await;
    let metrics = server.metrics();
    // Two heartbeat intervals with nothing to say (the silence limit is 6 s): no link-state
    // change may come.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(12);
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
