//! This node's sessions waiting for a lock (`lock_store.rs`): the answer comes to the node's
//! inbox, and goes to the waiting call, or back to the engine when nobody waits any more.

use std::collections::{HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

use tokio::sync::{mpsc, oneshot};

use super::envelope::LockGrant;
use super::listeners::SetKey;
use crate::engine::{LockError, SessionId};

type Answer = oneshot::Sender<Result<(), LockError>>;
pub(super) type Wait = (SessionId, SetKey, String);

/// This node's sessions waiting for a lock, and where answers nobody takes go.
pub(super) struct LockWaits {
    waits: Mutex<HashMap<Wait, Answer>>,
    orphans: mpsc::UnboundedSender<LockGrant>,
}

impl LockWaits {
    pub(super) fn new() -> (Self, mpsc::UnboundedReceiver<LockGrant>) {
        let (orphans, rx) = mpsc::unbounded_channel();
        let waits = Self {
            waits: Mutex::default(),
            orphans,
        };
        (waits, rx)
    }

    fn waits(&self) -> MutexGuard<'_, HashMap<Wait, Answer>> {
        self.waits.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Registers a wait; fails if the session is still waiting for the same lock.
    pub(super) fn add(
        &self,
        wait: Wait,
    ) -> Result<oneshot::Receiver<Result<(), LockError>>, LockError> {
        let mut waits = self.waits();
        if waits.get(&wait).is_some_and(|answer| !answer.is_closed()) {
            return Err(LockError::AlreadyWaiting);
        }
        let (tx, rx) = oneshot::channel();
        waits.insert(wait, tx);
        Ok(rx)
    }

    pub(super) fn cancel(&self, wait: &Wait) {
        self.waits().remove(wait);
    }

    /// Forgets every wait of `session`; returns the channels.
    pub(super) fn take_session(&self, session: SessionId) -> HashSet<SetKey> {
        let mut channels = HashSet::new();
        self.waits().retain(|(s, set, _), _| {
            if *s == session {
                channels.insert(set.clone());
                false
            } else {
                true
            }
        });
        channels
    }

    /// An answer came: to the waiting session, or (a lock granted to a session that no
    /// longer waits) to the engine, to give the lock up again.
    pub(super) fn answer(&self, grant: LockGrant) {
        let wait = (
            grant.session,
            (
                grant.app.as_str().into(),
                grant.channel_type,
                grant.channel.as_str().into(),
            ),
            grant.lock_name.clone(),
        );
        let answer = self.waits().remove(&wait);
        let result = if grant.granted {
            Ok(())
        } else {
            Err(LockError::NotExist)
        };
        let taken = answer.is_some_and(|answer| answer.send(result).is_ok());
        if !taken && grant.granted {
            let _ = self.orphans.send(grant);
        }
    }
}
