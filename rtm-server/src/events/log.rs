//! The Signaling REST API's event queues (`GET .../rtm/vendor/user_events` and
//! `.../channel_events`): the last [`KEPT`] events of each kind per app, on this node, taken
//! (consumed) by the reads, at most [`PER_READ`] at a time, oldest first.

use std::collections::VecDeque;
use std::sync::{Mutex, PoisonError};

use serde::Serialize;

/// Events kept per kind and app; beyond, the oldest go (the reference keeps 2 000).
pub(crate) const KEPT: usize = 2000;
/// Events one read takes, at most (the reference gives 1 000).
pub(crate) const PER_READ: usize = 1000;

/// A login or logout, as the REST API gives it (`{user_id, type, ms}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct UserEvent {
    pub(crate) user_id: String,
    /// `Login` or `Logout`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) ms: u64,
}

/// An arrival in or departure from a channel, as the REST API gives it
/// (`{group_id, user_id, type, ms}`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub(crate) struct ChannelEvent {
    #[serde(rename = "group_id")]
    pub(crate) channel: String,
    pub(crate) user_id: String,
    /// `Join` or `Leave`.
    #[serde(rename = "type")]
    pub(crate) kind: &'static str,
    pub(crate) ms: u64,
}

/// One app's queues.
#[derive(Debug, Default)]
pub(crate) struct EventLog {
    users: Mutex<VecDeque<UserEvent>>,
    channels: Mutex<VecDeque<ChannelEvent>>,
}

fn push<T>(queue: &Mutex<VecDeque<T>>, item: T) {
    let mut queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
    if queue.len() == KEPT {
        queue.pop_front();
    }
    queue.push_back(item);
}

fn take<T>(queue: &Mutex<VecDeque<T>>) -> Vec<T> {
    let mut queue = queue.lock().unwrap_or_else(PoisonError::into_inner);
    let n = queue.len().min(PER_READ);
    queue.drain(..n).collect()
}

impl EventLog {
    pub(crate) fn push_user(&self, event: UserEvent) {
        push(&self.users, event);
    }

    pub(crate) fn push_channel(&self, event: ChannelEvent) {
        push(&self.channels, event);
    }

    /// Takes the oldest user events, at most [`PER_READ`].
    pub(crate) fn take_users(&self) -> Vec<UserEvent> {
        take(&self.users)
    }

    /// Takes the oldest channel events, at most [`PER_READ`].
    pub(crate) fn take_channels(&self) -> Vec<ChannelEvent> {
        take(&self.channels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn login(n: usize) -> UserEvent {
        UserEvent {
            user_id: format!("u{n}"),
            kind: "Login",
            ms: n as u64,
        }
    }

    #[test]
    fn the_oldest_go_beyond_what_is_kept_and_reads_take_a_thousand_at_most() {
        let log = EventLog::default();
        for n in 0..KEPT + 500 {
            log.push_user(login(n));
        }
        let first = log.take_users();
        assert_eq!(first.len(), PER_READ);
        assert_eq!(first[0], login(500), "the 500 oldest were dropped");
        let second = log.take_users();
        assert_eq!(second.len(), KEPT - PER_READ);
        assert_eq!(second.last(), Some(&login(KEPT + 499)));
        assert!(log.take_users().is_empty(), "consumed on read");
        assert!(log.take_channels().is_empty());
    }
}
