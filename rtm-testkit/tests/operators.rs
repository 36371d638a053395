//! What operators see on the internal HTTP listener: `/metrics` after a scripted scenario,
//! checked value by value and for the OpenMetrics text format, and the health checks
//! (`/healthz`, `/readyz`), with Redis going away and coming back.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::time::Duration;

use rtm_client::{
    ChannelType, ErrorCode, LoginOptions, PublishOptions, RtmClient, SubscribeOptions,
};
use rtm_proto::Request;
use rtm_server::config::AppConfig;
use rtm_testkit::http::{self, HttpResponse};
use rtm_testkit::{
    EVENT_DEADLINE, RawSession, RedisServer, TEST_APP_ID, TestCluster, TestServer, expect_message,
    within,
};

const APP: &str = "970CA35de60c44645bbae8a215061b33";
const CERT: &str = "5CFd2fd1755d40ecb72977518be15d3b";

/// A scrape: every sample by its name and labels (`name{a="b"}`), checked for the format.
struct Scrape {
    samples: BTreeMap<String, f64>,
}

impl Scrape {
    async fn of(addr: SocketAddr) -> Self {
        let answer = http::get(addr, "/metrics").await;
        assert_eq!(answer.status, 200, "{}", answer.body);
        assert!(
            answer
                .header("content-type")
                .is_some_and(|t| t.starts_with("application/openmetrics-text; version=1.0.0")),
            "{:?}",
            answer.headers
        );
        Self {
            samples: parse_openmetrics(&answer.body),
        }
    }

    /// The sample `key` (`name` or `name{labels}`); panics if absent.
    fn get(&self, key: &str) -> f64 {
        *self
            .samples
            .get(key)
            .unwrap_or_else(|| panic!("no sample {key} in {:#?}", self.samples))
    }

    /// The sum of every sample of family `name` (all label sets).
    fn sum(&self, name: &str) -> f64 {
        self.samples
            .iter()
            .filter(|(k, _)| *k == name || k.starts_with(&format!("{name}{{")))
            .map(|(_, v)| v)
            .sum()
    }
}

/// Parses the OpenMetrics text format strictly enough to catch what Prometheus would refuse:
/// each family declared once (`# TYPE` before its samples, `# HELP` allowed), samples only of
/// declared families with the suffixes their type allows, counters ending in `_total`,
/// histogram buckets rising to `+Inf` equal to `_count`, label values quoted, numbers that
/// parse, and one `# EOF` at the very end.
fn parse_openmetrics(text: &str) -> BTreeMap<String, f64> {
    assert!(text.ends_with("# EOF\n"), "no final # EOF: {text}");
    let body = &text[..text.len() - "# EOF\n".len()];
    assert!(!body.contains("# EOF"), "# EOF before the end");
    let mut types: BTreeMap<String, String> = BTreeMap::new();
    let mut samples = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in body.lines() {
        if let Some(rest) = line.strip_prefix("# ") {
            let mut parts = rest.splitn(3, ' ');
            let (kind, name) = (parts.next().unwrap(), parts.next().unwrap());
            assert!(
                name.starts_with("rtm_"),
                "family {name} without the rtm_ prefix"
            );
            match kind {
                "TYPE" => {
                    let t = parts.next().unwrap().to_owned();
                    assert!(
                        ["counter", "gauge", "histogram"].contains(&t.as_str()),
                        "{line}"
                    );
                    assert!(
                        types.insert(name.to_owned(), t.clone()).is_none(),
                        "{name} twice"
                    );
                    current = Some((name.to_owned(), t));
                }
                "HELP" | "UNIT" => {
                    if kind == "UNIT" {
                        let unit = parts.next().unwrap();
                        assert!(name.ends_with(&format!("_{unit}")), "{line}");
                    }
                }
                _ => panic!("unknown descriptor {line}"),
            }
            continue;
        }
        let (key, value) = line.rsplit_once(' ').unwrap_or_else(|| panic!("{line}"));
        let value: f64 = match value {
            "+Inf" => f64::INFINITY,
            v => v.parse().unwrap_or_else(|_| panic!("value of {line}")),
        };
        let name = key.split('{').next().unwrap();
        for (k, v) in split_key(key).1 {
            assert!(
                k.chars().all(|c| c.is_ascii_alphanumeric() || c == '_'),
                "{line}"
            );
            assert!(!v.contains('"'), "{line}");
        }
        let (family, t) = current
            .clone()
            .unwrap_or_else(|| panic!("{line} before any TYPE"));
        let suffix = name
            .strip_prefix(&family)
            .unwrap_or_else(|| panic!("sample {name} in family {family}"));
        let allowed: &[&str] = match t.as_str() {
            "counter" => &["_total", "_created"],
            "gauge" => &[""],
            _ => &["_bucket", "_sum", "_count", "_created"],
        };
        assert!(allowed.contains(&suffix), "{name} in {t} family {family}");
        assert!(
            samples.insert(key.to_owned(), value).is_none(),
            "{key} twice"
        );
    }
    // Buckets rise and end at _count.
    for (family, t) in &types {
        if t != "histogram" {
            continue;
        }
        let mut series: BTreeMap<Labels, Vec<(f64, f64)>> = BTreeMap::new();
        let mut counts = BTreeMap::new();
        for (key, value) in &samples {
            let (name, mut labels) = split_key(key);
            if name == format!("{family}_count") {
                counts.insert(labels, *value);
            } else if name == format!("{family}_bucket") {
                let at = labels.iter().position(|(k, _)| k == "le").expect("le");
                let le = labels.remove(at).1;
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap_or_else(|_| panic!("le of {key}"))
                };
                series.entry(labels).or_default().push((le, *value));
            }
        }
        assert!(
            !series.is_empty() || counts.is_empty(),
            "{family} without buckets"
        );
        for (labels, mut buckets) in series {
            buckets.sort_by(|a, b| a.0.total_cmp(&b.0));
            assert!(
                buckets.windows(2).all(|w| w[0].1 <= w[1].1),
                "{family} buckets fall"
            );
            let last = buckets.last().unwrap();
            assert!(last.0.is_infinite(), "{family} has no +Inf bucket");
            assert_eq!(counts.get(&labels), Some(&last.1), "{family} {labels:?}");
        }
    }
    samples
}

/// A sample's labels, sorted by name.
type Labels = Vec<(String, String)>;

/// A sample's name and its labels.
fn split_key(key: &str) -> (String, Labels) {
    let Some((name, labels)) = key.split_once('{') else {
        return (key.to_owned(), Vec::new());
    };
    let inner = labels.strip_suffix('}').expect("closing brace");
    let mut pairs: Labels = inner
        .split("\",")
        .map(|pair| {
            let (k, v) = pair.split_once("=\"").expect("k=\"v\"");
            (k.to_owned(), v.trim_end_matches('"').to_owned())
        })
        .collect();
    pairs.sort();
    (name.to_owned(), pairs)
}

async fn scrape_until(
    addr: SocketAddr,
    what: &str,
    mut done: impl FnMut(&Scrape) -> bool,
) -> Scrape {
    within(EVENT_DEADLINE, what, async {
        loop {
            let scrape = Scrape::of(addr).await;
            if done(&scrape) {
                return scrape;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
}

#[tokio::test]
async fn a_scrape_after_a_scripted_scenario_counts_what_happened() {
    const MESSAGES: usize = 3000;
    let mut config = TestServer::config();
    config.connection.outbound_queue = 64;
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
    let addr = server.http_addr();

    // Three logins; a subscriber that never reads its deliveries.
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
    // Two refused logins: no token for an app with a certificate, and an app not served.
    let lily = RtmClient::new(APP, "Lily", server.client_config()).unwrap();
    let refused = lily.login(LoginOptions::default()).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::InvalidToken);
    let stranger = RtmClient::new("otherapp", "x", server.client_config()).unwrap();
    let refused = stranger.login(LoginOptions::default()).await.unwrap_err();
    assert_eq!(refused.code, ErrorCode::InvalidAppId);

    // A thousand messages to the channel, one to a user.
    let payload = vec![7u8; 1024];
    for _ in 0..MESSAGES {
        publisher
            .publish("firehose", payload.clone(), PublishOptions::default())
            .await
            .unwrap();
    }
    for _ in 0..MESSAGES {
        expect_message(&mut events).await;
    }
    let to_reader = PublishOptions {
        channel_type: ChannelType::User,
        ..Default::default()
    };
    publisher.publish("reader", "hi", to_reader).await.unwrap();
    expect_message(&mut events).await;
    // The stalled subscriber overflowed its queue and was cut off.
    within(
        EVENT_DEADLINE,
        "the stalled subscriber to be cut off",
        stalled.close_code(),
    )
    .await;
    drop((lily, stranger));

    let s = scrape_until(
        addr,
        "the stalled session and refused connections to go",
        |s| {
            s.sum("rtm_connections_open") == 2.0
                && s.get(&format!("rtm_sessions{{app_id=\"{TEST_APP_ID}\"}}")) == 2.0
        },
    )
    .await;
    let m = server.metrics();
    let load =
        |a: &std::sync::atomic::AtomicU64| a.load(std::sync::atomic::Ordering::Relaxed) as f64;
    assert_eq!(s.get("rtm_logins_total"), 3.0);
    assert_eq!(
        s.get("rtm_logins_refused_total{reason=\"INVALID_TOKEN\"}"),
        1.0
    );
    assert_eq!(
        s.get("rtm_logins_refused_total{reason=\"INVALID_APP_ID\"}"),
        1.0
    );
    assert_eq!(s.sum("rtm_logins_refused_total"), 2.0);
    assert_eq!(
        s.get("rtm_messages_published_total{kind=\"message\"}"),
        MESSAGES as f64
    );
    assert_eq!(s.get("rtm_messages_published_total{kind=\"user\"}"), 1.0);
    assert_eq!(s.get("rtm_messages_published_total{kind=\"topic\"}"), 0.0);
    assert_eq!(s.get("rtm_slow_consumer_disconnects_total"), 1.0);
    let delivered = s.get("rtm_frames_delivered_total");
    assert_eq!(delivered, load(&m.frames_delivered));
    assert!(delivered >= (MESSAGES + 1) as f64, "{delivered}");
    assert_eq!(s.get("rtm_frames_dropped_total"), load(&m.frames_dropped));
    assert!(s.get("rtm_frames_dropped_total") > 0.0);
    assert_eq!(s.sum("rtm_connections_accepted_total"), 5.0);
    assert_eq!(
        s.get(&format!("rtm_users{{app_id=\"{TEST_APP_ID}\"}}")),
        2.0
    );
    assert_eq!(s.get("rtm_subscriptions"), 1.0);
    assert_eq!(s.get("rtm_channels{type=\"message\"}"), 1.0);
    assert_eq!(s.get("rtm_channels{type=\"stream\"}"), 0.0);
    assert_eq!(
        s.get("rtm_request_duration_seconds_count{operation=\"publish\"}"),
        (MESSAGES + 1) as f64
    );
    assert_eq!(
        s.get("rtm_request_duration_seconds_count{operation=\"login\"}"),
        5.0
    );
    assert_eq!(s.get("rtm_sessions_parked"), 0.0);
    assert!(s.get("rtm_uptime_seconds") > 0.0);
    assert!(
        !s.samples.keys().any(|k| k.starts_with("rtm_cluster_nodes")),
        "a server alone has no cluster gauge"
    );
    drop((reader, publisher));
}

fn check(answer: &HttpResponse, name: &str) -> serde_json::Value {
    let body: serde_json::Value = serde_json::from_str(&answer.body).unwrap();
    body["checks"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no check {name} in {body}"))
        .clone()
}

#[tokio::test]
async fn health_and_readiness_answer_on_a_server_alone() {
    let server = TestServer::start().await;
    let alive = http::get(server.http_addr(), "/healthz").await;
    assert_eq!(
        (alive.status, alive.body.as_str()),
        (200, r#"{"status":"ok"}"#)
    );
    let ready = http::get(server.http_addr(), "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(check(&ready, "storage")["ok"], true);
    assert_eq!(check(&ready, "listeners")["ok"], true);
    let missing = http::get(server.http_addr(), "/nothing").await;
    assert_eq!(missing.status, 404);
}

#[tokio::test]
async fn readiness_follows_redis_and_the_scrape_shows_the_cluster() {
    if !RedisServer::available() {
        return;
    }
    let mut cluster = TestCluster::start(2).await;
    let addr = cluster.node(0).http_addr();
    let (alice, _events) = cluster.node(0).login("alice").await;
    let s = Scrape::of(addr).await;
    assert_eq!(s.get("rtm_cluster_nodes"), 2.0);
    assert!(s.get("rtm_redis_command_duration_seconds_count") > 0.0);
    assert_eq!(s.get("rtm_redis_errors_total"), 0.0);
    assert_eq!(s.get("rtm_bus_events_dropped_total"), 0.0);
    let ready = http::get(addr, "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);
    assert_eq!(check(&ready, "redis")["ok"], true);

    cluster.redis().kill();
    let down = http::get(addr, "/readyz").await;
    assert_eq!(down.status, 503, "{}", down.body);
    assert_eq!(check(&down, "redis")["ok"], false);
    assert!(check(&down, "redis")["error"].as_str().is_some());
    // The liveness check does not depend on Redis.
    assert_eq!(http::get(addr, "/healthz").await.status, 200);

    cluster.redis().restart();
    within(EVENT_DEADLINE, "readiness to come back with Redis", async {
        while http::get(addr, "/readyz").await.status != 200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    let s = Scrape::of(addr).await;
    assert!(s.get("rtm_redis_errors_total") > 0.0);
    drop(alice);
}

#[tokio::test]
async fn the_status_page_and_its_numbers() {
    let server = TestServer::start().await;
    let addr = server.http_addr();
    let page = http::get(addr, "/").await;
    assert_eq!(page.status, 200);
    assert_eq!(
        page.header("content-type"),
        Some("text/html; charset=utf-8")
    );
    assert!(
        page.body.contains("fetch('status'"),
        "the page reads /status"
    );
    let (alice, _events) = server.login("alice").await;
    alice
        .subscribe("lobby", SubscribeOptions::default())
        .await
        .unwrap();
    let status: serde_json::Value =
        serde_json::from_str(&http::get(addr, "/status").await.body).unwrap();
    assert_eq!(status["connections"]["total"], 1, "{status}");
    assert_eq!(status["apps"][0]["app_id"], TEST_APP_ID);
    assert_eq!(status["apps"][0]["sessions"], 1);
    assert_eq!(status["busiest"][0]["channel"], "lobby");
    assert_eq!(status["subscriptions"], 1);
    assert_eq!(status["nodes"], 1);
    assert!(status["rates"].is_array());
    assert_eq!(status["errors"], serde_json::json!([]));
}
