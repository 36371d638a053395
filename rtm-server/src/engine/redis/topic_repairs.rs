//! Publisher entries Redis did not confirm, made good by the upkeep.
//!
//! A publisher's join, change of meta or leave is a script on Redis (`topics.rs`). When the
//! call fails (Redis away, or slower than the command timeout), the session's state here is
//! settled at once and the caller is told, but Redis may hold the wrong entry: a leave whose
//! script never ran leaves the publisher in the cluster's list, and a change of meta that timed
//! out may still run afterwards, with the meta the caller was told was refused. Nothing else
//! would ever correct either while the node lives (the reaper only takes care of dead nodes).
//! So each is recorded here, and the upkeep runs the script again each second until Redis
//! answers ([`RedisEngine::repair_topics`]), unless the session changes that topic again first:
//! its own call then decides, and cancels the repair.

use std::collections::HashMap;
use std::sync::{Mutex, PoisonError};

use super::RedisEngine;
use super::reaper::ghost;
use crate::engine::{SessionHandle, SessionId};

/// Repairs kept at most: beyond that (Redis away for long under many leaves) the oldest
/// failures are not retried and their entries stay until the node dies and is reaped.
const MAX_REPAIRS: usize = 65_536;
/// Repairs run per upkeep tick, at most.
const REPAIRS_PER_TICK: usize = 128;

/// What the cluster's list should hold for one session's entry of one topic.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) enum Wanted {
    /// The session publishes with this meta.
    Listed(String),
    /// The session does not publish.
    Gone,
}

/// A session, a stream channel and a topic of it.
type Key = (SessionId, Box<str>, Box<str>);

#[derive(Debug)]
struct Repair {
    app_id: Box<str>,
    user_id: Box<str>,
    wanted: Wanted,
}

/// The repairs waiting for Redis, one per session and topic (the newest wins).
#[derive(Debug, Default)]
pub(super) struct TopicRepairs(Mutex<HashMap<Key, Repair>>);

impl TopicRepairs {
    /// Records that `session`'s entry of `topic` in `channel` should be as `wanted`.
    pub(super) fn record(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        wanted: Wanted,
    ) {
        let mut repairs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let key = (session.id(), channel.into(), topic.into());
        if repairs.len() >= MAX_REPAIRS && !repairs.contains_key(&key) {
            tracing::warn!(%channel, %topic, "too many topic entries to repair: this one is left as it is");
            return;
        }
        repairs.insert(
            key,
            Repair {
                app_id: session.app_id().into(),
                user_id: session.user_id().into(),
                wanted,
            },
        );
    }

    /// Forgets the repair of `session`'s entry of `topic`: the session changes it again.
    pub(super) fn cancel(&self, session: &SessionHandle, channel: &str, topic: &str) {
        let mut repairs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if !repairs.is_empty() {
            repairs.remove(&(session.id(), channel.into(), topic.into()));
        }
    }

    /// The keys waiting, at most `n`.
    fn keys(&self, n: usize) -> Vec<Key> {
        let repairs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        repairs.keys().take(n).cloned().collect()
    }

    /// What `key` wants, if it is still waiting.
    fn get(&self, key: &Key) -> Option<(SessionHandle, Wanted)> {
        let repairs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        let repair = repairs.get(key)?;
        let session = ghost(key.0, &repair.app_id, &repair.user_id);
        Some((session, repair.wanted.clone()))
    }

    /// Forgets `key` if it still wants `wanted` (a newer failure may have replaced it).
    fn done(&self, key: &Key, wanted: &Wanted) {
        let mut repairs = self.0.lock().unwrap_or_else(PoisonError::into_inner);
        if repairs.get(key).is_some_and(|r| r.wanted == *wanted) {
            repairs.remove(key);
        }
    }

    /// How many repairs wait.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.0.lock().unwrap_or_else(PoisonError::into_inner).len()
    }
}

impl RedisEngine {
    /// Runs the waiting repairs (at most [`REPAIRS_PER_TICK`]), each only while the session's
    /// state here still agrees with it: a listed entry for a session still joined to the
    /// topic, no entry for one that is not. Stops at the first failure: Redis is still away.
    pub(super) async fn repair_topics(&self) {
        let repairs = &self.inner.topic_repairs;
        for key in repairs.keys(REPAIRS_PER_TICK) {
            let Some((session, wanted)) = repairs.get(&key) else {
                continue;
            };
            let (_, channel, topic) = &key;
            let joined = self
                .inner
                .local
                .joined_meta(&session, channel, topic)
                .is_some();
            let result = match &wanted {
                Wanted::Listed(meta) if joined => {
                    self.publish_in_topic(&session, channel, topic, meta).await
                }
                Wanted::Gone if !joined => self.stop_publishing(&session, channel, topic).await,
                // The session's state moved on without a call of its own here (it joined or
                // left through another path, which ran its own script).
                _ => Ok(()),
            };
            match result {
                Ok(()) => repairs.done(&key, &wanted),
                Err(e) => {
                    tracing::debug!(%channel, %topic, "a publisher entry not repaired yet: {e}");
                    return;
                }
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

    fn session(id: u64) -> SessionHandle {
        thread_local!(static METRICS: Arc<Metrics> = Arc::default());
        let (outbox, _) = Outbox::new(1, METRICS.with(Arc::clone));
        SessionHandle::new(SessionId(id), "app", "alice", outbox)
    }

    #[test]
    fn the_newest_failure_wins_and_a_call_of_the_session_cancels_it() {
        let repairs = TopicRepairs::default();
        let alice = session(7);
        repairs.record(&alice, "stage", "video", Wanted::Listed("old".into()));
        repairs.record(&alice, "stage", "video", Wanted::Gone);
        repairs.record(&alice, "stage", "audio", Wanted::Gone);
        assert_eq!(repairs.len(), 2);
        let key = (SessionId(7), "stage".into(), "video".into());
        let (ghost, wanted) = repairs.get(&key).unwrap();
        assert_eq!(
            (ghost.id(), ghost.user_id(), wanted),
            (SessionId(7), "alice", Wanted::Gone)
        );

        // A repair that was replaced while it ran is kept.
        repairs.done(&key, &Wanted::Listed("old".into()));
        assert_eq!(repairs.len(), 2);
        repairs.done(&key, &Wanted::Gone);
        assert_eq!(repairs.len(), 1);

        repairs.cancel(&alice, "stage", "audio");
        assert_eq!(repairs.len(), 0);
    }

    #[test]
    fn repairs_are_bounded() {
        let repairs = TopicRepairs::default();
        for id in 0..MAX_REPAIRS as u64 + 10 {
            repairs.record(&session(id), "stage", "video", Wanted::Gone);
        }
        assert_eq!(repairs.len(), MAX_REPAIRS);
        // One already waiting can still be replaced.
        repairs.record(&session(0), "stage", "video", Wanted::Listed("m".into()));
        let key = (SessionId(0), "stage".into(), "video".into());
        assert_eq!(repairs.get(&key).unwrap().1, Wanted::Listed("m".into()));
    }
}
