//! Keeping server frames within [`MAX_SERVER_FRAME_LEN`](crate::limits::MAX_SERVER_FRAME_LEN)
//! (`docs/protocol.md` §2.2).
//!
//! Lists the server sends can outgrow one frame: a history page of full-size messages, a
//! `who_now` page or a presence snapshot of users with full states, the changes of one
//! interval in a busy channel, a stream channel's topics. Pages are cut by [`fitting`] (the
//! page is shorter and says where the next begins). Events are cut by [`event_frames`]: an
//! `INTERVAL` becomes several `INTERVAL` events (each is a set of changes, so several apply
//! like one), and a snapshot becomes [`Event::Part`]s followed by the snapshot event itself,
//! which a client joins back with [`join_part`] before handing it on.

use bytes::Bytes;
use serde::Serialize;

use crate::frame::encode_frame;
use crate::limits::{LIST_BUDGET, MAX_SERVER_FRAME_LEN};
use crate::message::{Event, EventPart, ServerMsg};
use crate::presence::{IntervalDetail, PresenceEvent, PresenceEventType, UserState};
use crate::stream::{PublisherInfo, TopicEvent, TopicEventType, TopicInfo};

/// The most an event's own encoding may take: the frame less room for the `ServerMsg` and
/// `Event` tags around it.
const MAX_EVENT_LEN: usize = MAX_SERVER_FRAME_LEN - 16;

/// The size of `value` on the wire, without encoding it.
pub fn encoded_len<T: Serialize + ?Sized>(value: &T) -> usize {
    postcard::serialize_with_flavor(value, postcard::ser_flavors::Size::default())
        .unwrap_or(usize::MAX)
}

/// How many of the first `items` fit in `budget` bytes on the wire: at least one (a single item
/// is bounded by the limits on its parts), at most all.
pub fn fitting<T: Serialize>(items: &[T], budget: usize) -> usize {
    let mut used = 0usize;
    for (i, item) in items.iter().enumerate() {
        used = used.saturating_add(encoded_len(item));
        if used > budget && i > 0 {
            return i;
        }
    }
    items.len()
}

/// Cuts `items` into runs that each fit in `budget` bytes (see [`fitting`]), in order.
pub fn chunks<T: Serialize>(mut items: Vec<T>, budget: usize) -> Vec<Vec<T>> {
    let mut runs = Vec::new();
    while !items.is_empty() {
        let n = fitting(&items, budget);
        let rest = items.split_off(n);
        runs.push(std::mem::replace(&mut items, rest));
    }
    runs
}

/// The frames that carry `event`: one, unless it would be larger than
/// [`MAX_SERVER_FRAME_LEN`] and is a list that can be cut (see the module's text). The frames
/// of one event must reach the client one after the other on one lane.
pub fn event_frames(event: Event) -> Vec<Bytes> {
    match event {
        Event::Presence(p)
            if matches!(
                p.event_type,
                PresenceEventType::Snapshot | PresenceEventType::Interval
            ) && encoded_len(&p) > MAX_EVENT_LEN =>
        {
            split_presence(p)
        }
        Event::Topic(t)
            if t.event_type == TopicEventType::Snapshot && encoded_len(&t) > MAX_EVENT_LEN =>
        {
            split_topics(t)
        }
        event => vec![encode_frame(&ServerMsg::Event(event))],
    }
}

fn frame(event: Event) -> Bytes {
    encode_frame(&ServerMsg::Event(event))
}

/// Leading parts wrapped in [`Event::Part`], the last one as its event.
fn in_parts(mut parts: Vec<EventPart>) -> Vec<Bytes> {
    let last = parts.pop();
    parts
        .into_iter()
        .map(|part| frame(Event::Part(part)))
        .chain(last.map(|part| frame(part.into())))
        .collect()
}

fn split_presence(event: PresenceEvent) -> Vec<Bytes> {
    let with = |snapshot: Vec<UserState>, interval: Option<IntervalDetail>| PresenceEvent {
        snapshot,
        interval,
        ..event.clone()
    };
    if event.event_type == PresenceEventType::Snapshot {
        let parts = chunks(event.snapshot.clone(), LIST_BUDGET);
        return in_parts(
            parts
                .into_iter()
                .map(|users| EventPart::Presence(with(users, None)))
                .collect(),
        );
    }
    // An interval: each piece is a set of changes of its own.
    let detail = event.interval.clone().unwrap_or_default();
    #[derive(Serialize)]
    enum Change {
        Join(String),
        Leave(String),
        Timeout(String),
        State(UserState),
    }
    let changes: Vec<Change> = (detail.join.into_iter().map(Change::Join))
        .chain(detail.leave.into_iter().map(Change::Leave))
        .chain(detail.timeout.into_iter().map(Change::Timeout))
        .chain(detail.user_state_list.into_iter().map(Change::State))
        .collect();
    chunks(changes, LIST_BUDGET)
        .into_iter()
        .map(|run| {
            let mut piece = IntervalDetail::default();
            for change in run {
                match change {
                    Change::Join(u) => piece.join.push(u),
                    Change::Leave(u) => piece.leave.push(u),
                    Change::Timeout(u) => piece.timeout.push(u),
                    Change::State(s) => piece.user_state_list.push(s),
                }
            }
            frame(Event::Presence(with(Vec::new(), Some(piece))))
        })
        .collect()
}

fn split_topics(event: TopicEvent) -> Vec<Bytes> {
    // One (topic, publisher) pair at a time, so that even a topic with many publishers splits.
    let pairs: Vec<(String, PublisherInfo)> = event
        .topic_infos
        .iter()
        .flat_map(|t| {
            t.publishers
                .iter()
                .map(|p| (t.topic_name.clone(), p.clone()))
        })
        .collect();
    let parts = chunks(pairs, LIST_BUDGET)
        .into_iter()
        .map(|run| {
            let mut infos: Vec<TopicInfo> = Vec::new();
            for (topic_name, publisher) in run {
                match infos.last_mut() {
                    Some(last) if last.topic_name == topic_name => last.publishers.push(publisher),
                    _ => infos.push(TopicInfo {
                        topic_name,
                        publishers: vec![publisher],
                    }),
                }
            }
            EventPart::Topic(TopicEvent {
                topic_infos: infos,
                ..event.clone()
            })
        })
        .collect();
    in_parts(parts)
}

/// Adds `next`, a later part of the same event (or its last frame), to `first`, as a client
/// does with the frames of a split snapshot. Parts of different kinds or channels are not
/// joined: `Err` gives `next` back.
pub fn join_part(first: &mut Event, next: Event) -> Result<(), Box<Event>> {
    match (first, next) {
        (Event::Presence(a), Event::Presence(b))
            if a.event_type == b.event_type && a.channel_name == b.channel_name =>
        {
            a.snapshot.extend(b.snapshot);
            a.timestamp = b.timestamp;
            Ok(())
        }
        (Event::Topic(a), Event::Topic(b))
            if a.event_type == b.event_type && a.channel_name == b.channel_name =>
        {
            for info in b.topic_infos {
                match a
                    .topic_infos
                    .iter_mut()
                    .find(|t| t.topic_name == info.topic_name)
                {
                    Some(t) => t.publishers.extend(info.publishers),
                    None => a.topic_infos.push(info),
                }
            }
            a.timestamp = b.timestamp;
            Ok(())
        }
        (_, next) => Err(Box::new(next)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::message::ChannelType;
    use crate::presence::StateDetail;

    fn full_state(user: usize) -> UserState {
        let states: StateDetail = (0..crate::limits::MAX_STATE_PAIRS)
            .map(|k| (format!("{user}-{k:056}"), "v".repeat(1024)))
            .collect();
        UserState {
            user_id: format!("user-{user}"),
            states,
        }
    }

    fn presence(event_type: PresenceEventType) -> PresenceEvent {
        PresenceEvent {
            event_type,
            channel_type: ChannelType::Message,
            channel_name: "big".into(),
            publisher: String::new(),
            state_changed: StateDetail::new(),
            interval: None,
            snapshot: Vec::new(),
            timestamp: 7,
        }
    }

    fn decode(frame: &Bytes) -> Event {
        assert!(frame.len() - crate::frame::HEADER_LEN <= MAX_SERVER_FRAME_LEN);
        match ServerMsg::decode(&frame[crate::frame::HEADER_LEN..]).unwrap() {
            ServerMsg::Event(e) => e,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn a_large_snapshot_comes_in_parts_that_join_back() {
        let mut event = presence(PresenceEventType::Snapshot);
        event.snapshot = (0..100).map(full_state).collect();
        let whole = Event::Presence(event);
        let frames = event_frames(whole.clone());
        assert!(frames.len() >= 3, "{} frames", frames.len());
        let mut events = frames.iter().map(decode);
        let mut joined = match events.next() {
            Some(Event::Part(first)) => Event::from(first),
            other => panic!("{other:?}"),
        };
        let last = frames.len() - 2;
        for (i, event) in events.enumerate() {
            let event = match event {
                Event::Part(part) if i < last => Event::from(part),
                event if i == last => event,
                other => panic!("frame {i}: {other:?}"),
            };
            join_part(&mut joined, event).unwrap();
        }
        assert_eq!(joined, whole);
    }

    #[test]
    fn a_large_interval_comes_as_several_intervals_with_every_change() {
        let mut event = presence(PresenceEventType::Interval);
        event.interval = Some(IntervalDetail {
            join: (0..20_000).map(|i| format!("joiner-{i:040}")).collect(),
            leave: vec!["gone".into()],
            timeout: vec!["lost".into()],
            user_state_list: (0..40).map(full_state).collect(),
        });
        let expected = event.interval.clone().unwrap();
        let mut got = IntervalDetail::default();
        let frames = event_frames(Event::Presence(event));
        assert!(frames.len() >= 3);
        for frame in &frames {
            let Event::Presence(p) = decode(frame) else {
                panic!()
            };
            assert_eq!(p.event_type, PresenceEventType::Interval);
            let d = p.interval.unwrap();
            got.join.extend(d.join);
            got.leave.extend(d.leave);
            got.timeout.extend(d.timeout);
            got.user_state_list.extend(d.user_state_list);
        }
        assert_eq!(got, expected);
    }

    #[test]
    fn a_topic_with_many_publishers_splits_inside_the_topic() {
        let publishers: Vec<PublisherInfo> = (0..5_000)
            .map(|i| PublisherInfo {
                user_id: format!("publisher-{i:040}"),
                meta: "m".repeat(256),
            })
            .collect();
        let whole = Event::Topic(TopicEvent {
            event_type: TopicEventType::Snapshot,
            channel_name: "stream".into(),
            publisher: String::new(),
            topic_infos: vec![
                TopicInfo {
                    topic_name: "a".into(),
                    publishers: publishers.clone(),
                },
                TopicInfo {
                    topic_name: "b".into(),
                    publishers,
                },
            ],
            timestamp: 3,
        });
        let frames = event_frames(whole.clone());
        assert!(frames.len() >= 3);
        let mut joined: Option<Event> = None;
        for frame in &frames {
            let event = match decode(frame) {
                Event::Part(part) => Event::from(part),
                event => event,
            };
            match &mut joined {
                None => joined = Some(event),
                Some(j) => join_part(j, event).unwrap(),
            }
        }
        assert_eq!(joined.unwrap(), whole);
    }

    #[test]
    fn small_events_stay_whole_and_pages_are_cut_by_bytes() {
        let mut event = presence(PresenceEventType::Snapshot);
        event.snapshot = (0..3).map(full_state).collect();
        assert_eq!(event_frames(Event::Presence(event)).len(), 1);
        let items = vec![vec![0u8; 400]; 10];
        // Each item takes 402 bytes (a two-byte length): two fit in 900, and one always does.
        assert_eq!(fitting(&items, 900), 2);
        assert_eq!(fitting(&items, 10), 1);
        assert_eq!(fitting(&items, usize::MAX), 10);
        assert_eq!(fitting::<u8>(&[], 10), 0);
        let runs = chunks(items, 900);
        assert_eq!(
            runs.iter().map(Vec::len).collect::<Vec<_>>(),
            [2, 2, 2, 2, 2]
        );
    }

    #[test]
    fn an_event_just_under_the_limit_still_fits_its_frame() {
        // A snapshot whose own encoding is a byte or two under the frame limit: with the tags
        // around it, the frame would be over.
        for target in [
            MAX_SERVER_FRAME_LEN - 2,
            MAX_SERVER_FRAME_LEN - 1,
            MAX_SERVER_FRAME_LEN,
        ] {
            let mut event = presence(PresenceEventType::Snapshot);
            event.snapshot = (0..28).map(full_state).collect();
            let mut filler = UserState {
                user_id: "filler".into(),
                states: [("k".to_owned(), String::new())].into(),
            };
            event.snapshot.push(filler.clone());
            let short = target - encoded_len(&event);
            filler.states.insert("k".into(), "v".repeat(short));
            event.snapshot.pop();
            event.snapshot.push(filler);
            while encoded_len(&event) > target {
                let last = event.snapshot.last_mut().unwrap();
                last.states.get_mut("k").unwrap().pop();
            }
            assert_eq!(encoded_len(&event), target);
            for frame in event_frames(Event::Presence(event)) {
                decode(&frame);
            }
        }
    }

    #[test]
    fn parts_of_other_channels_are_not_joined() {
        let mut a = Event::Presence(presence(PresenceEventType::Snapshot));
        let mut other = presence(PresenceEventType::Snapshot);
        other.channel_name = "other".into();
        assert!(join_part(&mut a, Event::Presence(other)).is_err());
    }
}
