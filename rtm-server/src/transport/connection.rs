//! The session loop of one connection, whatever its transport ([`Link`]): the hello exchange,
//! the request loop, and the event writer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use rtm_proto::frame::encode_frame_into;
use rtm_proto::{
    ClientMsg, CloseReason, ErrorCode, Event, PROTOCOL_VERSION, Request, RequestId, Response,
    ResumeRequest, ServerMsg, Welcome, WireError, encode_frame,
};
use tokio::sync::{oneshot, watch};
use tokio::task::JoinSet;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::Instrument;

use super::CLOSE_GRACE;
use super::link::{ControlRecv, ControlSend, Inbound, LaneWriter, Link, LinkError};
use super::relay;
use crate::core::Core;
use crate::core::now_ms;
use crate::engine::Engine;
use crate::engine::relay::Relays;
use crate::outbox::{Next, Outbox, OutboxRx};
use crate::session::resume::{self, Claim, Detached};
use crate::session::{Handled, Node, Session, lock_answer};

/// Close codes that are not a [`CloseReason`] (`docs/protocol.md` §1.3).
pub(crate) mod close_code {
    /// Normal close (logout, end of the control stream).
    pub(crate) const NORMAL: u32 = 0;
    /// The client broke the protocol (no hello, wrong version).
    pub(crate) const PROTOCOL: u32 = 0x01;
    /// No login in time.
    pub(crate) const LOGIN_TIMEOUT: u32 = 0x02;
    /// The client fell silent: no frame for its heartbeat interval + 10 s (WebSocket and
    /// WebTransport, `docs/protocol.md` §5.6).
    pub(crate) const HEARTBEAT_TIMEOUT: u32 = 0x03;
    /// The session was resumed on another connection.
    pub(crate) const RESUMED: u32 = 0x04;
    /// The connection was relayed to the session's node, and the relay broke or this node is
    /// stopping: the session is still there, and the client resumes it.
    pub(crate) const RELAY_BROKEN: u32 = 0x05;
}

/// Frames the writer hands to the transport in one call, at most.
const WRITE_BATCH: usize = 64;
/// What the heartbeat interval is allowed as slack before a silent client counts as lost
/// (`docs/protocol.md` §5.6).
const HEARTBEAT_GRACE: Duration = Duration::from_secs(10);

/// Serves one client connection, whatever its transport, to its end.
pub(crate) async fn serve<E: Engine, L: Link>(
    node: Arc<Node<E>>,
    link: L,
    shutdown: watch::Receiver<bool>,
) {
    node.core
        .metrics
        .connections
        .fetch_add(1, Ordering::Relaxed);
    let _open = node.core.metrics.connection_opened(link.transport());
    match run(&node, &link, shutdown).await {
        Ok(()) => tracing::debug!("connection finished"),
        Err(e) => tracing::debug!("connection ended: {e}"),
    }
}

/// Which of a connection's deadlines its timer waits for.
#[derive(Clone, Copy, Debug)]
enum Deadline {
    /// The token expires (a logged-in session gets a warning, then is closed).
    Token,
    /// The client has not logged in in time.
    Login,
    /// The client fell silent for longer than its heartbeat allows.
    Silent,
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Link(#[from] LinkError),
    #[error("{0}")]
    Protocol(&'static str),
}

async fn run<E: Engine, L: Link>(
    node: &Node<E>,
    link: &L,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let core = &node.core;
    let login_deadline =
        Instant::now() + Duration::from_secs(core.connection.login_timeout_secs.into());
    // The opening and the ending run once per connection: boxed, they do not weigh on the
    // state every idle connection keeps while it waits for requests (docs/performance.md).
    let (mut send, mut reader) = Box::pin(open_control(core, link, login_deadline)).await?;

    let (outbox, outbox_rx) = Outbox::bounded(
        core.connection.outbound_queue as usize,
        usize::try_from(core.connection.max_session_bytes).unwrap_or(usize::MAX),
        core.connection.delivery_lanes,
        core.metrics.clone(),
    );
    let mut served = Served {
        session: Session::new(node, outbox),
        outbox_rx: Some(outbox_rx),
        waits: JoinSet::new(),
    };
    let mut writer: Option<Writer> = None;
    let mut out = BytesMut::new();
    let mut shutting_down = false;
    // Frames served before a login, to bound what a client that never logs in gets answered.
    let mut before_login = 0usize;
    let mut token_expired = false;
    // On transports without a keep-alive of their own, the client's frames are its heartbeat:
    // none for its interval + 10 s and it is lost (docs/protocol.md §5.6).
    let heartbeats = link.needs_heartbeats();
    let mut silent_at: Option<Instant> = None;
    // A resume that another node took: this connection then only passes frames on.
    let mut relayed = None;
    let ending = 'serve: loop {
        let session = &mut served.session;
        let token_at = session
            .token_deadline()
            .map(|at| Instant::now() + Duration::from_millis(at.saturating_sub(now_ms())));
        let logged_in = session.is_logged_in();
        // One timer for the nearest of the connection's deadlines: each timer would take its
        // place in the state every idle connection keeps (docs/performance.md, eighth session).
        let deadline = [
            token_at
                .filter(|_| !token_expired)
                .map(|at| (at, Deadline::Token)),
            (!logged_in).then_some((login_deadline, Deadline::Login)),
            silent_at.map(|at| (at, Deadline::Silent)),
        ]
        .into_iter()
        .flatten()
        .min_by_key(|(at, _)| *at);
        // Without a deadline the timer's branch is off, and these are not used.
        let (wake_at, which) = deadline.unwrap_or((login_deadline, Deadline::Login));
        let inbound = tokio::select! {
            inbound = reader.next() => inbound,
            claim = session.next_claim() => match claim {
                Some(claim) => break Ending::TakenOver(claim),
                None => continue,
            },
            Some(waited) = served.waits.join_next(), if !served.waits.is_empty() => {
                if let Ok((id, result)) = waited {
                    respond(id, result, &mut out);
                    if let Err(e) = send.write(&out).await {
                        tracing::debug!("connection lost: {e}");
                        break Ending::Lost;
                    }
                    out.clear();
                }
                continue;
            }
            () = sleep_until(wake_at), if deadline.is_some() => {
                match which {
                    Deadline::Token => {
                        // Rare, and its future is large: boxed (see the opening of `run`).
                        token_expired = Box::pin(session.token_deadline_reached()).await;
                        continue;
                    }
                    Deadline::Login => {
                        link.close(close_code::LOGIN_TIMEOUT, "login timeout");
                        break Ending::Finished;
                    }
                    Deadline::Silent => {
                        core.metrics
                            .heartbeat_timeouts
                            .fetch_add(1, Ordering::Relaxed);
                        tracing::debug!("connection lost: no heartbeat");
                        link.close(close_code::HEARTBEAT_TIMEOUT, "no heartbeat");
                        break Ending::Lost;
                    }
                }
            }
            _ = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                if logged_in {
                    session.close(CloseReason::ServerShutdown);
                } else {
                    link.close(CloseReason::ServerShutdown.close_code(), "server shutdown");
                }
                // The writer closes the connection; the reader then ends.
                continue;
            }
        };
        let mut inbound = match inbound {
            Ok(Some(inbound)) => inbound,
            Ok(None) | Err(LinkError::Closed) => break Ending::Finished,
            Err(e) => {
                // docs/protocol.md §5.6: the client fell silent (the QUIC idle timeout, which
                // the client sets to its heartbeat interval + 10 s) or the connection broke;
                // its session waits for a resume.
                if matches!(e, LinkError::TimedOut) {
                    core.metrics
                        .heartbeat_timeouts
                        .fetch_add(1, Ordering::Relaxed);
                }
                tracing::debug!("connection lost: {e}");
                break Ending::Lost;
            }
        };
        // Serve everything that has arrived, then write all the answers at once.
        loop {
            if !served.session.is_logged_in() {
                before_login += 1;
                if before_login > super::PRE_LOGIN_FRAMES {
                    link.close(close_code::PROTOCOL, "too many frames before login");
                    break 'serve Ending::Finished;
                }
            }
            if !served.session.is_logged_in()
                && let Some(target) = relay_target(node, &inbound)
            {
                // A resume of another node's session: that node serves it through this one.
                let (id, relays, home, body) = target;
                let opened = Box::pin(relay::open(
                    &relays,
                    home,
                    (id, body),
                    link.needs_heartbeats(),
                ))
                .await;
                match opened {
                    Ok((response, opened)) => {
                        respond(id, Ok(response), &mut out);
                        relayed = Some(opened);
                        break;
                    }
                    Err(e) => respond(id, Err(e), &mut out),
                }
            } else {
                // Boxed: a request's future (about 3 KiB, a login or a publish to either
                // engine) would otherwise size the state of every connection, idle ones too;
                // one allocation per request costs less (docs/performance.md, fifth session).
                Box::pin(handle(&mut served, node, inbound, &mut out)).await;
            }
            match reader.buffered() {
                Some(next) => inbound = next,
                None => break,
            }
        }
        if served.session.is_logged_in()
            && let Some(rx) = served.outbox_rx.take()
        {
            // Logged in (or resumed): the client may now send what its limits allow.
            link.logged_in();
            reader.set_max_frame_len(core.connection.max_frame_len as usize);
            writer = Some(Writer::spawn(link.clone(), rx));
        }
        if heartbeats {
            // Only a logged-in session has a heartbeat (a logout ends the watch).
            silent_at = served
                .session
                .heartbeat()
                .map(|interval| Instant::now() + interval + HEARTBEAT_GRACE);
        }
        let written = if served.session.is_logged_in() {
            match silent_at {
                None => send.write(&out).await,
                // A client that neither reads nor sends must not hold the loop in a write
                // past its heartbeat allowance.
                Some(at) => match tokio::time::timeout_at(at, send.write(&out)).await {
                    Ok(written) => written,
                    Err(_) => {
                        core.metrics
                            .heartbeat_timeouts
                            .fetch_add(1, Ordering::Relaxed);
                        link.close(close_code::HEARTBEAT_TIMEOUT, "no heartbeat");
                        break Ending::Lost;
                    }
                },
            }
        } else {
            // A client that does not read its answers must not hold the connection past the
            // login deadline with a blocked write.
            match tokio::time::timeout_at(login_deadline, send.write(&out)).await {
                Ok(written) => written,
                Err(_) => {
                    link.close(close_code::LOGIN_TIMEOUT, "login timeout");
                    if let Some(opened) = relayed.take() {
                        // The pipe finds the connection closed and tells the session's node,
                        // which keeps the session for a resume.
                        break Ending::Relayed(opened);
                    }
                    break Ending::Finished;
                }
            }
        };
        if let Err(e) = written {
            tracing::debug!("connection lost: {e}");
            if let Some(opened) = relayed.take() {
                break Ending::Relayed(opened);
            }
            break Ending::Lost;
        }
        out.clear();
        if let Some(opened) = relayed.take() {
            break Ending::Relayed(opened);
        }
    };
    if let Ending::Relayed(opened) = ending {
        // The session is the other node's: nothing of it to end here.
        let max_frame_len = core.connection.max_frame_len as usize;
        Box::pin(relay::pipe(
            link,
            (send, reader),
            opened,
            max_frame_len,
            shutdown,
        ))
        .await;
        return Ok(());
    }
    Box::pin(end_session(core, link, served, writer, ending, shutdown)).await;
    Ok(())
}

/// Accepts the control channel and answers its Hello (docs/protocol.md §4.1).
async fn open_control<E: Engine, L: Link>(
    core: &Core<E>,
    link: &L,
    login_deadline: Instant,
) -> Result<(L::Control, L::Requests), ConnError> {
    let max_frame_len = (core.connection.max_frame_len as usize).min(super::PRE_LOGIN_FRAME);
    let (mut send, mut reader) = tokio::select! {
        control = link.accept_control(max_frame_len) => control?,
        () = sleep_until(login_deadline) => {
            link.close(close_code::LOGIN_TIMEOUT, "no control stream");
            return Err(ConnError::Protocol("no control stream before the login deadline"));
        }
    };

    if link.greeted() {
        return Ok((send, reader));
    }
    // docs/protocol.md §4.1: the first frame is Hello, answered by Welcome or an error.
    let first = tokio::select! {
        first = reader.next() => first?,
        () = sleep_until(login_deadline) => None,
    };
    let hello = match first {
        Some(Inbound::Frame(body)) => ClientMsg::decode(&body).ok(),
        _ => None,
    };
    let version = match &hello {
        Some(ClientMsg::Hello(hello)) => rtm_proto::negotiate(hello.version),
        _ => None,
    };
    match (hello, version) {
        (Some(ClientMsg::Hello(hello)), Some(version)) => {
            tracing::debug!(agent = %hello.agent, version, "hello");
            let welcome = ServerMsg::Welcome(Welcome {
                version,
                server: concat!("rtm-server/", env!("CARGO_PKG_VERSION")).into(),
            });
            tokio::time::timeout_at(login_deadline, send.write(&encode_frame(&welcome)))
                .await
                .map_err(|_| {
                    ConnError::Protocol("the welcome was not read before the login deadline")
                })??;
        }
        (other, _) => {
            let reason = match other {
                Some(ClientMsg::Hello(h)) => {
                    format!(
                        "protocol version {} is not supported; this server speaks {} to {PROTOCOL_VERSION}",
                        h.version,
                        rtm_proto::MIN_PROTOCOL_VERSION
                    )
                }
                _ => "the first frame must be a Hello".to_owned(),
            };
            let error = ServerMsg::Error(WireError::new(ErrorCode::InvalidParameter, reason));
            let _ = timeout(CLOSE_GRACE, send.write(&encode_frame(&error))).await;
            send.finish().await;
            link.close(close_code::PROTOCOL, "bad hello");
            return Err(ConnError::Protocol("bad hello"));
        }
    }
    Ok((send, reader))
}

/// Hands the session on (to a resume, or to a park task while it waits for one) or ends it.
async fn end_session<E: Engine, L: Link>(
    core: &Arc<Core<E>>,
    link: &L,
    served: Served<E>,
    writer: Option<Writer>,
    ending: Ending<E>,
    shutdown: watch::Receiver<bool>,
) {
    let Served {
        mut session,
        outbox_rx,
        waits,
    } = served;
    drop(waits);
    // The outbox's receiving side: back from the writer, or never handed to one.
    let rx = match writer {
        Some(writer) => writer.stop().await,
        None => outbox_rx,
    };
    match (ending, rx) {
        (Ending::TakenOver(claim), Some(rx)) if session.is_logged_in() => {
            link.close(close_code::RESUMED, "resumed on another connection");
            if let Err(mut detached) = claim.reply.send(Detached { session, rx }) {
                detached.session.end().await;
            }
        }
        (Ending::Lost, Some(rx)) if session.is_logged_in() && !session.is_closing() => {
            tokio::spawn(resume::park(core.clone(), session, rx, shutdown).in_current_span());
        }
        (ending, _) => {
            session.end().await;
            if matches!(ending, Ending::Finished) {
                link.close(close_code::NORMAL, "");
            }
        }
    }
}

/// How the request loop ended.
enum Ending<E> {
    /// The client finished (or closed) the connection, or never logged in: the session ends.
    Finished,
    /// The connection was lost: the session waits for a resume.
    Lost,
    /// A resume on another connection asked for the session.
    TakenOver(Claim<E>),
    /// The client resumed a session of another node, which serves it through this connection.
    Relayed(relay::Opened),
}

/// What the request loop serves: the session, and the outbox receiver until a writer has it.
struct Served<E> {
    session: Session<E>,
    outbox_rx: Option<OutboxRx>,
    /// Acquires with retry waiting for their lock, answered when it comes. They belong to the
    /// connection: when it ends, they end (and the lock goes to the next in line).
    waits: JoinSet<(RequestId, Result<Response, WireError>)>,
}

/// The task that writes a session's events to this connection.
struct Writer {
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Option<OutboxRx>>,
}

impl Writer {
    fn spawn<L: Link>(link: L, rx: OutboxRx) -> Self {
        let (stop, stopped) = oneshot::channel();
        let task = tokio::spawn(write_events(link, rx, stopped).in_current_span());
        Self { stop, task }
    }

    /// Stops the writer and takes back the outbox receiver, unless the writer ended the
    /// session.
    async fn stop(self) -> Option<OutboxRx> {
        let _ = self.stop.send(());
        self.task.await.ok().flatten()
    }
}

/// Serves one inbound frame, appending the answer (if any) to `out`.
async fn handle<E: Engine>(
    served: &mut Served<E>,
    node: &Node<E>,
    inbound: Inbound,
    out: &mut BytesMut,
) {
    let core = &node.core;
    let body = match inbound {
        Inbound::Frame(body) => body,
        Inbound::Oversized { len, max, head } => {
            core.metrics
                .oversized_frames
                .fetch_add(1, Ordering::Relaxed);
            // docs/protocol.md §2.2: answer the request if its id can be read.
            let error = WireError::new(
                ErrorCode::ChannelMessageLengthExceedLimitation,
                format!("frame of {len} bytes exceeds the maximum of {max}"),
            );
            reply_error(ClientMsg::peek_request_id(&head), error, out);
            return;
        }
    };
    match ClientMsg::decode(&body) {
        Ok(ClientMsg::Request {
            id,
            request: Request::Resume(resume),
        }) => {
            // Rare, and its future is the largest here: boxed (see `run`).
            let result = Box::pin(resume_here(served, node, &resume)).await;
            respond(id, result, out);
        }
        Ok(ClientMsg::Request { id, request }) => {
            match served.session.handle(request, served.waits.len()).await {
                Handled::Now(result) => respond(id, result, out),
                // An acquire with retry: answered when the lock comes (or never, if the
                // connection ends first: then the wait ends with it).
                Handled::Later(answer) => {
                    served
                        .waits
                        .spawn(async move { (id, lock_answer(answer).await) });
                }
            }
        }
        Ok(ClientMsg::Ack { received }) => served.session.ack(&received),
        Ok(ClientMsg::Hello(_)) => {
            let error = WireError::new(ErrorCode::InvalidParameter, "Hello was already sent");
            encode_frame_into(&ServerMsg::Error(error), out);
        }
        Err(e) => {
            core.metrics
                .malformed_frames
                .fetch_add(1, Ordering::Relaxed);
            tracing::debug!("malformed frame: {e}");
            let error = WireError::new(ErrorCode::InvalidParameter, e.to_string());
            reply_error(ClientMsg::peek_request_id(&body), error, out);
        }
    }
}

/// A request to resume a session of another node that this node can relay to: the request's
/// id, the relays, the node, and the frame.
fn relay_target<E: Engine>(
    node: &Node<E>,
    inbound: &Inbound,
) -> Option<(RequestId, Arc<Relays>, u32, bytes::Bytes)> {
    let Inbound::Frame(body) = inbound else {
        return None;
    };
    let relays = node.core.relays()?;
    let msg = ClientMsg::decode(body).ok()?;
    let (id, home) = relay::home_of(&msg, &relays)?;
    Some((id, relays, home, body.clone()))
}

/// Serves a resume: takes the session from its owner and makes it this connection's.
async fn resume_here<E: Engine>(
    served: &mut Served<E>,
    node: &Node<E>,
    request: &ResumeRequest,
) -> Result<Response, WireError> {
    if served.session.is_logged_in() || served.outbox_rx.is_none() {
        return Err(WireError::new(
            ErrorCode::DuplicateOperation,
            "this connection already has a session",
        ));
    }
    let Detached { session, mut rx } = node.registry.claim(request).await?;
    // Only logged-in sessions are registered, so a claimed one always has its limits.
    let Some(limits) = session.limits() else {
        return Err(WireError::new(ErrorCode::NotLogin, "the session has ended"));
    };
    if !rx.can_resume(&request.received) {
        // docs/protocol.md §5.12.1: it missed more than can be reported; a new login says so.
        tracing::info!(session = ?session.id(), "resume refused: too many events missed to account for");
        let mut session = session;
        session.end().await;
        return Err(WireError::new(
            ErrorCode::NotLogin,
            "the session missed more events than it can be told about; log in again",
        ));
    }
    let next_frame = rx.rewind(&request.received);
    let lost: u64 = next_frame
        .iter()
        .enumerate()
        .map(|(lane, next)| next.saturating_sub(request.received.get(lane).copied().unwrap_or(0)))
        .sum();
    if lost > 0 {
        tracing::info!(session = ?session.id(), lost, "resumed; events the server no longer held are lost");
    }
    served.session = session;
    served.outbox_rx = Some(rx);
    served.session.back().await;
    node.core
        .metrics
        .sessions_resumed
        .fetch_add(1, Ordering::Relaxed);
    tracing::debug!(session = ?served.session.id(), ?next_frame, "session resumed");
    Ok(Response::Resume {
        timestamp: now_ms(),
        limits,
        next_frame,
    })
}

/// Appends the answer to request `id` to `out`. Answers are built to fit in a frame
/// (`docs/protocol.md` §2.2); one that would not is replaced by an error rather than sent to
/// a client that would refuse it.
fn respond(id: RequestId, result: Result<Response, WireError>, out: &mut BytesMut) {
    let start = out.len();
    encode_frame_into(&ServerMsg::Response { id, result }, out);
    let len = out.len() - start - rtm_proto::frame::HEADER_LEN;
    if len > rtm_proto::limits::MAX_SERVER_FRAME_LEN {
        out.truncate(start);
        tracing::error!(len, "an answer larger than a frame was not sent");
        let error = WireError::new(
            ErrorCode::ChannelMessageLengthExceedLimitation,
            "the answer is larger than the protocol allows",
        );
        encode_frame_into(
            &ServerMsg::Response {
                id,
                result: Err(error),
            },
            out,
        );
    }
}

fn reply_error(id: Option<RequestId>, error: WireError, out: &mut BytesMut) {
    let msg = match id {
        Some(id) => ServerMsg::Response {
            id,
            result: Err(error),
        },
        None => ServerMsg::Error(error),
    };
    encode_frame_into(&msg, out);
}

/// Drains the session's outbox into its delivery lanes until the session closes (returns
/// `None`), the connection fails, or the connection task stops it (both return the receiver, so
/// that the session can go on elsewhere: the frames taken are kept until acknowledged).
async fn write_events<L: Link>(
    link: L,
    mut rx: OutboxRx,
    mut stop: oneshot::Receiver<()>,
) -> Option<OutboxRx> {
    let mut lanes = link.lanes(rx.lanes());
    let reason = loop {
        let next = tokio::select! {
            next = rx.next(WRITE_BATCH) => next,
            _ = &mut stop => return Some(rx),
        };
        let frames = match next {
            Next::Frames(frames) => frames,
            Next::Close(reason) => break reason,
        };
        // A close request while the write is blocked (a stalled reader) must not wait for the
        // write.
        tokio::select! {
            written = lanes.write(frames) => {
                if written.is_err() {
                    // The connection is gone; wait to be stopped.
                    let _ = stop.await;
                    return Some(rx);
                }
            }
            reason = rx.closed() => {
                // Part of a frame may be written: close without another frame.
                link.close(reason.close_code(), &reason.to_string());
                return None;
            }
            _ = &mut stop => return Some(rx),
        }
    };
    // Once per connection: boxed, like the ends of `run`.
    Box::pin(close_with(link, rx, lanes, reason)).await;
    None
}

/// Delivers what is queued (unless the queue is the problem), then says why, then closes.
async fn close_with<L: Link>(link: L, mut rx: OutboxRx, mut lanes: L::Lanes, reason: CloseReason) {
    let mut frames = if reason == CloseReason::SlowConsumer {
        Vec::new()
    } else {
        rx.drain()
    };
    frames.push((
        0,
        encode_frame(&ServerMsg::Event(Event::SessionClosed { reason })),
    ));
    let _ = timeout(CLOSE_GRACE, async {
        lanes.write(frames).await?;
        lanes.finish().await;
        Ok::<(), LinkError>(())
    })
    .await;
    link.close(reason.close_code(), &reason.to_string());
}
