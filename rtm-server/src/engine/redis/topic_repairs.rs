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
//! its own call then decides, and cancels the repair (after waiting for it if it is running, so
//! the session's script reaches Redis last).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError};

use super::RedisEngine;
use super::reaper::ghost;
use crate::engine::{EngineError, SessionHandle, SessionId};

/// Repairs kept at most: beyond that (Redis away for long under many leaves) new failures are
/// not recorded, and their entries stay until the node dies and is reaped.
const MAX_REPAIRS: usize = 65_536;
/// Repair scripts run per upkeep tick, at most.
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
    /// Which recording this is: a run forgets the repair only if no newer one replaced it.
    generation: u64,
    /// Held while the repair's script runs; the session's next call for the topic waits for
    /// it, so the two scripts reach Redis one after the other, the session's last.
    gate: Arc<tokio::sync::Mutex<()>>,
}

#[derive(Debug, Default)]
struct Repairs {
    waiting: HashMap<Key, Repair>,
    generations: u64,
    /// Failures not recorded because `MAX_REPAIRS` were waiting.
    dropped: u64,
}

/// The repairs waiting for Redis, one per session and topic (the newest wins).
#[derive(Debug, Default)]
pub(super) struct TopicRepairs(Mutex<Repairs>);

impl TopicRepairs {
    fn lock(&self) -> std::sync::MutexGuard<'_, Repairs> {
        self.0.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Records that `session`'s entry of `topic` in `channel` should be as `wanted`.
    pub(super) fn record(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        wanted: Wanted,
    ) {
        let mut repairs = self.lock();
        let key = (session.id(), channel.into(), topic.into());
        let gate = match repairs.waiting.get(&key) {
            Some(repair) => repair.gate.clone(),
            None if repairs.waiting.len() >= MAX_REPAIRS => {
                repairs.dropped += 1;
                if repairs.dropped.is_power_of_two() {
                    let dropped = repairs.dropped;
                    tracing::warn!(
                        dropped,
                        "too many topic entries wait for Redis: new ones are left as they are"
                    );
                }
                return;
            }
            None => Arc::default(),
        };
        repairs.generations += 1;
        let generation = repairs.generations;
        repairs.waiting.insert(
            key,
            Repair {
                app_id: session.app_id().into(),
                user_id: session.user_id().into(),
                wanted,
                generation,
                gate,
            },
        );
    }

    /// Forgets the repair of `session`'s entry of `topic`, because the session changes that
    /// entry again, after waiting for the repair's script if it is running; what the repair
    /// wanted, if one waited.
    pub(super) async fn cancel(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
    ) -> Option<Wanted> {
        let (key, gate) = {
            let repairs = self.lock();
            // Nearly always: nothing waits, and the key need not be made.
            if repairs.waiting.is_empty() {
                return None;
            }
            let key: Key = (session.id(), channel.into(), topic.into());
            let gate = repairs.waiting.get(&key)?.gate.clone();
            (key, gate)
        };
        let _running = gate.lock().await;
        self.lock().waiting.remove(&key).map(|r| r.wanted)
    }

    /// The keys waiting.
    fn keys(&self) -> Vec<Key> {
        self.lock().waiting.keys().cloned().collect()
    }

    /// The gate of `key`, if it still waits.
    fn gate(&self, key: &Key) -> Option<Arc<tokio::sync::Mutex<()>>> {
        Some(self.lock().waiting.get(key)?.gate.clone())
    }

    /// What `key` wants and its generation, if it still waits.
    fn get(&self, key: &Key) -> Option<(SessionHandle, Wanted, u64)> {
        let (app_id, user_id, wanted, generation) = {
            let repairs = self.lock();
            let r = repairs.waiting.get(key)?;
            (
                r.app_id.clone(),
                r.user_id.clone(),
                r.wanted.clone(),
                r.generation,
            )
        };
        Some((ghost(key.0, &app_id, &user_id), wanted, generation))
    }

    /// Forgets `key` if it is still the recording `generation` (not replaced since).
    fn done(&self, key: &Key, generation: u64) {
        let mut repairs = self.lock();
        if repairs
            .waiting
            .get(key)
            .is_some_and(|r| r.generation == generation)
        {
            repairs.waiting.remove(key);
        }
    }

    /// How many repairs wait.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().waiting.len()
    }
}

impl RedisEngine {
    /// Takes `session` out of `topic`'s list in the cluster (it has left here); if Redis does
    /// not answer, the upkeep does it later.
    pub(super) async fn leave_in_cluster(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
    ) -> Result<(), EngineError> {
        let repairs = &self.inner.topic_repairs;
        repairs.cancel(session, channel, topic).await;
        let left = self.stop_publishing(session, channel, topic).await;
        if left.is_err() {
            repairs.record(session, channel, topic, Wanted::Gone);
        }
        left
    }

    /// Runs the waiting repairs (at most [`REPAIRS_PER_TICK`] scripts), each only while the
    /// session's state here still agrees with it: a listed entry for a session still joined to
    /// the topic, no entry for one that is not. A shard that fails one is skipped for the rest
    /// of the tick: it is likely still away.
    pub(super) async fn repair_topics(&self) {
        let repairs = &self.inner.topic_repairs;
        let mut failed_shards = HashSet::new();
        let mut ran = 0;
        for key in repairs.keys() {
            if ran == REPAIRS_PER_TICK {
                break;
            }
            let Some(gate) = repairs.gate(&key) else {
                continue;
            };
            let _running = gate.lock().await;
            // Cancelled while this run waited for the gate: the session's call decides.
            let Some((session, wanted, generation)) = repairs.get(&key) else {
                continue;
            };
            let (_, channel, topic) = &key;
            let (shard, _) = self.channel_shard(session.app_id(), channel);
            if failed_shards.contains(&shard) {
                continue;
            }
            let joined = self
                .inner
                .local
                .joined_meta(&session, channel, topic)
                .is_some();
            let result = match &wanted {
                Wanted::Listed(meta) if joined => {
                    ran += 1;
                    self.publish_in_topic(&session, channel, topic, meta).await
                }
                Wanted::Gone if !joined => {
                    ran += 1;
                    self.stop_publishing(&session, channel, topic).await
                }
                // The session's state moved on through a path that ran its own script.
                _ => Ok(()),
            };
            match result {
                Ok(()) => repairs.done(&key, generation),
                Err(e) => {
                    tracing::debug!(%channel, %topic, "a publisher entry not repaired yet: {e}");
                    failed_shards.insert(shard);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::metrics::Metrics;
    use crate::outbox::Outbox;

    /// Polls `fut` once.
    fn poll_once<F: Future + Unpin>(mut fut: F) -> Option<F::Output> {
        let waker = std::task::Waker::noop();
        let mut cx = std::task::Context::from_waker(waker);
        match std::pin::Pin::new(&mut fut).poll(&mut cx) {
            std::task::Poll::Ready(out) => Some(out),
            std::task::Poll::Pending => None,
        }
    }

    /// Runs a future that completes without waiting.
    fn now<F: Future>(fut: F) -> F::Output {
        let mut fut = std::pin::pin!(fut);
        poll_once(fut.as_mut()).expect("completes at once")
    }

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
        let (ghost, wanted, generation) = repairs.get(&key).unwrap();
        assert_eq!(
            (ghost.id(), ghost.user_id(), wanted),
            (SessionId(7), "alice", Wanted::Gone)
        );

        // A repair recorded again while it ran (even wanting the same) is kept.
        repairs.record(&alice, "stage", "video", Wanted::Gone);
        repairs.done(&key, generation);
        assert_eq!(repairs.len(), 2);
        let (_, _, newer) = repairs.get(&key).unwrap();
        repairs.done(&key, newer);
        assert_eq!(repairs.len(), 1);

        assert_eq!(
            now(repairs.cancel(&alice, "stage", "audio")),
            Some(Wanted::Gone)
        );
        assert_eq!(now(repairs.cancel(&alice, "stage", "audio")), None);
        assert_eq!(repairs.len(), 0);
    }

    /// A session's call waits for a repair of its entry that is running.
    #[tokio::test]
    async fn a_call_of_the_session_waits_for_a_running_repair() {
        let repairs = TopicRepairs::default();
        let alice = session(7);
        repairs.record(&alice, "stage", "video", Wanted::Listed("old".into()));
        let key = (SessionId(7), "stage".into(), "video".into());
        let gate = repairs.gate(&key).unwrap();
        let running = gate.lock().await;
        let mut cancel = std::pin::pin!(repairs.cancel(&alice, "stage", "video"));
        assert!(poll_once(cancel.as_mut()).is_none(), "waits for the run");
        assert_eq!(repairs.len(), 1);
        drop(running);
        assert_eq!(cancel.await, Some(Wanted::Listed("old".into())));
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
        assert_eq!(repairs.lock().dropped, 10);
    }
}
