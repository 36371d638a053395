//! The configuration's parsing and checks.

use super::*;

#[test]
fn websocket_is_on_without_a_file_and_off_in_a_file_that_does_not_ask() {
    assert_eq!(
        ServerConfig::default().websocket.listen,
        Some(SocketAddr::from(([127, 0, 0, 1], 4434)))
    );
    let file: ServerConfig = toml::from_str("listen = \"0.0.0.0:4433\"").unwrap();
    assert_eq!(file.websocket, WebSocketConfig::default());
    assert!(file.web.webtransport);
    let file: ServerConfig = toml::from_str(
        "[websocket]\nlisten = \"0.0.0.0:4434\"\n[web]\nallowed_origins = [\"https://a.example\"]",
    )
    .unwrap();
    assert!(file.websocket.uses_tls(), "TLS off loopback unless told");
    assert_eq!(
        file.web.allowed_origins.as_deref(),
        Some(&["https://a.example".to_owned()][..])
    );
    assert!(!WebSocketConfig::dev().uses_tls(), "plain on loopback");
}

#[test]
fn the_issue_example_parses() {
    let config: ServerConfig = toml::from_str(
        r#"
        listen = "127.0.0.1:4433"
        data_dir = "rtm-data"
        [[apps]]
        app_id = "970CA35de60c44645bbae8a215061b33"
        app_certificate = "5CFd2fd1755d40ecb72977518be15d3b"
        "#,
    )
    .unwrap();
    config.check().unwrap();
    let apps = config.apps();
    assert!(!apps.open);
    assert!(apps.get("970CA35de60c44645bbae8a215061b33").is_some());
    assert!(apps.get("other").is_none());
}

#[test]
fn app_limits_override_the_server_wide_ones() {
    let config: ServerConfig = toml::from_str(
        r#"
        [limits]
        publish_rate = 10
        max_subscriptions = 5
        [[apps]]
        app_id = "a1"
        [apps.limits]
        publish_rate = 100
        "#,
    )
    .unwrap();
    config.check().unwrap();
    let a1 = config.apps().get("a1").unwrap();
    assert_eq!(a1.limits.publish_rate, 100);
    assert_eq!(a1.limits.max_subscriptions, 5);
}

#[test]
fn empty_config_serves_any_app_with_reference_limits() {
    let config: ServerConfig = toml::from_str("").unwrap();
    config.check().unwrap();
    let any = config.apps().get("whatever").unwrap();
    assert_eq!(any.limits, Limits::default());
    assert_eq!(any.limits.max_message_size, 32 * 1024);
}

#[test]
fn from_file_reads_and_checks() {
    let dir = tempfile::tempdir().unwrap();
    let good = dir.path().join("good.toml");
    std::fs::write(
        &good,
        "listen = \"0.0.0.0:5000\"\n[connection]\noutbound_queue = 8\n",
    )
    .unwrap();
    let config = ServerConfig::from_file(&good).unwrap();
    assert_eq!(config.listen.port(), 5000);
    assert_eq!(config.connection.outbound_queue, 8);
    let bad = dir.path().join("bad.toml");
    std::fs::write(&bad, "[limits]\npublish_rate = 0\n").unwrap();
    assert!(matches!(
        ServerConfig::from_file(&bad),
        Err(ConfigError::Invalid(_))
    ));
    let typo = dir.path().join("typo.toml");
    std::fs::write(&typo, "lisen = \"127.0.0.1:1\"\n").unwrap();
    let err = ServerConfig::from_file(&typo).unwrap_err();
    assert!(matches!(err, ConfigError::Parse { .. }), "{err}");
    assert!(err.to_string().contains("lisen"), "{err}");
    let missing = ServerConfig::from_file(&dir.path().join("missing.toml")).unwrap_err();
    assert!(matches!(missing, ConfigError::Read { .. }));
}

#[test]
fn inconsistent_values_are_refused() {
    for text in [
        "cert_file = \"c.pem\"",
        "[limits]\npublish_rate = 0",
        "[limits]\nmax_message_size = 100000",
        "[limits]\npresence_announce_max = 7",
        "[limits]\npresence_announce_max = 129",
        "[limits]\npresence_interval_secs = 4",
        "[limits]\npresence_page_size = 0",
        "[limits]\npresence_debounce_ms = 10001",
        "[limits]\ntopic_publish_rate = 0",
        "[[apps]]\napp_id = \"a\"\n[apps.limits]\npresence_interval_secs = 301",
        "[[apps]]\napp_id = \"a\"\n[[apps]]\napp_id = \"a\"",
        "[[apps]]\napp_id = \"bad id\"",
        "[connection]\ndelivery_lanes = 3",
        "[connection]\ndelivery_lanes = 32",
        "[connection]\ndelivery_lanes = 0",
        "[connection]\nclient_ack_delay_ms = 0",
        "[connection]\nclient_ack_delay_ms = 100",
        "[connection]\nmax_frame_len = 4294967295",
        "[connection]\nmax_frame_len = 1048577",
        "[connection]\nmax_frame_len = 100",
        "[connection]\nmax_session_bytes = 1000",
        "[connection]\nmax_connections = 0",
        "[connection]\nmax_connections_per_address = 0",
        "[connection]\nhandshake_rate = 0",
    ] {
        let config: ServerConfig = toml::from_str(text).unwrap();
        assert!(config.check().is_err(), "{text}");
    }
    assert!(toml::from_str::<ServerConfig>("unknown_key = 1").is_err());
}

#[test]
fn certificates_that_token_builders_refuse_are_refused() {
    let app = "970CA35de60c44645bbae8a215061b33";
    let cert = "5CFd2fd1755d40ecb72977518be15d3b";
    let config = |app_id: &str, certificate: &str| -> ServerConfig {
        let text = format!("[[apps]]\napp_id = \"{app_id}\"\napp_certificate = \"{certificate}\"");
        toml::from_str(&text).unwrap()
    };
    config(app, cert).check().unwrap();
    for bad in [
        "",
        "5CFd2fd1755d40ecb72977518be15d3",
        "5CFd2fd1755d40ecb72977518be15d3b0",
        "5CFd2fd1755d40ecb72977518be15d3g",
    ] {
        let err = config(app, bad).check().unwrap_err().to_string();
        assert!(
            err.contains(app) && err.contains("app_certificate must be 32 hexadecimal"),
            "{bad:?}: {err}"
        );
    }
    // A secured app needs an App ID the token builders accept; an open one does not.
    let err = config("devapp", cert).check().unwrap_err().to_string();
    assert!(
        err.contains("devapp") && err.contains("App ID of 32 hexadecimal"),
        "{err}"
    );
    let open: ServerConfig = toml::from_str("[[apps]]\napp_id = \"devapp\"").unwrap();
    open.check().unwrap();
}
