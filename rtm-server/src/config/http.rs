//! `[http]`: the internal HTTP listener for operators (health, metrics), apart from the ports
//! clients use.

use std::net::SocketAddr;

use serde::Deserialize;

/// `[http]`: on by default, on loopback only.
///
/// ```toml
/// [http]
/// listen = "127.0.0.1:4435"   # the default; 0.0.0.0 exposes it: put it behind a firewall
/// # enabled = false           # no internal listener at all
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Whether the listener runs (default true).
    pub enabled: bool,
    /// Address to listen on (TCP; default `127.0.0.1:4435`).
    pub listen: SocketAddr,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 4435)),
        }
    }
}
