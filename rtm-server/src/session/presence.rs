//! The session's presence calls: states, `who_now` and `where_now` (`docs/protocol.md` §5.8).

use rtm_proto::{ChannelType, ErrorCode, Response, WireError, limits, validate};

use super::{Session, logged_in, not_joined, subscription_presence};
use crate::core::{err, invalid, now_ms};
use crate::engine::{Engine, StateChange};

/// Presence is for message and stream channels, with valid names.
fn check_presence_channel(channel_type: ChannelType, channel: &str) -> Result<(), WireError> {
    if channel_type == ChannelType::User {
        return Err(err(
            ErrorCode::InvalidChannelType,
            "presence is for message and stream channels",
        ));
    }
    validate::channel_name(channel).map_err(invalid)
}

/// The error for a channel this session is not in.
fn not_in(channel_type: ChannelType) -> WireError {
    match channel_type {
        ChannelType::Stream => not_joined(),
        _ => err(
            ErrorCode::ChannelNotSubscribed,
            "not subscribed to this channel",
        ),
    }
}

impl<E: Engine> Session<E> {
    /// Sets or removes pairs of this user's state in a channel it is in, and tells the others.
    pub(super) async fn change_state(
        &mut self,
        channel_type: ChannelType,
        channel: String,
        change: StateChange,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        check_presence_channel(channel_type, &channel)?;
        let flags = match channel_type {
            ChannelType::Stream => state.streams.get(&channel).map(|j| j.presence),
            _ => state.subscriptions.get(&channel).map(subscription_presence),
        };
        let Some(flags) = flags else {
            return Err(not_in(channel_type));
        };
        let full = self
            .core
            .update_state(&state.handle, channel_type, &channel, change)
            .await?;
        self.core
            .state_changed(&state.handle, channel_type, &channel, flags, full)
            .await;
        Ok(Response::State {
            timestamp: now_ms(),
        })
    }

    /// A present user's state.
    pub(super) async fn get_state(
        &mut self,
        channel_type: ChannelType,
        channel: String,
        user_id: String,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        check_presence_channel(channel_type, &channel)?;
        validate::user_id(&user_id, true).map_err(invalid)?;
        let states = self
            .core
            .get_state(state.handle.app_id(), channel_type, &channel, &user_id)
            .await?
            .ok_or_else(|| {
                err(
                    ErrorCode::PresenceUserNotExist,
                    format!("user {user_id} is not present in this channel"),
                )
            })?;
        Ok(Response::GetState {
            user_id,
            states,
            timestamp: now_ms(),
        })
    }

    /// A page of the channel's visible users (docs/protocol.md §5.8.2).
    pub(super) async fn who_now(
        &mut self,
        channel_type: ChannelType,
        channel: String,
        include_user_id: bool,
        include_state: bool,
        page: String,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        check_presence_channel(channel_type, &channel)?;
        if include_state && !include_user_id {
            return Err(err(
                ErrorCode::PresenceInvalidArgument,
                "include_state needs include_user_id",
            ));
        }
        let after = (!page.is_empty()).then_some(page.as_str());
        if let Some(after) = after {
            validate::user_id(after, true).map_err(|_| {
                err(
                    ErrorCode::PresenceInvalidArgument,
                    "page is not a next_page this server gave",
                )
            })?;
        }
        let limit = if include_user_id {
            state.policy.limits.presence_page_size as usize
        } else {
            0
        };
        let page = self
            .core
            .present_page(
                state.handle.app_id(),
                (channel_type, &channel),
                after,
                limit,
                include_state,
            )
            .await?;
        let mut users = page.users;
        // docs/protocol.md §2.2: a page of users with large states is cut short by bytes.
        let fit = rtm_proto::split::fitting(&users, limits::LIST_BUDGET);
        let more = page.more || fit < users.len();
        users.truncate(fit);
        let next_page = match users.last() {
            Some(last) if more => last.user_id.clone(),
            _ => String::new(),
        };
        Ok(Response::WhoNow {
            total_occupancy: u32::try_from(page.total).unwrap_or(u32::MAX),
            occupants: users,
            next_page,
            timestamp: now_ms(),
        })
    }

    /// The channels where a user is visibly present.
    pub(super) async fn where_now(&mut self, user_id: String) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::user_id(&user_id, true).map_err(invalid)?;
        let channels = self
            .core
            .user_channels(state.handle.app_id(), &user_id)
            .await?;
        Ok(Response::WhereNow {
            channels,
            timestamp: now_ms(),
        })
    }
}
