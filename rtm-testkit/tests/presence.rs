//! End-to-end: presence events in message and stream channels (`docs/protocol.md` §5.8).
//! Timeouts against resumes are in `resume.rs`, with the relay.

use rtm_client::{
    ChannelType, ErrorCode, EventStream, JoinOptions, PresenceEvent, PresenceEventType,
    PublishOptions, RemoveStateOptions, RtmClient, RtmEvent, StateDetail, SubscribeOptions,
    WhoNowOptions,
};
use rtm_testkit::{RawSession, TestServer, expect_event};

/// The next presence event of `channel`.
async fn next_presence(events: &mut EventStream, channel: &str) -> PresenceEvent {
    expect_event(
        events,
        &format!("a presence event in {channel}"),
        |e| match e {
            RtmEvent::Presence(p) if p.channel_name == channel => Some(p),
            _ => None,
        },
    )
    .await
}

/// "KIND publisher", or for a snapshot "SNAPSHOT [users]".
fn describe(p: &PresenceEvent) -> String {
    match p.event_type {
        PresenceEventType::Snapshot => {
            let users: Vec<&str> = p.snapshot.iter().map(|u| u.user_id.as_str()).collect();
            format!("Snapshot {users:?}")
        }
        kind => format!("{kind:?} {}", p.publisher),
    }
}

async fn subscribe(
    server: &TestServer,
    user: &str,
    options: SubscribeOptions,
) -> (RtmClient, EventStream) {
    let (client, events) = server.login(user).await;
    client.subscribe("room", options).await.unwrap();
    (client, events)
}

fn quiet() -> SubscribeOptions {
    SubscribeOptions {
        be_quiet: true,
        ..Default::default()
    }
}

#[tokio::test]
async fn message_channel_join_leave_snapshot_and_quiet_users() {
    let server = TestServer::start().await;
    let (a, mut a_events) = subscribe(&server, "A", SubscribeOptions::default()).await;
    let first = next_presence(&mut a_events, "room").await;
    assert_eq!(describe(&first), "Snapshot [\"A\"]", "itself included");
    assert_eq!(first.channel_type, ChannelType::Message);
    assert_eq!(first.publisher, "");

    let (b, mut b_events) = subscribe(&server, "B", SubscribeOptions::default()).await;
    let joined = next_presence(&mut a_events, "room").await;
    assert_eq!(describe(&joined), "RemoteJoin B");
    assert!(joined.timestamp > 0);
    assert_eq!(
        describe(&next_presence(&mut b_events, "room").await),
        "Snapshot [\"A\", \"B\"]"
    );

    // A quiet user sees everyone, and nobody sees it: not in snapshots, no events about it.
    let (q, mut q_events) = subscribe(&server, "Q", quiet()).await;
    assert_eq!(
        describe(&next_presence(&mut q_events, "room").await),
        "Snapshot [\"A\", \"B\"]"
    );
    q.unsubscribe("room").await.unwrap();
    b.unsubscribe("room").await.unwrap();
    assert_eq!(
        describe(&next_presence(&mut a_events, "room").await),
        "RemoteLeave B",
        "nothing about Q came first"
    );

    // Without presence: no events, but the user is seen by the others.
    let (_c, mut c_events) = subscribe(
        &server,
        "C",
        SubscribeOptions {
            with_presence: false,
            ..Default::default()
        },
    )
    .await;
    assert_eq!(
        describe(&next_presence(&mut a_events, "room").await),
        "RemoteJoin C"
    );
    // Logging out is leaving.
    let (d, _) = subscribe(&server, "D", SubscribeOptions::default()).await;
    assert_eq!(
        describe(&next_presence(&mut a_events, "room").await),
        "RemoteJoin D"
    );
    d.logout().await.unwrap();
    assert_eq!(
        describe(&next_presence(&mut a_events, "room").await),
        "RemoteLeave D"
    );
    // C asked for no presence: nothing of it reached C. A channel's presence events travel
    // with its messages (one lane), so a message published now comes after any of them.
    a.publish("room", "fence", PublishOptions::default())
        .await
        .unwrap();
    expect_event(&mut c_events, "the fence message", |e| match e {
        RtmEvent::Presence(p) => panic!("C got a presence event: {p:?}"),
        RtmEvent::Message(_) => Some(()),
        _ => None,
    })
    .await;
}

#[tokio::test]
async fn stream_channel_presence() {
    let server = TestServer::start().await;
    let (a, mut a_events) = server.login("A").await;
    let a_stream = a.create_stream_channel("st").unwrap();
    a_stream.join(JoinOptions::default()).await.unwrap();
    let snapshot = next_presence(&mut a_events, "st").await;
    assert_eq!(describe(&snapshot), "Snapshot [\"A\"]");
    assert_eq!(snapshot.channel_type, ChannelType::Stream);

    let (b, mut b_events) = server.login("B").await;
    let b_stream = b.create_stream_channel("st").unwrap();
    b_stream.join(JoinOptions::default()).await.unwrap();
    assert_eq!(
        describe(&next_presence(&mut a_events, "st").await),
        "RemoteJoin B"
    );
    assert_eq!(
        describe(&next_presence(&mut b_events, "st").await),
        "Snapshot [\"A\", \"B\"]"
    );
    let (q, _) = server.login("Q").await;
    let q_stream = q.create_stream_channel("st").unwrap();
    let options = JoinOptions {
        be_quiet: true,
        ..Default::default()
    };
    q_stream.join(options).await.unwrap();
    q_stream.leave().await.unwrap();
    b_stream.leave().await.unwrap();
    assert_eq!(
        describe(&next_presence(&mut a_events, "st").await),
        "RemoteLeave B",
        "nothing about Q came first"
    );
}

/// Above `presence_announce_max` users, joins and leaves come batched in one INTERVAL event per
/// period; back at or below it, in real time again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn busy_channels_switch_to_interval_mode_and_back() {
    let mut config = TestServer::config();
    config.limits.presence_announce_max = 8;
    config.limits.presence_interval_secs = 5;
    let server = TestServer::start_with(config).await;
    let (_w, mut w_events) = subscribe(&server, "W", SubscribeOptions::default()).await;
    next_presence(&mut w_events, "room").await; // its snapshot
    let mut users = Vec::new();
    for i in 1..=7 {
        users.push(subscribe(&server, &format!("u{i}"), SubscribeOptions::default()).await);
        let joined = next_presence(&mut w_events, "room").await;
        assert_eq!(describe(&joined), format!("RemoteJoin u{i}"));
    }
    // The ninth present user: the channel is busy.
    users.push(subscribe(&server, "u8", SubscribeOptions::default()).await);
    let interval = next_presence(&mut w_events, "room").await;
    assert_eq!(interval.event_type, PresenceEventType::Interval);
    let detail = interval.interval.expect("an interval event has its detail");
    assert_eq!(detail.join, ["u8"]);
    assert!(detail.leave.is_empty() && detail.timeout.is_empty());
    // Still busy: a join and a leave, in the next period's event.
    users.push(subscribe(&server, "u9", SubscribeOptions::default()).await);
    users[0].0.unsubscribe("room").await.unwrap();
    let detail = next_presence(&mut w_events, "room")
        .await
        .interval
        .expect("an interval event");
    assert_eq!(
        (detail.join, detail.leave),
        (vec!["u9".to_owned()], vec!["u1".to_owned()])
    );
    // Nine present (W and u2..u9): u2's leave waits for the next period; then eight, and u3's
    // leave is announced at once, before that period ends.
    users[1].0.unsubscribe("room").await.unwrap();
    users[2].0.unsubscribe("room").await.unwrap();
    assert_eq!(
        describe(&next_presence(&mut w_events, "room").await),
        "RemoteLeave u3"
    );
    let detail = next_presence(&mut w_events, "room")
        .await
        .interval
        .expect("an interval event");
    assert_eq!(detail.leave, ["u2"]);
}

fn pairs(items: &[(&str, &str)]) -> StateDetail {
    items
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

/// Temporary state: merged, removed, read, shown in snapshots, announced with the full state,
/// gone when the user leaves; the limits and their codes.
#[tokio::test]
async fn temporary_state_merge_remove_events_and_limits() {
    let server = TestServer::start().await;
    let (a, _) = subscribe(&server, "A", SubscribeOptions::default()).await;
    let (b, mut b_events) = subscribe(&server, "B", SubscribeOptions::default()).await;
    next_presence(&mut b_events, "room").await; // its snapshot
    let presence = a.presence();
    presence
        .set_state("room", ChannelType::Message, pairs(&[("mic", "on")]))
        .await
        .unwrap();
    let changed = next_presence(&mut b_events, "room").await;
    assert_eq!(describe(&changed), "RemoteStateChanged A");
    assert_eq!(changed.state_changed, pairs(&[("mic", "on")]));
    presence
        .set_state(
            "room",
            ChannelType::Message,
            pairs(&[("mic", "off"), ("pos", "1,2")]),
        )
        .await
        .unwrap();
    let changed = next_presence(&mut b_events, "room").await;
    assert_eq!(
        changed.state_changed,
        pairs(&[("mic", "off"), ("pos", "1,2")]),
        "full state"
    );
    let got = b
        .presence()
        .get_state("A", "room", ChannelType::Message)
        .await
        .unwrap();
    assert_eq!((got.user_id.as_str(), got.states_count), ("A", 2));
    // A newcomer's snapshot carries the states.
    let (_c, mut c_events) = subscribe(&server, "C", SubscribeOptions::default()).await;
    let snapshot = next_presence(&mut c_events, "room").await;
    let a_state = snapshot.snapshot.iter().find(|u| u.user_id == "A").unwrap();
    assert_eq!(a_state.states, pairs(&[("mic", "off"), ("pos", "1,2")]));
    next_presence(&mut b_events, "room").await; // C's join

    let keys = RemoveStateOptions {
        states: vec!["mic".into()],
    };
    presence
        .remove_state("room", ChannelType::Message, keys)
        .await
        .unwrap();
    let changed = next_presence(&mut b_events, "room").await;
    assert_eq!(changed.state_changed, pairs(&[("pos", "1,2")]));
    presence
        .remove_state("room", ChannelType::Message, RemoveStateOptions::default())
        .await
        .unwrap();
    assert!(
        next_presence(&mut b_events, "room")
            .await
            .state_changed
            .is_empty()
    );

    // Limits and errors.
    let many: StateDetail = (0..33).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    let err = presence
        .set_state("room", ChannelType::Message, many)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PresenceStateCountOverflow);
    let err = presence
        .set_state("room", ChannelType::Message, pairs(&[("", "v")]))
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PresenceInvalidStateKey);
    // Not subscribed there: the client keeps it for later; the server knows nothing of it.
    presence
        .set_state("elsewhere", ChannelType::Message, pairs(&[("k", "v")]))
        .await
        .unwrap();
    let err = b
        .presence()
        .get_state("A", "elsewhere", ChannelType::Message)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PresenceUserNotExist);
    let err = b
        .presence()
        .get_state("nobody", "room", ChannelType::Message)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PresenceUserNotExist);

    // Leaving drops the state: back in the channel, A has none.
    presence
        .set_state("room", ChannelType::Message, pairs(&[("k", "v")]))
        .await
        .unwrap();
    a.unsubscribe("room").await.unwrap();
    a.subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    let got = b
        .presence()
        .get_state("A", "room", ChannelType::Message)
        .await
        .unwrap();
    assert!(got.states.is_empty());
}

/// `who_now` pages through 250 users, 100 at a time, each once, in order; with states when
/// asked; quiet users are not listed; without user ids only the count comes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn who_now_pages_through_250_users() {
    let server = TestServer::start().await;
    let mut clients = Vec::new();
    for i in 0..250 {
        let options = SubscribeOptions {
            with_presence: false,
            ..Default::default()
        };
        clients.push(subscribe(&server, &format!("user{i:03}"), options).await.0);
    }
    clients[7]
        .presence()
        .set_state("room", ChannelType::Message, pairs(&[("mic", "on")]))
        .await
        .unwrap();
    let (asker, _) = subscribe(&server, "zz-quiet", quiet()).await;
    let presence = asker.presence();
    let mut seen = Vec::new();
    let mut page = None;
    let mut pages = 0;
    loop {
        let options = WhoNowOptions {
            include_state: true,
            page,
            ..Default::default()
        };
        let r = presence
            .who_now("room", ChannelType::Message, options)
            .await
            .unwrap();
        pages += 1;
        assert_eq!(r.total_occupancy, 250, "the quiet asker is not counted");
        for o in &r.occupants {
            let expected = usize::from(o.user_id == "user007");
            assert_eq!(o.states_count, expected, "{}", o.user_id);
        }
        seen.extend(r.occupants.into_iter().map(|o| o.user_id));
        if r.next_page.is_empty() {
            break;
        }
        page = Some(r.next_page);
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..250).map(|i| format!("user{i:03}")).collect();
    assert_eq!(seen, expected);
    let count_only = WhoNowOptions {
        include_user_id: false,
        ..Default::default()
    };
    let r = presence
        .who_now("room", ChannelType::Message, count_only)
        .await
        .unwrap();
    assert_eq!((r.total_occupancy, r.occupants.len()), (250, 0));
    assert!(r.next_page.is_empty());
}

/// `where_now` lists message channels subscribed and stream channels joined, not the quiet
/// ones; "" is the caller.
#[tokio::test]
async fn where_now_across_message_and_stream_channels() {
    let server = TestServer::start().await;
    let (x, _) = server.login("X").await;
    x.subscribe("m1", SubscribeOptions::default())
        .await
        .unwrap();
    x.subscribe("m2", quiet()).await.unwrap();
    let s1 = x.create_stream_channel("s1").unwrap();
    s1.join(JoinOptions::default()).await.unwrap();
    let (other, _) = server.login("other").await;
    let r = other.presence().where_now("X").await.unwrap();
    let channels: Vec<(String, ChannelType)> = r
        .channels
        .into_iter()
        .map(|c| (c.channel_name, c.channel_type))
        .collect();
    assert_eq!(
        channels,
        [
            ("m1".to_owned(), ChannelType::Message),
            ("s1".to_owned(), ChannelType::Stream)
        ]
    );
    assert_eq!(r.total_channel, 2);
    assert_eq!(x.presence().where_now("").await.unwrap().total_channel, 2);
    s1.leave().await.unwrap();
    assert_eq!(
        other.presence().where_now("X").await.unwrap().total_channel,
        1
    );
    assert!(
        other
            .presence()
            .where_now("nobody")
            .await
            .unwrap()
            .channels
            .is_empty()
    );
}

/// State set before subscribing (or joining) is kept by the client and applied when it
/// arrives; at most 100 pairs wait.
#[tokio::test]
async fn state_set_before_arriving_is_applied_on_arrival() {
    let server = TestServer::start().await;
    let (_b, mut b_events) = subscribe(&server, "B", SubscribeOptions::default()).await;
    next_presence(&mut b_events, "room").await; // its snapshot
    let (x, _) = server.login("X").await;
    let presence = x.presence();
    presence
        .set_state("room", ChannelType::Message, pairs(&[("seat", "3")]))
        .await
        .unwrap();
    presence
        .set_state("room", ChannelType::Message, pairs(&[("mic", "on")]))
        .await
        .unwrap();
    let one = RemoveStateOptions {
        states: vec!["seat".into()],
    };
    presence
        .remove_state("room", ChannelType::Message, one)
        .await
        .unwrap();
    x.subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    assert_eq!(
        describe(&next_presence(&mut b_events, "room").await),
        "RemoteJoin X"
    );
    let changed = next_presence(&mut b_events, "room").await;
    assert_eq!(describe(&changed), "RemoteStateChanged X");
    assert_eq!(changed.state_changed, pairs(&[("mic", "on")]));

    // The same for a stream channel.
    presence
        .set_state("st", ChannelType::Stream, pairs(&[("hand", "up")]))
        .await
        .unwrap();
    x.create_stream_channel("st")
        .unwrap()
        .join(JoinOptions::default())
        .await
        .unwrap();
    let got = x
        .presence()
        .get_state("X", "st", ChannelType::Stream)
        .await
        .unwrap();
    assert_eq!(got.states, pairs(&[("hand", "up")]));

    // What waits is bounded.
    let many: StateDetail = (0..30).map(|i| (format!("k{i}"), "v".to_owned())).collect();
    for c in 0..3 {
        presence
            .set_state(&format!("later{c}"), ChannelType::Message, many.clone())
            .await
            .unwrap();
    }
    let err = presence
        .set_state("later3", ChannelType::Message, many)
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::PresenceCachedTooManyStates);
}

/// The server's own checks, which the client's cache would otherwise hide.
#[tokio::test]
async fn the_server_refuses_state_outside_the_channel_and_user_channels() {
    use rtm_proto::Request;
    let server = TestServer::start().await;
    let mut raw = RawSession::login(&server, "raw").await;
    let set = |channel_type| Request::SetState {
        channel_type,
        channel: "room".into(),
        states: pairs(&[("k", "v")]),
    };
    let err = raw.request(2, set(ChannelType::Message)).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelNotSubscribed);
    let err = raw.request(3, set(ChannelType::Stream)).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelNotJoined);
    let err = raw.request(4, set(ChannelType::User)).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidChannelType);
    let too_long = Request::SetState {
        channel_type: ChannelType::Message,
        channel: "room".into(),
        states: pairs(&[("k", &"v".repeat(1025))]),
    };
    let err = raw.request(5, too_long).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::PresenceStateValueSizeOverflow);
    let who = Request::WhoNow {
        channel_type: ChannelType::Message,
        channel: "room".into(),
        include_user_id: true,
        include_state: false,
        page: "not/a user".into(),
    };
    let err = raw.request(6, who).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::PresenceInvalidArgument);
}

/// A user that leaves and comes back within the debounce window causes no event; one that stays
/// away is seen leaving once the window has passed.
#[tokio::test]
async fn leave_and_return_within_the_debounce_window_is_not_announced() {
    let mut config = TestServer::config();
    config.limits.presence_debounce_ms = 1500;
    let server = TestServer::start_with(config).await;
    let (_a, mut a_events) = subscribe(&server, "A", SubscribeOptions::default()).await;
    next_presence(&mut a_events, "room").await; // its snapshot
    let (b, _) = subscribe(&server, "B", SubscribeOptions::default()).await;
    assert_eq!(
        describe(&next_presence(&mut a_events, "room").await),
        "RemoteJoin B"
    );
    b.unsubscribe("room").await.unwrap();
    b.subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    // Nothing about B: the next event is a newcomer's.
    let (_c, _) = subscribe(&server, "C", SubscribeOptions::default()).await;
    assert_eq!(
        describe(&next_presence(&mut a_events, "room").await),
        "RemoteJoin C"
    );
    // B leaves for good: told after the window.
    b.unsubscribe("room").await.unwrap();
    assert_eq!(
        describe(&next_presence(&mut a_events, "room").await),
        "RemoteLeave B"
    );
}
