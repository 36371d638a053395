//! Metadata and locks of the single-node engine, and who listens to them.
//!
//! Three mutexes (the database, the lock table, the listeners, always taken in that order)
//! serialise every metadata write and lock operation with the events it causes, so that a
//! check and its write are atomic, and every listener sees the changes of a set or a channel's
//! locks in the order they happened, after its snapshot. Work on the database may wait for the
//! disk (a commit), so it runs on tokio's blocking threads ([`Storage::run`]), never on the
//! runtime's workers, and writes share their commits ([`super::commit`]). Stored messages
//! (history) live in the same database.

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use rtm_proto::{
    ChannelType, Event, HistoryMessage, LockDetail, LockEvent, LockEventType, LockOp, LockRequest,
    MetadataTarget, MetadataWrite, ServerMsg, StorageData, StorageEvent, StorageEventType,
    StorageType, encode_frame,
};

use super::commit::{Finish, Queue, Slot};
use super::locks::{Acquired, AwayLock, ChannelKey, LockChange, LockTable};
use super::metadata::{Durability, MetadataDb, Reader};
use crate::clock::now_ms;
use crate::engine::{
    EngineError, HistoryKey, HistoryPage, LockError, LockOutcome, MetadataError, Retention,
    SessionHandle, SessionId,
};

/// A user of an app.
type UserKey = (Box<str>, Box<str>);

/// Sessions by id.
type Audience = HashMap<SessionId, SessionHandle>;

/// Who receives which storage and lock events.
#[derive(Debug, Default)]
struct Listeners {
    /// Channel metadata (`with_metadata`).
    metadata: HashMap<ChannelKey, Audience>,
    /// Channel locks (`with_lock`).
    locks: HashMap<ChannelKey, Audience>,
    /// User metadata (`subscribe_user_metadata`).
    users: HashMap<UserKey, Audience>,
    /// What each session listens to, so that detaching does not scan the maps.
    of_session: HashMap<SessionId, Vec<Listening>>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum Listening {
    Metadata(ChannelKey),
    Locks(ChannelKey),
    User(UserKey),
}

impl Listeners {
    fn audience(&self, what: &Listening) -> Option<&Audience> {
        match what {
            Listening::Metadata(key) => self.metadata.get(key),
            Listening::Locks(key) => self.locks.get(key),
            Listening::User(key) => self.users.get(key),
        }
    }

    /// Starts or stops `session` listening; returns whether anything changed.
    fn set(&mut self, session: &SessionHandle, what: Listening, on: bool) -> bool {
        let id = session.id();
        if !on && !self.of_session.get(&id).is_some_and(|l| l.contains(&what)) {
            // Not listening: nothing to change (the common case of a plain subscribe).
            return false;
        }
        let audience = match &what {
            Listening::Metadata(key) => self.metadata.entry(key.clone()).or_default(),
            Listening::Locks(key) => self.locks.entry(key.clone()).or_default(),
            Listening::User(key) => self.users.entry(key.clone()).or_default(),
        };
        let changed = if on {
            audience.insert(id, session.clone()).is_none()
        } else {
            audience.remove(&id).is_some()
        };
        if audience.is_empty() {
            match &what {
                Listening::Metadata(key) => self.metadata.remove(key),
                Listening::Locks(key) => self.locks.remove(key),
                Listening::User(key) => self.users.remove(key),
            };
        }
        if changed {
            let list = self.of_session.entry(id).or_default();
            if on {
                list.push(what);
            } else {
                list.retain(|w| *w != what);
                if list.is_empty() {
                    self.of_session.remove(&id);
                }
            }
        }
        changed
    }

    /// How many users' metadata session `id` listens to.
    fn users_of(&self, id: SessionId) -> usize {
        self.of_session.get(&id).map_or(0, |l| {
            l.iter().filter(|w| matches!(w, Listening::User(_))).count()
        })
    }

    fn forget(&mut self, session: &SessionHandle) {
        for what in self.of_session.remove(&session.id()).unwrap_or_default() {
            self.set(session, what, false);
        }
    }

    fn push(&self, what: &Listening, frame: &Bytes) {
        for session in self.audience(what).into_iter().flat_map(|a| a.values()) {
            session.push(frame.clone());
        }
    }
}

/// Metadata, locks and their listeners. Mutexes are always taken in this order: `db`, `locks`,
/// `listeners`; the write queue's only ever last, for a moment.
#[derive(Debug, Default)]
pub(super) struct Storage {
    /// `None` until the server opens the data directory.
    pub(super) db: Mutex<Option<MetadataDb>>,
    /// Writes waiting for the next commit.
    pub(super) queue: Queue,
    /// A read-only connection for `get_metadata` and `get_messages`.
    reader: Mutex<Option<Reader>>,
    locks: Mutex<LockTable>,
    listeners: Mutex<Listeners>,
}

pub(super) fn not_open() -> EngineError {
    EngineError::Unavailable("the metadata store is not open".into())
}

fn event_frame(event: Event) -> Bytes {
    encode_frame(&ServerMsg::Event(event))
}

pub(crate) fn storage_frame(
    target: &MetadataTarget,
    event_type: StorageEventType,
    publisher: &str,
    data: StorageData,
) -> Bytes {
    let (storage_type, channel_type, channel_name, publisher) = match target {
        MetadataTarget::Channel {
            channel_type,
            channel,
        } => (StorageType::Channel, *channel_type, channel, publisher),
        // A user's set: the user is both the name and the publisher (whose metadata it is).
        MetadataTarget::User { user_id } => (
            StorageType::User,
            ChannelType::User,
            user_id,
            user_id.as_str(),
        ),
    };
    event_frame(Event::Storage(StorageEvent {
        storage_type,
        event_type,
        channel_type,
        channel_name: channel_name.clone(),
        publisher: publisher.to_owned(),
        data,
        timestamp: now_ms(),
    }))
}

/// A lock event of `channel` (app, type, name), encoded.
pub(crate) fn lock_frame(
    channel: &ChannelKey,
    change: LockChange,
    snapshot: Vec<LockDetail>,
) -> Bytes {
    event_frame(Event::Lock(LockEvent {
        channel_type: channel.1,
        event_type: change.event_type,
        channel_name: channel.2.to_string(),
        lock_name: change.lock_name,
        ttl: change.ttl,
        owner: change.owner,
        publisher: change.publisher,
        snapshot,
        timestamp: now_ms(),
    }))
}

fn listening_to(app: &str, target: &MetadataTarget) -> Listening {
    match target {
        MetadataTarget::Channel {
            channel_type,
            channel,
        } => Listening::Metadata((app.into(), *channel_type, channel.as_str().into())),
        MetadataTarget::User { user_id } => Listening::User((app.into(), user_id.as_str().into())),
    }
}

pub(super) fn guard<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each operation leaves its data consistent before it can panic.
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The change a lock snapshot event carries.
pub(crate) fn snapshot_change() -> LockChange {
    LockChange {
        event_type: LockEventType::Snapshot,
        lock_name: String::new(),
        ttl: 0,
        owner: String::new(),
        publisher: String::new(),
    }
}

impl Storage {
    fn listeners(&self) -> MutexGuard<'_, Listeners> {
        guard(&self.listeners)
    }

    fn locks(&self) -> MutexGuard<'_, LockTable> {
        guard(&self.locks)
    }

    /// Opens the database in `dir`.
    pub(super) fn open(&self, dir: &Path, durability: Durability) -> Result<(), EngineError> {
        let db = MetadataDb::open(dir, durability)?;
        *guard(&self.reader) = Some(Reader::open(dir)?);
        *guard(&self.db) = Some(db);
        Ok(())
    }

    /// Closes both connections to the database (after the write in progress, if any); later
    /// calls fail as before [`Storage::open`].
    pub(super) fn close(&self) {
        let mut db = guard(&self.db);
        guard(&self.reader).take();
        db.take();
    }

    /// Fails unless the database is open (between [`Storage::open`] and [`Storage::close`]).
    pub(super) fn check_open(&self) -> Result<(), EngineError> {
        if guard(&self.db).is_some() {
            Ok(())
        } else {
            Err(not_open())
        }
    }

    /// Runs `f` on a blocking thread (it may wait for the disk).
    async fn run<R: Send + 'static>(
        self: &Arc<Self>,
        f: impl FnOnce(&Self) -> R + Send + 'static,
    ) -> Result<R, EngineError> {
        let store = self.clone();
        tokio::task::spawn_blocking(move || f(&store))
            .await
            .map_err(|e| EngineError::Unavailable(format!("metadata store task failed: {e}")))
    }

    /// Sends lock changes of a channel to its lock listeners (with the lock table held).
    fn announce_locks(&self, channel: &ChannelKey, changes: Vec<LockChange>) {
        if changes.is_empty() {
            return;
        }
        let listeners = self.listeners();
        let what = Listening::Locks(channel.clone());
        for change in changes {
            listeners.push(&what, &lock_frame(channel, change, Vec::new()));
        }
    }

    pub(super) async fn write(
        self: &Arc<Self>,
        author: &SessionHandle,
        write: MetadataWrite,
    ) -> Result<StorageData, MetadataError> {
        let app: Box<str> = author.app_id().into();
        let user: Box<str> = author.user_id().into();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue
            .push(Box::new(move |store: &Self, slot: Slot<'_, '_>| {
                let written = (|| {
                    let (db, held) = slot.map_err(|e| MetadataError::Engine(e.clone()))?;
                    // A guarded write keeps the lock table until it is committed, so that the lock
                    // cannot change hands in between (the group's commit: see `commit`).
                    if let MetadataTarget::Channel {
                        channel_type,
                        channel,
                    } = &write.target
                        && !write.options.lock_name.is_empty()
                    {
                        let locks = held.get_or_insert_with(|| store.locks());
                        let key = (app.clone(), *channel_type, channel.as_str().into());
                        if locks.holder(&key, &write.options.lock_name) != Some(&*user) {
                            return Err(MetadataError::LockNotHeld(
                                write.options.lock_name.clone(),
                            ));
                        }
                    }
                    db.write(&app, &write, &user, now_ms())
                })();
                Box::new(move |store: &Self, committed: Result<(), &EngineError>| {
                    let result = committed
                        .map_err(|e| MetadataError::Engine(e.clone()))
                        .and(written);
                    if let Ok(data) = &result {
                        let frame = storage_frame(
                            &write.target,
                            StorageEventType::Update,
                            &user,
                            data.clone(),
                        );
                        store
                            .listeners()
                            .push(&listening_to(&app, &write.target), &frame);
                    }
                    let _ = tx.send(result);
                }) as Finish
            }));
        self.run(|store| store.commit_queued()).await?;
        rx.await
            .map_err(|_| EngineError::Unavailable("the write was dropped".into()))?
    }

    /// A read, on the reader connection: no wait for writes, no blocking thread (a read of
    /// at most 128 items or 100 messages takes tens of microseconds).
    pub(super) fn get(
        &self,
        app: &str,
        target: &MetadataTarget,
    ) -> Result<StorageData, EngineError> {
        let reader = guard(&self.reader);
        let reader = reader.as_ref().ok_or_else(not_open)?;
        Ok(reader.load(app, target)?.0)
    }

    pub(super) async fn listen_channel(
        self: &Arc<Self>,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
        metadata: bool,
        locks: bool,
    ) -> Result<(), EngineError> {
        let session = session.clone();
        let key: ChannelKey = (session.app_id().into(), channel_type, channel.into());
        if !metadata && !locks {
            self.stop_listening(&session, channel_type, channel);
            return Ok(());
        }
        if !metadata {
            // Nothing to send: no need to be in order with the writes.
            self.listeners()
                .set(&session, Listening::Metadata(key.clone()), false);
        }
        if !locks || !metadata {
            // The lock snapshot only needs the lock table.
            let table = self.locks();
            let mut listeners = self.listeners();
            if listeners.set(&session, Listening::Locks(key.clone()), locks) && locks {
                let snapshot = table.get(&key.0, key.1, &key.2);
                session.push(lock_frame(&key, snapshot_change(), snapshot));
            }
        }
        if !metadata {
            return Ok(());
        }
        self.run(move |store| {
            let db = guard(&store.db);
            let db = db.as_ref().ok_or_else(not_open)?;
            let target = MetadataTarget::Channel {
                channel_type,
                channel: key.2.to_string(),
            };
            let data = db.load(&key.0, &target)?.0;
            let table = store.locks();
            let mut listeners = store.listeners();
            if listeners.set(&session, Listening::Metadata(key.clone()), true) {
                session.push(storage_frame(&target, StorageEventType::Snapshot, "", data));
            }
            if locks && listeners.set(&session, Listening::Locks(key.clone()), true) {
                let snapshot = table.get(&key.0, key.1, &key.2);
                session.push(lock_frame(&key, snapshot_change(), snapshot));
            }
            Ok(())
        })
        .await?
    }

    pub(super) async fn listen_user(
        self: &Arc<Self>,
        session: &SessionHandle,
        user_id: &str,
        on: bool,
    ) -> Result<usize, EngineError> {
        let session = session.clone();
        let target = MetadataTarget::User {
            user_id: user_id.to_owned(),
        };
        let what = listening_to(session.app_id(), &target);
        if !on {
            let mut listeners = self.listeners();
            listeners.set(&session, what, false);
            return Ok(listeners.users_of(session.id()));
        }
        self.run(move |store| {
            let db = guard(&store.db);
            let db = db.as_ref().ok_or_else(not_open)?;
            let data = db.load(session.app_id(), &target)?.0;
            let mut listeners = store.listeners();
            if listeners.set(&session, what, true) {
                session.push(storage_frame(&target, StorageEventType::Snapshot, "", data));
            }
            Ok(listeners.users_of(session.id()))
        })
        .await?
    }

    /// A lock call. Only the lock table is involved (no disk), so it runs here.
    pub(super) fn lock(
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
        let app = session.app_id();
        let user = session.user_id();
        let key: ChannelKey = (app.into(), channel_type, channel.as_str().into());
        let mut table = self.locks();
        let (changes, outcome) = match op {
            LockOp::Set { ttl } => (
                vec![table.set(app, channel_type, &channel, &lock_name, ttl, user)?],
                LockOutcome::Done,
            ),
            LockOp::Remove => (
                vec![table.remove(app, channel_type, &channel, &lock_name, user)?],
                LockOutcome::Done,
            ),
            LockOp::Acquire { retry } => {
                match table.acquire(channel_type, &channel, &lock_name, session, retry)? {
                    Acquired::Now(change) => (change.into_iter().collect(), LockOutcome::Done),
                    Acquired::Waiting(answer) => (Vec::new(), LockOutcome::Waiting(answer)),
                }
            }
            LockOp::Release => (
                table.release(app, channel_type, &channel, &lock_name, user, user)?,
                LockOutcome::Done,
            ),
            LockOp::Revoke { owner } => (
                table.release(app, channel_type, &channel, &lock_name, &owner, user)?,
                LockOutcome::Done,
            ),
        };
        self.announce_locks(&key, changes);
        Ok(outcome)
    }

    pub(super) fn get_locks(
        &self,
        app: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Vec<LockDetail> {
        self.locks().get(app, channel_type, channel)
    }

    /// The session's locks become away; each is released after its ttl unless its user is
    /// back by then.
    pub(super) fn away(self: &Arc<Self>, session: &SessionHandle) {
        let away = self.locks().away(session);
        for lock in away {
            let store = self.clone();
            tokio::spawn(async move {
                tokio::time::sleep(Duration::from_secs(lock.ttl.into())).await;
                store.expire(&lock);
            });
        }
    }

    fn expire(&self, lock: &AwayLock) {
        let mut table = self.locks();
        let changes = table.expire(lock);
        if !changes.is_empty() {
            tracing::debug!(lock = %lock.lock_name, user = %lock.user, "lock released: its holder did not come back within its ttl");
        }
        self.announce_locks(&lock.channel, changes);
    }

    /// A session of a user is online: it holds the user's locks, and hears of the ones
    /// released while the user was away.
    pub(super) fn back(&self, session: &SessionHandle) {
        let expired = self.locks().back(session);
        for lock in expired {
            let key = (session.app_id().into(), lock.channel_type, lock.channel);
            let change = LockChange {
                event_type: LockEventType::Expired,
                lock_name: lock.lock_name.to_string(),
                ttl: lock.ttl,
                owner: String::new(),
                publisher: String::new(),
            };
            session.push(lock_frame(&key, change, Vec::new()));
        }
    }

    pub(super) async fn store_message(
        self: &Arc<Self>,
        app: &str,
        key: HistoryKey,
        message: HistoryMessage,
        retention: Retention,
    ) -> Result<u64, EngineError> {
        let app: Box<str> = app.into();
        let (tx, rx) = tokio::sync::oneshot::channel();
        self.queue
            .push(Box::new(move |_: &Self, slot: Slot<'_, '_>| {
                let stored = match slot {
                    Ok((db, _)) => db.store_message(&app, &key, message, retention, now_ms()),
                    Err(e) => Err(e.clone()),
                };
                Box::new(move |_: &Self, committed: Result<(), &EngineError>| {
                    let _ = tx.send(committed.map_err(Clone::clone).and(stored));
                }) as Finish
            }));
        self.run(|store| store.commit_queued()).await?;
        rx.await
            .map_err(|_| EngineError::Unavailable("the write was dropped".into()))?
    }

    /// (transactions, writes) committed so far: fewer transactions than writes when writes
    /// shared a commit.
    pub(crate) fn commit_counts(&self) -> (u64, u64) {
        self.queue.counts()
    }

    /// A page of history, on the reader connection (see [`Storage::get`]).
    pub(super) fn get_messages(
        &self,
        app: &str,
        key: &HistoryKey,
        query: (u32, u64, u64),
        retention: Retention,
    ) -> Result<HistoryPage, EngineError> {
        let reader = guard(&self.reader);
        let reader = reader.as_ref().ok_or_else(not_open)?;
        reader.get_messages(app, key, query, retention, now_ms())
    }

    /// The session left a channel: it no longer receives its storage and lock events.
    pub(super) fn stop_listening(
        &self,
        session: &SessionHandle,
        channel_type: ChannelType,
        channel: &str,
    ) {
        let mut listeners = self.listeners();
        if !listeners.of_session.contains_key(&session.id()) {
            // Listens to nothing (every plain subscribe and leave): nothing to build or find.
            return;
        }
        let key: ChannelKey = (session.app_id().into(), channel_type, channel.into());
        listeners.set(session, Listening::Metadata(key.clone()), false);
        listeners.set(session, Listening::Locks(key), false);
    }

    /// Forgets what the session listens to (it ended).
    pub(super) fn forget(&self, session: &SessionHandle) {
        self.listeners().forget(session);
    }
}
