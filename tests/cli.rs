//! Start-up options on the command line and in the environment (README, "Configuring"):
//! an unknown option or a bad value stops start-up with a message naming it.

mod common;

use common::*;

/// Runs `kraken run <args>` with the harness's safe defaults (loopback, a
/// free port, a private control socket) and returns (exit code, stdout +
/// stderr). Fails if it is still running after `COMMAND_TIMEOUT` (it should
/// have refused to start).
fn run_expecting_exit(args: &[&str], env: &[(&str, &str)]) -> (Option<i32>, String) {
    let dir = std::env::temp_dir().join(format!(
        "kraken-it-cli-{}-{}",
        std::process::id(),
        next_id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let socket = dir.join("ctl.sock");
    let all = [
        &["run"][..],
        &loopback_args("0"),
        &["-kraken", "control_socket", socket.to_str().unwrap()],
        args,
    ]
    .concat();
    let out = kraken_with_env(&all, env);
    let _ = std::fs::remove_dir_all(&dir);
    (out.code, format!("{}{}", out.stdout, out.stderr))
}

fn next_id() -> usize {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static N: AtomicUsize = AtomicUsize::new(0);
    N.fetch_add(1, Ordering::SeqCst)
}

#[track_caller]
fn assert_refused_naming(code: Option<i32>, text: &str, name: &str) {
    assert!(
        code != Some(0),
        "exit code 0 for a bad start-up; output:\n{text}"
    );
    assert!(
        text.to_lowercase().contains(name),
        "the message does not name `{name}`; output:\n{text}"
    );
}

#[test]
fn an_unknown_option_on_the_command_line_stops_start_up_naming_it() {
    let (code, text) = run_expecting_exit(&["-kraken", "no_such_option", "1"], &[]);
    assert_refused_naming(code, &text, "no_such_option");
}

#[test]
fn a_bad_value_on_the_command_line_stops_start_up_naming_the_option() {
    let (code, text) = run_expecting_exit(&["-kraken", "num_router_shards", "abc"], &[]);
    assert_refused_naming(code, &text, "num_router_shards");
}

#[test]
fn a_bad_log_level_stops_start_up_naming_the_option() {
    let (code, text) = run_expecting_exit(&["-kraken", "log_level", "loud"], &[]);
    assert_refused_naming(code, &text, "log_level");
}

#[test]
fn a_bad_value_in_the_environment_stops_start_up_naming_the_option() {
    let (code, text) = run_expecting_exit(&[], &[("KRAKEN_NUM_ROUTER_SHARDS", "abc")]);
    assert_refused_naming(code, &text, "num_router_shards");
}

#[test]
fn the_environment_sets_an_option_kraken_tcp_server_port() {
    // No port on the command line: the environment's 0 (a free port) must
    // be used, not the default 12355.
    let node = Node::start_with(NodeOptions {
        env: &[("KRAKEN_TCP_SERVER_PORT", "0")],
        no_port_arg: true,
        ..Default::default()
    });
    assert_ne!(node.port(), 12355, "KRAKEN_TCP_SERVER_PORT was ignored");
    node.connect().expect_open_and_empty();
}

#[test]
fn the_command_line_wins_over_the_environment() {
    let node = Node::start_with(NodeOptions {
        options: &[("max_tcp_clients", "1")],
        env: &[("KRAKEN_MAX_TCP_CLIENTS", "1000")],
        ..Default::default()
    });
    let mut first = node.connect();
    first.expect_open_and_empty();
    let mut second = node.connect();
    second.expect(b"SERVER_ERROR Too many clients\r\n");
    second.expect_closed();
}

#[test]
fn options_given_on_the_command_line_take_effect() {
    let node = Node::start(&[("num_router_shards", "3"), ("max_tcp_clients", "7")]);
    let stats = node.stats();
    if let Some(shards) = stats.get("router_shards") {
        assert_eq!(shards, "3", "{stats:?}");
    }
    if let Some(max) = stats.get("max_connections") {
        assert_eq!(max, "7", "{stats:?}");
    }
}

#[test]
fn the_tooling_variables_of_the_service_unit_do_not_stop_start_up() {
    // etc/kraken.service sets KRAKEN_NO_BUILD=1 and bin/kraken sets
    // KRAKEN_HOME: neither is an option, and the node must start with them.
    let node = Node::start_with(NodeOptions {
        env: &[
            ("KRAKEN_NO_BUILD", "1"),
            ("KRAKEN_HOME", env!("CARGO_MANIFEST_DIR")),
            ("KRAKEN_BIN", env!("CARGO_BIN_EXE_kraken")),
        ],
        ..Default::default()
    });
    node.connect().expect_open_and_empty();
}

#[test]
fn an_unknown_kraken_variable_still_stops_start_up_naming_it() {
    let (code, text) = run_expecting_exit(&[], &[("KRAKEN_NO_BUILDS", "1")]);
    assert_refused_naming(code, &text, "kraken_no_builds");
}
