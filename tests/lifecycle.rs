//! `bin/kraken start|stop|status` and the drain on stop and SIGTERM
//! (README, "Start, stop, status"): `start` backgrounds the node and returns once it
//! accepts connections, or fails with the reason; `status` exits 0 only
//! while it runs; `stop` drains it, removes the pid file and exits 0.
//! Each test's nodes are killed when it ends, however it ends.

mod common;

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;

/// Nodes started in the background by one test: killed (if still running)
/// and their files removed on drop.
struct Background {
    dir: TempDir,
    pids: Vec<u32>,
    /// Files outside `dir` to remove (default control sockets).
    files: Vec<PathBuf>,
}

impl Background {
    fn new(what: &str) -> Background {
        Background {
            dir: TempDir::new(what),
            pids: Vec::new(),
            files: Vec::new(),
        }
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_str().unwrap().to_string()
    }

    /// `kraken start <options>`, remembering the pid it reports.
    fn start(&mut self, options: &[&str]) -> Output {
        let mut args = vec!["start"];
        args.extend_from_slice(options);
        let out = kraken(&args);
        if let Some(pid) = started_pid(&out.stdout) {
            self.pids.push(pid);
        }
        out
    }
}

impl Drop for Background {
    fn drop(&mut self) {
        for &pid in &self.pids {
            if process_alive(pid) {
                // SAFETY: a node this test started.
                unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
            }
        }
        for f in &self.files {
            let _ = std::fs::remove_file(f);
        }
    }
}

/// The pid in `Started: pid N, ...`.
fn started_pid(stdout: &str) -> Option<u32> {
    let rest = stdout.split("pid ").nth(1)?;
    rest.split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

/// The address in `... listening on 127.0.0.1:PORT, ...`.
fn listening_addr(stdout: &str) -> SocketAddr {
    let rest = stdout
        .split("listening on ")
        .nth(1)
        .unwrap_or_else(|| panic!("no `listening on` in {stdout:?}"));
    rest.split(',').next().unwrap().parse().expect("an address")
}

#[track_caller]
fn wait_gone(pid: u32) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while process_alive(pid) {
        assert!(Instant::now() < deadline, "pid {pid} still running");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn exists(path: &str) -> bool {
    Path::new(path).exists()
}

#[test]
fn start_returns_once_accepting_status_reports_it_and_stop_drains_and_removes_the_pid_file() {
    let mut bg = Background::new("lifecycle");
    let (ctl, pid_file, log_file) = (
        bg.path("ctl.sock"),
        bg.path("kraken.pid"),
        bg.path("kraken.log"),
    );
    let opts = [
        &loopback_args("0")[..],
        &[
            "-kraken",
            "control_socket",
            &ctl,
            "-kraken",
            "pid_file",
            &pid_file,
            "-kraken",
            "log_file",
            &log_file,
        ],
    ]
    .concat();
    let out = bg.start(&opts);
    assert_eq!(out.code, Some(0), "{}", out.text());
    let pid = started_pid(&out.stdout).unwrap_or_else(|| panic!("no pid: {}", out.text()));
    let addr = listening_addr(&out.stdout);

    // Accepting as soon as `start` returned, with the pid file written.
    let mut client = Client::connect(addr);
    client.subscribe(&["a"]);
    assert_eq!(
        std::fs::read_to_string(&pid_file).unwrap().trim(),
        pid.to_string()
    );
    let meta = std::fs::metadata(&ctl).unwrap();
    assert_eq!(
        std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o777,
        0o600
    );

    let status = kraken(&[&["status"][..], &opts[..]].concat());
    assert_eq!(status.code, Some(0), "{}", status.text());
    assert!(status.stdout.starts_with("Running"), "{}", status.text());
    assert!(
        status.stdout.contains(&format!("pid {pid}")),
        "{}",
        status.text()
    );
    assert!(
        status.stdout.contains(&addr.to_string()),
        "{}",
        status.text()
    );
    assert!(status.stdout.contains("1 clients"), "{}", status.text());

    let stop = kraken(&[&["stop"][..], &opts[..]].concat());
    assert_eq!(stop.code, Some(0), "{}", stop.text());
    assert!(stop.stdout.contains("Stopped"), "{}", stop.text());
    // `stop` returns once the node is gone, its files with it.
    assert!(!process_alive(pid), "pid {pid} still running after stop");
    assert!(!exists(&pid_file), "pid_file left behind");
    assert!(!exists(&ctl), "control socket left behind");
    client.expect_closed();
    assert!(
        TcpStream::connect(addr).is_err(),
        "still accepting after stop"
    );
    let log = std::fs::read_to_string(&log_file).unwrap();
    for line in [
        "accepting connections",
        "stop requested",
        "shutting down",
        "kraken stopped",
    ] {
        assert!(log.contains(line), "no `{line}` in the log:\n{log}");
    }

    let status = kraken(&[&["status"][..], &opts[..]].concat());
    assert_ne!(status.code, Some(0), "{}", status.text());
    assert!(
        status.stdout.starts_with("Not running"),
        "{}",
        status.text()
    );
}

#[test]
fn status_and_stop_with_nothing_running_say_so() {
    let bg = Background::new("nothing");
    let ctl = bg.path("ctl.sock");
    let opts = ["-kraken", "control_socket", &ctl];
    let status = kraken(&[&["status"][..], &opts[..]].concat());
    assert_eq!(status.code, Some(1), "{}", status.text());
    assert!(
        status.stdout.starts_with("Not running"),
        "{}",
        status.text()
    );
    assert!(status.stdout.contains(&ctl), "{}", status.text());
    // As the original: stopping a stopped node says so and succeeds.
    let stop = kraken(&[&["stop"][..], &opts[..]].concat());
    assert_eq!(stop.code, Some(0), "{}", stop.text());
    assert!(stop.stdout.starts_with("Not running"), "{}", stop.text());
    // The other control commands fail, saying why.
    for cmd in [&["dump_topics"][..], &["change_log_level", "debug"][..]] {
        let out = kraken(&[cmd, &opts[..]].concat());
        assert_eq!(out.code, Some(1), "{}", out.text());
        assert!(out.stderr.contains("Not running"), "{}", out.text());
    }
}

#[test]
fn start_fails_with_the_reason_when_the_port_is_taken() {
    let mut bg = Background::new("taken");
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port().to_string();
    let ctl = bg.path("ctl.sock");
    let out = bg.start(
        &[
            &loopback_args(&port)[..],
            &["-kraken", "control_socket", &ctl],
        ]
        .concat(),
    );
    assert_ne!(out.code, Some(0), "{}", out.text());
    assert!(
        out.stderr.contains("Address already in use"),
        "{}",
        out.text()
    );
    assert!(out.stderr.contains(&port), "{}", out.text());
    assert!(out.stderr.contains("did not start"), "{}", out.text());
    assert!(!exists(&ctl), "control socket left behind");
}

#[test]
fn start_fails_with_the_reason_on_a_bad_configuration() {
    let mut bg = Background::new("badconf");
    let ctl = bg.path("ctl.sock");
    let base = [
        &loopback_args("0")[..],
        &["-kraken", "control_socket", &ctl],
    ]
    .concat();
    let out = bg.start(&[&base[..], &["-kraken", "num_router_shards", "many"]].concat());
    assert_ne!(out.code, Some(0), "{}", out.text());
    assert!(out.stderr.contains("num_router_shards"), "{}", out.text());

    let out = bg.start(
        &[
            &base[..],
            &["-kraken", "log_file", "/nonexistent-kraken-dir/k.log"],
        ]
        .concat(),
    );
    assert_ne!(out.code, Some(0), "{}", out.text());
    assert!(
        out.stderr.contains("/nonexistent-kraken-dir/k.log"),
        "{}",
        out.text()
    );
    assert!(!exists(&ctl), "control socket left behind");
}

#[test]
fn start_refuses_a_second_node_on_the_same_control_socket_and_leaves_the_first_alone() {
    let mut bg = Background::new("twice");
    let ctl = bg.path("ctl.sock");
    let opts = [
        &loopback_args("0")[..],
        &["-kraken", "control_socket", &ctl],
    ]
    .concat();
    let first = bg.start(&opts);
    assert_eq!(first.code, Some(0), "{}", first.text());
    let pid = started_pid(&first.stdout).unwrap();
    let second = bg.start(&opts);
    assert_ne!(second.code, Some(0), "{}", second.text());
    assert!(
        second.stderr.contains("already running"),
        "{}",
        second.text()
    );
    let status = kraken(&[&["status"][..], &opts[..]].concat());
    assert!(
        status.stdout.contains(&format!("pid {pid}")),
        "{}",
        status.text()
    );
    assert_eq!(kraken(&[&["stop"][..], &opts[..]].concat()).code, Some(0));
}

#[test]
fn several_nodes_on_one_machine_are_each_addressable_by_their_port() {
    let mut bg = Background::new("several");
    let mut addrs = Vec::new();
    let mut ports = Vec::new();
    // The default runtime directory, as the node works it out from the same
    // environment.
    let runtime = kraken_actors::control::default_runtime_dir();
    for _ in 0..2 {
        let (port, out) = with_free_port(|port| {
            let port = port.to_string();
            // The default control socket, kraken-<port>.sock, tells them apart.
            bg.files.push(runtime.join(format!("kraken-{port}.sock")));
            bg.files.push(runtime.join(format!("kraken-{port}.log")));
            let out = bg.start(&loopback_args(&port));
            match out.code {
                Some(0) => Ok((port, out)),
                _ => Err(out.text()),
            }
        });
        assert!(
            out.stdout
                .contains(&format!("{}/kraken-{port}.sock", runtime.display())),
            "{}",
            out.text()
        );
        addrs.push(listening_addr(&out.stdout));
        ports.push(port);
    }
    // A client on each, with its own topic.
    let mut a = Client::connect(addrs[0]);
    a.subscribe(&["only-on-a"]);
    let mut b = Client::connect(addrs[1]);
    b.subscribe(&["only-on-b"]);
    for (i, port) in ports.iter().enumerate() {
        let port = port.to_string();
        let status = kraken(&["status", "-kraken", "tcp_server_port", &port]);
        assert_eq!(status.code, Some(0), "{}", status.text());
        assert!(
            status.stdout.contains(&addrs[i].to_string()),
            "{}",
            status.text()
        );
        let topics = kraken(&["dump_topics", "-kraken", "tcp_server_port", &port]);
        let want = if i == 0 {
            "only-on-a\t1\n"
        } else {
            "only-on-b\t1\n"
        };
        assert_eq!(topics.stdout, want, "{}", topics.text());
    }
    // Stopping one leaves the other running.
    let stop = kraken(&["stop", "-kraken", "tcp_server_port", &ports[0].to_string()]);
    assert_eq!(stop.code, Some(0), "{}", stop.text());
    a.expect_closed();
    b.expect_open_and_empty();
    let status = kraken(&[
        "status",
        "-kraken",
        "tcp_server_port",
        &ports[1].to_string(),
    ]);
    assert_eq!(status.code, Some(0), "{}", status.text());
    // Without a log_file, the node's output went to the runtime directory.
    let console =
        std::fs::read_to_string(runtime.join(format!("kraken-{}.log", ports[1]))).unwrap();
    assert!(console.contains("accepting connections"), "{console}");
    let stop = kraken(&["stop", "-kraken", "tcp_server_port", &ports[1].to_string()]);
    assert_eq!(stop.code, Some(0), "{}", stop.text());
}

#[test]
fn a_killed_nodes_stale_control_socket_and_pid_file_do_not_block_a_restart() {
    let mut bg = Background::new("stale");
    let (ctl, pid_file) = (bg.path("ctl.sock"), bg.path("kraken.pid"));
    let opts = [
        &loopback_args("0")[..],
        &[
            "-kraken",
            "control_socket",
            &ctl,
            "-kraken",
            "pid_file",
            &pid_file,
        ],
    ]
    .concat();
    let out = bg.start(&opts);
    assert_eq!(out.code, Some(0), "{}", out.text());
    let pid = started_pid(&out.stdout).unwrap();
    // SAFETY: the node this test started.
    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
    wait_gone(pid);
    assert!(
        exists(&ctl) && exists(&pid_file),
        "SIGKILL cleans nothing up"
    );

    let status = kraken(&[&["status"][..], &opts[..]].concat());
    assert_eq!(status.code, Some(1), "{}", status.text());
    assert!(status.stdout.contains("Not running"), "{}", status.text());
    let stop = kraken(&[&["stop"][..], &opts[..]].concat());
    assert_eq!(stop.code, Some(0), "{}", stop.text());
    assert!(stop.stdout.contains("stale pid_file"), "{}", stop.text());
    assert!(!exists(&pid_file));

    let again = bg.start(&opts);
    assert_eq!(again.code, Some(0), "{}", again.text());
    Client::connect(listening_addr(&again.stdout)).expect_open_and_empty();
    assert_eq!(kraken(&[&["stop"][..], &opts[..]].concat()).code, Some(0));
}

/// SIGTERM drains as `stop` does: a reply already asked for is written in
/// full (here one 12 MiB message the client has not read yet when the
/// signal comes; a poll carries one message that large, the rest would
/// follow with later polls), then the connection is closed, the pid file
/// removed, and the exit is 0.
#[test]
fn sigterm_answers_what_is_in_flight_removes_the_pid_file_and_exits_0() {
    let bg = Background::new("sigterm");
    let pid_file = bg.dir.join("kraken.pid");
    let mut node = Node::start(&[("pid_file", pid_file.to_str().unwrap())]);
    // Written just after the node logs that it accepts connections.
    let deadline = Instant::now() + ASYNC_TIMEOUT;
    while std::fs::read_to_string(&pid_file)
        .ok()
        .map(|p| p.trim().to_string())
        != Some(node.pid().to_string())
    {
        assert!(Instant::now() < deadline, "pid_file not written");
        std::thread::sleep(Duration::from_millis(10));
    }
    let mut sub = node.connect();
    sub.subscribe(&["t"]);
    let mut publisher = node.connect();
    let payload = pseudo_random_bytes(12 * 1024 * 1024, 7);
    const N: usize = 3;
    for _ in 0..N {
        publisher.publish1("t", &payload);
    }
    sub.send(b"get messages\r\n");
    assert!(sub.wait_readable(REPLY_TIMEOUT), "no reply began");
    node.signal(libc::SIGTERM);

    let reply = sub.read_messages_reply();
    let start = reply.iter().position(|&b| b == b'\n').unwrap() + 1;
    let msgs = parse_entries(&reply[start..reply.len() - 5]);
    assert_eq!(msgs.len(), 1, "one 12 MiB message per poll, sent whole");
    assert!(msgs
        .iter()
        .all(|m| m.topics == ["t"] && m.payload == payload));
    sub.expect_closed();

    let status = node
        .wait_exit(Duration::from_secs(15))
        .expect("exits after SIGTERM");
    assert_eq!(
        status.code(),
        Some(0),
        "log:\n{}",
        node.log_lines().join("\n")
    );
    assert!(!pid_file.exists(), "pid_file left behind");
    assert!(
        !node.control_socket().exists(),
        "control socket left behind"
    );
    assert!(TcpStream::connect(node.addr()).is_err(), "still accepting");
    let log = node.log_lines().join("\n");
    assert!(log.contains("shutting down"), "{log}");
}
