//! `[http]`: the internal HTTP listener for operators (health, metrics), apart from the ports
//! clients use.

use std::net::SocketAddr;

use serde::{Deserialize, Serialize};

/// `[http]`: on by default, on loopback only.
///
/// ```toml
/// [http]
/// listen = "127.0.0.1:4435"   # the default; 0.0.0.0 exposes it: put it behind a firewall
/// # enabled = false           # no internal listener at all
/// # admin_key = "a long random secret"   # turns the admin API on (Authorization: Bearer)
/// # admin_rate = 1000                     # admin calls per second; beyond, 429
/// ```
#[derive(Clone, Debug, PartialEq, Eq, Deserialize, Serialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    /// Whether the listener runs (default true).
    pub enabled: bool,
    /// Address to listen on (TCP; default `127.0.0.1:4435`).
    pub listen: SocketAddr,
    /// The admin API's key (`Authorization: Bearer KEY`), at least 16 characters. Absent: no
    /// admin API.
    pub admin_key: Option<String>,
    /// Admin API calls per second, all callers together (bursts of as many); beyond, 429.
    /// Default 1 000.
    pub admin_rate: u32,
}

/// The shortest admin key accepted.
pub const MIN_ADMIN_KEY_LEN: usize = 16;

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            listen: SocketAddr::from(([127, 0, 0, 1], 4435)),
            admin_key: None,
            admin_rate: 1000,
        }
    }
}
