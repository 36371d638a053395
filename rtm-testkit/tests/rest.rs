//! The Signaling REST API with Agora's paths and JSON: messages to channels and users, the
//! event queues, history, HTTP Basic and token authentication, no access across apps, bad
//! bodies and the rate limits.

use std::net::SocketAddr;

use base64::Engine as _;
use rtm_client::{LoginOptions, Payload, RtmClient, SubscribeOptions};
use rtm_server::config::{AppConfig, RestCredential};
use rtm_testkit::http::{self, HttpResponse};
use rtm_testkit::{TestServer, expect_message};
use serde_json::{Value, json};

const APP: &str = "970CA35de60c44645bbae8a215061b33";
const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";
const OTHER: &str = "0123456789abcdef0123456789abcdef";
const KEY: &str = "customer-a";
const SECRET: &str = "secret-of-app-a-0123";
const OTHER_KEY: &str = "customer-b";
const OTHER_SECRET: &str = "secret-of-app-b-0123";

fn basic(key: &str, secret: &str) -> String {
    let pair = format!("{key}:{secret}");
    format!(
        "Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    )
}

fn token(user: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs() as u32;
    rtm_server::token::build_rtm_token(APP, CERT, user, now, 3600, 11).unwrap()
}

async fn start() -> TestServer {
    let mut config = TestServer::config();
    config.limits.history_max_messages = 100;
    config.apps = vec![
        AppConfig {
            app_id: APP.into(),
            app_certificate: Some(CERT.into()),
            rest_credentials: vec![RestCredential {
                key: KEY.into(),
                secret: SECRET.into(),
            }],
            ..Default::default()
        },
        AppConfig {
            app_id: OTHER.into(),
            rest_credentials: vec![RestCredential {
                key: OTHER_KEY.into(),
                secret: OTHER_SECRET.into(),
            }],
            ..Default::default()
        },
    ];
    TestServer::start_with(config).await
}

async fn login(server: &TestServer, user: &str) -> (RtmClient, rtm_client::EventStream) {
    let client = RtmClient::new(APP, user, server.client_config()).unwrap();
    let events = client.events();
    client
        .login(LoginOptions {
            token: Some(token(user)),
        })
        .await
        .unwrap();
    (client, events)
}

async fn post(addr: SocketAddr, path: &str, auth: &str, body: &Value) -> (u16, Value) {
    let answer = http::request(
        addr,
        "POST",
        path,
        &[
            ("Authorization", auth),
            ("Content-Type", "application/json"),
        ],
        body.to_string().as_bytes(),
    )
    .await;
    (answer.status, json_of(&answer))
}

async fn get(addr: SocketAddr, path: &str, auth: &str) -> (u16, Value) {
    let answer = http::request(addr, "GET", path, &[("Authorization", auth)], b"").await;
    (answer.status, json_of(&answer))
}

fn json_of(answer: &HttpResponse) -> Value {
    serde_json::from_str(&answer.body).unwrap_or_else(|e| panic!("{e}: {}", answer.body))
}

fn channel_path(app: &str, user: &str) -> String {
    format!("/dev/v2/project/{app}/rtm/users/{user}/channel_messages")
}

fn peer_path(app: &str, user: &str) -> String {
    format!("/dev/v2/project/{app}/rtm/users/{user}/peer_messages")
}

#[tokio::test]
async fn messages_reach_channels_and_users_as_the_named_user() {
    let server = start().await;
    let addr = server.http_addr();
    let auth = basic(KEY, SECRET);
    let (alice, mut events) = login(&server, "alice").await;
    alice
        .subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();

    let (status, answer) = post(
        addr,
        &channel_path(APP, "backend"),
        &auth,
        &json!({"channel_name": "room", "payload": "hello room", "enable_historical_messaging": true}),
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["result"], "success");
    assert_eq!(answer["code"], "message_sent");
    assert!(!answer["request_id"].as_str().unwrap().is_empty());
    let got = expect_message(&mut events).await;
    assert_eq!(got.channel_name, "room");
    assert_eq!(got.publisher, "backend");
    assert_eq!(got.message, Payload::Text("hello room".into()));

    let (status, answer) = post(
        addr,
        &format!("{}?wait_for_ack=true", peer_path(APP, "backend")),
        &auth,
        &json!({"destination": "alice", "payload": "hello alice"}),
    )
    .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (200, Some("message_delivered"))
    );
    let got = expect_message(&mut events).await;
    assert_eq!(got.publisher, "backend");
    assert_eq!(got.message, Payload::Text("hello alice".into()));
    // Someone not online: offline when waiting for the ack, sent otherwise.
    let offline = json!({"destination": "nobody", "payload": "x"});
    let (_, answer) = post(
        addr,
        &format!("{}?wait_for_ack=true", peer_path(APP, "backend")),
        &auth,
        &offline,
    )
    .await;
    assert_eq!(answer["code"], "message_offline");
    let (_, answer) = post(addr, &peer_path(APP, "backend"), &auth, &offline).await;
    assert_eq!(answer["code"], "message_sent");

    // History, with the reference's shape.
    let (status, answer) = get(
        addr,
        &format!(
            "/rtm/v2/history/{APP}/userId/backend/channelType/message/channel/room?messageCount=10"
        ),
        &auth,
    )
    .await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["errorCode"], 0);
    assert_eq!(answer["data"]["count"], 1);
    let item = &answer["data"]["messageList"][0];
    assert_eq!(item["messageType"], "STRING");
    assert_eq!(item["message"], "hello room");
    assert_eq!(item["publisher"], "backend");

    // A login token works for its own user only.
    let (status, _) = post(
        addr,
        &channel_path(APP, "alice"),
        &format!("agora token={}", token("alice")),
        &json!({"channel_name": "room", "payload": "from alice's token"}),
    )
    .await;
    assert_eq!(status, 200);
    expect_message(&mut events).await;
    let (status, answer) = post(
        addr,
        &channel_path(APP, "mallory"),
        &format!("agora token={}", token("alice")),
        &json!({"channel_name": "room", "payload": "forged"}),
    )
    .await;
    assert_eq!(status, 401, "{answer}");
}

#[tokio::test]
async fn wrong_or_foreign_credentials_do_nothing() {
    let server = start().await;
    let addr = server.http_addr();
    let (alice, mut events) = login(&server, "alice").await;
    alice
        .subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    let forged = json!({"channel_name": "room", "payload": "forged"});
    for auth in [
        basic(KEY, "wrong-secret-0000000"),
        basic("nobody", SECRET),
        basic(OTHER_KEY, OTHER_SECRET),
        "Bearer x".to_owned(),
        String::new(),
    ] {
        let (status, answer) = post(addr, &channel_path(APP, "backend"), &auth, &forged).await;
        assert_eq!(status, 401, "{auth}: {answer}");
        assert_eq!(answer["result"], "failed");
    }
    // The other app's credentials work on the other app, and reach nobody of this one.
    let (status, _) = post(
        addr,
        &channel_path(OTHER, "backend"),
        &basic(OTHER_KEY, OTHER_SECRET),
        &forged,
    )
    .await;
    assert_eq!(status, 200);
    // An app without REST credentials has no REST API.
    let (status, _) = post(
        addr,
        &channel_path("testapp", "backend"),
        &basic(KEY, SECRET),
        &forged,
    )
    .await;
    assert_eq!(status, 401);
    // The next message alice gets is the real one.
    post(
        addr,
        &channel_path(APP, "backend"),
        &basic(KEY, SECRET),
        &json!({"channel_name": "room", "payload": "real"}),
    )
    .await;
    let got = expect_message(&mut events).await;
    assert_eq!(got.message, Payload::Text("real".into()));
}

#[tokio::test]
async fn bad_bodies_are_refused_with_reasons() {
    let server = start().await;
    let addr = server.http_addr();
    let auth = basic(KEY, SECRET);
    let path = channel_path(APP, "backend");
    let send = |content_type: &'static str, body: Vec<u8>| {
        let auth = auth.clone();
        let path = path.clone();
        async move {
            let answer = http::request(
                addr,
                "POST",
                &path,
                &[
                    ("Authorization", auth.as_str()),
                    ("Content-Type", content_type),
                ],
                &body,
            )
            .await;
            (answer.status, json_of(&answer))
        }
    };
    let (status, answer) = send("application/json", b"{oops".to_vec()).await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("BAD_JSON")),
        "{answer}"
    );
    let (status, _) = send(
        "text/plain",
        br#"{"channel_name":"room","payload":"x"}"#.to_vec(),
    )
    .await;
    assert_eq!(status, 415);
    let huge = json!({"channel_name": "room", "payload": "x".repeat(200_000)}).to_string();
    let (status, answer) = send("application/json", huge.into_bytes()).await;
    assert_eq!(status, 413, "{answer}");
    let (status, answer) = send(
        "application/json",
        br#"{"channel_name":"room","payload":""}"#.to_vec(),
    )
    .await;
    assert_eq!(
        (status, answer["code"].as_str()),
        (400, Some("invalid_payload"))
    );
    let big = json!({"channel_name": "room", "payload": "x".repeat(40_000)}).to_string();
    let (status, answer) = send("application/json", big.into_bytes()).await;
    assert_eq!(status, 400, "{answer}");
    assert_eq!(answer["code"], "CHANNEL_MESSAGE_LENGTH_EXCEED_LIMITATION");
}

#[tokio::test]
async fn event_queues_give_logins_and_joins_once_each() {
    let server = start().await;
    let addr = server.http_addr();
    let auth = basic(KEY, SECRET);
    let (alice, _events) = login(&server, "alice").await;
    alice
        .subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    alice.unsubscribe("room").await.unwrap();
    alice.logout().await.unwrap();
    let users = format!("/dev/v2/project/{APP}/rtm/vendor/user_events");
    let channels = format!("/dev/v2/project/{APP}/rtm/vendor/channel_events");
    let (status, answer) = get(addr, &users, &auth).await;
    assert_eq!(status, 200, "{answer}");
    let kinds: Vec<(&str, &str)> = answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["user_id"].as_str().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("alice", "Login"), ("alice", "Logout")]);
    assert!(answer["events"][0]["ms"].as_u64().unwrap() > 0);
    let (_, again) = get(addr, &users, &auth).await;
    assert_eq!(again["events"], json!([]), "consumed on read");
    let (_, answer) = get(addr, &channels, &auth).await;
    let kinds: Vec<(&str, &str)> = answer["events"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| (e["group_id"].as_str().unwrap(), e["type"].as_str().unwrap()))
        .collect();
    assert_eq!(kinds, [("room", "Join"), ("room", "Leave")]);
    // Ten reads a second per app: a burst of thirty is cut short.
    let mut refused = 0;
    for _ in 0..30 {
        let (status, _) = get(addr, &channels, &auth).await;
        if status == 429 {
            refused += 1;
        }
    }
    assert!(refused >= 10, "{refused} of 30 refused");
}

#[tokio::test]
async fn messaging_is_limited_to_500_calls_a_second_per_app() {
    let server = start().await;
    let addr = server.http_addr();
    let auth = basic(KEY, SECRET);
    // 1 200 calls from 40 callers at once (each waits for its answer before the next).
    let callers: Vec<_> = (0..40)
        .map(|caller| {
            let auth = auth.clone();
            tokio::spawn(async move {
                let mut statuses = Vec::new();
                for n in 0..30 {
                    let body = json!({"channel_name": "busy", "payload": format!("m{caller}-{n}")});
                    statuses.push(
                        post(addr, &channel_path(APP, "backend"), &auth, &body)
                            .await
                            .0,
                    );
                }
                statuses
            })
        })
        .collect();
    let mut refused = 0;
    for caller in callers {
        for status in caller.await.unwrap() {
            match status {
                200 => {}
                429 => refused += 1,
                other => panic!("status {other}"),
            }
        }
    }
    assert!(refused > 0, "1 200 calls at once, none refused");
    // The other app has its own allowance.
    let (status, _) = post(
        addr,
        &channel_path(OTHER, "backend"),
        &basic(OTHER_KEY, OTHER_SECRET),
        &json!({"channel_name": "busy", "payload": "m"}),
    )
    .await;
    assert_eq!(status, 200);
}
