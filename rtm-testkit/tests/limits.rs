//! End-to-end: limits, bad input and hostile peers. Every refusal is a typed error with the
//! reference's code, and nothing one client does disturbs the others.

use std::sync::atomic::Ordering;

use rtm_client::{
    ChannelType, ErrorCode, LoginOptions, Payload, PublishOptions, RtmClient, SubscribeOptions,
};
use rtm_proto::{ClientMsg, Hello, PROTOCOL_VERSION, Request, RequestId, Response, ServerMsg};
use rtm_server::config::AppConfig;
use rtm_testkit::{RawSession, TEST_APP_ID, TestServer, expect_message, within};

const MAX: usize = 32 * 1024;

#[tokio::test]
async fn oversize_messages_are_refused_and_the_client_goes_on() {
    let server = TestServer::start().await;
    let (a, mut events) = server.login("a").await;
    a.subscribe("c", SubscribeOptions::default()).await.unwrap();
    // Exactly at the limit is fine.
    a.publish("c", vec![1u8; MAX], PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(expect_message(&mut events).await.message.len(), MAX);
    // One byte over: decoded and refused by the size rule.
    let err = a
        .publish("c", vec![1u8; MAX + 1], PublishOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelMessageLengthExceedLimitation);
    assert_eq!(err.code.code(), -11010);
    // Far over: refused by the frame limit before the server buffers it, same code.
    let err = a
        .publish("c", "x".repeat(300_000), PublishOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelMessageLengthExceedLimitation);
    // The same client then publishes normally, and nothing of the refused ones arrived.
    a.publish("c", "small", PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(
        expect_message(&mut events).await.message,
        Payload::from("small")
    );
    assert_eq!(server.metrics().oversized_frames.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn invalid_names_get_their_codes() {
    let server = TestServer::start().await;
    let (a, _) = server.login("a").await;
    let long = "c".repeat(65);
    let cases: Vec<(&str, PublishOptions, ErrorCode)> = vec![
        (
            &long,
            PublishOptions::default(),
            ErrorCode::InvalidChannelName,
        ),
        (
            "bad/name",
            PublishOptions::default(),
            ErrorCode::InvalidChannelName,
        ),
        (
            "ok",
            PublishOptions {
                custom_type: Some("t".repeat(33)),
                ..Default::default()
            },
            ErrorCode::ChannelCustomTypeLengthOverflow,
        ),
        (
            "ok",
            PublishOptions {
                custom_type: Some("tab\t".into()),
                ..Default::default()
            },
            ErrorCode::ChannelInvalidCustomType,
        ),
        (
            "bad user*",
            PublishOptions {
                channel_type: ChannelType::User,
                ..Default::default()
            },
            ErrorCode::InvalidUserId,
        ),
        (
            "s",
            PublishOptions {
                channel_type: ChannelType::Stream,
                ..Default::default()
            },
            ErrorCode::InvalidChannelType,
        ),
    ];
    // These are checked by the server: publish sends them as they are.
    for (channel, options, code) in cases {
        let err = a.publish(channel, "m", options).await.unwrap_err();
        assert_eq!(err.code, code, "{channel:?}: {err}");
    }
    let err = a
        .subscribe(&long, SubscribeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidChannelName);
    let err = RtmClient::new(TEST_APP_ID, "null", server.client_config()).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidUserId);
    let mut numeric = server.client_config();
    numeric.use_string_user_id = false;
    let err = RtmClient::new(TEST_APP_ID, "Tony", numeric.clone()).unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidUserId);
    numeric.heartbeat_interval = 1;
    numeric.presence_timeout = 1000;
    let ok = RtmClient::new(TEST_APP_ID, "123456", numeric).unwrap();
    assert_eq!(
        (ok.config().heartbeat_interval, ok.config().presence_timeout),
        (5, 300)
    );
    ok.login(LoginOptions::default()).await.unwrap();
}

#[tokio::test]
async fn subscribing_past_the_limit_is_refused() {
    let mut config = TestServer::config();
    config.limits.max_subscriptions = 3;
    let server = TestServer::start_with(config).await;
    let (a, _) = server.login("a").await;
    for c in ["c1", "c2", "c3"] {
        a.subscribe(c, SubscribeOptions::default()).await.unwrap();
    }
    // Subscribing again to one already held is not a new channel.
    a.subscribe("c2", SubscribeOptions::default())
        .await
        .unwrap();
    let err = a
        .subscribe("c4", SubscribeOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelInstanceExceedLimitation);
    assert_eq!(err.code.code(), -11005);
    a.unsubscribe("c1").await.unwrap();
    a.subscribe("c4", SubscribeOptions::default())
        .await
        .unwrap();
}

#[tokio::test]
async fn publishing_faster_than_the_rate_is_refused_not_dropped() {
    let mut config = TestServer::config();
    config.limits.publish_rate = 10;
    let server = TestServer::start_with(config).await;
    let (fast, _) = server.login("fast").await;
    let (other, _) = server.login("other").await;
    let (watcher, mut events) = server.login("watcher").await;
    watcher
        .subscribe("c", SubscribeOptions::default())
        .await
        .unwrap();
    let mut accepted = Vec::new();
    let mut refused = 0;
    for i in 0..40u32 {
        match fast
            .publish("c", i.to_string(), PublishOptions::default())
            .await
        {
            Ok(_) => accepted.push(i.to_string()),
            Err(e) => {
                assert_eq!(e.code, ErrorCode::ChannelPublishMessageTooFrequent, "{e}");
                refused += 1;
            }
        }
    }
    assert!(
        refused > 0,
        "40 publishes at once should pass a rate of 10/s"
    );
    assert!(
        accepted.len() >= 10,
        "the burst allowance is the rate: {accepted:?}"
    );
    // Another client has its own allowance; its message is queued after all of the above.
    other
        .publish("c", "end", PublishOptions::default())
        .await
        .unwrap();
    let mut received = Vec::new();
    loop {
        let m = expect_message(&mut events).await;
        if m.publisher == "other" {
            break;
        }
        received.push(m.message.as_text().unwrap().to_owned());
    }
    // Every accepted message arrived; no refused one did.
    assert_eq!(received, accepted);
    assert_eq!(
        server.metrics().rate_limited.load(Ordering::Relaxed),
        refused
    );
}

/// A hello offers the newest version the client speaks; the server welcomes it with the newest
/// both speak, and refuses a client older than any it speaks (`docs/protocol.md` §4.1).
#[tokio::test]
async fn the_welcome_names_the_newest_version_both_sides_speak() {
    let server = TestServer::start().await;
    for (offered, welcomed) in [
        (1, Some(1)),
        (PROTOCOL_VERSION, Some(PROTOCOL_VERSION)),
        (PROTOCOL_VERSION + 5, Some(PROTOCOL_VERSION)),
        (0, None),
    ] {
        let mut raw = RawSession::open(&server).await;
        raw.send_msg(&ClientMsg::Hello(Hello {
            version: offered,
            agent: "t".into(),
        }))
        .await;
        match (raw.next_msg().await, welcomed) {
            (ServerMsg::Welcome(w), Some(version)) => assert_eq!(w.version, version),
            (ServerMsg::Error(e), None) => {
                assert_eq!(e.code, ErrorCode::InvalidParameter);
                within(
                    rtm_testkit::EVENT_DEADLINE,
                    "the server to close",
                    raw.conn.closed(),
                )
                .await;
            }
            (other, _) => panic!("offered {offered}, expected {welcomed:?}, got {other:?}"),
        }
    }
}

#[tokio::test]
async fn garbage_on_a_raw_connection_leaves_the_server_serving_others() {
    let server = TestServer::start().await;
    let (a, mut events) = server.login("a").await;
    a.subscribe("c", SubscribeOptions::default()).await.unwrap();

    // Garbage instead of a hello: a typed error, then the server closes that connection.
    let mut raw = RawSession::open(&server).await;
    raw.send_bytes(&[0, 0, 0, 5, 0xde, 0xad, 0xbe, 0xef, 0xff])
        .await;
    match raw.next_msg().await {
        ServerMsg::Error(e) => assert_eq!(e.code, ErrorCode::InvalidParameter),
        other => panic!("expected an error, got {other:?}"),
    }
    within(
        rtm_testkit::EVENT_DEADLINE,
        "the server to close",
        raw.conn.closed(),
    )
    .await;

    // After a good hello: undecodable frames and unknown kinds get typed errors, and the
    // connection goes on.
    let mut raw = RawSession::open(&server).await;
    raw.send_msg(&ClientMsg::Hello(Hello {
        version: PROTOCOL_VERSION,
        agent: "t".into(),
    }))
    .await;
    assert!(matches!(raw.next_msg().await, ServerMsg::Welcome(_)));
    raw.send_bytes(&[0, 0, 0, 3, 0xff, 0xff, 0xff]).await;
    match raw.next_msg().await {
        ServerMsg::Error(e) => assert_eq!(e.code, ErrorCode::InvalidParameter),
        other => panic!("expected an error, got {other:?}"),
    }
    // A request of a kind this server does not know (variant 200), id 42.
    raw.send_bytes(&[0, 0, 0, 4, 1, 42, 200, 1]).await;
    match raw.next_msg().await {
        ServerMsg::Response { id, result: Err(e) } => {
            assert_eq!(id, RequestId(42));
            assert_eq!(e.code, ErrorCode::InvalidParameter);
        }
        other => panic!("expected an error for request 42, got {other:?}"),
    }
    // Requests before login are refused with NOT_LOGIN.
    let err = raw.request(
        7,
        Request::Subscribe {
            channel: "c".into(),
            options: Default::default(),
        },
    );
    assert_eq!(err.await.unwrap_err().code, ErrorCode::NotLogin);
    assert!(matches!(
        raw.request(8, Request::Ping).await,
        Ok(Response::Pong { .. })
    ));
    // A frame header announcing 4 GiB: refused before any allocation; the stream is then
    // unusable (the rest of the frame never comes), but the server is not.
    raw.send_bytes(&[0xff, 0xff, 0xff, 0xff, 1, 9]).await;
    match raw.next_msg().await {
        ServerMsg::Response { id, result: Err(e) } => {
            assert_eq!(id, RequestId(9));
            assert_eq!(e.code, ErrorCode::ChannelMessageLengthExceedLimitation);
        }
        other => panic!("expected an error for request 9, got {other:?}"),
    }

    // Meanwhile the server serves everyone else as before.
    a.publish("c", "still here", PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(
        expect_message(&mut events).await.message,
        Payload::from("still here")
    );
    let (b, _) = server.login("b").await;
    b.publish("c", "and new clients", PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(
        expect_message(&mut events).await.message,
        Payload::from("and new clients")
    );
    assert!(server.metrics().malformed_frames.load(Ordering::Relaxed) >= 2);
}

#[tokio::test]
async fn a_wrong_protocol_version_is_refused_with_a_reason() {
    let server = TestServer::start().await;
    let mut raw = RawSession::open(&server).await;
    // Older than any version the server speaks (a newer one is welcomed with the server's).
    raw.send_msg(&ClientMsg::Hello(Hello {
        version: 0,
        agent: "ancient".into(),
    }))
    .await;
    match raw.next_msg().await {
        ServerMsg::Error(e) => assert!(
            e.reason.contains("version 0")
                && e.reason.contains(&format!("1 to {PROTOCOL_VERSION}")),
            "{}",
            e.reason
        ),
        other => panic!("expected an error, got {other:?}"),
    }
}

#[tokio::test]
async fn a_stalled_subscriber_does_not_hold_up_another() {
    const MESSAGES: usize = 3000;
    let mut config = TestServer::config();
    config.connection.outbound_queue = 64;
    let server = TestServer::start_with(config).await;
    // The stalled subscriber logs in and subscribes, then never reads its delivery stream.
    let mut stalled = RawSession::login(&server, "stalled").await;
    let subscribe = Request::Subscribe {
        channel: "firehose".into(),
        options: Default::default(),
    };
    stalled.request(2, subscribe).await.unwrap();
    let (reader, mut events) = server.login("reader").await;
    reader
        .subscribe("firehose", SubscribeOptions::default())
        .await
        .unwrap();
    let (publisher, _) = server.login("publisher").await;

    let payload = vec![7u8; 1024];
    let publishing = tokio::spawn(async move {
        for _ in 0..MESSAGES {
            publisher
                .publish("firehose", payload.clone(), PublishOptions::default())
                .await
                .unwrap();
        }
    });
    for _ in 0..MESSAGES {
        assert_eq!(expect_message(&mut events).await.message.len(), 1024);
    }
    publishing.await.unwrap();
    // The stalled one was cut off as a slow consumer, with the documented close code.
    let closed = within(
        rtm_testkit::EVENT_DEADLINE,
        "the stalled connection to close",
        stalled.conn.closed(),
    )
    .await;
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                close.error_code,
                quinn::VarInt::from_u32(rtm_proto::CloseReason::SlowConsumer.close_code())
            );
        }
        other => panic!("expected an application close, got {other}"),
    }
    assert_eq!(
        server
            .metrics()
            .slow_consumer_disconnects
            .load(Ordering::Relaxed),
        1
    );
}

#[tokio::test]
async fn configured_apps_are_enforced_with_tokens() {
    const APP: &str = "970CA35de60c44645bbae8a215061b33";
    const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";
    let mut config = TestServer::config();
    config.apps = vec![
        AppConfig {
            app_id: TEST_APP_ID.into(),
            app_certificate: None,
            ..Default::default()
        },
        AppConfig {
            app_id: APP.into(),
            app_certificate: Some(CERT.into()),
            ..Default::default()
        },
    ];
    let server = TestServer::start_with(config).await;
    // An app without a certificate takes any token, or none.
    server.login("fine").await;
    let stranger = RtmClient::new("otherapp", "x", server.client_config()).unwrap();
    let err = stranger.login(LoginOptions::default()).await.unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidAppId);

    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    let now = now.as_secs() as u32;
    let token = |user: &str, issued: u32, expire: u32| {
        rtm_server::token::build_rtm_token(APP, CERT, user, issued, expire, 4242).unwrap()
    };
    let login = |user: &str, token: Option<String>| {
        let client = RtmClient::new(APP, user, server.client_config()).unwrap();
        async move { client.login(LoginOptions { token }).await.map(|_| client) }
    };
    // A valid token logs in.
    let tony = login("Tony", Some(token("Tony", now, 3600))).await.unwrap();
    tony.publish(
        "Tony",
        "to myself",
        PublishOptions {
            channel_type: ChannelType::User,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    // Each bad token is refused with its code.
    let cases = [
        (None, ErrorCode::InvalidToken),
        (Some("007garbage".to_owned()), ErrorCode::InvalidToken),
        (Some(token("Lily", now, 3600)), ErrorCode::InvalidToken),
        (
            Some(token("Tony", now - 7200, 3600)),
            ErrorCode::TokenExpired,
        ),
        (
            Some(
                rtm_server::token::build_rtm_token(
                    APP,
                    "0123456789abcdef0123456789abcdef",
                    "Tony",
                    now,
                    3600,
                    1,
                )
                .unwrap(),
            ),
            ErrorCode::InvalidToken,
        ),
        (
            Some(
                rtm_server::token::build_rtm_token(
                    "00000000000000000000000000000000",
                    CERT,
                    "Tony",
                    now,
                    3600,
                    1,
                )
                .unwrap(),
            ),
            ErrorCode::InconsistentAppid,
        ),
    ];
    for (token, code) in cases {
        let err = login("Tony", token.clone()).await.unwrap_err();
        assert_eq!(err.code, code, "{token:?}: {err}");
    }
}

#[tokio::test]
async fn apps_are_isolated() {
    let server = TestServer::start().await;
    let config = server.client_config();
    let a1 = RtmClient::new("appone", "u", config.clone()).unwrap();
    let a2 = RtmClient::new("apptwo", "u", config).unwrap();
    let mut e1 = a1.events();
    let mut e2 = a2.events();
    a1.login(LoginOptions::default()).await.unwrap();
    // The same user id in another app is another user: no SAME_UID_LOGIN.
    a2.login(LoginOptions::default()).await.unwrap();
    a1.subscribe("shared-name", SubscribeOptions::default())
        .await
        .unwrap();
    a2.subscribe("shared-name", SubscribeOptions::default())
        .await
        .unwrap();
    a1.publish("shared-name", "for app one", PublishOptions::default())
        .await
        .unwrap();
    a2.publish("shared-name", "for app two", PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(
        expect_message(&mut e1).await.message,
        Payload::from("for app one")
    );
    assert_eq!(
        expect_message(&mut e2).await.message,
        Payload::from("for app two")
    );
}
