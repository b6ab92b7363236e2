//! `COMMAND --key value ... [--keep] [-- REST...]`: the bench's command
//! line (cargo bench appends `--bench`, dropped before this).

use crate::common::ROOT;
use anyhow::{Context as _, Result, anyhow};
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// `COMMAND --key value ... [--flag] [-- REST...]`.
pub(crate) struct Args {
    pub(crate) cmd: String,
    pub(crate) opts: HashMap<String, String>,
    pub(crate) rest: Vec<String>,
}

impl Args {
    pub(crate) fn parse(argv: &[String]) -> Result<Args> {
        let (cmd, tail) = argv.split_first().context("no command")?;
        let mut opts = HashMap::new();
        let mut rest = Vec::new();
        let mut it = tail.iter();
        while let Some(a) = it.next() {
            if a == "--" {
                rest = it.cloned().collect();
                break;
            }
            let key = a
                .strip_prefix("--")
                .with_context(|| format!("unexpected argument '{a}'"))?;
            if key == "keep" {
                opts.insert(key.to_owned(), "1".to_owned());
                continue;
            }
            let value = it
                .next()
                .with_context(|| format!("--{key} needs a value"))?;
            opts.insert(key.to_owned(), value.clone());
        }
        Ok(Args {
            cmd: cmd.clone(),
            opts,
            rest,
        })
    }

    pub(crate) fn num<T: std::str::FromStr>(&self, key: &str, default: T) -> Result<T> {
        match self.opts.get(key) {
            None => Ok(default),
            Some(v) => v
                .parse()
                .map_err(|_| anyhow!("--{key}: not a number: '{v}'")),
        }
    }

    pub(crate) fn text(&self, key: &str) -> Result<&str> {
        self.opts
            .get(key)
            .map(String::as_str)
            .with_context(|| format!("--{key} is required"))
    }

    pub(crate) fn list(&self, key: &str, default: &[usize]) -> Result<Vec<usize>> {
        match self.opts.get(key) {
            None => Ok(default.to_vec()),
            Some(v) => v
                .split(',')
                .map(|x| {
                    x.trim()
                        .parse()
                        .map_err(|_| anyhow!("--{key}: not a list of numbers: '{v}'"))
                })
                .collect(),
        }
    }

    /// `key`, else `fallback` (so `all` can give fan-out and convergence
    /// different lists while each command alone takes `--n`).
    pub(crate) fn list_or(
        &self,
        key: &str,
        fallback: &str,
        default: &[usize],
    ) -> Result<Vec<usize>> {
        if self.opts.contains_key(key) {
            self.list(key, default)
        } else {
            self.list(fallback, default)
        }
    }

    pub(crate) fn keep(&self) -> bool {
        self.opts.contains_key("keep")
    }

    pub(crate) fn out_dir(&self) -> PathBuf {
        self.opts
            .get("out")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(ROOT).join("target/bench-lab"))
    }
}
