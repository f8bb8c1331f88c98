//! The `kraken` command line, as the original's `bin/kraken` took it:
//!
//! ```text
//! kraken <command> [args] [-config PATH] [-kraken OPTION VALUE]...
//! ```
//!
//! Options may come in any order after the command, and the command's own
//! arguments (the level of `change_log_level`, the id of
//! `dump_queue_topics`) may sit anywhere among them. `-octopus` is an alias
//! of `-kraken`, as the original's README spelled its application. `bench`
//! takes everything after it untouched. What the options mean is
//! `config.rs`'s business; this module only splits argv.

use std::path::PathBuf;

use kraken_actors::settings::LogLevel;

/// What `kraken` was asked to do.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the node in the foreground.
    Run,
    /// Start the node in the background; return once it accepts clients.
    Start,
    /// Stop the running node cleanly.
    Stop,
    /// Tell whether the node runs (exit 0) or not (non-zero).
    Status,
    /// Change the running node's log level.
    ChangeLogLevel(LogLevel),
    /// List every client queue.
    DumpQueues,
    /// List the topics of the client queue with this id (as `dump_queues`
    /// printed it).
    DumpQueueTopics(String),
    /// List topics with their subscriber counts, most first.
    DumpTopics,
    /// The load generator; its arguments are its own, passed untouched.
    Bench(Vec<String>),
    /// Print the usage text.
    Help,
    /// Print the version (`kraken --version`).
    Version,
}

/// A parsed command line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Cli {
    pub command: Command,
    /// `-config PATH`, as given (the extension may be missing, as Erlang
    /// wanted it).
    pub config_path: Option<PathBuf>,
    /// Every `-kraken OPTION VALUE` (and `-octopus OPTION VALUE`) pair in
    /// command-line order; later pairs win.
    pub pairs: Vec<(String, String)>,
}

impl Cli {
    /// The options again as arguments (`-config PATH -kraken OPTION VALUE
    /// ...`), e.g. for `start` to hand to the node it spawns.
    #[allow(dead_code)] // until `start` uses it
    pub fn option_args(&self) -> Vec<String> {
        let mut args = Vec::new();
        if let Some(path) = &self.config_path {
            args.push("-config".to_string());
            args.push(path.to_string_lossy().into_owned());
        }
        for (option, value) in &self.pairs {
            args.push("-kraken".to_string());
            args.push(option.clone());
            args.push(value.clone());
        }
        args
    }
}

/// The usage text for `kraken help`.
pub fn usage() -> &'static str {
    "\
Usage: kraken <command> [arguments] [options]

Commands:
  run                       run the node in the foreground
  start                     start the node in the background; returns once it accepts clients
  stop                      stop the running node cleanly
  status                    tell whether the node runs (exit status 0 if it does)
  change_log_level LEVEL    set the running node's log level: debug, info, warn or error
  dump_queues               list every client queue
  dump_queue_topics ID      list the topics of one client queue (ID from dump_queues)
  dump_topics               list topics with their subscriber counts, most first
  bench [ARGS...]           run the load generator (kraken bench --help)
  help                      print this text
  --version                 print the version

Options (any order, after the command):
  -config PATH              read PATH.config (Erlang terms) or PATH.toml; a PATH
                            ending in .config or .toml is read as that format
  -kraken OPTION VALUE      set one option, e.g. -kraken num_router_shards 8
                            (repeatable; -octopus OPTION VALUE is the same)

Options are also read from etc/kraken.toml and from KRAKEN_<OPTION> environment
variables; later sources win: etc/kraken.toml, -config, environment, -kraken.
KRAKEN_HOME, KRAKEN_NO_BUILD, KRAKEN_BIN, KRAKEN_LOG and KRAKEN_PROFILE belong to
the tooling and are not options.
The control commands find the node from the same options as the node itself.
"
}

/// Parses the arguments that follow the program name (for example
/// `std::env::args().skip(1)`).
pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Cli, String> {
    let mut args = args.into_iter();
    let Some(name) = args.next() else {
        return Err("no command given; try `kraken help`".to_string());
    };
    enum Wants {
        Nothing,
        Level,
        Id,
    }
    let wants = match name.as_str() {
        "help" | "--help" | "-h" | "-help" => return Ok(plain(Command::Help)),
        "version" | "--version" | "-version" | "-V" => return Ok(plain(Command::Version)),
        "bench" => return Ok(plain(Command::Bench(args.collect()))),
        "run" | "start" | "stop" | "status" | "dump_queues" | "dump_topics" => Wants::Nothing,
        "change_log_level" => Wants::Level,
        "dump_queue_topics" => Wants::Id,
        other if other.starts_with('-') => {
            return Err(format!(
                "expected a command before the option '{other}'; try `kraken help`"
            ))
        }
        other => {
            return Err(format!(
                "unknown command '{other}'; expected one of run, start, stop, status, \
                 change_log_level, dump_queues, dump_queue_topics, dump_topics, bench, help"
            ))
        }
    };

    let mut config_path: Option<PathBuf> = None;
    let mut pairs = Vec::new();
    let mut positional: Vec<String> = Vec::new();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "help" | "--help" | "-h" | "-help" => return Ok(plain(Command::Help)),
            "-config" => {
                let Some(path) = args.next() else {
                    return Err("-config needs a path, as in -config /etc/kraken".to_string());
                };
                if let Some(first) = &config_path {
                    return Err(format!(
                        "-config given twice ({} and {path}); give one file",
                        first.display()
                    ));
                }
                if path.is_empty() {
                    return Err("-config needs a path, not an empty string".to_string());
                }
                config_path = Some(PathBuf::from(path));
            }
            "-kraken" | "-octopus" => {
                let (Some(option), Some(value)) = (args.next(), args.next()) else {
                    return Err(format!(
                        "{arg} needs an option and a value, as in {arg} num_router_shards 8"
                    ));
                };
                pairs.push((option, value));
            }
            other if other.starts_with('-') && other.len() > 1 => {
                return Err(format!(
                    "unknown option '{other}'; expected -config PATH or -kraken OPTION VALUE"
                ));
            }
            _ => positional.push(arg),
        }
    }

    let mut positional = positional.into_iter();
    let command = match wants {
        Wants::Nothing => match name.as_str() {
            "run" => Command::Run,
            "start" => Command::Start,
            "stop" => Command::Stop,
            "status" => Command::Status,
            "dump_queues" => Command::DumpQueues,
            _ => Command::DumpTopics,
        },
        Wants::Level => {
            let Some(level) = positional.next() else {
                return Err(
                    "change_log_level needs a level: debug, info, warn or error".to_string()
                );
            };
            match LogLevel::parse(&level) {
                Some(l) => Command::ChangeLogLevel(l),
                None => {
                    return Err(format!(
                        "unknown log level '{level}'; expected debug, info, warn or error"
                    ))
                }
            }
        }
        Wants::Id => match positional.next() {
            Some(id) => Command::DumpQueueTopics(id),
            None => {
                return Err(
                    "dump_queue_topics needs a queue id, as dump_queues prints it".to_string(),
                )
            }
        },
    };
    if let Some(extra) = positional.next() {
        return Err(format!("unexpected argument '{extra}' for {name}"));
    }
    Ok(Cli {
        command,
        config_path,
        pairs,
    })
}

fn plain(command: Command) -> Cli {
    Cli {
        command,
        config_path: None,
        pairs: Vec::new(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse_str(line: &str) -> Result<Cli, String> {
        parse(line.split_whitespace().map(String::from))
    }

    fn ok(line: &str) -> Cli {
        parse_str(line).unwrap_or_else(|e| panic!("{line}: {e}"))
    }

    fn pairs(list: &[(&str, &str)]) -> Vec<(String, String)> {
        list.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn every_command() {
        assert_eq!(ok("run").command, Command::Run);
        assert_eq!(ok("start").command, Command::Start);
        assert_eq!(ok("stop").command, Command::Stop);
        assert_eq!(ok("status").command, Command::Status);
        assert_eq!(ok("dump_queues").command, Command::DumpQueues);
        assert_eq!(ok("dump_topics").command, Command::DumpTopics);
        assert_eq!(
            ok("change_log_level debug").command,
            Command::ChangeLogLevel(LogLevel::Debug)
        );
        assert_eq!(
            ok("change_log_level ERROR").command,
            Command::ChangeLogLevel(LogLevel::Error)
        );
        assert_eq!(
            ok("dump_queue_topics <0.123.0>").command,
            Command::DumpQueueTopics("<0.123.0>".to_string())
        );
        for help in ["help", "--help", "-h", "run --help", "status -config /x -h"] {
            assert_eq!(ok(help).command, Command::Help, "{help}");
        }
        assert!(usage().contains("dump_queue_topics ID"));
    }

    #[test]
    fn readme_examples() {
        let cli = ok("run -kraken num_router_shards 8 -kraken router_min_fanout_to_warn 1000");
        assert_eq!(cli.command, Command::Run);
        assert_eq!(cli.config_path, None);
        assert_eq!(
            cli.pairs,
            pairs(&[
                ("num_router_shards", "8"),
                ("router_min_fanout_to_warn", "1000")
            ])
        );
        let cli = ok("start -config /etc/kraken");
        assert_eq!(cli.command, Command::Start);
        assert_eq!(cli.config_path, Some(PathBuf::from("/etc/kraken")));
    }

    #[test]
    fn options_in_any_order_with_positionals_anywhere() {
        let cli = ok("dump_queue_topics -octopus a 1 -config /etc/k q7 -kraken b 2");
        assert_eq!(cli.command, Command::DumpQueueTopics("q7".to_string()));
        assert_eq!(cli.config_path, Some(PathBuf::from("/etc/k")));
        assert_eq!(cli.pairs, pairs(&[("a", "1"), ("b", "2")]));
        let cli = ok("change_log_level -config /etc/k warn");
        assert_eq!(cli.command, Command::ChangeLogLevel(LogLevel::Warn));
        // Values are taken as they are, even when they look like options.
        let cli =
            parse(["run", "-kraken", "pid_file", "-x", "-kraken", "a", "b c"].map(String::from))
                .unwrap();
        assert_eq!(cli.pairs, pairs(&[("pid_file", "-x"), ("a", "b c")]));
    }

    #[test]
    fn bench_takes_the_rest_untouched() {
        let cli = ok("bench --clients 10 -kraken x y -config z");
        assert_eq!(
            cli.command,
            Command::Bench(
                ["--clients", "10", "-kraken", "x", "y", "-config", "z"]
                    .map(String::from)
                    .to_vec()
            )
        );
        assert_eq!(cli.pairs, vec![]);
        assert_eq!(ok("bench").command, Command::Bench(vec![]));
    }

    #[test]
    fn option_args_round_trip() {
        let cli = ok("start -octopus a 1 -config /etc/k -kraken b 2");
        let mut again = vec!["run".to_string()];
        again.extend(cli.option_args());
        let back = parse(again).unwrap();
        assert_eq!(back.config_path, cli.config_path);
        assert_eq!(back.pairs, cli.pairs);
    }

    #[test]
    fn errors_name_what_is_wrong() {
        let cases = [
            ("", "no command given; try `kraken help`"),
            (
                "frobnicate",
                "unknown command 'frobnicate'; expected one of run, start, stop, status, \
                 change_log_level, dump_queues, dump_queue_topics, dump_topics, bench, help",
            ),
            (
                "-config /etc/kraken",
                "expected a command before the option '-config'; try `kraken help`",
            ),
            (
                "run -config",
                "-config needs a path, as in -config /etc/kraken",
            ),
            (
                "run -config /a -config /b",
                "-config given twice (/a and /b); give one file",
            ),
            (
                "run -kraken num_router_shards",
                "-kraken needs an option and a value, as in -kraken num_router_shards 8",
            ),
            (
                "run -octopus",
                "-octopus needs an option and a value, as in -octopus num_router_shards 8",
            ),
            (
                "run -sname kraken",
                "unknown option '-sname'; expected -config PATH or -kraken OPTION VALUE",
            ),
            ("run extra", "unexpected argument 'extra' for run"),
            (
                "change_log_level",
                "change_log_level needs a level: debug, info, warn or error",
            ),
            (
                "change_log_level loud",
                "unknown log level 'loud'; expected debug, info, warn or error",
            ),
            (
                "change_log_level info debug",
                "unexpected argument 'debug' for change_log_level",
            ),
            (
                "dump_queue_topics",
                "dump_queue_topics needs a queue id, as dump_queues prints it",
            ),
        ];
        for (line, want) in cases {
            assert_eq!(parse_str(line).unwrap_err(), want, "{line:?}");
        }
        assert_eq!(
            parse(["run", "-config", ""].map(String::from)).unwrap_err(),
            "-config needs a path, not an empty string"
        );
    }
}
