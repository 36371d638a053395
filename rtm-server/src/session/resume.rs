//! Sessions that outlive their connection (`docs/architecture.md`, "Resume";
//! `docs/protocol.md` §5.6).
//!
//! Every logged-in session is listed in the [`Registry`] with the secret of its ticket. The
//! session itself (its [`Session`] and the receiving side of its outbox) is owned by exactly one
//! task at a time: the connection that serves it, or, after that connection was lost, a parked
//! task that keeps it for `presence_timeout` ([`park`]). Either owner listens for a [`Claim`]:
//! a resume on a new connection sends one through the registry, and the owner hands the session
//! over. The new connection then rewinds the outbox (frames the client missed go out again) and
//! serves the session as if it had logged in there. Nothing about the session changes in the
//! engine, so other users see nothing.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use rtm_proto::{ErrorCode, ResumeRequest, SessionTicket, WireError};
use tokio::sync::{Notify, oneshot, watch};

use super::Session;
use crate::core::{Core, Departure, err};
use crate::engine::{Engine, SessionId};
use crate::outbox::OutboxRx;

/// How long a resume waits for the session's owner to hand it over.
const HANDOVER_TIMEOUT: Duration = Duration::from_secs(5);

/// A session taken off its connection, ready to be served by another.
pub(crate) struct Detached<E> {
    pub(crate) session: Session<E>,
    pub(crate) rx: OutboxRx,
}

/// A request to hand a session over to a new connection.
pub(crate) struct Claim<E> {
    pub(crate) reply: oneshot::Sender<Detached<E>>,
}

/// Where a resume leaves its claim for the session's owner: one slot and a wake-up (lighter
/// per session than a channel).
struct ClaimSlot<E> {
    claim: Mutex<Option<Claim<E>>>,
    notify: Notify,
}

/// The receiving side of a session's claims, owned with the session.
pub(crate) struct Claims<E> {
    slot: Arc<ClaimSlot<E>>,
}

impl<E> Claims<E> {
    /// Waits for the next claim.
    pub(crate) async fn recv(&mut self) -> Option<Claim<E>> {
        loop {
            if let Some(claim) = lock(&self.slot.claim).take() {
                return Some(claim);
            }
            self.slot.notify.notified().await;
        }
    }
}

struct Entry<E> {
    app_id: Box<str>,
    user_id: Box<str>,
    secret: [u8; 16],
    claims: Arc<ClaimSlot<E>>,
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The logged-in sessions that a resume can reach, by id.
pub(crate) struct Registry<E> {
    entries: Mutex<HashMap<SessionId, Entry<E>>>,
}

impl<E> std::fmt::Debug for Registry<E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("sessions", &self.lock().len())
            .finish()
    }
}

impl<E: Engine> Default for Registry<E> {
    fn default() -> Self {
        Self {
            entries: Mutex::default(),
        }
    }
}

impl<E> Registry<E> {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<SessionId, Entry<E>>> {
        lock(&self.entries)
    }
}

impl<E: Engine> Registry<E> {
    /// Lists a new session and returns its ticket and the receiving side of its claims.
    pub(crate) fn register(
        &self,
        id: SessionId,
        app_id: &str,
        user_id: &str,
    ) -> (SessionTicket, Claims<E>) {
        let mut secret = [0u8; 16];
        random(&mut secret);
        let slot = Arc::new(ClaimSlot {
            claim: Mutex::new(None),
            notify: Notify::new(),
        });
        self.lock().insert(
            id,
            Entry {
                app_id: app_id.into(),
                user_id: user_id.into(),
                secret,
                claims: slot.clone(),
            },
        );
        let rx = Claims { slot };
        let ticket = SessionTicket {
            session_id: id.0,
            secret,
        };
        (ticket, rx)
    }

    /// Removes a session that ended.
    pub(crate) fn remove(&self, id: SessionId) {
        self.lock().remove(&id);
    }

    /// The sessions listed (connected, or waiting for a resume) and their distinct users, per
    /// app in App ID order.
    pub(crate) fn per_app(&self) -> Vec<crate::metrics::export::AppSessions> {
        let mut apps: std::collections::BTreeMap<&str, (u64, HashSet<&str>)> =
            std::collections::BTreeMap::new();
        let entries = self.lock();
        for entry in entries.values() {
            let app = apps.entry(&entry.app_id).or_default();
            app.0 += 1;
            app.1.insert(&entry.user_id);
        }
        apps.into_iter()
            .map(
                |(app_id, (sessions, users))| crate::metrics::export::AppSessions {
                    app_id: app_id.to_owned(),
                    sessions,
                    users: users.len() as u64,
                },
            )
            .collect()
    }

    /// Takes the session that `request` names from its current owner.
    pub(crate) async fn claim(&self, request: &ResumeRequest) -> Result<Detached<E>, WireError> {
        let gone = || {
            err(
                ErrorCode::NotLogin,
                "the session is no longer on the server; log in again",
            )
        };
        let id = SessionId(request.ticket.session_id);
        let claims = {
            let entries = self.lock();
            let entry = entries.get(&id).ok_or_else(gone)?;
            if !same_secret(&entry.secret, &request.ticket.secret)
                || *entry.app_id != *request.app_id
                || *entry.user_id != *request.user_id
            {
                // Said the same way as a missing session: a guess learns nothing.
                return Err(gone());
            }
            entry.claims.clone()
        };
        let (reply, handed) = oneshot::channel();
        // A claim still waiting there (an earlier attempt) gives way to this one.
        *lock(&claims.claim) = Some(Claim { reply });
        claims.notify.notify_one();
        match tokio::time::timeout(HANDOVER_TIMEOUT, handed).await {
            Ok(Ok(detached)) => Ok(detached),
            _ => Err(gone()),
        }
    }
}

/// Compares two secrets in time that does not depend on where they differ.
fn same_secret(a: &[u8; 16], b: &[u8; 16]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Fills `buf` from the operating system's random source (through the TLS provider, which
/// already depends on it).
fn random(buf: &mut [u8]) {
    let provider = rustls::crypto::ring::default_provider();
    if provider.secure_random.fill(buf).is_err() {
        // Without randomness the ticket is not a secret: make it unusable instead.
        tracing::error!("no random source: sessions of this server cannot be resumed");
        buf.fill(0);
    }
}

/// Keeps a session whose connection was lost, until it is resumed, its presence timeout ends,
/// it is closed (same user logged in elsewhere), or the server shuts down.
pub(crate) async fn park<E: Engine>(
    core: Arc<Core<E>>,
    mut session: Session<E>,
    mut rx: OutboxRx,
    mut shutdown: watch::Receiver<bool>,
) {
    let Some(timeout) = session.presence_timeout() else {
        return;
    };
    core.metrics.sessions_parked.fetch_add(1, Ordering::Relaxed);
    tracing::debug!(session = ?session.id(), ?timeout, "connection lost; keeping the session");
    // Its locks stay held for their ttl, then go unless it is back by then.
    session.away().await;
    let mut timed_out = false;
    let claim = tokio::select! {
        () = tokio::time::sleep(timeout) => {
            tracing::debug!(session = ?session.id(), "presence timeout; ending the session");
            timed_out = true;
            None
        }
        _ = rx.closed() => None,
        claim = session.next_claim() => claim,
        _ = shutdown.wait_for(|down| *down) => None,
    };
    core.metrics.sessions_parked.fetch_sub(1, Ordering::Relaxed);
    if let Some(claim) = claim {
        match claim.reply.send(Detached { session, rx }) {
            Ok(()) => return,
            // The claimer gave up: nobody will serve the session.
            Err(detached) => session = detached.session,
        }
    }
    // docs/protocol.md §5.8: the others see a presence timeout only now, and only if the
    // session was not resumed.
    let how = if timed_out {
        Departure::TimedOut
    } else {
        Departure::Left
    };
    session.end_as(how).await;
    if timed_out {
        // Counted once the session is gone, so that the counters agree at every moment.
        core.metrics
            .sessions_timed_out
            .fetch_add(1, Ordering::Relaxed);
    }
}
