//! Several servers sharing one service through a real `redis-server` (`[engine] kind =
//! "redis"`), in one process.

use rtm_server::config::{EngineKind, ServerConfig};

use crate::TestServer;
use crate::redis::RedisServer;

/// N nodes on free loopback ports, each with its own data directory, certificate and runtime
/// (so that one can be killed: [`TestCluster::kill`]), and the `redis-server` they share (a
/// child process on a Unix socket, killed on drop).
#[derive(Debug)]
pub struct TestCluster {
    nodes: Vec<Option<TestServer>>,
    redis: RedisServer,
}

impl TestCluster {
    /// `n` nodes with the test kit's configuration ([`TestServer::config`]).
    pub async fn start(n: usize) -> Self {
        Self::start_with(n, TestServer::config()).await
    }

    /// `n` nodes with `config` (its engine section is replaced).
    pub async fn start_with(n: usize, config: ServerConfig) -> Self {
        Self::start_on(RedisServer::start(), n, config).await
    }

    /// `n` nodes with `config` on `redis` (for example one started with
    /// [`RedisServer::start_persistent`]).
    pub async fn start_on(redis: RedisServer, n: usize, config: ServerConfig) -> Self {
        let mut nodes = Vec::with_capacity(n);
        for i in 0..n {
            nodes.push(Some(
                TestServer::start_killable(node_config(&config, &redis, i)).await,
            ));
        }
        Self { nodes, redis }
    }

    /// Node `i`; panics if it was killed.
    pub fn node(&self, i: usize) -> &TestServer {
        self.nodes[i].as_ref().expect("that node was stopped")
    }

    /// Kills node `i` as a crash would ([`TestServer::kill`]): it stops at once, tells
    /// nobody, and stops sending heartbeats; the others reap it after the node timeout.
    pub fn kill(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.kill();
        }
    }

    /// Stops node `i` gracefully ([`TestServer::shutdown`]).
    pub async fn stop(&mut self, i: usize) {
        if let Some(node) = self.nodes[i].take() {
            node.shutdown().await;
        }
    }

    /// Stalls node `i` until the guard is dropped ([`TestServer::stall`]).
    pub fn stall(&self, i: usize) -> crate::Stall {
        self.node(i).stall()
    }

    /// The shared Redis server.
    pub fn redis(&mut self) -> &mut RedisServer {
        &mut self.redis
    }
}

fn node_config(config: &ServerConfig, redis: &RedisServer, i: usize) -> ServerConfig {
    let mut config = config.clone();
    config.engine.kind = EngineKind::Redis;
    config.engine.urls = vec![redis.url()];
    config.engine.node_name = Some(format!("node{i}"));
    config
}
