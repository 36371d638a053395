//! The session's metadata and lock calls (`docs/protocol.md` §5.9, §5.10).

use std::num::NonZeroU32;
use std::sync::atomic::Ordering;

use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use rtm_proto::{
    ChannelType, ErrorCode, LockOp, LockRequest, MetadataTarget, MetadataWrite, Response,
    WireError, limits, validate,
};
use tokio::sync::oneshot;

use super::{Handled, LoggedIn, Session, logged_in};
use crate::core::{LockAnswer, err, invalid, lock_failed, now_ms};
use crate::engine::{Engine, LockError};

/// Most acquires with retry that one connection waits for at once.
const MAX_LOCK_WAITS: usize = 32;

/// A limiter of `per_second` calls, with bursts of twice as many (the reference's "10 per
/// second, 20 at most").
pub(super) fn burst_limiter(per_second: u32) -> DefaultDirectRateLimiter {
    let rate = NonZeroU32::new(per_second).unwrap_or(NonZeroU32::MIN);
    let burst = rate.saturating_mul(NonZeroU32::new(2).unwrap_or(NonZeroU32::MIN));
    RateLimiter::direct(Quota::per_second(rate).allow_burst(burst))
}

fn too_often(what: &str, per_second: u32) -> WireError {
    err(
        ErrorCode::OperationRateExceedLimitation,
        format!("{what} calls faster than {per_second} per second"),
    )
}

pub(super) fn check_storage_rate<E>(
    state: &LoggedIn<E>,
    core: &crate::core::Core<E>,
) -> Result<(), WireError> {
    if state.storage_limiter.check().is_err() {
        core.metrics.rate_limited.fetch_add(1, Ordering::Relaxed);
        return Err(too_often("metadata", state.policy.limits.storage_rate));
    }
    Ok(())
}

/// Metadata and locks are for message and stream channels with valid names.
fn check_channel(channel_type: ChannelType, channel: &str) -> Result<(), WireError> {
    if channel_type == ChannelType::User {
        return Err(err(
            ErrorCode::InvalidChannelType,
            "channel metadata and locks are for message and stream channels",
        ));
    }
    validate::channel_name(channel).map_err(invalid)
}

fn check_target(target: &MetadataTarget) -> Result<(), WireError> {
    match target {
        MetadataTarget::Channel {
            channel_type,
            channel,
        } => check_channel(*channel_type, channel),
        MetadataTarget::User { user_id } => validate::user_id(user_id, true).map_err(invalid),
    }
}

impl<E: Engine> Session<E> {
    pub(super) async fn write_metadata(
        &mut self,
        write: MetadataWrite,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::metadata_write(&write).map_err(invalid)?;
        check_storage_rate(state, &self.core)?;
        let data = self.core.write_metadata(&state.handle, write).await?;
        Ok(Response::MetadataWritten {
            total_count: data.items.len() as u32,
            major_revision: data.major_revision,
            timestamp: now_ms(),
        })
    }

    pub(super) async fn get_metadata(
        &mut self,
        target: MetadataTarget,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        check_target(&target)?;
        check_storage_rate(state, &self.core)?;
        let data = self
            .core
            .get_metadata(state.handle.app_id(), target)
            .await?;
        Ok(Response::Metadata {
            data,
            timestamp: now_ms(),
        })
    }

    pub(super) async fn listen_user_metadata(
        &mut self,
        user_id: String,
        on: bool,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        validate::user_id(&user_id, true).map_err(invalid)?;
        check_storage_rate(state, &self.core)?;
        if on {
            let max = limits::MAX_USER_METADATA_SUBSCRIPTIONS;
            if !state.user_metadata.contains(&user_id) && state.user_metadata.len() >= max {
                return Err(err(
                    ErrorCode::StorageSubscribeUserExceedLimitation,
                    format!("already subscribed to {max} users' metadata, the limit"),
                ));
            }
        } else if !state.user_metadata.contains(&user_id) {
            return Err(err(
                ErrorCode::StorageNotSubscribe,
                "not subscribed to this user's metadata",
            ));
        }
        self.core.listen_user(&state.handle, &user_id, on).await?;
        if on {
            state.user_metadata.insert(user_id);
        } else {
            state.user_metadata.remove(&user_id);
        }
        Ok(Response::Done {
            timestamp: now_ms(),
        })
    }

    /// A lock call. An acquire with retry of a lock another user holds is answered later:
    /// [`Handled::Later`].
    pub(super) async fn lock(&mut self, request: LockRequest, waits: usize) -> Handled {
        match self.try_lock(request, waits).await {
            Ok(Some(answer)) => Handled::Later(answer),
            Ok(None) => Handled::Now(Ok(Response::Done {
                timestamp: now_ms(),
            })),
            Err(e) => Handled::Now(Err(e)),
        }
    }

    async fn try_lock(
        &mut self,
        request: LockRequest,
        waits: usize,
    ) -> Result<Option<oneshot::Receiver<Result<(), LockError>>>, WireError> {
        let state = logged_in(&mut self.state)?;
        check_channel(request.channel_type, &request.channel)?;
        validate::lock_name(&request.lock_name).map_err(invalid)?;
        if let LockOp::Revoke { owner } = &request.op {
            validate::user_id(owner, true).map_err(invalid)?;
        }
        if matches!(request.op, LockOp::Acquire { retry: true }) && waits >= MAX_LOCK_WAITS {
            return Err(err(
                ErrorCode::LockOperationPerforming,
                format!("already waiting for {MAX_LOCK_WAITS} locks, the limit"),
            ));
        }
        if state.lock_limiter.check().is_err() {
            self.core
                .metrics
                .rate_limited
                .fetch_add(1, Ordering::Relaxed);
            return Err(too_often("lock", state.policy.limits.lock_rate));
        }
        match self.core.lock(&state.handle, request).await? {
            LockAnswer::Done => Ok(None),
            LockAnswer::Waiting(answer) => Ok(Some(answer)),
        }
    }

    pub(super) async fn get_locks(
        &mut self,
        channel_type: ChannelType,
        channel: String,
    ) -> Result<Response, WireError> {
        let state = logged_in(&mut self.state)?;
        check_channel(channel_type, &channel)?;
        let locks = self
            .core
            .get_locks(state.handle.app_id(), channel_type, &channel)
            .await?;
        Ok(Response::Locks {
            locks,
            timestamp: now_ms(),
        })
    }

    /// The connection was lost: the session's locks stay held for their ttl.
    pub(crate) async fn away(&self) {
        if let Some(state) = &self.state {
            self.core.session_away(&state.handle).await;
        }
    }

    /// The session is online again (resumed): it keeps its locks, and hears of the ones it lost.
    pub(crate) async fn back(&self) {
        if let Some(state) = &self.state {
            self.core.session_back(&state.handle).await;
        }
    }
}

/// The answer to a waiting acquire, once it comes.
pub(crate) async fn lock_answer(
    answer: oneshot::Receiver<Result<(), LockError>>,
) -> Result<Response, WireError> {
    match answer.await {
        Ok(Ok(())) => Ok(Response::Done {
            timestamp: now_ms(),
        }),
        Ok(Err(e)) => Err(lock_failed(&e)),
        Err(_) => Err(err(
            ErrorCode::LockOperationFailed,
            "the lock service stopped while waiting",
        )),
    }
}
