//! kraken-bench: a load generator for the Kraken pubsub server.
//!
//! `kraken-bench <fanout|churn|idle|mixed|redis-fanout|attack KIND> [flags]`;
//! see README.md (and docs/HARDENING.md for `attack`).
//! It only ever connects to loopback addresses, and every run ends by itself
//! (duration plus bounded set-up, answer and drain phases).

mod args;
mod attack;
mod churn;
mod common;
mod fanout;
mod hist;
mod idle;
mod mixed;
mod proto;
mod pubsub;
mod redis_fanout;
mod report;
mod resp;
mod sys;

use args::Args;
use std::net::SocketAddr;
use std::time::Duration;

/// Flags every scenario takes.
#[derive(Clone)]
pub struct Ctx {
    pub addr: SocketAddr,
    pub duration: Duration,
    pub server_pid: Option<u32>,
    pub threads: usize,
    pub json: bool,
    pub source_ips: usize,
    pub connect_timeout: Duration,
    pub connect_concurrency: usize,
    pub seed: u64,
    /// Prefix of every topic name, unique per run.
    pub prefix: String,
}

const USAGE: &str = "\
usage: kraken-bench <scenario> [flags]

scenarios (flags with their defaults):
  fanout  --subscribers 200 --publishers 2 --inflight 16 --size 64 --topics 1
          --batch 1 --rate 0 (publish requests/s in total, 0 = unpaced)
          [--subscribe-all]
  churn   --connections 50 --topics-per-request 100
  idle    --connections 5000 --topics-per-conn 2 --poll-interval 2
          --settle 3 (s to wait after closing before the last RSS reading)
  mixed   --clients 1000 --topics-per-client 20 --universe 10000 --zipf 1.0
          --poll-interval 1 --publishers 4 --rate 2000 --max-topics-per-publish 3
          --size 64 --inflight 16
  redis-fanout  --subscribers 200 --publishers 2 --inflight 16 --size 64
          --rate 0 (PUBLISHes/s in total, 0 = unpaced) [--resp3]
          (the fanout over the Redis protocol: SUBSCRIBE and pushed messages;
          any RESP server, e.g. redis-server or a node's resp_port)
  attack KIND  --rate 200 (honest publishes/s) --settle 3 (s before and after)
          --attackers 20 (100 for slowloris) --topics 500000 --block <bytes>
          --names 2000000; KIND: big-subscribe, slowloris, never-reads,
          oversized, padded, repeated-topic (an honest pair's latency and loss,
          and the node's RSS, before, during and after the attack)

common flags:
  --addr 127.0.0.1:12355   server address (loopback only)
  --duration 10            seconds of load
  --server-pid PID         read the server's CPU and RSS from /proc/PID
  --threads 2              client runtime worker threads
  --source-ips 1           spread client source addresses over 127.0.0.1..=127.0.0.N
  --connect-timeout 10     seconds allowed to connect and subscribe
  --connect-concurrency 256  connections being set up at once
  --seed 1                 seed of the random choices
  --json                   print one JSON object line instead of the text report
";

fn main() {
    let mut argv = std::env::args().skip(1);
    let scenario = argv.next().unwrap_or_default();
    if scenario.is_empty() || scenario == "--help" || scenario == "-h" || scenario == "help" {
        print!("{USAGE}");
        std::process::exit(if scenario.is_empty() { 2 } else { 0 });
    }
    match run(&scenario, argv.collect()) {
        Ok(ok) => std::process::exit(if ok { 0 } else { 1 }),
        Err(e) => {
            eprintln!("kraken-bench: {e}\n\n{USAGE}");
            std::process::exit(2);
        }
    }
}

enum Params {
    Fanout(fanout::Params),
    Churn(churn::Params),
    Idle(idle::Params),
    Mixed(mixed::Params),
    RedisFanout(redis_fanout::Params),
    Attack(attack::Params),
}

/// Ok(true) if the run connected and measured something.
fn run(scenario: &str, mut argv: Vec<String>) -> Result<bool, String> {
    // `attack <kind>`: the kind is a word, not a flag.
    let kind = (scenario == "attack" && argv.first().is_some_and(|a| !a.starts_with("--")))
        .then(|| argv.remove(0));
    let args = Args::parse(argv)?;
    if args.switch("help")? {
        print!("{USAGE}");
        return Ok(true);
    }
    let addr = common::loopback_addr(&args.get_str("addr", "127.0.0.1:12355"))?;
    let duration: f64 = args.get("duration", 10.0)?;
    if !(duration > 0.0 && duration <= 24.0 * 3600.0) {
        return Err("--duration must be in (0, 86400] seconds".into());
    }
    let threads: usize = args.get("threads", 2)?;
    let source_ips: usize = args.get("source-ips", 1)?;
    if !(1..=254).contains(&source_ips) {
        return Err("--source-ips must be 1..=254".into());
    }
    let ctx = Ctx {
        addr,
        duration: Duration::from_secs_f64(duration),
        server_pid: args.opt("server-pid")?,
        threads: threads.max(1),
        json: args.switch("json")?,
        source_ips,
        connect_timeout: Duration::from_secs_f64(args.get("connect-timeout", 10.0f64)?.max(0.1)),
        connect_concurrency: args.get::<usize>("connect-concurrency", 256)?.max(1),
        seed: args.get("seed", 1)?,
        prefix: format!("kb{}.", std::process::id()),
    };
    if let Some(pid) = ctx.server_pid {
        if sys::proc_cpu_secs(pid).is_none() {
            return Err(format!(
                "--server-pid {pid}: no such process readable in /proc"
            ));
        }
    }
    let params = match scenario {
        "fanout" => Params::Fanout(fanout::parse(&args)?),
        "churn" => Params::Churn(churn::parse(&args)?),
        "idle" => Params::Idle(idle::parse(&args)?),
        "mixed" => Params::Mixed(mixed::parse(&args)?),
        "redis-fanout" => Params::RedisFanout(redis_fanout::parse(&args)?),
        "attack" => Params::Attack(attack::parse(&args, kind)?),
        other => return Err(format!("unknown scenario {other:?}")),
    };
    args.finish()?;

    let limits = sys::raise_nofile_limit();
    common::epoch();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(ctx.threads)
        .enable_all()
        .build()
        .map_err(|e| format!("runtime: {e}"))?;
    let (mut report, ok) = rt.block_on(async {
        match params {
            Params::Fanout(p) => fanout::run(&ctx, p).await,
            Params::Churn(p) => churn::run(&ctx, p).await,
            Params::Idle(p) => idle::run(&ctx, p).await,
            Params::Mixed(p) => mixed::run(&ctx, p).await,
            Params::RedisFanout(p) => redis_fanout::run(&ctx, p).await,
            Params::Attack(p) => attack::run(&ctx, p).await,
        }
    });
    // Tasks still blocked somewhere are dropped here, not waited for.
    rt.shutdown_timeout(Duration::from_secs(1));
    if let Some((old, new)) = limits {
        if new < 1024 {
            report
                .warnings
                .push(format!("open-file limit is only {new} (was {old})"));
        }
    }
    if ctx.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.to_text());
    }
    Ok(ok)
}
