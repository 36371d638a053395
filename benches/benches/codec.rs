//! Encode and decode of the frames on the hot path: a publish request (client → server) and the
//! message event fanned out to subscribers (server → client).

use bytes::{Bytes, BytesMut};
use criterion::{BenchmarkId, Criterion, Throughput, criterion_group, criterion_main};
use rtm_proto::{
    ChannelType, ClientMsg, Event, FrameDecoder, MessageEvent, Payload, PublishRequest, Request,
    RequestId, ServerMsg, encode_frame,
};

const SIZES: [usize; 4] = [16, 256, 4096, 32 * 1024];

fn publish(size: usize) -> ClientMsg {
    ClientMsg::Request {
        id: RequestId(12345),
        request: Request::Publish(PublishRequest {
            channel_type: ChannelType::Message,
            channel: "chat_room".into(),
            message: Payload::Binary(Bytes::from(vec![7u8; size])),
            custom_type: "bench".into(),
        }),
    }
}

fn event(size: usize) -> ServerMsg {
    ServerMsg::Event(Event::Message(MessageEvent {
        channel_type: ChannelType::Message,
        channel_name: "chat_room".into(),
        topic_name: String::new(),
        message: Payload::Binary(Bytes::from(vec![7u8; size])),
        custom_type: "bench".into(),
        publisher: "Tony".into(),
        timestamp: 1_795_719_793_000,
    }))
}

fn codec(c: &mut Criterion) {
    let mut group = c.benchmark_group("codec");
    for size in SIZES {
        group.throughput(Throughput::Bytes(size as u64));
        let msg = event(size);
        group.bench_with_input(BenchmarkId::new("encode_event", size), &msg, |b, msg| {
            b.iter(|| encode_frame(msg))
        });
        let frame = encode_frame(&msg);
        group.bench_with_input(
            BenchmarkId::new("decode_event", size),
            &frame,
            |b, frame| {
                let mut decoder = FrameDecoder::new(1 << 20);
                b.iter(|| {
                    let mut buf = BytesMut::from(&frame[..]);
                    let body = decoder.decode(&mut buf).unwrap().unwrap();
                    ServerMsg::decode(&body).unwrap()
                })
            },
        );
        let request = encode_frame(&publish(size));
        group.bench_with_input(
            BenchmarkId::new("decode_publish", size),
            &request,
            |b, frame| {
                let mut decoder = FrameDecoder::new(1 << 20);
                b.iter(|| {
                    let mut buf = BytesMut::from(&frame[..]);
                    let body = decoder.decode(&mut buf).unwrap().unwrap();
                    ClientMsg::decode(&body).unwrap()
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, codec);
criterion_main!(benches);
