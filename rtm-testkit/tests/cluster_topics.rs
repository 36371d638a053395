//! Stream-channel topics across nodes: servers sharing one `redis-server`, publishers and
//! subscribers of a topic on different nodes (`docs/architecture.md`, "Cluster"). Skipped where
//! `redis-server` is not installed, unless `RTM_REQUIRE_REDIS=1` (`scripts/test`).

use std::time::Duration;

use rtm_client::{
    ErrorCode, EventStream, JoinOptions, JoinTopicOptions, Payload, RtmEvent, StreamChannel,
    TopicEventType, TopicMessageOptions, TopicSubscribeOptions,
};
use rtm_testkit::{
    RedisServer, TEST_APP_ID, TestCluster, TestServer, expect_event, expect_message, within,
};

/// A member of stream channel "stage" on node `node`.
async fn stage_member(
    cluster: &TestCluster,
    node: usize,
    user: &str,
) -> (StreamChannel, EventStream) {
    let (client, events) = cluster.node(node).login(user).await;
    let stage = client.create_stream_channel("stage").unwrap();
    stage.join(JoinOptions::default()).await.unwrap();
    (stage, events)
}

async fn say(stage: &StreamChannel, text: &str) {
    stage
        .publish_topic_message("video", text, TopicMessageOptions::default())
        .await
        .unwrap();
}

/// The next topic message, as "publisher:text".
async fn heard(events: &mut EventStream) -> String {
    let m = expect_message(events).await;
    let Payload::Text(text) = m.message else {
        panic!("a text message");
    };
    format!("{}:{text}", m.publisher)
}

#[tokio::test]
async fn topic_publishers_and_subscriptions_work_across_nodes() {
    if !RedisServer::available() {
        return;
    }
    let cluster = TestCluster::start(3).await;
    let (alice, _) = stage_member(&cluster, 0, "alice").await;
    alice
        .join_topic("video", JoinTopicOptions::default())
        .await
        .unwrap();
    // Bob, on another node, sees alice in his snapshot and takes every publisher of the topic.
    let (bob, mut bob_events) = stage_member(&cluster, 1, "bob").await;
    let snapshot = expect_event(&mut bob_events, "a topic snapshot", |e| match e {
        RtmEvent::Topic(t) if t.event_type == TopicEventType::Snapshot => Some(t),
        _ => None,
    })
    .await;
    let publishers: Vec<&str> = snapshot.topic_infos[0]
        .publishers
        .iter()
        .map(|p| p.user_id.as_str())
        .collect();
    assert_eq!(
        (snapshot.topic_infos[0].topic_name.as_str(), publishers),
        ("video", vec!["alice"])
    );
    let subscribed = bob
        .subscribe_topic("video", TopicSubscribeOptions::default())
        .await
        .unwrap();
    assert_eq!(subscribed.succeed_users, ["alice"]);
    // Carol, on a third node, asks for dave only, before dave publishes there.
    let (carol, mut carol_events) = stage_member(&cluster, 2, "carol").await;
    carol
        .subscribe_topic(
            "video",
            TopicSubscribeOptions {
                users: vec!["dave".into()],
            },
        )
        .await
        .unwrap();
    let (dave, _) = stage_member(&cluster, 2, "dave").await;
    dave.join_topic("video", JoinTopicOptions::default())
        .await
        .unwrap();
    let joined = expect_event(&mut bob_events, "dave joining the topic", |e| match e {
        RtmEvent::Topic(t) if t.event_type == TopicEventType::RemoteJoin => Some(t),
        _ => None,
    })
    .await;
    assert_eq!(joined.publisher, "dave");

    say(&alice, "a1").await;
    say(&dave, "d1").await;
    let mut got = vec![heard(&mut bob_events).await, heard(&mut bob_events).await];
    got.sort();
    assert_eq!(
        got,
        ["alice:a1", "dave:d1"],
        "bob takes later publishers too"
    );
    assert_eq!(heard(&mut carol_events).await, "dave:d1");
    say(&alice, "a2").await;
    say(&dave, "d2").await;
    assert_eq!(heard(&mut carol_events).await, "dave:d2", "never alice");

    // Alice leaves the topic: bob hears only dave from then on.
    alice.leave_topic("video").await.unwrap();
    let mut got = vec![heard(&mut bob_events).await, heard(&mut bob_events).await];
    got.sort();
    assert_eq!(got, ["alice:a2", "dave:d2"]);
    say(&dave, "d3").await;
    assert_eq!(heard(&mut bob_events).await, "dave:d3");
}

/// Runs `redis-cli` with `args` on the cluster's Redis; its answer.
fn redis_cli(cluster: &mut TestCluster, args: &[&str]) -> String {
    let out = std::process::Command::new("redis-cli")
        .arg("-s")
        .arg(cluster.redis().socket())
        .args(args)
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout).trim().to_owned()
}

/// Empties the publisher list of topic "video" in "stage" in Redis and bumps its version (to 2)
/// without telling the bus: as if the list had been lost on its way.
fn drop_video_list_quietly(cluster: &mut TestCluster) {
    let list = format!("rtm:{TEST_APP_ID}:tl:stage\nvideo");
    let version = format!("rtm:{TEST_APP_ID}:tv:stage\nvideo");
    let script = "redis.call('DEL', KEYS[1]); return redis.call('INCR', KEYS[2])";
    let answer = redis_cli(cluster, &["EVAL", script, "2", &list, &version]);
    assert_eq!(answer, "2");
}

/// The topic snapshot a stream-channel join hands its user.
async fn topic_snapshot(events: &mut EventStream) -> Vec<(String, Vec<String>)> {
    let snapshot = expect_event(events, "a topic snapshot", |e| match e {
        RtmEvent::Topic(t) if t.event_type == TopicEventType::Snapshot => Some(t),
        _ => None,
    })
    .await;
    snapshot
        .topic_infos
        .into_iter()
        .map(|t| {
            let users = t.publishers.into_iter().map(|p| p.user_id).collect();
            (t.topic_name, users)
        })
        .collect()
}

/// A node whose members follow a topic keeps the lists the bus brings it in order with the
/// topic's messages, even when a later member's join reads a newer list from Redis: that list
/// may already leave out a publisher whose last messages are still on the bus. Here the newer
/// list is written into Redis without going on the bus (as if still on its way), and a
/// message published after it must still reach the subscriber.
#[tokio::test]
async fn a_join_does_not_apply_a_stored_list_ahead_of_the_bus() {
    if !RedisServer::available() {
        return;
    }
    let mut cluster = TestCluster::start(2).await;
    let (alice, _) = stage_member(&cluster, 1, "alice").await;
    alice
        .join_topic("video", JoinTopicOptions::default())
        .await
        .unwrap();
    let (bob, mut bob_events) = stage_member(&cluster, 0, "bob").await;
    bob.subscribe_topic("video", TopicSubscribeOptions::default())
        .await
        .unwrap();
    say(&alice, "a1").await;
    assert_eq!(heard(&mut bob_events).await, "alice:a1");

    // The stored list moves on without alice; the bus does not carry it (yet).
    drop_video_list_quietly(&mut cluster);

    // Carol joins on bob's node: her snapshot is that node's view, alice still publishing...
    let (_carol, mut carol_events) = stage_member(&cluster, 0, "carol").await;
    assert_eq!(
        topic_snapshot(&mut carol_events).await,
        [("video".to_owned(), vec!["alice".to_owned()])]
    );
    // ...and what alice says still reaches bob.
    say(&alice, "a2").await;
    assert_eq!(heard(&mut bob_events).await, "alice:a2");
}

/// A publisher that joins its topic again with new meta while Redis is away is refused, and
/// stays a publisher with the meta it had: it can publish once Redis is back, and leaving the
/// channel takes it out of the cluster's list (no publisher left behind in Redis).
#[tokio::test]
async fn a_failed_change_of_meta_keeps_the_publisher_and_its_leave_clears_it() {
    if !RedisServer::available() {
        return;
    }
    let mut cluster = cluster_with_short_timeouts().await;
    let (alice, _) = stage_member(&cluster, 0, "alice").await;
    alice.join_topic("video", meta("first")).await.unwrap();

    cluster.redis().kill();
    let refused = alice.join_topic("video", meta("second")).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::ChannelJoinTopicFailed, "{refused}");
    cluster.redis().restart();

    // Still a publisher of the topic: a message goes out once the node reaches Redis again.
    within(
        Duration::from_secs(20),
        "a topic message after Redis is back",
        async {
            loop {
                let sent = alice
                    .publish_topic_message("video", "back", TopicMessageOptions::default())
                    .await;
                match sent {
                    Ok(_) => break,
                    Err(e) => assert_eq!(e.code, ErrorCode::ChannelPublishMessageFailed, "{e}"),
                }
                // A retry poll: nothing tells the test when the node has reconnected.
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        },
    )
    .await;
    // Leaving takes alice out of Redis's list: a new member sees no publisher.
    alice.leave().await.unwrap();
    let (_bob, mut bob_events) = stage_member(&cluster, 0, "bob").await;
    assert_eq!(topic_snapshot(&mut bob_events).await, []);
}

/// Options to join a topic with `meta`.
fn meta(meta: &str) -> JoinTopicOptions {
    JoinTopicOptions {
        meta: meta.into(),
        ..Default::default()
    }
}

/// The entries of topic "video" of "stage" in Redis's list, and the list's version.
fn video_list(cluster: &mut TestCluster) -> (Vec<String>, String) {
    let list = format!("rtm:{TEST_APP_ID}:tl:stage\nvideo");
    let version = format!("rtm:{TEST_APP_ID}:tv:stage\nvideo");
    // Entries hold newlines: read them as a JSON array, where each stays on one line.
    let script =
        "return cjson.encode({redis.call('LRANGE', KEYS[1], 0, -1), redis.call('GET', KEYS[2])})";
    let answer = redis_cli(cluster, &["EVAL", script, "2", &list, &version]);
    let (entries, version): (serde_json::Value, String) =
        serde_json::from_str(&answer).unwrap_or_else(|e| panic!("{answer}: {e}"));
    // cjson writes an empty table as `{}`.
    let entries = entries
        .as_array()
        .map(|entries| {
            let entries = entries.iter().filter_map(serde_json::Value::as_str);
            entries
                .map(|e| e.split_once('\n').map_or("", |(_, rest)| rest).to_owned())
                .collect()
        })
        .unwrap_or_default();
    (entries, version)
}

/// One node on a Redis that can be killed, restarted and paused; its calls give up after
/// 500 ms, so they fail fast while Redis is away.
async fn cluster_with_short_timeouts() -> TestCluster {
    let mut config = TestServer::config();
    config.engine.command_timeout_ms = Some(500);
    TestCluster::start_on(RedisServer::start_persistent(), 1, config).await
}

/// Reads Redis's list of "video" until `done` holds for its entries and version.
async fn until_video_list(
    cluster: &mut TestCluster,
    what: &str,
    done: impl Fn(&[String], u64) -> bool,
) -> Vec<String> {
    within(Duration::from_secs(20), what, async {
        loop {
            let (entries, version) = video_list(cluster);
            if done(&entries, version.parse().unwrap_or(0)) {
                return entries;
            }
            // A retry poll: nothing tells the test when the node's upkeep has run.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await
}

/// A publisher that leaves its topic while Redis is away is told the leave failed, but it has
/// left here, and the node takes its entry out of Redis's list once Redis is back: without
/// that, every member joining later would see a publisher that is gone.
#[tokio::test]
async fn a_leave_redis_missed_is_made_good_once_it_is_back() {
    if !RedisServer::available() {
        return;
    }
    let mut cluster = cluster_with_short_timeouts().await;
    let (alice, _) = stage_member(&cluster, 0, "alice").await;
    alice
        .join_topic("video", JoinTopicOptions::default())
        .await
        .unwrap();
    assert_eq!(video_list(&mut cluster).0, ["alice\n"]);

    cluster.redis().kill();
    alice.leave_topic("video").await.unwrap_err();
    // The leave never reached Redis: only the node's upkeep takes the entry out now.
    cluster.redis().restart();

    until_video_list(&mut cluster, "the entry taken out", |entries, _| {
        entries.is_empty()
    })
    .await;
}

/// A change of meta that Redis runs only after the node gave up on it (here Redis holds every
/// write for longer than the command timeout) is refused, and the node puts the old meta back
/// in Redis's list once the late change has run: the list must not keep a meta its publisher
/// was told was refused.
#[tokio::test]
async fn a_change_of_meta_that_ran_too_late_is_undone() {
    if !RedisServer::available() {
        return;
    }
    let mut cluster = cluster_with_short_timeouts().await;
    let (alice, _) = stage_member(&cluster, 0, "alice").await;
    alice.join_topic("video", meta("first")).await.unwrap();
    assert_eq!(
        video_list(&mut cluster),
        (vec!["alice\nfirst".to_owned()], "1".to_owned())
    );

    assert_eq!(
        redis_cli(&mut cluster, &["CLIENT", "PAUSE", "3000", "WRITE"]),
        "OK"
    );
    let refused = alice.join_topic("video", meta("second")).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::ChannelJoinTopicFailed, "{refused}");
    // A write of the test's own waits for the pause to end.
    assert_eq!(
        redis_cli(&mut cluster, &["SET", "rtm-test-probe", "1"]),
        "OK"
    );

    // The late change ran (version 2), then the repair (version 3 or more).
    let entries = until_video_list(&mut cluster, "the repair", |_, version| version >= 3).await;
    assert_eq!(entries, ["alice\nfirst"]);
}

/// A topic list the bus did not bring is not missed for good: once a node's pub/sub connection
/// is back after a loss, the node reads the lists of its stream channels again. Here a newer list
/// is written into Redis without the bus, then Redis closes every pub/sub connection.
#[tokio::test]
async fn a_node_reads_topic_lists_again_after_its_bus_was_lost() {
    if !RedisServer::available() {
        return;
    }
    let mut cluster = TestCluster::start(1).await;
    let (alice, _) = stage_member(&cluster, 0, "alice").await;
    alice
        .join_topic("video", JoinTopicOptions::default())
        .await
        .unwrap();
    let (_bob, mut bob_events) = stage_member(&cluster, 0, "bob").await;
    assert_eq!(
        topic_snapshot(&mut bob_events).await,
        [("video".to_owned(), vec!["alice".to_owned()])]
    );
    drop_video_list_quietly(&mut cluster);
    let killed = redis_cli(&mut cluster, &["CLIENT", "KILL", "TYPE", "pubsub"]);
    assert_ne!(killed, "0", "the node's pub/sub connection is closed");
    // The node's view (what a joining member is shown) follows the stored list once it has
    // reconnected and read it again.
    within(Duration::from_secs(10), "the list read again", async {
        for n in 0.. {
            let (carol, mut events) = stage_member(&cluster, 0, &format!("carol{n}")).await;
            if topic_snapshot(&mut events).await.is_empty() {
                break;
            }
            carol.leave().await.unwrap();
            // A retry poll: nothing tells the test when the node has read the lists.
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
}
