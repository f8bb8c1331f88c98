//! `fanout`: many subscribers polling in a tight loop, a few publishers
//! pushing pipelined publishes at them.

use crate::args::Args;
use crate::pubsub::{self, Chooser, Plan};
use crate::report::Report;
use crate::Ctx;
use std::sync::Arc;
use std::time::Duration;

pub struct Params {
    subscribers: usize,
    publishers: usize,
    inflight: usize,
    size: usize,
    topics: usize,
    batch: usize,
    rate: f64,
    subscribe_all: bool,
}

pub fn parse(a: &Args) -> Result<Params, String> {
    let p = Params {
        subscribers: a.get("subscribers", 200)?,
        publishers: a.get("publishers", 2)?,
        inflight: a.get("inflight", 16)?,
        size: a.get("size", 64)?,
        topics: a.get("topics", 1)?,
        batch: a.get("batch", 1)?,
        rate: a.get("rate", 0.0)?,
        subscribe_all: a.switch("subscribe-all")?,
    };
    if p.size < crate::common::HEADER {
        return Err(format!(
            "--size must be at least {} (the payload header)",
            crate::common::HEADER
        ));
    }
    if p.topics == 0 || p.publishers == 0 || p.inflight == 0 || p.batch == 0 {
        return Err("--topics, --publishers, --inflight and --batch must be at least 1".into());
    }
    crate::common::Pacer::check(p.rate)?;
    Ok(p)
}

pub async fn run(ctx: &Ctx, p: Params) -> (Report, bool) {
    let names: Vec<String> = (0..p.topics)
        .map(|t| format!("{}fan{t}", ctx.prefix))
        .collect();
    let sub_topics = (0..p.subscribers)
        .map(|i| {
            if p.subscribe_all {
                (0..p.topics).collect()
            } else {
                vec![i % p.topics]
            }
        })
        .collect();
    let topics = p.topics;
    let plan = Plan {
        sub_topics,
        topic_names: Arc::new(names),
        interval: None,
        publishers: p.publishers,
        inflight: p.inflight,
        batch: p.batch,
        size: p.size,
        rate_total: p.rate,
        // Message `seq` goes to topic seq mod topics.
        make_chooser: Box::new(move |_| -> Chooser {
            Box::new(move |seq, out: &mut Vec<usize>| {
                out.clear();
                out.push((seq % topics as u64) as usize);
            })
        }),
        sample_each_second: false,
        drain_max: Duration::from_secs(5),
    };
    let o = pubsub::run_load(ctx, plan).await;
    let mut r = Report::new(format!(
        "kraken-bench fanout on {}: {} subscribers ({}), {} publishers x {} in flight, \
         {} B messages, {} topic(s), batch {}, rate {}, {} s",
        ctx.addr,
        p.subscribers,
        if p.subscribe_all {
            "each on every topic"
        } else {
            "spread over the topics"
        },
        p.publishers,
        p.inflight,
        p.size,
        p.topics,
        p.batch,
        if p.rate > 0.0 {
            format!("{} req/s", p.rate)
        } else {
            "unpaced".into()
        },
        ctx.duration.as_secs_f64()
    ));
    r.str("scenario", "fanout", "");
    pubsub::report_outcome(ctx, &o, &mut r);
    let ok = o.subscribers_ok > 0 && o.publishers_ok > 0;
    (r, ok)
}
