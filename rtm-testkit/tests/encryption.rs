//! End-to-end encryption (`docs/protocol.md` §5.11): round trips in both AES modes on message,
//! user and topic messages; receivers with another key or none; what the server relays.

use std::time::Duration;

use rtm_client::{
    ChannelType, EncryptionMode, ErrorCode, EventStream, JoinOptions, JoinTopicOptions,
    MessageEvent, Payload, PublishOptions, RtmClient, RtmConfig, SubscribeOptions,
    TopicMessageOptions, TopicSubscribeOptions,
};
use rtm_proto::{Request, ServerMsg};
use rtm_testkit::{RawSession, TEST_APP_ID, TestServer, expect_event, expect_message, within};

const SECRET: &str = "the plaintext nobody else may read";

fn encrypted(server: &TestServer, mode: EncryptionMode, key: &str) -> RtmConfig {
    let mut config = server.client_config();
    config.encryption_mode = mode;
    config.cipher_key = key.into();
    config.salt = b"a salt of our own".to_vec();
    config
}

async fn login(user: &str, config: RtmConfig) -> (RtmClient, EventStream) {
    let client = RtmClient::new(TEST_APP_ID, user, config).unwrap();
    let events = client.events();
    client.login(Default::default()).await.unwrap();
    (client, events)
}

/// The next message in `channel_type`.
async fn message_in(events: &mut EventStream, channel_type: ChannelType) -> MessageEvent {
    expect_event(events, &format!("a {channel_type} message"), |e| match e {
        rtm_client::RtmEvent::Message(m) if m.channel_type == channel_type => Some(m),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn both_modes_round_trip_on_every_channel_kind() {
    let server = TestServer::start().await;
    for (mode, key) in [
        (
            EncryptionMode::Aes128Gcm,
            "0123456789abcdef0123456789abcdef",
        ),
        (
            EncryptionMode::Aes256Gcm,
            "fedcba9876543210fedcba9876543210",
        ),
    ] {
        let tag = format!("{mode:?}");
        let (alice, _a) = login(&format!("alice{tag}"), encrypted(&server, mode, key)).await;
        let (bob, mut events) = login(&format!("bob{tag}"), encrypted(&server, mode, key)).await;
        let room = format!("room{tag}");
        bob.subscribe(&room, SubscribeOptions::default())
            .await
            .unwrap();
        let stage_name = format!("stage{tag}");
        let bob_stage = bob.create_stream_channel(&stage_name).unwrap();
        bob_stage.join(JoinOptions::default()).await.unwrap();
        let alice_stage = alice.create_stream_channel(&stage_name).unwrap();
        alice_stage.join(JoinOptions::default()).await.unwrap();
        alice_stage
            .join_topic("t", JoinTopicOptions::default())
            .await
            .unwrap();
        bob_stage
            .subscribe_topic("t", TopicSubscribeOptions::default())
            .await
            .unwrap();

        let binary = vec![0u8, 1, 2, 255];
        alice
            .publish(&room, SECRET, PublishOptions::default())
            .await
            .unwrap();
        alice
            .publish(&room, binary.clone(), PublishOptions::default())
            .await
            .unwrap();
        let to_bob = PublishOptions {
            channel_type: ChannelType::User,
            custom_type: Some("dm".into()),
            ..Default::default()
        };
        alice.publish(bob.user_id(), SECRET, to_bob).await.unwrap();
        alice_stage
            .publish_topic_message("t", SECRET, TopicMessageOptions::default())
            .await
            .unwrap();

        let text = message_in(&mut events, ChannelType::Message).await;
        assert_eq!(text.message, Payload::Text(SECRET.into()), "{tag}");
        let bytes = message_in(&mut events, ChannelType::Message).await;
        assert_eq!(bytes.message, Payload::Binary(binary.into()), "{tag}");
        let direct = message_in(&mut events, ChannelType::User).await;
        assert_eq!(direct.message, Payload::Text(SECRET.into()), "{tag}");
        assert_eq!(direct.custom_type, "dm");
        let topic = message_in(&mut events, ChannelType::Stream).await;
        assert_eq!(topic.message, Payload::Text(SECRET.into()), "{tag}");
        assert_eq!(topic.topic_name, "t");
    }
}

#[tokio::test]
async fn receivers_with_another_key_or_none_cannot_read_it() {
    let server = TestServer::start().await;
    let mode = EncryptionMode::Aes256Gcm;
    let (alice, _a) = login("alice", encrypted(&server, mode, "right key")).await;
    let mut subscribers = Vec::new();
    for (user, config) in [
        ("wrong", encrypted(&server, mode, "wrong key")),
        (
            "other_mode",
            encrypted(&server, EncryptionMode::Aes128Gcm, "right key"),
        ),
        ("none", server.client_config()),
        ("right", encrypted(&server, mode, "right key")),
    ] {
        let (client, events) = login(user, config).await;
        client
            .subscribe("room", SubscribeOptions::default())
            .await
            .unwrap();
        subscribers.push((user, client, events));
    }
    alice
        .publish("room", SECRET, PublishOptions::default())
        .await
        .unwrap();
    for (user, _client, events) in &mut subscribers {
        let m = expect_message(events).await;
        if *user == "right" {
            assert_eq!(m.message, Payload::Text(SECRET.into()));
        } else {
            // The signal: still sealed, never bytes taken for text.
            assert!(m.message.is_encrypted(), "{user}: {:?}", m.message);
            assert_eq!(m.message.as_text(), None);
            assert!(
                !m.message.as_bytes().windows(9).any(|w| w == b"plaintext"),
                "{user}"
            );
        }
    }
    // And an unencrypted message reaches an encrypting client as it is.
    let (plain, _p) = server.login("plain").await;
    plain
        .publish("room", "in clear", PublishOptions::default())
        .await
        .unwrap();
    let (_, _, right_events) = subscribers.last_mut().unwrap();
    assert_eq!(
        expect_message(right_events).await.message,
        Payload::Text("in clear".into())
    );
}

/// What the server relays is the sealed payload, not the plaintext.
#[tokio::test]
async fn the_server_relays_only_ciphertext() {
    let server = TestServer::start().await;
    let mut raw = RawSession::login(&server, "eavesdropper").await;
    raw.request(
        2,
        Request::Subscribe {
            channel: "room".into(),
            options: SubscribeOptions::default(),
        },
    )
    .await
    .unwrap();
    let (alice, _a) = login(
        "alice",
        encrypted(&server, EncryptionMode::Aes128Gcm, "key"),
    )
    .await;
    alice
        .publish("room", SECRET, PublishOptions::default())
        .await
        .unwrap();
    // Every byte of the delivery stream, as the server wrote it.
    let mut stream = within(
        Duration::from_secs(10),
        "a delivery stream",
        raw.conn.accept_uni(),
    )
    .await
    .unwrap();
    let mut decoder = rtm_proto::FrameDecoder::new(1 << 16);
    let mut wire = Vec::new();
    let mut pending = bytes::BytesMut::new();
    let event = loop {
        let chunk = within(
            Duration::from_secs(10),
            "an event",
            stream.read_chunk(4096, true),
        )
        .await
        .unwrap()
        .expect("the stream stays open");
        wire.extend_from_slice(&chunk.bytes);
        pending.extend_from_slice(&chunk.bytes);
        let mut found = None;
        while let Some(body) = decoder.decode(&mut pending).unwrap() {
            if let ServerMsg::Event(rtm_proto::Event::Message(m)) =
                ServerMsg::decode(&body).unwrap()
            {
                found = Some(m);
            }
        }
        if let Some(m) = found {
            break m;
        }
    };
    assert!(event.message.is_encrypted(), "{:?}", event.message);
    assert!(
        !wire.windows(SECRET.len()).any(|w| w == SECRET.as_bytes()),
        "the plaintext went through the server"
    );
    assert!(!wire.windows(9).any(|w| w == b"plaintext"));
}

#[test]
fn bad_encryption_parameters_are_refused_at_construction() {
    let endpoint = rtm_client::Endpoint {
        addr: "127.0.0.1:1".parse().unwrap(),
        server_name: "localhost".into(),
        trust: rtm_client::Trust::PinnedCertDer(Vec::new()),
    };
    let mut no_key = RtmConfig::new(endpoint.clone());
    no_key.encryption_mode = EncryptionMode::Aes128Gcm;
    let mut long_salt = RtmConfig::new(endpoint);
    long_salt.encryption_mode = EncryptionMode::Aes256Gcm;
    long_salt.cipher_key = "k".into();
    long_salt.salt = vec![1; 33];
    for config in [no_key, long_salt] {
        let err = RtmClient::new(TEST_APP_ID, "u", config).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidEncryptionParameter);
    }
}
