//! Dead nodes (`docs/operators.md`, "When a node dies"): a node that has not sent a heartbeat
//! for [`RedisConfig::node_timeout`](super::RedisConfig::node_timeout) is dead for the others.
//! The first live node to notice claims it (a script removes it from the registry, so exactly
//! one node reaps it) and cleans up after it, shard by shard:
//!
//! - its users' names are freed (a user message to them fails with "offline" again);
//! - its sessions leave every channel they were members of, publishers leave their topics,
//!   and the core tells the others each visible one timed out (`REMOTE_TIMEOUT`);
//! - the locks its sessions held start their ttl, as for a lost connection, and their waits
//!   are forgotten.
//!
//! The claim is a lease: a reap that fails midway (Redis away) or whose reaper dies is taken
//! over by another node once the lease runs out, and every step can be done twice. Times are
//! Redis's, so the nodes' clocks do not matter. A node that was only paused, and finds on its
//! next heartbeat that it was reaped, fences itself (see `heartbeat` in `mod.rs`).
//!
//! The leaves it was debouncing are listed under it in Redis: those still pending are told
//! (after a debounce window of the reaper's, so never early). What the node had kept only in its
//! memory (its clients' unacknowledged events) is gone with it.

use std::sync::{Arc, LazyLock};

use redis::Script;
use rtm_proto::ChannelType;

use super::keys::{self, ChannelKeys};
use super::locks::Effects;
use super::{RedisEngine, topics};
use crate::clock::now_ms;
use crate::engine::{
    Departed, EngineError, GoneMember, LockError, PresenceFlags, SessionHandle, SessionId,
};
use crate::metrics::Metrics;
use crate::outbox::Outbox;

/// Claims node ARGV[1] for reaping, at Redis's time (one clock for every node): if its last
/// heartbeat in the registry (KEYS[1]) is ARGV[2] ms old or more, it moves to the reaping set
/// (KEYS[2]) with a lease of ARGV[3] ms; a node already there whose lease ran out (its reaper
/// failed or died) is claimed again. Returns 1 if this call claimed it.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local lease = now + tonumber(ARGV[3])
        local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
        if beat and tonumber(beat) <= now - tonumber(ARGV[2]) then
            redis.call('ZREM', KEYS[1], ARGV[1])
            redis.call('ZADD', KEYS[2], lease, ARGV[1])
            return 1
        end
        local held = redis.call('ZSCORE', KEYS[2], ARGV[1])
        if held and tonumber(held) <= now then
            redis.call('ZADD', KEYS[2], lease, ARGV[1])
            return 1
        end
        return 0
        ",
    )
});

/// The nodes to try to claim: those whose heartbeat is ARGV[1] ms old or more (KEYS[1]) and
/// those whose reaping lease ran out (KEYS[2]), at Redis's time.
static DUE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local t = redis.call('TIME')
        local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
        local silent = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now - tonumber(ARGV[1]))
        local stalled = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now)
        for _, n in ipairs(stalled) do
            silent[#silent + 1] = n
        end
        return silent
        ",
    )
});

/// Deletes a user's session key (KEYS[1]) if it still holds exactly ARGV[1].
static FREE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if redis.call('GET', KEYS[1]) == ARGV[1] then
            return redis.call('DEL', KEYS[1])
        end
        return 0
        ",
    )
});

/// How long a reaper has to finish before another node takes the dead node over.
const LEASE_MS: u64 = 60_000;

/// A handle for a session of a dead node: it has the session's identity, and delivers nowhere.
pub(super) fn ghost(id: SessionId, app_id: &str, user_id: &str) -> SessionHandle {
    let (outbox, _) = Outbox::new(1, Arc::new(Metrics::default()));
    SessionHandle::new(id, app_id, user_id, outbox)
}

impl RedisEngine {
    /// Reaps every node whose heartbeat is older than the node timeout, and takes over the
    /// reaps whose reaper did not finish in time (the upkeep task, `upkeep.rs`, calls it each
    /// second).
    pub(super) async fn reap_dead_nodes(&self) -> Result<(), EngineError> {
        let timeout = u64::try_from(self.inner.node_timeout.as_millis()).unwrap_or(u64::MAX);
        let mut first = self.first_shard();
        let mut due = DUE.prepare_invoke();
        due.key(keys::NODES).key(keys::REAPING).arg(timeout);
        let dead: Vec<u32> = self.run("nodes", due.invoke_async(&mut first)).await?;
        for node in dead {
            if node == self.inner.node {
                // Our own heartbeat is late (Redis was away): the others may claim us; the
                // heartbeat finds out if they did.
                continue;
            }
            let mut claim = CLAIM.prepare_invoke();
            claim
                .key(keys::NODES)
                .key(keys::REAPING)
                .arg(node)
                .arg(timeout)
                .arg(LEASE_MS);
            let claimed: i64 = self.run("nodes", claim.invoke_async(&mut first)).await?;
            if claimed == 1 {
                tracing::warn!(node, "node silent for {timeout} ms: timing its users out");
                self.reap(node).await?;
                // Done: nobody needs to take it over.
                let mut done = redis::cmd("ZREM");
                done.arg(keys::REAPING).arg(node);
                self.run("nodes", done.query_async::<()>(&mut first))
                    .await?;
            }
        }
        Ok(())
    }

    /// Cleans up after dead node `node` on every shard.
    async fn reap(&self, node: u32) -> Result<(), EngineError> {
        let first_id = SessionId::new(node, 0).0;
        let last_id = first_id | ((1 << SessionId::COUNTER_BITS) - 1);
        let of_node = |sid: u64| (first_id..=last_id).contains(&sid);
        for shard in 0..self.inner.shards.len() {
            let mut conn = self.inner.shards[shard].commands.clone();
            // Its users' names.
            let mut gone_sessions = Vec::new();
            let mut cmd = redis::cmd("SMEMBERS");
            cmd.arg(keys::node_users(node));
            let users: Vec<String> = self.run("reap", cmd.query_async(&mut conn)).await?;
            for entry in users {
                let Some((app_id, user)) = entry.split_once(':') else {
                    continue;
                };
                // Compared in Rust: Lua's numbers would round ids this large.
                let key = keys::user_session(app_id, user);
                let mut get = redis::cmd("GET");
                get.arg(&key);
                let held: Option<String> = self.run("reap", get.query_async(&mut conn)).await?;
                let Some(held) = held.filter(|h| h.parse::<u64>().is_ok_and(&of_node)) else {
                    continue;
                };
                let mut free = FREE_USER.prepare_invoke();
                free.key(&key).arg(&held);
                let freed: i64 = self.run("reap", free.invoke_async(&mut conn)).await?;
                if freed == 1 {
                    // The user is no longer online: its session timed out with its node (told
                    // after its channels, as a session that ends leaves them first).
                    let id = SessionId(held.parse().unwrap_or_default());
                    gone_sessions.push(ghost(id, app_id, user));
                }
            }
            // Its members.
            let mut cmd = redis::cmd("SMEMBERS");
            cmd.arg(keys::node_channels(node));
            let channels: Vec<String> = self.run("reap", cmd.query_async(&mut conn)).await?;
            for entry in channels {
                if let Some((app_id, channel_type, channel)) = keys::parse_lock_channel(&entry) {
                    self.reap_channel(app_id, channel_type, channel, &of_node)
                        .await?;
                }
            }
            // Its leaves still in their debounce window.
            let mut cmd = redis::cmd("SMEMBERS");
            cmd.arg(keys::node_leaves(node));
            let leaves: Vec<String> = self.run("reap", cmd.query_async(&mut conn)).await?;
            for entry in leaves {
                if let Some((ticket, user, channel)) = keys::parse_leave_entry(&entry) {
                    self.reap_leave(channel, user, ticket).await?;
                }
            }
            for session in gone_sessions {
                let _ = self.inner.departures.send(Departed::Session(session));
            }
            // Its locks.
            let mut cmd = redis::cmd("SMEMBERS");
            cmd.arg(keys::LOCK_CHANNELS);
            let with_locks: Vec<String> = self.run("reap", cmd.query_async(&mut conn)).await?;
            let now = now_ms();
            for entry in with_locks {
                let Some((app_id, channel_type, channel)) = keys::parse_lock_channel(&entry) else {
                    continue;
                };
                let reaped = self
                    .change_locks(app_id, channel_type, channel, |locks| {
                        let mut effects = Effects::default();
                        locks.node_gone(of_node, now, &mut effects);
                        Ok(((), effects))
                    })
                    .await;
                if let Err(LockError::Engine(e)) = reaped {
                    return Err(e);
                }
            }
            let mut cmd = redis::cmd("DEL");
            cmd.arg(keys::node_users(node))
                .arg(keys::node_channels(node))
                .arg(keys::node_leaves(node));
            self.run("reap", cmd.query_async::<()>(&mut conn)).await?;
        }
        Ok(())
    }

    /// Removes the members of a channel that were sessions of the dead node, and hands each
    /// to the core to tell the others.
    async fn reap_channel(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        of_node: &impl Fn(u64) -> bool,
    ) -> Result<(), EngineError> {
        let k = ChannelKeys::new(app_id, channel_type, channel);
        let (_, mut conn) = self.channel_shard(app_id, channel);
        let mut cmd = redis::cmd("HGETALL");
        cmd.arg(&k.members);
        let members: Vec<(String, u64)> = self.run("reap", cmd.query_async(&mut conn)).await?;
        for (user, sid) in members.into_iter().filter(|(_, sid)| of_node(*sid)) {
            let mut cmd = redis::cmd("ZSCORE");
            cmd.arg(&k.visible).arg(&user);
            let visible: Option<f64> = self.run("reap", cmd.query_async(&mut conn)).await?;
            let session = ghost(SessionId(sid), app_id, &user);
            if channel_type == ChannelType::Stream {
                for topic in topics::topics_of(self, app_id, channel, sid).await? {
                    self.stop_publishing(&session, channel, &topic).await?;
                }
            }
            self.remove_member(&session, channel_type, channel).await?;
            let gone = GoneMember {
                session,
                channel_type,
                channel: channel.to_owned(),
                flags: PresenceFlags {
                    with_presence: false,
                    quiet: visible.is_none(),
                },
                left: false,
            };
            // Nobody takes them when the core is gone: nothing to tell then.
            let _ = self.inner.departures.send(Departed::Member(gone));
        }
        Ok(())
    }

    /// A leave that the dead node held in its debounce window (`ticket`, as listed): if it is
    /// still pending (the user did not come back, nor leave again), it is forgotten and handed
    /// to the core, which tells it after a debounce window of its own.
    async fn reap_leave(
        &self,
        (app_id, channel_type, channel): (&str, ChannelType, &str),
        user: &str,
        ticket: &str,
    ) -> Result<(), EngineError> {
        let k = ChannelKeys::new(app_id, channel_type, channel);
        let (_, mut conn) = self.channel_shard(app_id, channel);
        let mut cmd = redis::cmd("HGET");
        cmd.arg(&k.leaving).arg(user);
        let held: Option<String> = self.run("reap", cmd.query_async(&mut conn)).await?;
        // Compared as text, as for the users' names (Lua's numbers would round them).
        let Some(ticket) = held
            .filter(|held| held == ticket)
            .and_then(|t| t.parse::<u64>().ok())
        else {
            return Ok(());
        };
        if self
            .release(app_id, (channel_type, channel), user, ticket)
            .await?
        {
            let gone = GoneMember {
                session: ghost(SessionId(ticket), app_id, user),
                channel_type,
                channel: channel.to_owned(),
                flags: PresenceFlags {
                    with_presence: false,
                    quiet: false,
                },
                left: true,
            };
            let _ = self.inner.departures.send(Departed::Member(gone));
        }
        Ok(())
    }
}
