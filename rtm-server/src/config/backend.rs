//! What an app's backend configures: where the app's events go (`[apps.webhook]`) and who may
//! call the Signaling REST API for it (`rest_credentials`).

use serde::{Deserialize, Serialize};

/// `[apps.webhook]`: the server POSTs the app's events to `url`, signed with `secret`.
///
/// ```toml
/// [apps.webhook]
/// url = "https://backend.example.com/rtm-events"
/// secret = "a long random secret"       # HMAC-SHA256 key of the signature
/// message_channels = ["orders"]         # also post messages published to these channels
/// # queue = 10000        # events waiting at most; more are dropped (and counted)
/// # timeout_ms = 5000    # one POST's deadline
/// # max_attempts = 5     # tries per batch, 0.5 s, 1 s, 2 s... apart
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct WebhookConfig {
    /// Where to POST (`http://` or `https://`).
    pub url: String,
    /// The key of the HMAC-SHA256 signature (`X-Rtm-Signature`), at least 16 characters.
    pub secret: String,
    /// Message channels whose published messages are posted too (default none).
    #[serde(default)]
    pub message_channels: Vec<String>,
    /// Events waiting to be posted, at most; beyond, new ones are dropped and counted
    /// (`rtm_webhook_events_dropped_total`). Default 10 000.
    #[serde(default = "default_queue")]
    pub queue: usize,
    /// Milliseconds one POST may take (connecting included). Default 5 000.
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u32,
    /// Tries per batch before it is dropped (and counted). Default 5.
    #[serde(default = "default_attempts")]
    pub max_attempts: u32,
}

fn default_queue() -> usize {
    10_000
}

fn default_timeout_ms() -> u32 {
    5_000
}

fn default_attempts() -> u32 {
    5
}

/// A Signaling REST API credential (HTTP Basic `key:secret`), as Agora's customer ID and
/// secret.
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RestCredential {
    /// The customer ID (the Basic user name).
    pub key: String,
    /// The customer secret (the Basic password).
    pub secret: String,
}

/// The shortest webhook or REST secret accepted.
const MIN_SECRET_LEN: usize = 16;

/// Checks an app's webhook and REST credentials; the error says what is wrong.
pub(super) fn check(app: &super::AppConfig) -> Result<(), String> {
    if let Some(hook) = &app.webhook {
        let url = url::Url::parse(&hook.url)
            .map_err(|e| format!("webhook url {:?} is not a URL: {e}", hook.url))?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(format!(
                "webhook url {:?} must be http:// or https:// with a host",
                hook.url
            ));
        }
        if hook.secret.chars().count() < MIN_SECRET_LEN {
            return Err(format!(
                "webhook secret must have at least {MIN_SECRET_LEN} characters"
            ));
        }
        for channel in &hook.message_channels {
            rtm_proto::validate::channel_name(channel)
                .map_err(|e| format!("webhook message_channels: {e}"))?;
        }
        if hook.queue == 0 || hook.max_attempts == 0 || hook.timeout_ms == 0 {
            return Err("webhook queue, max_attempts and timeout_ms must be above 0".into());
        }
    }
    let mut keys = std::collections::HashSet::new();
    for credential in &app.rest_credentials {
        if credential.key.is_empty() || credential.key.contains(':') {
            return Err("a rest_credentials key must be non-empty, without ':'".into());
        }
        if credential.secret.chars().count() < MIN_SECRET_LEN {
            return Err(format!(
                "rest_credentials secret of {} must have at least {MIN_SECRET_LEN} characters",
                credential.key
            ));
        }
        if !keys.insert(credential.key.as_str()) {
            return Err(format!(
                "rest_credentials key {} is listed twice",
                credential.key
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::AppConfig;

    fn app(hook: WebhookConfig) -> AppConfig {
        AppConfig {
            app_id: "app".into(),
            webhook: Some(hook),
            ..Default::default()
        }
    }

    fn hook(url: &str, secret: &str) -> WebhookConfig {
        WebhookConfig {
            url: url.into(),
            secret: secret.into(),
            message_channels: Vec::new(),
            queue: 10,
            timeout_ms: 100,
            max_attempts: 1,
        }
    }

    #[test]
    fn webhooks_need_an_http_url_and_a_long_secret() {
        let secret = "0123456789abcdef";
        assert!(check(&app(hook("https://example.com/hook", secret))).is_ok());
        for (url, secret, says) in [
            ("ftp://example.com/", secret, "http://"),
            ("not a url", secret, "not a URL"),
            ("https://example.com/", "short", "16 characters"),
        ] {
            let e = check(&app(hook(url, secret))).unwrap_err();
            assert!(e.contains(says), "{url}: {e}");
        }
        let mut bad_channel = hook("http://h/", secret);
        bad_channel.message_channels = vec!["no space".into()];
        assert!(
            check(&app(bad_channel)).is_ok(),
            "spaces are allowed in names"
        );
        let mut bad_channel = hook("http://h/", secret);
        bad_channel.message_channels = vec![String::new()];
        assert!(check(&app(bad_channel)).is_err());
    }

    #[test]
    fn rest_credentials_need_a_key_and_a_long_secret_once() {
        let credential = |key: &str, secret: &str| RestCredential {
            key: key.into(),
            secret: secret.into(),
        };
        let with = |list: Vec<RestCredential>| AppConfig {
            app_id: "app".into(),
            rest_credentials: list,
            ..Default::default()
        };
        let secret = "0123456789abcdef";
        assert!(check(&with(vec![credential("k", secret)])).is_ok());
        assert!(check(&with(vec![credential("", secret)])).is_err());
        assert!(check(&with(vec![credential("a:b", secret)])).is_err());
        assert!(check(&with(vec![credential("k", "short")])).is_err());
        assert!(
            check(&with(vec![
                credential("k", secret),
                credential("k", secret)
            ]))
            .is_err()
        );
    }
}
