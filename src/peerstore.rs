//! The persisted peer list: which peers we know, where they were last
//! seen, and their reliability state, so a restart (or days offline) does
//! not forget them.
//!
//! The file is JSON, written atomically: a temporary file in the same
//! directory, `fsync`, then `rename` over the old one, then `fsync` of the
//! directory. A crash at any point leaves either the old or the new list.
//! A file that cannot be parsed is moved aside (never deleted) and pigeon
//! starts with an empty list.
//!
//! The node hands out and takes back plain [`PeerList`] / [`PeerRecord`]
//! values; this module alone owns the file format ([`PeerFile`], times in
//! Unix seconds, keys in base64) and its [`FORMAT_VERSION`].

use crate::core::reliability::ReliabilitySums;
use crate::core::{PeerList, PeerRecord};
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use serde::{Deserialize, Serialize};
use std::io::Write as _;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::path::{Path, PathBuf};

/// Format version of the file.
pub const FORMAT_VERSION: u32 = 1;

/// Everything in the peer list file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PeerFile {
    /// [`FORMAT_VERSION`].
    pub version: u32,
    /// When it was written, Unix seconds.
    pub saved_at: u64,
    /// The peers.
    pub peers: Vec<StoredPeer>,
}

/// One remembered peer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StoredPeer {
    /// libp2p peer id (`12D3KooW…`), derived from `public_key`.
    pub peer_id: String,
    /// Ed25519 public key, standard base64: the peer's identity.
    pub public_key: String,
    /// Last announced unicast address.
    pub ip: Option<Ipv4Addr>,
    /// Last announced unicast port.
    pub port: Option<u16>,
    /// First verified datagram, Unix seconds.
    pub first_seen: u64,
    /// Last verified datagram, Unix seconds.
    pub last_seen: u64,
    /// Reliability accumulator (see `docs/PROTOCOL.md`, reliability).
    pub reliability: StoredReliability,
    /// Last reliability told to Slips, if any.
    pub reported_reliability: Option<f64>,
    /// Organisations whose membership it proved when the list was saved
    /// (shown by `pigeon peers`; never trusted on load: a membership is
    /// verified again from its announce).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub organisations: Vec<String>,
}

/// Decayed sums of weighted observations, as of `at_ms`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct StoredReliability {
    /// Σ weight × value.
    pub sum: f64,
    /// Σ weight.
    pub weight: f64,
    /// Time of the sums, Unix milliseconds.
    pub at_ms: u64,
}

impl PeerFile {
    /// The file that stores `list`, stamped with [`FORMAT_VERSION`].
    pub fn from_list(list: &PeerList) -> Self {
        Self {
            version: FORMAT_VERSION,
            saved_at: list.saved_at_ms / 1000,
            peers: list.peers.iter().map(StoredPeer::from_record).collect(),
        }
    }

    /// The records the node starts with. An entry whose key is not a valid
    /// (non-weak) ed25519 key is skipped, with a warning.
    pub fn into_records(self) -> Vec<PeerRecord> {
        self.peers
            .into_iter()
            .filter_map(|s| {
                let record = s.to_record();
                if record.is_none() {
                    tracing::warn!(peer = %crate::untrusted::Untrusted(&s.peer_id), "peer list: invalid public key, entry skipped");
                }
                record
            })
            .collect()
    }
}

impl StoredPeer {
    fn from_record(r: &PeerRecord) -> Self {
        Self {
            peer_id: r.peer_id.clone(),
            public_key: BASE64_STANDARD.encode(r.key.as_bytes()),
            ip: r.addr.map(|a| *a.ip()),
            port: r.addr.map(|a| a.port()),
            first_seen: r.first_seen_ms / 1000,
            last_seen: r.last_seen_ms / 1000,
            reliability: r.reliability.into(),
            reported_reliability: r.reported_reliability,
            organisations: r.organisations.clone(),
        }
    }

    /// The record, if the key decodes.
    fn to_record(&self) -> Option<PeerRecord> {
        Some(PeerRecord {
            peer_id: self.peer_id.clone(),
            key: crate::wire::decode_key(&self.public_key)?,
            addr: match (self.ip, self.port) {
                (Some(ip), Some(port)) => Some(SocketAddrV4::new(ip, port)),
                _ => None,
            },
            first_seen_ms: self.first_seen.saturating_mul(1000),
            last_seen_ms: self.last_seen.saturating_mul(1000),
            reliability: self.reliability.into(),
            reported_reliability: self.reported_reliability,
            organisations: self.organisations.clone(),
        })
    }
}

impl From<ReliabilitySums> for StoredReliability {
    fn from(s: ReliabilitySums) -> Self {
        Self {
            sum: s.sum,
            weight: s.weight,
            at_ms: s.at_ms,
        }
    }
}

impl From<StoredReliability> for ReliabilitySums {
    fn from(s: StoredReliability) -> Self {
        Self {
            sum: s.sum,
            weight: s.weight,
            at_ms: s.at_ms,
        }
    }
}

/// Why the peer list could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum PeerstoreError {
    /// Reading, writing or renaming failed.
    #[error("{path}: {source}")]
    Io {
        /// The file concerned.
        path: PathBuf,
        /// The OS error.
        source: std::io::Error,
    },
    /// Serialising failed (should not happen).
    #[error("{path}: cannot encode peer list: {source}")]
    Encode {
        /// The file concerned.
        path: PathBuf,
        /// The encoder's error.
        source: serde_json::Error,
    },
}

/// What loading found.
#[derive(Debug)]
pub enum Loaded {
    /// No file yet.
    Missing,
    /// The list.
    Peers(PeerFile),
    /// The file was unreadable or corrupt; it was moved to `moved_to` and
    /// the list starts empty.
    Corrupt {
        /// Where the bad file now is.
        moved_to: PathBuf,
        /// What was wrong with it.
        reason: String,
    },
}

/// Loads the peer list; a corrupt file is moved aside, never deleted.
pub fn load(path: &Path) -> Result<Loaded, PeerstoreError> {
    match load_read_only(path)? {
        Loaded::Corrupt { reason, .. } => {
            let moved_to = aside_name(path);
            std::fs::rename(path, &moved_to).map_err(|source| PeerstoreError::Io {
                path: path.to_owned(),
                source,
            })?;
            Ok(Loaded::Corrupt { moved_to, reason })
        }
        other => Ok(other),
    }
}

/// Loads the peer list without touching the file (for inspection); a
/// corrupt file is reported with `moved_to` equal to its own path.
pub fn load_read_only(path: &Path) -> Result<Loaded, PeerstoreError> {
    let text = match std::fs::read(path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Loaded::Missing),
        Err(source) => {
            return Err(PeerstoreError::Io {
                path: path.to_owned(),
                source,
            });
        }
    };
    let reason = match serde_json::from_slice::<PeerFile>(&text) {
        Ok(f) if f.version == FORMAT_VERSION => return Ok(Loaded::Peers(f)),
        Ok(f) => format!("unsupported format version {}", f.version),
        Err(e) => e.to_string(),
    };
    Ok(Loaded::Corrupt {
        moved_to: path.to_owned(),
        reason,
    })
}

fn aside_name(path: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let base = path.as_os_str().to_string_lossy();
    let mut candidate = PathBuf::from(format!("{base}.corrupt-{secs}"));
    let mut n = 1;
    while candidate.exists() {
        candidate = PathBuf::from(format!("{base}.corrupt-{secs}-{n}"));
        n += 1;
    }
    candidate
}

/// Writes the peer list atomically (temp file, fsync, rename, dir fsync).
pub fn save(path: &Path, file: &PeerFile) -> Result<(), PeerstoreError> {
    let io_err = |source| PeerstoreError::Io {
        path: path.to_owned(),
        source,
    };
    let bytes = serde_json::to_vec_pretty(file).map_err(|source| PeerstoreError::Encode {
        path: path.to_owned(),
        source,
    })?;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_owned(),
        _ => PathBuf::from("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".peers-")
        .suffix(".tmp")
        .tempfile_in(&dir)
        .map_err(io_err)?;
    // Only our user may read where peers are (whatever umask we inherited).
    {
        use std::os::unix::fs::PermissionsExt as _;
        tmp.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io_err)?;
    }
    tmp.write_all(&bytes).map_err(io_err)?;
    tmp.as_file().sync_all().map_err(io_err)?;
    tmp.persist(path).map_err(|e| io_err(e.error))?;
    if let Ok(d) = std::fs::File::open(&dir) {
        // Makes the rename itself durable; best effort on odd filesystems.
        let _ = d.sync_all();
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> PeerFile {
        PeerFile {
            version: FORMAT_VERSION,
            saved_at: 1_700_000_000,
            peers: vec![StoredPeer {
                peer_id: "12D3KooWtest".into(),
                public_key: "AAAA".into(),
                ip: Some(Ipv4Addr::new(10, 77, 0, 2)),
                port: Some(4001),
                first_seen: 1,
                last_seen: 2,
                reliability: StoredReliability {
                    sum: 3.0,
                    weight: 4.0,
                    at_ms: 5,
                },
                reported_reliability: Some(0.75),
                organisations: Vec::new(),
            }],
        }
    }

    #[test]
    fn save_then_load() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("peers.json");
        assert!(matches!(load(&p).unwrap(), Loaded::Missing));
        save(&p, &sample()).unwrap();
        match load(&p).unwrap() {
            Loaded::Peers(f) => assert_eq!(f, sample()),
            other => panic!("{other:?}"),
        }
        // No temporary files left behind.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn records_survive_the_file_at_second_precision() {
        let key = ed25519_dalek::SigningKey::from_bytes(&[7; 32]).verifying_key();
        let list = PeerList {
            saved_at_ms: 1_700_000_000_999,
            peers: vec![PeerRecord {
                peer_id: crate::identity::peer_id_of(&key),
                key,
                addr: Some(SocketAddrV4::new(Ipv4Addr::new(10, 77, 0, 2), 4001)),
                first_seen_ms: 1_000,
                last_seen_ms: 2_500,
                reliability: ReliabilitySums {
                    sum: 3.0,
                    weight: 4.0,
                    at_ms: 5,
                },
                reported_reliability: Some(0.75),
                organisations: vec!["12D3KooWExampleOrg".to_owned()],
            }],
        };
        let file = PeerFile::from_list(&list);
        assert_eq!(file.version, FORMAT_VERSION);
        assert_eq!(file.saved_at, 1_700_000_000);
        let back = file.into_records();
        let mut want = list.peers;
        want[0].last_seen_ms = 2_000;
        assert_eq!(back, want);
    }

    #[test]
    fn entry_with_an_invalid_key_is_skipped() {
        let mut file = sample();
        file.peers[0].public_key = "AAAA".into();
        assert_eq!(file.into_records(), Vec::new());
    }

    #[test]
    fn corrupt_file_is_moved_aside() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("peers.json");
        std::fs::write(&p, b"{not json").unwrap();
        match load(&p).unwrap() {
            Loaded::Corrupt { moved_to, .. } => {
                assert_eq!(std::fs::read(&moved_to).unwrap(), b"{not json");
                assert!(!p.exists());
            }
            other => panic!("{other:?}"),
        }
    }
}
