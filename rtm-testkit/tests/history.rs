//! End-to-end: message history (`docs/protocol.md` §5.12): paging, retention, user
//! conversations, a restart, encrypted history, and the errors.

use rtm_client::{
    ChannelType, EncryptionMode, ErrorCode, GetHistoryMessageOptions, HistoryMessage, Payload,
    PublishOptions, RtmClient, RtmConfig,
};
use rtm_testkit::{TEST_APP_ID, TestServer};

fn code<T: std::fmt::Debug>(r: Result<T, rtm_client::RtmError>) -> ErrorCode {
    match r {
        Ok(v) => panic!("expected an error, got {v:?}"),
        Err(e) => e.code,
    }
}

fn stored() -> PublishOptions {
    PublishOptions {
        store_in_history: true,
        ..Default::default()
    }
}

fn texts(messages: &[HistoryMessage]) -> Vec<String> {
    messages
        .iter()
        .map(|m| m.message.as_text().unwrap_or("<not text>").to_owned())
        .collect()
}

async fn server_keeping(max_messages: u32) -> TestServer {
    let mut config = TestServer::config();
    config.limits.history_max_messages = max_messages;
    TestServer::start_with(config).await
}

#[tokio::test]
async fn paging_through_250_stored_messages() {
    let server = server_keeping(1000).await;
    let (alice, _a) = server.login("alice").await;
    let mut stamps = Vec::new();
    for i in 0..250 {
        let sent = alice
            .publish("room", format!("m{i}"), stored())
            .await
            .unwrap();
        stamps.push(sent.timestamp);
    }
    // Not stored: never in the history.
    alice
        .publish("room", "fleeting", PublishOptions::default())
        .await
        .unwrap();
    assert!(stamps.windows(2).all(|w| w[0] < w[1]), "unique, growing");
    let (bob, _b) = server.login("bob").await;
    let history = bob.history();
    // Backwards from the newest, 100 at a time, following new_start.
    let mut read = Vec::new();
    let mut start = 0;
    let mut pages = 0;
    loop {
        let page = history
            .get_messages(
                "room",
                ChannelType::Message,
                GetHistoryMessageOptions {
                    start,
                    ..Default::default()
                },
            )
            .await
            .unwrap();
        assert_eq!(page.count, page.message_list.len());
        read.extend(texts(&page.message_list));
        pages += 1;
        if page.new_start == 0 {
            break;
        }
        start = page.new_start;
    }
    assert_eq!(pages, 3);
    let expected: Vec<String> = (0..250).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(read, expected);
    // Forwards: the messages since one the client saw (end is inclusive), in pages of 30.
    let mut since = Vec::new();
    let mut start = 0;
    loop {
        let page = history
            .get_messages(
                "room",
                ChannelType::Message,
                GetHistoryMessageOptions {
                    message_count: Some(30),
                    start,
                    end: stamps[200],
                },
            )
            .await
            .unwrap();
        since.extend(page.message_list.iter().map(|m| m.timestamp));
        if page.new_start == 0 {
            break;
        }
        start = page.new_start;
    }
    since.reverse();
    assert_eq!(since, stamps[200..]);
    let m = &history
        .get_messages("room", ChannelType::Message, Default::default())
        .await
        .unwrap()
        .message_list[0];
    assert_eq!((m.publisher.as_str(), m.timestamp), ("alice", stamps[249]));
    // More than 100 asked: 100 given.
    let many = history
        .get_messages(
            "room",
            ChannelType::Message,
            GetHistoryMessageOptions {
                message_count: Some(500),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(many.count, 100);
    // A window the wrong way round.
    let r = history
        .get_messages(
            "room",
            ChannelType::Message,
            GetHistoryMessageOptions {
                start: stamps[10],
                end: stamps[20],
                ..Default::default()
            },
        )
        .await;
    assert_eq!(code(r), ErrorCode::HistoryInvalidTimestamp);
    let r = history
        .get_messages("room", ChannelType::Stream, Default::default())
        .await;
    assert_eq!(code(r), ErrorCode::InvalidChannelType);
}

#[tokio::test]
async fn retention_keeps_the_newest() {
    let server = server_keeping(10).await;
    let (alice, _a) = server.login("alice").await;
    for i in 0..25 {
        alice
            .publish("room", format!("m{i}"), stored())
            .await
            .unwrap();
    }
    let page = alice
        .history()
        .get_messages("room", ChannelType::Message, Default::default())
        .await
        .unwrap();
    let expected: Vec<String> = (15..25).rev().map(|i| format!("m{i}")).collect();
    assert_eq!(texts(&page.message_list), expected);
}

#[tokio::test]
async fn history_is_off_unless_the_app_keeps_it() {
    let server = TestServer::start().await;
    let (alice, _a) = server.login("alice").await;
    let r = alice.publish("room", "kept?", stored()).await;
    assert_eq!(code(r), ErrorCode::HistoryNotAvailable);
    let r = alice
        .history()
        .get_messages("room", ChannelType::Message, Default::default())
        .await;
    assert_eq!(code(r), ErrorCode::HistoryNotAvailable);
}

/// User-channel messages are kept per pair of users, both directions; a stored message to a
/// user who is offline is an error that says it was stored.
#[tokio::test]
async fn a_conversation_between_two_users() {
    let server = server_keeping(100).await;
    let (alice, _a) = server.login("alice").await;
    let to = |channel_type| PublishOptions {
        channel_type,
        store_in_history: true,
        ..Default::default()
    };
    let r = alice
        .publish("bob", "while you were out", to(ChannelType::User))
        .await;
    assert_eq!(code(r), ErrorCode::ChannelReceiverOfflineButStoreSucceeded);
    let (bob, _b) = server.login("bob").await;
    bob.publish("alice", "back now", to(ChannelType::User))
        .await
        .unwrap();
    let (carol, _c) = server.login("carol").await;
    carol
        .publish("bob", "someone else", to(ChannelType::User))
        .await
        .unwrap();
    for (reader, other) in [(&bob, "alice"), (&alice, "bob")] {
        let page = reader
            .history()
            .get_messages(other, ChannelType::User, Default::default())
            .await
            .unwrap();
        assert_eq!(
            texts(&page.message_list),
            ["back now", "while you were out"],
            "{} with {other}",
            reader.user_id()
        );
    }
}

#[tokio::test]
async fn history_survives_a_restart() {
    let server = server_keeping(100).await;
    {
        let (alice, _a) = server.login("alice").await;
        for i in 0..5 {
            alice
                .publish("room", format!("m{i}"), stored())
                .await
                .unwrap();
        }
    }
    let server = server.restart().await;
    let (bob, _b) = server.login("bob").await;
    let page = bob
        .history()
        .get_messages("room", ChannelType::Message, Default::default())
        .await
        .unwrap();
    assert_eq!(texts(&page.message_list), ["m4", "m3", "m2", "m1", "m0"]);
}

/// Encrypted messages are stored as ciphertext: the server's files never hold the plaintext,
/// a reader with the key gets it back, one without gets the sealed payload.
#[tokio::test]
async fn encrypted_history_is_stored_as_ciphertext() {
    const SECRET: &str = "the plaintext of a stored secret";
    let server = server_keeping(100).await;
    let encrypted = |key: &str| {
        let mut config: RtmConfig = server.client_config();
        config.encryption_mode = EncryptionMode::Aes128Gcm;
        config.cipher_key = key.into();
        config
    };
    let login = |user: &'static str, config: RtmConfig| async move {
        let client = RtmClient::new(TEST_APP_ID, user, config).unwrap();
        client.login(Default::default()).await.unwrap();
        client
    };
    let alice = login("alice", encrypted("k")).await;
    for _ in 0..20 {
        alice.publish("room", SECRET, stored()).await.unwrap();
    }
    let mut files = 0;
    for entry in std::fs::read_dir(server.data_dir()).unwrap() {
        let bytes = std::fs::read(entry.unwrap().path()).unwrap();
        files += 1;
        assert!(
            !bytes.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
            "the plaintext is in the server's files"
        );
    }
    assert!(files >= 2, "the database and its log");
    let bob = login("bob", encrypted("k")).await;
    let page = bob
        .history()
        .get_messages("room", ChannelType::Message, Default::default())
        .await
        .unwrap();
    assert_eq!(page.count, 20);
    assert!(
        page.message_list
            .iter()
            .all(|m| m.message == Payload::Text(SECRET.into()))
    );
    let carol = login("carol", server.client_config()).await;
    let page = carol
        .history()
        .get_messages("room", ChannelType::Message, Default::default())
        .await
        .unwrap();
    assert!(page.message_list.iter().all(|m| m.message.is_encrypted()));
}

/// A resumed session whose server no longer held some of the messages it missed gets them
/// from the history, in order, before what followed them; the ones the history does not have
/// are reported, never silently skipped.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_resume_recovers_missed_messages_from_the_history() {
    use std::sync::atomic::Ordering;
    use std::time::Duration;

    use rtm_client::{LinkState, RtmEvent, SubscribeOptions};
    use rtm_testkit::{LossyLink, expect_event, wait_until, within};

    const LINK_DEADLINE: Duration = Duration::from_secs(45);
    let mut config = TestServer::config();
    config.limits.history_max_messages = 1000;
    // One lane and a short memory of what was sent: the server keeps the last 64 frames.
    config.connection.outbound_queue = 64;
    config.connection.delivery_lanes = 1;
    let server = TestServer::start_with(config).await;
    let link = LossyLink::start(server.addr()).await.unwrap();
    let roamer = RtmClient::new(TEST_APP_ID, "roamer", server.client_config_via(&link)).unwrap();
    let mut events = roamer.events();
    roamer.login(Default::default()).await.unwrap();
    for channel in ["room", "plain"] {
        roamer
            .subscribe(channel, SubscribeOptions::default())
            .await
            .unwrap();
    }
    let (other, _o) = server.login("other").await;
    other.publish("room", "before", stored()).await.unwrap();
    let first = expect_event(&mut events, "the first message", |e| match e {
        RtmEvent::Message(m) => Some(m),
        _ => None,
    })
    .await;
    assert_eq!(first.message.as_text(), Some("before"));

    link.cut();
    // 20 stored, 20 not stored, then 64 stored: the server writes all of them into the dead
    // connection and keeps only the last 64.
    for i in 0..20 {
        other
            .publish("room", format!("early{i}"), stored())
            .await
            .unwrap();
    }
    for i in 0..20 {
        other
            .publish("plain", format!("gone{i}"), PublishOptions::default())
            .await
            .unwrap();
    }
    for i in 0..64 {
        other
            .publish("room", format!("late{i}"), stored())
            .await
            .unwrap();
    }
    let metrics = server.metrics();
    wait_until(LINK_DEADLINE, "the server to park the session", || {
        metrics.sessions_parked.load(Ordering::Relaxed) == 1
    })
    .await;
    link.restore();
    let mut room = Vec::new();
    let mut lost = Vec::new();
    let mut resumed = None;
    within(LINK_DEADLINE, "the missed messages", async {
        while room.len() < 84 || lost.is_empty() {
            match events.recv().await.expect("events") {
                RtmEvent::LinkState(s) if s.current_state == LinkState::Connected => {
                    resumed = Some(s.is_resumed);
                }
                RtmEvent::Message(m) if m.channel_name == "room" => {
                    room.push(m.message.as_text().unwrap_or_default().to_owned());
                }
                RtmEvent::Message(m) => panic!("unexpected {m:?}"),
                RtmEvent::MessagesLost(l) => lost.push(l),
                _ => {}
            }
        }
    })
    .await;
    assert_eq!(
        resumed,
        Some(true),
        "the session was resumed, not logged in again"
    );
    let expected: Vec<String> = (0..20)
        .map(|i| format!("early{i}"))
        .chain((0..64).map(|i| format!("late{i}")))
        .collect();
    assert_eq!(room, expected, "in order, nothing missing");
    assert_eq!(lost.len(), 1, "{lost:?}");
    assert_eq!(
        (lost[0].channel_name.as_str(), lost[0].count),
        ("plain", 20)
    );
    assert!(lost[0].from <= lost[0].to);
}
