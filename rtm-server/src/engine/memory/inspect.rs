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
        // Under the engine's lock (which deliveries take too): one pass that borrows, a
        // partial selection of the busiest, and copies of those alone.
        let state = self.state();
        let Some(app) = state.apps.get(app_id) else {
            return Vec::new();
        };
        let messages = app
            .channels
            .iter()
            .map(|(name, subs)| (subs.len() as u64, &**name, ChannelType::Message));
        let streams = app
            .streams
            .iter()
            .map(|(name, s)| (s.member_count() as u64, &**name, ChannelType::Stream));
        let mut all: Vec<(u64, &str, ChannelType)> = messages.chain(streams).collect();
        let busiest_first = |a: &(u64, &str, ChannelType), b: &(u64, &str, ChannelType)| {
            b.0.cmp(&a.0).then_with(|| a.1.cmp(b.1))
        };
        if limit < all.len() {
            if limit == 0 {
                return Vec::new();
            }
            all.select_nth_unstable_by(limit - 1, busiest_first);
            all.truncate(limit);
        }
        let mut picked: Vec<ChannelCount> = all
            .into_iter()
            .map(|(sessions, name, channel_type)| ChannelCount {
                channel_type,
                channel: name.to_owned(),
                sessions,
            })
            .collect();
        drop(state);
        picked.sort_by(|a, b| {
            b.sessions
                .cmp(&a.sessions)
                .then_with(|| a.channel.cmp(&b.channel))
        });
        picked
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
