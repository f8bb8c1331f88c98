//! Micro-benchmarks of the RESP codec: the per-command cost of decoding
//! what Redis clients send and of writing `message` pushes.
//!
//! Run: `cargo bench -p kraken-protocol --bench resp` (about 10 s); see
//! `benches/codec.rs` for how criterion compares runs. Measured:
//! - `resp_decode/publish_x64`: a read buffer holding 64 pipelined
//!   `PUBLISH <channel> <64-byte payload>` arrays, decoded to the end.
//! - `resp_decode/subscribe_100`: one `SUBSCRIBE` of 100 channels.
//! - `resp_decode/inline_ping_x64`: 64 inline `PING` lines.
//! - `resp_encode/message_x64`: 64 `message` pushes of a 64-byte payload
//!   from one shared head, written into a reused buffer (a subscriber's
//!   output for 64 deliveries).

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use kraken_protocol::resp::{MessagePush, Protocol, Reply, RespCodec, RespCommand, RespLimits};
use tokio_util::codec::{Decoder, Encoder};

const PIPELINE: usize = 64;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .noise_threshold(0.05)
}

fn array(args: &[&[u8]], out: &mut Vec<u8>) {
    out.extend_from_slice(format!("*{}\r\n", args.len()).as_bytes());
    for arg in args {
        out.extend_from_slice(format!("${}\r\n", arg.len()).as_bytes());
        out.extend_from_slice(arg);
        out.extend_from_slice(b"\r\n");
    }
}

fn channel(i: usize) -> String {
    format!("ws:1234567890:proj:{:010}", 9_876_543_210usize - i)
}

fn decode_all(wire: &[u8], expect: usize) {
    let mut codec = RespCodec::new(RespLimits::default());
    let mut buf = BytesMut::from(wire);
    let mut n = 0;
    while let Some(command) = codec.decode(&mut buf).unwrap() {
        debug_assert!(!matches!(command, RespCommand::ProtocolError(_)));
        black_box(command);
        n += 1;
    }
    assert_eq!(n, expect);
}

fn decode(c: &mut Criterion) {
    let payload = vec![b'p'; 64];
    let ch = channel(0);
    let mut publishes = Vec::new();
    for _ in 0..PIPELINE {
        array(&[b"PUBLISH", ch.as_bytes(), &payload], &mut publishes);
    }
    let names: Vec<String> = (0..100).map(channel).collect();
    let mut args: Vec<&[u8]> = vec![b"SUBSCRIBE"];
    args.extend(names.iter().map(|n| n.as_bytes()));
    let mut subscribe = Vec::new();
    array(&args, &mut subscribe);
    let pings = b"PING\r\n".repeat(PIPELINE);

    let mut g = c.benchmark_group("resp_decode");
    g.throughput(Throughput::Elements(PIPELINE as u64));
    g.bench_function("publish_x64", |b| {
        b.iter(|| decode_all(black_box(&publishes), PIPELINE))
    });
    g.bench_function("inline_ping_x64", |b| {
        b.iter(|| decode_all(black_box(&pings), PIPELINE))
    });
    g.throughput(Throughput::Elements(100));
    g.bench_function("subscribe_100", |b| {
        b.iter(|| decode_all(black_box(&subscribe), 1))
    });
    g.finish();
}

fn encode(c: &mut Criterion) {
    let payload = Bytes::from(vec![b'p'; 64]);
    let ch = channel(0);
    let head = MessagePush::head(Protocol::Resp2, ch.as_bytes(), payload.len());
    let mut codec = RespCodec::new(RespLimits::default());
    let mut g = c.benchmark_group("resp_encode");
    g.throughput(Throughput::Elements(PIPELINE as u64));
    g.bench_function("message_x64", |b| {
        b.iter_batched_ref(
            || BytesMut::with_capacity(PIPELINE * 128),
            |out| {
                out.clear();
                for _ in 0..PIPELINE {
                    let push = MessagePush {
                        head: head.clone(),
                        payload: payload.clone(),
                    };
                    codec.encode(Reply::Message(push), out).unwrap();
                }
                black_box(out.len());
            },
            BatchSize::SmallInput,
        )
    });
    g.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode, encode
}
criterion_main!(benches);
