//! The Redis engine over TLS (`rediss://`): a real `redis-server` with a TLS listener, whose
//! certificate the server trusts through the system's roots (here `SSL_CERT_FILE`, as an
//! operator's private CA would be installed), and one whose certificate nobody trusts.
//!
//! Its own test binary: it sets `SSL_CERT_FILE` for the whole process.

use std::time::Duration;

use rtm_client::{PublishOptions, SubscribeOptions};
use rtm_server::config::EngineKind;
use rtm_server::{Server, ServerConfig};
use rtm_testkit::RedisServer;
use rtm_testkit::{TestServer, expect_message, http};

/// A self-signed certificate and key for `localhost`, written to `dir`.
fn identity(dir: &std::path::Path, name: &str) -> (std::path::PathBuf, std::path::PathBuf) {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()]).unwrap();
    let cert = dir.join(format!("{name}.crt"));
    let key = dir.join(format!("{name}.key"));
    std::fs::write(&cert, certified.cert.pem()).unwrap();
    std::fs::write(&key, certified.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

fn redis_config(url: String) -> ServerConfig {
    let mut config = TestServer::config();
    config.engine.kind = EngineKind::Redis;
    config.engine.urls = vec![url];
    config.engine.command_timeout_ms = Some(2000);
    config
}

#[tokio::test]
async fn the_redis_engine_speaks_tls_and_checks_the_certificate() {
    if !RedisServer::available() {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (trusted_cert, trusted_key) = identity(dir.path(), "trusted");
    let (other_cert, other_key) = identity(dir.path(), "untrusted");
    // SAFETY: set before this binary's only test starts any other thread of its own; the
    // variable is read by rustls-native-certs when a TLS connection to Redis is set up.
    unsafe { std::env::set_var("SSL_CERT_FILE", &trusted_cert) };

    let redis = RedisServer::start_tls(&trusted_cert, &trusted_key);
    let url = redis.tls_url().unwrap();
    let server = TestServer::start_with(redis_config(url)).await;
    let ready = http::get(server.http_addr(), "/readyz").await;
    assert_eq!(ready.status, 200, "{}", ready.body);

    let (tony, _tony_events) = server.login("Tony").await;
    let (lily, mut lily_events) = server.login("Lily").await;
    lily.subscribe("chat_room", SubscribeOptions::default())
        .await
        .unwrap();
    tony.publish("chat_room", "over TLS", PublishOptions::default())
        .await
        .unwrap();
    let message = expect_message(&mut lily_events).await;
    assert_eq!(message.publisher, "Tony");
    // The traffic went through the TLS port: Redis counts the connections it took there.
    let clients = redis_clients_over_tcp(&redis);
    assert!(clients > 0, "no client on Redis's TLS port");
    server.shutdown().await;

    // A Redis whose certificate is not trusted: the server does not start, and says why.
    let untrusted = RedisServer::start_tls(&other_cert, &other_key);
    let mut config = redis_config(untrusted.tls_url().unwrap());
    config.listen = "127.0.0.1:0".parse().unwrap();
    config.data_dir = dir.path().join("data");
    config.http.listen = "127.0.0.1:0".parse().unwrap();
    let started = tokio::time::timeout(
        Duration::from_secs(30),
        Server::builder().config(config).start(),
    )
    .await
    .expect("the start ends");
    let err = match started {
        Ok(_) => panic!("the server started against an untrusted Redis"),
        Err(e) => e.to_string(),
    };
    assert!(
        err.to_lowercase().contains("certificate"),
        "the error does not name the certificate: {err}"
    );
}

/// How many clients Redis has on TCP (the TLS listener; the Unix socket is the test's own).
fn redis_clients_over_tcp(redis: &RedisServer) -> usize {
    let out = std::process::Command::new("redis-cli")
        .arg("-s")
        .arg(redis.socket())
        .arg("CLIENT")
        .arg("LIST")
        .output()
        .expect("redis-cli");
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| l.contains("addr=127.0.0.1:"))
        .count()
}
