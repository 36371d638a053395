//! The names of the Redis engine's keys and pub/sub channels (`docs/architecture.md`,
//! "Cluster", lists them with what each holds).
//!
//! App IDs are ASCII letters and digits, so `rtm:<app>:` is an unambiguous prefix; the one
//! free-form part (a channel or user name) always comes last. A channel's keys all live on the
//! channel's shard, a user's on the user's shard, and the node registry on the first shard.

use rtm_proto::ChannelType;

/// The node registry: a sorted set of node numbers by their last heartbeat (Unix ms).
pub(super) const NODES: &str = "rtm:nodes";
/// Nodes being reaped: a sorted set of node numbers by the end of their reaper's lease (Redis
/// ms); a reap not finished by then is taken over by another node.
pub(super) const REAPING: &str = "rtm:reaping";
/// The counter that gives each starting node its number.
pub(super) const NODE_SEQ: &str = "rtm:node-seq";

/// The counter of a shard's metadata revisions (each shard has its own: a set's revisions need
/// only grow within the set).
pub(super) fn revision_counter() -> String {
    "rtm:revision".to_owned()
}

/// The channels (as [`lock_channel`]s) where node `node` has or had members, on each shard:
/// what its reaper looks at when the node dies.
pub(super) fn node_channels(node: u32) -> String {
    format!("rtm:node-channels:{node}")
}

/// The leaves node `node` holds in their debounce window, on each channel's shard, as
/// [`leave_entry`]s: what its reaper tells if the node dies before their window ends.
pub(super) fn node_leaves(node: u32) -> String {
    format!("rtm:node-leaves:{node}")
}

/// An entry of [`node_leaves`]: the leave's ticket, the user's id behind its length, then the
/// [`lock_channel`]. With its ticket, so that releasing one leave never unlists a later leave of
/// the same user in the same channel.
pub(super) fn leave_entry(
    ticket: u64,
    (app_id, channel_type, channel): (&str, ChannelType, &str),
    user: &str,
) -> String {
    format!(
        "{ticket}:{:x}:{user}{}",
        user.len(),
        lock_channel(app_id, channel_type, channel)
    )
}

/// A leave as [`leave_entry`] lists it: its ticket (as stored), the user, the channel.
pub(super) type ListedLeave<'a> = (&'a str, &'a str, (&'a str, ChannelType, &'a str));

/// Reads a [`leave_entry`].
pub(super) fn parse_leave_entry(entry: &str) -> Option<ListedLeave<'_>> {
    let (ticket, rest) = entry.split_once(':')?;
    let (len, rest) = rest.split_once(':')?;
    let len = usize::from_str_radix(len, 16).ok()?;
    if rest.len() < len || !rest.is_char_boundary(len) {
        return None;
    }
    let (user, channel) = rest.split_at(len);
    Some((ticket, user, parse_lock_channel(channel)?))
}

/// The users (`app:user`) logged in on node `node`, on each user's shard.
pub(super) fn node_users(node: u32) -> String {
    format!("rtm:node-users:{node}")
}

/// A node's inbox (pub/sub).
pub(super) fn inbox(node: u32) -> String {
    format!("rtm:inbox:{node}")
}

fn kind(channel_type: ChannelType) -> char {
    match channel_type {
        ChannelType::Message => 'm',
        ChannelType::Stream => 's',
        ChannelType::User => 'u',
    }
}

/// The keys of one channel of one app.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub(super) struct ChannelKeys {
    /// The channel's bus (pub/sub): its events, for the nodes with members.
    pub(super) bus: String,
    /// Hash: member user -> session id (quiet members included).
    pub(super) members: String,
    /// Sorted set (all scores 0, so ordered by name): the visible (not quiet) members.
    pub(super) visible: String,
    /// Hash: user -> temporary state.
    pub(super) states: String,
    /// Hash: user -> ticket of its leave waiting out the debounce window.
    pub(super) leaving: String,
}

impl ChannelKeys {
    pub(super) fn new(app_id: &str, channel_type: ChannelType, channel: &str) -> Self {
        let k = kind(channel_type);
        let key = |what: char| format!("rtm:{app_id}:{what}{k}:{channel}");
        Self {
            bus: key('b'),
            members: key('p'),
            visible: key('v'),
            states: key('s'),
            leaving: key('l'),
        }
    }
}

/// A shard's away locks: a sorted set of [`away_entry`]s by the time each is released.
pub(super) const LOCKS_AWAY: &str = "rtm:locks-away";
/// A shard's channels that have locks, as [`lock_channel`]s (for a dead node's reaper).
pub(super) const LOCK_CHANNELS: &str = "rtm:lock-channels";

/// The keys of a channel's locks: a hash of the record (`d`, postcard) and its version (`v`),
/// and a hash of each held lock's holder (lock name -> user) for lock-guarded metadata writes.
pub(super) fn lock_keys(
    app_id: &str,
    channel_type: ChannelType,
    channel: &str,
) -> (String, String) {
    let k = kind(channel_type);
    (
        format!("rtm:{app_id}:k{k}:{channel}"),
        format!("rtm:{app_id}:o{k}:{channel}"),
    )
}

/// A channel with locks, as [`LOCK_CHANNELS`] lists it.
pub(super) fn lock_channel(app_id: &str, channel_type: ChannelType, channel: &str) -> String {
    format!("{app_id}:{}:{channel}", kind(channel_type))
}

/// Reads a [`lock_channel`].
pub(super) fn parse_lock_channel(entry: &str) -> Option<(&str, ChannelType, &str)> {
    let (app_id, rest) = entry.split_once(':')?;
    let (channel_type, channel) = parse_where_entry(rest)?;
    Some((app_id, channel_type, channel))
}

/// An entry of [`LOCKS_AWAY`]: the release time, the lock name behind its length, then the
/// [`lock_channel`]; unique per absence, so removing a handled one never removes a newer one.
pub(super) fn away_entry(until: u64, lock_name: &str, channel: &str) -> String {
    format!("{until}:{:x}:{lock_name}{channel}", lock_name.len())
}

/// Reads an [`away_entry`]: the lock name and the [`lock_channel`].
pub(super) fn parse_away_entry(entry: &str) -> Option<(&str, &str)> {
    let (_, rest) = entry.split_once(':')?;
    let (len, rest) = rest.split_once(':')?;
    let len = usize::from_str_radix(len, 16).ok()?;
    (rest.len() >= len && rest.is_char_boundary(len)).then(|| rest.split_at(len))
}

/// The set of the channels (as [`lock_channel`]s) where `user` holds locks: a hint, checked
/// against each channel's record.
pub(super) fn user_locks(app_id: &str, user: &str) -> String {
    format!("rtm:{app_id}:hl:{user}")
}

/// The list of `user`'s locks released while it was away, told at its next login.
pub(super) fn user_expired_locks(app_id: &str, user: &str) -> String {
    format!("rtm:{app_id}:le:{user}")
}

/// The key holding the session id of `user`'s session in `app_id`.
pub(super) fn user_session(app_id: &str, user: &str) -> String {
    format!("rtm:{app_id}:u:{user}")
}

/// The set of the channels where `user` is visibly present, as [`where_entry`]s.
pub(super) fn user_channels(app_id: &str, user: &str) -> String {
    format!("rtm:{app_id}:w:{user}")
}

/// An entry of [`user_channels`].
pub(super) fn where_entry(channel_type: ChannelType, channel: &str) -> String {
    format!("{}:{channel}", kind(channel_type))
}

/// Reads an entry of [`user_channels`].
pub(super) fn parse_where_entry(entry: &str) -> Option<(ChannelType, &str)> {
    let (k, channel) = entry.split_once(':')?;
    let channel_type = match k {
        "m" => ChannelType::Message,
        "s" => ChannelType::Stream,
        _ => return None,
    };
    Some((channel_type, channel))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_keep_apps_types_and_channels_apart() {
        let a = ChannelKeys::new("app", ChannelType::Message, "room");
        let b = ChannelKeys::new("app", ChannelType::Stream, "room");
        let c = ChannelKeys::new("app2", ChannelType::Message, "room");
        assert_ne!(a.bus, b.bus);
        assert_ne!(a.bus, c.bus);
        assert_eq!(a.members, "rtm:app:pm:room");
        let entry = where_entry(ChannelType::Stream, "a:b");
        assert_eq!(
            parse_where_entry(&entry),
            Some((ChannelType::Stream, "a:b"))
        );
        assert_eq!(parse_where_entry("x:room"), None);
        let channel = lock_channel("app", ChannelType::Message, "a:b");
        assert_eq!(
            parse_lock_channel(&channel),
            Some(("app", ChannelType::Message, "a:b"))
        );
        let entry = away_entry(1234, "lo:ck", &channel);
        assert_eq!(parse_away_entry(&entry), Some(("lo:ck", channel.as_str())));
        assert_eq!(parse_away_entry("1:ff:short"), None);
        let entry = leave_entry(42, ("app", ChannelType::Stream, "a:b"), "us:er");
        assert_eq!(
            parse_leave_entry(&entry),
            Some(("42", "us:er", ("app", ChannelType::Stream, "a:b")))
        );
        assert_ne!(
            entry,
            leave_entry(43, ("app", ChannelType::Stream, "a:b"), "us:er")
        );
        assert_eq!(parse_leave_entry("1:ff:short"), None);
        assert_eq!(
            parse_leave_entry("1:2:éx"),
            None,
            "not a character boundary"
        );
    }
}
