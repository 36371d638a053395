//! Metadata in Redis: each set a hash with the set (`data`, postcard) and the revision of its
//! last write (`rev`), kept when the set is removed so that listeners can order what follows.
//!
//! A write reads the set, applies the revision rules in Rust (the same [`apply_metadata`] as
//! the single-node engine) with a revision taken from the shard's counter, and commits with a
//! script only if the set is still what was read, publishing the change on the set's bus in
//! the same script, so listeners everywhere get a set's changes in commit order. If another
//! write came in between, it tries again with the new set and a new revision. The revision
//! checks therefore see committed data, and two writers expecting the same revision cannot
//! both win.

use std::sync::LazyLock;

use redis::Script;
use rtm_proto::{ChannelType, MetadataTarget, MetadataWrite, StorageData, StorageEventType};

use super::RedisEngine;
use super::envelope::Envelope;
use super::keys::{self, ChannelKeys};
use super::listeners::SetKey;
use crate::clock::now_ms;
use crate::engine::memory::{apply_metadata, storage_frame};
use crate::engine::{EngineError, MetadataError, SessionHandle};

/// Writes committed only if the set is unchanged: KEYS[1] the set, KEYS[2] its bus, KEYS[3]
/// the channel's lock holders (`lock_store.rs`); ARGV[1] the data read ('' for none), ARGV[2]
/// the new data ('' to remove the set), ARGV[3] the revision, ARGV[4] the change's envelope,
/// ARGV[5] the lock that must be held ('' for none) and ARGV[6] by whom. Returns 1, 0 if the
/// set changed meanwhile, or -1 if the lock is not held by that user.
static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        if ARGV[5] ~= '' and redis.call('HGET', KEYS[3], ARGV[5]) ~= ARGV[6] then
            return -1
        end
        local current = redis.call('HGET', KEYS[1], 'data') or ''
        if current ~= ARGV[1] then
            return 0
        end
        if ARGV[2] == '' then
            redis.call('HDEL', KEYS[1], 'data')
        else
            redis.call('HSET', KEYS[1], 'data', ARGV[2])
        end
        redis.call('HSET', KEYS[1], 'rev', ARGV[3])
        redis.call('PUBLISH', KEYS[2], ARGV[4])
        return 1
        ",
    )
});

/// How many times a write is tried against concurrent writers before it reports a failure.
const ATTEMPTS: usize = 8;

/// The set `target` of `app_id` as the listeners' table keys it.
pub(super) fn set_key(app_id: &str, target: &MetadataTarget) -> SetKey {
    match target {
        MetadataTarget::Channel {
            channel_type,
            channel,
        } => (app_id.into(), *channel_type, channel.as_str().into()),
        MetadataTarget::User { user_id } => {
            (app_id.into(), ChannelType::User, user_id.as_str().into())
        }
    }
}

/// The bus where changes of a user's metadata go (its listeners' nodes listen to it).
pub(super) fn user_bus(app_id: &str, user_id: &str) -> String {
    format!("rtm:{app_id}:bum:{user_id}")
}

/// The hash holding a set, and the bus of its changes.
fn set_keys(app_id: &str, target: &MetadataTarget) -> (String, String) {
    match target {
        MetadataTarget::Channel {
            channel_type,
            channel,
        } => {
            let k = if *channel_type == ChannelType::Stream {
                's'
            } else {
                'm'
            };
            (
                format!("rtm:{app_id}:md{k}:{channel}"),
                ChannelKeys::new(app_id, *channel_type, channel).bus,
            )
        }
        MetadataTarget::User { user_id } => (
            format!("rtm:{app_id}:mdu:{user_id}"),
            user_bus(app_id, user_id),
        ),
    }
}

fn decode(data: &[u8]) -> Option<StorageData> {
    if data.is_empty() {
        return None;
    }
    match postcard::from_bytes(data) {
        Ok(set) => Some(set),
        Err(e) => {
            tracing::error!("unreadable metadata set, read as empty: {e}");
            None
        }
    }
}

impl RedisEngine {
    /// The connection of the shard holding `target`'s set.
    fn set_shard(&self, app_id: &str, target: &MetadataTarget) -> redis::aio::ConnectionManager {
        match target {
            MetadataTarget::Channel { channel, .. } => self.channel_shard(app_id, channel).1,
            MetadataTarget::User { user_id } => self.user_shard(app_id, user_id),
        }
    }

    /// The set (None when there is none) and the revision of its last write (0: never written).
    pub(super) async fn read_set(
        &self,
        app_id: &str,
        target: &MetadataTarget,
    ) -> Result<(Option<StorageData>, Vec<u8>, i64), EngineError> {
        let (key, _) = set_keys(app_id, target);
        let mut conn = self.set_shard(app_id, target);
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&key).arg("data").arg("rev");
        let (data, rev): (Option<Vec<u8>>, Option<i64>) =
            self.run("metadata", cmd.query_async(&mut conn)).await?;
        let data = data.unwrap_or_default();
        Ok((decode(&data), data, rev.unwrap_or(0)))
    }

    pub(super) async fn write_set(
        &self,
        author: &SessionHandle,
        write: MetadataWrite,
    ) -> Result<StorageData, MetadataError> {
        let app_id = author.app_id();
        let (key, bus) = set_keys(app_id, &write.target);
        // Only a channel's metadata can be guarded by one of its locks.
        let (holders, lock_name) = match &write.target {
            MetadataTarget::Channel {
                channel_type,
                channel,
            } => (
                keys::lock_keys(app_id, *channel_type, channel).1,
                write.options.lock_name.clone(),
            ),
            MetadataTarget::User { .. } => (String::new(), String::new()),
        };
        let counter = keys::revision_counter();
        if !lock_name.is_empty() {
            // Checked first, as on one node (a write with a stale revision as well fails for
            // the lock); the commit checks it again.
            let mut conn = self.set_shard(app_id, &write.target);
            let mut cmd = redis::cmd("HGET");
            cmd.arg(&holders).arg(&lock_name);
            let holder: Option<String> = self.run("locks", cmd.query_async(&mut conn)).await?;
            if holder.as_deref() != Some(author.user_id()) {
                return Err(MetadataError::LockNotHeld(lock_name));
            }
        }
        for _ in 0..ATTEMPTS {
            let (current, raw, _) = self.read_set(app_id, &write.target).await?;
            let mut conn = self.set_shard(app_id, &write.target);
            let mut incr = redis::cmd("INCR");
            incr.arg(&counter);
            let revision: i64 = self.run("revision", incr.query_async(&mut conn)).await?;
            let exists = current.is_some();
            let mut data = current.unwrap_or_default();
            let removed = apply_metadata(
                &mut data,
                exists,
                &write,
                author.user_id(),
                now_ms(),
                revision,
            )?;
            let new = if removed {
                Vec::new()
            } else {
                postcard::to_stdvec(&data).map_err(|e| {
                    EngineError::Unavailable(format!("metadata set not encoded: {e}"))
                })?
            };
            let frame = storage_frame(
                &write.target,
                StorageEventType::Update,
                author.user_id(),
                data.clone(),
            );
            let envelope = Envelope::Storage { revision, frame };
            let mut invocation = COMMIT.prepare_invoke();
            invocation
                .key(&key)
                .key(&bus)
                .key(&holders)
                .arg(raw)
                .arg(new)
                .arg(revision)
                .arg(envelope.encode().as_ref())
                .arg(&lock_name)
                .arg(author.user_id());
            let committed: i64 = self
                .run("metadata write", invocation.invoke_async(&mut conn))
                .await?;
            match committed {
                1 => return Ok(data),
                -1 => return Err(MetadataError::LockNotHeld(lock_name)),
                _ => {}
            }
        }
        Err(EngineError::Unavailable(format!(
            "metadata write gave up after {ATTEMPTS} concurrent writes to the same set"
        ))
        .into())
    }

    /// Starts `session` listening to a set: the snapshot first, then the changes after it.
    pub(super) async fn listen_set(
        &self,
        session: &SessionHandle,
        target: MetadataTarget,
    ) -> Result<(), EngineError> {
        let app_id = session.app_id();
        let set = set_key(app_id, &target);
        if !self.inner.listeners.start(session, set.clone()) {
            return Ok(());
        }
        match self.read_set(app_id, &target).await {
            Ok((data, _, revision)) => {
                let snapshot = storage_frame(
                    &target,
                    StorageEventType::Snapshot,
                    "",
                    data.unwrap_or_default(),
                );
                self.inner
                    .listeners
                    .activate(session.id(), &set, revision, snapshot);
                Ok(())
            }
            Err(e) => {
                self.inner.listeners.stop(session.id(), &set);
                Err(e)
            }
        }
    }
}
