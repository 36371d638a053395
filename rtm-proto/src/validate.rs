//! Validation of names, with the reference's lengths and character sets (`docs/protocol.md` §6).
//!
//! User ids and channel names: 1 to 64 characters from `a-z A-Z 0-9`, space, and
//! ``!#$%&()+-:;<=.>?@[]^_{}|~,``; a user id may not be the string `null`. Custom types: up to
//! 32 printable ASCII characters.

use crate::error::ErrorCode;
use crate::limits::{
    MAX_CHANNEL_NAME_LEN, MAX_CUSTOM_TYPE_LEN, MAX_TOPIC_META_LEN, MAX_TOPIC_NAME_LEN,
    MAX_USER_ID_LEN,
};

/// A name that broke a rule, with the code the reference gives that failure.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
#[error("{what}")]
pub struct InvalidName {
    /// The reference's code for this failure.
    pub code: ErrorCode,
    /// What is wrong, in words.
    pub what: String,
}

fn is_name_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b" !#$%&()+-:;<=.>?@[]^_{}|~,".contains(&c)
}

fn check_name(kind: &str, name: &str, max: usize, code: ErrorCode) -> Result<(), InvalidName> {
    let fail = |what: String| Err(InvalidName { code, what });
    if name.is_empty() {
        return fail(format!("{kind} is empty"));
    }
    if name.len() > max {
        return fail(format!(
            "{kind} is {} bytes long, the limit is {max}",
            name.len()
        ));
    }
    if let Some(c) = name
        .chars()
        .find(|c| !c.is_ascii() || !is_name_char(*c as u8))
    {
        return fail(format!("{kind} contains {c:?}, which is not allowed"));
    }
    Ok(())
}

/// Checks a user id. With `string_ids` false (the reference's `useStringUserId: false`), the id
/// must also be a decimal number.
pub fn user_id(id: &str, string_ids: bool) -> Result<(), InvalidName> {
    check_name("user id", id, MAX_USER_ID_LEN, ErrorCode::InvalidUserId)?;
    if id == "null" {
        return Err(InvalidName {
            code: ErrorCode::InvalidUserId,
            what: "user id may not be \"null\"".into(),
        });
    }
    if !string_ids && !id.bytes().all(|b| b.is_ascii_digit()) {
        return Err(InvalidName {
            code: ErrorCode::InvalidUserId,
            what: format!("user id {id:?} is not numeric, as use_string_user_id = false requires"),
        });
    }
    Ok(())
}

/// Checks a channel name.
pub fn channel_name(name: &str) -> Result<(), InvalidName> {
    check_name(
        "channel name",
        name,
        MAX_CHANNEL_NAME_LEN,
        ErrorCode::InvalidChannelName,
    )
}

/// Checks a topic name: 1 to 16 characters from the channel-name set.
pub fn topic_name(name: &str) -> Result<(), InvalidName> {
    check_name(
        "topic name",
        name,
        MAX_TOPIC_NAME_LEN,
        ErrorCode::ChannelInvalidTopicName,
    )
}

/// Checks a topic join's `meta`: at most 256 bytes.
pub fn topic_meta(meta: &str) -> Result<(), InvalidName> {
    if meta.len() > MAX_TOPIC_META_LEN {
        return Err(InvalidName {
            code: ErrorCode::ChannelInvalidTopicMeta,
            what: format!(
                "topic meta is {} bytes long, the limit is {MAX_TOPIC_META_LEN}",
                meta.len()
            ),
        });
    }
    Ok(())
}

/// Checks the pairs of a `SetState`: at most 32, keys of 1–64 bytes, values of at most 1 024
/// bytes (`docs/protocol.md` §5.8.1).
pub fn state(states: &crate::StateDetail) -> Result<(), InvalidName> {
    use crate::limits::{MAX_STATE_KEY_LEN, MAX_STATE_PAIRS, MAX_STATE_VALUE_LEN};
    let fail = |code, what: String| Err(InvalidName { code, what });
    if states.len() > MAX_STATE_PAIRS {
        return fail(
            ErrorCode::PresenceStateCountOverflow,
            format!(
                "{} state pairs, the limit is {MAX_STATE_PAIRS}",
                states.len()
            ),
        );
    }
    for (key, value) in states {
        if key.is_empty() {
            return fail(
                ErrorCode::PresenceInvalidStateKey,
                "a state key is empty".into(),
            );
        }
        if key.len() > MAX_STATE_KEY_LEN {
            return fail(
                ErrorCode::PresenceStateKeySizeOverflow,
                format!(
                    "state key of {} bytes, the limit is {MAX_STATE_KEY_LEN}",
                    key.len()
                ),
            );
        }
        if value.len() > MAX_STATE_VALUE_LEN {
            return fail(
                ErrorCode::PresenceStateValueSizeOverflow,
                format!(
                    "state value of {} bytes, the limit is {MAX_STATE_VALUE_LEN}",
                    value.len()
                ),
            );
        }
    }
    Ok(())
}

/// Checks a custom type (empty means none).
pub fn custom_type(t: &str) -> Result<(), InvalidName> {
    if t.len() > MAX_CUSTOM_TYPE_LEN {
        return Err(InvalidName {
            code: ErrorCode::ChannelCustomTypeLengthOverflow,
            what: format!(
                "custom type is {} bytes long, the limit is {MAX_CUSTOM_TYPE_LEN}",
                t.len()
            ),
        });
    }
    if let Some(c) = t.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) {
        return Err(InvalidName {
            code: ErrorCode::ChannelInvalidCustomType,
            what: format!("custom type contains {c:?}, which is not allowed"),
        });
    }
    Ok(())
}

/// Checks an App ID: 1 to 64 ASCII letters and digits.
pub fn app_id(id: &str) -> Result<(), InvalidName> {
    if id.is_empty() || id.len() > 64 || !id.bytes().all(|b| b.is_ascii_alphanumeric()) {
        return Err(InvalidName {
            code: ErrorCode::InvalidAppId,
            what: format!(
                "App ID {:?} is not 1 to 64 ASCII letters and digits",
                truncate(id)
            ),
        });
    }
    Ok(())
}

fn truncate(s: &str) -> &str {
    match s.char_indices().nth(64) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_ids() {
        assert!(user_id("Tony", true).is_ok());
        assert!(user_id("a b!#$%&()+-:;<=.>?@[]^_{}|~,", true).is_ok());
        assert!(user_id(&"x".repeat(64), true).is_ok());
        for bad in ["", "null", "tab\there", "é", "slash/", "quote\"", "star*"] {
            assert_eq!(
                user_id(bad, true).unwrap_err().code,
                ErrorCode::InvalidUserId,
                "{bad:?}"
            );
        }
        assert!(user_id(&"x".repeat(65), true).is_err());
        assert!(user_id("123456", false).is_ok());
        assert!(user_id("12a", false).is_err());
    }

    #[test]
    fn topic_names_and_meta() {
        assert!(topic_name("gesture").is_ok());
        assert!(topic_name(&"t".repeat(16)).is_ok());
        for bad in [String::new(), "t".repeat(17), "a/b".into()] {
            assert_eq!(
                topic_name(&bad).unwrap_err().code,
                ErrorCode::ChannelInvalidTopicName
            );
        }
        assert!(topic_meta(&"m".repeat(256)).is_ok());
        assert_eq!(
            topic_meta(&"m".repeat(257)).unwrap_err().code,
            ErrorCode::ChannelInvalidTopicMeta
        );
    }

    #[test]
    fn channel_names() {
        assert!(channel_name("chat_room").is_ok());
        assert!(channel_name(&"c".repeat(64)).is_ok());
        let err = channel_name(&"c".repeat(65)).unwrap_err();
        assert_eq!(err.code, ErrorCode::InvalidChannelName);
        assert!(channel_name("").is_err());
        assert!(channel_name("new\nline").is_err());
    }

    #[test]
    fn custom_types() {
        assert!(custom_type("").is_ok());
        assert!(custom_type("PlainText v2").is_ok());
        assert_eq!(
            custom_type(&"t".repeat(33)).unwrap_err().code,
            ErrorCode::ChannelCustomTypeLengthOverflow
        );
        assert_eq!(
            custom_type("tab\t").unwrap_err().code,
            ErrorCode::ChannelInvalidCustomType
        );
    }

    #[test]
    fn app_ids() {
        assert!(app_id("970CA35de60c44645bbae8a215061b33").is_ok());
        assert!(app_id("").is_err());
        assert!(app_id("has space").is_err());
    }
}
