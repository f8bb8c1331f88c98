//! `churn`: connections that subscribe to fresh topics and unsubscribe from
//! them again, as fast as the server answers.

use crate::args::Args;
use crate::common;
use crate::hist::Histogram;
use crate::proto::{self, Reply, ReplyReader};
use crate::pubsub::{abort_unreported, collect_ready, report_and_await_start, Phase, Ready};
use crate::report::Report;
use crate::sys::snapshot;
use crate::Ctx;
use std::sync::Arc;
use std::time::Duration;
use tokio::io::AsyncWriteExt;
use tokio::sync::{mpsc, watch, Semaphore};
use tokio::time::{sleep_until, timeout, timeout_at, Instant};

pub struct Params {
    connections: usize,
    topics_per_request: usize,
}

pub fn parse(a: &Args) -> Result<Params, String> {
    let p = Params {
        connections: a.get("connections", 50)?,
        topics_per_request: a.get("topics-per-request", 100)?,
    };
    if p.topics_per_request == 0 {
        return Err("--topics-per-request must be at least 1".into());
    }
    Ok(p)
}

#[derive(Default)]
struct Stats {
    cycles: u64,
    subscribes_ok: u64,
    unsubscribes_ok: u64,
    topics_subscribed: u64,
    topics_unsubscribed: u64,
    error_replies: u64,
    sub_hist: Histogram,
    unsub_hist: Histogram,
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
    let setup = async {
        let _permit = gate.acquire().await;
        match timeout(
            ctx.connect_timeout,
            common::connect(ctx.addr, common::source_ip(i, ctx.source_ips)),
        )
        .await
        {
            Ok(Ok(s)) => Ok(s),
            Ok(Err(e)) => Err(format!("connect: {e}")),
            Err(_) => Err("connect timed out".to_string()),
        }
    };
    let Some((stream, start)) = report_and_await_start(i, setup.await, ready, &mut phase).await
    else {
        return st;
    };
    let end = start + ctx.duration;
    let mut r = ReplyReader::new(stream, 4096);
    let body = async {
        let mut req = Vec::new();
        let mut topics = Vec::with_capacity(p.topics_per_request);
        let mut iter = 0u64;
        while Instant::now() < end {
            topics.clear();
            for j in 0..p.topics_per_request {
                topics.push(format!("{}ch{i}.{iter}.{j}", ctx.prefix));
            }
            iter += 1;
            req.clear();
            proto::push_topics(&mut req, "subscribe", &topics);
            proto::push_topics(&mut req, "unsubscribe", &topics);
            let t0 = Instant::now();
            r.get_mut()
                .write_all(&req)
                .await
                .map_err(|e| format!("write: {e}"))?;
            let a = r.reply().await.map_err(|e| format!("read: {e}"))?;
            let t1 = Instant::now();
            let b = r.reply().await.map_err(|e| format!("read: {e}"))?;
            let t2 = Instant::now();
            st.cycles += 1;
            st.sub_hist.record((t1 - t0).as_nanos() as u64);
            st.unsub_hist.record((t2 - t0).as_nanos() as u64);
            for (reply, sub) in [(a, true), (b, false)] {
                match reply {
                    Reply::Stored if sub => {
                        st.subscribes_ok += 1;
                        st.topics_subscribed += topics.len() as u64;
                    }
                    Reply::Stored => {
                        st.unsubscribes_ok += 1;
                        st.topics_unsubscribed += topics.len() as u64;
                    }
                    other => {
                        st.error_replies += 1;
                        if st.error.is_none() {
                            st.error = Some(format!("answered {}", other.describe()));
                        }
                    }
                }
            }
        }
        Ok::<(), String>(())
    };
    match timeout_at(end + Duration::from_secs(5), body).await {
        Ok(Ok(())) => {}
        Ok(Err(e)) => st.error = Some(e),
        Err(_) => st.error = Some("stuck at the deadline".into()),
    }
    st
}

pub async fn run(ctx: &Ctx, p: Params) -> (Report, bool) {
    let pid = ctx.server_pid;
    let snap_start = snapshot(pid);
    let p = Arc::new(p);
    let (phase_tx, phase_rx) = watch::channel(Phase::Setup);
    let gate = Arc::new(Semaphore::new(ctx.connect_concurrency));
    let (rtx, mut rrx) = mpsc::channel::<Ready>(p.connections.max(1));
    let tasks: Vec<_> = (0..p.connections)
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
    let ready = collect_ready(
        &mut rrx,
        p.connections,
        Instant::now() + ctx.connect_timeout * 2,
    )
    .await;
    abort_unreported(&tasks, &ready);
    let ok = ready.iter().filter(|(_, r)| r.is_ok()).count();
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
    let mut total = Stats::default();
    let mut errors: Vec<String> = ready
        .iter()
        .filter_map(|(_, r)| r.clone().err())
        .take(3)
        .collect();
    for t in tasks {
        if let Ok(s) = t.await {
            total.cycles += s.cycles;
            total.subscribes_ok += s.subscribes_ok;
            total.unsubscribes_ok += s.unsubscribes_ok;
            total.topics_subscribed += s.topics_subscribed;
            total.topics_unsubscribed += s.topics_unsubscribed;
            total.error_replies += s.error_replies;
            total.sub_hist.merge(&s.sub_hist);
            total.unsub_hist.merge(&s.unsub_hist);
            if let Some(e) = s.error {
                if errors.len() < 5 && !errors.contains(&e) {
                    errors.push(e);
                }
            }
        }
    }
    let snap_end = snapshot(pid);
    let span = crate::sys::span(&snap_connected, &snap_end);
    let wall = span.wall.max(1e-9);
    let mut all = total.sub_hist.clone();
    all.merge(&total.unsub_hist);

    let mut r = Report::new(format!(
        "kraken-bench churn on {}: {} connections, each subscribing {} fresh topics then \
         unsubscribing them (2 pipelined requests), {} s",
        ctx.addr,
        p.connections,
        p.topics_per_request,
        ctx.duration.as_secs_f64()
    ));
    r.str("scenario", "churn", "");
    r.int("connections_ok", ok as i64, "connections that connected");
    r.float(
        "topics_per_s",
        total.topics_subscribed as f64 / wall,
        "topics subscribed per second (as many again unsubscribed)",
    );
    r.float(
        "topic_ops_per_s",
        (total.topics_subscribed + total.topics_unsubscribed) as f64 / wall,
        "topics subscribed + unsubscribed per second",
    );
    r.float(
        "requests_per_s",
        (total.subscribes_ok + total.unsubscribes_ok) as f64 / wall,
        "subscribe + unsubscribe requests answered STORED per second",
    );
    r.int(
        "cycles",
        total.cycles as i64,
        "subscribe+unsubscribe pairs completed",
    );
    r.int(
        "error_replies",
        total.error_replies as i64,
        "requests answered other than STORED",
    );
    r.latency(
        "request_latency",
        &all,
        "request write -> answer (both requests)",
    );
    r.latency(
        "subscribe_latency",
        &total.sub_hist,
        "subscribe write -> STORED",
    );
    r.latency(
        "unsubscribe_latency",
        &total.unsub_hist,
        "pair write -> second STORED (unsubscribe)",
    );
    r.cpu(&span, None, ctx.threads);
    r.rss(&snap_start, &snap_connected, &snap_end, ok as u64);
    r.warnings.extend(errors);
    (r, ok > 0)
}
