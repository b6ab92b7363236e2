//! Logging: stdout and daily-rotated files.
//!
//! Two outputs with the same filter:
//!
//! * stdout, without colours: Slips redirects the pigeon's stdout into its
//!   own `p2p.log` (or `/dev/null`), exactly as with the Go Pigeon;
//! * `<log.dir>/p2p.log.YYYY-MM-DD` (UTC dates, tracing-appender's daily
//!   rotation), `log.keep_days` past days kept, and a `p2p.log` symlink to
//!   today's file. Written by a background thread that never drops lines
//!   (`lossy(false)`): these are security logs, a slow disk slows logging
//!   rather than losing evidence.
//!
//! The filter is `log.level`, or `RUST_LOG` when set.
//!
//! Slips runs pigeon with umask 0. Whatever the umask, the log directory is
//! made 0700 and the log files 0600 ([`secure_dir`]), before anything is
//! opened in it; `main` also sets umask 077 first ([`private_umask`]), so
//! the files rotation creates later are 0600 too. tracing-appender opens
//! its files by name (following symlinks), so nothing planted in the
//! directory while it was open to others is kept: symlinks and files that
//! are not ours (other owner, hard links) among the log files are removed
//! before the appender starts, and once the directory is 0700 nobody else
//! can plant new ones.

use crate::config::LogConfig;
use std::os::unix::fs::{DirBuilderExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use tracing_appender::non_blocking::{NonBlockingBuilder, WorkerGuard};
use tracing_appender::rolling::{RollingFileAppender, Rotation};
use tracing_subscriber::EnvFilter;
use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;

/// Prefix of the log files: `p2p.log.2026-11-22`; also the symlink name.
const PREFIX: &str = "p2p.log";

/// Keeps the file writer alive. Hold it until the end of `main`: dropping
/// it flushes the lines still queued and stops the writer thread; lines
/// logged afterwards reach stdout only.
#[must_use = "dropping the guard stops file logging"]
pub struct LogGuard {
    _worker: WorkerGuard,
    dir: PathBuf,
}

impl std::fmt::Debug for LogGuard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogGuard")
            .field("dir", &self.dir)
            .finish_non_exhaustive()
    }
}

impl LogGuard {
    /// The absolute log directory, for a start-up log line.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

/// Logging could not be set up. pigeon should report it on stderr and
/// exit: running without its security log is not acceptable.
#[derive(Debug, thiserror::Error)]
pub enum LoggingError {
    /// The log directory cannot be created.
    #[error("log directory {}: cannot create: {source}", path.display())]
    CreateDir {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The log file cannot be opened (e.g. the directory is not writable).
    #[error("log directory {}: {source}", path.display())]
    File {
        /// The directory.
        path: PathBuf,
        /// tracing-appender's error (says what it was doing).
        #[source]
        source: tracing_appender::rolling::InitError,
    },
    /// The log directory's mode cannot be made 0700, or a planted entry
    /// cannot be removed.
    #[error("log directory {}: cannot make it private: {source}", path.display())]
    Secure {
        /// The directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// `log.level` or `RUST_LOG` is not a valid filter.
    #[error("{origin}: not a valid tracing filter \"{value}\": {reason}")]
    Filter {
        /// `log.level` or `RUST_LOG`.
        origin: &'static str,
        /// The filter text.
        value: String,
        /// The parser's message.
        reason: String,
    },
    /// A global subscriber is already installed (a second `init` in the
    /// same process, e.g. in tests).
    #[error("logging is already initialised in this process")]
    AlreadyInitialized,
}

/// Sets up logging as described in the module doc. `base_dir` resolves a
/// relative `cfg.dir` (normally the working directory).
pub fn init(cfg: &LogConfig, base_dir: &Path) -> Result<LogGuard, LoggingError> {
    let filter = make_filter(cfg)?;

    let dir = if cfg.dir.is_absolute() {
        cfg.dir.clone()
    } else {
        base_dir.join(&cfg.dir)
    };
    // Create it first: tracing-appender prunes before creating the file and
    // complains on stderr about a missing directory.
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(&dir)
        .map_err(|source| LoggingError::CreateDir {
            path: dir.clone(),
            source,
        })?;
    let mut warnings: Vec<String> = secure_dir(&dir).map_err(|source| LoggingError::Secure {
        path: dir.clone(),
        source,
    })?;
    // The symlink target is `dir/<file>`: relative, it would resolve from
    // inside `dir` and dangle.
    let dir = std::path::absolute(&dir).unwrap_or(dir);

    let keep = cfg.keep_days.saturating_add(1);
    let builder = || {
        RollingFileAppender::builder()
            .rotation(Rotation::DAILY)
            .filename_prefix(PREFIX)
            .max_log_files(keep)
    };
    // tracing-appender replaces an existing `p2p.log` with the symlink by
    // deleting it: only do that to a symlink of ours, never to a real file.
    let link = dir.join(PREFIX);
    let link_ok = match std::fs::symlink_metadata(&link) {
        Ok(m) => m.file_type().is_symlink(),
        Err(_) => true,
    };
    let appender = if link_ok {
        match builder().latest_symlink(PREFIX).build(&dir) {
            Ok(a) => a,
            Err(e) => {
                // E.g. a filesystem without symlinks: log without it.
                warnings.push(format!("no {PREFIX} symlink to today's log: {e}"));
                builder().build(&dir).map_err(|source| LoggingError::File {
                    path: dir.clone(),
                    source,
                })?
            }
        }
    } else {
        warnings.push(format!(
            "{} exists and is not a symlink: left alone, no link to today's log \
             (it may also be pruned as an old log: use a log directory of its own)",
            link.display()
        ));
        builder().build(&dir).map_err(|source| LoggingError::File {
            path: dir.clone(),
            source,
        })?
    };

    let (file_writer, worker) = NonBlockingBuilder::default()
        .lossy(false)
        .thread_name("pigeon-log")
        .finish(appender);

    tracing_subscriber::registry()
        .with(filter)
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(std::io::stdout),
        )
        .with(
            tracing_subscriber::fmt::layer()
                .with_ansi(false)
                .with_writer(file_writer),
        )
        .try_init()
        .map_err(|_| LoggingError::AlreadyInitialized)?;

    for w in warnings {
        tracing::warn!("{w}");
    }
    Ok(LogGuard {
        _worker: worker,
        dir,
    })
}

/// Sets the process umask to 077: files and directories pigeon creates are
/// for its user only, whatever it inherited (Slips runs it with umask 0).
/// Returns the previous umask.
pub fn private_umask() -> u32 {
    use nix::sys::stat::{Mode, umask};
    umask(Mode::from_bits_truncate(0o077)).bits()
}

/// Makes the log directory `dir` private (0700) and its log files 0600,
/// and removes what was planted among the log files: symlinks (other than
/// tracing-appender's own `p2p.log`, which it replaces itself and never
/// writes through) and files that are not ours or have other hard links.
/// Returns warnings to log once logging runs.
fn secure_dir(dir: &Path) -> std::io::Result<Vec<String>> {
    let mut warnings = Vec::new();
    let meta = std::fs::symlink_metadata(dir)?;
    if meta.file_type().is_symlink() {
        warnings.push(format!(
            "{} is a symlink; its target's mode is set to 0700",
            dir.display()
        ));
    }
    let meta = std::fs::metadata(dir)?;
    if meta.permissions().mode() & 0o7777 != 0o700 {
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))?;
    }
    let me = nix::unistd::geteuid().as_raw();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if !name.starts_with(PREFIX) {
            continue;
        }
        let path = entry.path();
        let m = std::fs::symlink_metadata(&path)?;
        let planted = if m.file_type().is_symlink() {
            (name != PREFIX).then_some("a symlink")
        } else if !m.file_type().is_file() {
            None
        } else if m.uid() != me {
            Some("owned by another user")
        } else if m.nlink() > 1 {
            Some("hard-linked elsewhere")
        } else {
            if m.permissions().mode() & 0o7777 != 0o600 {
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
            }
            None
        };
        if let Some(what) = planted {
            std::fs::remove_file(&path)?;
            warnings.push(format!(
                "removed {}: {what}, not a log file of ours (never written through)",
                path.display()
            ));
        }
    }
    Ok(warnings)
}

/// `RUST_LOG` if set and not empty, else `log.level`.
fn make_filter(cfg: &LogConfig) -> Result<EnvFilter, LoggingError> {
    let (origin, value) = match std::env::var(EnvFilter::DEFAULT_ENV) {
        Ok(v) if !v.trim().is_empty() => ("RUST_LOG", v),
        _ => ("log.level", cfg.level.clone()),
    };
    EnvFilter::builder()
        .parse(&value)
        .map_err(|e| LoggingError::Filter {
            origin,
            value,
            reason: e.to_string(),
        })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use testkit::wait::today_utc;

    #[test]
    fn writes_dated_file_and_symlink() {
        let base = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            dir: "logs".into(),
            keep_days: 1,
            level: "info".into(),
        };
        let guard = match init(&cfg, base.path()) {
            Ok(g) => g,
            // Another test of this process installed a subscriber first.
            Err(LoggingError::AlreadyInitialized) => return,
            Err(e) => panic!("{e}"),
        };
        assert!(guard.dir().is_absolute());
        tracing::info!("logging test line 8c1f");
        drop(guard);
        let dir = base.path().join("logs");
        let file = dir.join(format!("p2p.log.{}", today_utc()));
        let text = std::fs::read_to_string(&file).unwrap();
        assert!(text.contains("logging test line 8c1f"), "{text}");
        let link = dir.join("p2p.log");
        assert!(link.symlink_metadata().unwrap().file_type().is_symlink());
        assert_eq!(std::fs::read_to_string(&link).unwrap(), text);
    }

    fn mode(p: &Path) -> u32 {
        std::fs::symlink_metadata(p).unwrap().permissions().mode() & 0o7777
    }

    /// Under umask 0 a directory of 0777 and files of 0666 are tightened,
    /// and a symlink planted as today's file is removed, its target
    /// untouched.
    #[test]
    fn log_dir_is_made_private_and_planted_links_removed() {
        let base = tempfile::tempdir().unwrap();
        let dir = base.path().join("logs");
        std::fs::create_dir(&dir).unwrap();
        std::fs::set_permissions(&dir, std::fs::Permissions::from_mode(0o777)).unwrap();
        let old = dir.join("p2p.log.2000-01-01");
        std::fs::write(&old, "old\n").unwrap();
        std::fs::set_permissions(&old, std::fs::Permissions::from_mode(0o666)).unwrap();
        let victim = base.path().join("victim");
        std::fs::write(&victim, "precious\n").unwrap();
        let planted = dir.join(format!("p2p.log.{}", today_utc()));
        std::os::unix::fs::symlink(&victim, &planted).unwrap();
        let hard = dir.join("p2p.log.2000-01-02");
        std::fs::hard_link(&victim, &hard).unwrap();
        let unrelated = dir.join("notes.txt");
        std::fs::write(&unrelated, "x").unwrap();

        let warnings = secure_dir(&dir).unwrap();
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&old), 0o600);
        assert!(std::fs::symlink_metadata(&planted).is_err(), "{warnings:?}");
        assert!(std::fs::symlink_metadata(&hard).is_err(), "{warnings:?}");
        assert_eq!(std::fs::read_to_string(&victim).unwrap(), "precious\n");
        assert!(unrelated.exists());
        assert_eq!(warnings.len(), 2, "{warnings:?}");
    }

    #[test]
    fn unwritable_dir_is_an_error() {
        let base = tempfile::tempdir().unwrap();
        let not_a_dir = base.path().join("file");
        std::fs::write(&not_a_dir, b"x").unwrap();
        let cfg = LogConfig {
            dir: "logs".into(),
            ..LogConfig::default()
        };
        let e = init(&cfg, &not_a_dir).unwrap_err();
        assert!(matches!(e, LoggingError::CreateDir { .. }), "{e:?}");
        assert!(e.to_string().contains("cannot create"));
    }

    #[test]
    fn bad_level_is_an_error() {
        if std::env::var_os("RUST_LOG").is_some() {
            return;
        }
        let base = tempfile::tempdir().unwrap();
        let cfg = LogConfig {
            level: "info,[[[".into(),
            ..LogConfig::default()
        };
        let e = init(&cfg, base.path()).unwrap_err();
        assert!(
            matches!(
                e,
                LoggingError::Filter {
                    origin: "log.level",
                    ..
                }
            ),
            "{e:?}"
        );
    }
}
