//! Locks across nodes: three servers sharing one `redis-server`; the holder, the waiter and a
//! listener on different nodes (`docs/architecture.md`, "Cluster"). Skipped where
//! `redis-server` is not installed, unless `RTM_REQUIRE_REDIS=1` (`scripts/test`).

use std::time::Duration;

use rtm_client::{
    AcquireLockOptions, ChannelType, ErrorCode, EventStream, LockEventType, MetadataItem,
    MetadataOptions, RtmClient, RtmEvent, SetLockOptions, SubscribeOptions,
};
use rtm_testkit::{RedisServer, TestCluster, expect_event, within};

const M: ChannelType = ChannelType::Message;

/// "KIND lock owner publisher" of the next lock event that is not a snapshot.
async fn next_lock(events: &mut EventStream) -> String {
    let e = expect_event(events, "a lock event", |e| match e {
        RtmEvent::Lock(l) if l.event_type != LockEventType::Snapshot => Some(l),
        _ => None,
    })
    .await;
    format!(
        "{:?} {} {} {}",
        e.event_type, e.lock_name, e.owner, e.publisher
    )
    .trim_end()
    .to_owned()
}

fn code<T: std::fmt::Debug>(r: Result<T, rtm_client::RtmError>) -> ErrorCode {
    r.expect_err("the call should fail").code
}

fn guarded() -> MetadataOptions {
    MetadataOptions {
        lock_name: "floor".into(),
        ..Default::default()
    }
}

fn item(key: &str, value: &str) -> MetadataItem {
    MetadataItem::new(key, value)
}

/// Starts an acquire with retry and checks that it waits.
async fn waiting(
    client: RtmClient,
) -> tokio::task::JoinHandle<Result<rtm_client::AcquireLockResponse, rtm_client::RtmError>> {
    let retry = AcquireLockOptions { retry: true };
    let mut acquire =
        Box::pin(async move { client.lock().acquire_lock("room", M, "floor", retry).await });
    std::future::poll_fn(|cx| {
        assert!(acquire.as_mut().poll(cx).is_pending(), "the lock is held");
        std::task::Poll::Ready(())
    })
    .await;
    tokio::spawn(acquire)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_waiter_on_another_node_gets_the_lock_and_guards_writes_with_it() {
    if !RedisServer::available() {
        return;
    }
    let cluster = TestCluster::start(3).await;
    let (alice, _a) = cluster.node(0).login("alice").await;
    let (bob, _b) = cluster.node(1).login("bob").await;
    let (carol, mut events) = cluster.node(2).login("carol").await;
    let with_lock = SubscribeOptions {
        with_lock: true,
        ..Default::default()
    };
    carol.subscribe("room", with_lock).await.unwrap();
    alice
        .lock()
        .set_lock("room", M, "floor", SetLockOptions::default())
        .await
        .unwrap();
    alice
        .lock()
        .acquire_lock("room", M, "floor", AcquireLockOptions::default())
        .await
        .unwrap();
    assert_eq!(next_lock(&mut events).await, "Set floor  alice");
    assert_eq!(next_lock(&mut events).await, "Acquired floor alice alice");
    // Held by alice: bob (node 1) waits, and cannot write under the lock.
    let bobs = waiting(bob.clone()).await;
    assert_eq!(
        code(
            bob.storage()
                .set_channel_metadata("room", M, vec![item("k", "b")], guarded())
                .await
        ),
        ErrorCode::StorageLockNotAcquired
    );
    alice
        .storage()
        .set_channel_metadata("room", M, vec![item("k", "a")], guarded())
        .await
        .unwrap();
    alice.lock().release_lock("room", M, "floor").await.unwrap();
    within(Duration::from_secs(20), "bob's acquire", bobs)
        .await
        .unwrap()
        .unwrap();
    assert_eq!(next_lock(&mut events).await, "Released floor  alice");
    assert_eq!(next_lock(&mut events).await, "Acquired floor bob bob");
    // Now bob writes under it, and alice no longer can.
    bob.storage()
        .set_channel_metadata("room", M, vec![item("k", "b")], guarded())
        .await
        .unwrap();
    assert_eq!(
        code(
            alice
                .storage()
                .set_channel_metadata("room", M, vec![item("k", "a2")], guarded())
                .await
        ),
        ErrorCode::StorageLockNotAcquired
    );
    let seen = alice.lock().get_locks("room", M).await.unwrap();
    assert_eq!(seen.lock_details[0].owner, "bob");
    // A second wait on node 0 ends when node 2 removes the lock.
    let alices = waiting(alice.clone()).await;
    carol.lock().remove_lock("room", M, "floor").await.unwrap();
    let gone = within(Duration::from_secs(20), "alice's acquire", alices)
        .await
        .unwrap();
    assert_eq!(code(gone), ErrorCode::LockNotExist);
    assert_eq!(next_lock(&mut events).await, "Removed floor  carol");
}

/// A holder that leaves keeps its lock for the ttl (10 s here); then a sweeper (any node's)
/// releases it to the waiter on another node, and the holder hears of it, as `EXPIRED`, when
/// it logs in again, on a third node.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_absent_holder_s_lock_passes_on_after_its_ttl_across_nodes() {
    if !RedisServer::available() {
        return;
    }
    let cluster = TestCluster::start(3).await;
    let (alice, _a) = cluster.node(0).login("alice").await;
    let (bob, _b) = cluster.node(1).login("bob").await;
    alice
        .lock()
        .set_lock("room", M, "floor", SetLockOptions { ttl: Some(10) })
        .await
        .unwrap();
    alice
        .lock()
        .acquire_lock("room", M, "floor", AcquireLockOptions::default())
        .await
        .unwrap();
    let bobs = waiting(bob.clone()).await;
    alice.logout().await.unwrap();
    drop(alice);
    // Still alice's for the ttl.
    let seen = bob.lock().get_locks("room", M).await.unwrap();
    assert_eq!(seen.lock_details[0].owner, "alice");
    within(Duration::from_secs(30), "the lock after the ttl", bobs)
        .await
        .unwrap()
        .unwrap();
    let seen = bob.lock().get_locks("room", M).await.unwrap();
    assert_eq!(seen.lock_details[0].owner, "bob");
    let (_alice, mut events) = cluster.node(2).login("alice").await;
    let expired = expect_event(&mut events, "the EXPIRED lock event", |e| match e {
        RtmEvent::Lock(l) if l.event_type == LockEventType::Expired => Some(l),
        _ => None,
    })
    .await;
    assert_eq!(
        (expired.channel_name.as_str(), expired.lock_name.as_str()),
        ("room", "floor")
    );
}
