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
//! What the node had kept only in its memory (its clients' unacknowledged events, the leaves
//! it was debouncing) is gone with it.

use std::sync::{Arc, LazyLock};

use redis::Script;
use rtm_proto::ChannelType;

use super::keys::{self, ChannelKeys};
use super::locks::Effects;
use super::{RedisEngine, topics};
use crate::clock::now_ms;
use crate::engine::{EngineError, GoneMember, LockError, PresenceFlags, SessionHandle, SessionId};
use crate::metrics::Metrics;
use crate::outbox::Outbox;

/// Removes node ARGV[1] from the registry (KEYS[1]) if its last heartbeat is not after
/// ARGV[2]; returns 1 if this call removed it.
static CLAIM: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local beat = redis.call('ZSCORE', KEYS[1], ARGV[1])
        if beat and tonumber(beat) <= tonumber(ARGV[2]) then
            redis.call('ZREM', KEYS[1], ARGV[1])
            return 1
        end
        return 0
        ",
    )
});

/// Deletes a user's session key (KEYS[1]) if it still names a session of the dead node, whose
/// ids lie from ARGV[1] to ARGV[2].
static FREE_USER: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local sid = tonumber(redis.call('GET', KEYS[1]) or '0')
        if sid >= tonumber(ARGV[1]) and sid <= tonumber(ARGV[2]) then
            redis.call('DEL', KEYS[1])
            return 1
        end
        return 0
        ",
    )
});

/// A handle for a session of a dead node: it has the session's identity, and delivers nowhere.
fn ghost(id: SessionId, app_id: &str, user_id: &str) -> SessionHandle {
    let (outbox, _) = Outbox::new(1, Arc::new(Metrics::default()));
    SessionHandle::new(id, app_id, user_id, outbox)
}

impl RedisEngine {
    /// Reaps every node whose heartbeat is older than the node timeout (the heartbeat task
    /// and the lock upkeep call it each second).
    pub(super) async fn reap_dead_nodes(&self) -> Result<(), EngineError> {
        let timeout = u64::try_from(self.inner.node_timeout.as_millis()).unwrap_or(u64::MAX);
        let cutoff = now_ms().saturating_sub(timeout);
        let mut first = self.first_shard();
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(keys::NODES).arg("-inf").arg(cutoff);
        let dead: Vec<u32> = self.run("nodes", cmd.query_async(&mut first)).await?;
        for node in dead {
            if node == self.inner.node {
                // Our own heartbeat was late (Redis was away): we are alive, it will come.
                continue;
            }
            let mut claim = CLAIM.prepare_invoke();
            claim.key(keys::NODES).arg(node).arg(cutoff);
            let claimed: i64 = self.run("nodes", claim.invoke_async(&mut first)).await?;
            if claimed == 1 {
                tracing::warn!(node, "node silent for {timeout} ms: timing its users out");
                self.reap(node).await?;
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
            let mut cmd = redis::cmd("SMEMBERS");
            cmd.arg(keys::node_users(node));
            let users: Vec<String> = self.run("reap", cmd.query_async(&mut conn)).await?;
            for entry in users {
                let Some((app_id, user)) = entry.split_once(':') else {
                    continue;
                };
                let mut free = FREE_USER.prepare_invoke();
                free.key(keys::user_session(app_id, user))
                    .arg(first_id)
                    .arg(last_id);
                self.run("reap", free.invoke_async::<i64>(&mut conn))
                    .await?;
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
                .arg(keys::node_channels(node));
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
            };
            // Nobody takes them when the core is gone: nothing to tell then.
            let _ = self.inner.departures.send(gone);
        }
        Ok(())
    }
}
