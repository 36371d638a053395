//! Durable metadata for the single-node engine: SQLite in the data directory (WAL), and the
//! revision rules of `docs/protocol.md` §5.9.
//!
//! Every write loads the set, applies the rules to it in memory ([`apply`]), and stores the
//! result in a savepoint that also advances the revision counter: its own transaction, or its
//! part of a group commit's (`commit.rs`). Only a committed write is acknowledged. Callers
//! serialise writes (the engine holds one lock around each group), so a check and its write
//! are atomic.

use std::path::Path;

use rtm_proto::{
    ChannelType, MetadataOp, MetadataTarget, MetadataWrite, StorageData, StoredItem, limits,
};
use rusqlite::{Connection, OptionalExtension, params};

use crate::engine::{EngineError, MetadataError};

/// How hard a commit tries to reach the disk (SQLite's `synchronous`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Durability {
    /// Every commit is synced to disk before it is acknowledged (`FULL`): nothing
    /// acknowledged is lost, even to a power cut.
    #[default]
    Full,
    /// Commits survive the server process dying, but the last ones may be lost if the whole
    /// machine loses power (`NORMAL`); several times more writes per second.
    Normal,
}

/// The metadata database.
#[derive(Debug)]
pub(crate) struct MetadataDb {
    pub(super) conn: Connection,
    /// The revision the next write gets.
    next_revision: i64,
}

const SCHEMA: &str = "
CREATE TABLE IF NOT EXISTS meta_set (
    app TEXT NOT NULL,
    kind INTEGER NOT NULL,
    name TEXT NOT NULL,
    major_revision INTEGER NOT NULL,
    PRIMARY KEY (app, kind, name)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS meta_item (
    app TEXT NOT NULL,
    kind INTEGER NOT NULL,
    name TEXT NOT NULL,
    pos INTEGER NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    revision INTEGER NOT NULL,
    updated INTEGER NOT NULL,
    author TEXT NOT NULL,
    PRIMARY KEY (app, kind, name, pos)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS history (
    app TEXT NOT NULL,
    kind INTEGER NOT NULL,
    name TEXT NOT NULL,
    ts INTEGER NOT NULL,
    publisher TEXT NOT NULL,
    custom_type TEXT NOT NULL,
    payload_kind INTEGER NOT NULL,
    payload BLOB NOT NULL,
    PRIMARY KEY (app, kind, name, ts)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS counter (
    name TEXT PRIMARY KEY,
    value INTEGER NOT NULL
) WITHOUT ROWID;
";

/// How a target is keyed in the tables: the kind (the channel type's wire number, 3 for a
/// user) and the name.
fn key_of(target: &MetadataTarget) -> (u8, &str) {
    match target {
        MetadataTarget::Channel {
            channel_type,
            channel,
        } => (u8::from(*channel_type), channel),
        MetadataTarget::User { user_id } => (u8::from(ChannelType::User), user_id),
    }
}

/// The last revision the database recorded (0 for none).
fn stored_revision(conn: &Connection) -> Result<i64, EngineError> {
    let last: Option<i64> = conn
        .query_row(
            "SELECT value FROM counter WHERE name = 'revision'",
            [],
            |row| row.get(0),
        )
        .optional()
        .map_err(db_error)?;
    Ok(last.unwrap_or(0))
}

pub(super) fn db_error(e: rusqlite::Error) -> EngineError {
    EngineError::Unavailable(format!("metadata store: {e}"))
}

/// The database's file name in the data directory.
pub(crate) const DB_FILE: &str = "metadata.sqlite3";

/// The version of [`SCHEMA`], kept in the database's `user_version`. A database with tables
/// and another version is not opened.
const SCHEMA_VERSION: i64 = 1;

/// What [`check_file`] found.
#[derive(Debug, PartialEq, Eq)]
enum Found {
    /// No tables yet: a new database.
    New,
    /// This server's schema.
    Current,
    /// This schema without its version: a database made before versions were recorded.
    Unversioned,
}

/// Checks that the database at the other end of `conn` is intact and is this server's, before
/// anything is written to it; the error says what is wrong.
fn check_file(conn: &Connection) -> Result<Found, String> {
    let unreadable = |e: rusqlite::Error| format!("it is damaged or not a database ({e})");
    let problems: Vec<String> = conn
        .prepare("PRAGMA quick_check(5)")
        .and_then(|mut q| q.query_map([], |row| row.get::<_, String>(0))?.collect())
        .map_err(unreadable)?;
    if problems != ["ok"] {
        return Err(format!(
            "it is damaged (quick_check: {})",
            problems.join("; ")
        ));
    }
    let version: i64 = conn
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .map_err(unreadable)?;
    let tables: Vec<String> = conn
        .prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name")
        .and_then(|mut q| q.query_map([], |row| row.get(0))?.collect())
        .map_err(unreadable)?;
    // Other programs use `user_version` too: the version is believed only with our schema.
    let ours = || schema_of(conn) == new_schema();
    match version {
        SCHEMA_VERSION if ours() => Ok(Found::Current),
        0 if tables.is_empty() => Ok(Found::New),
        0 if ours() => Ok(Found::Unversioned),
        0 | SCHEMA_VERSION => Err(format!(
            "it is not an rtm metadata database (it has the tables {} and not the rtm schema)",
            tables.join(", ")
        )),
        other => Err(format!(
            "it has schema version {other}, and this server knows version {SCHEMA_VERSION} (was \
             it made by another version of rtm-server?)"
        )),
    }
}

/// The definitions of everything in a database (what SQLite keeps of each `CREATE`).
fn schema_of(conn: &Connection) -> Option<Vec<(String, String, Option<String>)>> {
    let mut query = conn
        .prepare("SELECT type, name, sql FROM sqlite_master ORDER BY type, name")
        .ok()?;
    let rows = query
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
        .ok()?;
    rows.collect::<Result<_, _>>().ok()
}

/// The definitions of a database made with [`SCHEMA`].
fn new_schema() -> Option<Vec<(String, String, Option<String>)>> {
    let conn = Connection::open_in_memory().ok()?;
    conn.execute_batch(SCHEMA).ok()?;
    schema_of(&conn)
}

impl MetadataDb {
    /// Opens (creating if needed) `metadata.sqlite3` in `dir`, after checking that it is intact
    /// and has this server's schema.
    pub(crate) fn open(dir: &Path, durability: Durability) -> Result<Self, EngineError> {
        std::fs::create_dir_all(dir).map_err(|e| {
            EngineError::Unavailable(format!("cannot create {}: {e}", dir.display()))
        })?;
        let path = dir.join(DB_FILE);
        let unusable = |what: String| {
            EngineError::Unusable(format!(
                "the metadata database {} cannot be used: {what}. Restore it from a backup, or \
                 move it (with its -wal and -shm files) out of the data directory to start with \
                 an empty store",
                path.display()
            ))
        };
        let conn = Connection::open(&path).map_err(|e| unusable(e.to_string()))?;
        check_file(&conn).map_err(unusable)?;
        Self::init(conn, durability)
    }

    /// A database in memory, gone with the process.
    #[cfg(test)]
    pub(crate) fn in_memory() -> Result<Self, EngineError> {
        Self::init(
            Connection::open_in_memory().map_err(db_error)?,
            Durability::Full,
        )
    }

    fn init(conn: Connection, durability: Durability) -> Result<Self, EngineError> {
        // WAL: a commit appends to the log; readers never block the writer.
        conn.pragma_update(None, "journal_mode", "WAL")
            .map_err(db_error)?;
        let sync = match durability {
            Durability::Full => "FULL",
            Durability::Normal => "NORMAL",
        };
        conn.pragma_update(None, "synchronous", sync)
            .map_err(db_error)?;
        // Creates what is missing and records the version, in one transaction.
        conn.execute_batch(&format!(
            "BEGIN; {SCHEMA} PRAGMA user_version = {SCHEMA_VERSION}; COMMIT;"
        ))
        .map_err(db_error)?;
        let next_revision = stored_revision(&conn)? + 1;
        Ok(Self {
            conn,
            next_revision,
        })
    }

    /// The set of `target` in `app`: no items and major revision 0 when it does not exist.
    pub(crate) fn load(
        &self,
        app: &str,
        target: &MetadataTarget,
    ) -> Result<(StorageData, bool), EngineError> {
        load_set(&self.conn, app, target)
    }

    /// Starts a transaction that several writes share ([`super::commit`]).
    pub(crate) fn begin(&mut self) -> Result<(), EngineError> {
        self.conn.execute_batch("BEGIN IMMEDIATE").map_err(db_error)
    }

    /// Commits the transaction [`MetadataDb::begin`] started, or rolls it back if the commit
    /// fails (the revision counter then continues from what the disk has).
    pub(crate) fn commit(&mut self) -> Result<(), EngineError> {
        self.conn.execute_batch("COMMIT").map_err(|e| {
            self.roll_back();
            db_error(e)
        })
    }

    /// Whether a transaction is open: [`MetadataDb::begin`]'s, until SQLite aborts it (an I/O
    /// error, a full disk) or it ends.
    pub(crate) fn in_transaction(&self) -> bool {
        !self.conn.is_autocommit()
    }

    /// Rolls back an open transaction (if any) and reloads the revision counter.
    pub(crate) fn roll_back(&mut self) {
        if self.in_transaction() {
            let _ = self.conn.execute_batch("ROLLBACK");
        }
        if let Ok(stored) = stored_revision(&self.conn) {
            self.next_revision = self.next_revision.max(stored + 1);
        }
    }

    /// Applies `write` by `author` at `now` (milliseconds) and commits it (or releases it into
    /// the group's transaction); returns the set after the write.
    pub(crate) fn write(
        &mut self,
        app: &str,
        write: &MetadataWrite,
        author: &str,
        now: u64,
    ) -> Result<StorageData, MetadataError> {
        let (mut data, exists) = self.load(app, &write.target)?;
        let revision = self.next_revision;
        let removed = apply(&mut data, exists, write, author, now, revision)?;
        let (kind, name) = key_of(&write.target);
        // A savepoint: a transaction of its own, or part of a group commit's.
        let tx = self.conn.savepoint().map_err(db_error)?;
        tx.execute(
            "DELETE FROM meta_item WHERE app = ?1 AND kind = ?2 AND name = ?3",
            params![app, kind, name],
        )
        .map_err(db_error)?;
        if removed {
            tx.execute(
                "DELETE FROM meta_set WHERE app = ?1 AND kind = ?2 AND name = ?3",
                params![app, kind, name],
            )
            .map_err(db_error)?;
        } else {
            tx.execute(
                "INSERT INTO meta_set (app, kind, name, major_revision) VALUES (?1, ?2, ?3, ?4) \
                 ON CONFLICT (app, kind, name) DO UPDATE SET major_revision = ?4",
                params![app, kind, name, data.major_revision],
            )
            .map_err(db_error)?;
            let mut insert = tx
                .prepare(
                    "INSERT INTO meta_item (app, kind, name, pos, key, value, revision, updated, \
                     author) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)",
                )
                .map_err(db_error)?;
            for (pos, item) in data.items.iter().enumerate() {
                insert
                    .execute(params![
                        app,
                        kind,
                        name,
                        pos as i64,
                        item.key,
                        item.value,
                        item.revision,
                        i64::try_from(item.updated).unwrap_or(i64::MAX),
                        item.author_user_id,
                    ])
                    .map_err(db_error)?;
            }
        }
        tx.execute(
            "INSERT INTO counter (name, value) VALUES ('revision', ?1) \
             ON CONFLICT (name) DO UPDATE SET value = ?1",
            params![revision],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        self.next_revision += 1;
        Ok(data)
    }
}

/// A second connection to the database, read-only: in WAL mode reads see every committed
/// write and never wait for one in progress, so they need neither the writer's lock nor a
/// blocking thread.
#[derive(Debug)]
pub(crate) struct Reader {
    pub(super) conn: Connection,
}

impl Reader {
    /// Opens the database that [`MetadataDb::open`] opened in `dir`, for reading.
    pub(crate) fn open(dir: &Path) -> Result<Self, EngineError> {
        let flags =
            rusqlite::OpenFlags::SQLITE_OPEN_READ_ONLY | rusqlite::OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let conn = Connection::open_with_flags(dir.join(DB_FILE), flags).map_err(db_error)?;
        Ok(Self { conn })
    }

    /// See [`MetadataDb::load`].
    pub(crate) fn load(
        &self,
        app: &str,
        target: &MetadataTarget,
    ) -> Result<(StorageData, bool), EngineError> {
        load_set(&self.conn, app, target)
    }
}

/// The set of `target` in `app`, read through `conn` (the writer's connection or a reader's).
fn load_set(
    conn: &Connection,
    app: &str,
    target: &MetadataTarget,
) -> Result<(StorageData, bool), EngineError> {
    let (kind, name) = key_of(target);
    let major: Option<i64> = conn
        .query_row(
            "SELECT major_revision FROM meta_set WHERE app = ?1 AND kind = ?2 AND name = ?3",
            params![app, kind, name],
            |row| row.get(0),
        )
        .optional()
        .map_err(db_error)?;
    let Some(major_revision) = major else {
        return Ok((StorageData::default(), false));
    };
    let mut statement = conn
        .prepare(
            "SELECT key, value, revision, updated, author FROM meta_item \
                 WHERE app = ?1 AND kind = ?2 AND name = ?3 ORDER BY pos",
        )
        .map_err(db_error)?;
    let items = statement
        .query_map(params![app, kind, name], |row| {
            Ok(StoredItem {
                key: row.get(0)?,
                value: row.get(1)?,
                revision: row.get(2)?,
                updated: row.get::<_, i64>(3)?.try_into().unwrap_or(0),
                author_user_id: row.get(4)?,
            })
        })
        .map_err(db_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_error)?;
    Ok((
        StorageData {
            major_revision,
            items,
        },
        true,
    ))
}

/// Applies the rules of `docs/protocol.md` §5.9.1 to `data` (the current set; `exists` tells
/// whether there is one): the major revision first, then each item's, then the change, whose
/// items get `revision`. Returns whether the whole set was removed. On error `data` may be
/// half-changed: callers drop it.
pub(crate) fn apply(
    data: &mut StorageData,
    exists: bool,
    write: &MetadataWrite,
    author: &str,
    now: u64,
    revision: i64,
) -> Result<bool, MetadataError> {
    let expected = write.options.major_revision;
    let major_ok = match expected {
        -1 => true,
        0 => !exists,
        n => exists && data.major_revision == n,
    };
    if !major_ok {
        return Err(MetadataError::OutdatedMajor {
            expected,
            actual: if exists { data.major_revision } else { 0 },
        });
    }
    for item in &write.items {
        let current = data.get(&item.key).map(|stored| stored.revision);
        let item_ok = match (item.revision, current) {
            (-1, Some(_)) => true,
            // Set creates; update and remove need the item.
            (-1, None) => write.op == MetadataOp::Set,
            (0, current) => current.is_none() && write.op == MetadataOp::Set,
            (n, current) => current == Some(n),
        };
        if !item_ok {
            return Err(MetadataError::Outdated {
                key: item.key.clone(),
                expected: item.revision,
                actual: current,
            });
        }
    }
    if write.op == MetadataOp::Remove && write.items.is_empty() {
        if !exists {
            return Err(MetadataError::NoSet);
        }
        *data = StorageData::default();
        return Ok(true);
    }
    let stamp = |stored: &mut StoredItem, value: &str| {
        stored.value = value.to_owned();
        stored.revision = revision;
        stored.updated = if write.options.add_timestamp { now } else { 0 };
        stored.author_user_id = if write.options.add_user_id {
            author.to_owned()
        } else {
            String::new()
        };
    };
    for item in &write.items {
        let position = data.items.iter().position(|stored| stored.key == item.key);
        match (write.op, position) {
            (MetadataOp::Remove, Some(i)) => {
                data.items.remove(i);
            }
            (_, Some(i)) => stamp(&mut data.items[i], &item.value),
            (_, None) => {
                let mut stored = StoredItem {
                    key: item.key.clone(),
                    ..StoredItem::default()
                };
                stamp(&mut stored, &item.value);
                data.items.push(stored);
            }
        }
    }
    if data.items.len() > limits::MAX_METADATA_ITEMS {
        return Err(MetadataError::TooManyItems(data.items.len()));
    }
    let size: usize = data.items.iter().map(|i| i.key.len() + i.value.len()).sum();
    if size > limits::MAX_METADATA_SET_SIZE {
        return Err(MetadataError::TooLarge(size));
    }
    data.major_revision = revision;
    Ok(false)
}

#[cfg(test)]
mod tests {
    use rtm_proto::{ErrorCode, MetadataItem, MetadataOptions};

    use super::*;

    fn write(op: MetadataOp, items: &[(&str, &str, i64)]) -> MetadataWrite {
        MetadataWrite {
            op,
            target: MetadataTarget::Channel {
                channel_type: ChannelType::Message,
                channel: "room".into(),
            },
            items: items
                .iter()
                .map(|(k, v, r)| MetadataItem {
                    key: (*k).into(),
                    value: (*v).into(),
                    revision: *r,
                })
                .collect(),
            options: MetadataOptions::default(),
        }
    }

    fn code(r: Result<StorageData, MetadataError>) -> ErrorCode {
        r.err().map(|e| e.code()).unwrap_or(ErrorCode::Ok)
    }

    #[test]
    fn set_update_remove_and_revisions() {
        let mut db = MetadataDb::in_memory().unwrap();
        let set = db
            .write(
                "a",
                &write(MetadataOp::Set, &[("x", "1", -1), ("y", "2", -1)]),
                "u",
                5,
            )
            .unwrap();
        assert_eq!(set.major_revision, 1);
        assert_eq!(
            set.items.iter().map(|i| i.revision).collect::<Vec<_>>(),
            [1, 1]
        );
        // Update only touches existing keys; the untouched one keeps its revision.
        let upd = db
            .write("a", &write(MetadataOp::Update, &[("y", "3", 1)]), "u", 6)
            .unwrap();
        assert_eq!(upd.major_revision, 2);
        assert_eq!(upd.get("x").unwrap().revision, 1);
        assert_eq!(upd.get("y").unwrap().revision, 2);
        assert_eq!(upd.get("y").unwrap().value, "3");
        // A stale item revision, a missing key for update, a created-only key that exists.
        for bad in [
            write(MetadataOp::Update, &[("y", "4", 1)]),
            write(MetadataOp::Update, &[("z", "4", -1)]),
            write(MetadataOp::Set, &[("x", "4", 0)]),
            write(MetadataOp::Remove, &[("z", "", -1)]),
        ] {
            assert_eq!(
                code(db.write("a", &bad, "u", 7)),
                ErrorCode::StorageOutdatedRevision,
                "{bad:?}"
            );
        }
        // Nothing of a failed write stays, and revisions were not used up.
        let (now, _) = db.load("a", &write(MetadataOp::Set, &[]).target).unwrap();
        assert_eq!(now, upd);
        // Major revision: stale, then right.
        let mut major = write(MetadataOp::Set, &[("z", "5", -1)]);
        major.options.major_revision = 1;
        assert_eq!(
            code(db.write("a", &major, "u", 8)),
            ErrorCode::StorageOutdatedRevision
        );
        major.options.major_revision = 2;
        let with_z = db.write("a", &major, "u", 8).unwrap();
        assert_eq!(with_z.major_revision, 3);
        // Keys keep the order they were first set in.
        let keys: Vec<_> = with_z.items.iter().map(|i| i.key.as_str()).collect();
        assert_eq!(keys, ["x", "y", "z"]);
        let removed = db
            .write("a", &write(MetadataOp::Remove, &[("x", "", 1)]), "u", 9)
            .unwrap();
        assert_eq!(removed.total_count(), 2);
        // The whole set; then it is gone, and removing it again fails.
        let gone = db
            .write("a", &write(MetadataOp::Remove, &[]), "u", 10)
            .unwrap();
        assert_eq!(gone, StorageData::default());
        assert_eq!(
            code(db.write("a", &write(MetadataOp::Remove, &[]), "u", 10)),
            ErrorCode::StorageOutdatedRevision
        );
        // Created again: revisions keep growing.
        let mut create = write(MetadataOp::Set, &[("x", "1", 0)]);
        create.options.major_revision = 0;
        let again = db.write("a", &create, "u", 11).unwrap();
        assert_eq!(again.major_revision, 6);
        // Other apps and other channel types are other sets.
        let (other, exists) = db.load("b", &create.target).unwrap();
        assert!(!exists && other.items.is_empty());
        let stream = MetadataTarget::Channel {
            channel_type: ChannelType::Stream,
            channel: "room".into(),
        };
        assert!(!db.load("a", &stream).unwrap().1);
    }

    #[test]
    fn timestamps_and_authors_only_when_asked() {
        let mut db = MetadataDb::in_memory().unwrap();
        let mut w = write(MetadataOp::Set, &[("x", "1", -1)]);
        let plain = db.write("a", &w, "alice", 1234).unwrap();
        assert_eq!(plain.items[0].updated, 0);
        assert_eq!(plain.items[0].author_user_id, "");
        w.options.add_timestamp = true;
        w.options.add_user_id = true;
        let marked = db.write("a", &w, "alice", 1234).unwrap();
        assert_eq!(marked.items[0].updated, 1234);
        assert_eq!(marked.items[0].author_user_id, "alice");
    }

    #[test]
    fn set_size_and_item_count_are_bounded() {
        let mut db = MetadataDb::in_memory().unwrap();
        let big = "v".repeat(9 * 1024);
        db.write("a", &write(MetadataOp::Set, &[("x", &big, -1)]), "u", 1)
            .unwrap();
        assert_eq!(
            code(db.write("a", &write(MetadataOp::Set, &[("y", &big, -1)]), "u", 1)),
            ErrorCode::StorageMetadataLengthOverflow
        );
        // Overwriting the same key is fine: the size is the set's after the write.
        db.write("a", &write(MetadataOp::Set, &[("x", &big, -1)]), "u", 1)
            .unwrap();
        let keys: Vec<String> = (0..100).map(|i| format!("k{i}")).collect();
        let items: Vec<_> = keys.iter().map(|k| (k.as_str(), "", -1)).collect();
        let mut w = write(MetadataOp::Set, &items);
        w.target = MetadataTarget::User {
            user_id: "u".into(),
        };
        db.write("a", &w, "u", 1).unwrap();
        let more: Vec<String> = (100..129).map(|i| format!("k{i}")).collect();
        w.items = more
            .iter()
            .map(|k| MetadataItem::new(k.as_str(), ""))
            .collect();
        assert_eq!(
            code(db.write("a", &w, "u", 1)),
            ErrorCode::StorageMetadataItemExceedLimitation
        );
    }

    #[test]
    fn a_database_of_another_schema_or_version_is_refused() {
        let refused = |setup: &str| {
            let dir = tempfile::tempdir().unwrap();
            Connection::open(dir.path().join(DB_FILE))
                .unwrap()
                .execute_batch(setup)
                .unwrap();
            let err = MetadataDb::open(dir.path(), Durability::Full).unwrap_err();
            assert!(matches!(err, EngineError::Unusable(_)), "{err:?}");
            let text = err.to_string();
            assert!(text.contains(&dir.path().join(DB_FILE).display().to_string()));
            assert!(text.contains("Restore it from a backup"), "{text}");
            text
        };
        let foreign = refused("CREATE TABLE meta_item (id INTEGER PRIMARY KEY, body TEXT);");
        assert!(
            foreign.contains("not an rtm metadata database"),
            "{foreign}"
        );
        assert!(foreign.contains("meta_item"), "{foreign}");
        // Another program's database that happens to carry our version number.
        let borrowed = refused(&format!(
            "CREATE TABLE meta_item (id INTEGER PRIMARY KEY); PRAGMA user_version = {SCHEMA_VERSION};"
        ));
        assert!(
            borrowed.contains("not an rtm metadata database"),
            "{borrowed}"
        );
        let newer = refused(&format!("{SCHEMA} PRAGMA user_version = 2;"));
        assert!(newer.contains("schema version 2"), "{newer}");
    }

    #[test]
    fn new_databases_get_the_version_and_unversioned_ones_of_this_schema_are_kept() {
        let dir = tempfile::tempdir().unwrap();
        let w = write(MetadataOp::Set, &[("x", "1", -1)]);
        {
            let mut db = MetadataDb::open(dir.path(), Durability::Full).unwrap();
            db.write("a", &w, "u", 1).unwrap();
            let version: i64 = db
                .conn
                .pragma_query_value(None, "user_version", |row| row.get(0))
                .unwrap();
            assert_eq!(version, SCHEMA_VERSION);
            // As a server from before versions were recorded left it.
            db.conn.pragma_update(None, "user_version", 0).unwrap();
        }
        let db = MetadataDb::open(dir.path(), Durability::Full).unwrap();
        assert_eq!(db.load("a", &w.target).unwrap().0.major_revision, 1);
        let version: i64 = db
            .conn
            .pragma_query_value(None, "user_version", |row| row.get(0))
            .unwrap();
        assert_eq!(version, SCHEMA_VERSION);
    }

    #[test]
    fn a_reopened_database_has_every_set_and_continues_the_revisions() {
        let dir = tempfile::tempdir().unwrap();
        let w = write(MetadataOp::Set, &[("x", "1", -1)]);
        {
            let mut db = MetadataDb::open(dir.path(), Durability::Full).unwrap();
            db.write("a", &w, "u", 1).unwrap();
            db.write("a", &w, "u", 1).unwrap();
        }
        let mut db = MetadataDb::open(dir.path(), Durability::Normal).unwrap();
        let (data, exists) = db.load("a", &w.target).unwrap();
        assert!(exists);
        assert_eq!(data.major_revision, 2);
        assert_eq!(db.write("a", &w, "u", 1).unwrap().major_revision, 3);
    }
}
