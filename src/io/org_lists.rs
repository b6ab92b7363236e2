//! The directory of revocation lists (`org.revocation_dir`): files
//! `*.list` read at start and whenever one changes (polled), and the lists
//! the node received from peers written back (`<org id>.list`, a
//! temporary file renamed into place, mode 0600). Bounded: at most
//! [`MAX_FILES`] files of at most [`MAX_FILE_LEN`] bytes are read.

use std::collections::HashMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

/// How often the directory is looked at.
pub const POLL: std::time::Duration = std::time::Duration::from_secs(2);
/// Files read per poll, at most.
pub const MAX_FILES: usize = 64;
/// Larger files are skipped (a list's base64 is at most 832 bytes).
pub const MAX_FILE_LEN: u64 = 4096;

/// The watched directory.
#[derive(Debug)]
pub struct ListDir {
    dir: Option<PathBuf>,
    seen: HashMap<PathBuf, (SystemTime, u64)>,
}

impl ListDir {
    /// `dir` relative to `base_dir`; an empty `dir` watches nothing.
    pub fn new(dir: &Path, base_dir: &Path) -> Self {
        Self {
            dir: (!dir.as_os_str().is_empty()).then(|| base_dir.join(dir)),
            seen: HashMap::new(),
        }
    }

    /// Files that are new or changed since the last call: path and text.
    pub fn changed(&mut self) -> Vec<(PathBuf, String)> {
        let Some(dir) = &self.dir else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut out = Vec::new();
        for e in entries.flatten().take(MAX_FILES) {
            let path = e.path();
            if path.extension().is_none_or(|x| x != "list") {
                continue;
            }
            let Ok(meta) = std::fs::metadata(&path) else {
                continue;
            };
            if !meta.is_file() || meta.len() > MAX_FILE_LEN {
                continue;
            }
            let stamp = (
                meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                meta.len(),
            );
            if self.seen.get(&path) == Some(&stamp) {
                continue;
            }
            self.seen.insert(path.clone(), stamp);
            match std::fs::read_to_string(&path) {
                Ok(text) => out.push((path, text)),
                Err(e) => {
                    tracing::warn!(file = %path.display(), "cannot read revocation list: {e}")
                }
            }
        }
        out
    }

    /// Writes a list received from a peer as `<org id>.list`.
    pub fn save(&mut self, org: &str, text: &str) {
        let Some(dir) = &self.dir else {
            return;
        };
        // An org id is base58: no path separators can come from it.
        if org.is_empty() || !org.bytes().all(|b| b.is_ascii_alphanumeric()) {
            return;
        }
        let path = dir.join(format!("{org}.list"));
        let result = (|| -> std::io::Result<()> {
            std::fs::create_dir_all(dir)?;
            let mut tmp = tempfile::Builder::new()
                .prefix(".pigeon-list-")
                .tempfile_in(dir)?;
            tmp.write_all(text.as_bytes())?;
            tmp.write_all(b"\n")?;
            tmp.as_file().sync_all()?;
            tmp.persist(&path).map_err(|e| e.error)?;
            Ok(())
        })();
        match result {
            Ok(()) => {
                // Our own write is not news.
                if let Ok(meta) = std::fs::metadata(&path) {
                    let stamp = (
                        meta.modified().unwrap_or(SystemTime::UNIX_EPOCH),
                        meta.len(),
                    );
                    self.seen.insert(path, stamp);
                }
            }
            Err(e) => tracing::warn!(file = %path.display(), "cannot save revocation list: {e}"),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn new_and_changed_files_are_read_once_and_saves_are_not_news() {
        let dir = tempfile::tempdir().unwrap();
        let mut l = ListDir::new(Path::new("lists"), dir.path());
        assert!(l.changed().is_empty(), "no directory yet");
        l.save("12D3KooWabc", "AAAA");
        assert!(l.changed().is_empty(), "our own write");
        let p = dir.path().join("lists/other.list");
        std::fs::write(&p, "BBBB").unwrap();
        std::fs::write(dir.path().join("lists/notes.txt"), "x").unwrap();
        let got = l.changed();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].1, "BBBB");
        assert!(l.changed().is_empty());
        std::fs::write(&p, "BBBBBB").unwrap();
        assert_eq!(l.changed().len(), 1, "changed size");
        l.save("../evil", "x");
        assert!(!dir.path().join("evil.list").exists());
        let saved = std::fs::read_to_string(dir.path().join("lists/12D3KooWabc.list")).unwrap();
        assert_eq!(saved, "AAAA\n");
    }
}
