//! A TCP relay that can break every connection through it: the WebSocket counterpart of the
//! lossy link, for tests of lost connections and resume.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A relay on `127.0.0.1` to a TCP server: clients connect to [`TcpRelay::addr`], and
/// [`TcpRelay::cut`] resets every connection open through it (new ones go through).
#[derive(Debug)]
pub struct TcpRelay {
    addr: SocketAddr,
    cuts: watch::Sender<u64>,
    /// Connections numbered up to this one no longer pass the server's bytes to the client.
    muted: Arc<AtomicU64>,
    /// The number of the last connection opened.
    opened: Arc<AtomicU64>,
    task: JoinHandle<()>,
}

impl TcpRelay {
    /// Starts relaying to `server`.
    pub async fn start(server: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (cuts, cut_rx) = watch::channel(0u64);
        let muted = Arc::new(AtomicU64::new(0));
        let opened = Arc::new(AtomicU64::new(0));
        let task = {
            let muted = muted.clone();
            let opened = opened.clone();
            tokio::spawn(async move {
                while let Ok((client, _)) = listener.accept().await {
                    let number = opened.fetch_add(1, Ordering::AcqRel) + 1;
                    let mut cut = cut_rx.clone();
                    cut.mark_unchanged();
                    let muted = muted.clone();
                    tokio::spawn(async move {
                        let Ok(upstream) = TcpStream::connect(server).await else {
                            return;
                        };
                        tokio::select! {
                            () = relay(client, upstream, number, muted) => {}
                            _ = cut.changed() => {}
                        }
                    });
                }
            })
        };
        Ok(Self {
            addr,
            cuts,
            muted,
            opened,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Resets every connection open through the relay.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// From now on, the connections open through the relay pass nothing from the server to the
    /// client (what the server sends is dropped; the client's bytes still go through): to the
    /// client the server has fallen silent. New connections are not affected.
    pub fn mute(&self) {
        self.muted
            .store(self.opened.load(Ordering::Acquire), Ordering::Release);
    }
}

/// Copies both ways until either side ends, then resets both (as a network that drops a
/// connection does). The server's bytes are dropped once `muted` covers `number`.
async fn relay(client: TcpStream, upstream: TcpStream, number: u64, muted: Arc<AtomicU64>) {
    let (mut client_read, mut client_write) = client.into_split();
    let (mut server_read, mut server_write) = upstream.into_split();
    let up = async {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = client_read.read(&mut buf).await {
            if n == 0 || server_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    let down = async {
        let mut buf = vec![0u8; 16 * 1024];
        while let Ok(n) = server_read.read(&mut buf).await {
            if n == 0 {
                break;
            }
            if muted.load(Ordering::Acquire) >= number {
                continue;
            }
            if client_write.write_all(&buf[..n]).await.is_err() {
                break;
            }
        }
    };
    tokio::select! {
        () = up => {}
        () = down => {}
    }
    // Dropping the halves closes both connections.
}

impl Drop for TcpRelay {
    fn drop(&mut self) {
        self.task.abort();
    }
}
