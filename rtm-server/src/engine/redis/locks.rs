//! The locks of one channel as the Redis engine keeps them: one record per channel, read,
//! changed here by the rules of `docs/protocol.md` §5.10 (the same as the single-node engine's
//! `LockTable`), and committed by a compare-and-set script (`lock_store.rs`).
//!
//! Unlike the single-node table, a waiter here is only a session id: the answer to its acquire
//! goes to its node's inbox (a [`Grant`]), and a holder that is away carries the time its ttl
//! runs out, which any node's sweeper may act on.

use rtm_proto::{LockDetail, LockEventType, limits};
use serde::{Deserialize, Serialize};

use crate::engine::LockError;
use crate::engine::memory::LockChange;

/// A lock's holder.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Holder {
    pub(super) user: String,
    pub(super) session: u64,
    /// Set while the holder's session is lost: when the lock is released (Unix ms).
    pub(super) away_until: Option<u64>,
}

/// A session waiting to acquire a lock.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Waiter {
    pub(super) session: u64,
    pub(super) user: String,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Lock {
    pub(super) name: String,
    pub(super) ttl: u32,
    pub(super) holder: Option<Holder>,
    pub(super) waiters: Vec<Waiter>,
}

impl Lock {
    fn owner(&self) -> &str {
        self.holder.as_ref().map_or("", |h| &h.user)
    }

    fn change(&self, event_type: LockEventType, publisher: &str) -> LockChange {
        LockChange {
            event_type,
            lock_name: self.name.clone(),
            ttl: self.ttl,
            owner: self.owner().to_owned(),
            publisher: publisher.to_owned(),
        }
    }
}

/// The answer for a waiting session: it got the lock, or the lock was removed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct Grant {
    pub(super) session: u64,
    pub(super) user: String,
    pub(super) lock_name: String,
    pub(super) granted: bool,
}

/// A lock released because its holder stayed away past its ttl, to tell the holder's user.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct Expired {
    pub(super) user: String,
    pub(super) lock_name: String,
    pub(super) ttl: u32,
}

/// What one operation did, for the commit to publish and record.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct Effects {
    /// Events for the channel's lock listeners, in order.
    pub(super) changes: Vec<LockChange>,
    /// Answers for waiting sessions.
    pub(super) grants: Vec<Grant>,
    /// Away locks to release at a time (lock name, Unix ms), for the sweepers.
    pub(super) expiries: Vec<(String, u64)>,
    /// Locks released while their holder was away.
    pub(super) expired: Vec<Expired>,
}

/// Every lock of one channel, in creation order.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(super) struct ChannelLocks {
    pub(super) locks: Vec<Lock>,
}

impl ChannelLocks {
    fn lock_mut(&mut self, name: &str) -> Result<&mut Lock, LockError> {
        self.locks
            .iter_mut()
            .find(|l| l.name == name)
            .ok_or(LockError::NotExist)
    }

    /// The locks as `get_locks` lists them.
    pub(super) fn details(&self) -> Vec<LockDetail> {
        self.locks
            .iter()
            .map(|l| LockDetail {
                lock_name: l.name.clone(),
                owner: l.owner().to_owned(),
                ttl: l.ttl,
            })
            .collect()
    }

    /// Each held lock's name and holder, for the lock-guarded metadata writes' check.
    pub(super) fn owners(&self) -> impl Iterator<Item = (&str, &str)> {
        self.locks
            .iter()
            .filter_map(|l| Some((l.name.as_str(), l.holder.as_ref()?.user.as_str())))
    }

    /// Whether `user` holds or waits for any lock here.
    pub(super) fn involves(&self, user: &str) -> bool {
        self.locks.iter().any(|l| {
            l.holder.as_ref().is_some_and(|h| h.user == user)
                || l.waiters.iter().any(|w| w.user == user)
        })
    }

    /// Gives a free lock to its first waiter.
    fn grant(&mut self, name: &str, effects: &mut Effects) {
        let Ok(lock) = self.lock_mut(name) else {
            return;
        };
        if lock.holder.is_some() || lock.waiters.is_empty() {
            return;
        }
        let waiter = lock.waiters.remove(0);
        lock.holder = Some(Holder {
            user: waiter.user.clone(),
            session: waiter.session,
            away_until: None,
        });
        effects
            .changes
            .push(lock.change(LockEventType::Acquired, &waiter.user));
        effects.grants.push(Grant {
            session: waiter.session,
            user: waiter.user.clone(),
            lock_name: name.to_owned(),
            granted: true,
        });
    }

    /// Creates a free lock.
    pub(super) fn set(&mut self, name: &str, ttl: u32, by: &str) -> Result<Effects, LockError> {
        if self.locks.iter().any(|l| l.name == name) {
            return Err(LockError::AlreadyExists);
        }
        if self.locks.len() >= limits::MAX_LOCKS_PER_CHANNEL {
            return Err(LockError::TooMany(limits::MAX_LOCKS_PER_CHANNEL));
        }
        let ttl = match ttl {
            0 => limits::LOCK_TTL_DEFAULT,
            t => t.clamp(limits::LOCK_TTL_MIN, limits::LOCK_TTL_MAX),
        };
        let lock = Lock {
            name: name.to_owned(),
            ttl,
            holder: None,
            waiters: Vec::new(),
        };
        let change = lock.change(LockEventType::Set, by);
        self.locks.push(lock);
        Ok(Effects {
            changes: vec![change],
            ..Effects::default()
        })
    }

    /// Deletes a lock; its waiters are told it no longer exists.
    pub(super) fn remove(&mut self, name: &str, by: &str) -> Result<Effects, LockError> {
        let at = self
            .locks
            .iter()
            .position(|l| l.name == name)
            .ok_or(LockError::NotExist)?;
        let mut lock = self.locks.remove(at);
        lock.holder = None;
        let grants = lock
            .waiters
            .drain(..)
            .map(|w| Grant {
                session: w.session,
                user: w.user,
                lock_name: name.to_owned(),
                granted: false,
            })
            .collect();
        Ok(Effects {
            changes: vec![lock.change(LockEventType::Removed, by)],
            grants,
            ..Effects::default()
        })
    }

    /// Takes a lock for `user`'s session `session`. `Ok(None)` with no change: it is the
    /// user's already; a waiter added: the answer comes as a [`Grant`].
    pub(super) fn acquire(
        &mut self,
        name: &str,
        user: &str,
        session: u64,
        retry: bool,
    ) -> Result<Acquire, LockError> {
        let lock = self.lock_mut(name)?;
        match &mut lock.holder {
            Some(holder) if holder.user == user => {
                holder.session = session;
                holder.away_until = None;
                Ok(Acquire::Held)
            }
            Some(holder) => {
                if !retry {
                    return Err(LockError::HeldBy(holder.user.clone()));
                }
                // A session waits at most once (the caller checked that an earlier wait of
                // this session is no longer answered by anyone).
                lock.waiters.retain(|w| w.session != session);
                lock.waiters.push(Waiter {
                    session,
                    user: user.to_owned(),
                });
                Ok(Acquire::Waiting)
            }
            None => {
                lock.holder = Some(Holder {
                    user: user.to_owned(),
                    session,
                    away_until: None,
                });
                Ok(Acquire::Now(lock.change(LockEventType::Acquired, user)))
            }
        }
    }

    /// Frees a lock held by `owner` (released by `by`, who is the owner or revokes), then
    /// hands it to the first waiter.
    pub(super) fn release(
        &mut self,
        name: &str,
        owner: &str,
        by: &str,
    ) -> Result<Effects, LockError> {
        let lock = self.lock_mut(name)?;
        if lock.owner() != owner || owner.is_empty() {
            return Err(LockError::NotHeld(owner.to_owned()));
        }
        lock.holder = None;
        let mut effects = Effects {
            changes: vec![lock.change(LockEventType::Released, by)],
            ..Effects::default()
        };
        self.grant(name, &mut effects);
        Ok(effects)
    }

    /// `session` stops waiting for every lock here.
    pub(super) fn forget_waiter(&mut self, session: u64) -> bool {
        let mut changed = false;
        for lock in &mut self.locks {
            let before = lock.waiters.len();
            lock.waiters.retain(|w| w.session != session);
            changed |= lock.waiters.len() != before;
        }
        changed
    }

    /// `session` was lost at `now`: the locks it holds are released after their ttl unless
    /// the user is back first.
    pub(super) fn away(&mut self, session: u64, now: u64) -> Effects {
        let mut effects = Effects::default();
        for lock in &mut self.locks {
            let ttl = lock.ttl;
            if let Some(holder) = &mut lock.holder
                && holder.session == session
                && holder.away_until.is_none()
            {
                let until = now + u64::from(ttl) * 1000;
                holder.away_until = Some(until);
                effects.expiries.push((lock.name.clone(), until));
            }
        }
        effects
    }

    /// A session of `user` is online: it holds the user's locks again. True if any changed.
    pub(super) fn back(&mut self, user: &str, session: u64) -> bool {
        let mut changed = false;
        for lock in &mut self.locks {
            if let Some(holder) = &mut lock.holder
                && holder.user == user
                && (holder.session != session || holder.away_until.is_some())
            {
                holder.session = session;
                holder.away_until = None;
                changed = true;
            }
        }
        changed
    }

    /// The sweep at `now` of lock `name`: released if its holder is still away and its time
    /// has come (then handed to the first waiter).
    pub(super) fn expire(&mut self, name: &str, now: u64) -> Effects {
        let mut effects = Effects::default();
        let Ok(lock) = self.lock_mut(name) else {
            return effects;
        };
        let Some(holder) = &lock.holder else {
            return effects;
        };
        if holder.away_until.is_none_or(|until| until > now) {
            return effects;
        }
        let user = holder.user.clone();
        lock.holder = None;
        effects
            .changes
            .push(lock.change(LockEventType::Released, ""));
        effects.expired.push(Expired {
            user,
            lock_name: name.to_owned(),
            ttl: lock.ttl,
        });
        self.grant(name, &mut effects);
        effects
    }

    /// Sessions of a node that is gone (by `is_gone`) at `now`: their locks are away from now,
    /// their waits forgotten. True if anything changed.
    pub(super) fn node_gone(
        &mut self,
        is_gone: impl Fn(u64) -> bool,
        now: u64,
        effects: &mut Effects,
    ) -> bool {
        let mut changed = false;
        for lock in &mut self.locks {
            let before = lock.waiters.len();
            lock.waiters.retain(|w| !is_gone(w.session));
            changed |= lock.waiters.len() != before;
            let ttl = lock.ttl;
            if let Some(holder) = &mut lock.holder
                && is_gone(holder.session)
                && holder.away_until.is_none()
            {
                let until = now + u64::from(ttl) * 1000;
                holder.away_until = Some(until);
                effects.expiries.push((lock.name.clone(), until));
                changed = true;
            }
        }
        changed
    }
}

/// What an acquire did.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Acquire {
    /// Taken now: announce the change.
    Now(LockChange),
    /// The user holds it already.
    Held,
    /// Another user holds it: the session waits.
    Waiting,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_rules_of_the_single_node_table() {
        let mut c = ChannelLocks::default();
        assert_eq!(c.set("floor", 3, "alice").unwrap().changes[0].ttl, 10);
        assert!(matches!(
            c.set("floor", 30, "bob"),
            Err(LockError::AlreadyExists)
        ));
        assert!(matches!(
            c.acquire("floor", "alice", 1, false).unwrap(),
            Acquire::Now(_)
        ));
        assert_eq!(
            c.acquire("floor", "alice", 1, false).unwrap(),
            Acquire::Held
        );
        assert!(matches!(
            c.acquire("floor", "bob", 2, false),
            Err(LockError::HeldBy(u)) if u == "alice"
        ));
        assert_eq!(
            c.acquire("floor", "bob", 2, true).unwrap(),
            Acquire::Waiting
        );
        assert_eq!(
            c.acquire("floor", "carol", 3, true).unwrap(),
            Acquire::Waiting
        );
        assert!(c.forget_waiter(2));
        let released = c.release("floor", "alice", "alice").unwrap();
        let kinds: Vec<_> = released.changes.iter().map(|c| c.event_type).collect();
        assert_eq!(kinds, [LockEventType::Released, LockEventType::Acquired]);
        assert_eq!(released.grants[0].session, 3);
        assert!(released.grants[0].granted);
        assert_eq!(c.details()[0].owner, "carol");
        assert_eq!(c.owners().collect::<Vec<_>>(), [("floor", "carol")]);
        assert!(matches!(
            c.release("floor", "alice", "alice"),
            Err(LockError::NotHeld(_))
        ));
        c.acquire("floor", "dave", 4, true).unwrap();
        let removed = c.remove("floor", "bob").unwrap();
        assert_eq!(removed.grants[0].session, 4);
        assert!(!removed.grants[0].granted);
        assert!(c.locks.is_empty());
    }

    #[test]
    fn away_back_and_expiry() {
        let mut c = ChannelLocks::default();
        c.set("floor", 10, "alice").unwrap();
        c.acquire("floor", "alice", 1, false).unwrap();
        c.acquire("floor", "bob", 2, true).unwrap();
        let away = c.away(1, 1_000);
        assert_eq!(away.expiries, [("floor".to_owned(), 11_000)]);
        assert!(c.away(1, 2_000).expiries.is_empty(), "away once");
        assert!(c.expire("floor", 10_999).changes.is_empty(), "not yet");
        // Back through a new session of the user: the old time no longer counts.
        assert!(c.back("alice", 5));
        assert!(c.expire("floor", 11_000).changes.is_empty());
        c.away(5, 20_000);
        let expired = c.expire("floor", 30_000);
        assert_eq!(expired.changes.len(), 2);
        assert_eq!(expired.changes[0].publisher, "");
        assert_eq!(expired.expired[0].user, "alice");
        assert_eq!(expired.grants[0].session, 2);
        assert_eq!(c.details()[0].owner, "bob");
    }

    #[test]
    fn a_gone_node_s_holders_go_away_and_its_waiters_are_forgotten() {
        let mut c = ChannelLocks::default();
        c.set("a", 10, "x").unwrap();
        c.set("b", 10, "x").unwrap();
        c.acquire("a", "alice", 7, false).unwrap();
        c.acquire("b", "bob", 1, false).unwrap();
        c.acquire("b", "carol", 8, true).unwrap();
        let mut effects = Effects::default();
        assert!(c.node_gone(|s| s >= 7, 100, &mut effects));
        assert_eq!(effects.expiries, [("a".to_owned(), 10_100)]);
        assert!(c.locks[1].waiters.is_empty());
        assert!(!c.node_gone(|s| s >= 7, 200, &mut Effects::default()));
    }
}
