//! End-to-end across nodes: three servers sharing one `redis-server` (`[engine] kind =
//! "redis"`), clients on different nodes. The same behaviours as on one node
//! (`docs/architecture.md`, "Cluster"). Skipped where `redis-server` is not installed, unless
//! `RTM_REQUIRE_REDIS=1` (`scripts/test`).

use std::time::Duration;

use rtm_client::{
    ChannelType, ErrorCode, EventStream, JoinOptions, LinkState, LinkStateReason, MetadataItem,
    Payload, PresenceEvent, PresenceEventType, PublishOptions, RtmEvent, StateDetail,
    StorageEventType, SubscribeOptions, WhoNowOptions,
};
use rtm_testkit::{
    RedisServer, TestCluster, TestServer, expect_event, expect_link_state, expect_message,
};

fn to_user() -> PublishOptions {
    PublishOptions {
        channel_type: ChannelType::User,
        ..Default::default()
    }
}

/// The next presence event of `channel` that is not a snapshot.
async fn next_change(events: &mut EventStream, channel: &str) -> PresenceEvent {
    expect_event(
        events,
        &format!("a presence change in {channel}"),
        |e| match e {
            RtmEvent::Presence(p)
                if p.channel_name == channel && p.event_type != PresenceEventType::Snapshot =>
            {
                Some(p)
            }
            _ => None,
        },
    )
    .await
}

#[tokio::test]
async fn a_publish_on_one_node_reaches_subscribers_on_the_others_once_and_in_order() {
    if !RedisServer::available() {
        return;
    }
    const N: u32 = 200;
    let cluster = TestCluster::start(3).await;
    let (b, mut b_events) = cluster.node(1).login("b").await;
    let (c, mut c_events) = cluster.node(2).login("c").await;
    let (a2, mut a2_events) = cluster.node(0).login("a2").await;
    for client in [&b, &c, &a2] {
        client
            .subscribe("room", SubscribeOptions::default())
            .await
            .unwrap();
    }
    let (a, _) = cluster.node(0).login("a").await;
    for i in 0..N {
        a.publish("room", format!("m{i}"), PublishOptions::default())
            .await
            .unwrap();
    }
    // A last one from node 1 marks the end: nothing may follow a duplicate.
    b.publish("room", "end", PublishOptions::default())
        .await
        .unwrap();
    for events in [&mut b_events, &mut c_events, &mut a2_events] {
        for i in 0..N {
            let m = expect_message(events).await;
            assert_eq!(m.publisher, "a");
            assert_eq!(m.message, Payload::from(format!("m{i}")), "in order, once");
        }
        let end = expect_message(events).await;
        assert_eq!(
            (end.publisher.as_str(), end.message),
            ("b", Payload::from("end"))
        );
    }
}

#[tokio::test]
async fn user_messages_cross_nodes_and_an_absent_user_is_offline() {
    if !RedisServer::available() {
        return;
    }
    let cluster = TestCluster::start(2).await;
    let (tony, _) = cluster.node(0).login("Tony").await;
    let (lily, mut lily_events) = cluster.node(1).login("Lily").await;
    tony.publish("Lily", "hi Lily", to_user()).await.unwrap();
    let m = expect_message(&mut lily_events).await;
    assert_eq!(m.channel_type, ChannelType::User);
    assert_eq!(
        (m.channel_name.as_str(), m.publisher.as_str()),
        ("Tony", "Tony")
    );
    assert_eq!(m.message, Payload::from("hi Lily"));

    let err = tony
        .publish("Nobody", "hello?", to_user())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelReceiverOffline);
    lily.logout().await.unwrap();
    let err = tony
        .publish("Lily", "still there?", to_user())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelReceiverOffline);
}

#[tokio::test]
async fn a_login_on_another_node_replaces_the_first_session() {
    if !RedisServer::available() {
        return;
    }
    let cluster = TestCluster::start(2).await;
    let (first, mut first_events) = cluster.node(0).login("Tony").await;
    first
        .subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    let (_second, mut second_events) = cluster.node(1).login("Tony").await;
    let kicked = expect_link_state(&mut first_events, LinkState::Failed).await;
    assert_eq!(kicked.reason_code, LinkStateReason::SameUidLogin);
    // User messages go to the new session, on the other node.
    let (lily, _) = cluster.node(0).login("Lily").await;
    lily.publish("Tony", "which one?", to_user()).await.unwrap();
    let m = expect_message(&mut second_events).await;
    assert_eq!(m.message, Payload::from("which one?"));
}

#[tokio::test]
async fn presence_states_who_and_where_are_cluster_wide() {
    if !RedisServer::available() {
        return;
    }
    let cluster = TestCluster::start(3).await;
    let (a, mut a_events) = cluster.node(0).login("A").await;
    a.subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    let (b, _b_events) = cluster.node(1).login("B").await;
    b.subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    let joined = next_change(&mut a_events, "room").await;
    assert_eq!(
        (joined.event_type, joined.publisher.as_str()),
        (PresenceEventType::RemoteJoin, "B")
    );
    // A quiet user on a third node is counted nowhere.
    let (q, _) = cluster.node(2).login("Q").await;
    q.subscribe(
        "room",
        SubscribeOptions {
            be_quiet: true,
            ..Default::default()
        },
    )
    .await
    .unwrap();

    let state: StateDetail = [("mood".to_owned(), "busy".to_owned())].into();
    b.presence()
        .set_state("room", ChannelType::Message, state.clone())
        .await
        .unwrap();
    let changed = next_change(&mut a_events, "room").await;
    assert_eq!(changed.event_type, PresenceEventType::RemoteStateChanged);
    assert_eq!(
        (changed.publisher.as_str(), &changed.state_changed),
        ("B", &state)
    );

    // Asked on the quiet user's node: the others are there, with B's state.
    let who = q
        .presence()
        .who_now(
            "room",
            ChannelType::Message,
            WhoNowOptions {
                include_state: true,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(who.total_occupancy, 2);
    let users: Vec<(&str, usize)> = who
        .occupants
        .iter()
        .map(|o| (o.user_id.as_str(), o.states_count))
        .collect();
    assert_eq!(users, [("A", 0), ("B", 1)]);
    let got = q
        .presence()
        .get_state("B", "room", ChannelType::Message)
        .await
        .unwrap();
    assert_eq!(got.states, state);
    let err = a
        .presence()
        .get_state("Q", "room", ChannelType::Message)
        .await
        .unwrap_err();
    assert_eq!(
        err.code,
        ErrorCode::PresenceUserNotExist,
        "quiet users are not there"
    );
    let where_b = a.presence().where_now("B").await.unwrap();
    let names: Vec<&str> = where_b
        .channels
        .iter()
        .map(|c| c.channel_name.as_str())
        .collect();
    assert_eq!(names, ["room"]);
    assert!(
        a.presence()
            .where_now("Q")
            .await
            .unwrap()
            .channels
            .is_empty()
    );

    b.unsubscribe("room").await.unwrap();
    let left = next_change(&mut a_events, "room").await;
    assert_eq!(
        (left.event_type, left.publisher.as_str()),
        (PresenceEventType::RemoteLeave, "B")
    );
    assert!(
        a.presence()
            .where_now("B")
            .await
            .unwrap()
            .channels
            .is_empty()
    );
    let who = a
        .presence()
        .who_now("room", ChannelType::Message, WhoNowOptions::default())
        .await
        .unwrap();
    assert_eq!(who.total_occupancy, 1);
}

#[tokio::test]
async fn leaving_on_one_node_and_returning_on_another_within_the_debounce_is_not_told() {
    if !RedisServer::available() {
        return;
    }
    let mut config = TestServer::config();
    config.limits.presence_debounce_ms = 3_000;
    let cluster = TestCluster::start_with(2, config).await;
    let (watcher, mut events) = cluster.node(0).login("watcher").await;
    watcher
        .subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    let (bob, _) = cluster.node(0).login("bob").await;
    bob.subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    assert_eq!(
        next_change(&mut events, "room").await.event_type,
        PresenceEventType::RemoteJoin
    );
    bob.logout().await.unwrap();
    // Back on the other node well within the window: neither the leave nor the return.
    let (bob, _) = cluster.node(1).login("bob").await;
    bob.subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    // Someone else's leave, after the window, is the next change the watcher hears.
    let (carol, _) = cluster.node(1).login("carol").await;
    carol
        .subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    let next = next_change(&mut events, "room").await;
    assert_eq!(
        (next.event_type, next.publisher.as_str()),
        (PresenceEventType::RemoteJoin, "carol")
    );
    tokio::time::timeout(Duration::from_millis(3_500), async {
        let change = next_change(&mut events, "room").await;
        panic!("nothing else was to be told, got {change:?}");
    })
    .await
    .unwrap_err();
}

#[tokio::test]
async fn a_stream_channel_counts_its_users_across_nodes() {
    if !RedisServer::available() {
        return;
    }
    let mut config = TestServer::config();
    config.limits.stream_channel_users = 2;
    let cluster = TestCluster::start_with(3, config).await;
    let (a, mut a_events) = cluster.node(0).login("a").await;
    a.create_stream_channel("stage")
        .unwrap()
        .join(JoinOptions::default())
        .await
        .unwrap();
    let (b, _) = cluster.node(1).login("b").await;
    let b_stage = b.create_stream_channel("stage").unwrap();
    b_stage.join(JoinOptions::default()).await.unwrap();
    let joined = next_change(&mut a_events, "stage").await;
    assert_eq!(
        (
            joined.event_type,
            joined.channel_type,
            joined.publisher.as_str()
        ),
        (PresenceEventType::RemoteJoin, ChannelType::Stream, "b")
    );
    let (c, _) = cluster.node(2).login("c").await;
    let err = c
        .create_stream_channel("stage")
        .unwrap()
        .join(JoinOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelJoinFailed);
    b_stage.leave().await.unwrap();
    c.create_stream_channel("stage")
        .unwrap()
        .join(JoinOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn apps_stay_apart_across_nodes() {
    if !RedisServer::available() {
        return;
    }
    let cluster = TestCluster::start(2).await;
    let (a, mut a_events) = cluster.node(0).login("a").await;
    a.subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    let other = rtm_client::RtmClient::new("otherapp", "x", cluster.node(1).client_config())
        .expect("a valid user id");
    other
        .login(rtm_client::LoginOptions::default())
        .await
        .unwrap();
    other
        .subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    other
        .publish("room", "other app", PublishOptions::default())
        .await
        .unwrap();
    let who = other
        .presence()
        .who_now("room", ChannelType::Message, WhoNowOptions::default())
        .await
        .unwrap();
    assert_eq!(who.total_occupancy, 1, "only its own app's user");
    let (b, _) = cluster.node(1).login("b").await;
    b.publish("room", "same app", PublishOptions::default())
        .await
        .unwrap();
    let m = expect_message(&mut a_events).await;
    assert_eq!(m.message, Payload::from("same app"));
}

/// The next storage event, as its type and the set's "key=value" pairs.
async fn next_storage(events: &mut EventStream) -> (StorageEventType, Vec<String>) {
    let e = expect_event(events, "a storage event", |e| match e {
        RtmEvent::Storage(s) => Some(s),
        _ => None,
    })
    .await;
    let pairs = e
        .data
        .items
        .iter()
        .map(|i| format!("{}={}", i.key, i.value))
        .collect();
    (e.event_type, pairs)
}

#[tokio::test]
async fn metadata_writes_race_across_nodes_and_listeners_everywhere_see_each_once() {
    if !RedisServer::available() {
        return;
    }
    let cluster = TestCluster::start(3).await;
    let with_metadata = SubscribeOptions {
        with_metadata: true,
        ..Default::default()
    };
    let (watcher, mut events) = cluster.node(0).login("watcher").await;
    watcher.subscribe("room", with_metadata).await.unwrap();
    assert_eq!(
        next_storage(&mut events).await,
        (StorageEventType::Snapshot, vec![])
    );
    let (b, _) = cluster.node(1).login("b").await;
    let (c, _) = cluster.node(2).login("c").await;
    // Both create the same key at once (revision 0: only if it does not exist): one wins.
    let create = |value: &str| MetadataItem {
        revision: 0,
        ..MetadataItem::new("owner", value)
    };
    let (b_storage, c_storage) = (b.storage(), c.storage());
    let (rb, rc) = tokio::join!(
        b_storage.set_channel_metadata(
            "room",
            ChannelType::Message,
            vec![create("b")],
            Default::default()
        ),
        c_storage.set_channel_metadata(
            "room",
            ChannelType::Message,
            vec![create("c")],
            Default::default()
        ),
    );
    let winner = match (&rb, &rc) {
        (Ok(_), Err(e)) => {
            assert_eq!(e.code, ErrorCode::StorageOutdatedRevision);
            "b"
        }
        (Err(e), Ok(_)) => {
            assert_eq!(e.code, ErrorCode::StorageOutdatedRevision);
            "c"
        }
        other => panic!("exactly one of two creations wins: {other:?}"),
    };
    assert_eq!(
        next_storage(&mut events).await,
        (StorageEventType::Update, vec![format!("owner={winner}")])
    );
    // Then a change from the other node, seen after it.
    let loser = if winner == "b" { &c } else { &b };
    loser
        .storage()
        .set_channel_metadata(
            "room",
            ChannelType::Message,
            vec![MetadataItem::new("topic", "rust")],
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        next_storage(&mut events).await,
        (
            StorageEventType::Update,
            vec![format!("owner={winner}"), "topic=rust".into()]
        )
    );
    let read = b
        .storage()
        .get_channel_metadata("room", ChannelType::Message)
        .await
        .unwrap();
    assert_eq!(read.metadata.len(), 2);

    // A user's metadata, listened to from another node.
    watcher
        .storage()
        .subscribe_user_metadata("c")
        .await
        .unwrap();
    assert_eq!(
        next_storage(&mut events).await,
        (StorageEventType::Snapshot, vec![])
    );
    c.storage()
        .set_user_metadata(vec![MetadataItem::new("mood", "busy")], Default::default())
        .await
        .unwrap();
    assert_eq!(
        next_storage(&mut events).await,
        (StorageEventType::Update, vec!["mood=busy".to_owned()])
    );
}

#[tokio::test]
async fn concurrent_logins_of_one_user_across_nodes_leave_exactly_one_session() {
    if !RedisServer::available() {
        return;
    }
    const N: usize = 6;
    let cluster = TestCluster::start(2).await;
    let mut clients = Vec::new();
    for i in 0..N {
        let client = cluster.node(i % 2).client("dup");
        let events = client.events();
        clients.push((client, events));
    }
    let logins = clients
        .iter()
        .map(|(c, _)| c.login(rtm_client::LoginOptions::default()));
    for result in futures_util::future::join_all(logins).await {
        // A login replaced before it was answered may fail; the others succeed.
        let _ = result;
    }
    // Every session but one is told it was replaced.
    let mut kicked = 0;
    let mut survivor = None;
    for (i, (client, events)) in clients.iter_mut().enumerate() {
        if client.link_state() == LinkState::Connected {
            // Connected now may still be kicked: the kick is on its way or not coming at all.
            let wait = tokio::time::timeout(
                Duration::from_secs(3),
                expect_link_state(events, LinkState::Failed),
            )
            .await;
            match wait {
                Ok(_) => kicked += 1,
                Err(_) => survivor = Some(i),
            }
        } else {
            kicked += 1;
        }
    }
    assert_eq!(kicked, N - 1, "exactly one session of the user stays");
    let survivor = survivor.expect("one stays");
    let (lily, _) = cluster.node(0).login("lily").await;
    lily.publish("dup", "to the one left", to_user())
        .await
        .unwrap();
    let m = expect_message(&mut clients[survivor].1).await;
    assert_eq!(m.message, Payload::from("to the one left"));
}

#[tokio::test]
async fn nodes_ride_out_a_redis_restart_and_keep_what_was_acknowledged() {
    if !RedisServer::available() {
        return;
    }
    let mut config = TestServer::config();
    // Calls fail fast while Redis is away (the default is 2 s).
    config.engine.command_timeout_ms = Some(500);
    config.limits.history_max_messages = 100;
    let mut cluster = TestCluster::start_on(RedisServer::start_persistent(), 2, config).await;
    let (alice, mut alice_events) = cluster.node(0).login("alice").await;
    let mut alice_gaps = alice.events();
    alice
        .subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    let (bob, _) = cluster.node(1).login("bob").await;
    let stored = PublishOptions {
        store_in_history: true,
        ..Default::default()
    };
    bob.publish("room", "before", stored.clone()).await.unwrap();
    assert_eq!(
        expect_message(&mut alice_events).await.message,
        Payload::from("before")
    );

    cluster.redis().kill();
    // While Redis is away a call fails with its own code, within the command timeout. The
    // outage lasts ten such failures (over 5 s, longer than the connection manager's own
    // retries), so that the nodes have to find their way back by themselves.
    for _ in 0..10 {
        let started = std::time::Instant::now();
        let err = bob
            .publish("room", "lost", PublishOptions::default())
            .await
            .unwrap_err();
        assert_eq!(err.code, ErrorCode::ChannelPublishMessageFailed);
        assert!(
            started.elapsed() < Duration::from_secs(5),
            "{:?}",
            started.elapsed()
        );
    }

    cluster.redis().restart();
    // The nodes reconnect and subscribe again by themselves. Until node 0 has, what is
    // published elsewhere does not reach it (pub/sub keeps nothing): publish until one arrives.
    let back = async {
        for i in 0.. {
            let text = format!("after {i}");
            match bob
                .publish("room", text.as_str(), PublishOptions::default())
                .await
            {
                Ok(_) => {
                    let heard = tokio::time::timeout(
                        Duration::from_millis(500),
                        expect_message(&mut alice_events),
                    )
                    .await;
                    if let Ok(m) = heard {
                        return m.message;
                    }
                }
                Err(e) => {
                    assert_eq!(e.code, ErrorCode::ChannelPublishMessageFailed);
                    // Redis has no event to wait for while a node reconnects: try again.
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        }
        unreachable!()
    };
    let heard = rtm_testkit::within(
        Duration::from_secs(20),
        "a message after Redis is back",
        back,
    )
    .await;
    assert!(matches!(heard, Payload::Text(t) if t.starts_with("after ")));
    // Node 0 was deaf while its link to Redis was down: its subscriber is told of the window,
    // with an unknown count (nothing stored in it to recover: the publishes failed).
    let gap = expect_event(&mut alice_gaps, "the gap", |e| match e {
        RtmEvent::MessagesLost(lost) => Some(lost),
        _ => None,
    })
    .await;
    assert_eq!((gap.channel_name.as_str(), gap.count), ("room", 0));
    assert!(gap.from < gap.to);
    // What Redis acknowledged before it died is still there (append-only file).
    let page = alice
        .history()
        .get_messages("room", ChannelType::Message, Default::default())
        .await
        .unwrap();
    let texts: Vec<Payload> = page.message_list.into_iter().map(|m| m.message).collect();
    assert_eq!(texts, [Payload::from("before")]);
}
