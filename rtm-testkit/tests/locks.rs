//! End-to-end: locks, their events, waiting acquires, and their lifetime when the holder's
//! link is cut (`docs/protocol.md` §5.10).

use std::sync::atomic::Ordering;
use std::time::Duration;

use rtm_client::{
    AcquireLockOptions, ChannelType, ErrorCode, EventStream, JoinOptions, LinkState, LockEvent,
    LockEventType, LoginOptions, RtmClient, RtmEvent, SetLockOptions, SubscribeOptions,
};
use rtm_proto::{LockOp, LockRequest, Request};
use rtm_testkit::{
    LossyLink, RawSession, TEST_APP_ID, TestServer, expect_event, wait_until, within,
};

const M: ChannelType = ChannelType::Message;

/// Long enough for a cut link to be noticed (heartbeat 5 s + 10 s) and retried.
const LINK_DEADLINE: Duration = Duration::from_secs(45);

fn code<T: std::fmt::Debug>(r: Result<T, rtm_client::RtmError>) -> ErrorCode {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code,
    }
}

async fn next_lock(events: &mut EventStream, what: &str) -> LockEvent {
    expect_event(events, what, |e| match e {
        RtmEvent::Lock(l) => Some(l),
        _ => None,
    })
    .await
}

/// "KIND lock owner publisher" of the next lock event.
async fn describe_next(events: &mut EventStream) -> String {
    let e = next_lock(events, "a lock event").await;
    format!(
        "{:?} {} {} {}",
        e.event_type, e.lock_name, e.owner, e.publisher
    )
    .trim_end()
    .to_owned()
}

fn with_lock() -> SubscribeOptions {
    SubscribeOptions {
        with_lock: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn every_lock_call_and_its_errors() {
    let server = TestServer::start().await;
    let (alice, _a) = server.login("alice").await;
    let (bob, _b) = server.login("bob").await;
    let (a, b) = (alice.lock(), bob.lock());
    let ttl = |ttl| SetLockOptions { ttl: Some(ttl) };
    a.set_lock("room", M, "pen", SetLockOptions::default())
        .await
        .unwrap();
    a.set_lock("room", M, "short", ttl(3)).await.unwrap();
    a.set_lock("room", M, "long", ttl(1000)).await.unwrap();
    assert_eq!(
        code(b.set_lock("room", M, "pen", ttl(30)).await),
        ErrorCode::LockAlreadyExist
    );
    let locks = b.get_locks("room", M).await.unwrap();
    let listed: Vec<_> = locks
        .lock_details
        .iter()
        .map(|l| format!("{}:{}:{}", l.lock_name, l.ttl, l.owner))
        .collect();
    assert_eq!(listed, ["pen:10:", "short:10:", "long:300:"]);
    assert_eq!(locks.total_locks, 3);

    let no_retry = AcquireLockOptions::default();
    a.acquire_lock("room", M, "pen", no_retry).await.unwrap();
    // Again: already held by this user.
    a.acquire_lock("room", M, "pen", no_retry).await.unwrap();
    assert_eq!(
        code(b.acquire_lock("room", M, "pen", no_retry).await),
        ErrorCode::LockAcquireFailed
    );
    assert_eq!(
        code(b.release_lock("room", M, "pen").await),
        ErrorCode::LockNotAcquired
    );
    assert_eq!(
        code(b.revoke_lock("room", M, "pen", "carol").await),
        ErrorCode::LockNotAcquired
    );
    b.revoke_lock("room", M, "pen", "alice").await.unwrap();
    assert_eq!(
        b.get_locks("room", M).await.unwrap().lock_details[0].owner,
        ""
    );
    b.acquire_lock("room", M, "pen", no_retry).await.unwrap();
    assert_eq!(
        b.get_locks("room", M).await.unwrap().lock_details[0].owner,
        "bob"
    );
    // Anyone may remove a lock, held or not.
    a.remove_lock("room", M, "pen").await.unwrap();
    for r in [
        a.remove_lock("room", M, "pen").await,
        a.acquire_lock("room", M, "pen", no_retry).await,
        a.release_lock("room", M, "pen").await,
    ] {
        assert_eq!(code(r), ErrorCode::LockNotExist);
    }
    // Locks are per channel and channel type.
    assert!(
        a.get_locks("room", ChannelType::Stream)
            .await
            .unwrap()
            .lock_details
            .is_empty()
    );
    assert_eq!(
        code(a.acquire_lock("hall", M, "short", no_retry).await),
        ErrorCode::LockNotExist
    );
    // At most 32 per channel.
    for i in 2..32 {
        a.set_lock("room", M, &format!("l{i}"), SetLockOptions::default())
            .await
            .unwrap();
    }
    assert_eq!(
        code(
            a.set_lock("room", M, "one more", SetLockOptions::default())
                .await
        ),
        ErrorCode::LockOperationFailed
    );
    assert_eq!(
        code(
            a.set_lock("room", M, &"x".repeat(65), SetLockOptions::default())
                .await
        ),
        ErrorCode::LockInvalidName
    );
}

/// The server's own checks, on a raw session: names, channel types, the call rate.
#[tokio::test]
async fn the_server_refuses_bad_lock_calls() {
    let mut config = TestServer::config();
    config.limits.lock_rate = 5;
    let server = TestServer::start_with(config).await;
    let mut raw = RawSession::login(&server, "raw").await;
    let call = |channel_type, lock_name: &str, op| {
        Request::Lock(LockRequest {
            channel_type,
            channel: "room".into(),
            lock_name: lock_name.into(),
            op,
        })
    };
    let cases = [
        (call(M, "", LockOp::Remove), ErrorCode::LockInvalidName),
        (
            call(M, "tab\there", LockOp::Remove),
            ErrorCode::LockInvalidName,
        ),
        (
            call(ChannelType::User, "pen", LockOp::Remove),
            ErrorCode::InvalidChannelType,
        ),
        (
            call(
                M,
                "pen",
                LockOp::Revoke {
                    owner: String::new(),
                },
            ),
            ErrorCode::InvalidUserId,
        ),
    ];
    for (i, (request, expected)) in cases.into_iter().enumerate() {
        let err = raw.request(10 + i as u32, request).await.unwrap_err();
        assert_eq!(err.code, expected, "{}", err.reason);
    }
    let mut refused = 0;
    for i in 0..12 {
        match raw.request(20 + i, call(M, "pen", LockOp::Release)).await {
            Err(e) if e.code == ErrorCode::OperationRateExceedLimitation => refused += 1,
            Err(e) => assert_eq!(e.code, ErrorCode::LockNotExist),
            Ok(other) => panic!("{other:?}"),
        }
    }
    assert!((1..=3).contains(&refused), "{refused} of 12 refused");
}

#[tokio::test]
async fn lock_events_follow_a_snapshot() {
    let server = TestServer::start().await;
    let (alice, _a) = server.login("alice").await;
    alice
        .lock()
        .set_lock("room", M, "old", SetLockOptions::default())
        .await
        .unwrap();
    alice
        .lock()
        .acquire_lock("room", M, "old", AcquireLockOptions::default())
        .await
        .unwrap();
    let (carol, mut events) = server.login("carol").await;
    carol.subscribe("room", with_lock()).await.unwrap();
    let snapshot = next_lock(&mut events, "the snapshot").await;
    assert_eq!(snapshot.event_type, LockEventType::Snapshot);
    let held: Vec<_> = snapshot
        .snapshot
        .iter()
        .map(|l| format!("{}:{}", l.lock_name, l.owner))
        .collect();
    assert_eq!(held, ["old:alice"]);
    let l = alice.lock();
    l.set_lock("room", M, "pen", SetLockOptions::default())
        .await
        .unwrap();
    l.acquire_lock("room", M, "pen", AcquireLockOptions::default())
        .await
        .unwrap();
    l.release_lock("room", M, "pen").await.unwrap();
    carol
        .lock()
        .revoke_lock("room", M, "old", "alice")
        .await
        .unwrap();
    l.remove_lock("room", M, "pen").await.unwrap();
    let mut seen = Vec::new();
    for _ in 0..5 {
        seen.push(describe_next(&mut events).await);
    }
    assert_eq!(
        seen,
        [
            "Set pen  alice",
            "Acquired pen alice alice",
            "Released pen  alice",
            "Released old  carol",
            "Removed pen  alice",
        ]
    );
    // A stream channel joined with locks gets its snapshot too.
    alice
        .lock()
        .set_lock(
            "stage",
            ChannelType::Stream,
            "mic",
            SetLockOptions::default(),
        )
        .await
        .unwrap();
    let stream = carol.create_stream_channel("stage").unwrap();
    stream
        .join(JoinOptions {
            with_lock: true,
            ..Default::default()
        })
        .await
        .unwrap();
    let snapshot = next_lock(&mut events, "the stage's snapshot").await;
    assert_eq!(
        (
            snapshot.channel_type,
            snapshot.channel_name.as_str(),
            snapshot.snapshot.len()
        ),
        (ChannelType::Stream, "stage", 1)
    );
}

/// `acquire_lock` with retry waits for the holder to release, then holds the lock; a removed
/// lock ends the wait with an error.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn acquire_with_retry_waits_for_the_release() {
    let server = TestServer::start().await;
    let (alice, _a) = server.login("alice").await;
    let (bob, _b) = server.login("bob").await;
    let (carol, mut events) = server.login("carol").await;
    carol.subscribe("room", with_lock()).await.unwrap();
    next_lock(&mut events, "the snapshot").await;
    let retry = AcquireLockOptions { retry: true };
    for name in ["pen", "mic"] {
        alice
            .lock()
            .set_lock("room", M, name, SetLockOptions::default())
            .await
            .unwrap();
        alice
            .lock()
            .acquire_lock("room", M, name, AcquireLockOptions::default())
            .await
            .unwrap();
    }
    let waiting = started(bob.clone(), "pen").await;
    let doomed = started(bob.clone(), "mic").await;
    // Bob's later call is answered after his acquires were taken in: they are waiting now.
    assert!(!waiting.is_finished() && !doomed.is_finished());
    let bob_sees = bob.lock().get_locks("room", M).await.unwrap();
    assert!(bob_sees.lock_details.iter().all(|l| l.owner == "alice"));
    // A second wait for the same lock by the same session is refused.
    assert_eq!(
        code(bob.lock().acquire_lock("room", M, "pen", retry).await),
        ErrorCode::LockOperationPerforming
    );
    alice.lock().release_lock("room", M, "pen").await.unwrap();
    within(Duration::from_secs(20), "bob's acquire", waiting)
        .await
        .unwrap()
        .unwrap();
    let locks = carol.lock().get_locks("room", M).await.unwrap();
    assert_eq!(locks.lock_details[0].owner, "bob");
    alice.lock().remove_lock("room", M, "mic").await.unwrap();
    let gone = within(Duration::from_secs(20), "the removed lock", doomed)
        .await
        .unwrap();
    assert_eq!(code(gone), ErrorCode::LockNotExist);
    let mut seen = Vec::new();
    for _ in 0..6 {
        seen.push(describe_next(&mut events).await);
    }
    assert_eq!(
        &seen[4..],
        ["Released pen  alice", "Acquired pen bob bob"],
        "{seen:?}"
    );
}

/// A holder whose link is cut keeps its lock while it is away less than the ttl (it resumes
/// holding it, and nobody sees a change); away longer, the lock is released to the others,
/// and the holder hears `EXPIRED` when it comes back.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_outlives_a_short_absence_and_expires_after_its_ttl() {
    let server = TestServer::start().await;
    let link = LossyLink::start(server.addr()).await.unwrap();
    let alice = RtmClient::new(TEST_APP_ID, "alice", server.client_config_via(&link)).unwrap();
    let mut alice_events = alice.events();
    alice.login(LoginOptions::default()).await.unwrap();
    link_reaches(&mut alice_events, LinkState::Connected).await;
    let (carol, mut events) = server.login("carol").await;
    carol.subscribe("room", with_lock()).await.unwrap();
    next_lock(&mut events, "the snapshot").await;
    let metrics = server.metrics();
    let long = SetLockOptions { ttl: Some(120) };
    let short = SetLockOptions { ttl: Some(10) };
    let l = alice.lock();
    l.set_lock("room", M, "floor", long).await.unwrap();
    l.set_lock("room", M, "stage", short).await.unwrap();
    l.acquire_lock("room", M, "floor", AcquireLockOptions::default())
        .await
        .unwrap();
    for _ in 0..3 {
        describe_next(&mut events).await;
    }

    // Away for less than the ttl: the server parks the session, the client resumes it.
    link.cut();
    wait_until(LINK_DEADLINE, "the server to park alice", || {
        metrics.sessions_parked.load(Ordering::Relaxed) == 1
    })
    .await;
    link.restore();
    let back = link_reaches(&mut alice_events, LinkState::Connected).await;
    assert!(back.is_resumed, "{back:?}");
    let locks = carol.lock().get_locks("room", M).await.unwrap();
    assert_eq!(
        locks.lock_details[0].owner, "alice",
        "kept over the absence"
    );
    // Nothing happened to it meanwhile: the next event is the stage's.
    l.acquire_lock("room", M, "stage", AcquireLockOptions::default())
        .await
        .unwrap();
    assert_eq!(
        describe_next(&mut events).await,
        "Acquired stage alice alice"
    );

    // Away for longer than the stage's ttl (10 s): released to the others.
    link.cut();
    wait_until(LINK_DEADLINE, "the server to park alice again", || {
        metrics.sessions_parked.load(Ordering::Relaxed) == 1
    })
    .await;
    assert_eq!(
        describe_next(&mut events).await,
        "Released stage",
        "after the ttl"
    );
    carol
        .lock()
        .acquire_lock("room", M, "stage", AcquireLockOptions::default())
        .await
        .unwrap();
    link.restore();
    let expired = within(LINK_DEADLINE, "alice's EXPIRED", async {
        loop {
            match alice_events.recv().await {
                Some(RtmEvent::Lock(e)) if e.event_type == LockEventType::Expired => break e,
                Some(_) => {}
                None => panic!("alice's events ended"),
            }
        }
    })
    .await;
    assert_eq!(
        (expired.lock_name.as_str(), expired.channel_name.as_str()),
        ("stage", "room")
    );
    // The floor (ttl 120 s) is still hers.
    let locks = carol.lock().get_locks("room", M).await.unwrap();
    let owners: Vec<_> = locks
        .lock_details
        .iter()
        .map(|l| l.owner.as_str())
        .collect();
    assert_eq!(owners, ["alice", "carol"]);
}

/// Starts `client`'s acquire with retry of `lock` in "room": sends it (the first poll queues
/// the request), then leaves it running.
async fn started(
    client: RtmClient,
    lock: &'static str,
) -> tokio::task::JoinHandle<Result<rtm_client::AcquireLockResponse, rtm_client::RtmError>> {
    let retry = AcquireLockOptions { retry: true };
    let mut acquire =
        Box::pin(async move { client.lock().acquire_lock("room", M, lock, retry).await });
    std::future::poll_fn(|cx| {
        assert!(acquire.as_mut().poll(cx).is_pending(), "the lock is held");
        std::task::Poll::Ready(())
    })
    .await;
    tokio::spawn(acquire)
}

async fn link_reaches(events: &mut EventStream, state: LinkState) -> rtm_client::LinkStateEvent {
    within(LINK_DEADLINE, &format!("the {state:?} link state"), async {
        loop {
            match events.recv().await {
                Some(RtmEvent::LinkState(s)) if s.current_state == state => break s,
                Some(_) => {}
                None => panic!("the event stream ended"),
            }
        }
    })
    .await
}
