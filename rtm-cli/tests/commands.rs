//! The `rtm` binary against a running server: who, where, history, meta, lock and bench print
//! what the server holds.

use rtm_client::{PublishOptions, SubscribeOptions};
use rtm_testkit::TestServer;

/// Runs `rtm ARGS` against `server` as user `cli`; returns its stdout, failing on an error.
async fn rtm(server: &TestServer, args: &[&str]) -> String {
    let mut command = std::process::Command::new(env!("CARGO_BIN_EXE_rtm"));
    command
        .arg("--server")
        .arg(server.addr().to_string())
        .arg("--cert")
        .arg(server.cert_path())
        .args(["--app-id", rtm_testkit::TEST_APP_ID, "--user-id", "cli"])
        .args(args)
        .env("RUST_BACKTRACE", "0");
    let output = tokio::task::spawn_blocking(move || command.output())
        .await
        .unwrap()
        .expect("running rtm");
    let stdout = String::from_utf8(output.stdout).unwrap();
    let stderr = String::from_utf8(output.stderr).unwrap();
    assert!(
        output.status.success(),
        "rtm {args:?} failed: {stderr}\n{stdout}"
    );
    stdout
}

#[tokio::test]
async fn the_operator_commands_print_what_the_server_holds() {
    let mut config = TestServer::config();
    config.limits.history_max_messages = 100;
    config.websocket.listen = None;
    let server = TestServer::start_with(config).await;
    let (alice, _events) = server.login("alice").await;
    let with_presence = SubscribeOptions {
        with_presence: true,
        ..Default::default()
    };
    alice.subscribe("room", with_presence).await.unwrap();
    let stored = PublishOptions {
        store_in_history: true,
        ..Default::default()
    };
    alice
        .publish("room", "kept for later", stored)
        .await
        .unwrap();

    assert_eq!(rtm(&server, &["who", "room"]).await.trim(), "alice");
    assert_eq!(
        rtm(&server, &["where", "alice"]).await.trim(),
        "MESSAGE room"
    );
    let history = rtm(&server, &["history", "room"]).await;
    assert!(
        history.trim().ends_with("alice: kept for later"),
        "{history}"
    );

    rtm(
        &server,
        &[
            "meta",
            "set",
            "--channel",
            "room",
            "topic=rust",
            "mood=calm",
        ],
    )
    .await;
    let meta = rtm(&server, &["meta", "get", "--channel", "room"]).await;
    assert!(meta.contains("topic=rust (revision"), "{meta}");
    assert!(meta.contains("mood=calm"), "{meta}");
    assert!(meta.contains("by cli"), "{meta}");
    rtm(&server, &["meta", "remove", "--channel", "room", "mood"]).await;
    let meta = rtm(&server, &["meta", "get", "--channel", "room"]).await;
    assert!(!meta.contains("mood"), "{meta}");

    rtm(&server, &["lock", "set", "room", "door", "--ttl", "30"]).await;
    assert_eq!(
        rtm(&server, &["lock", "list", "room"]).await.trim(),
        "door free (ttl 30 s)"
    );
    rtm(&server, &["lock", "remove", "room", "door"]).await;
    assert_eq!(rtm(&server, &["lock", "list", "room"]).await.trim(), "");

    let bench = rtm(&server, &["bench", "--count", "50", "--rate", "1000"]).await;
    assert!(bench.starts_with("50 round trips of 64 bytes"), "{bench}");
    assert!(bench.contains("p99"), "{bench}");
    drop(alice);
}

#[tokio::test]
async fn bench_with_its_defaults_stays_within_the_default_publish_rate() {
    let mut config = TestServer::config();
    config.limits.publish_rate = 60;
    config.websocket.listen = None;
    let server = TestServer::start_with(config).await;
    let bench = rtm(&server, &["bench"]).await;
    assert!(bench.starts_with("100 round trips of 64 bytes"), "{bench}");
}
