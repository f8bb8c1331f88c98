//! Hostile clients against the real binary: inputs built to crash, bloat or
//! stall the node (docs/HARDENING.md lists them and what each costs now).
//!
//! - A `MESSAGE` line naming one topic millions of times is one topic.
//! - An entry naming more distinct topics than `max_topics_per_message` is
//!   refused whole; the connection stays open.
//! - An oversized data block is skipped for about the CPU of reading it
//!   (measured from `/proc/<pid>/stat`), and a connection that keeps
//!   sending them is closed.
//! - `MESSAGE` lines and subscribe bodies padded with megabytes of spaces
//!   parse quickly and mean what they say.
//! - Local users: the runtime directory must be the node's own, the console
//!   log is never written through a planted symlink, and the control client
//!   refuses a socket served by another user (`SO_PEERCRED`). The cases that
//!   need a second user run as root (as CI does) with `setpriv`.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

const MIB: usize = 1024 * 1024;

/// The node's CPU time so far (user + system), from `/proc/<pid>/stat`.
fn cpu_time(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("read /proc/pid/stat");
    // Fields after the command name (which may hold spaces): state is
    // field 3, utime 14 and stime 15.
    let rest = stat.rsplit_once(')').expect("a stat line").1;
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    // SAFETY: sysconf has no preconditions.
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_millis(ticks * 1000 / per_second)
}

/// Sends `header`, then `n` bytes of `fill`, then `trailer`, in 1 MiB writes.
fn send_padded(client: &mut Client, header: &[u8], n: usize, fill: u8, trailer: &[u8]) {
    client.send(header);
    let chunk = vec![fill; MIB];
    let mut left = n;
    while left > 0 {
        let k = left.min(MIB);
        client.send(&chunk[..k]);
        left -= k;
    }
    client.send(trailer);
}

fn expect_version(client: &mut Client) {
    client.send(b"version\r\n");
    client.expect_line_starting("VERSION ");
}

// ---- Topics per message ------------------------------------------------------

#[test]
fn a_topic_named_millions_of_times_reaches_each_of_100_subscribers_once_listing_it_once() {
    let node = Node::start(&[]);
    let mut subscribers: Vec<Client> = (0..100)
        .map(|_| {
            let mut c = node.connect();
            c.subscribe(&["t"]);
            c
        })
        .collect();
    let mut publisher = node.connect();
    // 2 million namings of `t`: a 4 MiB header line.
    let names = 2_000_000;
    let block_len = b"MESSAGE ".len() + 2 * names + b"1\r\nx".len();
    let header = format!("set publish 0 0 {block_len}\r\nMESSAGE ");
    let started = Instant::now();
    send_padded(
        &mut publisher,
        header.as_bytes(),
        0,
        b' ',
        &[&b"t ".repeat(names)[..], b"1\r\nx\r\n"].concat(),
    );
    publisher.expect(b"STORED\r\n");
    assert!(
        started.elapsed() < Duration::from_secs(20),
        "took {:?}",
        started.elapsed()
    );
    for sub in &mut subscribers {
        expect_entries(sub, b"MESSAGE t 1\r\nx\r\n");
    }
    expect_version(&mut publisher);
}

#[test]
fn an_entry_naming_too_many_topics_is_refused_whole_and_the_connection_stays_open() {
    let node = Node::start(&[("max_topics_per_message", "3")]);
    let mut sub = node.connect();
    sub.subscribe(&["a", "d"]);
    let mut publisher = node.connect();
    let block = publish_block(&[(&["a"], b"first"), (&["a", "b", "c", "d"], b"second")]);
    publisher.send(&set_request("publish", &block));
    publisher.expect(b"CLIENT_ERROR too many topics in one message\r\n");
    // Nothing of the block was published.
    assert_nothing_arrives(&mut sub);
    // Repeats do not count: three distinct topics named six times is fine.
    publisher.publish(&[(&["a", "b", "c", "a", "b", "c"], b"ok")]);
    expect_entries(&mut sub, b"MESSAGE a 2\r\nok\r\n");
    expect_version(&mut publisher);
}

#[test]
fn the_default_topic_limit_is_ten_thousand() {
    let node = Node::start(&[]);
    let mut publisher = node.connect();
    let topics: Vec<String> = (0..10_001).map(|i| format!("t{i}")).collect();
    let refs: Vec<&str> = topics.iter().map(String::as_str).collect();
    publisher.send(&publish_request(&[(&refs, b"x")]));
    publisher.expect(b"CLIENT_ERROR too many topics in one message\r\n");
    publisher.publish(&[(&refs[..10_000], b"x")]);
}

// ---- Oversized blocks ----------------------------------------------------------

#[test]
fn an_oversized_block_is_skipped_for_about_the_cost_of_reading_it() {
    let node = Node::start(&[]);
    let mut client = node.connect();
    expect_version(&mut client);
    // 512 MiB, over the default 16 MiB limit. The node used to spend about
    // 14 s of CPU per GiB skipping (one 64-byte read at a time): about 7 s
    // here. Reading it from the socket in large reads costs well under 1 s.
    let n = 512 * MIB;
    let before = cpu_time(node.pid());
    let started = Instant::now();
    send_padded(
        &mut client,
        format!("set publish 0 0 {n}\r\n").as_bytes(),
        n,
        b'x',
        b"\r\n",
    );
    client.expect(b"CLIENT_ERROR data block too large\r\n");
    expect_version(&mut client);
    let used = cpu_time(node.pid()) - before;
    eprintln!(
        "skipping {} MiB took {:?} of node CPU, {:?} of wall time",
        n / MIB,
        used,
        started.elapsed()
    );
    assert!(
        used < Duration::from_secs(2),
        "skipping {} MiB cost the node {used:?} of CPU",
        n / MIB
    );
}

#[test]
fn a_connection_that_keeps_sending_oversized_blocks_is_closed() {
    let node = Node::start(&[("max_request_bytes", "1000")]);
    let oversized = set_request("publish", &[b'x'; 1001]);
    // Seven in a row, then an accepted request: the streak starts again.
    let mut client = node.connect();
    for _ in 0..7 {
        client.send(&oversized);
        client.expect(b"CLIENT_ERROR data block too large\r\n");
    }
    expect_version(&mut client);
    // Eight in a row: the eighth is answered, then the connection closes.
    for _ in 0..8 {
        client.send(&oversized);
        client.expect(b"CLIENT_ERROR data block too large\r\n");
    }
    client.expect_closed();
    expect_version(&mut node.connect());
}

// ---- Padding ---------------------------------------------------------------

#[test]
fn message_lines_and_subscribe_bodies_padded_with_megabytes_of_spaces_parse_quickly() {
    let node = Node::start(&[]);
    let pad = 15 * MIB;
    let before = cpu_time(node.pid());
    // A subscribe of two topics with 15 MiB of spaces between them.
    let mut sub = node.connect();
    let body_len = 1 + pad + 1;
    send_padded(
        &mut sub,
        format!("set subscribe 0 0 {body_len}\r\na").as_bytes(),
        pad,
        b' ',
        b"b\r\n",
    );
    sub.expect(b"STORED\r\n");
    // A publish whose MESSAGE line is mostly spaces.
    let mut publisher = node.connect();
    let block_len = b"MESSAGE b".len() + pad + b" c 1\r\nx".len();
    send_padded(
        &mut publisher,
        format!("set publish 0 0 {block_len}\r\nMESSAGE b").as_bytes(),
        pad,
        b' ',
        b" c 1\r\nx\r\n",
    );
    publisher.expect(b"STORED\r\n");
    expect_entries(&mut sub, b"MESSAGE b 1\r\nx\r\n");
    let used = cpu_time(node.pid()) - before;
    eprintln!("two 15 MiB padded requests took {used:?} of node CPU");
    assert!(used < Duration::from_secs(2), "{used:?} of CPU");
    expect_version(&mut publisher);
}

// ---- Local users -------------------------------------------------------------

/// `uid` of the user `nobody`.
const NOBODY: u32 = 65534;

fn is_root() -> bool {
    // SAFETY: geteuid has no preconditions.
    unsafe { libc::geteuid() == 0 }
}

/// A fresh directory with `mode`.
fn dir_with_mode(tmp: &TempDir, name: &str, mode: u32) -> PathBuf {
    let dir = tmp.join(name);
    std::fs::create_dir(&dir).unwrap();
    std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(mode)).unwrap();
    dir
}

/// `kraken run` with this runtime directory and no `control_socket`: it
/// must refuse to start; returns what it said.
fn run_refused(runtime_dir: &Path) -> String {
    let out = kraken(&[
        "run",
        "-kraken",
        "listen_ip",
        "127.0.0.1",
        "-kraken",
        "tcp_server_port",
        "0",
        "-kraken",
        "runtime_dir",
        runtime_dir.to_str().unwrap(),
    ]);
    assert_ne!(out.code, Some(0), "{}", out.text());
    out.stderr
}

#[test]
fn a_runtime_dir_others_can_write_to_or_a_symlink_is_refused() {
    let tmp = TempDir::new("hostile-rtdir");
    let open = dir_with_mode(&tmp, "open", 0o777);
    let said = run_refused(&open);
    assert!(said.contains("writable by others"), "{said}");
    assert!(!open.join("kraken-0.sock").exists());

    let group = dir_with_mode(&tmp, "group", 0o770);
    let said = run_refused(&group);
    assert!(said.contains("writable by others"), "{said}");

    let real = dir_with_mode(&tmp, "real", 0o700);
    let link = tmp.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let said = run_refused(&link);
    assert!(said.contains("is a symlink"), "{said}");
}

#[test]
fn a_runtime_dir_owned_by_another_user_is_refused() {
    if !is_root() {
        eprintln!("skipped: chown to another user needs root (CI runs as root)");
        return;
    }
    let tmp = TempDir::new("hostile-owner");
    let theirs = dir_with_mode(&tmp, "theirs", 0o700);
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let said = run_refused(&theirs);
    assert!(said.contains(&format!("belongs to uid {NOBODY}")), "{said}");
}

#[test]
fn the_default_runtime_dir_is_created_private_and_holds_the_socket_and_console_log() {
    let tmp = TempDir::new("hostile-xdg");
    let xdg = dir_with_mode(&tmp, "xdg", 0o700);
    let env = [("XDG_RUNTIME_DIR", xdg.to_str().unwrap())];
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
        .to_string();
    let opts = [
        "-kraken",
        "listen_ip",
        "127.0.0.1",
        "-kraken",
        "tcp_server_port",
        &port,
    ];
    let start = kraken_with_env(&[&["start"][..], &opts].concat(), &env);
    assert_eq!(start.code, Some(0), "{}", start.text());
    let dir = xdg.join("kraken");
    let meta = std::fs::symlink_metadata(&dir).unwrap();
    assert!(meta.is_dir());
    assert_eq!(meta.mode() & 0o777, 0o700);
    assert!(dir.join(format!("kraken-{port}.sock")).exists());
    let console = std::fs::metadata(dir.join(format!("kraken-{port}.log"))).unwrap();
    assert_eq!(console.mode() & 0o777, 0o600);
    let status = kraken_with_env(&[&["status"][..], &opts].concat(), &env);
    assert_eq!(status.code, Some(0), "{}", status.text());
    let stop = kraken_with_env(&[&["stop"][..], &opts].concat(), &env);
    assert_eq!(stop.code, Some(0), "{}", stop.text());
}

#[test]
fn the_console_log_and_log_file_are_not_written_through_a_planted_symlink() {
    let tmp = TempDir::new("hostile-symlink");
    let runtime = dir_with_mode(&tmp, "run", 0o700);
    let victim = tmp.join("victim");
    std::fs::write(&victim, b"precious\n").unwrap();
    let port = "40999";
    std::os::unix::fs::symlink(&victim, runtime.join(format!("kraken-{port}.log"))).unwrap();
    let start = kraken(&[
        "start",
        "-kraken",
        "listen_ip",
        "127.0.0.1",
        "-kraken",
        "tcp_server_port",
        port,
        "-kraken",
        "runtime_dir",
        runtime.to_str().unwrap(),
    ]);
    assert_ne!(start.code, Some(0), "{}", start.text());
    assert!(start.stderr.contains("symlink"), "{}", start.text());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");

    // log_file, for `run`, likewise.
    let link = tmp.join("log-link");
    std::os::unix::fs::symlink(&victim, &link).unwrap();
    let run = kraken(&[
        "run",
        "-kraken",
        "listen_ip",
        "127.0.0.1",
        "-kraken",
        "tcp_server_port",
        "0",
        "-kraken",
        "control_socket",
        tmp.join("ctl.sock").to_str().unwrap(),
        "-kraken",
        "log_file",
        link.to_str().unwrap(),
    ]);
    assert_ne!(run.code, Some(0), "{}", run.text());
    assert!(run.stderr.contains("symlink"), "{}", run.text());
    assert_eq!(std::fs::read(&victim).unwrap(), b"precious\n");
}

#[test]
fn the_control_client_refuses_a_socket_served_by_another_user() {
    if !is_root() {
        eprintln!("skipped: running a node as another user needs root (CI runs as root)");
        return;
    }
    let setpriv = Path::new("/usr/bin/setpriv");
    assert!(
        setpriv.exists(),
        "this test needs setpriv (util-linux) to run a node as nobody"
    );
    let tmp = TempDir::new("hostile-peer");
    let theirs = dir_with_mode(&tmp, "theirs", 0o700);
    std::os::unix::fs::chown(&theirs, Some(NOBODY), Some(NOBODY)).unwrap();
    let socket = theirs.join("ctl.sock");
    // Another user's node (standing in for anyone who took the name first).
    let mut impostor = Command::new(setpriv)
        .args([
            &format!("--reuid={NOBODY}"),
            &format!("--regid={NOBODY}"),
            "--clear-groups",
        ])
        .arg(env!("CARGO_BIN_EXE_kraken"))
        .args(["run", "-kraken", "listen_ip", "127.0.0.1"])
        .args(["-kraken", "tcp_server_port", "0"])
        .args(["-kraken", "control_socket", socket.to_str().unwrap()])
        .env("KRAKEN_HOME", env!("CARGO_MANIFEST_DIR"))
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("start a node as nobody");
    let deadline = Instant::now() + Duration::from_secs(20);
    while !socket.exists() {
        assert!(
            impostor.try_wait().unwrap().is_none(),
            "the node as nobody exited"
        );
        assert!(Instant::now() < deadline, "no control socket appeared");
        std::thread::sleep(Duration::from_millis(20));
    }
    assert_eq!(std::fs::metadata(&socket).unwrap().uid(), NOBODY);
    let status = kraken(&[
        "status",
        "-kraken",
        "control_socket",
        socket.to_str().unwrap(),
    ]);
    let _ = impostor.kill();
    let _ = impostor.wait();
    assert_eq!(status.code, Some(1), "{}", status.text());
    assert!(
        status.stderr.contains(&format!("uid {NOBODY}"))
            && status.stderr.contains("refusing to talk to it"),
        "{}",
        status.text()
    );
}
