//! End-to-end: token expiry, the warning before it, and renewal. Tokens here live a few
//! seconds; the server's warning lead is set to fit them (the reference's is 30 s).

use rtm_client::{
    ErrorCode, LinkState, LinkStateReason, LoginOptions, Payload, PublishOptions,
    RenewTokenOptions, RtmClient, RtmEvent, SubscribeOptions,
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
        limits: Default::default(),
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
