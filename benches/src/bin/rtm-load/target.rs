//! The system under test: connecting, subscribing and publishing for rtm, NATS and Redis.

use super::*;

/// Where the system under test is.
pub(crate) struct Target {
    pub(crate) system: System,
    pub(crate) addr: SocketAddr,
    pub(crate) rtm_cert: PathBuf,
    /// rtm over WebSocket: the listener's address.
    pub(crate) ws_addr: Option<SocketAddr>,
    pub(crate) transports: Vec<QuicSocket>,
    pub(crate) clients_per_socket: usize,
    /// rtm: stream channel topics instead of message channels.
    pub(crate) topic: bool,
    /// rtm cluster: where subscribers (in turn) and publishers connect; `addr` otherwise.
    pub(crate) sub_addrs: Vec<SocketAddr>,
    pub(crate) pub_addr: Option<SocketAddr>,
    /// NATS and Redis: connect with TLS, trusting `rtm_cert` (the certificate given with
    /// --cert), by the name `localhost`.
    pub(crate) tls: bool,
    /// Redis with TLS: that certificate's PEM, read once.
    redis_root: Option<Vec<u8>>,
    /// rtm: the clients' heartbeat interval in seconds.
    pub(crate) heartbeat: u32,
    pub(crate) _server: Option<rtm_testkit::TestServer>,
}

/// The topic of the topic workload.
pub(crate) const TOPIC: &str = "load";

impl Target {
    pub(crate) async fn new(args: &Args) -> anyhow::Result<Self> {
        let cluster_addr = args.pub_addr.or_else(|| args.sub_addr.first().copied());
        let (addr, server, cert) = match (args.system, args.addr.or(cluster_addr)) {
            (System::Rtm, None) => {
                let mut config = rtm_testkit::TestServer::config();
                config.limits.publish_rate = 10_000_000;
                config.limits.topic_publish_rate = 10_000_000;
                config.limits.max_subscriptions = 10_000;
                // Every load client comes from 127.0.0.1, thousands at a time.
                config.connection.max_connections_per_address = 100_000;
                config.connection.handshake_rate = 100_000;
                if let Some(lanes) = args.lanes {
                    config.connection.delivery_lanes = lanes;
                }
                let server = rtm_testkit::TestServer::start_with(config).await;
                let cert = server.cert_path().to_owned();
                (server.addr(), Some(server), cert)
            }
            (System::Rtm, Some(addr)) => {
                let cert = args
                    .cert
                    .clone()
                    .context("--cert is needed with --addr for rtm")?;
                (addr, None, cert)
            }
            (_, Some(addr)) => (addr, None, args.cert.clone().unwrap_or_default()),
            (_, None) => bail!("--addr is needed for {:?}", args.system),
        };
        let ws_addr = match (args.transport, &server) {
            (Way::Quic, _) => None,
            (Way::Websocket, Some(server)) => server.websocket_addr().map(|ws| ws.addr),
            (Way::Websocket, None) => Some(
                args.ws_addr
                    .context("--ws-addr is needed with --addr for --transport websocket")?,
            ),
        };
        if args.tls && (args.system == System::Rtm || args.cert.is_none()) {
            bail!("--tls is for NATS and Redis, with --cert naming the certificate to trust");
        }
        let redis_root = match (args.system, args.tls, &args.cert) {
            (System::Redis, true, Some(cert)) => {
                Some(std::fs::read(cert).with_context(|| format!("reading {}", cert.display()))?)
            }
            _ => None,
        };
        let topic = matches!(args.workload, Workload::Topic);
        if topic && args.system != System::Rtm {
            bail!("the topic workload is rtm's own (stream channels)");
        }
        Ok(Self {
            system: args.system,
            addr,
            rtm_cert: cert,
            ws_addr,
            transports: Vec::new(),
            clients_per_socket: args.clients_per_socket.max(1),
            topic,
            sub_addrs: args.sub_addr.clone(),
            pub_addr: args.pub_addr,
            tls: args.tls,
            redis_root,
            heartbeat: args.heartbeat,
            _server: server,
        })
    }

    /// Where subscriber `n` connects.
    pub(crate) fn sub_addr(&self, n: usize) -> SocketAddr {
        match self.sub_addrs.len() {
            0 => self.addr,
            len => self.sub_addrs[n % len],
        }
    }

    pub(crate) fn rtm_config(&mut self, n: usize, addr: SocketAddr) -> anyhow::Result<RtmConfig> {
        if n / self.clients_per_socket >= self.transports.len() {
            self.transports.push(QuicSocket::bind(self.addr)?);
        }
        let mut config = RtmConfig::new(Endpoint {
            addr,
            server_name: "localhost".into(),
            trust: Trust::PinnedCertFile(self.rtm_cert.clone()),
        });
        config.socket = self.transports.last().cloned();
        if let Some(addr) = self.ws_addr {
            config.transport = rtm_client::Transport::WebSocket { addr, tls: false };
        }
        config.request_timeout = Duration::from_secs(60);
        config.heartbeat_interval = self.heartbeat;
        Ok(config)
    }

    /// Client `n` subscribed to `channel`.
    pub(crate) async fn subscriber(&mut self, n: usize, channel: &str) -> anyhow::Result<Sub> {
        Ok(match self.system {
            System::Rtm => {
                let addr = self.sub_addr(n);
                let client =
                    RtmClient::new("loadapp", format!("sub{n}"), self.rtm_config(n, addr)?)?;
                let events = client.events();
                client.login(LoginOptions::default()).await?;
                if self.topic {
                    // The publisher of channel "load{g}" is "pub{g}".
                    let publisher = format!("pub{}", channel.trim_start_matches("load"));
                    let stream = client.create_stream_channel(channel)?;
                    let options = JoinOptions {
                        with_presence: false,
                        ..Default::default()
                    };
                    stream.join(options).await?;
                    let users = TopicSubscribeOptions {
                        users: vec![publisher],
                    };
                    stream.subscribe_topic(TOPIC, users).await?;
                } else {
                    client.subscribe(channel, pubsub_only()).await?;
                }
                Sub::Rtm {
                    _client: client,
                    events,
                }
            }
            System::Nats => {
                let client = self.nats().await?;
                let sub = client.subscribe(channel.to_owned()).await?;
                client.flush().await?;
                Sub::Nats {
                    _client: client,
                    sub,
                }
            }
            System::Redis => {
                let client = self.redis()?;
                let mut pubsub = client.get_async_pubsub().await?;
                pubsub.subscribe(channel).await?;
                Sub::Redis(Box::pin(pubsub.into_on_message()))
            }
        })
    }

    /// Publisher `n`.
    pub(crate) async fn publisher(&mut self, n: usize) -> anyhow::Result<Pub> {
        Ok(match self.system {
            System::Rtm => {
                let addr = self.pub_addr.unwrap_or(self.addr);
                let client =
                    RtmClient::new("loadapp", format!("pub{n}"), self.rtm_config(n, addr)?)?;
                client.login(LoginOptions::default()).await?;
                if self.topic {
                    let stream = client.create_stream_channel(&format!("load{n}"))?;
                    stream.join(JoinOptions::default()).await?;
                    stream
                        .join_topic(TOPIC, JoinTopicOptions::default())
                        .await?;
                    Pub::RtmTopic(stream)
                } else {
                    Pub::Rtm(client)
                }
            }
            System::Nats => Pub::Nats(self.nats().await?),
            System::Redis => {
                let client = self.redis()?;
                Pub::Redis(client.get_multiplexed_async_connection().await?)
            }
        })
    }
}

impl Target {
    /// A NATS client, over TLS with --tls.
    async fn nats(&self) -> anyhow::Result<async_nats::Client> {
        if !self.tls {
            return Ok(async_nats::connect(self.addr.to_string()).await?);
        }
        let options = async_nats::ConnectOptions::new()
            .add_root_certificates(self.rtm_cert.clone())
            .require_tls(true);
        let url = format!("tls://localhost:{}", self.addr.port());
        Ok(options.connect(url).await?)
    }

    /// A Redis client, over TLS with --tls.
    fn redis(&self) -> anyhow::Result<redis::Client> {
        let Some(root) = &self.redis_root else {
            return Ok(redis::Client::open(nodelay(&format!(
                "redis://{}/",
                self.addr
            ))?)?);
        };
        let info = nodelay(&format!("rediss://localhost:{}/", self.addr.port()))?;
        let certs = redis::TlsCertificates {
            client_tls: None,
            root_cert: Some(root.clone()),
        };
        Ok(redis::Client::build_with_tls(info, certs)?)
    }
}

pub(crate) type RedisStream = Pin<Box<dyn futures_util::Stream<Item = redis::Msg> + Send>>;

/// Redis connection settings for `url` with `TCP_NODELAY`, as the other systems' clients have
/// it (redis-rs 1.x leaves Nagle's algorithm on by default).
fn nodelay(url: &str) -> redis::RedisResult<redis::ConnectionInfo> {
    use redis::IntoConnectionInfo;
    Ok(url
        .into_connection_info()?
        .set_tcp_settings(redis::io::tcp::TcpSettings::default().set_nodelay(true)))
}

/// A subscriber. The clients are kept so that their connections stay open.
pub(crate) enum Sub {
    Rtm {
        _client: RtmClient,
        events: EventStream,
    },
    Nats {
        _client: async_nats::Client,
        sub: async_nats::Subscriber,
    },
    Redis(RedisStream),
}

impl Sub {
    pub(crate) async fn next(&mut self) -> Option<Bytes> {
        match self {
            Self::Rtm { events, .. } => loop {
                match events.recv().await? {
                    RtmEvent::Message(m) => {
                        return Some(match m.message {
                            Payload::Binary(b) | Payload::Encrypted(b) => b,
                            Payload::Text(t) => Bytes::from(t),
                        });
                    }
                    RtmEvent::LinkState(s) if s.current_state == rtm_client::LinkState::Failed => {
                        eprintln!("subscriber link failed: {}", s.reason);
                        return None;
                    }
                    _ => {}
                }
            },
            Self::Nats { sub, .. } => sub.next().await.map(|m| m.payload),
            Self::Redis(stream) => stream
                .next()
                .await
                .map(|m| Bytes::copy_from_slice(m.get_payload_bytes())),
        }
    }
}

pub(crate) type Answer = Pin<Box<dyn Future<Output = bool> + Send>>;

#[derive(Clone)]
pub(crate) enum Pub {
    Rtm(RtmClient),
    RtmTopic(StreamChannel),
    Nats(async_nats::Client),
    Redis(redis::aio::MultiplexedConnection),
}

impl Pub {
    /// Sends now, from any thread; returns the answer to check later, when there is one.
    pub(crate) fn send(&self, rt: &Handle, channel: &str, payload: Bytes) -> Option<Answer> {
        match self {
            Self::Rtm(client) => {
                let answer = client.publish(channel, payload, PublishOptions::default());
                Some(Box::pin(async move {
                    answer
                        .await
                        .map_err(|e| eprintln!("publish failed: {e}"))
                        .is_ok()
                }))
            }
            Self::RtmTopic(stream) => {
                let answer =
                    stream.publish_topic_message(TOPIC, payload, TopicMessageOptions::default());
                Some(Box::pin(async move {
                    answer
                        .await
                        .map_err(|e| eprintln!("topic publish failed: {e}"))
                        .is_ok()
                }))
            }
            Self::Nats(client) => {
                let ok = rt
                    .block_on(client.publish(channel.to_owned(), payload))
                    .is_ok();
                (!ok).then(|| Box::pin(async { false }) as Answer)
            }
            Self::Redis(conn) => {
                let mut conn = conn.clone();
                let ok = rt
                    .block_on(redis::AsyncCommands::publish::<_, _, ()>(
                        &mut conn,
                        channel,
                        payload.as_ref(),
                    ))
                    .is_ok();
                (!ok).then(|| Box::pin(async { false }) as Answer)
            }
        }
    }
}
