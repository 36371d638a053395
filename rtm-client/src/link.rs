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
        let previous = {
            let mut current = self.state.lock().unwrap_or_else(PoisonError::into_inner);
            std::mem::replace(&mut *current, state)
        };
        if previous == state {
            return;
        }
        let timestamp = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis() as u64);
        self.listeners.emit(RtmEvent::LinkState(LinkStateEvent {
            current_state: state,
            previous_state: previous,
            service_type: ServiceType::Message,
            operation,
            reason_code,
            reason: reason.into(),
            affected_channels: Vec::new(),
            unrestored_channels: Vec::new(),
            is_resumed: false,
            timestamp,
        }));
    }
}
