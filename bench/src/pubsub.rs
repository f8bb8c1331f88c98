//! Publishers and polling subscribers with correctness accounting, shared by
//! the `fanout` and `mixed` scenarios, and the run-phase signal.

use crate::common::{self, Audience, Tracker};
use crate::proto::{self, Reply, ReplyReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{sleep_until, timeout, timeout_at, Instant};

/// What the load is doing; sent to every task through a `watch`.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Phase {
    /// Connecting and subscribing.
    Setup,
    /// The load runs from this instant.
    Running(Instant),
    /// Publishers have stopped and been answered: subscribers drain.
    Draining,
    /// Give up (setup failed).
    Stop,
}

/// Wait until the phase leaves `Setup`; `None` if the sender is gone.
pub async fn await_start(rx: &mut watch::Receiver<Phase>) -> Option<Phase> {
    loop {
        let p = *rx.borrow_and_update();
        if p != Phase::Setup {
            return Some(p);
        }
        rx.changed().await.ok()?;
    }
}

/// Collect up to `n` setup reports until `deadline`, then close the channel
/// so that a task reporting later learns it is not counted (its send fails)
/// and leaves.
pub async fn collect_ready<T>(rx: &mut mpsc::Receiver<T>, n: usize, deadline: Instant) -> Vec<T> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match timeout_at(deadline, rx.recv()).await {
            Ok(Some(x)) => got.push(x),
            _ => break,
        }
    }
    rx.close();
    while let Ok(x) = rx.try_recv() {
        got.push(x);
    }
    got
}

/// Setup report of one connection: its index and the outcome.
pub type Ready = (usize, Result<(), String>);

/// Reports connection `i`'s set-up through `ready` and waits for the load to
/// start: the connection and the start instant, or `None` when set-up
/// failed (reported through `ready`, not as a run error), the run no
/// longer counts this connection, or it ended before starting.
pub async fn report_and_await_start<T>(
    i: usize,
    setup: Result<T, String>,
    ready: mpsc::Sender<Ready>,
    phase: &mut watch::Receiver<Phase>,
) -> Option<(T, Instant)> {
    let conn = match setup {
        Ok(conn) => conn,
        Err(e) => {
            let _ = ready.send((i, Err(e))).await;
            return None;
        }
    };
    ready.send((i, Ok(()))).await.ok()?;
    drop(ready);
    match await_start(phase).await {
        Some(Phase::Running(start)) => Some((conn, start)),
        _ => None,
    }
}

/// Abort the tasks that did not report in time (still connecting or
/// subscribing): they are not counted, and must not hold the run up.
pub fn abort_unreported<T>(handles: &[tokio::task::JoinHandle<T>], ready: &[Ready]) {
    let mut reported = vec![false; handles.len()];
    for (i, _) in ready {
        if let Some(r) = reported.get_mut(*i) {
            *r = true;
        }
    }
    for (h, r) in handles.iter().zip(reported) {
        if !r {
            h.abort();
        }
    }
}

/// Connect and send one subscribe of `topics`; the reader and stream halves.
pub async fn connect_subscribed(
    addr: SocketAddr,
    source: Option<Ipv4Addr>,
    topics: &[String],
    buf_capacity: usize,
) -> Result<ReplyReader<tokio::net::TcpStream>, String> {
    let stream = common::connect(addr, source)
        .await
        .map_err(|e| format!("connect: {e}"))?;
    let mut r = ReplyReader::new(stream, buf_capacity);
    if !topics.is_empty() {
        let mut req = Vec::new();
        proto::push_topics(&mut req, "subscribe", topics);
        r.get_mut()
            .write_all(&req)
            .await
            .map_err(|e| format!("subscribe write: {e}"))?;
        match r.reply().await {
            Ok(Reply::Stored) => {}
            Ok(other) => return Err(format!("subscribe answered {}", other.describe())),
            Err(e) => return Err(format!("subscribe: {e}")),
        }
    }
    Ok(r)
}

pub struct SubSpec {
    pub addr: SocketAddr,
    pub source: Option<Ipv4Addr>,
    pub topics: Vec<String>,
    /// None: poll in a tight loop; else poll every interval (jittered start).
    pub interval: Option<Duration>,
    pub jitter_seed: u64,
    pub size: usize,
    pub publishers: u32,
    pub connect_timeout: Duration,
    /// Time after the start by which the task gives up whatever happens.
    pub hard_after_start: Duration,
    pub drain_max: Duration,
}

pub struct SubResult {
    pub tracker: Tracker,
    pub error: Option<String>,
}

/// One subscriber: connect, subscribe, report, poll until drained.
pub async fn subscriber(
    idx: usize,
    spec: SubSpec,
    connect_gate: Arc<Semaphore>,
    ready: mpsc::Sender<Ready>,
    mut phase: watch::Receiver<Phase>,
) -> SubResult {
    let mut tracker = Tracker::default();
    let setup = async {
        let _permit = connect_gate.acquire().await;
        timeout(
            spec.connect_timeout,
            connect_subscribed(spec.addr, spec.source, &spec.topics, 16 * 1024),
        )
        .await
        .unwrap_or_else(|_| Err("connect/subscribe timed out".into()))
    };
    let mut reader = match setup.await {
        Ok(r) => {
            if ready.send((idx, Ok(()))).await.is_err() {
                return SubResult {
                    tracker,
                    error: Some("ready too late".into()),
                };
            }
            r
        }
        Err(e) => {
            let _ = ready.send((idx, Err(e.clone()))).await;
            return SubResult {
                tracker,
                error: Some(e),
            };
        }
    };
    drop(ready);
    let Some(Phase::Running(start)) = await_start(&mut phase).await else {
        return SubResult {
            tracker,
            error: None,
        };
    };
    let hard = start + spec.hard_after_start;
    let res = timeout_at(
        hard,
        poll_loop(&mut reader, &spec, start, &mut phase, &mut tracker),
    )
    .await;
    let error = match res {
        Ok(Ok(())) => None,
        Ok(Err(e)) => Some(e),
        Err(_) => Some("stopped at the hard deadline".into()),
    };
    SubResult { tracker, error }
}

async fn poll_loop(
    reader: &mut ReplyReader<tokio::net::TcpStream>,
    spec: &SubSpec,
    start: Instant,
    phase: &mut watch::Receiver<Phase>,
    t: &mut Tracker,
) -> Result<(), String> {
    let mut rng = common::Rng::new(spec.jitter_seed);
    let mut next_poll = match spec.interval {
        Some(i) => start + i.mul_f64(rng.unit()),
        None => start,
    };
    let mut drain_deadline: Option<Instant> = None;
    let mut consecutive_empty = 0u32;
    loop {
        let p = *phase.borrow_and_update();
        let in_run = match p {
            Phase::Running(_) => {
                if let Some(i) = spec.interval {
                    if Instant::now() < next_poll {
                        tokio::select! {
                            _ = sleep_until(next_poll) => {}
                            r = phase.changed() => {
                                if r.is_err() {
                                    return Ok(());
                                }
                                continue;
                            }
                        }
                    }
                    next_poll += i;
                }
                true
            }
            Phase::Draining => {
                let dl = *drain_deadline.get_or_insert_with(|| {
                    consecutive_empty = 0;
                    Instant::now() + spec.drain_max
                });
                if consecutive_empty >= 2 || Instant::now() >= dl {
                    return Ok(());
                }
                false
            }
            Phase::Setup | Phase::Stop => return Ok(()),
        };
        reader
            .get_mut()
            .write_all(proto::GET_MESSAGES)
            .await
            .map_err(|e| format!("poll write: {e}"))?;
        let reply = reader
            .reply()
            .await
            .map_err(|e| format!("poll read: {e}"))?;
        let now = common::now_ns();
        t.polls += 1;
        match reply {
            Reply::End => {
                t.empty_polls += 1;
                consecutive_empty += 1;
            }
            Reply::Value(v) => {
                consecutive_empty = 0;
                t.value(&v, now, spec.size, spec.publishers, in_run);
            }
            other => {
                t.bad_replies += 1;
                return Err(format!("poll answered {}", other.describe()));
            }
        }
    }
}

/// Chooses the topics (indices) of message `seq`.
pub type Chooser = Box<dyn FnMut(u64, &mut Vec<usize>) + Send>;

pub struct PubSpec {
    pub id: u32,
    pub addr: SocketAddr,
    pub source: Option<Ipv4Addr>,
    pub inflight: usize,
    pub batch: usize,
    pub size: usize,
    /// Publish requests per second for this publisher; 0 = unpaced.
    pub rate: f64,
    pub topic_names: Arc<Vec<String>>,
    pub audience: Arc<Audience>,
    pub chooser: Chooser,
    pub duration: Duration,
    /// How long after the end outstanding answers are waited for.
    pub answer_grace: Duration,
    pub connect_timeout: Duration,
}

#[derive(Default, Debug)]
pub struct PubResult {
    pub requests_sent: u64,
    pub messages_sent: u64,
    pub requests_accepted: u64,
    pub messages_accepted: u64,
    /// Sum over accepted messages of the subscribers holding any of its topics.
    pub expected_deliveries: u64,
    pub error_replies: u64,
    pub error: Option<String>,
}

#[derive(Default)]
struct Answers {
    requests_accepted: u64,
    messages_accepted: u64,
    expected: u64,
    error_replies: u64,
    error: Option<String>,
}

pub async fn publisher(
    mut spec: PubSpec,
    ready: mpsc::Sender<Ready>,
    mut phase: watch::Receiver<Phase>,
) -> PubResult {
    let mut res = PubResult::default();
    let idx = spec.id as usize;
    let stream = match timeout(
        spec.connect_timeout,
        common::connect(spec.addr, spec.source),
    )
    .await
    {
        Ok(Ok(s)) => s,
        Ok(Err(e)) => {
            let e = format!("connect: {e}");
            let _ = ready.send((idx, Err(e.clone()))).await;
            res.error = Some(e);
            return res;
        }
        Err(_) => {
            let e = "connect timed out".to_string();
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
    let end = start + spec.duration;
    let hard = end + spec.answer_grace;

    let (rd, mut wr) = stream.into_split();
    let permits = Arc::new(Semaphore::new(spec.inflight));
    let (ptx, mut prx) = mpsc::unbounded_channel::<(u64, u64)>();
    let reader_permits = permits.clone();
    let reader = tokio::spawn(async move {
        let mut a = Answers::default();
        let mut r = ReplyReader::new(rd, 4096);
        let body = async {
            while let Some((msgs, expected)) = prx.recv().await {
                match r.reply().await {
                    Ok(Reply::Stored) => {
                        a.requests_accepted += 1;
                        a.messages_accepted += msgs;
                        a.expected += expected;
                    }
                    Ok(other) => {
                        a.error_replies += 1;
                        if a.error.is_none() {
                            a.error = Some(format!("publish answered {}", other.describe()));
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
            a.error = Some("publish answers still missing at the deadline".into());
        }
        a
    });

    let mut pacer = common::Pacer::new(spec.rate, start);
    let mut seq = 0u64;
    let mut buf = Vec::with_capacity(spec.inflight * spec.batch * (spec.size + 64));
    let mut block = Vec::with_capacity(spec.batch * (spec.size + 64));
    let mut payload = vec![b'x'; spec.size];
    let mut topics = Vec::new();
    let mut scratch = Vec::new();
    let mut write_error = None;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if pacer.wait(now, end).await {
            continue;
        }
        match timeout_at(end, permits.acquire()).await {
            Ok(Ok(p)) => p.forget(),
            _ => break,
        }
        let mut n = 1;
        let now = Instant::now();
        while n < spec.inflight && pacer.allows(n, now) {
            match permits.try_acquire() {
                Ok(p) => {
                    p.forget();
                    n += 1;
                }
                Err(_) => break,
            }
        }
        buf.clear();
        let ts = common::now_ns();
        for _ in 0..n {
            block.clear();
            let mut expected = 0;
            for _ in 0..spec.batch {
                (spec.chooser)(seq, &mut topics);
                expected += spec.audience.count(&topics, &mut scratch);
                common::write_header(&mut payload, spec.id, seq, ts);
                let names = topics.iter().map(|&t| spec.topic_names[t].as_bytes());
                proto::push_entry(&mut block, names, &payload);
                seq += 1;
            }
            proto::push_set(&mut buf, "publish", &block);
            let _ = ptx.send((spec.batch as u64, expected));
        }
        res.requests_sent += n as u64;
        res.messages_sent += (n * spec.batch) as u64;
        pacer.sent(n);
        if let Err(e) = crate::common::write_publishes(&mut wr, &buf, hard).await {
            write_error = Some(e);
            break;
        }
    }
    drop(ptx);
    let answers = match timeout_at(hard + Duration::from_secs(1), reader).await {
        Ok(Ok(a)) => a,
        _ => Answers {
            error: Some("publish reader lost".into()),
            ..Answers::default()
        },
    };
    let _ = wr.shutdown().await;
    res.requests_accepted = answers.requests_accepted;
    res.messages_accepted = answers.messages_accepted;
    res.expected_deliveries = answers.expected;
    res.error_replies = answers.error_replies;
    res.error = write_error.or(answers.error);
    res
}

/// A publish/subscribe load: who subscribes to what, who publishes how.
pub struct Plan {
    /// Per subscriber, the indices of its topics.
    pub sub_topics: Vec<Vec<usize>>,
    pub topic_names: Arc<Vec<String>>,
    /// None: tight polling loop.
    pub interval: Option<Duration>,
    pub publishers: usize,
    pub inflight: usize,
    pub batch: usize,
    pub size: usize,
    /// Publish requests per second over all publishers; 0 = unpaced.
    pub rate_total: f64,
    pub make_chooser: Box<dyn Fn(u32) -> Chooser>,
    /// Take a server reading every second while the load runs.
    pub sample_each_second: bool,
    pub drain_max: Duration,
}

pub struct Outcome {
    pub subscribers_ok: usize,
    pub publishers_ok: usize,
    pub sub: Tracker,
    pub publ: PubResult,
    pub errors: Vec<String>,
    pub snap_start: crate::sys::Snapshot,
    pub snap_connected: crate::sys::Snapshot,
    pub snap_run_end: crate::sys::Snapshot,
    pub drain_secs: f64,
    /// (server RSS KiB, server cores busy) per second of load.
    pub samples: Vec<(Option<u64>, Option<f64>)>,
    /// Publish requests per second offered (0 = unpaced).
    pub offered_rate: f64,
}

fn note_error(errors: &mut Vec<String>, what: &str, e: &str) {
    if errors.len() < 5 {
        errors.push(format!("{what}: {e}"));
    }
}

pub async fn run_load(ctx: &crate::Ctx, plan: Plan) -> Outcome {
    use crate::sys::snapshot;
    let pid = ctx.server_pid;
    let snap_start = snapshot(pid);
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let gate = Arc::new(Semaphore::new(ctx.connect_concurrency));
    let grace = Duration::from_secs(5);
    let hard_after_start = ctx.duration + grace + plan.drain_max + Duration::from_secs(5);
    let mut errors = Vec::new();

    // Subscribers first: all subscribed before anything is published.
    let n = plan.sub_topics.len();
    let (rtx, mut rrx) = mpsc::channel::<Ready>(n.max(1));
    let mut subs = Vec::with_capacity(n);
    for (i, topics) in plan.sub_topics.iter().enumerate() {
        let spec = SubSpec {
            addr: ctx.addr,
            source: common::source_ip(i, ctx.source_ips),
            topics: topics
                .iter()
                .map(|&t| plan.topic_names[t].clone())
                .collect(),
            interval: plan.interval,
            jitter_seed: ctx.seed.wrapping_mul(1_000_003).wrapping_add(i as u64),
            size: plan.size,
            publishers: plan.publishers as u32,
            connect_timeout: ctx.connect_timeout,
            hard_after_start,
            drain_max: plan.drain_max,
        };
        subs.push(tokio::spawn(subscriber(
            i,
            spec,
            gate.clone(),
            rtx.clone(),
            phase_rx.clone(),
        )));
    }
    drop(rtx);
    let setup_deadline =
        Instant::now() + ctx.connect_timeout * 2 + Duration::from_secs(n as u64 / 500);
    let ready = collect_ready(&mut rrx, n, setup_deadline).await;
    abort_unreported(&subs, &ready);
    let mut holders: Vec<Vec<u32>> = vec![Vec::new(); plan.topic_names.len()];
    let mut subscribers_ok = 0;
    for (i, r) in &ready {
        match r {
            Ok(()) => {
                subscribers_ok += 1;
                for &t in &plan.sub_topics[*i] {
                    holders[t].push(*i as u32);
                }
            }
            Err(e) => note_error(&mut errors, "subscriber", e),
        }
    }
    if ready.len() < n {
        note_error(
            &mut errors,
            "subscriber",
            &format!("{} never finished setting up", n - ready.len()),
        );
    }
    for h in &mut holders {
        h.sort_unstable();
    }
    let audience = Arc::new(Audience { subs: holders });

    // Then the publishers.
    let (ptx, mut prx) = mpsc::channel::<Ready>(plan.publishers.max(1));
    let mut pubs = Vec::with_capacity(plan.publishers);
    for p in 0..plan.publishers {
        let spec = PubSpec {
            id: p as u32,
            addr: ctx.addr,
            source: common::source_ip(n + p, ctx.source_ips),
            inflight: plan.inflight,
            batch: plan.batch,
            size: plan.size,
            rate: plan.rate_total / plan.publishers as f64,
            topic_names: plan.topic_names.clone(),
            audience: audience.clone(),
            chooser: (plan.make_chooser)(p as u32),
            duration: ctx.duration,
            answer_grace: grace,
            connect_timeout: ctx.connect_timeout,
        };
        pubs.push(tokio::spawn(publisher(spec, ptx.clone(), phase_rx.clone())));
    }
    drop(ptx);
    let ready = collect_ready(
        &mut prx,
        plan.publishers,
        Instant::now() + ctx.connect_timeout * 2,
    )
    .await;
    abort_unreported(&pubs, &ready);
    let mut publishers_ok = 0;
    for (_, r) in &ready {
        match r {
            Ok(()) => publishers_ok += 1,
            Err(e) => note_error(&mut errors, "publisher", e),
        }
    }

    let snap_connected = snapshot(pid);
    let mut samples = Vec::new();
    let go = subscribers_ok + publishers_ok > 0;
    let start = Instant::now();
    let _ = phase_tx.send(if go {
        Phase::Running(start)
    } else {
        Phase::Stop
    });
    if go {
        // Per-second readings while the load runs.
        let end = start + ctx.duration;
        let mut prev = snap_connected;
        let mut tick = start + Duration::from_secs(1);
        while plan.sample_each_second && tick <= end {
            sleep_until(tick).await;
            let s = snapshot(pid);
            let cores = crate::sys::span(&prev, &s);
            samples.push((s.server_rss_kib, cores.server_cpu.map(|c| c / cores.wall)));
            prev = s;
            tick += Duration::from_secs(1);
        }
        sleep_until(end).await;
    }
    let mut publ = PubResult::default();
    for h in pubs {
        match h.await {
            Ok(r) => {
                publ.requests_sent += r.requests_sent;
                publ.messages_sent += r.messages_sent;
                publ.requests_accepted += r.requests_accepted;
                publ.messages_accepted += r.messages_accepted;
                publ.expected_deliveries += r.expected_deliveries;
                publ.error_replies += r.error_replies;
                if let Some(e) = r.error {
                    note_error(&mut errors, "publisher", &e);
                }
            }
            Err(e) => note_error(&mut errors, "publisher", &e.to_string()),
        }
    }
    let snap_run_end = snapshot(pid);
    let drain_start = Instant::now();
    let _ = phase_tx.send(Phase::Draining);
    let mut sub = Tracker::default();
    for h in subs {
        match h.await {
            Ok(r) => {
                sub.merge(&r.tracker);
                if let Some(e) = r.error {
                    if e != "ready too late" {
                        note_error(&mut errors, "subscriber", &e);
                    }
                }
            }
            Err(e) => note_error(&mut errors, "subscriber", &e.to_string()),
        }
    }
    Outcome {
        subscribers_ok,
        publishers_ok,
        sub,
        publ,
        errors,
        snap_start,
        snap_connected,
        snap_run_end,
        drain_secs: drain_start.elapsed().as_secs_f64(),
        samples,
        offered_rate: plan.rate_total,
    }
}

/// The figures common to `fanout` and `mixed`.
pub fn report_outcome(ctx: &crate::Ctx, o: &Outcome, r: &mut crate::report::Report) {
    let span = crate::sys::span(&o.snap_connected, &o.snap_run_end);
    let wall = span.wall.max(1e-9);
    r.int(
        "subscribers_connected",
        o.subscribers_ok as i64,
        "subscribers that connected and subscribed",
    );
    r.int(
        "publishers_connected",
        o.publishers_ok as i64,
        "publishers that connected",
    );
    r.float(
        "run_s",
        span.wall,
        "s, from the start signal until every publisher was answered",
    );
    r.float(
        "publishes_per_s",
        o.publ.messages_accepted as f64 / wall,
        "messages accepted (STORED) per second",
    );
    r.float(
        "publish_requests_per_s",
        o.publ.requests_accepted as f64 / wall,
        "publish requests accepted per second",
    );
    r.float(
        "deliveries_per_s",
        o.sub.entries_in_run as f64 / wall,
        "entries received by subscribers per second while publishing",
    );
    r.int(
        "messages_sent",
        o.publ.messages_sent as i64,
        "messages written by publishers",
    );
    r.int(
        "messages_accepted",
        o.publ.messages_accepted as i64,
        "messages answered STORED",
    );
    r.int(
        "publish_error_replies",
        o.publ.error_replies as i64,
        "publish requests answered other than STORED",
    );
    r.int(
        "expected_deliveries",
        o.publ.expected_deliveries as i64,
        "sum over accepted messages of their subscribers",
    );
    r.int(
        "deliveries",
        o.sub.entries as i64,
        "entries received, duplicates included, drain included",
    );
    r.int(
        "unique_deliveries",
        o.sub.unique as i64,
        "distinct (subscriber, message) pairs received",
    );
    r.int(
        "lost",
        o.publ.expected_deliveries as i64 - o.sub.unique as i64,
        "expected - unique deliveries, after the drain (negative: unexpected extra)",
    );
    r.float(
        "loss_ratio",
        if o.publ.expected_deliveries > 0 {
            (o.publ.expected_deliveries as f64 - o.sub.unique as f64)
                / o.publ.expected_deliveries as f64
        } else {
            0.0
        },
        "lost / expected",
    );
    r.int(
        "duplicates",
        o.sub.duplicates as i64,
        "entries of a message the subscriber already had",
    );
    r.int(
        "ordering_violations",
        o.sub.ordering_violations as i64,
        "entries older than one already seen from the same publisher on the same topic",
    );
    r.int(
        "unclassifiable_old",
        o.sub.too_old as i64,
        "entries >65536 sequence numbers late (not checked for duplication)",
    );
    r.int(
        "bad_payloads",
        o.sub.bad_payload as i64,
        "entries whose payload was not one of ours",
    );
    r.int(
        "bad_replies",
        o.sub.bad_replies as i64,
        "poll replies that could not be parsed",
    );
    r.int(
        "polls",
        o.sub.polls as i64,
        "get messages requests answered",
    );
    r.int(
        "empty_polls",
        o.sub.empty_polls as i64,
        "polls answered END",
    );
    r.float(
        "drain_s",
        o.drain_secs,
        "s, until every subscriber had 2 empty polls in a row (cap)",
    );
    r.latency("latency", &o.sub.hist, "publish write -> poll read");
    r.cpu(&span, Some(o.sub.entries_in_run), ctx.threads);
    r.rss(
        &o.snap_start,
        &o.snap_connected,
        &o.snap_run_end,
        (o.subscribers_ok + o.publishers_ok) as u64,
    );
    for e in &o.errors {
        r.warnings.push(e.clone());
    }
    if o.publ.expected_deliveries != o.sub.unique {
        r.warnings.push(format!(
            "{} deliveries missing (expected {}, got {} distinct)",
            o.publ.expected_deliveries as i64 - o.sub.unique as i64,
            o.publ.expected_deliveries,
            o.sub.unique
        ));
    }
    let achieved = o.publ.requests_accepted as f64 / ctx.duration.as_secs_f64();
    if o.publishers_ok > 0 {
        r.warnings.extend(common::Pacer::shortfall(
            o.offered_rate,
            achieved,
            "publish requests",
        ));
    }
    if o.sub.duplicates > 0 || o.sub.ordering_violations > 0 {
        r.warnings.push(format!(
            "{} duplicates and {} ordering violations",
            o.sub.duplicates, o.sub.ordering_violations
        ));
    }
}
