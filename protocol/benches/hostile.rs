//! Benchmarks of what a hostile client can make the codec do: skip an
//! oversized data block, and parse bodies padded with runs of spaces or
//! naming one topic over and over. Each should run near memory speed.
//!
//! Run: `cargo bench -p kraken-protocol --bench hostile`. The figures in
//! docs/HARDENING.md come from it.
//!
//! What is measured:
//! - `discard/64MiB`: a `set publish` announcing 64 MiB, over the node's
//!   `max_request_bytes`, read through `tokio_util`'s `FramedRead` from an
//!   in-memory reader exactly as a connection reads its socket (a 64-byte
//!   first buffer), until the `version` behind it is decoded. No system
//!   calls, so the per-read overhead the node pays is understated here.
//! - `padded/publish_8MiB`: `parse_publish_block` on one `MESSAGE a <8 MiB
//!   of spaces> b 1` entry.
//! - `padded/subscribe_8MiB`: `parse_topics` on `a <8 MiB of spaces> b`.
//! - `repeated/publish_16MiB`: one entry naming topic `a` about 8 million
//!   times.

use std::hint::black_box;
use std::pin::Pin;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use futures_core::Stream;
use kraken_protocol::{
    parse_publish_block, parse_topics, BodyLimits, KrakenCodec, Limits, Request,
};
use tokio::io::{AsyncRead, ReadBuf};
use tokio_util::codec::FramedRead;

const MIB: usize = 1024 * 1024;

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .sample_size(10)
        .noise_threshold(0.05)
}

/// An in-memory socket that counts the reads made of it (each would be a
/// system call in the node).
struct CountingReader<'a> {
    data: &'a [u8],
    reads: usize,
}

impl AsyncRead for CountingReader<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        self.reads += 1;
        let mut data = self.data;
        let polled = Pin::new(&mut data).poll_read(cx, buf);
        self.data = data;
        polled
    }
}

/// Reads `wire` through a `FramedRead` (first buffer 64 bytes, as the node's
/// connections start); returns how many requests it held and how many
/// reads it took.
fn read_all(wire: &[u8], limits: Limits) -> (usize, usize) {
    let reader = CountingReader {
        data: wire,
        reads: 0,
    };
    let mut framed = FramedRead::with_capacity(reader, KrakenCodec::new(limits), 64);
    let mut cx = Context::from_waker(Waker::noop());
    let mut n = 0;
    loop {
        match Pin::new(&mut framed).poll_next(&mut cx) {
            Poll::Ready(Some(request)) => {
                black_box(request.expect("reading memory never fails"));
                n += 1;
            }
            Poll::Ready(None) => return (n, framed.get_ref().reads),
            Poll::Pending => unreachable!("an in-memory reader is always ready"),
        }
    }
}

fn discard(c: &mut Criterion) {
    let mut group = c.benchmark_group("discard");
    let n = 64 * MIB;
    let mut wire = format!("set publish 0 0 {n}\r\n").into_bytes();
    wire.resize(wire.len() + n, b'x');
    wire.extend_from_slice(b"\r\nversion\r\n");
    let limits = Limits::default();
    assert!(n > limits.max_request_bytes);
    // The refusal, then `version`.
    let (requests, reads) = read_all(&wire, limits);
    assert_eq!(requests, 2);
    println!("discard/64MiB: {reads} reads");
    let mut framed = FramedRead::new(&wire[..], KrakenCodec::new(limits));
    let mut cx = Context::from_waker(Waker::noop());
    assert!(matches!(
        Pin::new(&mut framed).poll_next(&mut cx),
        Poll::Ready(Some(Ok(Request::Invalid(_))))
    ));
    group.throughput(Throughput::Bytes(wire.len() as u64));
    group.bench_function("64MiB", |b| b.iter(|| read_all(&wire, limits)));
    group.finish();
}

fn padded(c: &mut Criterion) {
    let mut group = c.benchmark_group("padded");
    let spaces = " ".repeat(8 * MIB);
    let publish = Bytes::from(format!("MESSAGE a {spaces} b 1\r\nx"));
    assert_eq!(
        parse_publish_block(&publish, &BodyLimits::default()).unwrap()[0]
            .topics
            .len(),
        2
    );
    group.throughput(Throughput::Bytes(publish.len() as u64));
    group.bench_function("publish_8MiB", |b| {
        b.iter(|| parse_publish_block(black_box(&publish), &BodyLimits::default()))
    });
    let subscribe = Bytes::from(format!("a {spaces} b"));
    assert_eq!(parse_topics(&subscribe, 1024).unwrap().len(), 2);
    group.throughput(Throughput::Bytes(subscribe.len() as u64));
    group.bench_function("subscribe_8MiB", |b| {
        b.iter(|| parse_topics(black_box(&subscribe), 1024))
    });
    group.finish();
}

fn repeated(c: &mut Criterion) {
    let mut group = c.benchmark_group("repeated");
    let block = Bytes::from(format!("MESSAGE {}1\r\nx", "a ".repeat(8 * MIB)));
    group.throughput(Throughput::Bytes(block.len() as u64));
    group.bench_function("publish_16MiB", |b| {
        b.iter(|| parse_publish_block(black_box(&block), &BodyLimits::default()).map(|e| e.len()))
    });
    group.finish();
}

criterion_group! {
    name = benches;
    config = config();
    targets = discard, padded, repeated
}
criterion_main!(benches);
