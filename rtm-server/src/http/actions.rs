//! What a backend can do through the internal listener (the admin API and the Signaling REST
//! API), checked by the same rules as a client's request: names, sizes, the app's limits and
//! history settings. Each action names its app; an app this server does not serve is
//! `INVALID_APP_ID`.

use std::sync::Arc;

use rtm_proto::history::MAX_HISTORY_PAGE;
use rtm_proto::{
    ChannelDetail, ChannelType, ErrorCode, MetadataTarget, MetadataWrite, PublishRequest,
    StorageData, WireError, validate,
};

use super::Ops;
use crate::config::AppPolicy;
use crate::core::{Author, err, invalid, retention};
use crate::engine::{HistoryKey, HistoryPage, PresentPage};

impl Ops {
    /// The policy of `app_id`.
    pub(crate) fn policy(&self, app_id: &str) -> Result<Arc<AppPolicy>, WireError> {
        validate::app_id(app_id).map_err(invalid)?;
        self.node.core.app(app_id).ok_or_else(|| {
            err(
                ErrorCode::InvalidAppId,
                "this server does not serve that App ID",
            )
        })
    }

    /// Publishes as `publisher`; stores in the history first when `store`. Returns the
    /// message's timestamp.
    pub(crate) async fn publish(
        &self,
        app_id: &str,
        publisher: &str,
        publish: PublishRequest,
        store: bool,
    ) -> Result<u64, WireError> {
        let policy = self.policy(app_id)?;
        validate::user_id(publisher, true).map_err(invalid)?;
        let core = &self.node.core;
        core.check_publish(&policy, &publish)?;
        let retention = if store {
            Some(retention(&policy)?)
        } else {
            None
        };
        let author = Author {
            app_id,
            user_id: publisher,
        };
        core.publish(author, publish, retention).await
    }

    /// A page of a history, newest first: a message channel's, or with `between` the
    /// conversation of two users.
    pub(crate) async fn history(
        &self,
        app_id: &str,
        of: History<'_>,
        (count, start, end): (u32, u64, u64),
    ) -> Result<HistoryPage, WireError> {
        let policy = self.policy(app_id)?;
        let key = match of {
            History::Channel(channel) => {
                validate::channel_name(channel).map_err(invalid)?;
                HistoryKey::channel(channel)
            }
            History::Conversation(a, b) => {
                validate::user_id(a, true).map_err(invalid)?;
                validate::user_id(b, true).map_err(invalid)?;
                HistoryKey::conversation(a, b)
            }
        };
        if start != 0 && end > start {
            return Err(err(
                ErrorCode::HistoryInvalidTimestamp,
                format!("end {end} is after start {start}"),
            ));
        }
        let retention = retention(&policy)?;
        let count = match count {
            0 => MAX_HISTORY_PAGE,
            n => n.min(MAX_HISTORY_PAGE),
        };
        self.node
            .core
            .get_messages(app_id, key, (count, start, end), retention)
            .await
    }

    /// A page of a channel's visible users (`after`: the last user of the previous page).
    pub(crate) async fn who_now(
        &self,
        app_id: &str,
        (channel_type, channel): (ChannelType, &str),
        after: Option<&str>,
        with_states: bool,
    ) -> Result<PresentPage, WireError> {
        let policy = self.policy(app_id)?;
        if channel_type == ChannelType::User {
            return Err(err(
                ErrorCode::InvalidChannelType,
                "presence is for message and stream channels",
            ));
        }
        validate::channel_name(channel).map_err(invalid)?;
        if let Some(after) = after {
            validate::user_id(after, true).map_err(invalid)?;
        }
        let limit = policy.limits.presence_page_size as usize;
        self.node
            .core
            .present_page(app_id, (channel_type, channel), after, limit, with_states)
            .await
    }

    /// The channels where a user is visibly present.
    pub(crate) async fn where_now(
        &self,
        app_id: &str,
        user_id: &str,
    ) -> Result<Vec<ChannelDetail>, WireError> {
        self.policy(app_id)?;
        validate::user_id(user_id, true).map_err(invalid)?;
        self.node.core.user_channels(app_id, user_id).await
    }

    /// A metadata set.
    pub(crate) async fn get_metadata(
        &self,
        app_id: &str,
        target: MetadataTarget,
    ) -> Result<StorageData, WireError> {
        self.policy(app_id)?;
        check_target(&target)?;
        self.node.core.get_metadata(app_id, target).await
    }

    /// Writes metadata as `author`; returns the set after the write.
    pub(crate) async fn write_metadata(
        &self,
        app_id: &str,
        author: &str,
        write: MetadataWrite,
    ) -> Result<StorageData, WireError> {
        self.policy(app_id)?;
        validate::user_id(author, true).map_err(invalid)?;
        validate::metadata_write(&write).map_err(invalid)?;
        if !write.options.lock_name.is_empty() {
            return Err(err(
                ErrorCode::StorageInvalidArgument,
                "a backend's write cannot hold a lock (lock_name)",
            ));
        }
        let core = &self.node.core;
        let handle = core.backend_author(app_id, author);
        core.write_metadata(&handle, write).await
    }

    /// Disconnects `user_id`: its client is told (`KICKED_OUT_BY_SERVER`) and does not come
    /// back by itself. True if the user had a session.
    pub(crate) async fn disconnect(&self, app_id: &str, user_id: &str) -> Result<bool, WireError> {
        self.policy(app_id)?;
        validate::user_id(user_id, true).map_err(invalid)?;
        self.node.core.disconnect(app_id, user_id).await
    }
}

/// Whose history.
#[derive(Clone, Copy, Debug)]
pub(crate) enum History<'a> {
    /// A message channel's.
    Channel(&'a str),
    /// The messages between two users.
    Conversation(&'a str, &'a str),
}

fn check_target(target: &MetadataTarget) -> Result<(), WireError> {
    match target {
        MetadataTarget::Channel {
            channel_type: ChannelType::User,
            ..
        } => Err(err(
            ErrorCode::InvalidChannelType,
            "channel metadata is for message and stream channels",
        )),
        MetadataTarget::Channel { channel, .. } => validate::channel_name(channel).map_err(invalid),
        MetadataTarget::User { user_id } => validate::user_id(user_id, true).map_err(invalid),
    }
}
