//! Locks for the single-node engine (`docs/protocol.md` §5.10): per channel, in creation
//! order, each free or held by one user, with the users waiting for it.
//!
//! A lock belongs to its holder's *user*: when the holder's session is lost the lock stays
//! held for its ttl ("away"), and a session of the same user (the resumed one, or a new login)
//! takes it back. The engine schedules [`LockTable::expire`] after the ttl; a generation number
//! tells a stale timer from the current absence.

use std::collections::{HashMap, VecDeque};
use std::time::{Duration, Instant};

use rtm_proto::{ChannelType, LockDetail, LockEventType, limits};
use tokio::sync::oneshot;

use crate::engine::{LockError, SessionHandle, SessionId};

/// A channel, as locks are keyed: App ID, channel type, channel name.
pub(crate) type ChannelKey = (Box<str>, ChannelType, Box<str>);

/// A user of an app.
type UserKey = (Box<str>, Box<str>);

/// Locks released while their holder was away are remembered for it this long.
const EXPIRED_KEPT: Duration = Duration::from_secs(3600);
/// At most this many such locks per user.
const EXPIRED_PER_USER: usize = 64;

/// A change to tell the channel's lock listeners about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct LockChange {
    pub(crate) event_type: LockEventType,
    pub(crate) lock_name: String,
    pub(crate) ttl: u32,
    /// The holder after the change; empty when free.
    pub(crate) owner: String,
    /// The user whose call caused it; empty for the server.
    pub(crate) publisher: String,
}

/// A lock held by a session that was lost, to be released after its ttl unless its user
/// returns: what the engine needs to schedule [`LockTable::expire`].
#[derive(Clone, Debug)]
pub(crate) struct AwayLock {
    pub(crate) channel: ChannelKey,
    pub(crate) lock_name: Box<str>,
    pub(crate) user: Box<str>,
    pub(crate) ttl: u32,
    pub(crate) generation: u64,
}

/// A lock that was released while its holder was away, told to the holder on its return.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ExpiredLock {
    pub(crate) channel_type: ChannelType,
    pub(crate) channel: Box<str>,
    pub(crate) lock_name: Box<str>,
    pub(crate) ttl: u32,
}

/// What an acquire did.
#[derive(Debug)]
pub(crate) enum Acquired {
    /// The caller holds the lock (now, or already did); with the change to announce, if any.
    Now(Option<LockChange>),
    /// Another user holds it: the answer comes when the caller gets it (or the lock is
    /// removed).
    Waiting(oneshot::Receiver<Result<(), LockError>>),
}

#[derive(Debug)]
struct Holder {
    user: Box<str>,
    session: SessionId,
    /// Set while the holder's session is lost: the generation of that absence.
    away: Option<u64>,
}

#[derive(Debug)]
struct Waiter {
    session: SessionId,
    user: Box<str>,
    reply: oneshot::Sender<Result<(), LockError>>,
}

#[derive(Debug)]
struct Lock {
    name: Box<str>,
    ttl: u32,
    holder: Option<Holder>,
    waiters: VecDeque<Waiter>,
}

impl Lock {
    fn detail(&self) -> LockDetail {
        LockDetail {
            lock_name: self.name.to_string(),
            owner: self.owner().to_owned(),
            ttl: self.ttl,
        }
    }

    fn owner(&self) -> &str {
        self.holder.as_ref().map_or("", |h| &h.user)
    }

    fn change(&self, event_type: LockEventType, publisher: &str) -> LockChange {
        LockChange {
            event_type,
            lock_name: self.name.to_string(),
            ttl: self.ttl,
            owner: self.owner().to_owned(),
            publisher: publisher.to_owned(),
        }
    }
}

/// Every lock of every channel of one engine.
#[derive(Debug, Default)]
pub(crate) struct LockTable {
    channels: HashMap<ChannelKey, Vec<Lock>>,
    /// The locks each user holds: channel and lock name.
    held: HashMap<UserKey, Vec<(ChannelKey, Box<str>)>>,
    expired: HashMap<UserKey, Vec<(Instant, ExpiredLock)>>,
    generation: u64,
}

fn channel_key(app: &str, channel_type: ChannelType, channel: &str) -> ChannelKey {
    (app.into(), channel_type, channel.into())
}

fn user_key(app: &str, user: &str) -> UserKey {
    (app.into(), user.into())
}

impl LockTable {
    fn lock_mut(&mut self, channel: &ChannelKey, name: &str) -> Result<&mut Lock, LockError> {
        self.channels
            .get_mut(channel)
            .and_then(|locks| locks.iter_mut().find(|l| &*l.name == name))
            .ok_or(LockError::NotExist)
    }

    fn unhold(&mut self, app: &str, user: &str, channel: &ChannelKey, name: &str) {
        let key = user_key(app, user);
        if let Some(held) = self.held.get_mut(&key) {
            held.retain(|(c, n)| !(c == channel && &**n == name));
            if held.is_empty() {
                self.held.remove(&key);
            }
        }
    }

    /// Gives a free lock to the first waiter still waiting; returns the change to announce.
    fn grant(&mut self, channel: &ChannelKey, name: &str) -> Option<LockChange> {
        let lock = self.lock_mut(channel, name).ok()?;
        while let Some(waiter) = lock.waiters.pop_front() {
            if waiter.reply.is_closed() {
                continue;
            }
            lock.holder = Some(Holder {
                user: waiter.user.clone(),
                session: waiter.session,
                away: None,
            });
            let change = lock.change(LockEventType::Acquired, &waiter.user);
            let _ = waiter.reply.send(Ok(()));
            let held = (channel.clone(), lock.name.clone());
            self.held
                .entry(user_key(&channel.0, &waiter.user))
                .or_default()
                .push(held);
            return Some(change);
        }
        None
    }

    /// Creates a free lock.
    pub(crate) fn set(
        &mut self,
        app: &str,
        channel_type: ChannelType,
        channel: &str,
        name: &str,
        ttl: u32,
        by: &str,
    ) -> Result<LockChange, LockError> {
        let locks = self
            .channels
            .entry(channel_key(app, channel_type, channel))
            .or_default();
        if locks.iter().any(|l| &*l.name == name) {
            return Err(LockError::AlreadyExists);
        }
        if locks.len() >= limits::MAX_LOCKS_PER_CHANNEL {
            return Err(LockError::TooMany(limits::MAX_LOCKS_PER_CHANNEL));
        }
        let ttl = match ttl {
            0 => limits::LOCK_TTL_DEFAULT,
            t => t.clamp(limits::LOCK_TTL_MIN, limits::LOCK_TTL_MAX),
        };
        let lock = Lock {
            name: name.into(),
            ttl,
            holder: None,
            waiters: VecDeque::new(),
        };
        let change = lock.change(LockEventType::Set, by);
        locks.push(lock);
        Ok(change)
    }

    /// Deletes a lock; whoever waits for it is told it no longer exists.
    pub(crate) fn remove(
        &mut self,
        app: &str,
        channel_type: ChannelType,
        channel: &str,
        name: &str,
        by: &str,
    ) -> Result<LockChange, LockError> {
        let key = channel_key(app, channel_type, channel);
        let locks = self.channels.get_mut(&key).ok_or(LockError::NotExist)?;
        let at = locks
            .iter()
            .position(|l| &*l.name == name)
            .ok_or(LockError::NotExist)?;
        let mut lock = locks.remove(at);
        if locks.is_empty() {
            self.channels.remove(&key);
        }
        if let Some(holder) = lock.holder.take() {
            self.unhold(app, &holder.user, &key, name);
        }
        for waiter in lock.waiters.drain(..) {
            let _ = waiter.reply.send(Err(LockError::NotExist));
        }
        Ok(lock.change(LockEventType::Removed, by))
    }

    /// Takes a lock for `session`'s user.
    pub(crate) fn acquire(
        &mut self,
        channel_type: ChannelType,
        channel: &str,
        name: &str,
        session: &SessionHandle,
        retry: bool,
    ) -> Result<Acquired, LockError> {
        let app = session.app_id();
        let user = session.user_id();
        let key = channel_key(app, channel_type, channel);
        let lock = self.lock_mut(&key, name)?;
        match &mut lock.holder {
            Some(holder) if &*holder.user == user => {
                holder.session = session.id();
                holder.away = None;
                Ok(Acquired::Now(None))
            }
            Some(holder) => {
                if !retry {
                    return Err(LockError::HeldBy(holder.user.to_string()));
                }
                if lock
                    .waiters
                    .iter()
                    .any(|w| w.session == session.id() && !w.reply.is_closed())
                {
                    return Err(LockError::AlreadyWaiting);
                }
                lock.waiters.retain(|w| !w.reply.is_closed());
                let (reply, answer) = oneshot::channel();
                lock.waiters.push_back(Waiter {
                    session: session.id(),
                    user: user.into(),
                    reply,
                });
                Ok(Acquired::Waiting(answer))
            }
            None => {
                lock.holder = Some(Holder {
                    user: user.into(),
                    session: session.id(),
                    away: None,
                });
                let change = lock.change(LockEventType::Acquired, user);
                self.held
                    .entry(user_key(app, user))
                    .or_default()
                    .push((key, name.into()));
                Ok(Acquired::Now(Some(change)))
            }
        }
    }

    /// Frees a lock held by `by` (a release) or by `owner` (a revoke by `by`), then hands it
    /// to the first waiter. Returns the changes to announce, in order.
    pub(crate) fn release(
        &mut self,
        app: &str,
        channel_type: ChannelType,
        channel: &str,
        name: &str,
        owner: &str,
        by: &str,
    ) -> Result<Vec<LockChange>, LockError> {
        let key = channel_key(app, channel_type, channel);
        let lock = self.lock_mut(&key, name)?;
        if lock.owner() != owner || owner.is_empty() {
            return Err(LockError::NotHeld(owner.to_owned()));
        }
        lock.holder = None;
        let mut changes = vec![lock.change(LockEventType::Released, by)];
        self.unhold(app, owner, &key, name);
        changes.extend(self.grant(&key, name));
        Ok(changes)
    }

    /// The user holding a lock, if the lock exists and is held.
    pub(crate) fn holder(&self, channel: &ChannelKey, name: &str) -> Option<&str> {
        self.channels
            .get(channel)?
            .iter()
            .find(|l| &*l.name == name)?
            .holder
            .as_ref()
            .map(|h| &*h.user)
    }

    /// The locks of a channel, in creation order.
    pub(crate) fn get(
        &self,
        app: &str,
        channel_type: ChannelType,
        channel: &str,
    ) -> Vec<LockDetail> {
        self.channels
            .get(&channel_key(app, channel_type, channel))
            .map(|locks| locks.iter().map(Lock::detail).collect())
            .unwrap_or_default()
    }

    /// `session` was lost (or ended): the locks it holds that are not already away become
    /// away. Returns them, for the engine to schedule their expiry.
    pub(crate) fn away(&mut self, session: &SessionHandle) -> Vec<AwayLock> {
        let user = user_key(session.app_id(), session.user_id());
        let Some(held) = self.held.get(&user) else {
            return Vec::new();
        };
        let held = held.clone();
        self.generation += 1;
        let generation = self.generation;
        let mut away = Vec::new();
        for (channel, name) in held {
            let Ok(lock) = self.lock_mut(&channel, &name) else {
                continue;
            };
            let ttl = lock.ttl;
            if let Some(holder) = &mut lock.holder
                && holder.session == session.id()
                && holder.away.is_none()
            {
                holder.away = Some(generation);
                away.push(AwayLock {
                    channel,
                    lock_name: name,
                    user: user.1.clone(),
                    ttl,
                    generation,
                });
            }
        }
        away
    }

    /// A session of a user is (back) online: it holds the user's locks again, and is told
    /// of the ones released while it was away.
    pub(crate) fn back(&mut self, session: &SessionHandle) -> Vec<ExpiredLock> {
        let user = user_key(session.app_id(), session.user_id());
        if let Some(held) = self.held.get(&user).cloned() {
            for (channel, name) in held {
                if let Ok(lock) = self.lock_mut(&channel, &name)
                    && let Some(holder) = &mut lock.holder
                {
                    holder.session = session.id();
                    holder.away = None;
                }
            }
        }
        self.expired
            .remove(&user)
            .map(|locks| {
                locks
                    .into_iter()
                    .filter(|(at, _)| at.elapsed() < EXPIRED_KEPT)
                    .map(|(_, lock)| lock)
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The ttl of an away lock ran out: if its holder is still away since the same
    /// generation, the lock is released (and handed to a waiter). Returns the changes.
    pub(crate) fn expire(&mut self, away: &AwayLock) -> Vec<LockChange> {
        let Ok(lock) = self.lock_mut(&away.channel, &away.lock_name) else {
            return Vec::new();
        };
        let still_away = lock
            .holder
            .as_ref()
            .is_some_and(|h| h.user == away.user && h.away == Some(away.generation));
        if !still_away {
            return Vec::new();
        }
        lock.holder = None;
        let mut changes = vec![lock.change(LockEventType::Released, "")];
        let ttl = lock.ttl;
        let app = away.channel.0.clone();
        self.unhold(&app, &away.user, &away.channel, &away.lock_name);
        let now = Instant::now();
        if self.expired.len() > 10_000 {
            self.expired.retain(|_, locks| {
                locks.retain(|(at, _)| now.duration_since(*at) < EXPIRED_KEPT);
                !locks.is_empty()
            });
        }
        let expired = self.expired.entry((app, away.user.clone())).or_default();
        if expired.len() >= EXPIRED_PER_USER {
            expired.remove(0);
        }
        expired.push((
            now,
            ExpiredLock {
                channel_type: away.channel.1,
                channel: away.channel.2.clone(),
                lock_name: away.lock_name.clone(),
                ttl,
            },
        ));
        changes.extend(self.grant(&away.channel, &away.lock_name));
        changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::outbox::Outbox;

    fn session(id: u64, user: &str) -> SessionHandle {
        let (outbox, _rx) = Outbox::new(8, std::sync::Arc::new(Metrics::default()));
        SessionHandle::new(SessionId(id), "app", user, outbox)
    }

    const M: ChannelType = ChannelType::Message;

    #[test]
    fn set_acquire_release_revoke_remove() {
        let mut t = LockTable::default();
        let alice = session(1, "alice");
        let bob = session(2, "bob");
        let set = t.set("app", M, "room", "floor", 3, "alice").unwrap();
        assert_eq!(set.ttl, limits::LOCK_TTL_MIN);
        assert!(matches!(
            t.set("app", M, "room", "floor", 30, "bob"),
            Err(LockError::AlreadyExists)
        ));
        assert!(matches!(
            t.acquire(M, "room", "nope", &alice, false),
            Err(LockError::NotExist)
        ));
        let Acquired::Now(Some(change)) = t.acquire(M, "room", "floor", &alice, false).unwrap()
        else {
            panic!("alice should get the free lock");
        };
        assert_eq!(change.owner, "alice");
        // Again: already hers, nothing to announce.
        assert!(matches!(
            t.acquire(M, "room", "floor", &alice, false).unwrap(),
            Acquired::Now(None)
        ));
        assert!(matches!(
            t.acquire(M, "room", "floor", &bob, false),
            Err(LockError::HeldBy(owner)) if owner == "alice"
        ));
        assert!(matches!(
            t.release("app", M, "room", "floor", "bob", "bob"),
            Err(LockError::NotHeld(_))
        ));
        assert_eq!(t.get("app", M, "room")[0].owner, "alice");
        // A revoke by bob frees it.
        let changes = t
            .release("app", M, "room", "floor", "alice", "bob")
            .unwrap();
        assert_eq!(changes.len(), 1);
        assert_eq!(changes[0].event_type, LockEventType::Released);
        assert_eq!(changes[0].publisher, "bob");
        assert_eq!(t.get("app", M, "room")[0].owner, "");
        t.remove("app", M, "room", "floor", "bob").unwrap();
        assert!(t.get("app", M, "room").is_empty());
        assert!(t.held.is_empty());
    }

    #[test]
    fn thirty_two_locks_per_channel() {
        let mut t = LockTable::default();
        for i in 0..32 {
            t.set("app", M, "room", &format!("l{i}"), 10, "u").unwrap();
        }
        assert!(matches!(
            t.set("app", M, "room", "one more", 10, "u"),
            Err(LockError::TooMany(32))
        ));
        // Another channel, or the stream channel of the same name, has its own.
        t.set("app", ChannelType::Stream, "room", "l0", 10, "u")
            .unwrap();
    }

    #[test]
    fn a_waiter_gets_the_lock_on_release_and_a_gone_waiter_is_skipped() {
        let mut t = LockTable::default();
        let (alice, bob, carol) = (session(1, "alice"), session(2, "bob"), session(3, "carol"));
        t.set("app", M, "room", "floor", 10, "alice").unwrap();
        t.acquire(M, "room", "floor", &alice, false).unwrap();
        let Acquired::Waiting(bob_waits) = t.acquire(M, "room", "floor", &bob, true).unwrap()
        else {
            panic!("bob should wait");
        };
        assert!(matches!(
            t.acquire(M, "room", "floor", &bob, true),
            Err(LockError::AlreadyWaiting)
        ));
        let Acquired::Waiting(mut carol_waits) =
            t.acquire(M, "room", "floor", &carol, true).unwrap()
        else {
            panic!("carol should wait");
        };
        drop(bob_waits); // bob's connection went away
        let changes = t
            .release("app", M, "room", "floor", "alice", "alice")
            .unwrap();
        let kinds: Vec<_> = changes.iter().map(|c| c.event_type).collect();
        assert_eq!(kinds, [LockEventType::Released, LockEventType::Acquired]);
        assert_eq!(changes[1].owner, "carol");
        assert!(matches!(carol_waits.try_recv(), Ok(Ok(()))));
        assert_eq!(t.get("app", M, "room")[0].owner, "carol");
    }

    #[test]
    fn away_then_back_keeps_the_lock_and_expiry_releases_it() {
        let mut t = LockTable::default();
        let alice = session(1, "alice");
        t.set("app", M, "room", "floor", 10, "alice").unwrap();
        t.acquire(M, "room", "floor", &alice, false).unwrap();
        let away = t.away(&alice);
        assert_eq!(away.len(), 1);
        // Lost again before the first timer: nothing new to schedule.
        assert!(t.away(&alice).is_empty());
        // Back (a resume): the stale timer does nothing.
        assert!(t.back(&alice).is_empty());
        assert!(t.expire(&away[0]).is_empty());
        assert_eq!(t.get("app", M, "room")[0].owner, "alice");
        // Away again, and the ttl runs out: released, and told on the next login.
        let away = t.away(&alice);
        let changes = t.expire(&away[0]);
        assert_eq!(changes[0].event_type, LockEventType::Released);
        assert_eq!(changes[0].publisher, "");
        assert_eq!(t.get("app", M, "room")[0].owner, "");
        let again = session(7, "alice");
        let expired = t.back(&again);
        assert_eq!(expired.len(), 1);
        assert_eq!(&*expired[0].lock_name, "floor");
        assert!(t.back(&again).is_empty());
    }

    #[test]
    fn a_new_login_of_the_holder_takes_its_locks_over() {
        let mut t = LockTable::default();
        let old = session(1, "alice");
        t.set("app", M, "room", "floor", 10, "alice").unwrap();
        t.acquire(M, "room", "floor", &old, false).unwrap();
        let new = session(2, "alice");
        assert!(t.back(&new).is_empty());
        // The old session ending afterwards does not make the lock away.
        assert!(t.away(&old).is_empty());
        assert_eq!(t.get("app", M, "room")[0].owner, "alice");
        assert!(
            t.release("app", M, "room", "floor", "alice", "alice")
                .is_ok()
        );
    }
}
