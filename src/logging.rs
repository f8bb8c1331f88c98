//! Logging: slog to the console (stderr) or to `log_file`, one line per
//! event, filtered by a level that `change_log_level` can change while the
//! node runs.

use std::sync::{Arc, Mutex};

use kraken_actors::loglevel::{RuntimeLevel, RuntimeLevelFilter};
use kraken_actors::Settings;
use slog::{o, Drain, Logger};

/// Builds the node's logger and the handle that changes its level.
pub fn build(settings: &Settings) -> std::io::Result<(Logger, Arc<RuntimeLevel>)> {
    let level = RuntimeLevel::new(settings.log_level);
    let logger = match &settings.log_file {
        Some(path) => {
            let file = crate::daemon::open_log(path).map_err(|e| {
                std::io::Error::new(e.kind(), format!("log_file {}: {e}", path.display()))
            })?;
            let decorator = slog_term::PlainSyncDecorator::new(file);
            let drain = slog_term::FullFormat::new(decorator).build().fuse();
            wrap(drain, &level)
        }
        None => {
            let decorator = slog_term::PlainSyncDecorator::new(std::io::stderr());
            let drain = slog_term::FullFormat::new(decorator).build().fuse();
            wrap(drain, &level)
        }
    };
    Ok((logger, level))
}

fn wrap<D>(drain: D, level: &Arc<RuntimeLevel>) -> Logger
where
    D: Drain<Ok = (), Err = slog::Never> + Send + 'static,
{
    let filtered = RuntimeLevelFilter {
        inner: Mutex::new(drain).fuse(),
        level: level.clone(),
    }
    .fuse();
    Logger::root(filtered, o!())
}
