//! Who on this node listens to which metadata set, and the order of what they get: first the
//! snapshot, then every change after it, each once.
//!
//! Changes come on a bus with the revision of the write that made them. A session that starts
//! listening is *pending* while its snapshot is read: changes that come meanwhile wait in its
//! entry. Once the snapshot (with the revision of the set's last write) is queued, the waiting
//! changes newer than it follow, and the entry is *active*: from then on a change is queued as
//! it comes, if it is newer than the last one queued.

use std::collections::HashMap;
use std::sync::{Mutex, MutexGuard, PoisonError};

use bytes::Bytes;
use rtm_proto::ChannelType;

use crate::engine::{SessionHandle, SessionId};

/// A metadata set: a channel's (message or stream) or a user's (`ChannelType::User`, the user
/// id as the name).
pub(super) type SetKey = (Box<str>, ChannelType, Box<str>);

#[derive(Debug)]
enum State {
    /// The snapshot is being read; these changes came meanwhile.
    Pending(Vec<(i64, Bytes)>),
    /// Changes up to this revision were queued.
    Active(i64),
}

#[derive(Debug)]
struct Listener {
    session: SessionHandle,
    state: State,
}

#[derive(Debug, Default)]
struct Table {
    sets: HashMap<SetKey, HashMap<SessionId, Listener>>,
    of_session: HashMap<SessionId, Vec<SetKey>>,
}

/// This node's listeners. See the module documentation.
#[derive(Debug, Default)]
pub(super) struct Listeners {
    table: Mutex<Table>,
}

impl Listeners {
    fn table(&self) -> MutexGuard<'_, Table> {
        self.table.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts `session` listening to `set`, pending its snapshot; false if it already listens.
    pub(super) fn start(&self, session: &SessionHandle, set: SetKey) -> bool {
        let mut table = self.table();
        let listeners = table.sets.entry(set.clone()).or_default();
        if listeners.contains_key(&session.id()) {
            return false;
        }
        listeners.insert(
            session.id(),
            Listener {
                session: session.clone(),
                state: State::Pending(Vec::new()),
            },
        );
        table.of_session.entry(session.id()).or_default().push(set);
        true
    }

    /// Queues `snapshot` (of the set as of revision `revision`) to a pending listener, then the
    /// changes that came meanwhile and are newer.
    pub(super) fn activate(
        &self,
        session: SessionId,
        set: &SetKey,
        revision: i64,
        snapshot: Bytes,
    ) {
        let mut table = self.table();
        let Some(listener) = table.sets.get_mut(set).and_then(|l| l.get_mut(&session)) else {
            return;
        };
        let State::Pending(waiting) = std::mem::replace(&mut listener.state, State::Active(0))
        else {
            return;
        };
        listener.session.push(snapshot);
        let mut last = revision;
        for (rev, frame) in waiting {
            if rev > last {
                listener.session.push(frame);
                last = rev;
            }
        }
        listener.state = State::Active(last);
    }

    /// Whether `session` listens to `set`.
    pub(super) fn is_listening(&self, session: SessionId, set: &SetKey) -> bool {
        self.table()
            .sets
            .get(set)
            .is_some_and(|l| l.contains_key(&session))
    }

    /// Stops `session` listening to `set`; true if it did.
    pub(super) fn stop(&self, session: SessionId, set: &SetKey) -> bool {
        let mut table = self.table();
        let removed = table
            .sets
            .get_mut(set)
            .is_some_and(|l| l.remove(&session).is_some());
        if table.sets.get(set).is_some_and(HashMap::is_empty) {
            table.sets.remove(set);
        }
        if let Some(sets) = table.of_session.get_mut(&session) {
            sets.retain(|s| s != set);
            if sets.is_empty() {
                table.of_session.remove(&session);
            }
        }
        removed
    }

    /// Stops `session` listening to everything; returns what it listened to.
    pub(super) fn forget(&self, session: SessionId) -> Vec<SetKey> {
        let sets = self.table().of_session.remove(&session).unwrap_or_default();
        let mut table = self.table();
        for set in &sets {
            if let Some(l) = table.sets.get_mut(set) {
                l.remove(&session);
                if l.is_empty() {
                    table.sets.remove(set);
                }
            }
        }
        sets
    }

    /// How many users' metadata `session` listens to.
    pub(super) fn users_of(&self, session: SessionId) -> usize {
        self.table().of_session.get(&session).map_or(0, |sets| {
            sets.iter()
                .filter(|(_, kind, _)| *kind == ChannelType::User)
                .count()
        })
    }

    /// A change of `set` made by the write of `revision`.
    pub(super) fn deliver(&self, set: &SetKey, revision: i64, frame: &Bytes) {
        let mut table = self.table();
        let Some(listeners) = table.sets.get_mut(set) else {
            return;
        };
        for listener in listeners.values_mut() {
            match &mut listener.state {
                State::Pending(waiting) => waiting.push((revision, frame.clone())),
                State::Active(last) if revision > *last => {
                    listener.session.push(frame.clone());
                    *last = revision;
                }
                State::Active(_) => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::metrics::Metrics;
    use crate::outbox::Outbox;

    #[test]
    fn the_snapshot_comes_first_then_newer_changes_once() {
        let (outbox, mut rx) = Outbox::new(16, Arc::new(Metrics::default()));
        let session = SessionHandle::new(SessionId(1), "app", "u", outbox);
        let listeners = Listeners::default();
        let set: SetKey = ("app".into(), ChannelType::Message, "room".into());
        assert!(listeners.start(&session, set.clone()));
        assert!(!listeners.start(&session, set.clone()), "once");
        // While the snapshot (as of revision 5) is read: an older change and a newer one.
        listeners.deliver(&set, 4, &Bytes::from_static(b"r4"));
        listeners.deliver(&set, 6, &Bytes::from_static(b"r6"));
        listeners.activate(SessionId(1), &set, 5, Bytes::from_static(b"snapshot"));
        listeners.deliver(&set, 6, &Bytes::from_static(b"r6 again"));
        listeners.deliver(&set, 7, &Bytes::from_static(b"r7"));
        let got: Vec<Bytes> = rx.drain().into_iter().map(|(_, f)| f).collect();
        assert_eq!(
            got,
            [b"snapshot".as_slice(), b"r6", b"r7"].map(Bytes::from_static)
        );
        assert_eq!(listeners.forget(SessionId(1)), std::slice::from_ref(&set));
        listeners.deliver(&set, 8, &Bytes::from_static(b"r8"));
        assert!(rx.drain().is_empty());
    }
}
