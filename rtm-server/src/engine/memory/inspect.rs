//! What the in-memory engine tells operators: what it holds, and whether its store is open.

use super::MemoryEngine;
use crate::clock::now_ms;
use rtm_proto::ChannelType;

use crate::engine::{ChannelCount, EngineError, Inspect, LocalCounts, NodeInfo};

impl Inspect for MemoryEngine {
    fn local_counts(&self) -> LocalCounts {
        let state = self.state();
        let mut counts = LocalCounts::default();
        for app in state.apps.values() {
            counts.message_channels += app.channels.len() as u64;
            counts.subscriptions += app.channels.values().map(|s| s.len() as u64).sum::<u64>();
            counts.stream_channels += app.streams.len() as u64;
            counts.stream_members += app
                .streams
                .values()
                .map(|s| s.member_count() as u64)
                .sum::<u64>();
        }
        counts
    }

    fn node(&self) -> u32 {
        0
    }

    fn local_channels(&self, app_id: &str, limit: usize) -> Vec<ChannelCount> {
        let state = self.state();
        let Some(app) = state.apps.get(app_id) else {
            return Vec::new();
        };
        let messages = app.channels.iter().map(|(name, subs)| ChannelCount {
            channel_type: ChannelType::Message,
            channel: name.to_string(),
            sessions: subs.len() as u64,
        });
        let streams = app.streams.iter().map(|(name, stream)| ChannelCount {
            channel_type: ChannelType::Stream,
            channel: name.to_string(),
            sessions: stream.member_count() as u64,
        });
        let mut all: Vec<ChannelCount> = messages.chain(streams).collect();
        all.sort_by(|a, b| {
            b.sessions
                .cmp(&a.sessions)
                .then_with(|| a.channel.cmp(&b.channel))
        });
        all.truncate(limit);
        all
    }

    async fn health(&self) -> Result<(), EngineError> {
        self.store.check_open()
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, EngineError> {
        Ok(vec![NodeInfo {
            node: 0,
            last_beat_ms: now_ms(),
            this_node: true,
        }])
    }
}
