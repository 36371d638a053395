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

/// Most writes one transaction takes: the database (and perhaps the lock table) stay held for
/// the whole group and its sync. The rest wait for the next group (every queued write is
/// followed by a commit call of its own, so none is left behind).
const MAX_GROUP: usize = 256;

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
        let jobs: Vec<Job> = {
            let mut queued = guard(&self.queue.jobs);
            let take = queued.len().min(MAX_GROUP);
            queued.drain(..take).collect()
        };
        if jobs.is_empty() {
            return;
        }
        if let Some(db) = db.as_mut()
            && db.in_transaction()
        {
            // A group that panicked part way left its transaction open: none of it was
            // answered as committed, so it goes.
            db.roll_back();
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
                    let mut finishes = Vec::with_capacity(jobs.len());
                    let mut aborted = None;
                    for job in jobs {
                        match &aborted {
                            None => {
                                finishes.push(job(self, Ok((&mut *db, &mut held))));
                                if !db.in_transaction() {
                                    // SQLite ended the transaction itself (an I/O error, a
                                    // full disk): what ran is gone, what follows must not
                                    // commit on its own.
                                    aborted = Some(EngineError::Unavailable(
                                        "the metadata store aborted a transaction".into(),
                                    ));
                                }
                            }
                            Some(error) => finishes.push(job(self, Err(error))),
                        }
                    }
                    let committed = match aborted {
                        Some(error) => {
                            db.roll_back();
                            Err(error)
                        }
                        None => db.commit(),
                    };
                    (finishes, committed)
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

        // Hold the database as a long commit would, and queue writes meanwhile.
        let (release_tx, holder) = hold_database(&engine);
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

        let answered = tokio::time::timeout(Duration::from_secs(30), async {
            while let Some(done) = tasks.join_next().await {
                done.unwrap().unwrap();
            }
            stale.await.unwrap()
        });
        let stale = answered.await.expect("every write is answered");
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

    /// Holds the database on a thread of its own until the returned sender is used (or
    /// dropped), as a long commit would.
    fn hold_database(
        engine: &Arc<MemoryEngine>,
    ) -> (std::sync::mpsc::Sender<()>, std::thread::JoinHandle<()>) {
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
        (release_tx, holder)
    }

    /// A write that fails after changing the database, inside a group: its savepoint is rolled
    /// back, and the writes before and after it in the same commit stay.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_write_that_fails_part_way_is_rolled_back_alone_within_its_group() {
        let dir = tempfile::tempdir().unwrap();
        let engine = Arc::new(MemoryEngine::open(dir.path(), Durability::Full).unwrap());
        let (release, holder) = hold_database(&engine);
        let before = engine.store.queue.counts();
        let store = |text: &'static str| {
            let engine = engine.clone();
            tokio::spawn(async move {
                engine
                    .store_message("app", HistoryKey::channel("good"), message(text), KEEP)
                    .await
            })
        };
        let first = store("first");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while guard(&engine.store.queue.jobs).is_empty() {
            assert!(tokio::time::Instant::now() < deadline, "not queued");
            tokio::task::yield_now().await;
        }
        // A write that inserts a message, then fails.
        let (failed_tx, failed_rx) = tokio::sync::oneshot::channel();
        engine
            .store
            .queue
            .push(Box::new(move |_: &Storage, slot: Slot<'_, '_>| {
                let outcome = slot.map_err(Clone::clone).and_then(|(db, _)| {
                    let savepoint = db
                        .conn
                        .savepoint()
                        .map_err(super::super::metadata::db_error)?;
                    savepoint
                        .execute(
                            "INSERT INTO history (app, kind, name, ts, publisher, custom_type, \
                         payload_kind, payload) VALUES ('app', ?1, 'bad', 1, 'p', '', 0, x'00')",
                            [u8::from(ChannelType::Message)],
                        )
                        .map_err(super::super::metadata::db_error)?;
                    Err::<(), _>(EngineError::Unavailable("failed after its insert".into()))
                });
                Box::new(move |_: &Storage, committed: Result<(), &EngineError>| {
                    let _ = failed_tx.send((outcome, committed.is_ok()));
                }) as Finish
            }));
        let last = store("last");
        while guard(&engine.store.queue.jobs).len() < 3 {
            assert!(tokio::time::Instant::now() < deadline, "not queued");
            tokio::task::yield_now().await;
        }
        release.send(()).unwrap();
        holder.join().unwrap();

        let answered = tokio::time::timeout(Duration::from_secs(30), async {
            (
                first.await.unwrap(),
                last.await.unwrap(),
                failed_rx.await.unwrap(),
            )
        });
        let (first, last, (failed, committed)) = answered.await.expect("every write is answered");
        first.unwrap();
        last.unwrap();
        assert!(failed.is_err());
        assert!(committed, "the group committed");
        let after = engine.store.queue.counts();
        assert_eq!((after.0 - before.0, after.1 - before.1), (1, 3));

        let page = |name: &'static str| {
            let engine = engine.clone();
            async move {
                engine
                    .get_messages("app", HistoryKey::channel(name), 100, 0, 0, KEEP)
                    .await
                    .unwrap()
                    .messages
                    .len()
            }
        };
        assert_eq!(page("good").await, 2);
        assert_eq!(
            page("bad").await,
            0,
            "the failed write's insert was rolled back"
        );
    }
}
