//! End-to-end: token expiry, the warning before it, and renewal. Tokens here live a few
//! seconds; the server's warning lead is set to fit them (the reference's is 30 s).

use rtm_client::{
    ErrorCode, JoinOptions, JoinTopicOptions, LinkState, LinkStateReason, LoginOptions, Payload,
    PublishOptions, RenewTokenOptions, RtmClient, RtmEvent, ServiceType, SubscribeOptions,
    TopicMessageOptions, TopicSubscribeOptions,
};
use rtm_server::config::{AppConfig, ServerConfig};
use rtm_testkit::{TestServer, expect_event, expect_link_state, expect_message};

const APP: &str = "970CA35de60c44645bbae8a215061b33";
const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";

fn config(warning_secs: u32) -> ServerConfig {
    let mut config = TestServer::config();
    config.apps = vec![AppConfig {
        app_id: APP.into(),
        app_certificate: Some(CERT.into()),
        ..Default::default()
    }];
    config.connection.token_warning_secs = warning_secs;
    config
}

/// A login token for `user` that expires `secs` seconds from now.
fn token(user: &str, secs: u32) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    rtm_server::token::build_rtm_token(APP, CERT, user, now.as_secs() as u32, secs, 7).unwrap()
}

async fn warned(events: &mut rtm_client::EventStream) {
    expect_event(events, "tokenPrivilegeWillExpire", |e| match e {
        RtmEvent::TokenPrivilegeWillExpire { channel_name } => {
            assert_eq!(channel_name, "", "the login token has no channel");
            Some(())
        }
        _ => None,
    })
    .await;
}

#[tokio::test]
async fn the_warning_comes_first_and_renewal_keeps_the_session() {
    let server = TestServer::start_with(config(2)).await;
    let client = RtmClient::new(APP, "Tony", server.client_config()).unwrap();
    let mut events = client.events();
    client
        .login(LoginOptions {
            token: Some(token("Tony", 3)),
        })
        .await
        .unwrap();
    client
        .subscribe("c", SubscribeOptions::default())
        .await
        .unwrap();
    warned(&mut events).await;
    // A bad token does not replace the good one.
    let err = client
        .renew_token("007nonsense", RenewTokenOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidToken);
    let err = client
        .renew_token(&token("Lily", 60), Default::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidToken);
    client
        .renew_token(&token("Tony", 6), RenewTokenOptions::default())
        .await
        .unwrap();
    // The renewed token warns again about 4 s from now: after the first token's end, so the
    // session outlived it.
    warned(&mut events).await;
    assert_eq!(client.link_state(), LinkState::Connected);
    client
        .publish("c", "still here", PublishOptions::default())
        .await
        .unwrap();
    assert_eq!(
        expect_message(&mut events).await.message,
        Payload::from("still here")
    );
}

#[tokio::test]
async fn a_session_whose_token_expires_is_dropped() {
    let server = TestServer::start_with(config(1)).await;
    let client = RtmClient::new(APP, "Lily", server.client_config()).unwrap();
    let mut events = client.events();
    client
        .login(LoginOptions {
            token: Some(token("Lily", 2)),
        })
        .await
        .unwrap();
    let failed = expect_link_state(&mut events, LinkState::Failed).await;
    assert_eq!(failed.reason_code, LinkStateReason::TokenExpired);
    let err = client
        .publish("c", "too late", PublishOptions::default())
        .await
        .unwrap_err();
    assert!(
        matches!(err.code, ErrorCode::NotConnected | ErrorCode::NotLogin),
        "{err}"
    );
}

/// An RTC token for `user` joining stream channel `channel`, expiring `secs` seconds from now.
fn rtc_token(channel: &str, user: &str, secs: u32) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap();
    rtm_server::token::build_rtc_token(APP, CERT, channel, user, now.as_secs() as u32, secs, 9)
        .unwrap()
}

fn join_with(token: String) -> JoinOptions {
    JoinOptions {
        token: Some(token),
        ..Default::default()
    }
}

/// Stream channels need an RTC token for the channel and the user; it is warned about, can be
/// renewed, and when it ends the client is out of that channel (and only that one).
#[tokio::test]
async fn stream_channel_tokens_are_checked_warned_renewed_and_expire() {
    let server = TestServer::start_with(config(2)).await;
    let client = RtmClient::new(APP, "Tony", server.client_config()).unwrap();
    let mut events = client.events();
    client
        .login(LoginOptions {
            token: Some(token("Tony", 600)),
        })
        .await
        .unwrap();
    let kept = client.create_stream_channel("kept").unwrap();
    for (bad, code) in [
        (String::new(), ErrorCode::InvalidToken),
        (rtc_token("other", "Tony", 60), ErrorCode::InvalidToken),
        (rtc_token("kept", "Lily", 60), ErrorCode::InvalidToken),
        (token("Tony", 60), ErrorCode::InvalidToken),
        (rtc_token("kept", "Tony", 0), ErrorCode::TokenExpired),
    ] {
        let err = kept.join(join_with(bad)).await.unwrap_err();
        assert_eq!(err.code, code, "{err}");
    }
    kept.join(join_with(rtc_token("kept", "Tony", 4)))
        .await
        .unwrap();
    let lapsing = client.create_stream_channel("lapsing").unwrap();
    lapsing
        .join(join_with(rtc_token("lapsing", "Tony", 3)))
        .await
        .unwrap();
    // Its end (5 s) tells the test that "kept"'s first token (4 s) is over.
    let marker = client.create_stream_channel("marker").unwrap();
    marker
        .join(join_with(rtc_token("marker", "Tony", 5)))
        .await
        .unwrap();
    for channel in [&kept, &lapsing] {
        channel
            .join_topic("t", JoinTopicOptions::default())
            .await
            .unwrap();
    }

    // Each is warned about, with its channel's name.
    let mut warned_about = Vec::new();
    for _ in 0..3 {
        warned_about.push(
            expect_event(&mut events, "a stream token warning", |e| match e {
                RtmEvent::TokenPrivilegeWillExpire { channel_name } => Some(channel_name),
                _ => None,
            })
            .await,
        );
    }
    warned_about.sort();
    assert_eq!(warned_about, ["kept", "lapsing", "marker"]);
    let err = client
        .renew_token(
            &rtc_token("lapsing", "Tony", 60),
            RenewTokenOptions {
                channel_name: Some("kept".into()),
            },
        )
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::InvalidToken);
    client
        .renew_token(
            &rtc_token("kept", "Tony", 60),
            RenewTokenOptions {
                channel_name: Some("kept".into()),
            },
        )
        .await
        .unwrap();

    // "lapsing" ends: a stream link failure for that channel alone.
    let failed = stream_failure(&mut events).await;
    assert_eq!(failed.current_state, LinkState::Failed);
    assert_eq!(failed.reason_code, LinkStateReason::TokenExpired);
    assert_eq!(failed.affected_channels, ["lapsing"]);
    let err = lapsing
        .publish_topic_message("t", "late", TopicMessageOptions::default())
        .await
        .unwrap_err();
    assert_eq!(err.code, ErrorCode::ChannelNotJoined);
    // "kept" outlived its first token (4 s), and the session is fine.
    assert_eq!(client.link_state(), LinkState::Connected);
    kept.subscribe_topic(
        "t",
        TopicSubscribeOptions {
            users: vec!["Tony".into()],
        },
    )
    .await
    .unwrap();
    assert_eq!(
        stream_failure(&mut events).await.affected_channels,
        ["marker"]
    );
    kept.publish_topic_message("t", "still here", TopicMessageOptions::default())
        .await
        .unwrap();
    assert_eq!(
        expect_message(&mut events).await.message,
        Payload::from("still here")
    );
}

async fn stream_failure(events: &mut rtm_client::EventStream) -> rtm_client::LinkStateEvent {
    expect_event(events, "a stream channel's failure", |e| match e {
        RtmEvent::LinkState(s) if s.service_type == ServiceType::Stream => Some(s),
        _ => None,
    })
    .await
}
