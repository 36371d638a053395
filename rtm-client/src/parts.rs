//! Events too large for one frame arrive in parts (`docs/protocol.md` §2.2): the client joins
//! them, per lane, before handing the event on. The parts belong to the session, so a resume
//! goes on joining where the lost connection stopped.

use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use rtm_proto::limits::MAX_LANES;
use rtm_proto::{ErrorCode, Event, RtmError};

/// Per lane, the leading parts of an event too large for one frame, joined so far
/// (`docs/protocol.md` §2.2). The frames of one event come one after the other on one lane,
/// so a lane has at most one such event at a time.
#[derive(Clone, Debug, Default)]
pub(crate) struct Parts(Arc<Lanes>);

#[derive(Debug, Default)]
struct Lanes {
    /// One bit per lane that is not idle, so that every ordinary event passes without taking
    /// the lock. Each lane is read by one task at a time, which alone changes its bit (and
    /// `forget`, before the readers of a new connection start).
    busy: AtomicU32,
    joining: Mutex<[Joining; MAX_LANES]>,
}

/// What a lane is doing with parts.
#[derive(Debug, Default)]
enum Joining {
    /// Nothing in parts.
    #[default]
    Idle,
    /// The parts so far.
    Parts(Box<Event>),
    /// Frames of the lane were lost (a resume that could not send everything again, or a frame
    /// too large to read): parts that follow belong to an event whose start is gone, and are
    /// dropped (`dropped`), and so is the event that ends them.
    Broken { dropped: bool },
}

impl Parts {
    fn lock(&self) -> std::sync::MutexGuard<'_, [Joining; MAX_LANES]> {
        self.0
            .joining
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn mark(&self, lane: usize, busy: bool) {
        let bit = 1u32 << lane;
        if busy {
            self.0.busy.fetch_or(bit, Ordering::Release);
        } else {
            self.0.busy.fetch_and(!bit, Ordering::Release);
        }
    }

    /// A leading part arrived on `lane`.
    pub(crate) fn add(&self, lane: usize, part: Event) {
        self.mark(lane, true);
        let mut lanes = self.lock();
        let slot = &mut lanes[lane];
        match slot {
            Joining::Idle => *slot = Joining::Parts(Box::new(part)),
            Joining::Parts(joined) => {
                if let Err(other) = rtm_proto::split::join_part(joined, part) {
                    tracing::warn!("a part of another event arrived before the last one");
                    *slot = Joining::Parts(other);
                }
            }
            Joining::Broken { .. } => *slot = Joining::Broken { dropped: true },
        }
    }

    /// An event arrived on `lane`: the whole event, when it ends one in parts; `Err` when it
    /// ends one whose first parts were lost (said in the error).
    pub(crate) fn complete(&self, lane: usize, event: Event) -> Result<Event, RtmError> {
        if self.0.busy.load(Ordering::Acquire) & (1 << lane) == 0 {
            return Ok(event);
        }
        let joining = std::mem::take(&mut self.lock()[lane]);
        self.mark(lane, false);
        match joining {
            Joining::Idle | Joining::Broken { dropped: false } => Ok(event),
            Joining::Parts(mut joined) => match rtm_proto::split::join_part(&mut joined, event) {
                Ok(()) => Ok(*joined),
                Err(event) => {
                    tracing::warn!("an event in parts ended without its last part");
                    Ok(*event)
                }
            },
            Joining::Broken { dropped: true } => {
                let channel = match &event {
                    Event::Presence(p) => p.channel_name.clone(),
                    Event::Topic(t) => t.channel_name.clone(),
                    // Not the end of a split event: parts were never followed by it.
                    _ => return Ok(event),
                };
                Err(RtmError::new(
                    ErrorCode::ChannelInErrorState,
                    "event",
                    format!(
                        "the snapshot of {channel} arrived incomplete (some of its frames were \
                         lost while the connection was down); subscribe or join again for it"
                    ),
                ))
            }
        }
    }

    /// Frames of these lanes were lost: what they were joining cannot be completed.
    pub(crate) fn forget(&self, lost: impl Iterator<Item = usize>) {
        let mut lanes = self.lock();
        for lane in lost {
            if let Some(slot) = lanes.get_mut(lane) {
                *slot = Joining::Broken { dropped: false };
                self.mark(lane, true);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use rtm_proto::{ChannelType, PresenceEvent, PresenceEventType, UserState};

    use super::*;

    fn snapshot(users: &[&str]) -> Event {
        Event::Presence(PresenceEvent {
            event_type: PresenceEventType::Snapshot,
            channel_type: ChannelType::Message,
            channel_name: "c".into(),
            publisher: String::new(),
            state_changed: Default::default(),
            interval: None,
            snapshot: users
                .iter()
                .map(|u| UserState {
                    user_id: (*u).into(),
                    states: Default::default(),
                })
                .collect(),
            timestamp: 1,
        })
    }

    #[test]
    fn parts_are_joined_and_a_snapshot_missing_its_start_is_reported_not_delivered() {
        let parts = Parts::default();
        parts.add(3, snapshot(&["a"]));
        parts.add(3, snapshot(&["b"]));
        assert_eq!(
            parts.complete(3, snapshot(&["c"])),
            Ok(snapshot(&["a", "b", "c"]))
        );
        // Frames lost in the middle of an event: the rest of it is not passed off as whole.
        parts.add(3, snapshot(&["a"]));
        parts.forget([3].into_iter());
        parts.add(3, snapshot(&["b"]));
        let error = parts.complete(3, snapshot(&["c"])).unwrap_err();
        assert!(error.reason.contains("incomplete"), "{error:?}");
        // After it, and on a lane that lost frames but no parts, events are whole again.
        assert_eq!(parts.complete(3, snapshot(&["d"])), Ok(snapshot(&["d"])));
        parts.forget([4].into_iter());
        assert_eq!(parts.complete(4, snapshot(&["e"])), Ok(snapshot(&["e"])));
    }
}
