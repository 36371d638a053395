//! The admin API on the internal listener (`POST /admin/v1/<method>`): every method against a
//! running server and real clients, the key (missing, wrong: 401 and nothing done), bad bodies
//! (400, 413), an app not served (404), and a disconnect that reaches another node.

use std::net::SocketAddr;

use rtm_client::{ErrorCode, LinkState, LinkStateReason, RtmEvent, SubscribeOptions};
use rtm_server::config::AppConfig;
use rtm_testkit::http::{self, HttpResponse};
use rtm_testkit::{
    RedisServer, TEST_APP_ID, TestCluster, TestServer, expect_event, expect_link_state,
    expect_message,
};
use serde_json::{Value, json};

const KEY: &str = "an-admin-key-for-tests";
const OTHER_APP: &str = "otherapp";

fn config() -> rtm_server::ServerConfig {
    let mut config = TestServer::config();
    config.http.admin_key = Some(KEY.into());
    config.limits.history_max_messages = 100;
    config.apps = [TEST_APP_ID, OTHER_APP]
        .into_iter()
        .map(|app_id| AppConfig {
            app_id: app_id.into(),
            app_certificate: None,
            ..Default::default()
        })
        .collect();
    config
}

async fn call_with(
    addr: SocketAddr,
    method: &str,
    auth: Option<&str>,
    body: &[u8],
) -> HttpResponse {
    let header;
    let mut headers = vec![("Content-Type", "application/json")];
    if let Some(auth) = auth {
        header = auth.to_owned();
        headers.push(("Authorization", header.as_str()));
    }
    http::request(addr, "POST", &format!("/admin/v1/{method}"), &headers, body).await
}

/// Calls `method` with the key; returns the status and the JSON answer.
async fn call(addr: SocketAddr, method: &str, body: Value) -> (u16, Value) {
    let bearer = format!("Bearer {KEY}");
    let answer = call_with(addr, method, Some(&bearer), body.to_string().as_bytes()).await;
    let json = serde_json::from_str(&answer.body)
        .unwrap_or_else(|e| panic!("{method}: {e}: {}", answer.body));
    (answer.status, json)
}

#[tokio::test]
async fn without_the_key_nothing_is_done() {
    let server = TestServer::start_with(config()).await;
    let addr = server.http_addr();
    let (reader, mut events) = server.login("reader").await;
    reader
        .subscribe("news", SubscribeOptions::default())
        .await
        .unwrap();
    let body = json!({"app_id": TEST_APP_ID, "channel": "news", "message": "forged"}).to_string();
    for auth in [
        None,
        Some("Bearer wrong-key-of-some-length"),
        Some(KEY),
        Some("Basic eA=="),
    ] {
        let answer = call_with(addr, "publish", auth, body.as_bytes()).await;
        assert_eq!(answer.status, 401, "{auth:?}: {}", answer.body);
        let error: Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(error["error"]["name"], "UNAUTHORIZED");
    }
    // The next message the reader gets is the one published with the key.
    let (status, _) = call(
        addr,
        "publish",
        json!({"app_id": TEST_APP_ID, "channel": "news", "message": "real"}),
    )
    .await;
    assert_eq!(status, 200);
    let message = expect_message(&mut events).await;
    assert_eq!(message.message, rtm_client::Payload::Text("real".into()));
    assert_eq!(message.publisher, "rtm-admin");
}

#[tokio::test]
async fn the_admin_api_is_off_without_a_key() {
    let server = TestServer::start().await;
    let answer = call_with(server.http_addr(), "info", Some("Bearer x"), b"{}").await;
    assert_eq!(answer.status, 404);
}

#[tokio::test]
async fn a_key_shorter_than_16_characters_is_refused_at_start() {
    let mut config = config();
    config.http.admin_key = Some("short".into());
    let err = config.check().unwrap_err();
    assert!(err.to_string().contains("admin_key"), "{err}");
}

#[tokio::test]
async fn bad_bodies_get_clear_errors() {
    let server = TestServer::start_with(config()).await;
    let addr = server.http_addr();
    let bearer = format!("Bearer {KEY}");
    let cases: [(&[u8], u16, &str); 3] = [
        (b"{not json", 400, "BAD_JSON"),
        (
            br#"{"app_id": "testapp", "channel": "c", "message": "m", "colour": 1}"#,
            400,
            "BAD_JSON",
        ),
        (br#"{"app_id": "testapp", "channel": "c"}"#, 400, "BAD_JSON"),
    ];
    for (body, status, name) in cases {
        let answer = call_with(addr, "publish", Some(&bearer), body).await;
        assert_eq!(answer.status, status, "{}", answer.body);
        let error: Value = serde_json::from_str(&answer.body).unwrap();
        assert_eq!(error["error"]["name"], name, "{error}");
        assert!(!error["error"]["reason"].as_str().unwrap().is_empty());
    }
    let huge = json!({"app_id": TEST_APP_ID, "channel": "c", "message": "x".repeat(2 << 20)});
    let answer = call_with(addr, "publish", Some(&bearer), huge.to_string().as_bytes()).await;
    assert_eq!(answer.status, 413, "{}", answer.body);
    assert!(answer.body.contains("BODY_TOO_LARGE"), "{}", answer.body);
    // Too large for the app's limit (32 KB), but within the body limit: the client API's code.
    let large = json!({"app_id": TEST_APP_ID, "channel": "c", "message": "x".repeat(40_000)});
    let (status, error) = call(addr, "publish", large).await;
    assert_eq!(status, 400);
    assert_eq!(
        error["error"]["name"],
        "CHANNEL_MESSAGE_LENGTH_EXCEED_LIMITATION"
    );
    let (status, error) = call(
        addr,
        "publish",
        json!({"app_id": "nosuchapp", "channel": "c", "message": "m"}),
    )
    .await;
    assert_eq!(status, 404);
    assert_eq!(error["error"]["code"], ErrorCode::InvalidAppId.code());
    let (status, error) = call(
        addr,
        "publish",
        json!({"app_id": TEST_APP_ID, "channel": "bad\u{e9}channel", "message": "m"}),
    )
    .await;
    assert_eq!(status, 400, "{error}");
    assert_eq!(error["error"]["name"], "INVALID_CHANNEL_NAME");
}

#[tokio::test]
async fn every_method_does_what_it_says() {
    let server = TestServer::start_with(config()).await;
    let addr = server.http_addr();
    let with_presence = SubscribeOptions {
        with_presence: true,
        ..Default::default()
    };
    let (alice, mut alice_events) = server.login("alice").await;
    alice.subscribe("news", with_presence).await.unwrap();
    alice.subscribe("sport", with_presence).await.unwrap();
    let (bob, _bob_events) = server.login("bob").await;
    bob.subscribe("news", with_presence).await.unwrap();

    // info: both users of the app on this server.
    let (status, info) = call(addr, "info", json!({})).await;
    assert_eq!(status, 200, "{info}");
    assert_eq!(
        info["apps"],
        json!([{"app_id": TEST_APP_ID, "sessions": 2, "users": 2}])
    );
    assert_eq!(info["nodes"].as_array().unwrap().len(), 1);
    assert_eq!(info["subscriptions"], 3);
    assert!(info["version"].as_str().is_some());

    // publish, to a channel (stored) and to a user; a user offline is 404.
    let (status, published) = call(
        addr,
        "publish",
        json!({"app_id": TEST_APP_ID, "channel": "news", "message": "hello", "custom_type": "note", "publisher": "backend", "store": true}),
    )
    .await;
    assert_eq!(status, 200, "{published}");
    let got = expect_message(&mut alice_events).await;
    assert_eq!(
        (
            got.channel_name.as_str(),
            got.publisher.as_str(),
            got.custom_type.as_str()
        ),
        ("news", "backend", "note")
    );
    let (status, _) = call(
        addr,
        "publish",
        json!({"app_id": TEST_APP_ID, "channel_type": "user", "channel": "alice", "message": "AAEC", "binary": true}),
    )
    .await;
    assert_eq!(status, 200);
    let got = expect_message(&mut alice_events).await;
    assert_eq!(
        got.message,
        rtm_client::Payload::Binary(vec![0u8, 1, 2].into())
    );
    let (status, error) = call(
        addr,
        "publish",
        json!({"app_id": TEST_APP_ID, "channel_type": "user", "channel": "nobody", "message": "m"}),
    )
    .await;
    assert_eq!(status, 404, "{error}");
    assert_eq!(error["error"]["name"], "CHANNEL_RECEIVER_OFFLINE");

    // broadcast: each channel's outcome.
    let (status, answer) = call(
        addr,
        "broadcast",
        json!({"app_id": TEST_APP_ID, "channels": ["news", "sport", "bad\u{e9}channel"], "message": "all"}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    let results = answer["results"].as_array().unwrap();
    assert!(results[0]["timestamp"].as_u64().is_some());
    assert!(results[1]["timestamp"].as_u64().is_some());
    assert_eq!(results[2]["error"]["name"], "INVALID_CHANNEL_NAME");
    for channel in ["news", "sport"] {
        let got = expect_message(&mut alice_events).await;
        assert_eq!(got.channel_name, channel);
    }

    // history: the stored message.
    let (status, history) = call(
        addr,
        "history",
        json!({"app_id": TEST_APP_ID, "channel": "news"}),
    )
    .await;
    assert_eq!(status, 200, "{history}");
    assert_eq!(history["messages"].as_array().unwrap().len(), 1);
    assert_eq!(history["messages"][0]["message"], "hello");
    assert_eq!(history["messages"][0]["publisher"], "backend");
    assert_eq!(history["messages"][0]["message_type"], "text");

    // who_now, where_now, channels.
    let (status, who) = call(
        addr,
        "who_now",
        json!({"app_id": TEST_APP_ID, "channel": "news"}),
    )
    .await;
    assert_eq!(status, 200, "{who}");
    assert_eq!(who["total"], 2);
    let mut users: Vec<&str> = who["users"]
        .as_array()
        .unwrap()
        .iter()
        .map(|u| u["user_id"].as_str().unwrap())
        .collect();
    users.sort_unstable();
    assert_eq!(users, ["alice", "bob"]);
    let (_, place) = call(
        addr,
        "where_now",
        json!({"app_id": TEST_APP_ID, "user_id": "alice"}),
    )
    .await;
    let mut channels: Vec<&str> = place["channels"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["channel"].as_str().unwrap())
        .collect();
    channels.sort_unstable();
    assert_eq!(channels, ["news", "sport"]);
    let (_, listed) = call(addr, "channels", json!({"app_id": TEST_APP_ID})).await;
    assert_eq!(
        listed["channels"],
        json!([
            {"channel": "news", "channel_type": "message", "sessions": 2},
            {"channel": "sport", "channel_type": "message", "sessions": 1},
        ])
    );
    // Another app sees none of it.
    let (_, listed) = call(addr, "channels", json!({"app_id": OTHER_APP})).await;
    assert_eq!(listed["channels"], json!([]));

    // Metadata: written by the API, read by a client; an outdated revision is a conflict.
    let (status, set) = call(
        addr,
        "set_metadata",
        json!({"app_id": TEST_APP_ID, "channel": "news", "items": [{"key": "topic", "value": "rust"}]}),
    )
    .await;
    assert_eq!(status, 200, "{set}");
    assert_eq!(set["items"][0]["author_user_id"], "rtm-admin");
    let revision = set["items"][0]["revision"].as_i64().unwrap();
    let seen = alice
        .storage()
        .get_channel_metadata("news", rtm_client::ChannelType::Message)
        .await
        .unwrap();
    assert_eq!(seen.metadata[0].key, "topic");
    assert_eq!(seen.metadata[0].value, "rust");
    let (status, error) = call(
        addr,
        "set_metadata",
        json!({"app_id": TEST_APP_ID, "channel": "news", "op": "update", "items": [{"key": "topic", "value": "go", "revision": revision + 5}]}),
    )
    .await;
    assert_eq!(status, 409, "{error}");
    assert_eq!(error["error"]["name"], "STORAGE_OUTDATED_REVISION");
    let (_, got) = call(
        addr,
        "get_metadata",
        json!({"app_id": TEST_APP_ID, "channel": "news"}),
    )
    .await;
    assert_eq!(got["items"][0]["value"], "rust");
    let (_, user_set) = call(
        addr,
        "get_metadata",
        json!({"app_id": TEST_APP_ID, "user_id": "alice"}),
    )
    .await;
    assert_eq!(user_set["items"], json!([]));

    // disconnect: alice's client is told it was kicked out; a user not online is false.
    let (status, answer) = call(
        addr,
        "disconnect",
        json!({"app_id": TEST_APP_ID, "user_id": "alice"}),
    )
    .await;
    assert_eq!((status, answer), (200, json!({"disconnected": true})));
    let failed = expect_link_state(&mut alice_events, LinkState::Failed).await;
    assert_eq!(failed.reason_code, LinkStateReason::KickedOutByServer);
    let (_, answer) = call(
        addr,
        "disconnect",
        json!({"app_id": TEST_APP_ID, "user_id": "alice"}),
    )
    .await;
    assert_eq!(answer, json!({"disconnected": false}));
    drop(bob);
}

#[tokio::test]
async fn a_disconnect_reaches_a_user_on_another_node() {
    if !RedisServer::available() {
        return;
    }
    let cluster = TestCluster::start_with(2, config()).await;
    let (carol, mut events) = cluster.node(1).login("carol").await;
    let (status, answer) = call(
        cluster.node(0).http_addr(),
        "disconnect",
        json!({"app_id": TEST_APP_ID, "user_id": "carol"}),
    )
    .await;
    assert_eq!((status, answer), (200, json!({"disconnected": true})));
    let failed = expect_event(&mut events, "carol kicked out", |e| match e {
        RtmEvent::LinkState(s) if s.current_state == LinkState::Failed => Some(s),
        _ => None,
    })
    .await;
    assert_eq!(failed.reason_code, LinkStateReason::KickedOutByServer);
    let (_, info) = call(cluster.node(0).http_addr(), "info", json!({})).await;
    assert_eq!(info["nodes"].as_array().unwrap().len(), 2);
    drop(carol);
}

#[tokio::test]
async fn calls_beyond_the_admin_rate_are_refused() {
    let mut config = config();
    config.http.admin_rate = 5;
    let server = TestServer::start_with(config).await;
    let mut statuses = Vec::new();
    for _ in 0..20 {
        statuses.push(call(server.http_addr(), "info", json!({})).await.0);
    }
    let refused = statuses.iter().filter(|s| **s == 429).count();
    assert!(refused >= 10, "{statuses:?}");
    assert!(
        statuses.iter().all(|s| *s == 200 || *s == 429),
        "{statuses:?}"
    );
}
