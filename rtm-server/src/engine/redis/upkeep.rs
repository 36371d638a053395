//! The node's upkeep, each second: reaping dead nodes (`reaper.rs`), releasing the away locks
//! whose time has come on every shard (`lock_store.rs`), reading again the topic lists the bus
//! may have failed to bring (`topics.rs`) and correcting the publisher entries Redis did not
//! confirm (`topic_repairs.rs`); and, as they come, giving back locks granted to
//! sessions that stopped waiting.

use std::sync::{Arc, Weak};
use std::time::Duration;

use tokio::sync::mpsc;

use super::envelope::LockGrant;
use super::keys;
use super::locks::Effects;
use super::{Inner, RedisEngine};
use crate::clock::now_ms;
use crate::engine::{EngineError, LockError};

/// How often each node sweeps the away locks.
const SWEEP: Duration = Duration::from_secs(1);
/// Away locks handled per shard per sweep.
const SWEEP_BATCH: isize = 128;

impl RedisEngine {
    /// Answers the waits whose answer was lost on the way (pub/sub keeps nothing: a node that
    /// could not keep up, or a reconnect, can drop it): the record says the lock is the waiting
    /// session's, or that the lock is gone.
    async fn recheck_waits(&self) {
        for (session, (app_id, channel_type, channel), lock_name) in self.inner.lock_waits.pending()
        {
            let Ok((locks, _)) = self.read_locks(&app_id, channel_type, &channel).await else {
                continue;
            };
            let lock = locks.locks.iter().find(|l| l.name == lock_name);
            let granted = match lock.map(|l| l.holder.as_ref()) {
                None => false,
                Some(Some(holder)) if holder.session == session.0 => true,
                Some(_) => continue,
            };
            let user = lock
                .and_then(|l| l.holder.as_ref())
                .map_or_else(String::new, |h| h.user.clone());
            self.inner.lock_waits.answer_if_waiting(LockGrant {
                session,
                granted,
                app: app_id.to_string(),
                user,
                channel_type,
                lock_name,
                channel: channel.to_string(),
            });
        }
    }

    /// Releases every away lock of shard `shard` whose time has come.
    async fn sweep(&self, shard: usize) -> Result<(), EngineError> {
        let now = now_ms();
        let mut conn = self.inner.shards[shard].commands.clone();
        let mut cmd = redis::cmd("ZRANGEBYSCORE");
        cmd.arg(keys::LOCKS_AWAY)
            .arg("-inf")
            .arg(now)
            .arg("LIMIT")
            .arg(0)
            .arg(SWEEP_BATCH);
        let due: Vec<String> = self.run("away locks", cmd.query_async(&mut conn)).await?;
        for entry in due {
            if let Some((name, channel)) = keys::parse_away_entry(&entry)
                && let Some((app_id, channel_type, channel)) = keys::parse_lock_channel(channel)
            {
                let expired = self
                    .change_locks(app_id, channel_type, channel, |locks| {
                        Ok(((), locks.expire(name, now)))
                    })
                    .await;
                if let Err(LockError::Engine(e)) = expired {
                    return Err(e);
                }
            }
            let mut remove = redis::cmd("ZREM");
            remove.arg(keys::LOCKS_AWAY).arg(&entry);
            self.run("away locks", remove.query_async::<()>(&mut conn))
                .await?;
        }
        Ok(())
    }

    /// Gives up a lock granted to a session that no longer waits for it.
    async fn give_back(&self, grant: LockGrant) {
        let released = self
            .change_locks(&grant.app, grant.channel_type, &grant.channel, |locks| {
                let holder = locks
                    .locks
                    .iter()
                    .find(|l| l.name == grant.lock_name)
                    .and_then(|l| l.holder.as_ref());
                if holder.is_none_or(|h| h.session != grant.session.0) {
                    // Taken back by another session of the user, or gone: not ours to give.
                    return Ok(((), Effects::default()));
                }
                Ok((
                    (),
                    locks.release(&grant.lock_name, &grant.user, &grant.user)?,
                ))
            })
            .await;
        if let Err(e) = released {
            tracing::warn!(lock = %grant.lock_name, "a lock granted to a session that left was not given back: {e}");
        }
    }
}

/// The node's upkeep, until the engine goes: each second, reaps dead nodes, releases the away
/// locks that are due on every shard, answers lost lock waits, has Redis publish again the
/// topic lists this node may have missed and repairs the publisher entries Redis did not
/// confirm; and gives back the locks granted to sessions that stopped waiting.
pub(super) async fn upkeep(engine: Weak<Inner>, mut orphans: mpsc::UnboundedReceiver<LockGrant>) {
    let mut tick = tokio::time::interval(SWEEP);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {
                let Some(inner) = engine.upgrade() else { return };
                let engine = RedisEngine { inner };
                if let Err(e) = engine.reap_dead_nodes().await {
                    tracing::warn!("dead nodes not reaped: {e}");
                }
                for shard in 0..engine.inner.shards.len() {
                    if let Err(e) = engine.sweep(shard).await {
                        tracing::debug!(shard, "away locks not swept: {e}");
                    }
                }
                engine.recheck_waits().await;
                engine.refresh_topics().await;
                engine.repair_topics().await;
            }
            grant = orphans.recv() => {
                let Some(grant) = grant else { return };
                let Some(inner) = engine.upgrade() else { return };
                RedisEngine { inner }.give_back(grant).await;
            }
        }
    }
}

/// Lets `Arc<Inner>` be kept weakly by the upkeep task.
pub(super) fn weak(engine: &RedisEngine) -> Weak<Inner> {
    Arc::downgrade(&engine.inner)
}
