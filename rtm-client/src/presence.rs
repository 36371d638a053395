//! Presence calls: the reference's `rtm.presence`.
//!
//! Temporary state is per channel: `set_state` merges pairs into this user's state in a
//! channel it subscribed to (or joined), and every user there with presence receives the full
//! state in a `REMOTE_STATE_CHANGED` event. The state goes when the user leaves the channel.

use rtm_proto::{ChannelType, Request, Response, StateDetail, validate};

use crate::{RtmClient, RtmError, check, unexpected};

/// The presence calls of a client, from [`RtmClient::presence`].
#[derive(Clone, Debug)]
pub struct Presence {
    client: RtmClient,
}

/// The answer to [`Presence::set_state`] and [`Presence::remove_state`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StateResponse {
    /// Server time.
    pub timestamp: u64,
}

/// The answer to [`Presence::set_state`] (the reference's `SetStateResponse`).
pub type SetStateResponse = StateResponse;
/// The answer to [`Presence::remove_state`] (the reference's `RemoveStateResponse`).
pub type RemoveStateResponse = StateResponse;

/// The answer to [`Presence::get_state`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct GetStateResponse {
    /// The user.
    pub user_id: String,
    /// Its state in the channel.
    pub states: StateDetail,
    /// How many pairs `states` has.
    pub states_count: usize,
    /// Server time.
    pub timestamp: u64,
}

/// Options of [`Presence::remove_state`].
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RemoveStateOptions {
    /// The keys to remove; empty for all of them.
    pub states: Vec<String>,
}

impl RtmClient {
    /// The presence calls (the reference's `rtm.presence`).
    pub fn presence(&self) -> Presence {
        Presence {
            client: self.clone(),
        }
    }
}

impl Presence {
    /// Merges `states` into this user's state in a channel it is in (at most 32 pairs, keys of
    /// 1–64 bytes, values of at most 1 024 bytes).
    pub async fn set_state(
        &self,
        channel_name: &str,
        channel_type: ChannelType,
        states: StateDetail,
    ) -> Result<SetStateResponse, RtmError> {
        check(validate::state(&states), "setState")?;
        let request = Request::SetState {
            channel_type,
            channel: channel_name.to_owned(),
            states,
        };
        self.state_call("setState", request).await
    }

    /// Removes keys (all of them when `options.states` is empty) from this user's state in a
    /// channel.
    pub async fn remove_state(
        &self,
        channel_name: &str,
        channel_type: ChannelType,
        options: RemoveStateOptions,
    ) -> Result<RemoveStateResponse, RtmError> {
        let request = Request::RemoveState {
            channel_type,
            channel: channel_name.to_owned(),
            keys: options.states,
        };
        self.state_call("removeState", request).await
    }

    /// The state of `user_id` in a channel; `PRESENCE_USER_NOT_EXIST` (-13011) if the user is
    /// not there.
    pub async fn get_state(
        &self,
        user_id: &str,
        channel_name: &str,
        channel_type: ChannelType,
    ) -> Result<GetStateResponse, RtmError> {
        let request = Request::GetState {
            channel_type,
            channel: channel_name.to_owned(),
            user_id: user_id.to_owned(),
        };
        match self.client.request("getState", request).await? {
            Response::GetState {
                user_id,
                states,
                timestamp,
            } => Ok(GetStateResponse {
                user_id,
                states_count: states.len(),
                states,
                timestamp,
            }),
            other => Err(unexpected("getState", &other)),
        }
    }

    async fn state_call(
        &self,
        operation: &'static str,
        request: Request,
    ) -> Result<StateResponse, RtmError> {
        match self.client.request(operation, request).await? {
            Response::State { timestamp } => Ok(StateResponse { timestamp }),
            other => Err(unexpected(operation, &other)),
        }
    }
}
