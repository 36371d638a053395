//! What the in-memory engine tells operators: what it holds, and whether its store is open.

use super::MemoryEngine;
use crate::clock::now_ms;
use crate::engine::{EngineError, Inspect, LocalCounts, NodeInfo};

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
