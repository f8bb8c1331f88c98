//! The HTTP metrics and health listener (`metrics_listen`), spoken to with
//! a real HTTP client (ureq): `/metrics` mirrors `stats` in the Prometheus
//! text format and carries the poll, fan-out and publish-latency
//! histograms (and `promtool check metrics` accepts it); `/healthz` is 200
//! while the node runs; `/readyz` is 200 while it accepts connections and
//! 503 once it drains; the listener is off unless configured.

mod common;

use std::collections::HashMap;
use std::io::Write;
use std::net::SocketAddr;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

/// A node with the metrics listener on a free loopback port.
fn node_with_metrics(extra: &[(&str, &str)]) -> (Node, SocketAddr) {
    let mut options = vec![("metrics_listen", "127.0.0.1:0")];
    options.extend_from_slice(extra);
    let node = Node::start(&options);
    let addr = metrics_addr(&node);
    (node, addr)
}

/// The address from the node's `metrics listening ... addr: 127.0.0.1:<port>` line.
fn metrics_addr(node: &Node) -> SocketAddr {
    assert!(
        node.log_contains("metrics listening"),
        "no `metrics listening` log line; log:\n{}",
        node.log_lines().join("\n")
    );
    let line = node
        .log_lines()
        .into_iter()
        .find(|l| l.contains("metrics listening"))
        .unwrap();
    let at = line.find("127.0.0.1:").expect("address in the line") + "127.0.0.1:".len();
    let port: String = line[at..]
        .chars()
        .take_while(|c| c.is_ascii_digit())
        .collect();
    SocketAddr::from(([127, 0, 0, 1], port.parse::<u16>().expect("a port")))
}

/// An HTTP answer: status, content type, body.
struct Answer {
    status: u16,
    content_type: String,
    body: String,
}

fn get(addr: SocketAddr, path: &str) -> Answer {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .timeout_global(Some(REPLY_TIMEOUT))
        .build()
        .into();
    let mut response = agent
        .get(&format!("http://{addr}{path}"))
        .call()
        .unwrap_or_else(|e| panic!("GET {path}: {e}"));
    Answer {
        status: response.status().as_u16(),
        content_type: response
            .headers()
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string(),
        body: response
            .body_mut()
            .read_to_string()
            .unwrap_or_else(|e| panic!("body of {path}: {e}")),
    }
}

/// The samples of a metrics page: `name{labels}` → value.
fn samples(page: &str) -> HashMap<String, f64> {
    page.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| {
            let (name, value) = l
                .rsplit_once(' ')
                .unwrap_or_else(|| panic!("bad line {l:?}"));
            let value = match value {
                "+Inf" => f64::INFINITY,
                v => v.parse().unwrap_or_else(|_| panic!("bad value in {l:?}")),
            };
            (name.to_string(), value)
        })
        .collect()
}

#[track_caller]
fn sample(samples: &HashMap<String, f64>, name: &str) -> f64 {
    *samples
        .get(name)
        .unwrap_or_else(|| panic!("no sample {name}; have {:?}", samples.keys()))
}

fn scrape(addr: SocketAddr) -> HashMap<String, f64> {
    let page = get(addr, "/metrics");
    assert_eq!(page.status, 200, "{}", page.body);
    samples(&page.body)
}

#[test]
fn metrics_mirror_stats_and_count_a_publish_and_a_poll() {
    let (node, addr) = node_with_metrics(&[]);
    let page = get(addr, "/metrics");
    assert_eq!(page.status, 200);
    assert!(
        page.content_type.starts_with("text/plain; version=0.0.4"),
        "Content-Type {:?}",
        page.content_type
    );
    // Every numeric `stats` line is there, with HELP and TYPE.
    let before = samples(&page.body);
    for (name, value) in node.stats() {
        if name == "version" {
            let info = format!("kraken_build_info{{version=\"{value}\"}}");
            assert_eq!(sample(&before, &info), 1.0);
            continue;
        }
        let metric = [format!("kraken_{name}"), format!("kraken_{name}_total")]
            .into_iter()
            .find(|m| before.contains_key(m))
            .unwrap_or_else(|| panic!("stats {name} has no metric:\n{}", page.body));
        assert!(page.body.contains(&format!("# HELP {metric} ")), "{metric}");
        assert!(page.body.contains(&format!("# TYPE {metric} ")), "{metric}");
    }
    assert_eq!(sample(&before, "kraken_messages_published_total"), 0.0);
    assert_eq!(sample(&before, "kraken_ready"), 1.0);
    for h in [
        "kraken_poll_messages",
        "kraken_publish_fanout",
        "kraken_publish_to_queue_seconds",
    ] {
        assert!(
            page.body.contains(&format!("# TYPE {h} histogram")),
            "{h}:\n{}",
            page.body
        );
        assert_eq!(sample(&before, &format!("{h}_count")), 0.0, "{h}");
        assert_eq!(
            sample(&before, &format!("{h}_bucket{{le=\"+Inf\"}}")),
            0.0,
            "{h}"
        );
    }

    // One subscriber, two published messages (one reaches it, one no one),
    // one poll that brings the one.
    let mut sub = node.connect();
    sub.subscribe(&["t"]);
    let mut publisher = node.connect();
    publisher.publish(&[(&["t"], b"hello"), (&["nobody"], b"lost")]);
    let got = poll_count(&mut sub, 1);
    assert_eq!(payloads(&got), ["hello"]);

    let after = scrape(addr);
    assert_eq!(sample(&after, "kraken_messages_published_total"), 2.0);
    assert_eq!(sample(&after, "kraken_messages_delivered_total"), 1.0);
    assert_eq!(sample(&after, "kraken_subscriptions"), 1.0);
    assert!(sample(&after, "kraken_curr_connections") >= 2.0);
    assert!(sample(&after, "kraken_total_connections_total") >= 2.0);
    // Fan-out: one message to 0 subscribers, one to 1.
    assert_eq!(sample(&after, "kraken_publish_fanout_count"), 2.0);
    assert_eq!(sample(&after, "kraken_publish_fanout_sum"), 1.0);
    assert_eq!(
        sample(&after, "kraken_publish_fanout_bucket{le=\"0\"}"),
        1.0
    );
    assert_eq!(
        sample(&after, "kraken_publish_fanout_bucket{le=\"1\"}"),
        2.0
    );
    // Latency: both messages observed, each well under a second.
    assert_eq!(sample(&after, "kraken_publish_to_queue_seconds_count"), 2.0);
    assert_eq!(
        sample(&after, "kraken_publish_to_queue_seconds_bucket{le=\"1\"}"),
        2.0
    );
    // Polls: poll_count may have polled empty first; exactly one poll
    // carried one message, none carried more.
    let polls = sample(&after, "kraken_poll_messages_count");
    assert!(polls >= 1.0, "{polls}");
    assert_eq!(sample(&after, "kraken_poll_messages_sum"), 1.0);
    assert_eq!(
        sample(&after, "kraken_poll_messages_bucket{le=\"0\"}"),
        polls - 1.0
    );
    assert_eq!(
        sample(&after, "kraken_poll_messages_bucket{le=\"1\"}"),
        polls
    );
}

#[test]
fn promtool_check_metrics_accepts_the_page() {
    let promtool = std::env::var("PROMTOOL").unwrap_or_else(|_| "promtool".to_string());
    let (node, addr) = node_with_metrics(&[]);
    // Something in every histogram.
    let mut sub = node.connect();
    sub.subscribe(&["t"]);
    node.connect().publish1("t", b"x");
    poll_count(&mut sub, 1);
    let page = get(addr, "/metrics").body;

    let mut child = Command::new(&promtool)
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| {
            panic!(
                "cannot run `{promtool} check metrics` ({e}): install Debian's `prometheus` \
                 package (`apt-get install prometheus`, .ci/run does) or set PROMTOOL"
            )
        });
    child
        .stdin
        .take()
        .unwrap()
        .write_all(page.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let said = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.status.success() && said.trim().is_empty(),
        "promtool check metrics: {:?}\n{said}\npage:\n{page}",
        out.status
    );
}

#[test]
fn healthz_and_readyz_answer_and_readyz_is_503_while_draining() {
    let (mut node, addr) = node_with_metrics(&[]);
    let health = get(addr, "/healthz");
    assert_eq!((health.status, health.body.as_str()), (200, "ok\n"));
    let ready = get(addr, "/readyz");
    assert_eq!((ready.status, ready.body.as_str()), (200, "ready\n"));
    assert_eq!(get(addr, "/nothing-here").status, 404);

    // Hold the drain open: a subscriber asks for two 12 MiB messages and
    // reads nothing, so the node cannot finish writing its answers (more
    // than the socket buffers hold) and waits for it.
    let mut sub = node.connect();
    sub.subscribe(&["t"]);
    let mut publisher = node.connect();
    let payload = pseudo_random_bytes(12 * 1024 * 1024, 3);
    publisher.publish1("t", &payload);
    publisher.publish1("t", &payload);
    node.wait_for_stat("messages_delivered", |n| n == 2);
    sub.send(b"get messages\r\nget messages\r\n");
    assert!(sub.wait_readable(REPLY_TIMEOUT), "no reply began");
    node.signal(libc::SIGTERM);

    let deadline = Instant::now() + ASYNC_TIMEOUT;
    loop {
        let ready = get(addr, "/readyz");
        if ready.status == 503 {
            assert_eq!(ready.body, "draining\n");
            break;
        }
        assert_eq!(ready.status, 200);
        assert!(
            Instant::now() < deadline,
            "/readyz stayed 200 after SIGTERM"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
    // Still running: alive, and the page says not ready.
    assert_eq!(get(addr, "/healthz").status, 200);
    assert_eq!(sample(&scrape(addr), "kraken_ready"), 0.0);
    assert!(node.wait_exit(Duration::ZERO).is_none(), "node ended early");

    // The subscriber goes away; the drain ends, the node exits 0.
    drop(sub);
    let status = node
        .wait_exit(Duration::from_secs(15))
        .expect("exits after SIGTERM");
    assert_eq!(status.code(), Some(0));
}

#[test]
fn the_listener_is_off_by_default_and_a_bad_address_is_refused() {
    let node = Node::start(&[]);
    assert!(
        !node
            .log_lines()
            .iter()
            .any(|l| l.contains("metrics listening")),
        "metrics listener started without metrics_listen"
    );
    drop(node);

    let out = kraken(&["run", "-kraken", "metrics_listen", "localhost"]);
    assert_eq!(out.code, Some(2), "a configuration error: {}", out.text());
    assert!(
        out.stderr.contains("metrics_listen") && out.stderr.contains("IP:PORT"),
        "{}",
        out.text()
    );

    // An address in use: the node does not start, and says which listener.
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let busy = taken.local_addr().unwrap().to_string();
    let dir = TempDir::new("metrics-busy");
    let ctl = dir.join("ctl.sock");
    let out = kraken(
        &[
            &["run"][..],
            &loopback_args("0"),
            &[
                "-kraken",
                "control_socket",
                ctl.to_str().unwrap(),
                "-kraken",
                "metrics_listen",
                &busy,
            ],
        ]
        .concat(),
    );
    assert_eq!(out.code, Some(1), "{}", out.text());
    assert!(
        out.stderr.contains(&format!("metrics_listen {busy}")),
        "{}",
        out.text()
    );
}
