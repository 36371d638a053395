//! The reference's default limits (`reference/extended-api.md` §7). The server applies them per
//! app unless its configuration says otherwise.

/// Longest user id, in ASCII characters.
pub const MAX_USER_ID_LEN: usize = 64;
/// Longest channel name, in ASCII characters.
pub const MAX_CHANNEL_NAME_LEN: usize = 64;
/// Longest custom type, in ASCII characters.
pub const MAX_CUSTOM_TYPE_LEN: usize = 32;
/// Largest message payload in a message or user channel, in bytes (32 KB).
pub const MAX_MESSAGE_SIZE: usize = 32 * 1024;
/// Most message channels one client may be subscribed to at once.
pub const MAX_SUBSCRIPTIONS: usize = 50;
/// Messages one client may publish per second.
pub const PUBLISH_RATE: u32 = 60;
/// Most messages in one [`crate::PublishBatch`].
pub const MAX_PUBLISH_BATCH: usize = 64;
/// Largest frame body the server accepts by default: a full-size message plus room for names
/// and the envelope.
pub const MAX_FRAME_LEN: usize = MAX_MESSAGE_SIZE + 4 * 1024;
/// Largest frame body a server sends, and the least every client must accept (`docs/protocol.md`
/// §2.2): answers and events that would be larger are split (a shorter page, an event in
/// parts). It is also the highest `max_frame_len` a server may be configured with.
pub const MAX_SERVER_FRAME_LEN: usize = 1 << 20;
/// Of a server frame, the bytes that the items of one list (a history page, a `who_now` page,
/// a presence or topic snapshot part) may take; the rest is left for the envelope.
pub const LIST_BUDGET: usize = MAX_SERVER_FRAME_LEN - 64 * 1024;
/// Most delivery streams ("lanes") a server opens per connection (`docs/protocol.md` §1.2).
pub const MAX_LANES: usize = 16;
/// Most stream channels one client may have joined at once.
pub const MAX_STREAM_CHANNELS: usize = 100;
/// Most users in one stream channel.
pub const MAX_STREAM_CHANNEL_USERS: usize = 1000;
/// Most topics one client may have joined (as a publisher) in one stream channel.
pub const MAX_JOINED_TOPICS: usize = 8;
/// Most topics one client may subscribe to in one stream channel.
pub const MAX_SUBSCRIBED_TOPICS: usize = 50;
/// Most publishers one client may subscribe to in one topic.
pub const MAX_TOPIC_SUBSCRIBED_USERS: usize = 64;
/// Longest topic name, in ASCII characters.
pub const MAX_TOPIC_NAME_LEN: usize = 16;
/// Largest topic message payload, in bytes (1 KB).
pub const MAX_TOPIC_MESSAGE_SIZE: usize = 1024;
/// Largest topic `meta`, in bytes.
pub const MAX_TOPIC_META_LEN: usize = 256;
/// Most key/value pairs in one user's temporary state in one channel.
pub const MAX_STATE_PAIRS: usize = 32;
/// Longest key of a temporary state, in bytes.
pub const MAX_STATE_KEY_LEN: usize = 64;
/// Longest value of a temporary state, in bytes.
pub const MAX_STATE_VALUE_LEN: usize = 1024;
/// Topic messages one client may publish per second in one topic.
pub const TOPIC_PUBLISH_RATE: u32 = 200;
/// Longest metadata key, in bytes.
pub const MAX_METADATA_KEY_LEN: usize = 32;
/// Largest metadata value, in bytes.
pub const MAX_METADATA_VALUE_LEN: usize = 16 * 1024;
/// Largest metadata set: the bytes of all its keys and values.
pub const MAX_METADATA_SET_SIZE: usize = 16 * 1024;
/// Most items in a metadata set (so that a whole set, with its revisions, times and authors,
/// fits in one event frame).
pub const MAX_METADATA_ITEMS: usize = 128;
/// Most users whose metadata one session listens to.
pub const MAX_USER_METADATA_SUBSCRIPTIONS: usize = 100;
/// Metadata calls a client may make per second (twice as many in a burst).
pub const STORAGE_RATE: u32 = 10;
/// Most locks in one channel.
pub const MAX_LOCKS_PER_CHANNEL: usize = 32;
/// Longest lock name, in bytes.
pub const MAX_LOCK_NAME_LEN: usize = 64;
/// A lock's ttl when `set_lock` gives none, in seconds.
pub const LOCK_TTL_DEFAULT: u32 = 10;
/// The shortest lock ttl; shorter ones are raised to it.
pub const LOCK_TTL_MIN: u32 = 10;
/// The longest lock ttl; longer ones are lowered to it.
pub const LOCK_TTL_MAX: u32 = 300;
/// Lock calls a client may make per second (twice as many in a burst).
pub const LOCK_RATE: u32 = 10;
