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
/// Largest frame body the server accepts by default: a full-size message plus room for names
/// and the envelope.
pub const MAX_FRAME_LEN: usize = MAX_MESSAGE_SIZE + 4 * 1024;
/// Most delivery streams ("lanes") a server opens per connection (`docs/protocol.md` §1.2).
pub const MAX_LANES: usize = 16;
