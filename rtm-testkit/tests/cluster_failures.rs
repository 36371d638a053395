//! Failures in a cluster: a node that dies without a word (its runtime stopped where it was,
//! as a crash would), seen by the other nodes' users and by its own clients. Skipped where `redis-server` is not installed, unless
//! `RTM_REQUIRE_REDIS=1` (`scripts/test`).

use std::time::Duration;

use rtm_client::{
    AcquireLockOptions, ChannelType, ErrorCode, EventStream, LinkState, LoginOptions, Payload,
    PresenceEvent, PresenceEventType, PublishOptions, RtmClient, RtmEvent, ServerNode,
    SetLockOptions, SubscribeOptions, WhoNowOptions,
};
use rtm_testkit::{
    RedisServer, TEST_APP_ID, TestCluster, TestServer, expect_event, expect_link_state,
    expect_message, within,
};

const M: ChannelType = ChannelType::Message;

/// A watcher on node 0: logged in as `carol` and subscribed to `room` with presence events.
async fn watcher(cluster: &TestCluster) -> (RtmClient, EventStream) {
    let with_presence = SubscribeOptions {
        with_presence: true,
        ..Default::default()
    };
    let (carol, events) = cluster.node(0).login("carol").await;
    carol.subscribe("room", with_presence).await.unwrap();
    (carol, events)
}

/// `bob`'s client on node 1 that knows node 0 as another node of the service, logged in (its
/// first `CONNECTED` seen) and subscribed to `room`.
async fn bob_with_a_fallback(cluster: &TestCluster) -> (RtmClient, EventStream) {
    let mut config = cluster.node(1).client_config();
    config.other_nodes = vec![ServerNode {
        endpoint: cluster.node(0).client_config().endpoint,
        transport: config.transport,
    }];
    let bob = RtmClient::new(TEST_APP_ID, "bob", config).unwrap();
    let mut events = bob.events();
    bob.login(LoginOptions::default()).await.unwrap();
    expect_link_state(&mut events, LinkState::Connected).await;
    bob.subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    (bob, events)
}

/// The next presence event of `channel` that is not a snapshot.
async fn next_change(events: &mut EventStream) -> PresenceEvent {
    expect_event(events, "a presence change", |e| match e {
        RtmEvent::Presence(p) if p.event_type != PresenceEventType::Snapshot => Some(p),
        _ => None,
    })
    .await
}

/// `bob` logs in on node 1, joins `room` (the watcher's `events` show it) and leaves it again;
/// the client is returned to keep it logged in.
async fn bob_joins_and_leaves(cluster: &TestCluster, events: &mut EventStream) -> RtmClient {
    let (bob, _bob_events) = cluster.node(1).login("bob").await;
    bob.subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    assert_eq!(
        next_change(events).await.event_type,
        PresenceEventType::RemoteJoin
    );
    bob.unsubscribe("room").await.unwrap();
    bob
}

/// A node is killed: after the node timeout (2 s here) another node reaps it. Its users time
/// out for the others (`REMOTE_TIMEOUT`), leave `who_now`, and are offline to user messages;
/// the locks they held start their ttl and then pass to the waiter on a live node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_users_time_out_and_its_locks_follow_their_ttl() {
    if !RedisServer::available() {
        return;
    }
    let mut config = TestServer::config();
    config.engine.node_timeout_ms = Some(2_000);
    let mut cluster = TestCluster::start_with(3, config).await;
    let (carol, mut events) = watcher(&cluster).await;
    let (bob, _bob_events) = cluster.node(1).login("bob").await;
    bob.subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    let joined = next_change(&mut events).await;
    assert_eq!(
        (joined.event_type, joined.publisher.as_str()),
        (PresenceEventType::RemoteJoin, "bob")
    );
    bob.lock()
        .set_lock("room", M, "floor", SetLockOptions { ttl: Some(10) })
        .await
        .unwrap();
    bob.lock()
        .acquire_lock("room", M, "floor", AcquireLockOptions::default())
        .await
        .unwrap();
    let (dave, _dave_events) = cluster.node(2).login("dave").await;
    let retry = AcquireLockOptions { retry: true };
    let waiter = {
        let dave = dave.clone();
        tokio::spawn(async move { dave.lock().acquire_lock("room", M, "floor", retry).await })
    };

    cluster.kill(1);
    drop(bob);

    let timed_out = within(Duration::from_secs(20), "bob's timeout", async {
        next_change(&mut events).await
    })
    .await;
    assert_eq!(
        (timed_out.event_type, timed_out.publisher.as_str()),
        (PresenceEventType::RemoteTimeout, "bob")
    );
    let who = carol
        .presence()
        .who_now("room", M, WhoNowOptions::default())
        .await
        .unwrap();
    let names: Vec<_> = who.occupants.iter().map(|u| u.user_id.as_str()).collect();
    assert_eq!(names, ["carol"]);
    let to_bob = PublishOptions {
        channel_type: ChannelType::User,
        ..Default::default()
    };
    let offline = carol.publish("bob", "there?", to_bob).await.unwrap_err();
    assert_eq!(offline.code, ErrorCode::ChannelReceiverOffline);
    // The lock is still bob's until its ttl (10 s) has run from the reaping.
    let locks = carol.lock().get_locks("room", M).await.unwrap();
    assert_eq!(locks.lock_details[0].owner, "bob");
    within(
        Duration::from_secs(30),
        "dave's acquire after the ttl",
        waiter,
    )
    .await
    .unwrap()
    .unwrap();
    let locks = carol.lock().get_locks("room", M).await.unwrap();
    assert_eq!(locks.lock_details[0].owner, "dave");
}

/// A client whose node is killed reconnects to another node of its configuration, logs in
/// there again (the session died with its node), restores its subscription, gets from the
/// history what was stored while it was away, and is told of the window in which messages
/// that were not stored were lost; then messages flow again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_of_a_killed_node_goes_on_at_another_and_recovers_the_gap() {
    if !RedisServer::available() {
        return;
    }
    let mut config = TestServer::config();
    config.engine.node_timeout_ms = Some(2_000);
    config.limits.history_max_messages = 100;
    let mut cluster = TestCluster::start_with(2, config).await;
    let (_bob, mut events) = bob_with_a_fallback(&cluster).await;
    let (alice, _) = cluster.node(0).login("alice").await;
    let stored = PublishOptions {
        store_in_history: true,
        ..Default::default()
    };
    alice
        .publish("room", "before", stored.clone())
        .await
        .unwrap();
    assert_eq!(
        expect_message(&mut events).await.message,
        Payload::from("before")
    );

    cluster.kill(1);
    alice
        .publish("room", "stored while away", stored.clone())
        .await
        .unwrap();
    alice
        .publish("room", "not stored", PublishOptions::default())
        .await
        .unwrap();

    // The loss is noticed after the heartbeat interval and its grace (15 s), then the client
    // goes to node 0. The history gives back what it has, then the window is reported.
    let recovered = within(Duration::from_secs(90), "the recovered message", async {
        loop {
            match events.recv().await {
                Some(RtmEvent::Message(m)) => break m,
                Some(_) => {}
                None => panic!("the event stream ended"),
            }
        }
    })
    .await;
    assert_eq!(recovered.message, Payload::from("stored while away"));
    let lost = expect_event(&mut events, "the lost window", |e| match e {
        RtmEvent::MessagesLost(lost) => Some(lost),
        _ => None,
    })
    .await;
    assert_eq!((lost.channel_name.as_str(), lost.count), ("room", 0));
    assert!(lost.from <= recovered.timestamp && recovered.timestamp <= lost.to);
    let back = expect_link_state(&mut events, LinkState::Connected).await;
    assert!(!back.is_resumed);
    alice.publish("room", "after", stored).await.unwrap();
    assert_eq!(
        expect_message(&mut events).await.message,
        Payload::from("after")
    );
}

/// A stalled node (its thread blocked, as on an overloaded machine) does not hold up the
/// others: while it stalls, what node 0 publishes reaches node 2's subscriber, all of it and in
/// order, and nothing of it has reached the stalled node's; once it goes on, it catches up and
/// its subscriber gets everything too.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_node_does_not_hold_up_the_others() {
    if !RedisServer::available() {
        return;
    }
    const N: usize = 500;
    let cluster = TestCluster::start(3).await;
    let (slow, mut slow_events) = cluster.node(1).login("slow").await;
    let (fast, mut fast_events) = cluster.node(2).login("fast").await;
    for client in [&slow, &fast] {
        client
            .subscribe("room", SubscribeOptions::default())
            .await
            .unwrap();
    }
    let (alice, _) = cluster.node(0).login("alice").await;
    let stall = cluster.stall(1);
    for i in 0..N {
        alice
            .publish("room", format!("m{i}"), PublishOptions::default())
            .await
            .unwrap();
    }
    for i in 0..N {
        let m = expect_message(&mut fast_events).await;
        assert_eq!(m.message, Payload::from(format!("m{i}")));
    }
    // The stalled node has passed nothing on: node 2 did not wait for it.
    while let Ok(Some(event)) = tokio::time::timeout(Duration::ZERO, slow_events.recv()).await {
        assert!(
            !matches!(event, RtmEvent::Message(_)),
            "the stalled node delivered {event:?}"
        );
    }
    drop(stall);
    for i in 0..N {
        let m = expect_message(&mut slow_events).await;
        assert_eq!(m.message, Payload::from(format!("m{i}")));
    }
}

/// A node that stops gracefully still tells the leaves it was debouncing (here within a 10 s
/// window): they are not left to a task that would die with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_graceful_stop_tells_the_leaves_it_was_debouncing() {
    if !RedisServer::available() {
        return;
    }
    let mut config = TestServer::config();
    config.limits.presence_debounce_ms = 10_000;
    let mut cluster = TestCluster::start_with(2, config).await;
    let (_carol, mut events) = watcher(&cluster).await;
    let _bob = bob_joins_and_leaves(&cluster, &mut events).await;
    cluster.stop(1).await;
    // Told when the node stopped, not after the window (the event deadline is 20 s; the test
    // fails if the leave is never told).
    let left = next_change(&mut events).await;
    assert_eq!(
        (left.event_type, left.publisher.as_str()),
        (PresenceEventType::RemoteLeave, "bob")
    );
}

/// A node that dies while it holds a leave in its debounce window (5 s here): the node that
/// reaps it tells the leave, as a leave, rather than never.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_s_debounced_leaves_are_told_by_its_reaper() {
    if !RedisServer::available() {
        return;
    }
    let mut config = TestServer::config();
    config.limits.presence_debounce_ms = 5_000;
    config.engine.node_timeout_ms = Some(2_000);
    let mut cluster = TestCluster::start_with(2, config).await;
    let (_carol, mut events) = watcher(&cluster).await;
    let _bob = bob_joins_and_leaves(&cluster, &mut events).await;
    cluster.kill(1);
    // Told once node 1 is reaped (after 2 s) and a window has passed on node 0 (5 s); without
    // the reaper nobody would ever tell it.
    let left = next_change(&mut events).await;
    assert_eq!(
        (left.event_type, left.publisher.as_str()),
        (PresenceEventType::RemoteLeave, "bob")
    );
}

/// A node that was only paused past the node timeout is reaped by the others; when it goes on,
/// its heartbeat finds it out and it fences itself: it closes its sessions and takes no new
/// logins, so its clients go on at another node and are counted there again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_node_that_was_reaped_fences_itself_and_its_clients_move_on() {
    if !RedisServer::available() {
        return;
    }
    let mut config = TestServer::config();
    config.engine.node_timeout_ms = Some(2_000);
    let cluster = TestCluster::start_with(2, config).await;
    let (_carol, mut events) = watcher(&cluster).await;
    let (_bob, mut bob_events) = bob_with_a_fallback(&cluster).await;
    assert_eq!(
        next_change(&mut events).await.event_type,
        PresenceEventType::RemoteJoin
    );

    let stall = cluster.stall(1);
    let timed_out = next_change(&mut events).await;
    assert_eq!(
        (timed_out.event_type, timed_out.publisher.as_str()),
        (PresenceEventType::RemoteTimeout, "bob")
    );
    drop(stall);
    // Fenced: bob's session there is closed; the node refuses him; node 0 takes him.
    let back = within(Duration::from_secs(90), "bob back through node 0", async {
        loop {
            match bob_events.recv().await {
                Some(RtmEvent::LinkState(s)) if s.current_state == LinkState::Connected => {
                    break s;
                }
                Some(_) => {}
                None => panic!("the event stream ended"),
            }
        }
    })
    .await;
    assert!(!back.is_resumed);
    let joined = within(Duration::from_secs(20), "bob's join", async {
        next_change(&mut events).await
    })
    .await;
    assert_eq!(
        (joined.event_type, joined.publisher.as_str()),
        (PresenceEventType::RemoteJoin, "bob")
    );
    // And the fenced node takes no new login.
    let refused = cluster
        .node(1)
        .client("dave")
        .login(LoginOptions::default())
        .await
        .unwrap_err();
    assert_eq!(refused.code, ErrorCode::LoginRejected);
}
