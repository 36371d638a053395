//! Resume on another node while the session's node is alive: the client's new node relays its
//! connection to the session's node, which serves the session as on a connection of its own
//! (`docs/architecture.md`, "Resume on another node"). Skipped where `redis-server` is not
//! installed, unless `RTM_REQUIRE_REDIS=1` (`scripts/test`).

use std::sync::atomic::Ordering;
use std::time::Duration;

use rtm_client::{
    EventStream, LinkOperation, LinkState, LoginOptions, PublishOptions, RtmClient, ServerNode,
    SubscribeOptions,
};
use rtm_proto::{ErrorCode, Request, Response, ServerMsg};
use rtm_testkit::{
    LossyLink, RawSession, RedisServer, TEST_APP_ID, TestCluster, expect_link_state,
    expect_message, wait_until,
};

fn text(m: &rtm_client::MessageEvent) -> &str {
    m.message.as_text().unwrap_or("<binary>")
}

/// A resume on node 1 of a session that node 0 still serves: node 0 hands the session to the
/// relayed connection (closing the old one with `0x04`), events published on node 2 reach the
/// client through node 1, and the client's requests reach the session.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_on_another_node_takes_the_session_from_a_live_connection() {
    if !RedisServer::available() {
        return;
    }
    let cluster = TestCluster::start(3).await;
    let (mut old, ticket) = RawSession::login_with_ticket(cluster.node(0), "mover").await;
    let subscribe = Request::Subscribe {
        channel: "room".into(),
        options: SubscribeOptions {
            with_presence: false,
            ..Default::default()
        },
    };
    assert!(old.request(2, subscribe).await.is_ok());

    let mut new = RawSession::hello(cluster.node(1)).await;
    match new.resume(1, "mover", ticket).await {
        Ok(Response::Resume { next_frame, .. }) => assert!(next_frame.iter().all(|n| *n == 0)),
        other => panic!("{other:?}"),
    }
    assert_eq!(old.close_code().await, 0x04);
    // Published on a third node, delivered by node 0 through node 1.
    let (other, _) = cluster.node(2).login("other").await;
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
    // Requests reach the session, which stays node 0's.
    match new.request(3, Request::Ping).await {
        Ok(Response::Pong { .. }) => {}
        other => panic!("{other:?}"),
    }
    let home = cluster.node(0).metrics();
    assert_eq!(home.sessions_resumed.load(Ordering::Relaxed), 1);
    assert_eq!(home.sessions.load(Ordering::Relaxed), 1);
    assert_eq!(
        cluster.node(1).metrics().sessions.load(Ordering::Relaxed),
        0
    );
}

/// A relayed session that its node ends (here the same user logs in on a third node) ends at
/// once on its node, as a direct one does, and the relayed connection closes with the reason.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_session_ended_by_its_node_ends_at_once() {
    if !RedisServer::available() {
        return;
    }
    let cluster = TestCluster::start(3).await;
    let (_old, ticket) = RawSession::login_with_ticket(cluster.node(0), "mover").await;
    let mut new = RawSession::hello(cluster.node(1)).await;
    assert!(matches!(
        new.resume(1, "mover", ticket).await,
        Ok(Response::Resume { .. })
    ));
    let (_again, _) = cluster.node(2).login("mover").await;
    assert_eq!(new.close_code().await, 0x10);
    // Well before a relay's 15 s of silence would end it.
    let home = cluster.node(0).metrics();
    wait_until(
        Duration::from_secs(5),
        "the session to end on node 0",
        || home.sessions.load(Ordering::Relaxed) == 0,
    )
    .await;
}

/// A resume on another node with a ticket that does not match is refused as on one node, and
/// the connection can log in instead (its own session, on its own node).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_relayed_resume_with_a_wrong_ticket_is_refused_and_the_connection_stays_usable() {
    if !RedisServer::available() {
        return;
    }
    let cluster = TestCluster::start(2).await;
    let (_old, mut ticket) = RawSession::login_with_ticket(cluster.node(0), "mover").await;
    ticket.secret[0] ^= 1;
    let mut new = RawSession::hello(cluster.node(1)).await;
    assert_eq!(
        new.resume(1, "mover", ticket).await.unwrap_err().code,
        ErrorCode::NotLogin
    );
    let login = rtm_proto::LoginRequest {
        app_id: TEST_APP_ID.into(),
        user_id: "someone".into(),
        token: String::new(),
        use_string_user_id: true,
        heartbeat_interval: 1800,
        presence_timeout: 300,
    };
    assert!(matches!(
        new.request(2, Request::Login(login)).await,
        Ok(Response::Login { .. })
    ));
    assert_eq!(
        cluster.node(1).metrics().sessions.load(Ordering::Relaxed),
        1
    );
}

/// `bob` on node 0 through a link the test can cut, knowing node 1 as another node.
async fn bob_behind_a_link(cluster: &TestCluster, link: &LossyLink) -> (RtmClient, EventStream) {
    let mut config = cluster.node(0).client_config_via(link);
    config.other_nodes = vec![ServerNode {
        endpoint: cluster.node(1).client_config().endpoint,
        transport: config.transport,
    }];
    let bob = RtmClient::new(TEST_APP_ID, "bob", config).unwrap();
    let mut events = bob.events();
    bob.login(LoginOptions::default()).await.unwrap();
    expect_link_state(&mut events, LinkState::Connected).await;
    for channel in ["room", "side"] {
        bob.subscribe(channel, SubscribeOptions::default())
            .await
            .unwrap();
    }
    (bob, events)
}

/// The client loses its way to node 0, which stays up and keeps the session; it rotates to
/// node 1 and resumes there. Everything published meanwhile (on node 2) arrives once, in each
/// channel's order, the link says it was resumed, and the session goes on both ways.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_cut_off_from_its_node_resumes_elsewhere_without_losing_anything() {
    if !RedisServer::available() {
        return;
    }
    let cluster = TestCluster::start(3).await;
    let link = LossyLink::start(cluster.node(0).addr()).await.unwrap();
    let (bob, mut events) = bob_behind_a_link(&cluster, &link).await;
    let (carol, mut carol_events) = cluster.node(2).login("carol").await;
    carol
        .subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    carol
        .publish("room", "before", PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(text(&expect_message(&mut events).await), "before");
    assert_eq!(text(&expect_message(&mut carol_events).await), "before");

    link.cut();
    for i in 0..30 {
        let channel = if i % 3 == 0 { "side" } else { "room" };
        carol
            .publish(channel, format!("{i}"), PublishOptions::default())
            .await
            .unwrap();
    }
    expect_link_state(&mut events, LinkState::Disconnected).await;
    let back = expect_link_state(&mut events, LinkState::Connected).await;
    assert!(back.is_resumed, "{back:?}");
    assert_eq!(back.operation, LinkOperation::Reconnected);
    assert!(back.unrestored_channels.is_empty());

    let mut got: std::collections::BTreeMap<String, Vec<String>> = Default::default();
    for _ in 0..30 {
        let m = expect_message(&mut events).await;
        got.entry(m.channel_name.clone())
            .or_default()
            .push(text(&m).to_owned());
    }
    let expected = |c: &str| -> Vec<String> {
        (0..30)
            .filter(|i| (i % 3 == 0) == (c == "side"))
            .map(|i| i.to_string())
            .collect()
    };
    assert_eq!(got["room"], expected("room"));
    assert_eq!(got["side"], expected("side"));
    // Still node 0's session, now through node 1, both ways.
    carol
        .publish("room", "after", PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(text(&expect_message(&mut events).await), "after");
    bob.publish("room", "I'm back", PublishOptions::default())
        .await
        .unwrap();
    for i in (0..30).filter(|i| i % 3 != 0) {
        assert_eq!(
            text(&expect_message(&mut carol_events).await),
            i.to_string()
        );
    }
    for expected in ["after", "I'm back"] {
        assert_eq!(text(&expect_message(&mut carol_events).await), expected);
    }
    let home = cluster.node(0).metrics();
    assert_eq!(home.sessions_resumed.load(Ordering::Relaxed), 1);
    assert_eq!(home.sessions_timed_out.load(Ordering::Relaxed), 0);
    assert_eq!(
        cluster.node(1).metrics().sessions.load(Ordering::Relaxed),
        0
    );
}
