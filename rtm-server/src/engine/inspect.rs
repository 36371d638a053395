//! What an operator can ask an engine about itself: its health, its nodes, and how much it
//! holds here. Separate from the [`super::Router`] and the [`super::Store`], which serve
//! clients; nothing here changes state.

use std::future::Future;

use super::EngineError;

/// How much this node's engine holds now.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct LocalCounts {
    /// Message channels with at least one subscriber on this node.
    pub message_channels: u64,
    /// Subscriptions to message channels, of sessions on this node.
    pub subscriptions: u64,
    /// Stream channels with at least one member on this node.
    pub stream_channels: u64,
    /// Stream channel memberships, of sessions on this node.
    pub stream_members: u64,
}

/// A channel with sessions of this node in it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ChannelCount {
    /// Message or stream.
    pub channel_type: rtm_proto::ChannelType,
    /// The channel.
    pub channel: String,
    /// Subscribers (message channel) or members (stream channel) on this node.
    pub sessions: u64,
}

/// A node of the service, as the engine knows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeInfo {
    /// The node's number (0 for a server that runs alone).
    pub node: u32,
    /// Unix ms of its last heartbeat (now for this node alone).
    pub last_beat_ms: u64,
    /// Whether it is the node asked.
    pub this_node: bool,
}

/// Introspection for operators (`/metrics`, `/readyz`, the admin API).
pub trait Inspect: Send + Sync + 'static {
    /// What this node holds now; cheap (one pass over local maps), no IO.
    fn local_counts(&self) -> LocalCounts;

    /// This node's number (0 for a server alone).
    fn node(&self) -> u32;

    /// The channels of `app_id` with sessions of this node in them, busiest first (then by
    /// name), at most `limit`.
    fn local_channels(&self, app_id: &str, limit: usize) -> Vec<ChannelCount>;

    /// Whether the engine can serve: its storage open, and its shared service (Redis)
    /// answering within the command timeout.
    fn health(&self) -> impl Future<Output = Result<(), EngineError>> + Send;

    /// The nodes of the service, this one included.
    fn nodes(&self) -> impl Future<Output = Result<Vec<NodeInfo>, EngineError>> + Send;
}
