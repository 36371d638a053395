//! Locks in Redis (`docs/architecture.md`, "Cluster"): each channel's locks are one record
//! (`locks.rs`) in a hash with a version. An operation reads the record, applies the rules in
//! Rust, and commits with a script only if the version is still the one read; the same script
//! rewrites the holders' hash (which lock-guarded metadata writes check in their own script),
//! schedules away locks for the sweepers, and publishes the lock events on the channel's bus and
//! the answers for waiting sessions to their nodes' inboxes, so that everyone sees one
//! channel's lock changes in commit order. A concurrent change makes it try again.
//!
//! Times: a holder that is lost keeps its locks until a time stored in the record and in the
//! shard's sorted set of away locks; every node sweeps that set each second and releases what
//! is due, so a lock's ttl holds even when the node of its holder is gone.

use std::sync::LazyLock;

use redis::Script;
use rtm_proto::{ChannelType, LockDetail, LockEventType, LockOp, LockRequest};
use serde::{Deserialize, Serialize};

use super::RedisEngine;
use super::envelope::{Envelope, LockGrant};
use super::keys;
use super::listeners::SetKey;
use super::lock_waits::Wait;
use super::locks::{Acquire, ChannelLocks, Effects};
use crate::clock::now_ms;
use crate::engine::memory::{LockChange, lock_frame, snapshot_change};
use crate::engine::{EngineError, LockError, LockOutcome, SessionHandle, SessionId};

/// Commits a channel's lock record if its version is unchanged. KEYS: the record hash, the
/// holders hash, the shard's away set, the shard's lock-channel set. ARGV: the version read,
/// the new record ('' for none), the channel's lock-channel entry, then how many holder pairs
/// (lock, user), away pairs (time, entry) and publish pairs (channel, payload) follow, and
/// those pairs. Returns the new version, or 0 if the record changed meanwhile.
static COMMIT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local v = redis.call('HGET', KEYS[1], 'v') or '0'
        if v ~= ARGV[1] then
            return 0
        end
        local version = redis.call('HINCRBY', KEYS[1], 'v', 1)
        if ARGV[2] == '' then
            redis.call('HDEL', KEYS[1], 'd')
            redis.call('SREM', KEYS[4], ARGV[3])
        else
            redis.call('HSET', KEYS[1], 'd', ARGV[2])
            redis.call('SADD', KEYS[4], ARGV[3])
        end
        redis.call('DEL', KEYS[2])
        local i = 7
        for _ = 1, tonumber(ARGV[4]) do
            redis.call('HSET', KEYS[2], ARGV[i], ARGV[i + 1])
            i = i + 2
        end
        for _ = 1, tonumber(ARGV[5]) do
            redis.call('ZADD', KEYS[3], ARGV[i], ARGV[i + 1])
            i = i + 2
        end
        for _ = 1, tonumber(ARGV[6]) do
            redis.call('PUBLISH', ARGV[i], ARGV[i + 1])
            i = i + 2
        end
        return version
        ",
    )
});

/// How many times an operation is tried against concurrent changes of the same channel.
const ATTEMPTS: usize = 16;
/// Locks released while their holder was away are told to it for this long (as on one node).
const EXPIRED_KEPT_MS: u64 = 3_600_000;
/// At most this many such locks are remembered per user.
const EXPIRED_PER_USER: isize = 64;

/// A lock released while its holder was away, as the user's list keeps it.
#[derive(Debug, Serialize, Deserialize)]
struct ExpiredRecord {
    at: u64,
    channel_type: ChannelType,
    channel: String,
    lock_name: String,
    ttl: u32,
}

/// The order of the `index`th event of the commit of `version`, as the listeners compare them:
/// one commit may cause several events (a release, and the grant to a waiter).
fn event_order(version: i64, index: u8) -> i64 {
    (version << 8) | i64::from(index)
}

fn decode(data: &[u8]) -> ChannelLocks {
    if data.is_empty() {
        return ChannelLocks::default();
    }
    postcard::from_bytes(data).unwrap_or_else(|e| {
        tracing::error!("unreadable lock record, read as empty: {e}");
        ChannelLocks::default()
    })
}

impl RedisEngine {
    /// A channel's lock record and its version ("0" when it was never written).
    pub(super) async fn read_locks(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<(ChannelLocks, String), EngineError> {
        let (record, _) = keys::lock_keys(app_id, channel_type, channel);
        let mut conn = self.channel_shard(app_id, channel).1;
        let mut cmd = redis::cmd("HMGET");
        cmd.arg(&record).arg("d").arg("v");
        let (data, version): (Option<Vec<u8>>, Option<String>) =
            self.run("locks", cmd.query_async(&mut conn)).await?;
        Ok((
            decode(&data.unwrap_or_default()),
            version.unwrap_or_else(|| "0".to_owned()),
        ))
    }

    /// Applies `op` to a channel's locks and commits it with what it causes; tries again
    /// (with `op` on the new record) when another change came in between.
    pub(super) async fn change_locks<T>(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        mut op: impl FnMut(&mut ChannelLocks) -> Result<(T, Effects), LockError>,
    ) -> Result<T, LockError> {
        let (record_key, holders_key) = keys::lock_keys(app_id, channel_type, channel);
        let entry = keys::lock_channel(app_id, channel_type, channel);
        let key: SetKey = (app_id.into(), channel_type, channel.into());
        let bus = keys::ChannelKeys::new(app_id, channel_type, channel).bus;
        for _ in 0..ATTEMPTS {
            let (before, version) = self.read_locks(app_id, channel_type, channel).await?;
            let mut after = before.clone();
            let (value, effects) = op(&mut after)?;
            if after == before && effects == Effects::default() {
                return Ok(value);
            }
            let next: i64 = version.parse::<i64>().unwrap_or(0) + 1;
            let data = if after.locks.is_empty() {
                Vec::new()
            } else {
                postcard::to_stdvec(&after).map_err(|e| {
                    EngineError::Unavailable(format!("lock record not encoded: {e}"))
                })?
            };
            let owners: Vec<(&str, &str)> = after.owners().collect();
            let mut publishes: Vec<(String, bytes::Bytes)> = effects
                .changes
                .iter()
                .zip(0..)
                .map(|(change, index)| {
                    let frame = lock_frame(&key, change.clone(), Vec::new());
                    let version = event_order(next, index);
                    (bus.clone(), Envelope::Lock { version, frame }.encode())
                })
                .collect();
            for grant in &effects.grants {
                let envelope = Envelope::LockGrant(LockGrant {
                    session: SessionId(grant.session),
                    granted: grant.granted,
                    app: app_id.to_owned(),
                    user: grant.user.clone(),
                    channel_type,
                    lock_name: grant.lock_name.clone(),
                    channel: channel.to_owned(),
                });
                let inbox = keys::inbox(SessionId(grant.session).node());
                publishes.push((inbox, envelope.encode()));
            }
            let mut invocation = COMMIT.prepare_invoke();
            invocation
                .key(&record_key)
                .key(&holders_key)
                .key(keys::LOCKS_AWAY)
                .key(keys::LOCK_CHANNELS)
                .arg(&version)
                .arg(data)
                .arg(&entry)
                .arg(owners.len())
                .arg(effects.expiries.len())
                .arg(publishes.len());
            for (lock, user) in &owners {
                invocation.arg(*lock).arg(*user);
            }
            for (lock, until) in &effects.expiries {
                invocation
                    .arg(*until)
                    .arg(keys::away_entry(*until, lock, &entry));
            }
            for (channel, payload) in &publishes {
                invocation.arg(channel).arg(payload.as_ref());
            }
            let mut conn = self.channel_shard(app_id, channel).1;
            let committed: i64 = self
                .run("lock change", invocation.invoke_async(&mut conn))
                .await?;
            if committed == 0 {
                continue;
            }
            self.after_lock_commit(app_id, &key, effects).await;
            return Ok(value);
        }
        Err(EngineError::Unavailable(format!(
            "lock change gave up after {ATTEMPTS} concurrent changes of the same channel"
        ))
        .into())
    }

    /// Keeps the users' indexes up to date after a commit: which channels each holds locks in,
    /// and the locks released while a user was away. A failure here is logged: the indexes
    /// are hints, every use checks them against the channel's record.
    async fn after_lock_commit(&self, app_id: &str, key: &SetKey, effects: Effects) {
        for expired in effects.expired {
            let record = ExpiredRecord {
                at: now_ms(),
                channel_type: key.1,
                channel: key.2.to_string(),
                lock_name: expired.lock_name,
                ttl: expired.ttl,
            };
            let Ok(bytes) = postcard::to_stdvec(&record) else {
                continue;
            };
            let list = keys::user_expired_locks(app_id, &expired.user);
            let mut pipe = redis::pipe();
            pipe.cmd("RPUSH")
                .arg(&list)
                .arg(bytes)
                .ignore()
                .cmd("LTRIM")
                .arg(&list)
                .arg(-EXPIRED_PER_USER)
                .arg(-1)
                .ignore()
                .cmd("PEXPIRE")
                .arg(&list)
                .arg(EXPIRED_KEPT_MS)
                .ignore();
            let mut conn = self.user_shard(app_id, &expired.user);
            if let Err(e) = self
                .run("expired locks", pipe.query_async::<()>(&mut conn))
                .await
            {
                tracing::warn!(user = %expired.user, "a lock released while away not recorded: {e}");
            }
        }
    }

    async fn index_command(&self, app_id: &str, user: &str, cmd: redis::Cmd) {
        let mut conn = self.user_shard(app_id, user);
        if let Err(e) = self
            .run("lock index", cmd.query_async::<()>(&mut conn))
            .await
        {
            tracing::warn!(%user, "user's lock index not updated: {e}");
        }
    }

    /// The channels (app, type, name) where `user` may hold locks.
    async fn channels_with_locks_of(
        &self,
        app_id: &str,
        user: &str,
    ) -> Result<Vec<(ChannelType, String)>, EngineError> {
        let mut cmd = redis::cmd("SMEMBERS");
        cmd.arg(keys::user_locks(app_id, user));
        let mut conn = self.user_shard(app_id, user);
        let entries: Vec<String> = self.run("lock index", cmd.query_async(&mut conn)).await?;
        Ok(entries
            .iter()
            .filter_map(|e| {
                let (app, channel_type, channel) = keys::parse_lock_channel(e)?;
                (app == app_id).then(|| (channel_type, channel.to_owned()))
            })
            .collect())
    }

    /// A lock call of `session`.
    pub(super) async fn lock_op(
        &self,
        session: &SessionHandle,
        request: LockRequest,
    ) -> Result<LockOutcome, LockError> {
        let LockRequest {
            channel_type,
            channel,
            lock_name,
            op,
        } = request;
        let app_id = session.app_id();
        let user = session.user_id();
        let name = lock_name.as_str();
        let retry = match op {
            LockOp::Acquire { retry } => retry,
            other => {
                self.change_locks(app_id, channel_type, &channel, |locks| {
                    let effects = match &other {
                        LockOp::Set { ttl } => locks.set(name, *ttl, user)?,
                        LockOp::Remove => locks.remove(name, user)?,
                        LockOp::Release => locks.release(name, user, user)?,
                        LockOp::Revoke { owner } => locks.release(name, owner, user)?,
                        LockOp::Acquire { .. } => Effects::default(),
                    };
                    Ok(((), effects))
                })
                .await?;
                return Ok(LockOutcome::Done);
            }
        };
        let wait: Wait = (
            session.id(),
            (app_id.into(), channel_type, channel.as_str().into()),
            lock_name.clone(),
        );
        // Indexed before the commit: the lock may be the user's from it on (now, or granted
        // later), and the index must then list the channel.
        self.index(app_id, user, channel_type, &channel).await?;
        // Registered before the commit: the answer may come before the commit returns.
        let answer = if retry {
            Some(self.inner.lock_waits.add(wait.clone())?)
        } else {
            None
        };
        let acquired = self
            .change_locks(app_id, channel_type, &channel, |locks| {
                Ok(match locks.acquire(name, user, session.id().0, retry)? {
                    Acquire::Now(change) => (
                        false,
                        Effects {
                            changes: vec![change],
                            ..Effects::default()
                        },
                    ),
                    Acquire::Held => (false, Effects::default()),
                    Acquire::Waiting => (true, Effects::default()),
                })
            })
            .await;
        match (acquired, answer) {
            (Ok(true), Some(answer)) => Ok(LockOutcome::Waiting(answer)),
            (result, answer) => {
                // Only the wait this call registered goes (an earlier call's stays).
                if answer.is_some() {
                    self.inner.lock_waits.cancel(&wait);
                }
                result.map(|_| LockOutcome::Done)
            }
        }
    }

    /// A channel's locks.
    pub(super) async fn lock_details(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<Vec<LockDetail>, EngineError> {
        Ok(self
            .read_locks(app_id, channel_type, channel)
            .await?
            .0
            .details())
    }

    /// Starts `session` listening to a channel's lock events: the snapshot, then the changes.
    pub(super) async fn listen_locks(
        &self,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<(), EngineError> {
        let app_id = session.app_id();
        let key: SetKey = (app_id.into(), channel_type, channel.into());
        if !self.inner.lock_listeners.start(session, key.clone()) {
            return Ok(());
        }
        match self.read_locks(app_id, channel_type, channel).await {
            Ok((locks, version)) => {
                let snapshot = lock_frame(&key, snapshot_change(), locks.details());
                // After every event of the commit it shows.
                let order = event_order(version.parse().unwrap_or(0), 0xff);
                self.inner
                    .lock_listeners
                    .activate(session.id(), &key, order, snapshot);
                Ok(())
            }
            Err(e) => {
                self.inner.lock_listeners.stop(session.id(), &key);
                Err(e)
            }
        }
    }

    /// `session` is lost (or ended): it waits for nothing any more, and the locks it holds
    /// are released after their ttl unless its user is back first.
    pub(super) async fn locks_away(&self, session: &SessionHandle) -> Result<(), EngineError> {
        let id = session.id();
        // Every channel is tried; the first failure is reported.
        let mut failed = None;
        for (app_id, channel_type, channel) in self.inner.lock_waits.take_session(id) {
            let forgotten = self
                .change_locks(&app_id, channel_type, &channel, |locks| {
                    locks.forget_waiter(id.0);
                    Ok(((), Effects::default()))
                })
                .await;
            if let Err(LockError::Engine(e)) = forgotten {
                failed.get_or_insert(e);
            }
        }
        let now = now_ms();
        let (app_id, user) = (session.app_id(), session.user_id());
        for (channel_type, channel) in self.channels_with_locks_of(app_id, user).await? {
            let away = self
                .change_locks(app_id, channel_type, &channel, |locks| {
                    Ok((locks.involves(user), locks.away(id.0, now)))
                })
                .await;
            match away {
                Ok(false) => self.unindex(app_id, user, channel_type, &channel).await,
                Err(LockError::Engine(e)) => {
                    failed.get_or_insert(e);
                }
                _ => {}
            }
        }
        failed.map_or(Ok(()), Err)
    }

    /// Takes a channel out of `user`'s lock index (the record shows it holds and waits for
    /// nothing there). An index entry is added before any commit that may make the user a
    /// holder, and removed only here, so that it is never missing for a lock the user holds.
    async fn unindex(&self, app_id: &str, user: &str, channel_type: ChannelType, channel: &str) {
        let mut cmd = redis::cmd("SREM");
        cmd.arg(keys::user_locks(app_id, user))
            .arg(keys::lock_channel(app_id, channel_type, channel));
        self.index_command(app_id, user, cmd).await;
    }

    /// Adds a channel to `user`'s lock index, before a commit that may make it a holder.
    async fn index(
        &self,
        app_id: &str,
        user: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Result<(), EngineError> {
        let mut cmd = redis::cmd("SADD");
        cmd.arg(keys::user_locks(app_id, user))
            .arg(keys::lock_channel(app_id, channel_type, channel));
        let mut conn = self.user_shard(app_id, user);
        self.run("lock index", cmd.query_async::<()>(&mut conn))
            .await
    }

    /// A session of the user is online: it holds the user's locks, and hears of the ones
    /// released while the user was away.
    pub(super) async fn locks_back(&self, session: &SessionHandle) -> Result<(), EngineError> {
        let app_id = session.app_id();
        let user = session.user_id();
        let mut failed = None;
        for (channel_type, channel) in self.channels_with_locks_of(app_id, user).await? {
            let back = self
                .change_locks(app_id, channel_type, &channel, |locks| {
                    locks.back(user, session.id().0);
                    Ok((locks.involves(user), Effects::default()))
                })
                .await;
            match back {
                Ok(false) => self.unindex(app_id, user, channel_type, &channel).await,
                Err(LockError::Engine(e)) => {
                    failed.get_or_insert(e);
                }
                _ => {}
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        let list = keys::user_expired_locks(app_id, user);
        let mut pipe = redis::pipe();
        pipe.atomic()
            .cmd("LRANGE")
            .arg(&list)
            .arg(0)
            .arg(-1)
            .cmd("DEL")
            .arg(&list)
            .ignore();
        let mut conn = self.user_shard(app_id, user);
        let (records,): (Vec<Vec<u8>>,) = self
            .run("expired locks", pipe.query_async(&mut conn))
            .await?;
        let now = now_ms();
        for record in records {
            let Ok(record) = postcard::from_bytes::<ExpiredRecord>(&record) else {
                continue;
            };
            if now.saturating_sub(record.at) >= EXPIRED_KEPT_MS {
                continue;
            }
            let key: SetKey = (app_id.into(), record.channel_type, record.channel.into());
            let change = LockChange {
                event_type: LockEventType::Expired,
                lock_name: record.lock_name,
                ttl: record.ttl,
                owner: String::new(),
                publisher: String::new(),
            };
            session.push(lock_frame(&key, change, Vec::new()));
        }
        Ok(())
    }
}
