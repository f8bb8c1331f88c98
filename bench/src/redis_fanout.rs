//! `redis-fanout`: the fanout scenario over the Redis protocol (RESP), for
//! any RESP server (redis-server, or a Kraken node's `resp_port`).
//!
//! N subscribers `SUBSCRIBE` one channel and read `message` pushes as they
//! come (no polling); P publishers each keep D `PUBLISH` commands in flight
//! (pipelined), with the same 20-byte payload header as `fanout`
//! (publisher id, sequence number, send time), so loss, duplicates, order
//! and latency (publish write → push read) are accounted the same way.

use crate::args::Args;
use crate::common::{self, Tracker};
use crate::pubsub::{abort_unreported, await_start, collect_ready, Phase, Ready};
use crate::report::Report;
use crate::resp::{push_command, Item, RespReader, Value};
use crate::Ctx;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{timeout, timeout_at, Instant};

pub struct Params {
    subscribers: usize,
    publishers: usize,
    inflight: usize,
    size: usize,
    resp3: bool,
    /// Publishes per second in all (0: unpaced, each publisher as fast as
    /// its in-flight window allows).
    rate: f64,
}

pub fn parse(a: &Args) -> Result<Params, String> {
    let p = Params {
        subscribers: a.get("subscribers", 200)?,
        publishers: a.get("publishers", 2)?,
        inflight: a.get("inflight", 16)?,
        size: a.get("size", 64)?,
        resp3: a.switch("resp3")?,
        rate: a.get("rate", 0.0)?,
    };
    common::Pacer::check(p.rate)?;
    if p.size < common::HEADER {
        return Err(format!(
            "--size must be at least {} (the payload header)",
            common::HEADER
        ));
    }
    if p.publishers == 0 || p.inflight == 0 {
        return Err("--publishers and --inflight must be at least 1".into());
    }
    Ok(p)
}

/// Subscribers end the drain after this long without a message.
const QUIET: Duration = Duration::from_millis(500);
/// ... or after this long whatever happens.
const DRAIN_MAX: Duration = Duration::from_secs(5);
/// How often a waiting subscriber looks at the phase.
const TICK: Duration = Duration::from_millis(50);

async fn connect(ctx: &Ctx, i: usize, resp3: bool) -> Result<RespReader<TcpStream>, String> {
    let stream = common::connect(ctx.addr, common::source_ip(i, ctx.source_ips))
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_nodelay(true);
    let mut r = RespReader::new(stream, 64 * 1024);
    if resp3 {
        r.get_mut()
            .write_all(b"*2\r\n$5\r\nHELLO\r\n$1\r\n3\r\n")
            .await
            .map_err(|e| format!("HELLO write: {e}"))?;
        match r.value().await? {
            Value::Map(_) => {}
            other => return Err(format!("HELLO 3 answered {}", other.describe())),
        }
    }
    Ok(r)
}

async fn subscribe(
    ctx: &Ctx,
    i: usize,
    channel: &[u8],
    resp3: bool,
) -> Result<RespReader<TcpStream>, String> {
    let mut r = connect(ctx, i, resp3).await?;
    let mut req = Vec::new();
    push_command(&mut req, &[b"SUBSCRIBE", channel]);
    r.get_mut()
        .write_all(&req)
        .await
        .map_err(|e| format!("subscribe write: {e}"))?;
    let v = r.value().await?;
    if !v.is_subscribe_confirmation(channel) {
        return Err(format!("SUBSCRIBE answered {}", v.describe()));
    }
    Ok(r)
}

struct SubResult {
    tracker: Tracker,
    error: Option<String>,
}

#[allow(clippy::too_many_arguments)]
async fn subscriber(
    ctx: Ctx,
    i: usize,
    channel: Arc<Vec<u8>>,
    p: Arc<Params>,
    gate: Arc<Semaphore>,
    ready: mpsc::Sender<Ready>,
    mut phase: watch::Receiver<Phase>,
) -> SubResult {
    let mut tracker = Tracker::default();
    let setup = async {
        let _permit = gate.acquire().await;
        timeout(ctx.connect_timeout, subscribe(&ctx, i, &channel, p.resp3))
            .await
            .unwrap_or_else(|_| Err("connect/subscribe timed out".into()))
    };
    let mut r = match setup.await {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send((i, Err(e.clone()))).await;
            return SubResult {
                tracker,
                error: Some(e),
            };
        }
    };
    if ready.send((i, Ok(()))).await.is_err() {
        return SubResult {
            tracker,
            error: Some("ready too late".into()),
        };
    }
    drop(ready);
    let Some(Phase::Running(start)) = await_start(&mut phase).await else {
        return SubResult {
            tracker,
            error: None,
        };
    };
    let hard = start + ctx.duration + Duration::from_secs(10) + DRAIN_MAX;
    let publishers = p.publishers as u32;
    let mut drain_end: Option<Instant> = None;
    let mut last_message = Instant::now();
    let error = loop {
        let now = Instant::now();
        let in_run = matches!(*phase.borrow(), Phase::Running(_));
        if !in_run {
            let end = *drain_end.get_or_insert(now + DRAIN_MAX);
            if now >= end || now.duration_since(last_message) >= QUIET || now >= hard {
                break None;
            }
        } else if now >= hard {
            break Some("stopped at the hard deadline".to_string());
        }
        // Everything one read brought is taken with one look at the clock:
        // it arrived together, and the clock is not cheap on a VM.
        let now_ns = common::now_ns();
        let mut took = false;
        let failed = loop {
            match r.next_buffered() {
                Ok(None) => break None,
                Err(e) => break Some(e),
                Ok(Some(Item::Message {
                    channel: ch,
                    payload,
                })) => {
                    took = true;
                    tracker.entry(
                        payload,
                        std::iter::once(ch),
                        now_ns,
                        p.size,
                        publishers,
                        in_run,
                    );
                }
                Ok(Some(Item::Value(v))) => {
                    tracker.bad_replies += 1;
                    break Some(format!("unexpected {}", v.describe()));
                }
            }
        };
        if failed.is_some() {
            break failed;
        }
        if took {
            last_message = now;
        }
        match timeout(TICK, r.read_more()).await {
            Err(_) => continue,
            Ok(Err(e)) => break Some(e),
            Ok(Ok(())) => {}
        }
    };
    SubResult { tracker, error }
}

#[derive(Default)]
struct PubResult {
    sent: u64,
    accepted: u64,
    /// Sum of PUBLISH's answers: the receivers the server counted.
    receivers: u64,
    error_replies: u64,
    error: Option<String>,
}

async fn publisher(
    ctx: Ctx,
    id: u32,
    channel: Arc<Vec<u8>>,
    p: Arc<Params>,
    ready: mpsc::Sender<Ready>,
    mut phase: watch::Receiver<Phase>,
) -> PubResult {
    let mut res = PubResult::default();
    let idx = id as usize;
    let conn = timeout(
        ctx.connect_timeout,
        connect(&ctx, p.subscribers + idx, false),
    )
    .await
    .unwrap_or_else(|_| Err("connect timed out".into()));
    let r = match conn {
        Ok(r) => r,
        Err(e) => {
            let _ = ready.send((idx, Err(e.clone()))).await;
            res.error = Some(e);
            return res;
        }
    };
    if ready.send((idx, Ok(()))).await.is_err() {
        res.error = Some("ready too late".into());
        return res;
    }
    drop(ready);
    let Some(Phase::Running(start)) = await_start(&mut phase).await else {
        return res;
    };
    let end = start + ctx.duration;
    let hard = end + Duration::from_secs(5);
    let stream = r.into_inner();
    let (rd, mut wr) = stream.into_split();
    let permits = Arc::new(Semaphore::new(p.inflight));
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let reader_permits = permits.clone();
    let reader = tokio::spawn(async move {
        let mut a = PubResult::default();
        let mut r = RespReader::new(rd, 4096);
        let body = async {
            while rx.recv().await.is_some() {
                match r.value().await {
                    Ok(Value::Int(n)) => {
                        a.accepted += 1;
                        a.receivers += n.max(0) as u64;
                    }
                    Ok(other) => {
                        a.error_replies += 1;
                        if a.error.is_none() {
                            a.error = Some(format!("PUBLISH answered {}", other.describe()));
                        }
                    }
                    Err(e) => {
                        a.error = Some(format!("publish read: {e}"));
                        return;
                    }
                }
                reader_permits.add_permits(1);
            }
        };
        if timeout_at(hard, body).await.is_err() && a.error.is_none() {
            a.error = Some("PUBLISH answers still missing at the deadline".into());
        }
        a
    });
    let mut seq = 0u64;
    let mut payload = vec![b'x'; p.size];
    let mut buf = Vec::with_capacity(p.inflight * (p.size + 64));
    let mut write_error = None;
    let mut pacer = common::Pacer::new(p.rate / p.publishers as f64, start);
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if pacer.wait(now, end).await {
            continue;
        }
        match timeout_at(end, permits.acquire()).await {
            Ok(Ok(permit)) => permit.forget(),
            _ => break,
        }
        let mut n = 1;
        let now = Instant::now();
        while n < p.inflight && pacer.allows(n, now) {
            match permits.try_acquire() {
                Ok(permit) => {
                    permit.forget();
                    n += 1;
                }
                Err(_) => break,
            }
        }
        buf.clear();
        let ts = common::now_ns();
        for _ in 0..n {
            common::write_header(&mut payload, id, seq, ts);
            push_command(&mut buf, &[b"PUBLISH", &channel, &payload]);
            seq += 1;
            let _ = tx.send(());
        }
        res.sent += n as u64;
        pacer.sent(n);
        if let Err(e) = crate::common::write_publishes(&mut wr, &buf, hard).await {
            write_error = Some(e);
            break;
        }
    }
    drop(tx);
    let a = match timeout_at(hard + Duration::from_secs(1), reader).await {
        Ok(Ok(a)) => a,
        _ => PubResult {
            error: Some("publish reader lost".into()),
            ..PubResult::default()
        },
    };
    let _ = wr.shutdown().await;
    res.accepted = a.accepted;
    res.receivers = a.receivers;
    res.error_replies = a.error_replies;
    res.error = write_error.or(a.error);
    res
}

fn note(errors: &mut Vec<String>, what: &str, e: &str) {
    if errors.len() < 5 {
        errors.push(format!("{what}: {e}"));
    }
}

pub async fn run(ctx: &Ctx, p: Params) -> (Report, bool) {
    use crate::sys::{snapshot, span};
    let p = Arc::new(p);
    let channel = Arc::new(format!("{}redisfan", ctx.prefix).into_bytes());
    let snap_start = snapshot(ctx.server_pid);
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let gate = Arc::new(Semaphore::new(ctx.connect_concurrency));
    let mut errors = Vec::new();

    let n = p.subscribers;
    let (rtx, mut rrx) = mpsc::channel::<Ready>(n.max(1));
    let subs: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(subscriber(
                ctx.clone(),
                i,
                channel.clone(),
                p.clone(),
                gate.clone(),
                rtx.clone(),
                phase_rx.clone(),
            ))
        })
        .collect();
    drop(rtx);
    let deadline = Instant::now() + ctx.connect_timeout * 2 + Duration::from_secs(n as u64 / 500);
    let ready = collect_ready(&mut rrx, n, deadline).await;
    abort_unreported(&subs, &ready);
    let mut subscribers_ok = 0u64;
    for (_, r) in &ready {
        match r {
            Ok(()) => subscribers_ok += 1,
            Err(e) => note(&mut errors, "subscriber", e),
        }
    }
    if ready.len() < n {
        note(
            &mut errors,
            "subscriber",
            &format!("{} never finished setting up", n - ready.len()),
        );
    }

    let (ptx, mut prx) = mpsc::channel::<Ready>(p.publishers.max(1));
    let pubs: Vec<_> = (0..p.publishers)
        .map(|i| {
            tokio::spawn(publisher(
                ctx.clone(),
                i as u32,
                channel.clone(),
                p.clone(),
                ptx.clone(),
                phase_rx.clone(),
            ))
        })
        .collect();
    drop(ptx);
    let ready = collect_ready(
        &mut prx,
        p.publishers,
        Instant::now() + ctx.connect_timeout * 2,
    )
    .await;
    abort_unreported(&pubs, &ready);
    let mut publishers_ok = 0u64;
    for (_, r) in &ready {
        match r {
            Ok(()) => publishers_ok += 1,
            Err(e) => note(&mut errors, "publisher", e),
        }
    }

    let snap_connected = snapshot(ctx.server_pid);
    let go = subscribers_ok + publishers_ok > 0;
    let start = Instant::now();
    let _ = phase_tx.send(if go {
        Phase::Running(start)
    } else {
        Phase::Stop
    });
    if go {
        tokio::time::sleep_until(start + ctx.duration).await;
    }
    let mut publ = PubResult::default();
    for h in pubs {
        match h.await {
            Ok(r) => {
                publ.sent += r.sent;
                publ.accepted += r.accepted;
                publ.receivers += r.receivers;
                publ.error_replies += r.error_replies;
                if let Some(e) = r.error {
                    note(&mut errors, "publisher", &e);
                }
            }
            Err(e) => note(&mut errors, "publisher", &e.to_string()),
        }
    }
    let snap_run_end = snapshot(ctx.server_pid);
    let drain_start = Instant::now();
    let _ = phase_tx.send(Phase::Draining);
    let mut sub = Tracker::default();
    for h in subs {
        match h.await {
            Ok(r) => {
                sub.merge(&r.tracker);
                if let Some(e) = r.error {
                    if e != "ready too late" {
                        note(&mut errors, "subscriber", &e);
                    }
                }
            }
            Err(e) => note(&mut errors, "subscriber", &e.to_string()),
        }
    }
    let drain_s = drain_start.elapsed().as_secs_f64();

    let mut r = Report::new(format!(
        "kraken-bench redis-fanout on {}: {} subscribers on one channel ({}), {} publishers x {} \
         PUBLISH in flight, {} B messages, rate {}, {} s",
        ctx.addr,
        p.subscribers,
        if p.resp3 { "RESP3" } else { "RESP2" },
        p.publishers,
        p.inflight,
        p.size,
        if p.rate > 0.0 {
            format!("{} publishes/s", p.rate)
        } else {
            "unpaced".into()
        },
        ctx.duration.as_secs_f64()
    ));
    let expected = publ.accepted * subscribers_ok;
    let cpu = span(&snap_connected, &snap_run_end);
    let wall = cpu.wall.max(1e-9);
    r.str("scenario", "redis-fanout", "");
    r.int(
        "subscribers_connected",
        subscribers_ok as i64,
        "subscribers that connected and subscribed",
    );
    r.int(
        "publishers_connected",
        publishers_ok as i64,
        "publishers that connected",
    );
    r.float(
        "run_s",
        cpu.wall,
        "s, from the start signal until every publisher was answered",
    );
    r.float(
        "publishes_per_s",
        publ.accepted as f64 / wall,
        "PUBLISH answered with an integer, per second",
    );
    r.float(
        "deliveries_per_s",
        sub.entries_in_run as f64 / wall,
        "message pushes received by subscribers per second while publishing",
    );
    r.int(
        "messages_sent",
        publ.sent as i64,
        "PUBLISH commands written",
    );
    r.int(
        "messages_accepted",
        publ.accepted as i64,
        "PUBLISH answered with an integer",
    );
    r.int(
        "publish_error_replies",
        publ.error_replies as i64,
        "PUBLISH answered otherwise",
    );
    r.int(
        "server_counted_receivers",
        publ.receivers as i64,
        "sum of PUBLISH's answers (receivers as the server counted them)",
    );
    r.int(
        "expected_deliveries",
        expected as i64,
        "accepted messages x subscribers connected",
    );
    r.int(
        "deliveries",
        sub.entries as i64,
        "message pushes received, duplicates included, drain included",
    );
    r.int(
        "unique_deliveries",
        sub.unique as i64,
        "distinct (subscriber, message) pairs received",
    );
    r.int(
        "lost",
        expected as i64 - sub.unique as i64,
        "expected - unique deliveries, after the drain (negative: unexpected extra)",
    );
    r.float(
        "loss_ratio",
        if expected > 0 {
            (expected as f64 - sub.unique as f64) / expected as f64
        } else {
            0.0
        },
        "lost / expected",
    );
    r.int(
        "duplicates",
        sub.duplicates as i64,
        "pushes of a message the subscriber already had",
    );
    r.int(
        "ordering_violations",
        sub.ordering_violations as i64,
        "pushes older than one already seen from the same publisher",
    );
    r.int(
        "unclassifiable_old",
        sub.too_old as i64,
        "pushes >65536 sequence numbers late (not checked for duplication)",
    );
    r.int(
        "bad_payloads",
        sub.bad_payload as i64,
        "pushes whose payload was not one of ours",
    );
    r.int(
        "bad_replies",
        sub.bad_replies as i64,
        "subscriber input other than message pushes",
    );
    r.float(
        "drain_s",
        drain_s,
        "s, until every subscriber was quiet for 0.5 s (cap 5 s)",
    );
    r.latency("latency", &sub.hist, "publish write -> push read");
    r.cpu(&cpu, Some(sub.entries_in_run), ctx.threads);
    r.rss(
        &snap_start,
        &snap_connected,
        &snap_run_end,
        subscribers_ok + publishers_ok,
    );
    r.warnings.extend(errors);
    if publishers_ok > 0 {
        let achieved = publ.accepted as f64 / ctx.duration.as_secs_f64();
        r.warnings
            .extend(common::Pacer::shortfall(p.rate, achieved, "publishes"));
    }
    if expected != sub.unique {
        r.warnings.push(format!(
            "{} deliveries missing (expected {expected}, got {} distinct)",
            expected as i64 - sub.unique as i64,
            sub.unique
        ));
    }
    if sub.duplicates > 0 || sub.ordering_violations > 0 {
        r.warnings.push(format!(
            "{} duplicates and {} ordering violations",
            sub.duplicates, sub.ordering_violations
        ));
    }
    (r, subscribers_ok > 0 && publishers_ok > 0)
}
