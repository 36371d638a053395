//! What the Redis engine tells operators: every shard answering, the nodes in the registry,
//! and what this node holds.

use super::{RedisEngine, keys};
use crate::engine::{ChannelCount, EngineError, Inspect, LocalCounts, NodeInfo};

impl Inspect for RedisEngine {
    fn local_counts(&self) -> LocalCounts {
        self.inner.local.local_counts()
    }

    fn node(&self) -> u32 {
        self.inner.node
    }

    fn local_channels(&self, app_id: &str, limit: usize) -> Vec<ChannelCount> {
        self.inner.local.local_channels(app_id, limit)
    }

    async fn health(&self) -> Result<(), EngineError> {
        for shard in &self.inner.shards {
            let mut conn = shard.commands.clone();
            let ping = redis::cmd("PING");
            self.run("health", ping.query_async::<()>(&mut conn))
                .await?;
        }
        if self.inner.fenced.load(std::sync::atomic::Ordering::Relaxed) {
            return Err(EngineError::Unavailable(
                "the cluster declared this node dead; restart it to rejoin".into(),
            ));
        }
        Ok(())
    }

    async fn nodes(&self) -> Result<Vec<NodeInfo>, EngineError> {
        let mut first = self.first_shard();
        let mut cmd = redis::cmd("ZRANGE");
        cmd.arg(keys::NODES).arg(0).arg(-1).arg("WITHSCORES");
        let listed: Vec<(u32, f64)> = self.run("nodes", cmd.query_async(&mut first)).await?;
        Ok(listed
            .into_iter()
            .map(|(node, beat)| NodeInfo {
                node,
                last_beat_ms: beat as u64,
                this_node: node == self.inner.node,
            })
            .collect())
    }
}
