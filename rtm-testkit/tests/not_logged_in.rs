//! What a connection that has not logged in may ask (`docs/protocol.md` §5.1).

use rtm_proto::{ErrorCode, Request, Response};
use rtm_testkit::{RawSession, TestServer};

#[tokio::test]
async fn before_login_only_login_resume_and_ping_are_served() {
    let server = TestServer::start().await;
    let mut raw = RawSession::hello(&server).await;
    let logout = raw.request(1, Request::Logout).await;
    assert_eq!(logout.unwrap_err().code, ErrorCode::NotLogin);
    let heartbeat = raw
        .request(
            2,
            Request::Heartbeat {
                received: vec![3, 1],
            },
        )
        .await;
    assert_eq!(heartbeat.unwrap_err().code, ErrorCode::NotLogin);
    assert!(matches!(
        raw.request(3, Request::Ping).await,
        Ok(Response::Pong { .. })
    ));
    // Logged in, both are served.
    let mut raw = RawSession::login(&server, "alice").await;
    assert!(matches!(
        raw.request(
            2,
            Request::Heartbeat {
                received: Vec::new()
            }
        )
        .await,
        Ok(Response::Pong { .. })
    ));
    assert!(matches!(
        raw.request(3, Request::Logout).await,
        Ok(Response::Logout { .. })
    ));
}
