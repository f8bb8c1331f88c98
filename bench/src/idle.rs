//! `idle`: many connections, each on a couple of topics, polling rarely:
//! what an idle connection costs the server.

use crate::args::Args;
use crate::common;
use crate::hist::Histogram;
use crate::proto::{self, Reply};
use crate::pubsub::{
    abort_unreported, collect_ready, connect_subscribed, report_and_await_start, Phase, Ready,
};
use crate::report::Report;
use crate::sys::snapshot;
use crate::Ctx;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{sleep, sleep_until, timeout, timeout_at, Instant};

pub struct Params {
    connections: usize,
    topics_per_conn: usize,
    poll_interval: f64,
    settle: f64,
}

pub fn parse(a: &Args) -> Result<Params, String> {
    let p = Params {
        connections: a.get("connections", 5000)?,
        topics_per_conn: a.get("topics-per-conn", 2)?,
        poll_interval: a.get("poll-interval", 2.0)?,
        settle: a.get("settle", 3.0)?,
    };
    if p.poll_interval.is_nan() || p.poll_interval <= 0.0 || !(0.0..=60.0).contains(&p.settle) {
        return Err("--poll-interval must be > 0 and --settle in 0..=60".into());
    }
    Ok(p)
}

#[derive(Default)]
struct Stats {
    /// Poll round trips, ns.
    rtts: Vec<u64>,
    /// Entries received (there is no publisher: should stay 0).
    entries: u64,
    error: Option<String>,
}

async fn conn(
    i: usize,
    ctx: Ctx,
    p: Arc<Params>,
    gate: Arc<Semaphore>,
    ready: mpsc::Sender<Ready>,
    mut phase: watch::Receiver<Phase>,
) -> Stats {
    let mut st = Stats::default();
    let topics: Vec<String> = (0..p.topics_per_conn)
        .map(|k| format!("{}idle{i}.{k}", ctx.prefix))
        .collect();
    let setup = async {
        let _permit = gate.acquire().await;
        timeout(
            ctx.connect_timeout,
            connect_subscribed(ctx.addr, common::source_ip(i, ctx.source_ips), &topics, 512),
        )
        .await
        .unwrap_or_else(|_| Err("connect/subscribe timed out".into()))
    };
    let Some((mut r, start)) = report_and_await_start(i, setup.await, ready, &mut phase).await
    else {
        return st;
    };
    let interval = Duration::from_secs_f64(p.poll_interval);
    let end = start + ctx.duration;
    let mut rng = common::Rng::new(ctx.seed.wrapping_mul(7919).wrapping_add(i as u64));
    let mut next = start + interval.mul_f64(rng.unit());
    let body = async {
        loop {
            if next >= end {
                return Ok(());
            }
            sleep_until(next).await;
            next += interval;
            let t0 = Instant::now();
            r.get_mut()
                .write_all(proto::GET_MESSAGES)
                .await
                .map_err(|e| format!("poll write: {e}"))?;
            let reply = r.reply().await.map_err(|e| format!("poll read: {e}"))?;
            st.rtts.push(t0.elapsed().as_nanos() as u64);
            match reply {
                Reply::End => {}
                Reply::Value(v) => st.entries += proto::entries(&v).count() as u64,
                other => return Err(format!("poll answered {}", other.describe())),
            }
        }
    };
    match timeout_at(end + Duration::from_secs(5), body).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => st.error = Some(e),
        Err(_) => st.error = Some("poll stuck at the deadline".into()),
    }
    st
}

pub async fn run(ctx: &Ctx, p: Params) -> (Report, bool) {
    let pid = ctx.server_pid;
    let n = p.connections;
    let p = Arc::new(p);
    let snap_before = snapshot(pid);
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let gate = Arc::new(Semaphore::new(ctx.connect_concurrency));
    let (rtx, mut rrx) = mpsc::channel::<Ready>(n.max(1));
    let setup_start = Instant::now();
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            tokio::spawn(conn(
                i,
                ctx.clone(),
                p.clone(),
                gate.clone(),
                rtx.clone(),
                phase_rx.clone(),
            ))
        })
        .collect();
    drop(rtx);
    let setup_deadline =
        setup_start + ctx.connect_timeout * 2 + Duration::from_millis(2 * n as u64);
    let ready = collect_ready(&mut rrx, n, setup_deadline).await;
    abort_unreported(&tasks, &ready);
    let setup_secs = setup_start.elapsed().as_secs_f64();
    let ok = ready.iter().filter(|(_, r)| r.is_ok()).count();
    let mut errors: Vec<String> = Vec::new();
    let mut failed = 0;
    for (_, r) in &ready {
        if let Err(e) = r {
            failed += 1;
            if errors.len() < 3 && !errors.contains(e) {
                errors.push(e.clone());
            }
        }
    }
    if ready.len() < n {
        errors.push(format!(
            "{} connections never finished setting up",
            n - ready.len()
        ));
    }
    // Let the server settle its accounting before the "connected" reading.
    sleep(Duration::from_millis(500)).await;
    let snap_connected = snapshot(pid);
    let start = Instant::now();
    let _ = phase_tx.send(if ok > 0 {
        Phase::Running(start)
    } else {
        Phase::Stop
    });
    if ok > 0 {
        sleep_until(start + ctx.duration).await;
    }
    let snap_end = snapshot(pid);
    let mut hist = Histogram::new();
    let mut entries = 0;
    let mut poll_errors = 0;
    for t in tasks {
        if let Ok(s) = t.await {
            for v in &s.rtts {
                hist.record(*v);
            }
            entries += s.entries;
            if let Some(e) = s.error {
                poll_errors += 1;
                if errors.len() < 5 && !errors.contains(&e) {
                    errors.push(e);
                }
            }
        }
    }
    // Every connection is closed now; give the server time to clean up.
    sleep(Duration::from_secs_f64(p.settle)).await;
    let snap_closed = snapshot(pid);
    let span = crate::sys::span(&snap_connected, &snap_end);

    let mut r = Report::new(format!(
        "kraken-bench idle on {}: {} connections x {} topics, polling every {} s, {} s, \
         {} source address(es)",
        ctx.addr,
        n,
        p.topics_per_conn,
        p.poll_interval,
        ctx.duration.as_secs_f64(),
        ctx.source_ips
    ));
    r.str("scenario", "idle", "");
    r.int(
        "connections_ok",
        ok as i64,
        "connections that connected and subscribed",
    );
    r.int(
        "connections_failed",
        failed as i64,
        "connections refused or failed during set-up",
    );
    r.float(
        "setup_s",
        setup_secs,
        "s, to connect and subscribe them all",
    );
    r.float(
        "connects_per_s",
        ok as f64 / setup_secs.max(1e-9),
        "connections set up per second",
    );
    r.int(
        "poll_errors",
        poll_errors as i64,
        "connections that failed while polling",
    );
    r.int(
        "unexpected_entries",
        entries as i64,
        "entries received (nobody publishes: should be 0)",
    );
    r.latency("poll_latency", &hist, "get messages round trip");
    r.cpu(&span, None, ctx.threads);
    r.rss(&snap_before, &snap_connected, &snap_end, ok as u64);
    r.opt_int(
        "server_rss_closed_kib",
        snap_closed.server_rss_kib.map(|k| k as i64),
        "KiB, server RSS --settle s after every connection closed",
    );
    r.opt_int(
        "server_rss_retained_kib",
        match (snap_before.server_rss_kib, snap_closed.server_rss_kib) {
            (Some(a), Some(b)) => Some(b as i64 - a as i64),
            _ => None,
        },
        "KiB, closed RSS - RSS before connecting",
    );
    r.warnings.extend(errors);
    (r, ok > 0)
}
