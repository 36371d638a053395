//! The client's link state, and the events that report its changes.

use std::sync::{Mutex, PoisonError};
use std::time::{SystemTime, UNIX_EPOCH};

use crate::event::{
    LinkOperation, LinkState, LinkStateEvent, LinkStateReason, Listeners, RtmEvent, ServiceType,
};

/// The current link state; every change is emitted as a [`LinkStateEvent`].
#[derive(Debug)]
pub(crate) struct LinkTracker {
    state: Mutex<LinkState>,
    listeners: Listeners,
}

impl LinkTracker {
    pub(crate) fn new(listeners: Listeners) -> Self {
        Self {
            state: Mutex::new(LinkState::Idle),
            listeners,
        }
    }

    pub(crate) fn get(&self) -> LinkState {
        *self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Moves to `state` and tells the listeners (nothing happens if already there).
    pub(crate) fn set(
        &self,
        state: LinkState,
        operation: LinkOperation,
        reason_code: LinkStateReason,
        reason: impl Into<String>,
    ) {
        self.change(LinkChange::new(state, operation, reason_code, reason));
    }

    /// Applies `change` and tells the listeners (nothing happens if already in that state).
    pub(crate) fn change(&self, change: LinkChange) {
        let previous = {
            let mut current = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut *current, change.state)
        };
        if previous == change.state {
            return;
        }
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.listeners.emit(RtmEvent::LinkState(LinkStateEvent {
            current_state: change.state,
            previous_state: previous,
            service_type: ServiceType::Message,
            operation: change.operation,
            reason_code: change.reason_code,
            reason: change.reason,
            affected_channels: change.affected_channels,
            unrestored_channels: change.unrestored_channels,
            is_resumed: change.is_resumed,
            timestamp,
        }));
    }
}

/// The event for a stream channel the server took this client out of (a stream channel's
/// link fails on its own; the message service's link state is not affected).
pub(crate) fn stream_channel_failed(channel: String, reason: rtm_proto::CloseReason) -> RtmEvent {
    let reason_code = match reason {
        rtm_proto::CloseReason::TokenExpired => LinkStateReason::TokenExpired,
        _ => LinkStateReason::KickedOutByServer,
    };
    RtmEvent::LinkState(LinkStateEvent {
        current_state: LinkState::Failed,
        previous_state: LinkState::Connected,
        service_type: ServiceType::Stream,
        operation: LinkOperation::ServerReject,
        reason_code,
        reason: reason.to_string(),
        affected_channels: vec![channel],
        unrestored_channels: Vec::new(),
        is_resumed: false,
        timestamp: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64),
    })
}

/// A change of link state, with what the event says about it.
#[derive(Debug)]
pub(crate) struct LinkChange {
    pub(crate) state: LinkState,
    pub(crate) operation: LinkOperation,
    pub(crate) reason_code: LinkStateReason,
    pub(crate) reason: String,
    pub(crate) affected_channels: Vec<String>,
    pub(crate) unrestored_channels: Vec<String>,
    pub(crate) is_resumed: bool,
}

impl LinkChange {
    pub(crate) fn new(
        state: LinkState,
        operation: LinkOperation,
        reason_code: LinkStateReason,
        reason: impl Into<String>,
    ) -> Self {
        Self {
            state,
            operation,
            reason_code,
            reason: reason.into(),
            affected_channels: Vec::new(),
            unrestored_channels: Vec::new(),
            is_resumed: false,
        }
    }
}
