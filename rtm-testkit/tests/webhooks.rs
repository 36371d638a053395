//! Webhooks against a real HTTP receiver: events posted in order and signed, a failing
//! receiver tried again until it takes them, and a receiver that never answers, which costs
//! dropped events (counted) but never slows messaging.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use axum::http::{HeaderMap, StatusCode};
use hmac::{Hmac, Mac};
use rtm_client::{PublishOptions, SubscribeOptions};
use rtm_server::config::{AppConfig, WebhookConfig};
use rtm_testkit::{EVENT_DEADLINE, TEST_APP_ID, TestServer, expect_message, http, within};
use serde_json::Value;
use tokio::sync::mpsc;

const SECRET: &str = "a-webhook-secret-for-tests";

/// A POST the receiver got.
struct Got {
    headers: HeaderMap,
    body: Vec<u8>,
}

/// An HTTP receiver on a free port that answers 500 to its first `failures` POSTs.
async fn receiver(failures: usize) -> (SocketAddr, mpsc::UnboundedReceiver<Got>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let seen = Arc::new(AtomicUsize::new(0));
    let app = axum::Router::new().route(
        "/hook",
        axum::routing::post(move |headers: HeaderMap, body: axum::body::Bytes| {
            let tx = tx.clone();
            let seen = seen.clone();
            async move {
                if seen.fetch_add(1, Ordering::SeqCst) < failures {
                    return StatusCode::INTERNAL_SERVER_ERROR;
                }
                let _ = tx.send(Got {
                    headers,
                    body: body.to_vec(),
                });
                StatusCode::NO_CONTENT
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, app).await });
    (addr, rx)
}

fn config(url: String, tune: impl FnOnce(&mut WebhookConfig)) -> rtm_server::ServerConfig {
    let mut hook = WebhookConfig {
        url,
        secret: SECRET.into(),
        message_channels: vec!["orders".into()],
        queue: 10_000,
        timeout_ms: 5_000,
        max_attempts: 5,
    };
    tune(&mut hook);
    let mut config = TestServer::config();
    config.apps = vec![AppConfig {
        app_id: TEST_APP_ID.into(),
        webhook: Some(hook),
        ..Default::default()
    }];
    config
}

/// Checks the POST's signature and returns its events.
fn verified(got: &Got) -> Vec<Value> {
    let timestamp = got.headers["x-rtm-timestamp"].to_str().unwrap();
    let signature = got.headers["x-rtm-signature"].to_str().unwrap();
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(SECRET.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(&got.body);
    let hex = signature.strip_prefix("sha256=").expect("sha256=");
    let bytes: Vec<u8> = (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
        .collect();
    mac.verify_slice(&bytes).expect("a valid signature");
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let ts: u64 = timestamp.parse().unwrap();
    assert!(ts.abs_diff(now) < 300, "timestamp {ts}, now {now}");
    assert_eq!(got.headers["content-type"], "application/json");
    let body: Value = serde_json::from_slice(&got.body).unwrap();
    assert_eq!(body["app_id"], TEST_APP_ID);
    body["events"].as_array().unwrap().clone()
}

/// Collects events until one matches `last`.
async fn events_until(
    posts: &mut mpsc::UnboundedReceiver<Got>,
    last: impl Fn(&Value) -> bool,
) -> Vec<Value> {
    within(EVENT_DEADLINE, "the webhook events", async {
        let mut all = Vec::new();
        loop {
            let got = posts.recv().await.expect("the receiver runs");
            all.extend(verified(&got));
            if all.iter().any(&last) {
                return all;
            }
        }
    })
    .await
}

fn summary(events: &[Value], user: &str) -> Vec<String> {
    events
        .iter()
        .filter(|e| e["user_id"] == user)
        .map(|e| {
            format!(
                "{} {}",
                e["type"].as_str().unwrap(),
                e["channel"].as_str().unwrap_or("-")
            )
        })
        .collect()
}

#[tokio::test]
async fn events_are_posted_in_order_and_signed() {
    let (addr, mut posts) = receiver(0).await;
    let server = TestServer::start_with(config(format!("http://{addr}/hook"), |_| {})).await;
    let (alice, mut alice_events) = server.login("alice").await;
    alice
        .subscribe("orders", SubscribeOptions::default())
        .await
        .unwrap();
    let (bob, _bob_events) = server.login("bob").await;
    bob.publish("orders", "order 1", PublishOptions::default())
        .await
        .unwrap();
    bob.publish("elsewhere", "not posted", PublishOptions::default())
        .await
        .unwrap();
    expect_message(&mut alice_events).await;
    alice.unsubscribe("orders").await.unwrap();
    alice.logout().await.unwrap();
    let events = events_until(&mut posts, |e| {
        e["type"] == "user.logout" && e["user_id"] == "alice"
    })
    .await;
    assert_eq!(
        summary(&events, "alice"),
        [
            "user.login -",
            "channel.join orders",
            "channel.leave orders",
            "user.logout -"
        ]
    );
    let messages: Vec<&Value> = events.iter().filter(|e| e["type"] == "message").collect();
    assert_eq!(
        messages.len(),
        1,
        "only the listed channel's messages: {messages:?}"
    );
    assert_eq!(messages[0]["message"], "order 1");
    assert_eq!(messages[0]["message_type"], "text");
    assert_eq!(messages[0]["user_id"], "bob");
    assert_eq!(messages[0]["channel"], "orders");
    let ids: std::collections::HashSet<&str> =
        events.iter().map(|e| e["id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), events.len(), "ids are unique");
    drop(bob);
}

#[tokio::test]
async fn a_failing_receiver_gets_the_events_when_it_recovers() {
    let (addr, mut posts) = receiver(2).await;
    let server = TestServer::start_with(config(format!("http://{addr}/hook"), |_| {})).await;
    let (_carol, _events) = server.login("carol").await;
    let events = events_until(&mut posts, |e| e["type"] == "user.login").await;
    assert_eq!(summary(&events, "carol"), ["user.login -"]);
    let scrape = http::get(server.http_addr(), "/metrics").await.body;
    assert!(
        scrape.contains(&format!(
            "rtm_webhook_posts_total{{app_id=\"{TEST_APP_ID}\",outcome=\"error\"}} 2"
        )),
        "{scrape}"
    );
}

#[tokio::test]
async fn a_receiver_that_never_answers_costs_events_not_messages() {
    const MESSAGES: usize = 3000;
    const QUEUE: usize = 50;
    // Takes connections and never answers.
    let silent = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = silent.local_addr().unwrap();
    tokio::spawn(async move {
        let mut held = Vec::new();
        while let Ok((socket, _)) = silent.accept().await {
            held.push(socket);
        }
    });
    let server = TestServer::start_with(config(format!("http://{addr}/hook"), |hook| {
        hook.queue = QUEUE;
        hook.timeout_ms = 200;
        hook.max_attempts = 2;
    }))
    .await;
    let (reader, mut events) = server.login("reader").await;
    reader
        .subscribe("orders", SubscribeOptions::default())
        .await
        .unwrap();
    let (publisher, _) = server.login("publisher").await;
    for n in 0..MESSAGES {
        publisher
            .publish("orders", format!("order {n}"), PublishOptions::default())
            .await
            .unwrap();
    }
    for _ in 0..MESSAGES {
        expect_message(&mut events).await;
    }
    let scrape = http::get(server.http_addr(), "/metrics").await.body;
    let value = |name: &str| -> f64 {
        scrape
            .lines()
            .find(|l| l.starts_with(&format!("{name}{{app_id=\"{TEST_APP_ID}\"")))
            .and_then(|l| l.rsplit_once(' '))
            .map_or(0.0, |(_, v)| v.parse().unwrap())
    };
    let dropped = value("rtm_webhook_events_dropped_total");
    let queued = value("rtm_webhook_queue");
    assert!(dropped > 0.0, "{scrape}");
    assert!(queued <= QUEUE as f64, "{queued}");
    // Every event (two logins, one join, the messages) is queued, in the batch being tried
    // (at most 100), or dropped: none vanished, and no more than the queue waits.
    let emitted = (MESSAGES + 3) as f64;
    assert!(dropped + queued <= emitted, "{dropped} + {queued}");
    assert!(dropped + queued >= emitted - 100.0, "{dropped} + {queued}");
}

/// A node dies with a logged-in user and a debounced leave: its reaper posts the user's
/// `user.timeout` and `channel.timeout`, and does not post the leave a second time (it went
/// out when the user left).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dead_node_s_users_are_posted_by_its_reaper_once() {
    if !rtm_testkit::RedisServer::available() {
        return;
    }
    let (addr, mut posts) = receiver(0).await;
    let mut config = config(format!("http://{addr}/hook"), |_| {});
    config.limits.presence_debounce_ms = 5_000;
    config.engine.node_timeout_ms = Some(2_000);
    let mut cluster = rtm_testkit::TestCluster::start_with(2, config).await;
    let (carol, _carol_events) = cluster.node(1).login("carol").await;
    carol
        .subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    let (bob, _bob_events) = cluster.node(1).login("bob").await;
    bob.subscribe("room", SubscribeOptions::default())
        .await
        .unwrap();
    bob.unsubscribe("room").await.unwrap();
    // bob's leave waits out its 5 s window on node 1, which dies meanwhile.
    cluster.kill(1);
    let events = events_until(&mut posts, |e| {
        e["type"] == "user.timeout" && e["user_id"] == "carol"
    })
    .await;
    // Its channels first, as a session that ends leaves them before it goes.
    assert_eq!(
        summary(&events, "carol"),
        [
            "user.login -",
            "channel.join room",
            "channel.timeout room",
            "user.timeout -"
        ]
    );
    // The reaper's node waits out a window of its own for bob's leave (5 s), and tells its
    // channel then; whatever it posts meanwhile, bob's leave is not posted again.
    let more = within(EVENT_DEADLINE, "the reaper's late events", async {
        let mut all = events.clone();
        let until = tokio::time::Instant::now() + std::time::Duration::from_secs(7);
        while let Ok(Some(got)) = tokio::time::timeout_at(until, posts.recv()).await {
            all.extend(verified(&got));
        }
        all
    })
    .await;
    let bob_leaves = summary(&more, "bob")
        .iter()
        .filter(|e| *e == "channel.leave room")
        .count();
    assert_eq!(bob_leaves, 1, "{:?}", summary(&more, "bob"));
    assert_eq!(
        summary(&more, "carol")
            .iter()
            .filter(|e| *e == "user.timeout -")
            .count(),
        1
    );
    drop((carol, bob));
}

#[tokio::test]
async fn a_session_replaced_by_the_same_user_posts_no_logout() {
    let (addr, mut posts) = receiver(0).await;
    let server = TestServer::start_with(config(format!("http://{addr}/hook"), |_| {})).await;
    let (first, mut first_events) = server.login("dave").await;
    let (second, _second_events) = server.login("dave").await;
    rtm_testkit::expect_link_state(&mut first_events, rtm_client::LinkState::Failed).await;
    // The replaced session has ended on the server (its end is where a logout would be
    // posted); then eve's login marks the end of what to look at.
    let metrics = server.metrics();
    rtm_testkit::wait_until(EVENT_DEADLINE, "the replaced session to end", || {
        metrics.sessions.load(Ordering::Relaxed) == 1
    })
    .await;
    let (_eve, _eve_events) = server.login("eve").await;
    let events = events_until(&mut posts, |e| e["user_id"] == "eve").await;
    assert_eq!(summary(&events, "dave"), ["user.login -", "user.login -"]);
    drop(second);
    drop(first);
}
