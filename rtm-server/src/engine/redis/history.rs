//! History in Redis: one Redis Stream per history, whose entry ids are rtm's message
//! timestamps (`<ms>-0`), unique and growing within the history; trimmed on every write by
//! count and age, as the app's retention says.

use std::sync::LazyLock;

use redis::Script;
use rtm_proto::{ChannelType, HistoryMessage};

use super::RedisEngine;
use crate::clock::now_ms;
use crate::engine::{EngineError, HistoryKey, HistoryPage, Retention};

/// Appends a message with the timestamp now, or 1 ms after the newest if that is not before;
/// keeps the newest ARGV[2] and none older than ARGV[3] (0: no age limit). Returns the
/// timestamp given.
static STORE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local ts = tonumber(ARGV[1])
        local last = redis.call('XREVRANGE', KEYS[1], '+', '-', 'COUNT', 1)
        if #last > 0 then
            local newest = tonumber(string.match(last[1][1], '^(%d+)'))
            if newest >= ts then
                ts = newest + 1
            end
        end
        local id = string.format('%.0f', ts)
        redis.call('XADD', KEYS[1], 'MAXLEN', ARGV[2], id .. '-0', 'm', ARGV[4])
        if ARGV[3] ~= '0' then
            redis.call('XTRIM', KEYS[1], 'MINID', ARGV[3])
        end
        return ts
        ",
    )
});

/// The oldest timestamp `retention` keeps at `now` (0: any).
fn oldest_kept(retention: Retention, now: u64) -> u64 {
    match retention.max_age_ms {
        0 => 0,
        age => now.saturating_sub(age),
    }
}

fn stream_key(app_id: &str, key: &HistoryKey) -> String {
    let kind = match key.channel_type {
        ChannelType::User => 'u',
        _ => 'm',
    };
    format!("rtm:{app_id}:h{kind}:{}", key.name)
}

impl RedisEngine {
    pub(super) async fn append(
        &self,
        app_id: &str,
        key: HistoryKey,
        mut message: HistoryMessage,
        retention: Retention,
    ) -> Result<u64, EngineError> {
        message.timestamp = 0;
        let encoded = postcard::to_stdvec(&message)
            .map_err(|e| EngineError::Unavailable(format!("history message not encoded: {e}")))?;
        let now = now_ms();
        let mut conn = self.shard(&[app_id.as_bytes(), b"\x00history", key.name.as_bytes()]);
        let mut invocation = STORE.prepare_invoke();
        invocation
            .key(stream_key(app_id, &key))
            .arg(now)
            .arg(retention.max_messages)
            .arg(oldest_kept(retention, now))
            .arg(encoded);
        self.run("store message", invocation.invoke_async(&mut conn))
            .await
    }

    pub(super) async fn page(
        &self,
        app_id: &str,
        key: HistoryKey,
        (count, start, end): (u32, u64, u64),
        retention: Retention,
    ) -> Result<HistoryPage, EngineError> {
        let mut conn = self.shard(&[app_id.as_bytes(), b"\x00history", key.name.as_bytes()]);
        let below = match start {
            0 => "+".to_owned(),
            start => format!("({start}-0"),
        };
        let from = match end.max(oldest_kept(retention, now_ms())) {
            0 => "-".to_owned(),
            from => format!("{from}-0"),
        };
        let mut cmd = redis::cmd("XREVRANGE");
        cmd.arg(stream_key(app_id, &key))
            .arg(below)
            .arg(from)
            .arg("COUNT")
            .arg(u64::from(count) + 1);
        let entries: Vec<(String, Vec<Vec<u8>>)> =
            self.run("get messages", cmd.query_async(&mut conn)).await?;
        let mut messages = Vec::with_capacity(entries.len());
        for (id, fields) in entries {
            let timestamp = id
                .split_once('-')
                .and_then(|(ms, _)| ms.parse().ok())
                .unwrap_or(0);
            let Some(encoded) = fields.get(1) else {
                continue;
            };
            match postcard::from_bytes::<HistoryMessage>(encoded) {
                Ok(mut message) => {
                    message.timestamp = timestamp;
                    messages.push(message);
                }
                Err(e) => tracing::warn!(%id, "unreadable stored message skipped: {e}"),
            }
        }
        Ok(HistoryPage::from_newest(messages, count))
    }
}
