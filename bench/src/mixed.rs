//! `mixed`: many clients on Zipf-popular topics polling every second, plus
//! publishers at a steady rate to 1-3 Zipf-popular topics each.

use crate::args::Args;
use crate::common::{Rng, Zipf};
use crate::pubsub::{self, Chooser, Plan};
use crate::report::Report;
use crate::Ctx;
use std::sync::Arc;
use std::time::Duration;

pub struct Params {
    clients: usize,
    topics_per_client: usize,
    universe: usize,
    zipf: f64,
    poll_interval: f64,
    publishers: usize,
    rate: f64,
    max_topics_per_publish: usize,
    size: usize,
    inflight: usize,
}

pub fn parse(a: &Args) -> Result<Params, String> {
    let p = Params {
        clients: a.get("clients", 1000)?,
        topics_per_client: a.get("topics-per-client", 20)?,
        universe: a.get("universe", 10_000)?,
        zipf: a.get("zipf", 1.0)?,
        poll_interval: a.get("poll-interval", 1.0)?,
        publishers: a.get("publishers", 4)?,
        rate: a.get("rate", 2000.0)?,
        max_topics_per_publish: a.get("max-topics-per-publish", 3)?,
        size: a.get("size", 64)?,
        inflight: a.get("inflight", 16)?,
    };
    if p.size < crate::common::HEADER {
        return Err(format!("--size must be at least {}", crate::common::HEADER));
    }
    if p.universe == 0
        || p.topics_per_client * 2 > p.universe
        || p.max_topics_per_publish * 2 > p.universe
    {
        return Err(
            "--universe must be at least twice --topics-per-client and --max-topics-per-publish"
                .into(),
        );
    }
    if p.publishers == 0 || p.inflight == 0 || p.max_topics_per_publish == 0 {
        return Err(
            "--publishers, --inflight and --max-topics-per-publish must be at least 1".into(),
        );
    }
    if p.poll_interval.is_nan()
        || p.poll_interval <= 0.0
        || p.rate.is_nan()
        || p.rate < 0.0
        || p.zipf.is_nan()
        || p.zipf < 0.0
    {
        return Err("--poll-interval must be > 0, --rate and --zipf >= 0".into());
    }
    Ok(p)
}

pub async fn run(ctx: &Ctx, p: Params) -> (Report, bool) {
    let zipf = Arc::new(Zipf::new(p.universe, p.zipf));
    let names: Vec<String> = (0..p.universe)
        .map(|t| format!("{}z{t}", ctx.prefix))
        .collect();
    let mut rng = Rng::new(ctx.seed);
    let mut pick = Vec::new();
    let sub_topics: Vec<Vec<usize>> = (0..p.clients)
        .map(|_| {
            zipf.sample_distinct(&mut rng, p.topics_per_client, &mut pick);
            pick.clone()
        })
        .collect();
    let subscriptions: usize = sub_topics.iter().map(|t| t.len()).sum();
    let seed = ctx.seed;
    let maxk = p.max_topics_per_publish as u64;
    let z = zipf.clone();
    let plan = Plan {
        sub_topics,
        topic_names: Arc::new(names),
        interval: Some(Duration::from_secs_f64(p.poll_interval)),
        publishers: p.publishers,
        inflight: p.inflight,
        batch: 1,
        size: p.size,
        rate_total: p.rate,
        make_chooser: Box::new(move |id| -> Chooser {
            let z = z.clone();
            let mut rng = Rng::new(seed ^ (0xABCD_0000 + id as u64));
            Box::new(move |_, out: &mut Vec<usize>| {
                let k = 1 + rng.below(maxk) as usize;
                z.sample_distinct(&mut rng, k, out);
            })
        }),
        sample_each_second: true,
        drain_max: Duration::from_secs(5),
    };
    let o = pubsub::run_load(ctx, plan).await;
    let mut r = Report::new(format!(
        "kraken-bench mixed on {}: {} clients x {} topics (Zipf s={} over {}), polling every {} s; \
         {} publishers at {} publishes/s in total to 1-{} topics; {} B messages, {} s",
        ctx.addr,
        p.clients,
        p.topics_per_client,
        p.zipf,
        p.universe,
        p.poll_interval,
        p.publishers,
        p.rate,
        p.max_topics_per_publish,
        p.size,
        ctx.duration.as_secs_f64()
    ));
    r.str("scenario", "mixed", "");
    r.int(
        "subscriptions",
        subscriptions as i64,
        "(client, topic) pairs subscribed",
    );
    pubsub::report_outcome(ctx, &o, &mut r);
    r.list(
        "server_rss_kib_each_s",
        o.samples
            .iter()
            .map(|s| s.0.map(|v| v as f64).unwrap_or(f64::NAN))
            .collect(),
        "KiB, server RSS sampled every second of load",
    );
    r.list(
        "server_cores_busy_each_s",
        o.samples.iter().map(|s| s.1.unwrap_or(f64::NAN)).collect(),
        "cores, server CPU over each second of load",
    );
    let ok = o.subscribers_ok > 0 && o.publishers_ok > 0;
    (r, ok)
}
