//! Micro-benchmarks of the wire codec: the per-request cost of decoding what
//! clients send and encoding what `get messages` answers.
//!
//! Run: `cargo bench -p kraken-protocol` (about 25 s). Criterion keeps the
//! last run in `target/criterion` and prints the change against it, so run
//! it once on the base commit and once on yours to spot a regression. The
//! defaults are short (see [`config`]); for steadier figures pass e.g.
//! `-- --measurement-time 10 --sample-size 50`. `cargo test --benches` runs
//! every benchmark once, untimed, as a smoke test.
//!
//! What is measured:
//! - `decode/get_messages_x64`: a read buffer holding 64 pipelined
//!   `get messages\r\n` (a client's heartbeat/poll), decoded to the end.
//! - `decode/set_publish/{1,16}`: one `set publish` with 1 or 16 entries of
//!   64-byte payloads, framed by the decoder and then parsed with
//!   `parse_publish_block`: bytes in, entries out, what a connection does.
//! - `parse_publish_block/{1,16}`: the parse alone, on the framed block.
//! - `encode/messages/{1,16,256}`: a `Response::Messages` with that many
//!   64-byte entries written into a reused output buffer.
//!
//! Buffers are built outside the timed part (`iter_batched`), as the socket
//! reads fill them in the node.

use std::hint::black_box;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use criterion::{criterion_group, criterion_main, BatchSize, BenchmarkId, Criterion, Throughput};
use kraken_protocol::{
    message_header, parse_publish_block, BodyLimits, KrakenCodec, Limits, OutMessage, Request,
    Response,
};
use tokio_util::codec::{Decoder, Encoder};

/// The node's default `max_topic_bytes` and `max_topics_per_message`.
const LIMITS: BodyLimits = BodyLimits {
    max_topic_bytes: 1024,
    max_topics_per_message: 10_000,
};
/// Payload size of every entry.
const PAYLOAD_BYTES: usize = 64;
/// Requests in the `get messages` pipeline.
const PIPELINE: usize = 64;

/// Short runs, so that the whole `cargo bench` of both crates takes about a
/// minute; command-line options override these. Runs this short differ by
/// 5-15% (up to 25%) from one to the next on the 2-core development VM, so
/// changes under 5% are reported as noise rather than as a regression.
fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .noise_threshold(0.05)
}

/// A topic shaped like the ones Asana's clients use.
fn topic(i: usize) -> String {
    format!("ws:1234567890:proj:{:010}", 9_876_543_210usize - i)
}

fn payload() -> Vec<u8> {
    (0..PAYLOAD_BYTES).map(|i| b'a' + (i % 26) as u8).collect()
}

/// A publish block of `n` entries, each to its own topic.
fn publish_block(n: usize) -> Vec<u8> {
    let payload = payload();
    let mut block = Vec::new();
    for i in 0..n {
        block.extend_from_slice(format!("MESSAGE {} {}\r\n", topic(i), payload.len()).as_bytes());
        block.extend_from_slice(&payload);
        block.extend_from_slice(b"\r\n");
    }
    block
}

/// `set publish 0 0 <n>\r\n<block>\r\n`.
fn set_publish(block: &[u8]) -> Vec<u8> {
    let mut wire = format!("set publish 0 0 {}\r\n", block.len()).into_bytes();
    wire.extend_from_slice(block);
    wire.extend_from_slice(b"\r\n");
    wire
}

/// Decodes everything in `buf`; returns how many requests it held.
fn decode_all(codec: &mut KrakenCodec, buf: &mut BytesMut) -> usize {
    let mut n = 0;
    while let Some(request) = codec.decode(buf).expect("decoding never fails") {
        black_box(request);
        n += 1;
    }
    n
}

/// Frames one `set publish` and parses its block; returns the entry count.
fn decode_publish(codec: &mut KrakenCodec, buf: &mut BytesMut) -> usize {
    match codec.decode(buf).expect("decoding never fails") {
        Some(Request::Set { data, .. }) => parse_publish_block(&data, &LIMITS)
            .expect("a valid block")
            .len(),
        other => panic!("expected a set, got {other:?}"),
    }
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode");

    let pipeline = b"get messages\r\n".repeat(PIPELINE);
    let fresh = || {
        (
            KrakenCodec::new(Limits::default()),
            BytesMut::from(&pipeline[..]),
        )
    };
    let (mut codec, mut buf) = fresh();
    assert_eq!(decode_all(&mut codec, &mut buf), PIPELINE);
    group.throughput(Throughput::Elements(PIPELINE as u64));
    group.bench_function(format!("get_messages_x{PIPELINE}"), |b| {
        b.iter_batched_ref(
            fresh,
            |(codec, buf)| decode_all(codec, buf),
            BatchSize::SmallInput,
        )
    });

    for entries in [1, 16] {
        let wire = set_publish(&publish_block(entries));
        let fresh = || {
            (
                KrakenCodec::new(Limits::default()),
                BytesMut::from(&wire[..]),
            )
        };
        let (mut codec, mut buf) = fresh();
        assert_eq!(decode_publish(&mut codec, &mut buf), entries);
        assert!(buf.is_empty());
        group.throughput(Throughput::Bytes(wire.len() as u64));
        group.bench_with_input(
            BenchmarkId::new("set_publish", entries),
            &entries,
            |b, _| {
                b.iter_batched_ref(
                    fresh,
                    |(codec, buf)| decode_publish(codec, buf),
                    BatchSize::SmallInput,
                )
            },
        );
    }
    group.finish();
}

fn parse(c: &mut Criterion) {
    let mut group = c.benchmark_group("parse_publish_block");
    for entries in [1, 16] {
        let block = Bytes::from(publish_block(entries));
        assert_eq!(
            parse_publish_block(&block, &LIMITS).map(|e| e.len()),
            Ok(entries)
        );
        group.throughput(Throughput::Elements(entries as u64));
        group.bench_with_input(BenchmarkId::from_parameter(entries), &block, |b, block| {
            b.iter(|| parse_publish_block(black_box(block), &LIMITS))
        });
    }
    group.finish();
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode");
    let payload = Bytes::from(payload());
    for entries in [1, 16, 256] {
        // As the router queues them: headers and payloads are shared Bytes.
        let messages: Vec<OutMessage> = (0..entries)
            .map(|i| OutMessage {
                header: message_header(&[topic(i % 16).as_bytes()], payload.len()),
                payload: payload.clone(),
            })
            .collect();
        let mut codec = KrakenCodec::new(Limits::default());
        // The connection's output buffer is reused from poll to poll.
        let mut out = BytesMut::with_capacity(64 * 1024);
        codec
            .encode(Response::Messages(messages.clone()), &mut out)
            .expect("encoding never fails");
        assert!(out.starts_with(b"VALUE messages 0 ") && out.ends_with(b"END\r\n"));
        out.clear();
        group.throughput(Throughput::Elements(entries as u64));
        group.bench_with_input(BenchmarkId::new("messages", entries), &entries, |b, _| {
            b.iter_batched(
                || messages.clone(),
                |messages| {
                    codec
                        .encode(Response::Messages(messages), &mut out)
                        .expect("encoding never fails");
                    black_box(&out);
                    out.clear();
                },
                BatchSize::SmallInput,
            )
        });
    }
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = decode, parse, encode
}
criterion_main!(benches);
