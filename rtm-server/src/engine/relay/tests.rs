use super::*;
use bytes::{BufMut, BytesMut};

fn every_body() -> Vec<RelayBody> {
    vec![
        RelayBody::Open {
            needs_heartbeats: true,
        },
        RelayBody::Open {
            needs_heartbeats: false,
        },
        RelayBody::Frame(Bytes::from_static(b"\x01\x02")),
        RelayBody::Frame(Bytes::new()),
        RelayBody::Oversized {
            len: 70_000,
            max: 65_536,
            head: Bytes::from_static(b"head"),
        },
        RelayBody::Gone { lost: true },
        RelayBody::Gone { lost: false },
        RelayBody::Control(Bytes::from_static(b"answers")),
        RelayBody::Finish,
        RelayBody::Lanes(16),
        RelayBody::Events(vec![
            (0, Bytes::from_static(b"a")),
            (15, Bytes::new()),
            (3, Bytes::from(vec![7u8; 300])),
        ]),
        RelayBody::Events(Vec::new()),
        RelayBody::FinishLanes,
        RelayBody::Close {
            code: 4,
            reason: "resumed on another connection".into(),
        },
        RelayBody::Beat,
    ]
}

#[test]
fn every_message_reads_back_and_no_prefix_of_one_reads_wrongly() {
    for (seq, body) in every_body().into_iter().enumerate() {
        let msg = RelayMsg {
            link: 0x0102_0304_0506_0708,
            from: 42,
            seq: seq as u64,
            body,
        };
        let bytes = msg.encode();
        assert_eq!(RelayMsg::decode(bytes.clone()), Some(msg.clone()));
        // A cut message either does not read or reads as a shorter message of a kind whose
        // tail runs to the end; never as anything else, never a panic.
        for cut in 0..bytes.len() {
            if let Some(read) = RelayMsg::decode(bytes.slice(..cut)) {
                assert_eq!(
                    (read.link, read.from, read.seq),
                    (msg.link, msg.from, msg.seq)
                );
                assert!(matches!(
                    read.body,
                    RelayBody::Frame(_)
                        | RelayBody::Control(_)
                        | RelayBody::Oversized { .. }
                        | RelayBody::Close { .. }
                        | RelayBody::Events(_)
                ));
            }
        }
    }
    assert_eq!(RelayMsg::decode(Bytes::from_static(&[0; 20])), None);
    let mut unknown = BytesMut::from(&[0u8; 20][..]);
    unknown.put_u8(b'?');
    assert_eq!(RelayMsg::decode(unknown.freeze()), None);
}

/// What node `node`'s hub sent, decoded.
fn sent(out: &mut mpsc::Receiver<Outgoing>) -> Vec<(u32, RelayMsg)> {
    let mut all = Vec::new();
    while let Ok(o) = out.try_recv() {
        o.sent();
        all.push((o.node, RelayMsg::decode(o.bytes.clone()).expect("readable")));
    }
    all
}

/// Carries everything `from` sent to `to`.
fn carry(out: &mut mpsc::Receiver<Outgoing>, to: &Arc<Relays>) {
    while let Ok(o) = out.try_recv() {
        assert_eq!(o.node, to.node());
        o.sent();
        to.deliver(o.bytes.clone());
    }
}

/// A node's hub and what it sends.
type Hub = (Arc<Relays>, mpsc::Receiver<Outgoing>);

/// Node 2 (`front`) opened a link to node 1 (`home`), which accepted it: `b` is node 2's end,
/// `a` node 1's.
struct Linked {
    front: Hub,
    home: Hub,
    b: RelayEnd,
    a: RelayEnd,
}

async fn linked() -> Linked {
    let (front, mut front_out) = Relays::new(2);
    let (home, home_out) = Relays::new(1);
    let mut accepted = home.accepted().expect("once");
    let b = front.open(1);
    let open = RelayBody::Open {
        needs_heartbeats: false,
    };
    assert!(b.sender.send(open).await);
    carry(&mut front_out, &home);
    let a = accepted.try_recv().expect("a new link").end;
    Linked {
        front: (front, front_out),
        home: (home, home_out),
        b,
        a,
    }
}

#[tokio::test]
async fn a_link_carries_both_ways_in_order() {
    let (front, mut front_out) = Relays::new(2);
    let (home, mut home_out) = Relays::new(1);
    let mut accepted = home.accepted().expect("once");
    assert!(home.accepted().is_none());

    let mut b = front.open(1);
    assert!(
        b.sender
            .send(RelayBody::Open {
                needs_heartbeats: true
            })
            .await
    );
    assert!(
        b.sender
            .send(RelayBody::Frame(Bytes::from_static(b"resume")))
            .await
    );
    carry(&mut front_out, &home);
    let Accepted {
        end: mut a,
        needs_heartbeats,
    } = accepted.try_recv().expect("a new link");
    assert!(needs_heartbeats);
    assert_eq!(
        a.rx.recv().await,
        Some(RelayBody::Frame(Bytes::from_static(b"resume")))
    );

    for i in 0..10u8 {
        assert!(
            a.sender
                .send(RelayBody::Events(vec![(i, Bytes::from(vec![i]))]))
                .await
        );
    }
    carry(&mut home_out, &front);
    for i in 0..10u8 {
        assert_eq!(
            b.rx.recv().await,
            Some(RelayBody::Events(vec![(i, Bytes::from(vec![i]))]))
        );
    }
    assert_eq!((front.links(), home.links()), (1, 1));
    drop(a);
    assert_eq!(home.links(), 0);
}

#[tokio::test]
async fn a_lost_message_breaks_the_link_and_tells_the_other_end() {
    let Linked {
        front: (front, mut front_out),
        home: (home, mut home_out),
        b,
        mut a,
    } = linked().await;

    assert!(
        b.sender
            .send(RelayBody::Frame(Bytes::from_static(b"1")))
            .await
    );
    assert!(
        b.sender
            .send(RelayBody::Frame(Bytes::from_static(b"2")))
            .await
    );
    // The first is lost on the way.
    let _lost = front_out.try_recv().expect("queued");
    carry(&mut front_out, &home);
    assert_eq!(a.rx.recv().await, None, "broken, not a frame out of turn");
    assert_eq!(home.links(), 0);
    // The other end is told, and its end breaks too.
    let told: Vec<Outgoing> = std::iter::from_fn(|| home_out.try_recv().ok()).collect();
    assert_eq!(told.len(), 1);
    assert_eq!(told[0].node, 2);
    let msg = RelayMsg::decode(told[0].bytes.clone()).expect("readable");
    assert_eq!(msg.body, RelayBody::Gone { lost: true });
    front.deliver(told[0].bytes.clone());
    let mut b = b;
    assert_eq!(b.rx.recv().await, Some(RelayBody::Gone { lost: true }));
}

#[tokio::test]
async fn a_busy_link_waits_for_room_and_goes_on_once_its_bytes_are_sent() {
    let (front, mut front_out) = Relays::new(2);
    let b = front.open(1);
    let big = Bytes::from(vec![0u8; LINK_BYTES / 4]);
    for _ in 0..4 {
        assert!(b.sender.send(RelayBody::Frame(big.clone())).await);
    }
    // Over the budget now: the next send waits until something leaves.
    let sender = b.sender.clone();
    let mut next = tokio::spawn(async move { sender.send(RelayBody::Frame(Bytes::new())).await });
    tokio::task::yield_now().await;
    assert!(
        tokio::time::timeout(Duration::from_millis(50), &mut next)
            .await
            .is_err(),
        "a link over its budget must wait"
    );
    let first = front_out.try_recv().expect("queued");
    first.sent();
    assert!(next.await.expect("no panic"));
    assert_eq!(std::iter::from_fn(|| front_out.try_recv().ok()).count(), 4);
}

#[tokio::test]
async fn a_message_for_an_unknown_link_opens_nothing_unless_it_is_an_open() {
    let (home, _out) = Relays::new(1);
    let mut accepted = home.accepted().expect("once");
    let frame = RelayMsg {
        link: 9,
        from: 2,
        seq: 3,
        body: RelayBody::Frame(Bytes::new()),
    };
    home.deliver(frame.encode());
    // An open that is not the link's first message is a replay: ignored too.
    let late_open = RelayMsg {
        link: 9,
        from: 2,
        seq: 1,
        body: RelayBody::Open {
            needs_heartbeats: false,
        },
    };
    home.deliver(late_open.encode());
    home.deliver(Bytes::from_static(b"garbage"));
    assert!(accepted.try_recv().is_err());
    assert_eq!(home.links(), 0);
}

#[tokio::test]
async fn a_full_queue_breaks_the_link() {
    let Linked {
        front: (_front, mut front_out),
        home: (home, mut home_out),
        b,
        mut a,
    } = linked().await;
    for _ in 0..=LINK_QUEUE {
        assert!(b.sender.send(RelayBody::Frame(Bytes::new())).await);
        carry(&mut front_out, &home);
    }
    assert_eq!(home.links(), 0);
    assert_eq!(
        sent(&mut home_out)[0].1.body,
        RelayBody::Gone { lost: true }
    );
    // What was queued still comes, then the end.
    let mut frames = 0;
    while let Some(body) = a.rx.recv().await {
        assert_eq!(body, RelayBody::Frame(Bytes::new()));
        frames += 1;
    }
    assert_eq!(frames, LINK_QUEUE);
}

#[tokio::test(start_paused = true)]
async fn beats_keep_a_quiet_link_and_silence_breaks_it() {
    let Linked {
        front: (front, mut front_out),
        home: (home, mut home_out),
        b,
        mut a,
    } = linked().await;
    tokio::spawn(front.clone().upkeep());
    tokio::spawn(home.clone().upkeep());

    // A minute of quiet with both beating: the link holds, and beats are not handed on.
    for _ in 0..12 {
        tokio::time::sleep(BEAT).await;
        carry(&mut front_out, &home);
        carry(&mut home_out, &front);
    }
    assert_eq!((front.links(), home.links()), (1, 1));
    assert!(a.rx.try_recv().is_err_and(|broken| !broken));

    // The front node goes quiet (its messages no longer arrive): the home end breaks after
    // SILENCE, not before.
    tokio::time::sleep(SILENCE - BEAT).await;
    let _ = sent(&mut front_out);
    assert_eq!(home.links(), 1);
    tokio::time::sleep(BEAT * 2).await;
    assert_eq!(home.links(), 0);
    assert_eq!(a.rx.recv().await, None);
    drop(b);
}
