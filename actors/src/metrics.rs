//! The node's Prometheus metrics, served at `/metrics` by [`crate::http`]:
//! every numeric `stats` value mirrored at scrape time, the node's
//! readiness, and three histograms the hot paths feed.
//!
//! - `stats` values become `kraken_<name>`: the ones that only grow are
//!   counters and take Prometheus' `_total` suffix
//!   (`kraken_messages_published_total`), the others are gauges
//!   (`kraken_curr_connections`). `version` becomes the labels of
//!   `kraken_build_info`. Nothing is kept twice: a scrape reads the same
//!   atomics `stats` reads.
//! - `kraken_ready` is 1 while the node accepts connections and 0 once it
//!   drains (`/readyz` answers from the same flag).
//! - Histograms: messages per `get messages` answer
//!   (`kraken_poll_messages`), subscribers reached per published message
//!   (`kraken_publish_fanout`), and the time from a publish request being
//!   read to its message sitting in every subscriber's queue
//!   (`kraken_publish_to_queue_seconds`).

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use prometheus::core::Collector;
use prometheus::proto::MetricFamily;
use prometheus::{Histogram, HistogramOpts, IntCounter, IntGauge, Opts, TextEncoder};

/// The `Content-Type` of `/metrics` (the Prometheus text format 0.0.4).
pub const CONTENT_TYPE: &str = prometheus::TEXT_FORMAT;

/// Every name a `stats` line has, with the help text of its metric and
/// whether it only grows (a counter) or goes up and down (a gauge). A
/// numeric `stats` value not listed here is exported as a gauge with a
/// generic help text, so a new `stats` line shows up without a change here.
#[rustfmt::skip]
const STATS: &[(&str, Kind, &str)] = &[
    ("pid", Kind::Gauge, "OS process id of the node."),
    ("uptime", Kind::Gauge, "Seconds since the node started."),
    ("time", Kind::Gauge, "The node's clock, in unix seconds."),
    ("curr_connections", Kind::Gauge, "Client connections open now."),
    ("curr_resp_connections", Kind::Gauge, "Redis-protocol (resp_port) client connections open now, also counted in curr_connections."),
    ("resp_push_batches", Kind::Counter, "Batches of pushes written to Redis-protocol subscribers (everything queued while the last batch was being written goes out as one)."),
    ("resp_pushes", Kind::Counter, "Redis-protocol message pushes written to subscribers (one per subscribed channel a message matched)."),
    ("total_connections", Kind::Counter, "Client connections accepted since start."),
    ("refused_connections", Kind::Counter, "Connections refused because max_tcp_clients were open."),
    ("max_connections", Kind::Gauge, "The max_tcp_clients setting."),
    ("topics", Kind::Gauge, "Topics with at least one subscriber."),
    ("subscriptions", Kind::Gauge, "Subscriptions (client, topic pairs) held now."),
    ("messages_published", Kind::Counter, "Messages published (one per publish entry)."),
    ("messages_delivered", Kind::Counter, "Messages queued for subscribers (one per subscriber per message, replays included)."),
    ("slow_consumers_closed", Kind::Counter, "Clients closed because their queue exceeded max_queue_messages or max_queue_bytes."),
    ("idle_clients_closed", Kind::Counter, "Clients closed after client_idle_timeout of silence."),
    ("client_failures", Kind::Counter, "Clients ended by a failure of their connection or queue actor."),
    ("router_shards", Kind::Gauge, "Router shards (num_router_shards)."),
    ("shard_restarts", Kind::Counter, "Router shards rebuilt after a failure."),
    ("listener_restarts", Kind::Counter, "Listener restarts after a failure."),
    ("upstreams", Kind::Gauge, "Upstream nodes of this proxy."),
    ("upstreams_connected", Kind::Gauge, "Upstream nodes this proxy is connected to now."),
    ("upstream_connects", Kind::Counter, "Connections this proxy made to upstream nodes."),
    ("upstream_lost", Kind::Counter, "Upstream connections lost."),
    ("upstream_recovered", Kind::Counter, "Upstream connections re-established with subscriptions restored."),
    ("upstream_unrecoverable", Kind::Counter, "Upstream losses that closed the local clients of the upstream's topics."),
    ("upstream_clients_closed", Kind::Counter, "Local clients closed because an upstream was lost."),
    ("upstream_messages_relayed", Kind::Counter, "Messages relayed from upstream nodes into the local router."),
    ("upstream_backlog_bytes", Kind::Gauge, "Bytes waiting to be sent to upstream nodes."),
    ("upstream_refused_publishes", Kind::Counter, "Publishes refused because an upstream backlog was full."),
];

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Kind {
    Counter,
    Gauge,
}

/// Bucket upper bounds for counts (messages per poll, subscribers per message).
const COUNT_BUCKETS: &[f64] = &[
    0.0, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 100.0, 200.0, 500.0, 1000.0, 2000.0, 5000.0, 10000.0,
    100000.0,
];

/// Bucket upper bounds for the publish→queue latency, in seconds (1 µs to 1 s).
const LATENCY_BUCKETS: &[f64] = &[
    0.000_001, 0.000_002, 0.000_005, 0.000_01, 0.000_02, 0.000_05, 0.000_1, 0.000_2, 0.000_5,
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0,
];

/// The node's metrics: the histograms and the readiness flag. One per node
/// (`Node::metrics`). Observing is a few relaxed atomic adds when the HTTP
/// listener is on, one predictable branch when it is off (nobody can read
/// the histograms then, so they are not kept).
pub struct Metrics {
    /// Whether the histograms are kept (`metrics_listen` is set).
    enabled: bool,
    poll_messages: Histogram,
    fanout: Histogram,
    publish_to_queue: Histogram,
    /// Accepting connections: set once the listener runs, cleared when the
    /// node starts draining.
    ready: AtomicBool,
}

impl Metrics {
    /// Metrics whose histograms are kept if `enabled`.
    pub fn new(enabled: bool) -> Metrics {
        let histogram = |name: &str, help: &str, buckets: &[f64]| {
            Histogram::with_opts(HistogramOpts::new(name, help).buckets(buckets.to_vec()))
                .expect("valid histogram options")
        };
        Metrics {
            enabled,
            poll_messages: histogram(
                "kraken_poll_messages",
                "Messages in one `get messages` answer (empty answers included).",
                COUNT_BUCKETS,
            ),
            fanout: histogram(
                "kraken_publish_fanout",
                "Subscribers one published message was queued for.",
                COUNT_BUCKETS,
            ),
            publish_to_queue: histogram(
                "kraken_publish_to_queue_seconds",
                "Time from a publish request being read to its message being in every subscriber's queue.",
                LATENCY_BUCKETS,
            ),
            ready: AtomicBool::new(false),
        }
    }

    /// One `get messages` answer held `n` messages.
    pub fn observe_poll_messages(&self, n: usize) {
        if self.enabled {
            self.poll_messages.observe(n as f64);
        }
    }

    /// One published message reached `n` subscribers.
    pub fn observe_fanout(&self, n: usize) {
        if self.enabled {
            self.fanout.observe(n as f64);
        }
    }

    /// One published message was queued for its subscribers this long after
    /// its request was read.
    pub fn observe_publish_to_queue(&self, elapsed: Duration) {
        if self.enabled {
            self.publish_to_queue.observe(elapsed.as_secs_f64());
        }
    }

    /// Marks the node as accepting connections (`true`) or draining (`false`).
    pub fn set_ready(&self, ready: bool) {
        self.ready.store(ready, Ordering::Relaxed);
    }

    /// Whether the node accepts connections (what `/readyz` answers).
    pub fn is_ready(&self) -> bool {
        self.ready.load(Ordering::Relaxed)
    }

    /// The `/metrics` page: `stats` (as `Node::stats` gives it) mirrored
    /// into metrics, the readiness gauge and the histograms, in the
    /// Prometheus text format.
    pub fn render(&self, stats: &[(Cow<'static, str>, String)]) -> String {
        let mut families: Vec<MetricFamily> = Vec::new();
        for (name, value) in stats {
            if name == "version" {
                let info = IntGauge::with_opts(
                    Opts::new(
                        "kraken_build_info",
                        "The node's version, as a label; always 1.",
                    )
                    .const_label("version", value.as_str()),
                )
                .expect("valid gauge options");
                info.set(1);
                families.extend(info.collect());
            } else if let Some(family) = stat_family(name, value) {
                families.push(family);
            }
        }
        let ready = IntGauge::new(
            "kraken_ready",
            "1 while the node accepts connections, 0 while it drains.",
        )
        .expect("valid gauge options");
        ready.set(i64::from(self.is_ready()));
        families.extend(ready.collect());
        for h in [&self.poll_messages, &self.fanout, &self.publish_to_queue] {
            families.extend(h.collect());
        }
        families.sort_by(|a, b| a.name().cmp(b.name()));
        let mut text = String::new();
        TextEncoder::new()
            .encode_utf8(&families, &mut text)
            .expect("text encoding of valid metrics");
        text
    }
}

/// The metric of one `stats` line, if its value is a number and its name
/// makes a valid metric name.
fn stat_family(name: &str, value: &str) -> Option<MetricFamily> {
    let (kind, help) = STATS
        .iter()
        .find(|(n, _, _)| *n == name)
        .map(|(_, kind, help)| (*kind, Cow::Borrowed(*help)))
        .unwrap_or_else(|| {
            (
                Kind::Gauge,
                Cow::Owned(format!("The `stats` value {name}.")),
            )
        });
    let value: f64 = value.trim().parse().ok()?;
    let metric = format!("kraken_{name}");
    let mut families = match kind {
        Kind::Counter => {
            let c = IntCounter::new(format!("{metric}_total"), help).ok()?;
            c.inc_by(value as u64);
            c.collect()
        }
        Kind::Gauge if value.fract() == 0.0 && value.abs() < i64::MAX as f64 => {
            let g = IntGauge::new(metric, help).ok()?;
            g.set(value as i64);
            g.collect()
        }
        Kind::Gauge => {
            let g = prometheus::Gauge::new(metric, help).ok()?;
            g.set(value);
            g.collect()
        }
    };
    families.pop()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stats(pairs: &[(&'static str, &str)]) -> Vec<(Cow<'static, str>, String)> {
        pairs
            .iter()
            .map(|(n, v)| (Cow::Borrowed(*n), v.to_string()))
            .collect()
    }

    #[test]
    fn counters_take_total_gauges_do_not_and_text_values_are_skipped() {
        let m = Metrics::new(true);
        let text = m.render(&stats(&[
            ("messages_published", "7"),
            ("curr_connections", "3"),
            ("version", "1.0.0"),
            ("some_future_stat", "2.5"),
            ("not_a_number", "abc"),
        ]));
        assert!(
            text.contains("# TYPE kraken_messages_published_total counter\n"),
            "{text}"
        );
        assert!(
            text.contains("\nkraken_messages_published_total 7\n"),
            "{text}"
        );
        assert!(
            text.contains("# TYPE kraken_curr_connections gauge\n"),
            "{text}"
        );
        assert!(text.contains("\nkraken_curr_connections 3\n"), "{text}");
        assert!(
            text.contains("kraken_build_info{version=\"1.0.0\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("# HELP kraken_some_future_stat The `stats` value some_future_stat.\n"),
            "{text}"
        );
        assert!(text.contains("\nkraken_some_future_stat 2.5\n"), "{text}");
        assert!(!text.contains("not_a_number"), "{text}");
        assert!(text.contains("\nkraken_ready 0\n"), "{text}");
        m.set_ready(true);
        assert!(m.render(&[]).contains("\nkraken_ready 1\n"));
    }

    #[test]
    fn histograms_count_observations_into_buckets() {
        let m = Metrics::new(true);
        m.observe_poll_messages(0);
        m.observe_poll_messages(3);
        m.observe_fanout(1000);
        m.observe_publish_to_queue(Duration::from_micros(30));
        let text = m.render(&[]);
        assert!(
            text.contains("kraken_poll_messages_bucket{le=\"0\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("kraken_poll_messages_bucket{le=\"5\"} 2\n"),
            "{text}"
        );
        assert!(text.contains("kraken_poll_messages_count 2\n"), "{text}");
        assert!(text.contains("kraken_poll_messages_sum 3\n"), "{text}");
        assert!(
            text.contains("kraken_publish_fanout_bucket{le=\"500\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("kraken_publish_fanout_bucket{le=\"1000\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("kraken_publish_to_queue_seconds_bucket{le=\"0.00002\"} 0\n"),
            "{text}"
        );
        assert!(
            text.contains("kraken_publish_to_queue_seconds_bucket{le=\"0.00005\"} 1\n"),
            "{text}"
        );
        assert!(
            text.contains("kraken_publish_to_queue_seconds_bucket{le=\"+Inf\"} 1\n"),
            "{text}"
        );
    }

    #[test]
    fn histograms_stay_empty_when_disabled() {
        let m = Metrics::new(false);
        m.observe_poll_messages(3);
        m.observe_fanout(3);
        m.observe_publish_to_queue(Duration::from_millis(1));
        let text = m.render(&[]);
        assert!(text.contains("kraken_poll_messages_count 0\n"), "{text}");
        assert!(text.contains("kraken_publish_fanout_count 0\n"), "{text}");
        assert!(
            text.contains("kraken_publish_to_queue_seconds_count 0\n"),
            "{text}"
        );
    }

    #[test]
    fn every_known_stat_has_help_and_a_valid_name() {
        for (name, kind, help) in STATS {
            assert!(!help.is_empty(), "{name}");
            let family = stat_family(name, "1").unwrap_or_else(|| panic!("{name}"));
            let want = match kind {
                Kind::Counter => format!("kraken_{name}_total"),
                Kind::Gauge => format!("kraken_{name}"),
            };
            assert_eq!(family.name(), want);
        }
    }
}
