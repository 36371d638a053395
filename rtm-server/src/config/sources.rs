//! Where settings come from, lowest first: the embedded defaults (`default.toml`, which
//! `rtm-server config` prints) or a file, then `RTM_...` environment variables, then
//! `--set key=value` flags.

use std::path::Path;

use super::{ConfigError, ServerConfig};

/// The full default configuration, with comments.
pub const DEFAULT_TOML: &str = include_str!("default.toml");

/// The top-level keys, for telling a setting (`RTM_HTTP__LISTEN`) from another program's
/// variable that happens to start with `RTM_` (`RTM_TEST_ENGINE`), which is left alone.
const TOP_KEYS: &[&str] = &[
    "listen",
    "data_dir",
    "cert_file",
    "key_file",
    "limits",
    "connection",
    "apps",
    "storage",
    "websocket",
    "web",
    "engine",
    "http",
];

/// The path of an environment variable's setting: `RTM_HTTP__ADMIN_KEY` is `http.admin_key`;
/// `None` for a variable that is not one.
pub fn env_path(name: &str) -> Option<Vec<String>> {
    let rest = name.strip_prefix("RTM_")?;
    let path: Vec<String> = rest.split("__").map(str::to_ascii_lowercase).collect();
    TOP_KEYS.contains(&path[0].as_str()).then_some(path)
}

/// A value as TOML reads it (`42`, `true`, `"text"`, `["a"]`, `{ k = 1 }`), or else as text.
fn value(text: &str) -> toml::Value {
    toml::from_str::<toml::Table>(&format!("v = {text}"))
        .ok()
        .and_then(|mut t| t.remove("v"))
        .unwrap_or_else(|| toml::Value::String(text.to_owned()))
}

/// Sets `path` in `table` to `text` as [`value`] reads it.
fn set(
    table: &mut toml::Table,
    path: &[String],
    text: &str,
    from: &str,
) -> Result<(), ConfigError> {
    put(table, path, value(text), from)
}

/// Puts `value` at `path` in `table`, making the sections on the way.
fn put(
    table: &mut toml::Table,
    path: &[String],
    value: toml::Value,
    from: &str,
) -> Result<(), ConfigError> {
    let invalid = |why: &str| ConfigError::Invalid(format!("{from}: {why}"));
    let Some((last, sections)) = path.split_last() else {
        return Err(invalid("no key"));
    };
    let mut at = table;
    for section in sections {
        let entry = at
            .entry(section.clone())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        at = entry
            .as_table_mut()
            .ok_or_else(|| invalid(&format!("{section} is not a section")))?;
    }
    if last.is_empty() {
        return Err(invalid("an empty key"));
    }
    at.insert(last.clone(), value);
    Ok(())
}

/// Sets `path` in `table` to `text` as text.
fn set_text(
    table: &mut toml::Table,
    path: &[String],
    text: &str,
    from: &str,
) -> Result<(), ConfigError> {
    put(table, path, toml::Value::String(text.to_owned()), from)
}

impl ServerConfig {
    /// The configuration from `file` (or the embedded defaults without one), then the
    /// `RTM_...` variables of `env`, then the `key=value` settings of `sets`; checked.
    pub fn load(
        file: Option<&Path>,
        env: impl IntoIterator<Item = (String, String)>,
        sets: &[String],
    ) -> Result<Self, ConfigError> {
        let (text, origin) = match file {
            Some(path) => (
                std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.into(),
                    source,
                })?,
                path.to_owned(),
            ),
            None => (DEFAULT_TOML.to_owned(), "(embedded defaults)".into()),
        };
        let mut table: toml::Table =
            toml::from_str(&text).map_err(|source| ConfigError::Parse {
                path: origin.clone(),
                source: Box::new(source),
            })?;
        // Whole sections before the keys inside them, whatever order the environment lists
        // its variables in.
        let mut settings: Vec<(Vec<String>, String, String)> = env
            .into_iter()
            .filter_map(|(name, text)| {
                let path = env_path(&name);
                if path.is_none() && name.starts_with("RTM_") {
                    tracing::debug!(variable = %name, "not a setting (no such section or key)");
                }
                Some((path?, text, name))
            })
            .collect();
        settings.sort_by_key(|(path, _, _)| path.len());
        for setting in sets {
            let (key, text) = setting
                .split_once('=')
                .ok_or_else(|| ConfigError::Invalid(format!("--set {setting}: write key=value")))?;
            let path: Vec<String> = key.trim().split('.').map(str::to_owned).collect();
            settings.push((path, text.trim().to_owned(), format!("--set {key}")));
        }
        for (path, text, from) in &settings {
            set(&mut table, path, text, from)?;
        }
        // A text that reads as a number or a boolean (a secret of digits) is meant as text when
        // its key takes text: the error names the key, and that setting is taken as text.
        let mut as_text = std::collections::HashSet::new();
        loop {
            match toml::Value::Table(table.clone()).try_into::<Self>() {
                Ok(config) => {
                    config.check()?;
                    return Ok(config);
                }
                Err(e) => {
                    let message = e.to_string();
                    let retry = settings.iter().find(|(path, text, _)| {
                        message.contains(&format!("`{}`", path.join(".")))
                            && !matches!(value(text), toml::Value::String(_))
                            && as_text.insert(path.clone())
                    });
                    let Some((path, text, from)) = retry else {
                        return Err(ConfigError::Invalid(message));
                    };
                    set_text(&mut table, path, text, from)?;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys of `table`, dotted, tables walked.
    fn keys(table: &toml::Table, prefix: &str, out: &mut Vec<String>) {
        for (k, v) in table {
            let key = format!("{prefix}{k}");
            match v {
                toml::Value::Table(t) => keys(t, &format!("{key}."), out),
                _ => out.push(key),
            }
        }
    }

    #[test]
    fn the_printed_defaults_are_the_defaults_and_list_every_key() {
        let parsed: ServerConfig = toml::from_str(DEFAULT_TOML).unwrap();
        assert_eq!(
            format!("{parsed:?}"),
            format!("{:?}", ServerConfig::default())
        );
        let serialized = toml::Table::try_from(ServerConfig::default()).unwrap();
        let template: toml::Table = toml::from_str(DEFAULT_TOML).unwrap();
        let (mut want, mut have) = (Vec::new(), Vec::new());
        keys(&serialized, "", &mut want);
        keys(&template, "", &mut have);
        // `apps` is an array of tables, listed commented out: an empty `apps = []` would clash
        // with the first `[[apps]]` a user adds.
        want.retain(|k| k != "apps");
        want.sort();
        have.sort();
        assert_eq!(have, want, "default.toml lists every key that has a value");
        // The optional ones are there, commented out.
        for key in [
            "cert_file",
            "key_file",
            "admin_key",
            "tls",
            "allowed_origins",
            "node_name",
        ] {
            assert!(DEFAULT_TOML.contains(&format!("# {key} = ")), "{key}");
        }
    }

    #[test]
    fn environment_and_flags_override_the_file_in_that_order() {
        let env = [
            ("RTM_LISTEN".to_owned(), "0.0.0.0:5000".to_owned()),
            (
                "RTM_HTTP__ADMIN_KEY".to_owned(),
                "from-the-environment".to_owned(),
            ),
            ("RTM_LIMITS__PUBLISH_RATE".to_owned(), "7".to_owned()),
            ("RTM_ENGINE__URLS".to_owned(), "[]".to_owned()),
            // Another program's variable: left alone.
            ("RTM_TEST_ENGINE".to_owned(), "redis".to_owned()),
            ("HOME".to_owned(), "/root".to_owned()),
        ];
        let sets = [
            "http.admin_key=from-the-command-line".to_owned(),
            "connection.outbound_queue = 9".to_owned(),
        ];
        let config = ServerConfig::load(None, env, &sets).unwrap();
        assert_eq!(config.listen.port(), 5000);
        assert_eq!(config.limits.publish_rate, 7);
        assert_eq!(config.connection.outbound_queue, 9);
        assert_eq!(
            config.http.admin_key.as_deref(),
            Some("from-the-command-line")
        );
        // Without a file, the embedded defaults: the WebSocket listener is on.
        assert!(config.websocket.listen.is_some());
    }

    #[test]
    fn a_secret_of_digits_stays_text_and_sections_come_before_their_keys() {
        let env = [
            (
                "RTM_HTTP__ADMIN_KEY".to_owned(),
                "12345678901234567890".to_owned(),
            ),
            ("RTM_LIMITS__PUBLISH_RATE".to_owned(), "9".to_owned()),
            // Listed after a key of its section: applied first all the same.
            (
                "RTM_HTTP".to_owned(),
                "{ listen = \"127.0.0.1:9999\" }".to_owned(),
            ),
        ];
        let config = ServerConfig::load(None, env, &[]).unwrap();
        assert_eq!(
            config.http.admin_key.as_deref(),
            Some("12345678901234567890")
        );
        assert_eq!(config.limits.publish_rate, 9);
        assert_eq!(config.http.listen.port(), 9999);
    }

    #[test]
    fn a_bad_setting_says_which() {
        let e = ServerConfig::load(
            None,
            [("RTM_LIMITS__PUBLISH_RATE".into(), "fast".into())],
            &[],
        )
        .unwrap_err();
        assert!(e.to_string().contains("publish_rate"), "{e}");
        let e = ServerConfig::load(None, [], &["nonsense".into()]).unwrap_err();
        assert!(e.to_string().contains("key=value"), "{e}");
        let e = ServerConfig::load(None, [], &["listen.port=1".into()]).unwrap_err();
        assert!(e.to_string().contains("not a section"), "{e}");
        let e = ServerConfig::load(None, [], &["limits.unknown=1".into()]).unwrap_err();
        assert!(e.to_string().contains("unknown"), "{e}");
    }
}
