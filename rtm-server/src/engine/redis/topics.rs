//! Stream-channel topics across nodes: each topic's publishers, in join order, are a Redis
//! list beside a version counter; every change is one script that changes the list, bumps the
//! version and publishes the whole new list on the channel's bus, so every node with members
//! applies the lists of a topic in version order, and in bus order with the topic's messages: the
//! node that ran the script waits for the list on the bus too, so a publisher's last messages
//! before it leaves still find their audience there. A session joining a channel reads the
//! stored lists (with their versions); its node applies only those of topics it knows nothing of
//! (all of them for its first member there), since the bus already brings it the others in
//! order. Subscriptions stay per node, where the subscribers are.

use std::collections::HashSet;
use std::sync::{LazyLock, Mutex, PoisonError};

use redis::Script;
use rtm_proto::TopicInfo;

use super::RedisEngine;
use super::envelope::{Envelope, TopicList};
use crate::engine::memory::{ListedPublisher, StoredList};
use crate::engine::{EngineError, SessionHandle, SessionId};

/// The keys of one stream channel's topics: the set of topic names, and per topic its list of
/// publishers and the list's version.
struct TopicKeys {
    names: String,
    list: String,
    version: String,
    bus: String,
}

impl TopicKeys {
    fn new(app_id: &str, channel: &str, topic: &str) -> Self {
        let bus =
            super::keys::ChannelKeys::new(app_id, rtm_proto::ChannelType::Stream, channel).bus;
        Self {
            names: format!("rtm:{app_id}:tn:{channel}"),
            // A newline separates the channel from the topic: neither name contains one.
            list: format!("rtm:{app_id}:tl:{channel}\n{topic}"),
            version: format!("rtm:{app_id}:tv:{channel}\n{topic}"),
            bus,
        }
    }
}

/// The Lua that turns a list into a topic-list envelope ([`Envelope::Topics`]): kind `L`, then
/// the topic, the version and each entry, every string behind its length in 8 hex digits.
const ENVELOPE_LUA: &str = r"
local function envelope(topic, version, entries)
    local parts = {'L', string.format('%08x', #topic), topic, string.format('%016x', version)}
    for _, e in ipairs(entries) do
        parts[#parts + 1] = string.format('%08x', #e)
        parts[#parts + 1] = e
    end
    return table.concat(parts)
end
";

/// Adds (or, with new meta, updates in place) the publisher ARGV[1] (`sid\nuser\nmeta`, whose
/// prefix up to the first newline ARGV[2] identifies it) of topic ARGV[3]; bumps the version,
/// publishes the list on the bus and returns {version, list}.
static JOIN: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{ENVELOPE_LUA}
        local entries = redis.call('LRANGE', KEYS[1], 0, -1)
        local found = false
        for i, e in ipairs(entries) do
            if string.sub(e, 1, #ARGV[2]) == ARGV[2] then
                redis.call('LSET', KEYS[1], i - 1, ARGV[1])
                found = true
                break
            end
        end
        if not found then
            redis.call('RPUSH', KEYS[1], ARGV[1])
        end
        redis.call('SADD', KEYS[3], ARGV[3])
        local version = redis.call('INCR', KEYS[2])
        entries = redis.call('LRANGE', KEYS[1], 0, -1)
        redis.call('PUBLISH', KEYS[4], envelope(ARGV[3], version, entries))
        return {{version, entries}}
        "
    ))
});

/// Removes the publisher whose entries start with ARGV[1] from topic ARGV[2]; then as [`JOIN`].
static LEAVE: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{ENVELOPE_LUA}
        local entries = redis.call('LRANGE', KEYS[1], 0, -1)
        for _, e in ipairs(entries) do
            if string.sub(e, 1, #ARGV[1]) == ARGV[1] then
                redis.call('LREM', KEYS[1], 1, e)
            end
        end
        entries = redis.call('LRANGE', KEYS[1], 0, -1)
        if #entries == 0 then
            redis.call('SREM', KEYS[3], ARGV[2])
        end
        local version = redis.call('INCR', KEYS[2])
        redis.call('PUBLISH', KEYS[4], envelope(ARGV[2], version, entries))
        return {{version, entries}}
        "
    ))
});

/// Every topic of a channel with its version and list: {topic, version, list, topic, ...}; the
/// topics named in ARGV[3..] too, even when they have no publisher left (and so are not in the
/// channel's set).
static SNAPSHOT: LazyLock<Script> = LazyLock::new(|| {
    Script::new(
        r"
        local out = {}
        local seen = {}
        local function add(topic)
            if seen[topic] then return end
            seen[topic] = true
            out[#out + 1] = topic
            out[#out + 1] = tonumber(redis.call('GET', ARGV[2] .. topic) or '0')
            out[#out + 1] = redis.call('LRANGE', ARGV[1] .. topic, 0, -1)
        end
        for _, topic in ipairs(redis.call('SMEMBERS', KEYS[1])) do
            add(topic)
        end
        for i = 3, #ARGV do
            add(ARGV[i])
        end
        return out
        ",
    )
});

/// Publishes again on the channel's bus (KEYS[2]) the list of every topic of the channel
/// (set KEYS[1]) and of the topics named in ARGV[3..], each with its version: for nodes that
/// may have missed lists, in bus order behind what is already on its way (ARGV[1] and ARGV[2]
/// are the list and version key prefixes). Returns how many lists it published.
static RESEND: LazyLock<Script> = LazyLock::new(|| {
    Script::new(&format!(
        r"{ENVELOPE_LUA}
        local seen = {{}}
        local count = 0
        local function resend(topic)
            if seen[topic] then return end
            seen[topic] = true
            local version = tonumber(redis.call('GET', ARGV[2] .. topic) or '0')
            local entries = redis.call('LRANGE', ARGV[1] .. topic, 0, -1)
            redis.call('PUBLISH', KEYS[2], envelope(topic, version, entries))
            count = count + 1
        end
        for _, topic in ipairs(redis.call('SMEMBERS', KEYS[1])) do
            resend(topic)
        end
        for i = 3, #ARGV do
            resend(ARGV[i])
        end
        return count
        "
    ))
});

/// Stale stream channels whose lists are asked for again per upkeep tick, at most: each is a
/// Redis call, and the upkeep has other work.
const REFRESH_PER_TICK: usize = 64;

/// Stream channels whose topic lists this node may have missed on the bus (a pub/sub connection
/// lost for a while, or events dropped because the node could not keep up): the upkeep reads
/// their lists again ([`RedisEngine::refresh_topics`]).
#[derive(Debug, Default)]
pub(super) struct StaleTopics(Mutex<HashSet<(Box<str>, Box<str>)>>);

impl StaleTopics {
    /// Marks stream channel `channel` of `app_id`.
    pub(super) fn mark(&self, app_id: &str, channel: &str) {
        self.0
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert((app_id.into(), channel.into()));
    }

    /// The marked channels, unmarked.
    fn take(&self) -> HashSet<(Box<str>, Box<str>)> {
        std::mem::take(&mut *self.0.lock().unwrap_or_else(PoisonError::into_inner))
    }
}

/// What a topic script does for a session.
enum Change {
    /// Join (or change the meta), with the session's list entry.
    Join(String),
    /// Leave.
    Leave,
}

/// A list entry: `sid\nuser\nmeta`.
fn entry(session: &SessionHandle, meta: &str) -> String {
    format!("{}\n{}\n{meta}", session.id().0, session.user_id())
}

/// Reads list entries (unreadable ones are skipped).
pub(super) fn parse_entries(entries: &[String]) -> Vec<ListedPublisher> {
    entries
        .iter()
        .filter_map(|e| {
            let mut parts = e.splitn(3, '\n');
            let session = SessionId(parts.next()?.parse().ok()?);
            let user = parts.next()?.to_owned();
            let meta = parts.next()?.to_owned();
            Some((session, user, meta))
        })
        .collect()
}

impl RedisEngine {
    /// Makes `session` a publisher of `topic` in the cluster.
    pub(super) async fn publish_in_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        meta: &str,
    ) -> Result<(), EngineError> {
        let change = Change::Join(entry(session, meta));
        self.change_topic(session, channel, topic, change).await
    }

    /// Removes `session` from the publishers of `topic` in the cluster.
    pub(super) async fn stop_publishing(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
    ) -> Result<(), EngineError> {
        self.change_topic(session, channel, topic, Change::Leave)
            .await
    }

    /// Runs a topic's [`JOIN`] or [`LEAVE`] script for `session`; the new list reaches every
    /// node with members, this one included, on the bus.
    async fn change_topic(
        &self,
        session: &SessionHandle,
        channel: &str,
        topic: &str,
        change: Change,
    ) -> Result<(), EngineError> {
        let app_id = session.app_id();
        let k = TopicKeys::new(app_id, channel, topic);
        let (_, mut conn) = self.channel_shard(app_id, channel);
        let prefix = format!("{}\n", session.id().0);
        let (mut invocation, what) = match &change {
            Change::Join(entry) => {
                let mut invocation = JOIN.prepare_invoke();
                invocation.arg(entry).arg(prefix);
                (invocation, "join topic")
            }
            Change::Leave => {
                let mut invocation = LEAVE.prepare_invoke();
                invocation.arg(prefix);
                (invocation, "leave topic")
            }
        };
        invocation
            .arg(topic)
            .key(&k.list)
            .key(&k.version)
            .key(&k.names)
            .key(&k.bus);
        // The new list is not applied here from this answer: it comes on the bus like
        // everywhere else, behind the messages published before it, which still need the old
        // list to find their audience (a publisher's last messages before it leaves).
        let _: (u64, Vec<String>) = self.run(what, invocation.invoke_async(&mut conn)).await?;
        Ok(())
    }

    /// Reads every topic of a stream channel for a session that joined it here, applies the
    /// lists of topics this node knows nothing of (all of them for the channel's first member
    /// here), and returns the channel's topics that have publishers as this node has them (the
    /// joining user's snapshot). A topic already known here keeps the lists the bus brings in
    /// order with its messages: the stored one may be ahead of a publisher's last messages.
    pub(super) async fn load_topics(
        &self,
        app_id: &str,
        channel: &str,
    ) -> Result<Vec<TopicInfo>, EngineError> {
        let lists = self.read_topics(app_id, channel, &[]).await?;
        Ok(self
            .inner
            .local
            .seed_topic_publishers(app_id, channel, &lists))
    }

    /// Asks Redis to publish again the lists of (at most [`REFRESH_PER_TICK`]) stream channels
    /// marked stale, the topics this node knows without publishers left included. They come
    /// on the bus behind what is already on its way, so a publisher's last messages still find
    /// their audience, and each node applies a list only if it is newer than its own. A channel
    /// whose call fails stays marked, with those not yet asked for.
    pub(super) async fn refresh_topics(&self) {
        let mut stale = self.inner.stale_topics.take().into_iter();
        for (app_id, channel) in stale.by_ref().take(REFRESH_PER_TICK) {
            let known = self.inner.local.listed_topics(&app_id, &channel);
            let k = TopicKeys::new(&app_id, &channel, "");
            let (_, mut conn) = self.channel_shard(&app_id, &channel);
            let mut invocation = RESEND.prepare_invoke();
            invocation
                .key(&k.names)
                .key(&k.bus)
                .arg(&k.list)
                .arg(&k.version);
            for topic in &known {
                invocation.arg(topic);
            }
            let sent: Result<u64, _> = self.run("topics", invocation.invoke_async(&mut conn)).await;
            if let Err(e) = sent {
                tracing::debug!(%channel, "topic lists not sent again yet: {e}");
                self.inner.stale_topics.mark(&app_id, &channel);
                break;
            }
        }
        for (app_id, channel) in stale {
            self.inner.stale_topics.mark(&app_id, &channel);
        }
    }

    /// Every stored topic list of a stream channel, and those of `also` (which may have none).
    async fn read_topics(
        &self,
        app_id: &str,
        channel: &str,
        also: &[String],
    ) -> Result<Vec<StoredList>, EngineError> {
        let k = TopicKeys::new(app_id, channel, "");
        let (_, mut conn) = self.channel_shard(app_id, channel);
        let mut invocation = SNAPSHOT.prepare_invoke();
        invocation.key(&k.names).arg(&k.list).arg(&k.version);
        for topic in also {
            invocation.arg(topic);
        }
        let flat: Vec<redis::Value> = self
            .run("topics", invocation.invoke_async(&mut conn))
            .await?;
        Ok(flat
            .chunks_exact(3)
            .filter_map(|chunk| {
                Some((
                    redis::from_redis_value_ref::<String>(&chunk[0]).ok()?,
                    redis::from_redis_value_ref::<u64>(&chunk[1]).ok()?,
                    parse_entries(&redis::from_redis_value_ref::<Vec<String>>(&chunk[2]).ok()?),
                ))
            })
            .collect())
    }
}

/// The topics of a stream channel where session `sid` is a publisher.
pub(super) async fn topics_of(
    engine: &RedisEngine,
    app_id: &str,
    channel: &str,
    sid: u64,
) -> Result<Vec<String>, EngineError> {
    let lists = engine.read_topics(app_id, channel, &[]).await?;
    Ok(lists
        .into_iter()
        .filter(|(_, _, publishers)| publishers.iter().any(|(session, ..)| session.0 == sid))
        .map(|(topic, ..)| topic)
        .collect())
}

/// Applies a topic list that came on a bus.
pub(super) fn apply(
    local: &crate::engine::MemoryEngine,
    app_id: &str,
    channel: &str,
    list: TopicList,
) {
    local.set_topic_publishers(
        app_id,
        channel,
        &list.topic,
        list.version,
        &parse_entries(&list.entries),
    );
}

/// A topic message, as it goes on the bus.
pub(super) fn message(publisher: SessionId, topic: &str, frame: bytes::Bytes) -> Envelope {
    Envelope::Topic {
        publisher,
        topic: topic.to_owned(),
        frame,
    }
}
