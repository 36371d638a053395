//! Pending leaves of the presence debounce window, for one node
//! ([`Router::hold_leave`](crate::engine::Router::hold_leave) and the two calls after it).

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use rtm_proto::ChannelType;

/// A user in a channel of an app.
type Key = (Box<str>, ChannelType, Box<str>, Box<str>);

/// Users that left a channel within the debounce window, each with the ticket of its leave.
#[derive(Debug, Default)]
pub(super) struct Debounce {
    pending: Mutex<HashMap<Key, u64>>,
    next: AtomicU64,
}

fn key(app_id: &str, channel_type: ChannelType, channel: &str, user_id: &str) -> Key {
    (app_id.into(), channel_type, channel.into(), user_id.into())
}

impl Debounce {
    fn lock(&self) -> MutexGuard<'_, HashMap<Key, u64>> {
        // Each operation is one map update: a poisoned lock still guards a valid map.
        self.pending.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records a leave; returns its ticket.
    pub(super) fn hold(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
    ) -> u64 {
        let ticket = self.next.fetch_add(1, Ordering::Relaxed);
        self.lock()
            .insert(key(app_id, channel_type, channel, user_id), ticket);
        ticket
    }

    /// Whether the leave with `ticket` is still to be told (and forgets it).
    pub(super) fn release(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
        ticket: u64,
    ) -> bool {
        let key = key(app_id, channel_type, channel, user_id);
        let mut pending = self.lock();
        if pending.get(&key) == Some(&ticket) {
            pending.remove(&key);
            true
        } else {
            false
        }
    }

    /// A return within the window: true if a leave was waiting (it is dropped).
    pub(super) fn cancel(
        &self,
        app_id: &str,
        channel_type: ChannelType,
        channel: &str,
        user_id: &str,
    ) -> bool {
        self.lock()
            .remove(&key(app_id, channel_type, channel, user_id))
            .is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_return_cancels_the_leave_and_a_second_leave_replaces_the_first() {
        let d = Debounce::default();
        let m = ChannelType::Message;
        let first = d.hold("app", m, "room", "alice");
        assert!(d.cancel("app", m, "room", "alice"));
        assert!(!d.release("app", m, "room", "alice", first), "cancelled");
        let second = d.hold("app", m, "room", "alice");
        let third = d.hold("app", m, "room", "alice");
        assert!(!d.release("app", m, "room", "alice", second), "replaced");
        assert!(!d.cancel("app", m, "other", "alice"), "another channel");
        assert!(!d.cancel("other", m, "room", "alice"), "another app");
        assert!(d.release("app", m, "room", "alice", third));
        assert!(!d.release("app", m, "room", "alice", third), "told once");
    }
}
