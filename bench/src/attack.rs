//! `attack <kind>`: an honest publisher/subscriber pair measured while one
//! hostile client (or a crowd of them) attacks the node.
//!
//! The honest publisher publishes `--rate` small messages per second to one
//! topic; the honest subscriber polls without pause and records each
//! message's publish → poll latency and any loss. The run has three
//! phases: `--settle` seconds of the pair alone, `--duration` seconds with
//! the attack running, and `--settle` seconds after the attackers left
//! (the node's RSS is read at the end of each; with `--server-pid`, also
//! its peak during the attack). Kinds:
//!
//! - `big-subscribe`: connect, subscribe `--topics` fresh topics in one
//!   request, disconnect; again.
//! - `slowloris`: `--attackers` connections each send all but the last byte
//!   of a `--block`-byte data block, then stay silent.
//! - `never-reads`: `--attackers` connections pipeline `stats` and never
//!   read an answer.
//! - `oversized`: one connection streams data blocks announced at
//!   `--block` bytes, over `max_request_bytes` (reconnecting when closed).
//! - `padded`: publishes whose `MESSAGE` line is padded with `--block`
//!   bytes of spaces.
//! - `repeated-topic`: publishes whose `MESSAGE` line names one topic
//!   `--names` times.

use crate::args::Args;
use crate::common::{self, Tracker, HEADER};
use crate::proto::{self, Reply, ReplyReader};
use crate::report::Report;
use crate::sys::snapshot;
use crate::Ctx;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio::time::{sleep, timeout, Instant};

const KINDS: &[&str] = &[
    "big-subscribe",
    "slowloris",
    "never-reads",
    "oversized",
    "padded",
    "repeated-topic",
];

pub struct Params {
    kind: String,
    rate: u64,
    settle: Duration,
    attackers: usize,
    topics: usize,
    block: usize,
    names: usize,
}

pub fn parse(a: &Args, kind: Option<String>) -> Result<Params, String> {
    let kind = kind.unwrap_or_default();
    if !KINDS.contains(&kind.as_str()) {
        return Err(format!(
            "attack needs a kind, one of: {} (got {kind:?})",
            KINDS.join(", ")
        ));
    }
    let p = Params {
        attackers: a.get("attackers", if kind == "slowloris" { 100 } else { 20 })?,
        block: a.get(
            "block",
            match kind.as_str() {
                "oversized" => 1 << 30,
                "padded" => 15 << 20,
                _ => 16 << 20,
            },
        )?,
        kind,
        rate: a.get("rate", 200)?,
        settle: Duration::from_secs_f64(a.get("settle", 3.0f64)?.max(0.0)),
        topics: a.get("topics", 500_000)?,
        names: a.get("names", 2_000_000)?,
    };
    if p.rate == 0 || p.attackers == 0 || p.block < 2 {
        return Err("--rate, --attackers must be at least 1, --block at least 2".into());
    }
    Ok(p)
}

/// What the attackers did.
#[derive(Default)]
struct AttackStats {
    /// Attack requests (or connections, for the holding kinds) made.
    ops: AtomicU64,
    /// Bytes the attackers wrote.
    bytes: AtomicU64,
    /// Connections the node closed on an attacker.
    closed: AtomicU64,
    first_answer: std::sync::Mutex<Option<String>>,
}

impl AttackStats {
    fn answer(&self, r: &Reply) {
        let mut first = self.first_answer.lock().unwrap();
        if first.is_none() && !matches!(r, Reply::Stored) {
            *first = Some(r.describe());
        }
    }
}

async fn write(s: &mut TcpStream, st: &AttackStats, b: &[u8]) -> bool {
    let ok = s.write_all(b).await.is_ok();
    if ok {
        st.bytes.fetch_add(b.len() as u64, Ordering::Relaxed);
    }
    ok
}

/// Writes `n` bytes of `fill` in 1 MiB pieces, until `stop`.
async fn write_fill(
    s: &mut TcpStream,
    st: &AttackStats,
    n: usize,
    fill: u8,
    stop: &AtomicBool,
) -> bool {
    let chunk = vec![fill; 1 << 20];
    let mut left = n;
    while left > 0 && !stop.load(Ordering::Relaxed) {
        let k = left.min(chunk.len());
        if !write(s, st, &chunk[..k]).await {
            return false;
        }
        left -= k;
    }
    true
}

/// One attacker; returns when `stop` is set (or it cannot connect).
async fn attacker(i: usize, ctx: Ctx, p: Arc<Params>, st: Arc<AttackStats>, stop: Arc<AtomicBool>) {
    let connect = || common::connect(ctx.addr, None);
    let stopped = || stop.load(Ordering::Relaxed);
    match p.kind.as_str() {
        "big-subscribe" => {
            let mut round = 0u64;
            while !stopped() {
                let Ok(s) = connect().await else { return };
                let topics: Vec<String> = (0..p.topics)
                    .map(|j| format!("{}big{i}.{round}.{j}", ctx.prefix))
                    .collect();
                round += 1;
                let mut req = Vec::new();
                proto::push_topics(&mut req, "subscribe", &topics);
                let mut r = ReplyReader::new(s, 4096);
                if !write(r.get_mut(), &st, &req).await {
                    st.closed.fetch_add(1, Ordering::Relaxed);
                    continue;
                }
                match r.reply().await {
                    Ok(reply) => st.answer(&reply),
                    Err(_) => {
                        st.closed.fetch_add(1, Ordering::Relaxed);
                    }
                }
                st.ops.fetch_add(1, Ordering::Relaxed);
            }
        }
        "slowloris" | "never-reads" => {
            let Ok(mut s) = connect().await else { return };
            st.ops.fetch_add(1, Ordering::Relaxed);
            if p.kind == "slowloris" {
                let header = format!("set publish 0 0 {}\r\n", p.block);
                let _ = write(&mut s, &st, header.as_bytes()).await
                    && write_fill(&mut s, &st, p.block - 1, b'x', &stop).await;
            } else {
                let burst = b"stats\r\n".repeat(1000);
                // Until the node stops reading (the write blocks).
                while !stopped() {
                    match timeout(Duration::from_secs(1), s.write_all(&burst)).await {
                        Ok(Ok(())) => {
                            st.bytes.fetch_add(burst.len() as u64, Ordering::Relaxed);
                        }
                        _ => break,
                    }
                }
            }
            // Hold the connection, silent, until the end or until closed.
            let mut probe = [0u8; 1];
            while !stopped() {
                if p.kind == "slowloris" {
                    if let Ok(Ok(0) | Err(_)) = timeout(
                        Duration::from_millis(200),
                        tokio::io::AsyncReadExt::read(&mut s, &mut probe),
                    )
                    .await
                    {
                        st.closed.fetch_add(1, Ordering::Relaxed);
                        return;
                    }
                } else {
                    sleep(Duration::from_millis(200)).await;
                }
            }
        }
        "oversized" => {
            while !stopped() {
                let Ok(mut s) = connect().await else { return };
                loop {
                    let header = format!("set publish 0 0 {}\r\n", p.block);
                    if !(write(&mut s, &st, header.as_bytes()).await
                        && write_fill(&mut s, &st, p.block, b'x', &stop).await
                        && write(&mut s, &st, b"\r\n").await)
                    {
                        st.closed.fetch_add(1, Ordering::Relaxed);
                        break;
                    }
                    st.ops.fetch_add(1, Ordering::Relaxed);
                    if stopped() {
                        return;
                    }
                }
            }
        }
        _ => {
            // padded, repeated-topic: well-formed publishes that cost parsing.
            let topic = format!("{}pad{i}", ctx.prefix);
            let line = if p.kind == "padded" {
                let mut l = format!("MESSAGE {topic}").into_bytes();
                l.resize(l.len() + p.block, b' ');
                l.extend_from_slice(format!(" {topic} 1\r\n").as_bytes());
                l
            } else {
                let mut l = b"MESSAGE ".to_vec();
                for _ in 0..p.names {
                    l.extend_from_slice(topic.as_bytes());
                    l.push(b' ');
                }
                l.extend_from_slice(b"1\r\n");
                l
            };
            let mut block = line;
            block.extend_from_slice(b"x");
            let mut req = format!("set publish 0 0 {}\r\n", block.len()).into_bytes();
            req.extend_from_slice(&block);
            req.extend_from_slice(b"\r\n");
            while !stopped() {
                let Ok(s) = connect().await else { return };
                let mut r = ReplyReader::new(s, 4096);
                while !stopped() {
                    if !write(r.get_mut(), &st, &req).await {
                        break;
                    }
                    match r.reply().await {
                        Ok(reply) => st.answer(&reply),
                        Err(_) => break,
                    }
                    st.ops.fetch_add(1, Ordering::Relaxed);
                }
                st.closed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

/// The honest subscriber: polls until `stop`, then drains for a second.
async fn honest_subscriber(
    mut r: ReplyReader<TcpStream>,
    stop: Arc<AtomicBool>,
) -> Result<Tracker, String> {
    let mut t = Tracker::default();
    let mut drained_at: Option<Instant> = None;
    loop {
        if stop.load(Ordering::Relaxed) {
            let at = *drained_at.get_or_insert_with(|| Instant::now() + Duration::from_secs(1));
            if Instant::now() >= at {
                return Ok(t);
            }
        }
        r.get_mut()
            .write_all(b"get messages\r\n")
            .await
            .map_err(|e| format!("honest subscriber: write: {e}"))?;
        let reply = timeout(Duration::from_secs(30), r.reply())
            .await
            .map_err(|_| "honest subscriber: no answer to a poll in 30 s".to_string())?
            .map_err(|e| format!("honest subscriber: read: {e}"))?;
        t.polls += 1;
        match reply {
            Reply::Value(v) => t.value(&v, common::now_ns(), HEADER, 1, true),
            Reply::End => {
                t.empty_polls += 1;
                sleep(Duration::from_millis(1)).await;
            }
            other => return Err(format!("honest subscriber: answered {}", other.describe())),
        }
    }
}

/// The honest publisher: `rate` messages per second until `stop`.
async fn honest_publisher(
    mut r: ReplyReader<TcpStream>,
    topic: String,
    rate: u64,
    stop: Arc<AtomicBool>,
) -> Result<u64, String> {
    let every = Duration::from_secs_f64(1.0 / rate as f64);
    let mut next = Instant::now();
    let mut seq = 0u64;
    while !stop.load(Ordering::Relaxed) {
        tokio::time::sleep_until(next).await;
        next += every;
        let mut payload = [0u8; HEADER];
        common::write_header(&mut payload, 0, seq, common::now_ns());
        let mut block = Vec::new();
        proto::push_entry(&mut block, [topic.as_bytes()], &payload);
        let mut req = Vec::new();
        proto::push_set(&mut req, "publish", &block);
        r.get_mut()
            .write_all(&req)
            .await
            .map_err(|e| format!("honest publisher: write: {e}"))?;
        match timeout(Duration::from_secs(30), r.reply()).await {
            Ok(Ok(Reply::Stored)) => seq += 1,
            Ok(Ok(other)) => {
                return Err(format!("honest publisher: answered {}", other.describe()))
            }
            Ok(Err(e)) => return Err(format!("honest publisher: read: {e}")),
            Err(_) => return Err("honest publisher: no answer in 30 s".into()),
        }
    }
    Ok(seq)
}

pub async fn run(ctx: &Ctx, p: Params) -> (Report, bool) {
    let pid = ctx.server_pid;
    let mut r = Report::new(format!(
        "kraken-bench attack {} on {}: an honest pair ({} msg/s) before, during ({} s) and \
         after the attack",
        p.kind,
        ctx.addr,
        p.rate,
        ctx.duration.as_secs_f64()
    ));
    r.str("scenario", "attack", "");
    r.str("kind", &p.kind, "");
    let topic = format!("{}honest", ctx.prefix);
    let pair = async {
        let sub = common::connect(ctx.addr, None)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        let mut sub = ReplyReader::new(sub, 64 * 1024);
        let mut req = Vec::new();
        proto::push_topics(&mut req, "subscribe", &[&topic]);
        sub.get_mut()
            .write_all(&req)
            .await
            .map_err(|e| e.to_string())?;
        match sub.reply().await.map_err(|e| e.to_string())? {
            Reply::Stored => {}
            other => return Err(format!("subscribe answered {}", other.describe())),
        }
        let publ = common::connect(ctx.addr, None)
            .await
            .map_err(|e| format!("connect: {e}"))?;
        Ok::<_, String>((sub, ReplyReader::new(publ, 4096)))
    };
    let (sub, publ) = match timeout(ctx.connect_timeout, pair).await {
        Ok(Ok(pair)) => pair,
        Ok(Err(e)) => {
            r.warnings.push(format!("honest pair: {e}"));
            return (r, false);
        }
        Err(_) => {
            r.warnings.push("honest pair: set-up timed out".into());
            return (r, false);
        }
    };
    let honest_stop = Arc::new(AtomicBool::new(false));
    let sub_task = tokio::spawn(honest_subscriber(sub, honest_stop.clone()));
    let pub_task = tokio::spawn(honest_publisher(publ, topic, p.rate, honest_stop.clone()));

    sleep(p.settle).await;
    let before = snapshot(pid);
    let p = Arc::new(p);
    let st = Arc::new(AttackStats::default());
    let stop = Arc::new(AtomicBool::new(false));
    let crowd = match p.kind.as_str() {
        "slowloris" | "never-reads" => p.attackers,
        _ => 1,
    };
    let attackers: Vec<_> = (0..crowd)
        .map(|i| {
            tokio::spawn(attacker(
                i,
                ctx.clone(),
                p.clone(),
                st.clone(),
                stop.clone(),
            ))
        })
        .collect();
    let attack_end = Instant::now() + ctx.duration;
    let mut peak_rss = before.server_rss_kib;
    while Instant::now() < attack_end {
        sleep(Duration::from_millis(200)).await;
        if let Some(k) = snapshot(pid).server_rss_kib {
            peak_rss = Some(peak_rss.map_or(k, |p| p.max(k)));
        }
    }
    let during = snapshot(pid);
    stop.store(true, Ordering::Relaxed);
    for a in attackers {
        a.abort();
        let _ = a.await;
    }
    sleep(p.settle).await;
    let after = snapshot(pid);
    honest_stop.store(true, Ordering::Relaxed);
    let published = pub_task.await.unwrap_or_else(|e| Err(e.to_string()));
    let seen = sub_task.await.unwrap_or_else(|e| Err(e.to_string()));
    let mut ok = true;
    let published = match published {
        Ok(n) => n,
        Err(e) => {
            r.warnings.push(e);
            ok = false;
            0
        }
    };
    let t = match seen {
        Ok(t) => t,
        Err(e) => {
            r.warnings.push(e);
            ok = false;
            Tracker::default()
        }
    };
    r.int(
        "honest_published",
        published as i64,
        "messages the honest publisher got STORED for",
    );
    r.int(
        "honest_received",
        t.unique as i64,
        "distinct messages the honest subscriber polled",
    );
    r.int(
        "honest_lost",
        published.saturating_sub(t.unique) as i64,
        "published but never polled",
    );
    r.int("honest_duplicates", t.duplicates as i64, "");
    r.int("honest_out_of_order", t.ordering_violations as i64, "");
    r.latency(
        "honest_latency",
        &t.hist,
        "publish -> poll, over all three phases",
    );
    r.int(
        "attack_ops",
        st.ops.load(Ordering::Relaxed) as i64,
        "attack requests or connections made",
    );
    r.int(
        "attack_bytes",
        st.bytes.load(Ordering::Relaxed) as i64,
        "bytes the attackers wrote",
    );
    r.int(
        "attack_closed",
        st.closed.load(Ordering::Relaxed) as i64,
        "attacker connections the node closed",
    );
    if let Some(a) = st.first_answer.lock().unwrap().clone() {
        r.str("attack_answer", &a, "the first answer other than STORED");
    }
    let kib = |s: &crate::sys::Snapshot| s.server_rss_kib.map(|k| k as i64);
    r.opt_int(
        "server_rss_before_kib",
        kib(&before),
        "KiB, node RSS before the attack",
    );
    r.opt_int(
        "server_rss_peak_kib",
        peak_rss.map(|k| k as i64),
        "KiB, highest node RSS seen during it",
    );
    r.opt_int(
        "server_rss_during_kib",
        kib(&during),
        "KiB, node RSS at the end of the attack",
    );
    r.opt_int(
        "server_rss_after_kib",
        kib(&after),
        "KiB, node RSS --settle s after the attackers left",
    );
    let span = crate::sys::span(&before, &during);
    r.opt_float(
        "server_cpu_during",
        span.server_cpu.map(|c| c / span.wall.max(1e-9)),
        "cores, node CPU during the attack",
    );
    if published > 0 && t.unique == 0 {
        ok = false;
    }
    (r, ok)
}
