//! A server process killed with SIGKILL in the middle of a burst of metadata writes restarts
//! on the same data directory with a consistent store that has every acknowledged write
//! (`docs/protocol.md` §5.9.3).

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use rtm_client::{
    ChannelType, Endpoint, GetUserMetadataOptions, LoginOptions, MetadataItem, RtmClient,
    RtmConfig, Trust,
};

const APP: &str = "durability";
const WRITERS: usize = 4;
/// Acknowledged writes before the kill.
const BEFORE_KILL: u64 = 300;
const DEADLINE: Duration = Duration::from_secs(60);

/// A server process, killed when dropped.
struct ServerProcess {
    child: Child,
    addr: SocketAddr,
}

impl Drop for ServerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl ServerProcess {
    /// Starts `rtm-server` on a free port with its data in `dir`.
    fn start(dir: &Path) -> Self {
        let port = UdpSocket::bind("127.0.0.1:0")
            .and_then(|s| s.local_addr())
            .expect("a free port")
            .port();
        let addr = SocketAddr::from(([127, 0, 0, 1], port));
        let config = dir.join("rtm.toml");
        std::fs::write(
            &config,
            format!(
                "listen = \"{addr}\"\ndata_dir = {:?}\n[limits]\nstorage_rate = 100000\n",
                dir.join("data")
            ),
        )
        .expect("writing the configuration");
        let mut child = Command::new(env!("CARGO_BIN_EXE_rtm-server"))
            .arg("--config")
            .arg(&config)
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("starting rtm-server");
        // Ready when it says it listens (its start-up line); the rest of its log is drained.
        let stdout = child.stdout.take().expect("the server's standard output");
        let (ready_tx, ready) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if line.contains("listening on") {
                    let _ = ready_tx.send(());
                }
            }
        });
        ready
            .recv_timeout(DEADLINE)
            .expect("the server to say it listens");
        Self { child, addr }
    }

    /// SIGKILL: no shutdown, no flush.
    fn kill(mut self) {
        self.child.kill().expect("killing the server");
        self.child.wait().expect("reaping the server");
    }
}

fn cert_of(dir: &Path) -> PathBuf {
    dir.join("data").join("cert.pem")
}

/// A client of `user` logged in to `server` (which is listening).
async fn login(server: &ServerProcess, dir: &Path, user: &str) -> RtmClient {
    let config = RtmConfig::new(Endpoint {
        addr: server.addr,
        server_name: "localhost".into(),
        trust: Trust::pinned(cert_of(dir)),
    });
    let client = RtmClient::new(APP, user, config).expect("a valid user id");
    tokio::time::timeout(DEADLINE, client.login(LoginOptions::default()))
        .await
        .expect("the server to answer the login")
        .expect("the login");
    client
}

fn value_of(items: &[rtm_client::StoredItem], key: &str) -> Option<u64> {
    items
        .iter()
        .find(|i| i.key == key)
        .and_then(|i| i.value.parse().ok())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_server_restarts_with_every_acknowledged_write() {
    let dir = tempfile::tempdir().unwrap();
    let server = ServerProcess::start(dir.path());
    // Per writer, the last sequence number acknowledged for its user set and for its item of
    // the shared channel set.
    let acked_user: Arc<Vec<AtomicU64>> =
        Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let acked_channel: Arc<Vec<AtomicU64>> =
        Arc::new((0..WRITERS).map(|_| AtomicU64::new(0)).collect());
    let (total_tx, mut total_rx) = tokio::sync::watch::channel(0u64);
    let total_tx = Arc::new(total_tx);
    let mut writers = Vec::new();
    for w in 0..WRITERS {
        let client = login(&server, dir.path(), &format!("writer{w}")).await;
        let (acked_user, acked_channel, total_tx) =
            (acked_user.clone(), acked_channel.clone(), total_tx.clone());
        writers.push(tokio::spawn(async move {
            let storage = client.storage();
            for seq in 1.. {
                let value = seq.to_string();
                let written = if seq % 2 == 0 {
                    storage
                        .set_user_metadata(
                            vec![MetadataItem::new("seq", &value)],
                            Default::default(),
                        )
                        .await
                        .map(|_| &acked_user[w])
                } else {
                    storage
                        .set_channel_metadata(
                            "shared",
                            ChannelType::Message,
                            vec![MetadataItem::new(format!("w{w}"), &value)],
                            Default::default(),
                        )
                        .await
                        .map(|_| &acked_channel[w])
                };
                // After the kill every call fails: the writer stops.
                let Ok(acked) = written else { break };
                acked.store(seq, Ordering::SeqCst);
                total_tx.send_modify(|n| *n += 1);
            }
            drop(client);
        }));
    }
    tokio::time::timeout(DEADLINE, total_rx.wait_for(|n| *n >= BEFORE_KILL))
        .await
        .expect("the burst to get going")
        .unwrap();
    server.kill();
    for writer in writers {
        tokio::time::timeout(DEADLINE, writer)
            .await
            .expect("writers to stop")
            .unwrap();
    }

    let server = ServerProcess::start(dir.path());
    let reader = login(&server, dir.path(), "reader").await;
    let shared = reader
        .storage()
        .get_channel_metadata("shared", ChannelType::Message)
        .await
        .unwrap();
    for w in 0..WRITERS {
        // What was acknowledged is there; a write in flight at the kill may be there too.
        let acked = acked_channel[w].load(Ordering::SeqCst);
        let stored = value_of(&shared.metadata, &format!("w{w}")).unwrap_or(0);
        assert!(
            stored >= acked,
            "writer {w}: channel item {stored} < acknowledged {acked}"
        );
        let user = reader
            .storage()
            .get_user_metadata(GetUserMetadataOptions {
                user_id: Some(format!("writer{w}")),
            })
            .await
            .unwrap();
        let acked = acked_user[w].load(Ordering::SeqCst);
        let stored = value_of(&user.metadata, "seq").unwrap_or(0);
        assert!(
            stored >= acked,
            "writer {w}: user item {stored} < acknowledged {acked}"
        );
        assert!(acked > 0, "writer {w} wrote nothing before the kill");
    }

    // The store itself: intact, and revisions consistent (every item's revision at most its
    // set's, and the counter above them all).
    let db = rusqlite::Connection::open(dir.path().join("data").join("metadata.sqlite3")).unwrap();
    let check: String = db
        .query_row("PRAGMA integrity_check", [], |row| row.get(0))
        .unwrap();
    assert_eq!(check, "ok");
    let bad: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM meta_item i JOIN meta_set s \
             ON i.app = s.app AND i.kind = s.kind AND i.name = s.name \
             WHERE i.revision > s.major_revision",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(bad, 0, "items newer than their set");
    let orphans: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM meta_item i WHERE NOT EXISTS (SELECT 1 FROM meta_set s \
             WHERE i.app = s.app AND i.kind = s.kind AND i.name = s.name)",
            [],
            |row| row.get(0),
        )
        .unwrap();
    assert_eq!(orphans, 0, "items without a set");
    let (counter, highest): (i64, i64) = db
        .query_row(
            "SELECT (SELECT value FROM counter WHERE name = 'revision'), \
             (SELECT MAX(major_revision) FROM meta_set)",
            [],
            |row| Ok((row.get(0)?, row.get(1)?)),
        )
        .unwrap();
    assert!(
        counter >= highest,
        "counter {counter} below revision {highest}"
    );
    // And the restarted server goes on from there.
    let after = reader
        .storage()
        .set_channel_metadata(
            "shared",
            ChannelType::Message,
            vec![MetadataItem::new("after", "1")],
            Default::default(),
        )
        .await
        .unwrap();
    assert!(after.major_revision > highest);
}
