//! One QUIC connection: the hello exchange, the request loop, and the event writer.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use bytes::BytesMut;
use rtm_proto::frame::encode_frame_into;
use rtm_proto::{
    ClientMsg, CloseReason, ErrorCode, Event, PROTOCOL_VERSION, ServerMsg, Welcome, WireError,
    encode_frame,
};
use tokio::sync::watch;
use tokio::time::{Instant, sleep_until, timeout};
use tracing::Instrument;

use super::reader::{FrameReader, Inbound};
use crate::core::Core;
use crate::core::now_ms;
use crate::engine::Engine;
use crate::outbox::{Next, Outbox, OutboxRx};
use crate::session::{Session, TokenDeadline};

/// QUIC application close codes that are not a [`CloseReason`] (`docs/protocol.md` §1.3).
pub(crate) mod close_code {
    /// Normal close (logout, end of the control stream).
    pub(crate) const NORMAL: u32 = 0;
    /// The client broke the protocol (no hello, wrong version).
    pub(crate) const PROTOCOL: u32 = 0x01;
    /// No login in time.
    pub(crate) const LOGIN_TIMEOUT: u32 = 0x02;
}

/// Frames the writer hands to QUIC in one call, at most.
const WRITE_BATCH: usize = 64;
/// How long a closing session may take to deliver its last frames.
const CLOSE_GRACE: Duration = Duration::from_secs(2);

/// Serves one incoming connection to its end.
pub(crate) async fn serve<E: Engine>(
    core: Arc<Core<E>>,
    incoming: quinn::Incoming,
    shutdown: watch::Receiver<bool>,
) {
    let remote = incoming.remote_address();
    let conn = match incoming.await {
        Ok(conn) => conn,
        Err(e) => {
            tracing::debug!(%remote, "handshake failed: {e}");
            return;
        }
    };
    core.metrics.connections.fetch_add(1, Ordering::Relaxed);
    let span = tracing::debug_span!("conn", %remote, id = conn.stable_id());
    async move {
        match run(&core, &conn, shutdown).await {
            Ok(()) => tracing::debug!("connection finished"),
            Err(e) => tracing::debug!("connection ended: {e}"),
        }
    }
    .instrument(span)
    .await;
}

#[derive(Debug, thiserror::Error)]
enum ConnError {
    #[error(transparent)]
    Connection(#[from] quinn::ConnectionError),
    #[error(transparent)]
    Read(#[from] quinn::ReadError),
    #[error(transparent)]
    Write(#[from] quinn::WriteError),
    #[error("{0}")]
    Protocol(&'static str),
}

async fn run<E: Engine>(
    core: &Arc<Core<E>>,
    conn: &quinn::Connection,
    mut shutdown: watch::Receiver<bool>,
) -> Result<(), ConnError> {
    let login_deadline =
        Instant::now() + Duration::from_secs(core.connection.login_timeout_secs.into());
    let (mut send, recv) = tokio::select! {
        stream = conn.accept_bi() => stream?,
        () = sleep_until(login_deadline) => {
            conn.close(close_code::LOGIN_TIMEOUT.into(), b"no control stream");
            return Err(ConnError::Protocol("no control stream before the login deadline"));
        }
    };
    let mut reader = FrameReader::new(recv, core.connection.max_frame_len as usize);

    // docs/protocol.md §4.1: the first frame is Hello, answered by Welcome or an error.
    let first = tokio::select! {
        first = reader.next() => first?,
        () = sleep_until(login_deadline) => None,
    };
    let hello = match first {
        Some(Inbound::Frame(body)) => ClientMsg::decode(&body).ok(),
        _ => None,
    };
    match hello {
        Some(ClientMsg::Hello(hello)) if hello.version == PROTOCOL_VERSION => {
            tracing::debug!(agent = %hello.agent, "hello");
            let welcome = ServerMsg::Welcome(Welcome {
                version: PROTOCOL_VERSION,
                server: concat!("rtm-server/", env!("CARGO_PKG_VERSION")).into(),
            });
            send.write_all(&encode_frame(&welcome)).await?;
        }
        other => {
            let reason = match other {
                Some(ClientMsg::Hello(h)) => {
                    format!(
                        "protocol version {} is not supported; this server speaks {PROTOCOL_VERSION}",
                        h.version
                    )
                }
                _ => "the first frame must be a Hello".to_owned(),
            };
            let error = ServerMsg::Error(WireError::new(ErrorCode::InvalidParameter, reason));
            let _ = send.write_all(&encode_frame(&error)).await;
            let _ = send.finish();
            let _ = timeout(CLOSE_GRACE, send.stopped()).await;
            conn.close(close_code::PROTOCOL.into(), b"bad hello");
            return Err(ConnError::Protocol("bad hello"));
        }
    }

    let (outbox, outbox_rx) = Outbox::new(
        core.connection.outbound_queue as usize,
        core.metrics.clone(),
    );
    let mut outbox_rx = Some(outbox_rx);
    let mut session = Session::new(core.clone(), outbox.clone());
    let mut out = BytesMut::new();
    let mut shutting_down = false;
    let mut token_expired = false;
    let result = loop {
        let token_deadline = session.token_deadline();
        let token_at = token_deadline.map(|d| match d {
            TokenDeadline::Warn(at) | TokenDeadline::Expire(at) => {
                Instant::now() + Duration::from_millis(at.saturating_sub(now_ms()))
            }
        });
        let inbound = tokio::select! {
            inbound = reader.next() => inbound,
            () = sleep_until(token_at.unwrap_or(login_deadline)),
                if token_at.is_some() && !token_expired =>
            {
                match token_deadline {
                    Some(TokenDeadline::Warn(_)) => {
                        // docs/protocol.md §5.1.2: warn, once per token.
                        let event = Event::TokenPrivilegeWillExpire { channel_name: String::new() };
                        outbox.push(encode_frame(&ServerMsg::Event(event)));
                        session.token_warned();
                    }
                    _ => {
                        token_expired = true;
                        outbox.close(CloseReason::TokenExpired);
                    }
                }
                continue;
            }
            () = sleep_until(login_deadline), if outbox_rx.is_some() => {
                conn.close(close_code::LOGIN_TIMEOUT.into(), b"login timeout");
                break Err(ConnError::Protocol("no login before the deadline"));
            }
            _ = shutdown.changed(), if !shutting_down => {
                shutting_down = true;
                if outbox_rx.is_some() {
                    conn.close(CloseReason::ServerShutdown.close_code().into(), b"server shutdown");
                } else {
                    outbox.close(CloseReason::ServerShutdown);
                }
                // The writer closes the connection; the reader then ends.
                continue;
            }
        };
        let mut inbound = match inbound {
            Ok(Some(inbound)) => inbound,
            Ok(None) => break Ok(()),
            Err(e) => break Err(e.into()),
        };
        // Serve everything that has arrived, then write all the answers at once.
        loop {
            handle(&mut session, core, inbound, &mut out).await;
            match reader.buffered() {
                Some(next) => inbound = next,
                None => break,
            }
        }
        if session.is_logged_in()
            && let Some(rx) = outbox_rx.take()
        {
            tokio::spawn(write_events(conn.clone(), rx).in_current_span());
        }
        if let Err(e) = send.write_all(&out).await {
            break Err(e.into());
        }
        out.clear();
    };
    session.end().await;
    if outbox_rx.is_some() || result.is_ok() {
        // Never logged in (so no writer will close it), or the client finished its stream.
        conn.close(close_code::NORMAL.into(), b"");
    }
    result
}

/// Serves one inbound frame, appending the answer (if any) to `out`.
async fn handle<E: Engine>(
    session: &mut Session<E>,
    core: &Core<E>,
    inbound: Inbound,
    out: &mut BytesMut,
) {
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
        Ok(ClientMsg::Request { id, request }) => {
            let result = session.handle(request).await;
            encode_frame_into(&ServerMsg::Response { id, result }, out);
        }
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

fn reply_error(id: Option<rtm_proto::RequestId>, error: WireError, out: &mut BytesMut) {
    let msg = match id {
        Some(id) => ServerMsg::Response {
            id,
            result: Err(error),
        },
        None => ServerMsg::Error(error),
    };
    encode_frame_into(&msg, out);
}

/// Drains the session's outbox into a delivery stream until the session closes.
async fn write_events(conn: quinn::Connection, mut rx: OutboxRx) {
    let mut stream: Option<quinn::SendStream> = None;
    loop {
        let reason = match rx.next(WRITE_BATCH).await {
            Next::Frames(mut frames) if !frames.is_empty() => {
                let Ok(s) = delivery_stream(&conn, &mut stream).await else {
                    return;
                };
                // A close request while the write is blocked (a stalled reader) must not wait
                // for the write.
                tokio::select! {
                    written = s.write_all_chunks(&mut frames) => {
                        if written.is_err() {
                            return;
                        }
                        continue;
                    }
                    reason = rx.closed() => {
                        // Part of a frame may be written: close without another frame.
                        conn.close(reason.close_code().into(), reason.to_string().as_bytes());
                        return;
                    }
                }
            }
            Next::Frames(_) => continue,
            Next::Close(reason) => reason,
        };
        // Deliver what is queued (unless the queue is the problem), then say why, then close.
        let mut frames = if reason == CloseReason::SlowConsumer {
            Vec::new()
        } else {
            rx.drain()
        };
        frames.push(encode_frame(&ServerMsg::Event(Event::SessionClosed {
            reason,
        })));
        let _ = timeout(CLOSE_GRACE, async {
            let s = delivery_stream(&conn, &mut stream).await?;
            s.write_all_chunks(&mut frames).await.map_err(|_| ())?;
            let _ = s.finish();
            let _ = s.stopped().await;
            Ok::<(), ()>(())
        })
        .await;
        conn.close(reason.close_code().into(), reason.to_string().as_bytes());
        return;
    }
}

async fn delivery_stream<'a>(
    conn: &quinn::Connection,
    stream: &'a mut Option<quinn::SendStream>,
) -> Result<&'a mut quinn::SendStream, ()> {
    if stream.is_none() {
        *stream = Some(conn.open_uni().await.map_err(|_| ())?);
    }
    stream.as_mut().ok_or(())
}
