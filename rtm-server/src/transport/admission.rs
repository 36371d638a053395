//! Which new connections the server takes on (`docs/operators.md`, "Connection limits"): at
//! most `max_connections` at once and `max_connections_per_address` from one IP address, and,
//! beyond `handshake_rate` new connections a second, only from clients that proved their
//! address with a QUIC Retry (so that a flood from spoofed sources costs the server a stateless
//! packet each, not a handshake).

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};

use crate::config::ConnectionLimits;
use crate::metrics::Metrics;

/// What to do with a new connection.
#[derive(Debug)]
pub(crate) enum Admit {
    /// Serve it; the ticket holds its place until dropped.
    Serve(Ticket),
    /// Ask the client to prove its address first.
    Retry,
    /// Refuse it: the server or its address has too many connections.
    Refuse(&'static str),
}

/// Counts the connections being served, in total and by address.
#[derive(Debug)]
pub(crate) struct Admission {
    inner: Arc<Inner>,
    handshakes: DefaultDirectRateLimiter,
}

#[derive(Debug)]
struct Inner {
    max_total: u32,
    max_per_address: u32,
    counts: Mutex<Counts>,
    metrics: Arc<Metrics>,
}

#[derive(Debug, Default)]
struct Counts {
    total: u32,
    by_address: HashMap<IpAddr, u32>,
}

impl Admission {
    pub(crate) fn new(limits: &ConnectionLimits, metrics: Arc<Metrics>) -> Self {
        let rate = NonZeroU32::new(limits.handshake_rate).unwrap_or(NonZeroU32::MIN);
        Self {
            inner: Arc::new(Inner {
                max_total: limits.max_connections,
                max_per_address: limits.max_connections_per_address,
                counts: Mutex::new(Counts::default()),
                metrics,
            }),
            handshakes: RateLimiter::direct(Quota::per_second(rate)),
        }
    }

    /// Decides on a connection from `address`; `validated` when the client has already
    /// proved its address (it answered a Retry), `may_retry` when a Retry can still be asked.
    pub(crate) fn admit(&self, address: IpAddr, validated: bool, may_retry: bool) -> Admit {
        if !validated && may_retry && self.handshakes.check().is_err() {
            self.inner
                .metrics
                .handshakes_retried
                .fetch_add(1, Ordering::Relaxed);
            return Admit::Retry;
        }
        let address = canonical(address);
        let mut counts = self.inner.lock();
        let refused = if counts.total >= self.inner.max_total {
            Some("the server has as many connections as it takes")
        } else if counts.by_address.get(&address).copied().unwrap_or(0)
            >= self.inner.max_per_address
        {
            Some("too many connections from this address")
        } else {
            None
        };
        if let Some(why) = refused {
            drop(counts);
            self.inner
                .metrics
                .connections_refused
                .fetch_add(1, Ordering::Relaxed);
            return Admit::Refuse(why);
        }
        counts.total += 1;
        *counts.by_address.entry(address).or_insert(0) += 1;
        Admit::Serve(Ticket {
            inner: self.inner.clone(),
            address,
        })
    }
}

impl Inner {
    fn lock(&self) -> std::sync::MutexGuard<'_, Counts> {
        self.counts.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// The "address" a cap counts: an IPv4 address (also when seen through an IPv6 socket), or an
/// IPv6 /64 network (what one subscriber is usually given, so a client cannot step around the
/// cap by using more of its own addresses).
fn canonical(address: IpAddr) -> IpAddr {
    match address {
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => IpAddr::V6(std::net::Ipv6Addr::from(
                u128::from(v6) & !u128::from(u64::MAX),
            )),
        },
        v4 => v4,
    }
}

/// A connection's place; dropping it frees the place.
#[derive(Debug)]
pub(crate) struct Ticket {
    inner: Arc<Inner>,
    address: IpAddr,
}

impl Drop for Ticket {
    fn drop(&mut self) {
        let mut counts = self.inner.lock();
        counts.total = counts.total.saturating_sub(1);
        if let Some(n) = counts.by_address.get_mut(&self.address) {
            *n -= 1;
            if *n == 0 {
                counts.by_address.remove(&self.address);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(total: u32, per_address: u32, rate: u32) -> ConnectionLimits {
        ConnectionLimits {
            max_connections: total,
            max_connections_per_address: per_address,
            handshake_rate: rate,
            ..ConnectionLimits::default()
        }
    }

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([10, 0, 0, last])
    }

    #[test]
    fn caps_count_per_address_and_in_total_and_free_on_drop() {
        let metrics = Arc::new(Metrics::default());
        let admission = Admission::new(&limits(3, 2, 1000), metrics.clone());
        let a1 = admission.admit(ip(1), true, true);
        let a2 = admission.admit(ip(1), true, true);
        assert!(matches!(a1, Admit::Serve(_)) && matches!(a2, Admit::Serve(_)));
        assert!(matches!(
            admission.admit(ip(1), true, true),
            Admit::Refuse("too many connections from this address")
        ));
        // The same client through an IPv6 socket is the same address.
        let mapped = IpAddr::V6(std::net::Ipv4Addr::new(10, 0, 0, 1).to_ipv6_mapped());
        assert!(matches!(
            admission.admit(mapped, true, true),
            Admit::Refuse(_)
        ));
        let b1 = admission.admit(ip(2), true, true);
        assert!(matches!(b1, Admit::Serve(_)));
        assert!(matches!(
            admission.admit(ip(3), true, true),
            Admit::Refuse("the server has as many connections as it takes")
        ));
        assert_eq!(metrics.connections_refused.load(Ordering::Relaxed), 3);
        drop(a1);
        assert!(matches!(
            admission.admit(ip(1), true, true),
            Admit::Serve(_)
        ));
        drop((a2, b1));
        assert!(admission.inner.lock().by_address.len() <= 1);
    }

    #[test]
    fn an_ipv6_64_network_counts_as_one_address() {
        let admission = Admission::new(&limits(10, 1, 1000), Arc::new(Metrics::default()));
        let v6 = |s: &str| s.parse::<IpAddr>().unwrap();
        let first = admission.admit(v6("2001:db8:0:1::1"), true, true);
        assert!(matches!(first, Admit::Serve(_)));
        assert!(matches!(
            admission.admit(v6("2001:db8:0:1:ffff::2"), true, true),
            Admit::Refuse(_)
        ));
        assert!(matches!(
            admission.admit(v6("2001:db8:0:2::1"), true, true),
            Admit::Serve(_)
        ));
    }

    #[test]
    fn beyond_the_handshake_rate_unvalidated_clients_are_asked_to_retry() {
        let metrics = Arc::new(Metrics::default());
        let admission = Admission::new(&limits(100, 100, 2), metrics.clone());
        let mut kept = Vec::new();
        for _ in 0..2 {
            match admission.admit(ip(1), false, true) {
                Admit::Serve(t) => kept.push(t),
                other => panic!("{other:?}"),
            }
        }
        assert!(matches!(admission.admit(ip(1), false, true), Admit::Retry));
        // A client that answered the Retry is served; one that cannot be asked again too.
        assert!(matches!(
            admission.admit(ip(1), true, true),
            Admit::Serve(_)
        ));
        assert!(matches!(
            admission.admit(ip(1), false, false),
            Admit::Serve(_)
        ));
        assert_eq!(metrics.handshakes_retried.load(Ordering::Relaxed), 1);
    }
}
