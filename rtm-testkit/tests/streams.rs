//! End-to-end: stream channels and topics (`docs/protocol.md` §5.7).

use std::time::Duration;

use rtm_client::{
    ChannelType, ErrorCode, EventStream, JoinOptions, JoinTopicOptions, MessageEvent, RtmClient,
    RtmEvent, StreamChannel, TopicEvent, TopicEventType, TopicMessageOptions,
    TopicSubscribeOptions,
};
use rtm_testkit::{TestServer, expect_event, expect_message};

const CHANNEL: &str = "Location";

fn text(m: &MessageEvent) -> String {
    m.message.as_text().unwrap_or_default().to_owned()
}

fn users(names: &[&str]) -> TopicSubscribeOptions {
    TopicSubscribeOptions {
        users: names.iter().map(|u| u.to_string()).collect(),
    }
}

/// Logs `user` in and joins [`CHANNEL`].
async fn member(server: &TestServer, user: &str) -> (StreamChannel, EventStream) {
    let (client, events) = server.login(user).await;
    let channel = client.create_stream_channel(CHANNEL).unwrap();
    channel.join(JoinOptions::default()).await.unwrap();
    (channel, events)
}

async fn publish(channel: &StreamChannel, topic: &str, message: &str) {
    channel
        .publish_topic_message(topic, message, TopicMessageOptions::default())
        .await
        .unwrap();
}

/// The next `n` messages, as "publisher:text".
async fn next_messages(events: &mut EventStream, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    for _ in 0..n {
        let m = expect_message(events).await;
        got.push(format!("{}:{}", m.publisher, text(&m)));
    }
    got
}

async fn expect_topic_event(events: &mut EventStream, kind: TopicEventType) -> TopicEvent {
    expect_event(events, &format!("a topic {kind:?} event"), |e| match e {
        RtmEvent::Topic(t) if t.event_type == kind => Some(t),
        _ => None,
    })
    .await
}

/// Two publishers, three subscribers: each subscriber gets exactly the publishers it chose, in
/// publish order. Within one channel every message takes the same delivery lane, so a fence
/// message published last proves that nothing else is on its way.
#[tokio::test]
async fn each_subscriber_gets_exactly_the_publishers_it_chose() {
    let server = TestServer::start().await;
    let (a, _) = member(&server, "A").await;
    let (b, _) = member(&server, "B").await;
    for p in [&a, &b] {
        p.join_topic("gesture", JoinTopicOptions::default())
            .await
            .unwrap();
    }
    let mut subscribers = Vec::new();
    for (name, chosen) in [("X", &["A"][..]), ("Y", &["B"]), ("Z", &["A", "B"])] {
        let (channel, events) = member(&server, name).await;
        let r = channel
            .subscribe_topic("gesture", users(chosen))
            .await
            .unwrap();
        assert_eq!(r.topic_name, "gesture");
        assert_eq!(r.succeed_users, chosen);
        assert!(r.failed_users.is_empty() && r.failed_details.is_empty());
        subscribers.push((channel, events));
    }
    publish(&a, "gesture", "a1").await;
    publish(&b, "gesture", "b1").await;
    publish(&a, "gesture", "a2").await;
    publish(&b, "gesture", "b2").await;
    let expected: [&[&str]; 3] = [
        &["A:a1", "A:a2"],
        &["B:b1", "B:b2"],
        &["A:a1", "B:b1", "A:a2", "B:b2"],
    ];
    for ((_, events), expected) in subscribers.iter_mut().zip(expected) {
        assert_eq!(next_messages(events, expected.len()).await, expected);
    }
    // The fields of a topic message.
    let (_, z_events) = &mut subscribers[2];
    let sent = a
        .publish_topic_message(
            "gesture",
            vec![7u8, 8],
            TopicMessageOptions {
                custom_type: Some("pos".into()),
            },
        )
        .await
        .unwrap();
    assert_eq!(sent.topic_name, "gesture");
    let m = expect_message(z_events).await;
    assert_eq!(m.channel_type, ChannelType::Stream);
    assert_eq!(m.channel_name, CHANNEL);
    assert_eq!(m.topic_name, "gesture");
    assert_eq!(m.message.as_bytes(), &[7, 8]);
    assert_eq!(m.custom_type, "pos");
    assert_eq!(m.publisher, "A");
    assert_eq!(m.timestamp, sent.timestamp);
    // X did not get B's messages, nor Y A's: a fence published last comes next on their lane.
    let [(_, x_events), (_, y_events), _] = &mut subscribers[..] else {
        unreachable!()
    };
    publish(&a, "gesture", "fence").await;
    publish(&b, "gesture", "fence").await;
    // X chose A: A's binary message above, then A's fence.
    assert_eq!(next_messages(x_events, 2).await, ["A:", "A:fence"]);
    assert_eq!(next_messages(y_events, 1).await, ["B:fence"]);
}

/// The reference's example: [A, B] then [B, C] subscribes to A, B and C. Unsubscribing users
/// removes only them; unsubscribing without users removes the topic.
#[tokio::test]
async fn subscribe_topic_is_incremental() {
    let server = TestServer::start().await;
    let mut publishers = Vec::new();
    for name in ["A", "B", "C"] {
        let (p, _) = member(&server, name).await;
        p.join_topic("t", JoinTopicOptions::default())
            .await
            .unwrap();
        publishers.push(p);
    }
    let (x, mut events) = member(&server, "X").await;
    let first = x.subscribe_topic("t", users(&["A", "B"])).await.unwrap();
    assert_eq!(first.succeed_users, ["A", "B"]);
    let second = x.subscribe_topic("t", users(&["B", "C"])).await.unwrap();
    assert_eq!(second.succeed_users, ["B", "C"]);
    for p in &publishers {
        publish(p, "t", "hi").await;
    }
    assert_eq!(
        next_messages(&mut events, 3).await,
        ["A:hi", "B:hi", "C:hi"]
    );

    x.unsubscribe_topic("t", users(&["A"])).await.unwrap();
    for p in &publishers {
        publish(p, "t", "again").await;
    }
    assert_eq!(next_messages(&mut events, 2).await, ["B:again", "C:again"]);

    x.unsubscribe_topic("t", TopicSubscribeOptions::default())
        .await
        .unwrap();
    let err = x
        .unsubscribe_topic("t", TopicSubscribeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelTopicNotSubscribed);
    // Nothing from "t" any more; a fence in another topic of the channel proves it.
    publishers[0]
        .join_topic("fence", JoinTopicOptions::default())
        .await
        .unwrap();
    x.subscribe_topic("fence", users(&["A"])).await.unwrap();
    for p in &publishers {
        publish(p, "t", "gone").await;
    }
    publish(&publishers[0], "fence", "fence").await;
    let m = expect_message(&mut events).await;
    assert_eq!(
        (m.topic_name.as_str(), text(&m).as_str()),
        ("fence", "fence")
    );
}

/// Without users: the topic's publishers, including later ones, and never oneself.
#[tokio::test]
async fn subscribing_without_users_takes_later_publishers_too() {
    let server = TestServer::start().await;
    let (a, _) = member(&server, "A").await;
    a.join_topic("t", JoinTopicOptions::default())
        .await
        .unwrap();
    let (x, mut events) = member(&server, "X").await;
    x.join_topic("t", JoinTopicOptions::default())
        .await
        .unwrap();
    let r = x
        .subscribe_topic("t", TopicSubscribeOptions::default())
        .await
        .unwrap();
    assert_eq!(r.succeed_users, ["A"]);
    let (b, _) = member(&server, "B").await;
    b.join_topic("t", JoinTopicOptions::default())
        .await
        .unwrap();
    publish(&x, "t", "self").await;
    publish(&a, "t", "a").await;
    publish(&b, "t", "b").await;
    assert_eq!(next_messages(&mut events, 2).await, ["A:a", "B:b"]);
}

/// Users that cannot be taken are reported one by one; the others are subscribed.
#[tokio::test]
async fn partial_success_is_reported_per_user() {
    let server = TestServer::start().await;
    let (a, _) = member(&server, "A").await;
    a.join_topic("t", JoinTopicOptions::default())
        .await
        .unwrap();
    let (x, mut events) = member(&server, "X").await;
    let r = x
        .subscribe_topic("t", users(&["A", "bad/user", "A"]))
        .await
        .unwrap();
    assert_eq!(r.succeed_users, ["A"]);
    assert_eq!(r.failed_users, ["bad/user"]);
    assert_eq!(r.failed_details.len(), 1);
    assert_eq!(r.failed_details[0].user, "bad/user");
    assert_eq!(r.failed_details[0].error_code, 6, "INVALID_REMOTE_USER");
    publish(&a, "t", "ok").await;
    assert_eq!(next_messages(&mut events, 1).await, ["A:ok"]);

    // 64 publishers per topic subscription: A and 63 more fill it.
    let more: Vec<String> = (1..64).map(|i| format!("u{i}")).collect();
    let r = x
        .subscribe_topic("t", TopicSubscribeOptions { users: more })
        .await
        .unwrap();
    assert_eq!(r.succeed_users.len(), 63);
    let r = x.subscribe_topic("t", users(&["late", "A"])).await.unwrap();
    assert_eq!(r.succeed_users, ["A"], "already subscribed");
    assert_eq!(r.failed_users, ["late"]);
    assert_eq!(
        r.failed_details[0].error_code, 20003,
        "SUB_USER_EXCEED_LIMITATION"
    );
    // More than 64 in one call is refused as a whole.
    let too_many: Vec<String> = (0..65).map(|i| format!("v{i}")).collect();
    let err = x
        .subscribe_topic("u", TopicSubscribeOptions { users: too_many })
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelExceedTopicUserLimitation);
}

#[tokio::test]
async fn limits_and_their_codes() {
    let mut config = TestServer::config();
    config.limits.stream_channel_users = 3;
    config.limits.topic_publish_rate = 5;
    let server = TestServer::start_with(config).await;
    let (client, _) = server.login("X").await;
    let channel = client.create_stream_channel(CHANNEL).unwrap();

    // Before joining.
    let err = channel
        .join_topic("t", JoinTopicOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelNotJoined);
    assert_eq!(
        channel.leave().await.unwrap_err().code,
        ErrorCode::ChannelNotJoined
    );
    channel.join(JoinOptions::default()).await.unwrap();
    let again = channel.join(JoinOptions::default()).await.unwrap_err();
    assert_eq!(again.code, ErrorCode::DuplicateOperation);

    // Names, meta, size.
    let err = channel
        .join_topic(&"t".repeat(17), JoinTopicOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelInvalidTopicName);
    let meta = JoinTopicOptions {
        meta: "m".repeat(257),
        ..Default::default()
    };
    let err = channel.join_topic("t", meta).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelInvalidTopicMeta);
    let err = channel
        .publish_topic_message("t", "x", TopicMessageOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelTopicNotJoined);
    channel
        .join_topic("t", JoinTopicOptions::default())
        .await
        .unwrap();
    let err = channel
        .publish_topic_message("t", vec![0u8; 1025], TopicMessageOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelMessageLengthExceedLimitation);
    channel
        .publish_topic_message("t", vec![0u8; 1024], TopicMessageOptions::default())
        .await
        .unwrap();

    // Publish rate per topic (5 per second here): a burst of 20 is cut.
    let answers: Vec<_> = (0..20)
        .map(|_| channel.publish_topic_message("t", "x", TopicMessageOptions::default()))
        .collect();
    let mut limited = 0;
    for answer in answers {
        if let Err(e) = answer.await {
            assert_eq!(e.code, ErrorCode::ChannelPublishMessageTooFrequent);
            limited += 1;
        }
    }
    assert!(limited >= 10, "only {limited} of 20 were refused");

    // 8 joined topics per channel.
    for i in 1..8 {
        channel
            .join_topic(&format!("t{i}"), JoinTopicOptions::default())
            .await
            .unwrap();
    }
    let err = channel
        .join_topic("t8", JoinTopicOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelExceedTopicLimitation);

    // 50 subscribed topics per channel.
    for i in 0..50 {
        channel
            .subscribe_topic(&format!("s{i}"), users(&["A"]))
            .await
            .unwrap();
    }
    let err = channel
        .subscribe_topic("s50", users(&["A"]))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelExceedTopicLimitation);

    // Users per stream channel (3 here).
    // (Each handle keeps its client logged in.)
    let _b = member(&server, "B").await;
    let _c = member(&server, "C").await;
    let (d, _) = server.login("D").await;
    let err = d
        .create_stream_channel(CHANNEL)
        .unwrap()
        .join(JoinOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelJoinFailed);

    // 100 joined stream channels per client.
    for i in 0..99 {
        let c = client.create_stream_channel(&format!("c{i}")).unwrap();
        c.join(JoinOptions::default()).await.unwrap();
    }
    let err = client
        .create_stream_channel("c99")
        .unwrap()
        .join(JoinOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelInstanceExceedLimitation);
    let err = client.create_stream_channel("bad/name").unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidChannelName);
}

/// A joining user gets the snapshot of every topic with its publishers and their meta; the
/// others see joins and leaves of topics, and of the channel.
#[tokio::test]
async fn topic_snapshot_and_remote_join_and_leave() {
    let server = TestServer::start().await;
    let (a, mut a_events) = member(&server, "A").await;
    let empty = expect_topic_event(&mut a_events, TopicEventType::Snapshot).await;
    assert_eq!(empty.channel_name, CHANNEL);
    assert!(empty.topic_infos.is_empty());
    let with_meta = JoinTopicOptions {
        meta: "left hand".into(),
        ..Default::default()
    };
    a.join_topic("gesture", with_meta).await.unwrap();
    a.join_topic("cursor", JoinTopicOptions::default())
        .await
        .unwrap();

    let (b, mut b_events) = member(&server, "B").await;
    let snapshot = expect_topic_event(&mut b_events, TopicEventType::Snapshot).await;
    let topics: Vec<(String, Vec<(String, String)>)> = snapshot
        .topic_infos
        .iter()
        .map(|t| {
            let publishers = t
                .publishers
                .iter()
                .map(|p| (p.user_id.clone(), p.meta.clone()))
                .collect();
            (t.topic_name.clone(), publishers)
        })
        .collect();
    assert_eq!(
        topics,
        [
            ("cursor".to_owned(), vec![("A".to_owned(), String::new())]),
            (
                "gesture".to_owned(),
                vec![("A".to_owned(), "left hand".to_owned())]
            ),
        ]
    );

    let meta = JoinTopicOptions {
        meta: "mb".into(),
        ..Default::default()
    };
    b.join_topic("gesture", meta).await.unwrap();
    let joined = expect_topic_event(&mut a_events, TopicEventType::RemoteJoin).await;
    assert_eq!(joined.publisher, "B");
    assert_eq!(joined.topic_infos.len(), 1);
    assert_eq!(joined.topic_infos[0].topic_name, "gesture");
    assert_eq!(joined.topic_infos[0].publishers[0].user_id, "B");
    assert_eq!(joined.topic_infos[0].publishers[0].meta, "mb");

    b.leave_topic("gesture").await.unwrap();
    let left = expect_topic_event(&mut a_events, TopicEventType::RemoteLeave).await;
    assert_eq!(left.publisher, "B");
    assert_eq!(left.topic_infos[0].topic_name, "gesture");
    let err = b.leave_topic("gesture").await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelTopicNotJoined);

    // A leaves the channel: B sees A leave both its topics, in one event.
    a.leave().await.unwrap();
    let left = expect_topic_event(&mut b_events, TopicEventType::RemoteLeave).await;
    assert_eq!(left.publisher, "A");
    let names: Vec<&str> = left
        .topic_infos
        .iter()
        .map(|t| t.topic_name.as_str())
        .collect();
    assert_eq!(names, ["cursor", "gesture"]);
}

/// Leaving drops the user's topics and topic subscriptions; so does logging out.
#[tokio::test]
async fn leave_clears_everything_the_user_had_in_the_channel() {
    let server = TestServer::start().await;
    let (a, _) = member(&server, "A").await;
    a.join_topic("t", JoinTopicOptions::default())
        .await
        .unwrap();
    let (x_client, mut x_events) = server.login("X").await;
    let x = x_client.create_stream_channel(CHANNEL).unwrap();
    x.join(JoinOptions::default()).await.unwrap();
    expect_topic_event(&mut x_events, TopicEventType::Snapshot).await;
    x.join_topic("t", JoinTopicOptions::default())
        .await
        .unwrap();
    x.subscribe_topic("t", users(&["A"])).await.unwrap();
    publish(&a, "t", "before").await;
    assert_eq!(next_messages(&mut x_events, 1).await, ["A:before"]);

    x.leave().await.unwrap();
    let err = x
        .publish_topic_message("t", "x", TopicMessageOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelNotJoined);
    // Joined again: no topics, no subscriptions, and the snapshot no longer lists X.
    x.join(JoinOptions::default()).await.unwrap();
    let snapshot = expect_topic_event(&mut x_events, TopicEventType::Snapshot).await;
    assert_eq!(snapshot.topic_infos.len(), 1);
    assert_eq!(snapshot.topic_infos[0].publishers.len(), 1);
    assert_eq!(snapshot.topic_infos[0].publishers[0].user_id, "A");
    let err = x
        .publish_topic_message("t", "x", TopicMessageOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelTopicNotJoined);
    publish(&a, "t", "while unsubscribed").await;
    x.subscribe_topic("t", users(&["A"])).await.unwrap();
    publish(&a, "t", "after").await;
    assert_eq!(next_messages(&mut x_events, 1).await, ["A:after"]);

    // Logging out leaves the channel too: A's subscription to X's topic goes, and A sees X go.
    x.join_topic("t", JoinTopicOptions::default())
        .await
        .unwrap();
    let (_watcher, mut watcher_events) = member(&server, "W").await;
    x_client.logout().await.unwrap();
    let left = expect_topic_event(&mut watcher_events, TopicEventType::RemoteLeave).await;
    assert_eq!(left.publisher, "X");
    assert_eq!(left.topic_infos[0].topic_name, "t");
}

/// A server with A and B publishing in topic "t" of the channel and X subscribed to both, its
/// queue large enough for `n` messages from each: two publishers at full speed outrun one
/// subscriber of a debug build, and the slow-consumer policy (protocol.md §5.5) is not what
/// these tests are about.
async fn two_publishers_and_a_subscriber(n: u32) -> (TestServer, [StreamChannel; 3], EventStream) {
    let mut config = TestServer::config();
    config.connection.outbound_queue = 2 * n + 1024;
    let server = TestServer::start_with(config).await;
    let (a, _) = member(&server, "A").await;
    let (b, _) = member(&server, "B").await;
    let (x, events) = member(&server, "X").await;
    for p in [&a, &b] {
        p.join_topic("t", JoinTopicOptions::default())
            .await
            .unwrap();
    }
    x.subscribe_topic("t", users(&["A", "B"])).await.unwrap();
    (server, [a, b, x], events)
}

/// Publishes 0..n (big-endian) in topic "t", all queued in call order before any answer is
/// awaited; done when every one is answered.
async fn publish_numbered(p: &StreamChannel, n: u32) -> Result<(), rtm_client::RtmError> {
    let answers: Vec<_> = (0..n)
        .map(|i| {
            p.publish_topic_message(
                "t",
                i.to_be_bytes().to_vec(),
                TopicMessageOptions::default(),
            )
        })
        .collect();
    futures_util::future::try_join_all(answers).await.map(drop)
}

/// 10 000 topic messages from each of two publishers arrive complete and, per publisher, in
/// publish order.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_thousand_topic_messages_per_publisher_arrive_in_order() {
    const N: u32 = 10_000;
    let (_server, [a, b, _x], mut events) = two_publishers_and_a_subscriber(N).await;
    let senders: Vec<_> = [a, b]
        .into_iter()
        .map(|p| tokio::spawn(async move { publish_numbered(&p, N).await.unwrap() }))
        .collect();
    let mut next = std::collections::HashMap::from([("A".to_owned(), 0u32), ("B".to_owned(), 0)]);
    for _ in 0..2 * N {
        let Ok(m) =
            tokio::time::timeout(Duration::from_secs(15), expect_message(&mut events)).await
        else {
            panic!("no message for 15 s; next expected per publisher: {next:?}");
        };
        let got = u32::from_be_bytes(m.message.as_bytes().try_into().unwrap());
        let expected = next.get_mut(&m.publisher).unwrap();
        assert_eq!(
            got, *expected,
            "{}'s message arrived out of order",
            m.publisher
        );
        *expected += 1;
    }
    assert_eq!(next["A"], N);
    assert_eq!(next["B"], N);
    for sender in senders {
        sender.await.unwrap();
    }
}

/// A publisher that leaves the topic, or the channel, as soon as its last publish is answered
/// still has every message delivered (in a cluster the leave must not overtake messages still
/// on their way through Redis to the subscriber's node).
#[tokio::test]
async fn the_last_messages_before_a_publisher_leaves_are_delivered() {
    const N: u32 = 2_000;
    let (_server, [a, b, _x], mut events) = two_publishers_and_a_subscriber(N).await;
    // A leaves the topic, B the channel, each right after its last answer.
    let (sent_a, sent_b) = tokio::join!(
        async {
            publish_numbered(&a, N).await?;
            a.leave_topic("t").await.map(drop)
        },
        async {
            publish_numbered(&b, N).await?;
            b.leave().await.map(drop)
        }
    );
    sent_a.unwrap();
    sent_b.unwrap();
    let mut got = std::collections::HashMap::from([("A".to_owned(), 0u32), ("B".to_owned(), 0)]);
    for _ in 0..2 * N {
        let m = expect_message(&mut events).await;
        *got.get_mut(&m.publisher).unwrap() += 1;
    }
    assert_eq!((got["A"], got["B"]), (N, N));
}

/// A client is one user: a second client of the same user id replaces the first, and its
/// stream channels with it.
#[tokio::test]
async fn a_replaced_session_leaves_its_stream_channels() {
    let server = TestServer::start().await;
    let (_w, mut w_events) = member(&server, "W").await;
    let (x, _) = member(&server, "X").await;
    x.join_topic("t", JoinTopicOptions::default())
        .await
        .unwrap();
    let again = RtmClient::new(rtm_testkit::TEST_APP_ID, "X", server.client_config()).unwrap();
    again
        .login(rtm_client::LoginOptions::default())
        .await
        .unwrap();
    let left = expect_topic_event(&mut w_events, TopicEventType::RemoteLeave).await;
    assert_eq!(left.publisher, "X");
}
