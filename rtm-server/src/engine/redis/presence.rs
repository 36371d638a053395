//! Presence in Redis: who is in each channel (quiet or not), their states, the channels where
//! each user is visible, and the leaves waiting out the debounce window.
//!
//! A channel's members are a hash (user -> session id) beside a sorted set of its visible users
//! (all scores 0, so Redis keeps them in name order and pages them with `ZRANGE ... BYLEX`). A
//! state is stored with the id of the session that set it, so that an old session of the user
//! (replaced by a login elsewhere) removes only what is its own.

use std::sync::LazyLock;

use redis::Script;
use rtm_proto::{ChannelDetail, ChannelType, StateDetail, UserState};

use super::RedisEngine;
use super::keys::{self, ChannelKeys};
use crate::engine::{EngineError, PresentPage, SessionHandle, SessionId, StateChange, StateError};

/// Makes a user a member (refused with -1 when the channel already has ARGV[4] members and the
/// user is not one of them), visible unless ARGV[3] is 1, and lists the channel (ARGV[5]) among
/// its node's (KEYS[3]).
static ADD_MEMBER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 0
            and redis.call('HLEN', KEYS[1]) >= tonumber(ARGV[4]) then
            return -1
        end
        redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
        redis.call('SADD', KEYS[3], ARGV[5])
        if ARGV[3] == '1' then
            redis.call('ZREM', KEYS[2], ARGV[1])
        else
            redis.call('ZADD', KEYS[2], 0, ARGV[1])
        end
        return 0
        ",
    )
});

/// Removes a member if the entry is still the session's, with its state; returns 1 if it did.
static REMOVE_MEMBER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local sid = ARGV[2]
        local removed = 0
        if redis.call('HGET', KEYS[1], ARGV[1]) == sid then
            redis.call('HDEL', KEYS[1], ARGV[1])
            redis.call('ZREM', KEYS[2], ARGV[1])
            removed = 1
        end
        local state = redis.call('HGET', KEYS[3], ARGV[1])
        if state and string.sub(state, 1, #sid + 1) == sid .. ':' then
            redis.call('HDEL', KEYS[3], ARGV[1])
        end
        return removed
        ",
    )
});

/// Writes a state (ARGV[4]) if ARGV[2] is still the user's member entry (else -1) and the
/// stored state is still ARGV[3] ('' for none; else 0); 1 when written.
static WRITE_STATE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('HGET', KEYS[1], ARGV[1]) ~= ARGV[2] then
            return -1
        end
        local current = redis.call('HGET', KEYS[2], ARGV[1]) or ''
        if current ~= ARGV[3] then
            return 0
        end
        redis.call('HSET', KEYS[2], ARGV[1], ARGV[4])
        return 1
        ",
    )
});

/// How many times a state change is tried against concurrent writers.
const STATE_ATTEMPTS: usize = 8;

/// Forgets a pending leave if it is still the one with this ticket; returns 1 if it was.
/// Either way that leave is no longer its node's to tell (its entry ARGV[3] leaves that node's
/// list, KEYS[2]).
static RELEASE_LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        redis.call('SREM', KEYS[2], ARGV[3])
        if redis.call('HGET', KEYS[1], ARGV[1]) == ARGV[2] then
            redis.call('HDEL', KEYS[1], ARGV[1])
            return 1
        end
        return 0
        ",
    )
});

/// The node that held the leave with `ticket` (tickets are numbered like session ids).
fn ticket_node(ticket: u64) -> u32 {
    SessionId(ticket).node()
}

/// A state as stored: the setting session's id, a colon, then the pairs (postcard).
fn encode_state(session: SessionId, state: &StateDetail) -> Vec<u8> {
    let mut out = format!("{}:", session.0).into_bytes();
    match postcard::to_stdvec(state) {
        Ok(pairs) => out.extend_from_slice(&pairs),
        // A map of strings always encodes; an empty state is the safe fallback.
        Err(e) => tracing::error!("state not encoded: {e}"),
    }
    out
}

/// The pairs of a stored state (empty if it does not read).
fn decode_state(stored: &[u8]) -> StateDetail {
    let Some(colon) = stored.iter().position(|b| *b == b':') else {
        return StateDetail::new();
    };
    postcard::from_bytes(&stored[colon + 1..]).unwrap_or_default()
}

impl RedisEngine {
    /// Makes `session` a member of a channel, visible unless `quiet`, if the channel has fewer
    /// than `max` members (counted in the whole cluster) or the user is one already; returns
    /// false when it is full.
    pub(super) async fn add_member(
        &self,
        session: &SessionHandle,
        (channel_type, channel): (ChannelType, &str),
        quiet: bool,
        max: usize,
    ) -> Result<bool, EngineError> {
        let app_id = session.app_id();
        let k = ChannelKeys::new(app_id, channel_type, channel);
        let user = session.user_id();
        let (_, mut conn) = self.channel_shard(app_id, channel);
        let mut invocation = ADD_MEMBER.prepare_invoke();
        invocation
            .key(&k.members)
            .key(&k.visible)
            .key(keys::node_channels(self.inner.node))
            .arg(user)
            .arg(session.id().0)
            .arg(u8::from(quiet))
            .arg(max)
            .arg(keys::lock_channel(app_id, channel_type, channel));
        let added: i64 = self.run("join", invocation.invoke_async(&mut conn)).await?;
        if added < 0 {
            return Ok(false);
        }
        let where_key = keys::user_channels(app_id, user);
        let entry = keys::where_entry(channel_type, channel);
        let mut conn = self.user_shard(app_id, user);
        let mut cmd = if quiet {
            redis::cmd("SREM")
        } else {
            redis::cmd("SADD")
        };
        cmd.arg(&where_key).arg(&entry);
        self.run("where", cmd.query_async::<()>(&mut conn)).await?;
        Ok(true)
    }

    /// Removes `session` from a channel's members (if it is still the user's entry there).
    pub(super) async fn remove_member(
        &self,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<(), EngineError> {
        let app_id = session.app_id();
        let k = ChannelKeys::new(app_id, channel_type, channel);
        let user = session.user_id();
        let (_, mut conn) = self.channel_shard(app_id, channel);
        let mut invocation = REMOVE_MEMBER.prepare_invoke();
        invocation
            .key(&k.members)
            .key(&k.visible)
            .key(&k.states)
            .arg(user)
            .arg(session.id().0.to_string());
        let removed: i64 = self
            .run("leave", invocation.invoke_async(&mut conn))
            .await?;
        if removed == 1 {
            let mut conn = self.user_shard(app_id, user);
            let mut srem_cmd = redis::cmd("SREM");
            srem_cmd
                .arg(keys::user_channels(app_id, user))
                .arg(keys::where_entry(channel_type, channel));
            let srem = srem_cmd.query_async::<()>(&mut conn);
            self.run("where", srem).await?;
        }
        Ok(())
    }

    pub(super) async fn count_present(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<usize, EngineError> {
        let k = ChannelKeys::new(app_id, channel_type, channel);
        let (_, mut conn) = self.channel_shard(app_id, channel);
        let mut zcard_cmd = redis::cmd("ZCARD");
        zcard_cmd.arg(&k.visible);
        let zcard = zcard_cmd.query_async(&mut conn);
        self.run("who", zcard).await
    }

    /// The states of `users` of a channel (empty for those without one).
    async fn states_of(
        &self,
        conn: &mut redis::aio::ConnectionManager,
        k: &ChannelKeys,
        users: &[String],
    ) -> Result<Vec<StateDetail>, EngineError> {
        if users.is_empty() {
            return Ok(Vec::new());
        }
        let stored: Vec<Option<Vec<u8>>> = self
            .run(
                "states",
                redis::cmd("HMGET")
                    .arg(&k.states)
                    .arg(users)
                    .query_async(conn),
            )
            .await?;
        Ok(stored
            .into_iter()
            .map(|s| s.map_or_else(StateDetail::new, |s| decode_state(&s)))
            .collect())
    }

    pub(super) async fn all_present(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<Vec<UserState>, EngineError> {
        let k = ChannelKeys::new(app_id, channel_type, channel);
        let (_, mut conn) = self.channel_shard(app_id, channel);
        let users: Vec<String> = self
            .run(
                "who",
                redis::cmd("ZRANGE")
                    .arg(&k.visible)
                    .arg(0)
                    .arg(-1)
                    .query_async(&mut conn),
            )
            .await?;
        let states = self.states_of(&mut conn, &k, &users).await?;
        Ok(users
            .into_iter()
            .zip(states)
            .map(|(user_id, states)| UserState { user_id, states })
            .collect())
    }

    pub(super) async fn page_present(
        &self,
        app_id: &str,
        (channel_type, channel): (ChannelType, &str),
        after: Option<&str>,
        limit: usize,
        with_states: bool,
    ) -> Result<PresentPage, EngineError> {
        let k = ChannelKeys::new(app_id, channel_type, channel);
        let (_, mut conn) = self.channel_shard(app_id, channel);
        let from = after.map_or_else(|| "-".to_owned(), |a| format!("({a}"));
        let mut pipe = redis::pipe();
        pipe.cmd("ZCARD").arg(&k.visible);
        pipe.cmd("ZRANGE")
            .arg(&k.visible)
            .arg(from)
            .arg("+")
            .arg("BYLEX")
            .arg("LIMIT")
            .arg(0)
            .arg(limit + 1);
        let (total, mut users): (usize, Vec<String>) =
            self.run("who", pipe.query_async(&mut conn)).await?;
        let more = users.len() > limit;
        users.truncate(limit);
        let states = if with_states {
            self.states_of(&mut conn, &k, &users).await?
        } else {
            vec![StateDetail::new(); users.len()]
        };
        let users = users
            .into_iter()
            .zip(states)
            .map(|(user_id, states)| UserState { user_id, states })
            .collect();
        Ok(PresentPage { total, users, more })
    }

    pub(super) async fn channels_of_user(
        &self,
        app_id: &str,
        user_id: &str,
    ) -> Result<Vec<ChannelDetail>, EngineError> {
        let mut conn = self.user_shard(app_id, user_id);
        let entries: Vec<String> = self
            .run(
                "where",
                redis::cmd("SMEMBERS")
                    .arg(keys::user_channels(app_id, user_id))
                    .query_async(&mut conn),
            )
            .await?;
        let mut channels: Vec<ChannelDetail> = entries
            .iter()
            .filter_map(|e| keys::parse_where_entry(e))
            .map(|(channel_type, channel)| ChannelDetail {
                channel_name: channel.to_owned(),
                channel_type,
            })
            .collect();
        crate::engine::sort_channels(&mut channels);
        Ok(channels)
    }

    pub(super) async fn change_state(
        &self,
        session: &SessionHandle,
        (channel_type, channel): (ChannelType, &str),
        change: StateChange,
        max_pairs: usize,
    ) -> Result<StateDetail, StateError> {
        let app_id = session.app_id();
        let k = ChannelKeys::new(app_id, channel_type, channel);
        let user = session.user_id();
        let (_, mut conn) = self.channel_shard(app_id, channel);
        for _ in 0..STATE_ATTEMPTS {
            let mut pipe = redis::pipe();
            pipe.hget(&k.members, user).hget(&k.states, user);
            let (member, stored): (Option<u64>, Option<Vec<u8>>) =
                self.run("state", pipe.query_async(&mut conn)).await?;
            if member != Some(session.id().0) {
                return Err(StateError::NotPresent);
            }
            let read = stored.unwrap_or_default();
            let mut current = if read.is_empty() {
                StateDetail::new()
            } else {
                decode_state(&read)
            };
            change.clone().apply(&mut current, max_pairs)?;
            // Written only if the session is still the member and the state is still the one
            // read: a newer login of the user elsewhere, or a concurrent change, is never
            // overwritten.
            let mut invocation = WRITE_STATE.prepare_invoke();
            invocation
                .key(&k.members)
                .key(&k.states)
                .arg(user)
                .arg(session.id().0)
                .arg(read)
                .arg(encode_state(session.id(), &current));
            let written: i64 = self
                .run("state", invocation.invoke_async(&mut conn))
                .await?;
            match written {
                1 => return Ok(current),
                -1 => return Err(StateError::NotPresent),
                _ => {}
            }
        }
        Err(EngineError::Unavailable("state changed concurrently too many times".into()).into())
    }

    pub(super) async fn state_of(
        &self,
        app_id: &str,
        (channel_type, channel): (ChannelType, &str),
        user_id: &str,
    ) -> Result<Option<StateDetail>, EngineError> {
        let k = ChannelKeys::new(app_id, channel_type, channel);
        let (_, mut conn) = self.channel_shard(app_id, channel);
        let mut pipe = redis::pipe();
        pipe.zscore(&k.visible, user_id).hget(&k.states, user_id);
        let (visible, stored): (Option<f64>, Option<Vec<u8>>) =
            self.run("state", pipe.query_async(&mut conn)).await?;
        Ok(visible.map(|_| stored.map_or_else(StateDetail::new, |s| decode_state(&s))))
    }

    pub(super) async fn hold(
        &self,
        app_id: &str,
        (channel_type, channel): (ChannelType, &str),
        user_id: &str,
    ) -> Result<u64, EngineError> {
        let k = ChannelKeys::new(app_id, channel_type, channel);
        let ticket = self.next_ticket();
        let (_, mut conn) = self.channel_shard(app_id, channel);
        // Listed under this node too, for a reaper to tell if the node dies before the
        // window ends (`release` unlists it).
        let mut pipe = redis::pipe();
        pipe.cmd("HSET")
            .arg(&k.leaving)
            .arg(user_id)
            .arg(ticket)
            .ignore()
            .cmd("SADD")
            .arg(keys::node_leaves(self.inner.node))
            .arg(keys::leave_entry(
                ticket,
                (app_id, channel_type, channel),
                user_id,
            ))
            .ignore();
        let held = pipe.query_async::<()>(&mut conn);
        self.run("debounce", held).await?;
        Ok(ticket)
    }

    pub(super) async fn release(
        &self,
        app_id: &str,
        (channel_type, channel): (ChannelType, &str),
        user_id: &str,
        ticket: u64,
    ) -> Result<bool, EngineError> {
        let k = ChannelKeys::new(app_id, channel_type, channel);
        let (_, mut conn) = self.channel_shard(app_id, channel);
        let mut invocation = RELEASE_LEAVE.prepare_invoke();
        invocation
            .key(&k.leaving)
            .key(keys::node_leaves(ticket_node(ticket)))
            .arg(user_id)
            .arg(ticket.to_string())
            .arg(keys::leave_entry(
                ticket,
                (app_id, channel_type, channel),
                user_id,
            ));
        let released: i64 = self
            .run("debounce", invocation.invoke_async(&mut conn))
            .await?;
        Ok(released == 1)
    }

    pub(super) async fn cancel(
        &self,
        app_id: &str,
        (channel_type, channel): (ChannelType, &str),
        user_id: &str,
    ) -> Result<bool, EngineError> {
        let k = ChannelKeys::new(app_id, channel_type, channel);
        let (_, mut conn) = self.channel_shard(app_id, channel);
        let mut hdel_cmd = redis::cmd("HDEL");
        hdel_cmd.arg(&k.leaving).arg(user_id);
        let hdel = hdel_cmd.query_async::<i64>(&mut conn);
        Ok(self.run("debounce", hdel).await? == 1)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_state_reads_back_and_a_damaged_one_reads_empty() {
        let state: StateDetail = [("mood".to_owned(), "a:b".to_owned())].into();
        let stored = encode_state(SessionId::new(2, 7), &state);
        assert!(stored.starts_with(format!("{}:", SessionId::new(2, 7).0).as_bytes()));
        assert_eq!(decode_state(&stored), state);
        assert_eq!(decode_state(b"12:\xff\xff"), StateDetail::new());
        assert_eq!(decode_state(b"no colon"), StateDetail::new());
    }
}
