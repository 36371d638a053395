//! Stored messages for the single-node engine, in the metadata database's `history` table
//! (`docs/protocol.md` §5.12).

use bytes::Bytes;
use rtm_proto::{HistoryMessage, Payload};
use rusqlite::{Connection, OptionalExtension, params};

use super::metadata::{MetadataDb, Reader, db_error};
use crate::engine::{EngineError, HistoryKey, HistoryPage, Retention};

fn split(payload: Payload) -> (u8, Vec<u8>) {
    match payload {
        Payload::Text(t) => (0, t.into_bytes()),
        Payload::Binary(b) => (1, b.to_vec()),
        Payload::Encrypted(b) => (2, b.to_vec()),
    }
}

fn join(kind: u8, bytes: Vec<u8>) -> Payload {
    match kind {
        0 => match String::from_utf8(bytes) {
            Ok(text) => Payload::Text(text),
            Err(e) => Payload::Binary(Bytes::from(e.into_bytes())),
        },
        2 => Payload::Encrypted(bytes.into()),
        _ => Payload::Binary(bytes.into()),
    }
}

/// The oldest timestamp `retention` keeps at `now`.
fn oldest_kept(retention: Retention, now: u64) -> u64 {
    match retention.max_age_ms {
        0 => 0,
        age => now.saturating_sub(age),
    }
}

impl MetadataDb {
    /// Stores a message (see [`crate::engine::Store::store_message`]); returns its timestamp.
    pub(crate) fn store_message(
        &mut self,
        app: &str,
        key: &HistoryKey,
        message: HistoryMessage,
        retention: Retention,
        now: u64,
    ) -> Result<u64, EngineError> {
        let kind = u8::from(key.channel_type);
        let tx = self.conn.savepoint().map_err(db_error)?;
        let newest: Option<i64> = tx
            .query_row(
                "SELECT MAX(ts) FROM history WHERE app = ?1 AND kind = ?2 AND name = ?3",
                params![app, kind, key.name],
                |row| row.get(0),
            )
            .optional()
            .map_err(db_error)?
            .flatten();
        let newest = newest.and_then(|t| u64::try_from(t).ok()).unwrap_or(0);
        let ts = now.max(newest + 1);
        let (payload_kind, payload) = split(message.message);
        tx.execute(
            "INSERT INTO history (app, kind, name, ts, publisher, custom_type, payload_kind, \
             payload) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
            params![
                app,
                kind,
                key.name,
                ts as i64,
                message.publisher,
                message.custom_type,
                payload_kind,
                payload
            ],
        )
        .map_err(db_error)?;
        // Retention: the newest `max_messages`, not older than the age limit.
        tx.execute(
            "DELETE FROM history WHERE app = ?1 AND kind = ?2 AND name = ?3 AND (ts < ?4 OR ts <= \
             (SELECT ts FROM history WHERE app = ?1 AND kind = ?2 AND name = ?3 \
              ORDER BY ts DESC LIMIT 1 OFFSET ?5))",
            params![
                app,
                kind,
                key.name,
                oldest_kept(retention, now) as i64,
                i64::from(retention.max_messages)
            ],
        )
        .map_err(db_error)?;
        tx.commit().map_err(db_error)?;
        Ok(ts)
    }
}

impl Reader {
    /// A page of a history (see [`crate::engine::Store::get_messages`]): at most `count`
    /// messages older than `start` and not older than `end`.
    pub(crate) fn get_messages(
        &self,
        app: &str,
        key: &HistoryKey,
        query: (u32, u64, u64),
        retention: Retention,
        now: u64,
    ) -> Result<HistoryPage, EngineError> {
        read_page(&self.conn, app, key, query, retention, now)
    }
}

/// A page of a history through `conn`.
fn read_page(
    conn: &Connection,
    app: &str,
    key: &HistoryKey,
    (count, start, end): (u32, u64, u64),
    retention: Retention,
    now: u64,
) -> Result<HistoryPage, EngineError> {
    let kind = u8::from(key.channel_type);
    // Timestamps beyond i64 (which no stored message has) bound nothing below them, and
    // everything above: never a wrapped, negative bound.
    let below = match start {
        0 => i64::MAX,
        start => i64::try_from(start).unwrap_or(i64::MAX),
    };
    let from = i64::try_from(end.max(oldest_kept(retention, now))).unwrap_or(i64::MAX);
    let mut statement = conn
        .prepare(
            "SELECT ts, publisher, custom_type, payload_kind, payload FROM history \
                 WHERE app = ?1 AND kind = ?2 AND name = ?3 AND ts < ?4 AND ts >= ?5 \
                 ORDER BY ts DESC LIMIT ?6",
        )
        .map_err(db_error)?;
    // One more than asked: whether another page follows.
    let messages = statement
        .query_map(
            params![app, kind, key.name, below, from, i64::from(count) + 1],
            |row| {
                Ok(HistoryMessage {
                    timestamp: row.get::<_, i64>(0)?.try_into().unwrap_or(0),
                    publisher: row.get(1)?,
                    custom_type: row.get(2)?,
                    message: join(row.get(3)?, row.get(4)?),
                })
            },
        )
        .map_err(db_error)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(db_error)?;
    Ok(HistoryPage::from_newest(messages, count))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn message(text: &str) -> HistoryMessage {
        HistoryMessage {
            message: Payload::Text(text.into()),
            custom_type: String::new(),
            publisher: "p".into(),
            timestamp: 0,
        }
    }

    const KEEP_10: Retention = Retention {
        max_messages: 10,
        max_age_ms: 0,
    };

    #[test]
    fn timestamps_are_unique_and_retention_keeps_the_newest() {
        let mut db = MetadataDb::in_memory().unwrap();
        let key = HistoryKey::channel("room");
        let mut stamps = Vec::new();
        for i in 0..25 {
            // The same millisecond every time: the store makes them unique.
            stamps.push(
                db.store_message("a", &key, message(&i.to_string()), KEEP_10, 1000)
                    .unwrap(),
            );
        }
        assert_eq!(stamps, (1000..1025).collect::<Vec<_>>());
        let page = read_page(&db.conn, "a", &key, (100, 0, 0), KEEP_10, 1025).unwrap();
        let texts: Vec<_> = page
            .messages
            .iter()
            .map(|m| m.message.as_text().unwrap().to_owned())
            .collect();
        assert_eq!(
            texts,
            (15..25).rev().map(|i| i.to_string()).collect::<Vec<_>>()
        );
        assert_eq!(page.new_start, 0);
        // Other apps, channels and conversations are other histories.
        assert!(
            read_page(&db.conn, "b", &key, (100, 0, 0), KEEP_10, 0)
                .unwrap()
                .messages
                .is_empty()
        );
        let dm = HistoryKey::conversation("x", "y");
        assert_eq!(dm, HistoryKey::conversation("y", "x"));
        assert!(
            read_page(&db.conn, "a", &dm, (100, 0, 0), KEEP_10, 0)
                .unwrap()
                .messages
                .is_empty()
        );
    }

    #[test]
    fn bounds_beyond_i64_are_not_wrapped() {
        let mut db = MetadataDb::in_memory().unwrap();
        let key = HistoryKey::channel("room");
        db.store_message("a", &key, message("m"), KEEP_10, 1000)
            .unwrap();
        // No message is at or after the end of time: an `end` that wrapped to a negative
        // number used to drop the bound and return everything.
        let page = read_page(&db.conn, "a", &key, (100, 0, u64::MAX), KEEP_10, 1000).unwrap();
        assert!(page.messages.is_empty(), "{:?}", page.messages);
        // Every message is older than the end of time.
        let page = read_page(&db.conn, "a", &key, (100, u64::MAX, 0), KEEP_10, 1000).unwrap();
        assert_eq!(page.messages.len(), 1);
    }

    #[test]
    fn pages_walk_backwards_with_start_and_stop_at_end() {
        let mut db = MetadataDb::in_memory().unwrap();
        let key = HistoryKey::channel("room");
        let keep = Retention {
            max_messages: 1000,
            max_age_ms: 0,
        };
        for i in 0..250u64 {
            db.store_message("a", &key, message(&i.to_string()), keep, 5000 + i)
                .unwrap();
        }
        let mut seen = Vec::new();
        let mut start = 0;
        loop {
            let page = read_page(&db.conn, "a", &key, (100, start, 0), keep, 9999).unwrap();
            seen.extend(page.messages.iter().map(|m| m.timestamp));
            if page.new_start == 0 {
                break;
            }
            start = page.new_start;
        }
        assert_eq!(seen, (5000..5250).rev().collect::<Vec<_>>());
        // `end` is inclusive, `start` exclusive.
        let window = read_page(&db.conn, "a", &key, (100, 5010, 5005), keep, 9999).unwrap();
        let stamps: Vec<_> = window.messages.iter().map(|m| m.timestamp).collect();
        assert_eq!(stamps, [5009, 5008, 5007, 5006, 5005]);
        assert_eq!(window.new_start, 0);
    }

    #[test]
    fn old_messages_age_out() {
        let mut db = MetadataDb::in_memory().unwrap();
        let key = HistoryKey::channel("room");
        let keep = Retention {
            max_messages: 100,
            max_age_ms: 1000,
        };
        db.store_message("a", &key, message("old"), keep, 1_000)
            .unwrap();
        db.store_message("a", &key, message("new"), keep, 1_500)
            .unwrap();
        // At 2 200 the first is past its age, though not yet deleted.
        let page = read_page(&db.conn, "a", &key, (100, 0, 0), keep, 2_200).unwrap();
        assert_eq!(page.messages.len(), 1);
        db.store_message("a", &key, message("newer"), keep, 2_200)
            .unwrap();
        let count: i64 = db
            .conn
            .query_row("SELECT COUNT(*) FROM history", [], |row| row.get(0))
            .unwrap();
        assert_eq!(count, 2);
    }
}
