//! `pigeon`: the binary. Thin: command line → configuration → logging →
//! [`pigeon::runtime::run`]. Exit codes follow the Go Pigeon: 2 for a bad
//! command line or configuration, 1 for a start-up failure, 0 otherwise
//! (Slips stops its P2P module on any non-zero exit).

mod ops;
mod org_ops;

use anyhow::Context as _;
use pigeon::cli::{self, Command};
use pigeon::config::Config;
use std::ffi::OsString;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

fn main() -> ExitCode {
    let mut args: Vec<OsString> = std::env::args_os().collect();
    let argv0 = if args.is_empty() {
        OsString::from("pigeon")
    } else {
        args.remove(0)
    };
    let command = match cli::parse(args) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("{e}");
            eprintln!("{}", cli::usage(&Config::default().usage_defaults()));
            return ExitCode::from(2);
        }
    };
    let result = match command {
        Command::Help => {
            println!("{}", cli::usage(&Config::default().usage_defaults()));
            return ExitCode::SUCCESS;
        }
        Command::Id { key_file } => ops::print_id(&key_file),
        Command::Peers {
            peerstore_file,
            json,
        } => ops::print_peers(&peerstore_file, json),
        Command::Status { socket, json } => ops::print_status(&socket, json),
        Command::Org(c) => match org_ops::run(c) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(1),
            Err(e) => Err(e),
        },
        Command::Run(args) => return run(&args, &binary_path(&argv0)),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("pigeon: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// The path we were started as, made absolute without resolving symlinks:
/// Slips' `VERSION` is found next to the `p2p4slips/` folder we were
/// started from, even if the binary itself is a link into a build tree.
fn binary_path(argv0: &OsString) -> PathBuf {
    let p = PathBuf::from(argv0);
    if p.components().count() > 1 {
        if p.is_absolute() {
            return p;
        }
        if let Ok(cwd) = std::env::current_dir() {
            return cwd.join(p);
        }
    }
    std::env::current_exe().unwrap_or(p)
}

fn run(args: &cli::CliArgs, binary: &Path) -> ExitCode {
    // Slips starts us with umask 0: nothing we create is for other users.
    pigeon::io::logging::private_umask();
    let config = match Config::load(args, binary.parent()) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("pigeon: {e}");
            return ExitCode::from(2);
        }
    };
    let base_dir = match std::env::current_dir() {
        Ok(d) => d,
        Err(e) => {
            eprintln!("pigeon: cannot read the working directory: {e}");
            return ExitCode::from(1);
        }
    };
    let _log_guard = match pigeon::io::logging::init(&config.log, &base_dir) {
        Ok(g) => g,
        Err(e) => {
            eprintln!("pigeon: {e}");
            return ExitCode::from(1);
        }
    };
    if !args.extra.is_empty() {
        tracing::warn!("ignored extra arguments: {:?}", args.extra);
    }
    let outcome = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")
        .and_then(|rt| {
            rt.block_on(pigeon::runtime::run(config, binary, &base_dir))
                .map_err(anyhow::Error::from)
        });
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!("pigeon stopped: {e:#}");
            ExitCode::from(1)
        }
    }
}
