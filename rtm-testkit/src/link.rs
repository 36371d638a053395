//! A UDP relay between clients and a server that can lose, delay and cut packets: the test
//! kit's lossy link.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::task::JoinHandle;

/// A relay on `127.0.0.1`: clients connect to [`LossyLink::addr`] instead of the server, and the
/// relay forwards every datagram both ways, dropping, delaying or holding them as told.
///
/// Each client address gets its own upstream socket, so the server sees one peer per client.
#[derive(Debug)]
pub struct LossyLink {
    addr: SocketAddr,
    control: Arc<Control>,
    task: JoinHandle<()>,
}

#[derive(Debug, Default)]
struct Control {
    /// Datagrams to drop, per million.
    loss_ppm: AtomicU32,
    /// Delay added to every datagram, in microseconds.
    delay_us: AtomicU64,
    /// When set, every datagram is dropped (the link is cut).
    cut: AtomicBool,
    dropped: AtomicU64,
    forwarded: AtomicU64,
    /// State of the pseudo-random generator (xorshift): reproducible, no dependency.
    rng: AtomicU64,
}

impl Control {
    /// Whether to drop the next datagram.
    fn drop_next(&self) -> bool {
        if self.cut.load(Ordering::Relaxed) {
            return true;
        }
        let ppm = self.loss_ppm.load(Ordering::Relaxed);
        if ppm == 0 {
            return false;
        }
        let mut x = self.rng.load(Ordering::Relaxed);
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        self.rng.store(x, Ordering::Relaxed);
        (x % 1_000_000) < u64::from(ppm)
    }

    /// Sends `datagram` on `socket` to `to` (when given), unless it is dropped.
    fn forward(self: &Arc<Self>, socket: &Arc<UdpSocket>, to: Option<SocketAddr>, datagram: &[u8]) {
        if self.drop_next() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        self.forwarded.fetch_add(1, Ordering::Relaxed);
        let delay = self.delay_us.load(Ordering::Relaxed);
        if delay == 0 {
            let _ = match to {
                Some(to) => socket.try_send_to(datagram, to),
                None => socket.try_send(datagram),
            };
            return;
        }
        let (socket, datagram) = (socket.clone(), datagram.to_vec());
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_micros(delay)).await;
            let _ = match to {
                Some(to) => socket.send_to(&datagram, to).await,
                None => socket.send(&datagram).await,
            };
        });
    }
}

impl LossyLink {
    /// A relay to `server`, passing everything until told otherwise.
    pub async fn start(server: SocketAddr) -> std::io::Result<Self> {
        let front = Arc::new(UdpSocket::bind("127.0.0.1:0").await?);
        let addr = front.local_addr()?;
        let control = Arc::new(Control {
            rng: AtomicU64::new(0x9E37_79B9_7F4A_7C15),
            ..Default::default()
        });
        let task = tokio::spawn(relay(front, server, control.clone()));
        Ok(Self {
            addr,
            control,
            task,
        })
    }

    /// The address clients should connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Drops this fraction (0.0 to 1.0) of the datagrams, in both directions.
    pub fn set_loss(&self, fraction: f64) {
        let ppm = (fraction.clamp(0.0, 1.0) * 1_000_000.0) as u32;
        self.control.loss_ppm.store(ppm, Ordering::Relaxed);
    }

    /// Delays every datagram by `delay`, in both directions.
    pub fn set_delay(&self, delay: Duration) {
        self.control
            .delay_us
            .store(delay.as_micros() as u64, Ordering::Relaxed);
    }

    /// Cuts the link: every datagram is dropped until [`LossyLink::restore`].
    pub fn cut(&self) {
        self.control.cut.store(true, Ordering::Relaxed);
    }

    /// Ends a [`LossyLink::cut`].
    pub fn restore(&self) {
        self.control.cut.store(false, Ordering::Relaxed);
    }

    /// Datagrams dropped so far.
    pub fn dropped(&self) -> u64 {
        self.control.dropped.load(Ordering::Relaxed)
    }

    /// Datagrams forwarded so far.
    pub fn forwarded(&self) -> u64 {
        self.control.forwarded.load(Ordering::Relaxed)
    }
}

impl Drop for LossyLink {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn relay(front: Arc<UdpSocket>, server: SocketAddr, control: Arc<Control>) {
    let mut upstreams: HashMap<SocketAddr, (Arc<UdpSocket>, JoinHandle<()>)> = HashMap::new();
    let mut buf = vec![0u8; 65_536];
    loop {
        let Ok((n, client)) = front.recv_from(&mut buf).await else {
            break;
        };
        let upstream = match upstreams.get(&client) {
            Some((socket, _)) => socket.clone(),
            None => {
                let Ok(socket) = UdpSocket::bind("127.0.0.1:0").await else {
                    continue;
                };
                if socket.connect(server).await.is_err() {
                    continue;
                }
                let socket = Arc::new(socket);
                let back = tokio::spawn(backward(
                    socket.clone(),
                    front.clone(),
                    client,
                    control.clone(),
                ));
                upstreams.insert(client, (socket.clone(), back));
                socket
            }
        };
        control.forward(&upstream, None, &buf[..n]);
    }
    for (_, (_, back)) in upstreams {
        back.abort();
    }
}

/// Server → client for one client.
async fn backward(
    upstream: Arc<UdpSocket>,
    front: Arc<UdpSocket>,
    client: SocketAddr,
    control: Arc<Control>,
) {
    let mut buf = vec![0u8; 65_536];
    while let Ok(n) = upstream.recv(&mut buf).await {
        control.forward(&front, Some(client), &buf[..n]);
    }
}
