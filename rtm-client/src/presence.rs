//! Presence calls: the reference's `rtm.presence`.
//!
//! Temporary state is per channel: `set_state` merges pairs into this user's state in a
//! channel it subscribed to (or joined), and every user there with presence receives the full
//! state in a `REMOTE_STATE_CHANGED` event. The state goes when the user leaves the channel.

pub use rtm_proto::ChannelDetail;
use rtm_proto::{ChannelType, Request, Response, StateDetail, UserState, validate};

use crate::{ErrorCode, RtmClient, RtmError, check, unexpected};

/// Most state pairs the client keeps for channels it has not subscribed to or joined yet (the
/// reference's figure).
const MAX_CACHED_STATES: usize = 100;

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

/// Options of [`Presence::who_now`], with the reference's defaults.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhoNowOptions {
    /// List the users (default true); otherwise only `total_occupancy` is filled.
    pub include_user_id: bool,
    /// With their states (default false; needs `include_user_id`).
    pub include_state: bool,
    /// The previous answer's `next_page`; `None` for the first page.
    pub page: Option<String>,
}

impl Default for WhoNowOptions {
    fn default() -> Self {
        Self {
            include_user_id: true,
            include_state: false,
            page: None,
        }
    }
}

/// A user in a [`WhoNowResponse`] (the reference's `OccupancyDetail`).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct OccupancyDetail {
    /// The user.
    pub user_id: String,
    /// Its state (empty unless asked for).
    pub states: StateDetail,
    /// How many pairs `states` has.
    pub states_count: usize,
}

/// The answer to [`Presence::who_now`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhoNowResponse {
    /// Visible users in the whole channel.
    pub total_occupancy: usize,
    /// This page's users.
    pub occupants: Vec<OccupancyDetail>,
    /// Pass as `page` for the next page; empty on the last one.
    pub next_page: String,
    /// Server time.
    pub timestamp: u64,
}

/// The answer to [`Presence::where_now`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct WhereNowResponse {
    /// The channels the user is in.
    pub channels: Vec<ChannelDetail>,
    /// How many.
    pub total_channel: usize,
    /// Server time.
    pub timestamp: u64,
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
        let key = (channel_type, channel_name.to_owned());
        if let Some(cached) = self.cache_if_absent(&key, |cached| {
            let mut merged = cached.clone();
            merged.extend(states.clone());
            merged
        })? {
            return Ok(cached);
        }
        let request = Request::SetState {
            channel_type,
            channel: channel_name.to_owned(),
            states: states.clone(),
        };
        let done = self.state_call("setState", request).await?;
        self.update_cache(key, |cached| cached.extend(states));
        Ok(done)
    }

    /// While the client is not in the channel, changes the cached state there instead of the
    /// server's (docs/protocol.md §5.8.1): `Some` answer when it did, `None` when the client is
    /// in the channel (or not logged in: the server then answers).
    fn cache_if_absent(
        &self,
        key: &(ChannelType, String),
        change: impl FnOnce(&StateDetail) -> StateDetail,
    ) -> Result<Option<StateResponse>, RtmError> {
        let mut state = self.client.inner.lock();
        let Some(session) = state.session.as_mut() else {
            return Ok(None);
        };
        if session.is_in(key.0, &key.1) {
            return Ok(None);
        }
        let merged = change(session.states.get(key).unwrap_or(&StateDetail::new()));
        let others: usize = session
            .states
            .iter()
            .filter(|(k, _)| *k != key && !session.is_in(k.0, &k.1))
            .map(|(_, s)| s.len())
            .sum();
        if others + merged.len() > MAX_CACHED_STATES {
            return Err(RtmError::new(
                ErrorCode::PresenceCachedTooManyStates,
                "setState",
                format!(
                    "at most {MAX_CACHED_STATES} state pairs wait for channels not yet \
                     subscribed or joined"
                ),
            ));
        }
        session.states.insert(key.clone(), merged);
        Ok(Some(StateResponse {
            timestamp: crate::now_ms(),
        }))
    }

    fn update_cache(&self, key: (ChannelType, String), change: impl FnOnce(&mut StateDetail)) {
        if let Some(session) = self.client.inner.lock().session.as_mut() {
            change(session.states.entry(key).or_default());
        }
    }

    /// Sends the state cached for a channel the client just arrived in.
    pub(crate) async fn apply_cached(
        &self,
        channel_type: ChannelType,
        channel: &str,
        states: StateDetail,
    ) {
        let request = Request::SetState {
            channel_type,
            channel: channel.to_owned(),
            states,
        };
        if let Err(e) = self.state_call("setState", request).await {
            tracing::warn!(channel, "could not apply the cached state: {e}");
        }
    }

    /// Removes keys (all of them when `options.states` is empty) from this user's state in a
    /// channel.
    pub async fn remove_state(
        &self,
        channel_name: &str,
        channel_type: ChannelType,
        options: RemoveStateOptions,
    ) -> Result<RemoveStateResponse, RtmError> {
        let key = (channel_type, channel_name.to_owned());
        let remove = |cached: &mut StateDetail, keys: &[String]| {
            if keys.is_empty() {
                cached.clear();
            } else {
                cached.retain(|k, _| !keys.contains(k));
            }
        };
        if let Some(cached) = self.cache_if_absent(&key, |cached| {
            let mut left = cached.clone();
            remove(&mut left, &options.states);
            left
        })? {
            return Ok(cached);
        }
        let request = Request::RemoveState {
            channel_type,
            channel: channel_name.to_owned(),
            keys: options.states.clone(),
        };
        let done = self.state_call("removeState", request).await?;
        self.update_cache(key, |cached| remove(cached, &options.states));
        Ok(done)
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

    /// Who is in a channel, a page at a time (the reference's `whoNow` / `getOnlineUsers`).
    /// Quiet users are not listed.
    pub async fn who_now(
        &self,
        channel_name: &str,
        channel_type: ChannelType,
        options: WhoNowOptions,
    ) -> Result<WhoNowResponse, RtmError> {
        let request = Request::WhoNow {
            channel_type,
            channel: channel_name.to_owned(),
            include_user_id: options.include_user_id,
            include_state: options.include_state,
            page: options.page.unwrap_or_default(),
        };
        match self.client.request("whoNow", request).await? {
            Response::WhoNow {
                total_occupancy,
                occupants,
                next_page,
                timestamp,
            } => Ok(WhoNowResponse {
                total_occupancy: total_occupancy as usize,
                occupants: occupants
                    .into_iter()
                    .map(|UserState { user_id, states }| OccupancyDetail {
                        user_id,
                        states_count: states.len(),
                        states,
                    })
                    .collect(),
                next_page,
                timestamp,
            }),
            other => Err(unexpected("whoNow", &other)),
        }
    }

    /// The reference's alias of [`Presence::who_now`].
    pub async fn get_online_users(
        &self,
        channel_name: &str,
        channel_type: ChannelType,
        options: WhoNowOptions,
    ) -> Result<WhoNowResponse, RtmError> {
        self.who_now(channel_name, channel_type, options).await
    }

    /// The channels where `user_id` is (message channels subscribed, stream channels joined;
    /// not the ones where it is quiet). An empty `user_id` means this client's user.
    pub async fn where_now(&self, user_id: &str) -> Result<WhereNowResponse, RtmError> {
        let user_id = if user_id.is_empty() {
            self.client.user_id()
        } else {
            user_id
        };
        let request = Request::WhereNow {
            user_id: user_id.to_owned(),
        };
        match self.client.request("whereNow", request).await? {
            Response::WhereNow {
                channels,
                timestamp,
            } => Ok(WhereNowResponse {
                total_channel: channels.len(),
                channels,
                timestamp,
            }),
            other => Err(unexpected("whereNow", &other)),
        }
    }

    /// The reference's alias of [`Presence::where_now`].
    pub async fn get_user_channels(&self, user_id: &str) -> Result<WhereNowResponse, RtmError> {
        self.where_now(user_id).await
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
