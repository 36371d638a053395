//! Carries this node's relayed-connection messages to other nodes' inboxes
//! (`engine/relay`), in the order they were queued.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::mpsc;

use super::envelope::Envelope;
use super::keys;
use crate::engine::relay::{Outgoing, Relays};

/// Messages published in one round trip, at most.
const BATCH: usize = 64;

/// Publishes what the hub queues, a batch per round trip on one connection (so in order), until
/// the hub goes. A message that no node took (its node is gone) or that failed breaks its link.
pub(super) async fn carry(
    relays: Arc<Relays>,
    conn: ConnectionManager,
    mut out: mpsc::Receiver<Outgoing>,
    timeout: Duration,
) {
    let mut batch = Vec::with_capacity(BATCH);
    while out.recv_many(&mut batch, BATCH).await > 0 {
        let mut pipe = redis::pipe();
        for o in &batch {
            pipe.cmd("PUBLISH")
                .arg(keys::inbox(o.node))
                .arg(Envelope::Relay(o.bytes.clone()).encode().as_ref());
        }
        let mut conn = conn.clone();
        match tokio::time::timeout(timeout, pipe.query_async::<Vec<usize>>(&mut conn)).await {
            Ok(Ok(taken)) => {
                for (o, nodes) in batch.iter().zip(taken) {
                    if nodes == 0 {
                        tracing::debug!(node = o.node, link = o.link, "relay peer not listening");
                        relays.unreachable(o.link);
                    }
                }
            }
            Ok(Err(e)) => {
                tracing::warn!("relayed connections: messages not sent: {e}");
                batch.iter().for_each(|o| relays.unreachable(o.link));
            }
            Err(_) => {
                tracing::warn!("relayed connections: messages not sent within the timeout");
                batch.iter().for_each(|o| relays.unreachable(o.link));
            }
        }
        batch.iter().for_each(Outgoing::sent);
        batch.clear();
    }
}
