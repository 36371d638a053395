//! Group commit for metadata and history writes.
//!
//! A write is queued, then its caller asks a blocking thread to commit the queue. Whoever holds
//! the database next takes everything queued: one transaction, each write in a savepoint of its
//! own (a write that fails is rolled back alone), one commit, so one sync to disk with
//! `durability = "full"` however many writes arrived while the previous sync was running. Each
//! write is answered, and its events sent, only after the commit that holds it. With one write
//! at a time this is exactly the old one-transaction-per-write path; under concurrent writes,
//! the syncs are shared.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};

use super::locks::LockTable;
use super::metadata::MetadataDb;
use super::storage::{Storage, guard, not_open};
use crate::engine::EngineError;

/// What a write does once its transaction is committed (`Ok`) or not (`Err`): answer its
/// caller and, if committed, tell its listeners.
pub(super) type Finish = Box<dyn FnOnce(&Storage, Result<(), &EngineError>) + Send>;

/// The database for a queued write, with the lock table if a write of the group needs it held
/// until the commit (`Storage` takes mutexes in the order database, locks, listeners); or why
/// there is none.
pub(super) type Slot<'a, 'b> = Result<(&'b mut MetadataDb, &'b mut Held<'a>), &'b EngineError>;

/// The lock table, once a write of the group has taken it.
pub(super) type Held<'a> = Option<MutexGuard<'a, LockTable>>;

/// A queued write: runs in its savepoint and says how to finish.
pub(super) type Job = Box<dyn for<'a, 'b> FnOnce(&'a Storage, Slot<'a, 'b>) -> Finish + Send>;

/// The writes waiting for the next commit.
#[derive(Default)]
pub(super) struct Queue {
    jobs: Mutex<Vec<Job>>,
    /// Transactions committed (or tried), for tests and benches.
    commits: AtomicU64,
    /// Writes those transactions held.
    writes: AtomicU64,
}

impl std::fmt::Debug for Queue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Queue")
            .field("queued", &guard(&self.jobs).len())
            .field("commits", &self.commits.load(Ordering::Relaxed))
            .finish()
    }
}

impl Queue {
    pub(super) fn push(&self, job: Job) {
        guard(&self.jobs).push(job);
    }

    /// (transactions, writes) so far.
    pub(super) fn counts(&self) -> (u64, u64) {
        (
            self.commits.load(Ordering::Relaxed),
            self.writes.load(Ordering::Relaxed),
        )
    }
}

impl Storage {
    /// Commits every queued write (on a blocking thread: it may wait for the disk). Finds the
    /// queue empty when another thread took this caller's write into its group.
    pub(super) fn commit_queued(&self) {
        let mut db = guard(&self.db);
        let jobs = std::mem::take(&mut *guard(&self.queue.jobs));
        if jobs.is_empty() {
            return;
        }
        self.queue.commits.fetch_add(1, Ordering::Relaxed);
        self.queue
            .writes
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        let mut held: Held<'_> = None;
        let (finishes, committed): (Vec<Finish>, Result<(), EngineError>) = match db.as_mut() {
            None => {
                let error = not_open();
                let finishes = jobs.into_iter().map(|job| job(self, Err(&error))).collect();
                (finishes, Err(error))
            }
            Some(db) => match db.begin() {
                Err(error) => {
                    let finishes = jobs.into_iter().map(|job| job(self, Err(&error))).collect();
                    (finishes, Err(error))
                }
                Ok(()) => {
                    let finishes = jobs
                        .into_iter()
                        .map(|job| job(self, Ok((&mut *db, &mut held))))
                        .collect();
                    (finishes, db.commit())
                }
            },
        };
        // Answers and events in queue order, with the database (and the lock table, if a
        // guarded write took it) still held, so that listeners see changes in commit order.
        for finish in finishes {
            finish(self, committed.as_ref().map(|_| ()));
        }
        drop(held);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::time::Duration;

    use rtm_proto::{
        ChannelType, HistoryMessage, MetadataItem, MetadataOp, MetadataOptions, MetadataTarget,
        MetadataWrite, Payload,
    };

    use super::*;
    use crate::engine::memory::{Durability, MemoryEngine};
    use crate::engine::{
        HistoryKey, MetadataError, Retention, SessionHandle, SessionId, Store as _,
    };
    use crate::metrics::Metrics;
    use crate::outbox::Outbox;

    fn author() -> SessionHandle {
        let (outbox, _rx) = Outbox::new(8, Arc::new(Metrics::default()));
        SessionHandle::new(SessionId(1), "app", "writer", outbox)
    }

    fn set(channel: &str, key: &str, major_revision: i64) -> MetadataWrite {
        MetadataWrite {
            op: MetadataOp::Set,
            target: MetadataTarget::Channel {
                channel_type: ChannelType::Message,
                channel: channel.into(),
            },
            items: vec![MetadataItem::new(key, "v")],
            options: MetadataOptions {
                major_revision,
                ..Default::default()
            },
        }
    }

    fn message(text: &str) -> HistoryMessage {
        HistoryMessage {
            message: Payload::Text(text.into()),
            custom_type: String::new(),
            publisher: "p".into(),
            timestamp: 0,
        }
    }

    const KEEP: Retention = Retention {
        max_messages: 1000,
        max_age_ms: 0,
    };

    /// Writes queued while the database is busy share one commit; the one refused (a stale
    /// revision) changes nothing, and every other write is answered and on disk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn queued_writes_share_one_commit_and_a_refused_one_leaves_the_others() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(MemoryEngine::open(dir.path(), Durability::Full).unwrap());
        let author = author();
        // One write first, so that the set exists at revision 1 for the stale write below.
        engine
            .write_metadata(&author, set("room", "first", -1))
            .await
            .unwrap();
        let before = engine.store.queue.counts();

        // Hold the database (on a thread of its own) as a long commit would, and queue writes
        // meanwhile.
        let (release_tx, release_rx) = std::sync::mpsc::channel::<()>();
        let (held_tx, held_rx) = std::sync::mpsc::channel::<()>();
        let holder = {
            let engine = engine.clone();
            std::thread::spawn(move || {
                let _busy = guard(&engine.store.db);
                let _ = held_tx.send(());
                let _ = release_rx.recv();
            })
        };
        held_rx.recv().unwrap();
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..20 {
            let engine = engine.clone();
            tasks.spawn(async move {
                let key = HistoryKey::channel("room");
                engine
                    .store_message("app", key, message(&i.to_string()), KEEP)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
        }
        for i in 0..5 {
            let engine = engine.clone();
            let author = author.clone();
            tasks.spawn(async move {
                let write = set(&format!("set{i}"), "k", -1);
                engine
                    .write_metadata(&author, write)
                    .await
                    .map(|_| ())
                    .map_err(|e| e.to_string())
            });
        }
        let stale = {
            let engine = engine.clone();
            let author = author.clone();
            tokio::spawn(async move { engine.write_metadata(&author, set("room", "x", 99)).await })
        };
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while guard(&engine.store.queue.jobs).len() < 26 {
            assert!(
                tokio::time::Instant::now() < deadline,
                "the writes were not queued"
            );
            tokio::task::yield_now().await;
        }
        release_tx.send(()).unwrap();
        holder.join().unwrap();

        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        let stale = stale.await.unwrap();
        assert!(
            matches!(stale, Err(MetadataError::OutdatedMajor { .. })),
            "{stale:?}"
        );
        let after = engine.store.queue.counts();
        assert_eq!(after.1 - before.1, 26, "every write went through the queue");
        assert_eq!(after.0 - before.0, 1, "one commit for all of them");

        // On disk: all 20 messages, the 5 new sets, and the stale write's item absent.
        engine.close();
        let reopened = MemoryEngine::open(dir.path(), Durability::Full).unwrap();
        let page = reopened
            .get_messages("app", HistoryKey::channel("room"), 100, 0, 0, KEEP)
            .await
            .unwrap();
        assert_eq!(page.messages.len(), 20);
        for i in 0..5 {
            let target = MetadataTarget::Channel {
                channel_type: ChannelType::Message,
                channel: format!("set{i}"),
            };
            let data = reopened.get_metadata("app", target).await.unwrap();
            assert_eq!(data.items.len(), 1, "set{i}");
        }
        let room = MetadataTarget::Channel {
            channel_type: ChannelType::Message,
            channel: "room".into(),
        };
        let data = reopened.get_metadata("app", room).await.unwrap();
        let keys: Vec<&str> = data.items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["first"]);
    }
}
