//! End-to-end: channel and user metadata with revisions, storage events, limits, and
//! durability across a restart (`docs/protocol.md` §5.9). Locks are in `locks.rs`; a server
//! killed in the middle of a write burst is in `rtm-server/tests/durability.rs`.

use rtm_client::{
    AcquireLockOptions, ChannelType, ErrorCode, EventStream, GetUserMetadataOptions, JoinOptions,
    MetadataItem, MetadataOptions, RemoveChannelMetadataOptions, RemoveUserMetadataOptions,
    RtmClient, RtmEvent, SetLockOptions, SetOrUpdateUserMetadataOptions, StorageEvent,
    StorageEventType, StorageType, SubscribeOptions,
};
use rtm_proto::{MetadataOp, MetadataTarget, MetadataWrite, Request, Response};
use rtm_testkit::{RawSession, TestServer, expect_event};

const M: ChannelType = ChannelType::Message;

fn item(key: &str, value: &str) -> MetadataItem {
    MetadataItem::new(key, value)
}

fn at(key: &str, value: &str, revision: i64) -> MetadataItem {
    MetadataItem {
        revision,
        ..item(key, value)
    }
}

fn code<T: std::fmt::Debug>(r: Result<T, rtm_client::RtmError>) -> ErrorCode {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code,
    }
}

/// "key=value" for each item, in order.
fn pairs(items: &[rtm_client::StoredItem]) -> Vec<String> {
    items
        .iter()
        .map(|i| format!("{}={}", i.key, i.value))
        .collect()
}

async fn next_storage(events: &mut EventStream, what: &str) -> StorageEvent {
    expect_event(events, what, |e| match e {
        RtmEvent::Storage(s) => Some(s),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn channel_metadata_set_update_remove_with_revisions() {
    let server = TestServer::start().await;
    let (alice, _events) = server.login("alice").await;
    let storage = alice.storage();
    let set = storage
        .set_channel_metadata(
            "room",
            M,
            vec![item("topic", "rust"), item("size", "3")],
            MetadataOptions::default(),
        )
        .await
        .unwrap();
    assert_eq!(set.total_count, 2);
    assert!(set.major_revision > 0);
    let got = storage.get_channel_metadata("room", M).await.unwrap();
    assert_eq!(pairs(&got.metadata), ["topic=rust", "size=3"]);
    assert_eq!(got.major_revision, set.major_revision);
    let size_rev = got.metadata[1].revision;

    // Update: only existing keys, revision checked.
    let updated = storage
        .update_channel_metadata(
            "room",
            M,
            vec![at("size", "4", size_rev)],
            Default::default(),
        )
        .await
        .unwrap();
    assert!(updated.major_revision > set.major_revision);
    let stale = storage
        .update_channel_metadata(
            "room",
            M,
            vec![at("size", "5", size_rev)],
            Default::default(),
        )
        .await;
    assert_eq!(code(stale), ErrorCode::StorageOutdatedRevision);
    let missing = storage
        .update_channel_metadata("room", M, vec![item("nope", "1")], Default::default())
        .await;
    assert_eq!(code(missing), ErrorCode::StorageOutdatedRevision);
    // Set with revision 0: create only.
    let exists = storage
        .set_channel_metadata("room", M, vec![at("topic", "go", 0)], Default::default())
        .await;
    assert_eq!(code(exists), ErrorCode::StorageOutdatedRevision);
    // The major revision: a stale one fails, the current one passes.
    let stale_major = MetadataOptions {
        major_revision: set.major_revision,
        ..Default::default()
    };
    let r = storage
        .set_channel_metadata("room", M, vec![item("x", "1")], stale_major)
        .await;
    assert_eq!(code(r), ErrorCode::StorageOutdatedRevision);
    let current_major = MetadataOptions {
        major_revision: updated.major_revision,
        add_timestamp: true,
        add_user_id: true,
        ..Default::default()
    };
    storage
        .set_channel_metadata("room", M, vec![item("x", "1")], current_major)
        .await
        .unwrap();
    let got = storage.get_channel_metadata("room", M).await.unwrap();
    assert_eq!(pairs(&got.metadata), ["topic=rust", "size=4", "x=1"]);
    let x = &got.metadata[2];
    assert_eq!(x.author_user_id, "alice");
    assert!(x.updated > 1_600_000_000_000, "{x:?}");
    assert_eq!(
        got.metadata[0].author_user_id, "",
        "recorded only when asked"
    );

    // Remove items; a missing one fails the whole call.
    let r = storage
        .remove_channel_metadata(
            "room",
            M,
            RemoveChannelMetadataOptions {
                data: vec![item("x", ""), item("nope", "")],
                ..Default::default()
            },
        )
        .await;
    assert_eq!(code(r), ErrorCode::StorageOutdatedRevision);
    let removed = storage
        .remove_channel_metadata(
            "room",
            M,
            RemoveChannelMetadataOptions {
                data: vec![item("x", "")],
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(removed.total_count, 2);
    // The whole set; then there is none, and removing it again fails.
    storage
        .remove_channel_metadata("room", M, Default::default())
        .await
        .unwrap();
    let gone = storage.get_channel_metadata("room", M).await.unwrap();
    assert_eq!((gone.total_count, gone.major_revision), (0, 0));
    let again = storage
        .remove_channel_metadata("room", M, Default::default())
        .await;
    assert_eq!(code(again), ErrorCode::StorageOutdatedRevision);
    // The stream channel of the same name has its own set.
    storage
        .set_channel_metadata(
            "room",
            ChannelType::Stream,
            vec![item("s", "1")],
            Default::default(),
        )
        .await
        .unwrap();
    assert_eq!(
        storage
            .get_channel_metadata("room", M)
            .await
            .unwrap()
            .total_count,
        0
    );
}

#[tokio::test]
async fn user_metadata_of_self_and_of_others() {
    let server = TestServer::start().await;
    let (alice, _a) = server.login("alice").await;
    let (bob, _b) = server.login("bob").await;
    let mine = alice
        .storage()
        .set_user_metadata(vec![item("mood", "happy")], Default::default())
        .await
        .unwrap();
    assert_eq!((mine.user_id.as_str(), mine.total_count), ("alice", 1));
    let seen = bob
        .storage()
        .get_user_metadata(GetUserMetadataOptions {
            user_id: Some("alice".into()),
        })
        .await
        .unwrap();
    assert_eq!(pairs(&seen.metadata), ["mood=happy"]);
    // Bob writes Alice's set (the reference leaves permissions to the application).
    bob.storage()
        .update_user_metadata(
            vec![item("mood", "busy")],
            SetOrUpdateUserMetadataOptions {
                user_id: Some("alice".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let own = alice
        .storage()
        .get_user_metadata(Default::default())
        .await
        .unwrap();
    assert_eq!(pairs(&own.metadata), ["mood=busy"]);
    alice
        .storage()
        .remove_user_metadata(RemoveUserMetadataOptions::default())
        .await
        .unwrap();
    let empty = bob
        .storage()
        .get_user_metadata(GetUserMetadataOptions {
            user_id: Some("alice".into()),
        })
        .await
        .unwrap();
    assert_eq!(empty.total_count, 0);
}

/// Two clients write with the same expected revision at the same time: exactly one wins, every
/// time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_writers_with_the_same_revision_exactly_one_wins() {
    let server = TestServer::start().await;
    let (alice, _a) = server.login("alice").await;
    let (bob, _b) = server.login("bob").await;
    alice
        .storage()
        .set_channel_metadata("race", M, vec![item("n", "0")], Default::default())
        .await
        .unwrap();
    for round in 0..25 {
        let current = alice
            .storage()
            .get_channel_metadata("race", M)
            .await
            .unwrap();
        let revision = current.metadata[0].revision;
        let write = |client: &RtmClient, who: &str| {
            let storage = client.storage();
            let value = format!("{who}{round}");
            async move {
                storage
                    .update_channel_metadata(
                        "race",
                        M,
                        vec![at("n", &value, revision)],
                        Default::default(),
                    )
                    .await
            }
        };
        let (a, b) = tokio::join!(write(&alice, "a"), write(&bob, "b"));
        let wins = [a.is_ok(), b.is_ok()];
        assert_eq!(
            wins.iter().filter(|w| **w).count(),
            1,
            "round {round}: {a:?} {b:?}"
        );
        let loser = if a.is_ok() { b } else { a };
        assert_eq!(code(loser), ErrorCode::StorageOutdatedRevision);
        // The same with the major revision, on a set that does not exist yet (0: create only).
        let set = format!("new{round}");
        let create = |client: &RtmClient| {
            let storage = client.storage();
            let set = set.clone();
            async move {
                let only_new = MetadataOptions {
                    major_revision: 0,
                    ..Default::default()
                };
                storage
                    .set_channel_metadata(&set, M, vec![item("k", "v")], only_new)
                    .await
            }
        };
        let (a, b) = tokio::join!(create(&alice), create(&bob));
        assert_eq!(
            u8::from(a.is_ok()) + u8::from(b.is_ok()),
            1,
            "round {round}"
        );
    }
}

#[tokio::test]
async fn a_lock_guards_channel_metadata_writes() {
    let server = TestServer::start().await;
    let (alice, _a) = server.login("alice").await;
    let (bob, _b) = server.login("bob").await;
    let guarded = |lock: &str| MetadataOptions {
        lock_name: lock.into(),
        ..Default::default()
    };
    alice
        .lock()
        .set_lock("room", M, "pen", SetLockOptions::default())
        .await
        .unwrap();
    // Nobody holds it yet.
    let r = alice
        .storage()
        .set_channel_metadata("room", M, vec![item("k", "1")], guarded("pen"))
        .await;
    assert_eq!(code(r), ErrorCode::StorageLockNotAcquired);
    alice
        .lock()
        .acquire_lock("room", M, "pen", AcquireLockOptions::default())
        .await
        .unwrap();
    alice
        .storage()
        .set_channel_metadata("room", M, vec![item("k", "1")], guarded("pen"))
        .await
        .unwrap();
    for (who, lock) in [
        (&bob, "pen"),
        (&bob, "no such lock"),
        (&alice, "no such lock"),
    ] {
        let r = who
            .storage()
            .set_channel_metadata("room", M, vec![item("k", "2")], guarded(lock))
            .await;
        assert_eq!(code(r), ErrorCode::StorageLockNotAcquired, "{lock}");
    }
    // The lock of another channel (or of the stream channel of the same name) is another lock.
    let r = alice
        .storage()
        .set_channel_metadata(
            "room",
            ChannelType::Stream,
            vec![item("k", "2")],
            guarded("pen"),
        )
        .await;
    assert_eq!(code(r), ErrorCode::StorageLockNotAcquired);
    alice.lock().release_lock("room", M, "pen").await.unwrap();
    let r = alice
        .storage()
        .remove_channel_metadata(
            "room",
            M,
            RemoveChannelMetadataOptions {
                options: guarded("pen"),
                ..Default::default()
            },
        )
        .await;
    assert_eq!(code(r), ErrorCode::StorageLockNotAcquired);
    let kept = bob.storage().get_channel_metadata("room", M).await.unwrap();
    assert_eq!(pairs(&kept.metadata), ["k=1"]);
}

#[tokio::test]
async fn storage_events_reach_listeners_with_a_snapshot_first() {
    let server = TestServer::start().await;
    let (alice, _a) = server.login("alice").await;
    alice
        .storage()
        .set_channel_metadata("room", M, vec![item("before", "1")], Default::default())
        .await
        .unwrap();
    let (bob, mut events) = server.login("bob").await;
    // Without with_metadata: nothing.
    bob.subscribe("plain", SubscribeOptions::default())
        .await
        .unwrap();
    let with_metadata = SubscribeOptions {
        with_metadata: true,
        ..Default::default()
    };
    bob.subscribe("room", with_metadata).await.unwrap();
    let snapshot = next_storage(&mut events, "the room's snapshot").await;
    assert_eq!(snapshot.event_type, StorageEventType::Snapshot);
    assert_eq!(snapshot.storage_type, StorageType::Channel);
    assert_eq!(
        (snapshot.channel_name.as_str(), snapshot.channel_type),
        ("room", M)
    );
    assert_eq!(pairs(&snapshot.data.items), ["before=1"]);
    for (channel, key) in [("plain", "ignored"), ("room", "after")] {
        alice
            .storage()
            .set_channel_metadata(channel, M, vec![item(key, "2")], Default::default())
            .await
            .unwrap();
    }
    let update = next_storage(&mut events, "the room's update").await;
    assert_eq!(update.event_type, StorageEventType::Update);
    assert_eq!(
        update.channel_name, "room",
        "nothing from the channel without metadata"
    );
    assert_eq!(update.publisher, "alice");
    assert_eq!(pairs(&update.data.items), ["before=1", "after=2"]);
    let removed = alice
        .storage()
        .remove_channel_metadata("room", M, Default::default())
        .await
        .unwrap();
    assert_eq!(removed.total_count, 0);
    let update = next_storage(&mut events, "the removal").await;
    assert!(update.data.items.is_empty());
    assert_eq!(update.data.major_revision, 0);

    // A stream channel joined with metadata.
    let stream = bob.create_stream_channel("stage").unwrap();
    stream
        .join(JoinOptions {
            with_metadata: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let snapshot = next_storage(&mut events, "the stage's snapshot").await;
    assert_eq!(
        (snapshot.channel_type, snapshot.event_type),
        (ChannelType::Stream, StorageEventType::Snapshot)
    );
    alice
        .storage()
        .set_channel_metadata(
            "stage",
            ChannelType::Stream,
            vec![item("k", "v")],
            Default::default(),
        )
        .await
        .unwrap();
    let update = next_storage(&mut events, "the stage's update").await;
    assert_eq!(
        (update.channel_name.as_str(), update.data.items.len()),
        ("stage", 1)
    );

    // A user's metadata, after subscribe_user_metadata.
    bob.storage()
        .subscribe_user_metadata("alice")
        .await
        .unwrap();
    let snapshot = next_storage(&mut events, "alice's snapshot").await;
    assert_eq!(
        (snapshot.storage_type, snapshot.event_type),
        (StorageType::User, StorageEventType::Snapshot)
    );
    assert_eq!(snapshot.channel_name, "alice");
    alice
        .storage()
        .set_user_metadata(vec![item("mood", "ok")], Default::default())
        .await
        .unwrap();
    let update = next_storage(&mut events, "alice's update").await;
    assert_eq!(
        (update.storage_type, update.publisher.as_str()),
        (StorageType::User, "alice")
    );
    assert_eq!(pairs(&update.data.items), ["mood=ok"]);
    // Unsubscribed (and unsubscribed from the room): the next event is the stage's.
    bob.storage()
        .unsubscribe_user_metadata("alice")
        .await
        .unwrap();
    bob.unsubscribe("room").await.unwrap();
    alice
        .storage()
        .set_user_metadata(vec![item("mood", "bad")], Default::default())
        .await
        .unwrap();
    alice
        .storage()
        .set_channel_metadata("room", M, vec![item("gone", "1")], Default::default())
        .await
        .unwrap();
    alice
        .storage()
        .set_channel_metadata(
            "stage",
            ChannelType::Stream,
            vec![item("fence", "1")],
            Default::default(),
        )
        .await
        .unwrap();
    let next = next_storage(&mut events, "the fence").await;
    assert_eq!(next.channel_name, "stage");
    let r = bob.storage().unsubscribe_user_metadata("alice").await;
    assert_eq!(code(r), ErrorCode::StorageNotSubscribe);
}

/// What the server refuses, checked on a raw session (the client checks the same before
/// sending).
#[tokio::test]
async fn the_server_enforces_every_metadata_limit() {
    let mut config = TestServer::config();
    config.limits.storage_rate = 5;
    let server = TestServer::start_with(config).await;
    let mut raw = RawSession::login(&server, "raw").await;
    let write = |op, items: Vec<MetadataItem>| MetadataWrite {
        op,
        target: MetadataTarget::Channel {
            channel_type: M,
            channel: "room".into(),
        },
        items,
        options: MetadataOptions::default(),
    };
    let big = "v".repeat(9 * 1024);
    let cases = [
        (
            write(MetadataOp::Set, vec![item(&"k".repeat(33), "")]),
            ErrorCode::StorageKeyLengthOverflow,
        ),
        (
            write(MetadataOp::Set, vec![item("", "")]),
            ErrorCode::StorageInvalidKey,
        ),
        (
            write(MetadataOp::Set, vec![item("k", &"v".repeat(16 * 1024 + 1))]),
            ErrorCode::StorageValueLengthOverflow,
        ),
        (
            write(MetadataOp::Set, vec![at("k", "", -7)]),
            ErrorCode::StorageInvalidRevision,
        ),
        (
            write(MetadataOp::Set, vec![item("k", ""), item("k", "")]),
            ErrorCode::StorageDuplicateKey,
        ),
        (
            write(MetadataOp::Update, vec![]),
            ErrorCode::StorageInvalidMetadataItem,
        ),
        (
            write(MetadataOp::Set, vec![item("a", &big), item("b", &big)]),
            ErrorCode::StorageMetadataLengthOverflow,
        ),
        (
            write(
                MetadataOp::Set,
                (0..129).map(|i| item(&i.to_string(), "")).collect(),
            ),
            ErrorCode::StorageMetadataItemExceedLimitation,
        ),
    ];
    let mut id = 10;
    for (w, expected) in cases {
        id += 1;
        let err = raw
            .request(id, Request::WriteMetadata(w))
            .await
            .expect_err("refused");
        assert_eq!(err.code, expected, "{}", err.reason);
    }
    let mut user_channel = write(MetadataOp::Set, vec![item("k", "")]);
    user_channel.target = MetadataTarget::Channel {
        channel_type: ChannelType::User,
        channel: "u".into(),
    };
    let err = raw
        .request(30, Request::WriteMetadata(user_channel))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidChannelType);
    let mut user_locked = write(MetadataOp::Set, vec![item("k", "")]);
    user_locked.target = MetadataTarget::User {
        user_id: "raw".into(),
    };
    user_locked.options.lock_name = "pen".into();
    let err = raw
        .request(31, Request::WriteMetadata(user_locked))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::StorageInvalidLockName);
    // Invalid requests did not use up the allowance (5 per second, bursts of 10); valid ones
    // do, and beyond the burst the server refuses.
    let mut refused = 0;
    for i in 0..12 {
        let get = Request::GetMetadata {
            target: MetadataTarget::User {
                user_id: "raw".into(),
            },
        };
        match raw.request(40 + i, get).await {
            Ok(Response::Metadata { .. }) => {}
            Err(e) => {
                assert_eq!(e.code, ErrorCode::OperationRateExceedLimitation);
                refused += 1;
            }
            Ok(other) => panic!("{other:?}"),
        }
    }
    assert!((1..=3).contains(&refused), "{refused} of 12 refused");
}

#[tokio::test]
async fn user_metadata_subscriptions_are_bounded() {
    let server = TestServer::start().await;
    let (alice, _a) = server.login("alice").await;
    for i in 0..100 {
        alice
            .storage()
            .subscribe_user_metadata(&format!("user{i}"))
            .await
            .unwrap();
    }
    // Again: no change.
    alice
        .storage()
        .subscribe_user_metadata("user7")
        .await
        .unwrap();
    let r = alice.storage().subscribe_user_metadata("one more").await;
    assert_eq!(code(r), ErrorCode::StorageSubscribeUserExceedLimitation);
}

/// Every acknowledged write is there after the server restarts on the same data directory,
/// and revisions keep growing.
#[tokio::test]
async fn metadata_survives_a_restart() {
    let server = TestServer::start().await;
    let mut written = Vec::new();
    let last_major = {
        let (alice, _a) = server.login("alice").await;
        let storage = alice.storage();
        let mut last = 0;
        for i in 0..20 {
            let channel = format!("room{}", i % 4);
            let r = storage
                .set_channel_metadata(
                    &channel,
                    M,
                    vec![item(&format!("k{i}"), &format!("v{i}"))],
                    Default::default(),
                )
                .await
                .unwrap();
            written.push((channel, format!("k{i}=v{i}")));
            last = r.major_revision;
        }
        storage
            .set_user_metadata(vec![item("mood", "saved")], Default::default())
            .await
            .unwrap();
        last
    };
    let server = server.restart().await;
    let (alice, _a) = server.login("alice").await;
    for (channel, pair) in &written {
        let got = alice
            .storage()
            .get_channel_metadata(channel, M)
            .await
            .unwrap();
        assert!(
            pairs(&got.metadata).contains(pair),
            "{channel}: {pair} missing"
        );
    }
    let mine = alice
        .storage()
        .get_user_metadata(Default::default())
        .await
        .unwrap();
    assert_eq!(pairs(&mine.metadata), ["mood=saved"]);
    let next = alice
        .storage()
        .set_channel_metadata(
            "room0",
            M,
            vec![item("after", "restart")],
            Default::default(),
        )
        .await
        .unwrap();
    assert!(next.major_revision > last_major);
}
