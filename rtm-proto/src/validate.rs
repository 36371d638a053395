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

/// Checks a metadata write before it reaches the store: the channel type, the items' keys,
/// values, revisions and count, duplicate keys, the major revision and the lock name
/// (`docs/protocol.md` §5.9.2). Channel names and user ids are checked as everywhere else.
pub fn metadata_write(write: &crate::MetadataWrite) -> Result<(), InvalidName> {
    use crate::limits::{MAX_METADATA_ITEMS, MAX_METADATA_KEY_LEN, MAX_METADATA_VALUE_LEN};
    use crate::{MetadataOp, MetadataTarget};
    let fail = |code, what: String| Err(InvalidName { code, what });
    match &write.target {
        MetadataTarget::Channel {
            channel_type,
            channel,
        } => {
            if !matches!(
                channel_type,
                crate::ChannelType::Message | crate::ChannelType::Stream
            ) {
                return fail(
                    ErrorCode::InvalidChannelType,
                    format!("{channel_type} channels have no metadata"),
                );
            }
            channel_name(channel)?;
            if !write.options.lock_name.is_empty() {
                lock_name(&write.options.lock_name).map_err(|e| InvalidName {
                    code: ErrorCode::StorageInvalidLockName,
                    what: e.what,
                })?;
            }
        }
        MetadataTarget::User { user_id: id } => {
            user_id(id, true)?;
            if !write.options.lock_name.is_empty() {
                return fail(
                    ErrorCode::StorageInvalidLockName,
                    "locks belong to channels: a user's metadata cannot be written under one"
                        .into(),
                );
            }
        }
    }
    if write.options.major_revision < -1 {
        return fail(
            ErrorCode::StorageInvalidRevision,
            format!(
                "major revision {} is neither -1, 0 nor positive",
                write.options.major_revision
            ),
        );
    }
    if write.items.is_empty() && write.op != MetadataOp::Remove {
        return fail(
            ErrorCode::StorageInvalidMetadataItem,
            "no items to write".into(),
        );
    }
    if write.items.len() > MAX_METADATA_ITEMS {
        return fail(
            ErrorCode::StorageMetadataItemExceedLimitation,
            format!(
                "{} items, a set holds at most {MAX_METADATA_ITEMS}",
                write.items.len()
            ),
        );
    }
    for (i, item) in write.items.iter().enumerate() {
        if item.key.is_empty() {
            return fail(ErrorCode::StorageInvalidKey, "a key is empty".into());
        }
        if item.key.len() > MAX_METADATA_KEY_LEN {
            return fail(
                ErrorCode::StorageKeyLengthOverflow,
                format!(
                    "key of {} bytes, the limit is {MAX_METADATA_KEY_LEN}",
                    item.key.len()
                ),
            );
        }
        if item.key.chars().any(char::is_control) {
            return fail(
                ErrorCode::StorageInvalidKey,
                format!("key {:?} contains a control character", item.key),
            );
        }
        if item.value.len() > MAX_METADATA_VALUE_LEN {
            return fail(
                ErrorCode::StorageValueLengthOverflow,
                format!(
                    "value of {} bytes for key {:?}, the limit is {MAX_METADATA_VALUE_LEN}",
                    item.value.len(),
                    item.key
                ),
            );
        }
        if item.revision < -1 {
            return fail(
                ErrorCode::StorageInvalidRevision,
                format!(
                    "revision {} of key {:?} is neither -1, 0 nor positive",
                    item.revision, item.key
                ),
            );
        }
        if write.items[..i].iter().any(|other| other.key == item.key) {
            return fail(
                ErrorCode::StorageDuplicateKey,
                format!("key {:?} appears twice", item.key),
            );
        }
    }
    Ok(())
}

/// Checks a lock name: 1 to 64 printable ASCII characters.
pub fn lock_name(name: &str) -> Result<(), InvalidName> {
    use crate::limits::MAX_LOCK_NAME_LEN;
    let fail = |what: String| {
        Err(InvalidName {
            code: ErrorCode::LockInvalidName,
            what,
        })
    };
    if name.is_empty() {
        return fail("lock name is empty".into());
    }
    if name.len() > MAX_LOCK_NAME_LEN {
        return fail(format!(
            "lock name is {} bytes long, the limit is {MAX_LOCK_NAME_LEN}",
            name.len()
        ));
    }
    if let Some(c) = name.chars().find(|c| !(c.is_ascii_graphic() || *c == ' ')) {
        return fail(format!("lock name contains {c:?}, which is not allowed"));
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
    fn metadata_writes() {
        use crate::{MetadataItem, MetadataOp, MetadataOptions, MetadataTarget, MetadataWrite};
        let write = |op, items: Vec<MetadataItem>| MetadataWrite {
            op,
            target: MetadataTarget::Channel {
                channel_type: crate::ChannelType::Message,
                channel: "room".into(),
            },
            items,
            options: MetadataOptions::default(),
        };
        let code = |w: &MetadataWrite| metadata_write(w).err().map(|e| e.code);
        let ok = write(MetadataOp::Set, vec![MetadataItem::new("k", "v")]);
        assert_eq!(code(&ok), None);
        assert_eq!(code(&write(MetadataOp::Remove, vec![])), None);
        assert_eq!(
            code(&write(MetadataOp::Set, vec![])),
            Some(ErrorCode::StorageInvalidMetadataItem)
        );
        let key = |k: &str| write(MetadataOp::Set, vec![MetadataItem::new(k, "")]);
        assert_eq!(code(&key("")), Some(ErrorCode::StorageInvalidKey));
        assert_eq!(code(&key("a\nb")), Some(ErrorCode::StorageInvalidKey));
        assert_eq!(code(&key(&"k".repeat(32))), None);
        assert_eq!(
            code(&key(&"k".repeat(33))),
            Some(ErrorCode::StorageKeyLengthOverflow)
        );
        let value = |n| write(MetadataOp::Set, vec![MetadataItem::new("k", "v".repeat(n))]);
        assert_eq!(code(&value(16 * 1024)), None);
        assert_eq!(
            code(&value(16 * 1024 + 1)),
            Some(ErrorCode::StorageValueLengthOverflow)
        );
        let mut bad = ok.clone();
        bad.items[0].revision = -2;
        assert_eq!(code(&bad), Some(ErrorCode::StorageInvalidRevision));
        let mut bad = ok.clone();
        bad.options.major_revision = -5;
        assert_eq!(code(&bad), Some(ErrorCode::StorageInvalidRevision));
        let twice = write(
            MetadataOp::Update,
            vec![MetadataItem::new("k", "1"), MetadataItem::new("k", "2")],
        );
        assert_eq!(code(&twice), Some(ErrorCode::StorageDuplicateKey));
        let many = (0..129)
            .map(|i| MetadataItem::new(i.to_string(), ""))
            .collect();
        assert_eq!(
            code(&write(MetadataOp::Set, many)),
            Some(ErrorCode::StorageMetadataItemExceedLimitation)
        );
        let mut locked = ok.clone();
        locked.options.lock_name = "floor".into();
        assert_eq!(code(&locked), None);
        locked.options.lock_name = "x".repeat(65);
        assert_eq!(code(&locked), Some(ErrorCode::StorageInvalidLockName));
        let mut user = ok.clone();
        user.target = MetadataTarget::User {
            user_id: "u1".into(),
        };
        assert_eq!(code(&user), None);
        user.options.lock_name = "floor".into();
        assert_eq!(code(&user), Some(ErrorCode::StorageInvalidLockName));
        let mut typed = ok;
        typed.target = MetadataTarget::Channel {
            channel_type: crate::ChannelType::User,
            channel: "u1".into(),
        };
        assert_eq!(code(&typed), Some(ErrorCode::InvalidChannelType));
    }

    #[test]
    fn lock_names() {
        assert!(lock_name("the floor").is_ok());
        assert!(lock_name(&"l".repeat(64)).is_ok());
        for bad in ["", "tab\there", "é"] {
            assert_eq!(
                lock_name(bad).err().map(|e| e.code),
                Some(ErrorCode::LockInvalidName),
                "{bad:?}"
            );
        }
        assert!(lock_name(&"l".repeat(65)).is_err());
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
