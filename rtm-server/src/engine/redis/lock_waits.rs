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
    /// Waits answered from the lock record ([`LockWaits::answer_if_waiting`]) whose grant may
    /// still come: it is then ignored, not given back. With when they were answered.
    answered: Mutex<HashMap<Wait, std::time::Instant>>,
    orphans: mpsc::UnboundedSender<LockGrant>,
}

impl LockWaits {
    pub(super) fn new() -> (Self, mpsc::UnboundedReceiver<LockGrant>) {
        let (orphans, rx) = mpsc::unbounded_channel();
        let waits = Self {
            waits: Mutex::default(),
            answered: Mutex::default(),
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

    /// The waits still answered by someone.
    pub(super) fn pending(&self) -> Vec<Wait> {
        self.waits()
            .iter()
            .filter(|(_, answer)| !answer.is_closed())
            .map(|(wait, _)| wait.clone())
            .collect()
    }

    /// An answer came: to the waiting session, or (a lock granted to a session that no
    /// longer waits) to the engine, to give the lock up again.
    pub(super) fn answer(&self, grant: LockGrant) {
        let wait = wait_of(&grant);
        if self.answered().remove(&wait).is_some() {
            // Answered already from the record: this is its late grant.
            return;
        }
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

    /// Answers a wait from the lock record, if it still waits; a grant that comes later for it
    /// is then ignored (for a minute).
    pub(super) fn answer_if_waiting(&self, grant: LockGrant) {
        let wait = wait_of(&grant);
        let Some(answer) = self.waits().remove(&wait) else {
            return;
        };
        let result = if grant.granted {
            Ok(())
        } else {
            Err(LockError::NotExist)
        };
        if answer.send(result).is_err() && grant.granted {
            let _ = self.orphans.send(grant);
            return;
        }
        if grant.granted {
            let mut answered = self.answered();
            answered.retain(|_, at| at.elapsed() < std::time::Duration::from_secs(60));
            answered.insert(wait, std::time::Instant::now());
        }
    }

    fn answered(&self) -> MutexGuard<'_, HashMap<Wait, std::time::Instant>> {
        self.answered.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The wait a grant answers.
fn wait_of(grant: &LockGrant) -> Wait {
    (
        grant.session,
        (
            grant.app.as_str().into(),
            grant.channel_type,
            grant.channel.as_str().into(),
        ),
        grant.lock_name.clone(),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use rtm_proto::ChannelType;

    fn grant(granted: bool) -> LockGrant {
        LockGrant {
            session: SessionId::new(2, 7),
            granted,
            app: "app".into(),
            user: "bob".into(),
            channel_type: ChannelType::Message,
            lock_name: "floor".into(),
            channel: "room".into(),
        }
    }

    #[test]
    fn a_wait_answered_from_the_record_ignores_its_late_grant() {
        let (waits, mut orphans) = LockWaits::new();
        let wait = wait_of(&grant(true));
        let mut answer = waits.add(wait.clone()).unwrap();
        assert!(matches!(
            waits.add(wait.clone()),
            Err(LockError::AlreadyWaiting)
        ));
        assert_eq!(waits.pending(), std::slice::from_ref(&wait));
        waits.answer_if_waiting(grant(true));
        assert!(matches!(answer.try_recv(), Ok(Ok(()))));
        // The grant that was late: not given back (the session holds the lock).
        waits.answer(grant(true));
        assert!(orphans.try_recv().is_err());
        // A grant for a session that stopped waiting is given back.
        let answer = waits.add(wait).unwrap();
        drop(answer);
        waits.answer(grant(true));
        assert!(orphans.try_recv().is_ok());
        // Answering what no longer waits does nothing.
        waits.answer_if_waiting(grant(false));
        assert!(orphans.try_recv().is_err());
    }
}
