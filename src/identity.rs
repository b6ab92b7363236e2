//! The peer's key: the key file and peer ids.
//!
//! Keys are ed25519. The key file holds libp2p's protobuf private-key
//! encoding (`PrivateKey { Type = Ed25519, Data = seed ‖ public }`), the
//! format of Go's `crypto.MarshalPrivateKey`, so the Go Pigeon can load a
//! pigeon key file and keeps it (it would overwrite a format it cannot
//! decode). Peer ids are libp2p's: base58 of the identity multihash of the
//! protobuf public key, `12D3KooW…` for ed25519.
//!
//! A key file is never destroyed: content that is not an ed25519 libp2p key
//! (the Go Pigeon's RSA key, garbage) and the old key on `-key-reset` are
//! renamed to `<name>.bak-<unix seconds>` beside it. New key files are
//! written atomically with mode 0600.

use ed25519_dalek::{SigningKey, VerifyingKey};
use std::fs;
use std::io::Write;
use std::path::{Path, PathBuf};

/// This peer's signing key and the peer id derived from it.
#[derive(Clone)]
pub struct Identity {
    signing_key: SigningKey,
    peer_id: String,
}

impl std::fmt::Debug for Identity {
    /// Shows the peer id only, so the secret key never reaches a log.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

impl Identity {
    /// A new random key, from the operating system's generator (not a
    /// user-space PRNG: this key may live for years).
    pub fn generate() -> Result<Identity, IdentityError> {
        use rand::TryRng;
        let mut seed = [0u8; 32];
        rand::rngs::SysRng
            .try_fill_bytes(&mut seed)
            .map_err(|e| IdentityError::Random(e.to_string()))?;
        Ok(Identity::from_seed(seed))
    }

    /// The key with this 32-byte ed25519 seed (RFC 8032 secret key).
    /// Deterministic: tests and tools use it to get known peer ids.
    pub fn from_seed(seed: [u8; 32]) -> Identity {
        let signing_key = SigningKey::from_bytes(&seed);
        let peer_id = peer_id_of(&signing_key.verifying_key());
        Identity {
            signing_key,
            peer_id,
        }
    }

    /// The key that signs our datagrams.
    pub fn signing_key(&self) -> &SigningKey {
        &self.signing_key
    }

    /// The public key peers verify our datagrams with.
    pub fn verifying_key(&self) -> VerifyingKey {
        self.signing_key.verifying_key()
    }

    /// Our libp2p peer id (`12D3KooW…`), the name Slips knows us by.
    pub fn peer_id(&self) -> &str {
        &self.peer_id
    }

    /// The key file content: libp2p protobuf encoding of the private key.
    pub fn to_protobuf(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(PRIVATE_PROTOBUF_PREFIX.len() + 64);
        out.extend_from_slice(&PRIVATE_PROTOBUF_PREFIX);
        out.extend_from_slice(&self.signing_key.to_keypair_bytes());
        out
    }

    /// Decodes a key file's content. Anything but a libp2p protobuf
    /// ed25519 private key (whose public half matches) is an error saying
    /// what it is, for the log line.
    pub fn from_protobuf(bytes: &[u8]) -> Result<Identity, KeyDecodeError> {
        let keypair = libp2p_identity::Keypair::from_protobuf_encoding(bytes)
            .map_err(KeyDecodeError::NotLibp2p)?;
        let key_type = keypair.key_type();
        let ed = keypair
            .try_into_ed25519()
            .map_err(|_| KeyDecodeError::NotEd25519(key_type))?;
        let full = ed.to_bytes();
        let mut seed = [0u8; 32];
        seed.copy_from_slice(&full[..32]);
        Ok(Identity::from_seed(seed))
    }
}

/// Protobuf header of an ed25519 `PrivateKey`: field 1 (Type) = 1
/// (Ed25519), field 2 (Data) of 64 bytes.
const PRIVATE_PROTOBUF_PREFIX: [u8; 4] = [0x08, 0x01, 0x12, 0x40];

/// The libp2p peer id string (`12D3KooW…`) of an ed25519 public key:
/// the identity multihash of the protobuf-encoded key in base58btc,
/// computed by `libp2p_identity`. Called once per new peer, not per
/// datagram (the peer table keeps the result).
pub fn peer_id_of(key: &VerifyingKey) -> String {
    match libp2p_identity::ed25519::PublicKey::try_from_bytes(key.as_bytes()) {
        Ok(pk) => libp2p_identity::PublicKey::from(pk)
            .to_peer_id()
            .to_base58(),
        // Unreachable for a `VerifyingKey` (already a valid point); an id
        // that matches no peer is the safe answer.
        Err(_) => String::from("invalid-key"),
    }
}

/// What [`load_or_create`] did, for the caller to log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyOutcome {
    /// Empty key file path: a one-time key, never saved (Go parity). The
    /// peer id changes every run, so peers cannot keep its reliability.
    Ephemeral,
    /// No file: a new key was written.
    Created,
    /// The existing key was loaded. `tightened_from`: the file was readable
    /// by group or others (mode shown) and was changed to 0600.
    Loaded {
        /// Previous permission bits, when they were tightened.
        tightened_from: Option<u32>,
    },
    /// The file held something else (e.g. the Go Pigeon's RSA key); it was
    /// renamed to `backup` and a new key written.
    ReplacedForeign {
        /// Where the old content now is, byte for byte.
        backup: PathBuf,
        /// What the old content was, e.g. "a libp2p key of unsupported type".
        reason: String,
    },
    /// `key_reset`: the old file was renamed to `backup`, a new key written.
    Reset {
        /// Where the old key now is.
        backup: PathBuf,
    },
}

/// Why bytes are not a pigeon key ([`Identity::from_protobuf`]).
#[derive(Debug, thiserror::Error)]
pub enum KeyDecodeError {
    /// Not a libp2p protobuf private key at all (or a corrupt one).
    #[error("not a libp2p ed25519 private key: {0}")]
    NotLibp2p(#[source] libp2p_identity::DecodingError),
    /// A libp2p key of another type, such as the Go Pigeon's RSA key.
    #[error("a libp2p {0:?} key, not ed25519")]
    NotEd25519(libp2p_identity::KeyType),
}

/// A key file problem that stops pigeon. Each names the file and reason.
#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    /// The file exists but cannot be read (permissions, a directory…).
    #[error("key file {}: cannot read: {source}", path.display())]
    Read {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// A new key was asked for at a path that exists (`pigeon org create`
    /// never replaces a key).
    #[error("key file {}: exists already (never overwritten)", path.display())]
    Exists {
        /// The path asked for.
        path: PathBuf,
    },
    /// The new key could not be written.
    #[error("key file {}: cannot write: {source}", path.display())]
    Write {
        /// The key file.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The old file could not be moved aside, so nothing was replaced.
    #[error("key file {}: cannot rename to backup {}: {source}", path.display(), backup.display())]
    Backup {
        /// The key file.
        path: PathBuf,
        /// The backup name tried.
        backup: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The file does not hold an ed25519 libp2p key (only from
    /// [`read_key_file`], which never replaces anything).
    #[error("key file {}: {source}", path.display())]
    Invalid {
        /// The key file.
        path: PathBuf,
        /// What is wrong with it.
        #[source]
        source: KeyDecodeError,
    },
    /// The operating system's random generator failed.
    #[error("cannot generate a key: no randomness from the operating system: {0}")]
    Random(String),
}

/// Loads the key at `path`, creating it if needed. See [`KeyOutcome`] for
/// the cases; an empty `path` gives a one-time key. Never deletes or
/// overwrites an existing file: it is renamed to a backup first.
pub fn load_or_create(
    path: &Path,
    key_reset: bool,
) -> Result<(Identity, KeyOutcome), IdentityError> {
    if path.as_os_str().is_empty() {
        return Ok((Identity::generate()?, KeyOutcome::Ephemeral));
    }
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let id = Identity::generate()?;
            write_new(path, &id, None)?;
            return Ok((id, KeyOutcome::Created));
        }
        Err(source) => {
            return Err(IdentityError::Read {
                path: path.to_owned(),
                source,
            });
        }
    };
    if key_reset {
        let id = Identity::generate()?;
        let backup = backup_name(path);
        write_new(path, &id, Some(&backup))?;
        return Ok((id, KeyOutcome::Reset { backup }));
    }
    match Identity::from_protobuf(&bytes) {
        Ok(id) => {
            let tightened_from = tighten_permissions(path);
            Ok((id, KeyOutcome::Loaded { tightened_from }))
        }
        Err(e) => {
            let id = Identity::generate()?;
            let backup = backup_name(path);
            write_new(path, &id, Some(&backup))?;
            let reason = e.to_string();
            Ok((id, KeyOutcome::ReplacedForeign { backup, reason }))
        }
    }
}

/// Reads an existing key file without creating or changing anything (for
/// `pigeon id`).
pub fn read_key_file(path: &Path) -> Result<Identity, IdentityError> {
    let bytes = fs::read(path).map_err(|source| IdentityError::Read {
        path: path.to_owned(),
        source,
    })?;
    Identity::from_protobuf(&bytes).map_err(|source| IdentityError::Invalid {
        path: path.to_owned(),
        source,
    })
}

/// Creates a new key file at `path` (mode 0600) and returns its key; an
/// error if `path` exists, which is never replaced (`pigeon org create`).
pub fn create_key_file(path: &Path) -> Result<Identity, IdentityError> {
    if fs::symlink_metadata(path).is_ok() {
        return Err(IdentityError::Exists {
            path: path.to_owned(),
        });
    }
    let id = Identity::generate()?;
    write_new(path, &id, None)?;
    Ok(id)
}

/// `<path>.bak-<unix seconds>`, or with `.1`, `.2`… appended if taken.
fn backup_name(path: &Path) -> PathBuf {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs());
    let mut base = path.as_os_str().to_owned();
    base.push(format!(".bak-{secs}"));
    let mut candidate = PathBuf::from(&base);
    let mut n = 1u32;
    while fs::symlink_metadata(&candidate).is_ok() {
        let mut s = base.clone();
        s.push(format!(".{n}"));
        candidate = PathBuf::from(s);
        n += 1;
    }
    candidate
}

/// The directory holding `path` (`.` for a bare file name).
fn parent_dir(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Writes `id` to `path` atomically: temp file in the same directory,
/// sync, mode 0600, then (after moving the old file to `backup`, if any)
/// rename into place without clobbering, then sync the directory.
fn write_new(path: &Path, id: &Identity, backup: Option<&Path>) -> Result<(), IdentityError> {
    let werr = |source| IdentityError::Write {
        path: path.to_owned(),
        source,
    };
    let dir = parent_dir(path);
    fs::create_dir_all(dir).map_err(werr)?;
    let mut tmp = tempfile::Builder::new()
        .prefix(".pigeon-key-")
        .tempfile_in(dir)
        .map_err(werr)?;
    tmp.write_all(&id.to_protobuf()).map_err(werr)?;
    tmp.as_file().sync_all().map_err(werr)?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        tmp.as_file()
            .set_permissions(fs::Permissions::from_mode(0o600))
            .map_err(werr)?;
    }
    if let Some(backup) = backup {
        fs::rename(path, backup).map_err(|source| IdentityError::Backup {
            path: path.to_owned(),
            backup: backup.to_owned(),
            source,
        })?;
    }
    match tmp.persist_noclobber(path) {
        Ok(_) => {}
        // Filesystems with neither RENAME_NOREPLACE nor hard links: the
        // name is free (checked), so a plain rename destroys nothing.
        Err(e)
            if e.error.kind() != std::io::ErrorKind::AlreadyExists
                && fs::symlink_metadata(path).is_err() =>
        {
            e.file.persist(path).map_err(|e| werr(e.error))?;
        }
        Err(e) => return Err(werr(e.error)),
    }
    // Make the rename durable; not all systems allow syncing a directory.
    if let Ok(d) = fs::File::open(dir) {
        let _ = d.sync_all();
    }
    Ok(())
}

/// Sets the key file to 0600 if group or others have any access. Returns
/// the old mode when changed; a failure is logged, not fatal (the key
/// still works, and the file may belong to another user).
fn tighten_permissions(path: &Path) -> Option<u32> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(path).ok()?.permissions().mode() & 0o7777;
        if mode & 0o077 == 0 {
            return None;
        }
        match fs::set_permissions(path, fs::Permissions::from_mode(0o600)) {
            Ok(()) => Some(mode),
            Err(e) => {
                tracing::warn!(
                    path = %path.display(),
                    mode = format_args!("{mode:o}"),
                    error = %e,
                    "key file is readable by others and cannot be restricted to 0600"
                );
                None
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = path;
        None
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    /// libp2p peer-ids spec test vector (private key, public key).
    const SPEC_PRIVATE: &str = "080112407e0830617c4a7de83925dfb2694556b12936c477a0e1feb2e148ec9da60fee7d1ed1e8fae2c4a144b8be8fd4b47bf3d3b34b871c3cacf6010f0e42d474fce27e";
    /// Its peer id (checked independently with a separate base58 encoder).
    const SPEC_PEER_ID: &str = "12D3KooWBtg3aaRMjxwedh83aGiUkwSxDwUZkzuJcfaqUmo7R3pq";

    fn hex(s: &str) -> Vec<u8> {
        (0..s.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
            .collect()
    }

    fn mode(p: &Path) -> u32 {
        fs::metadata(p).unwrap().permissions().mode() & 0o777
    }

    #[test]
    fn spec_vector() {
        let bytes = hex(SPEC_PRIVATE);
        let id = Identity::from_protobuf(&bytes).unwrap();
        assert_eq!(id.peer_id(), SPEC_PEER_ID);
        assert_eq!(id.to_protobuf(), bytes);
        let seed: [u8; 32] = bytes[4..36].try_into().unwrap();
        assert_eq!(Identity::from_seed(seed).peer_id(), SPEC_PEER_ID);
        assert_eq!(hex(&SPEC_PRIVATE[72..]), id.verifying_key().as_bytes());
    }

    #[test]
    fn peer_id_matches_libp2p_identity() {
        for _ in 0..32 {
            let id = Identity::generate().unwrap();
            let ours = id.peer_id().to_owned();
            assert!(ours.starts_with("12D3KooW"), "{ours}");
            let kp = libp2p_identity::Keypair::from_protobuf_encoding(&id.to_protobuf()).unwrap();
            assert_eq!(kp.public().to_peer_id().to_base58(), ours);
            // And round trip through the encoding.
            assert_eq!(
                Identity::from_protobuf(&id.to_protobuf())
                    .unwrap()
                    .peer_id(),
                ours
            );
        }
    }

    #[test]
    fn create_then_load_is_stable() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pigeon.keys");
        let (a, out) = load_or_create(&path, false).unwrap();
        assert_eq!(out, KeyOutcome::Created);
        assert_eq!(mode(&path), 0o600);
        let (b, out) = load_or_create(&path, false).unwrap();
        assert_eq!(
            out,
            KeyOutcome::Loaded {
                tightened_from: None
            }
        );
        assert_eq!(a.peer_id(), b.peer_id());
        assert_eq!(read_key_file(&path).unwrap().peer_id(), a.peer_id());
        // Nothing but the key file in the directory (no temp left over).
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);
    }

    #[test]
    fn creates_parent_dir_and_bare_name_works() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("sub/dir/k");
        let (_, out) = load_or_create(&path, false).unwrap();
        assert_eq!(out, KeyOutcome::Created);
        assert_eq!(parent_dir(Path::new("k")), Path::new("."));
    }

    #[test]
    fn foreign_content_is_backed_up() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pigeon.keys");
        // An RSA private key in libp2p protobuf framing (Type = 0), as the
        // Go Pigeon writes, truncated: the content is what matters.
        let mut rsa = vec![0x08, 0x00, 0x12, 0x05];
        rsa.extend_from_slice(b"\x30\x82\x04\xa4\x02");
        for foreign in [rsa, b"garbage\n\xff\x00".to_vec(), Vec::new()] {
            fs::write(&path, &foreign).unwrap();
            let (id, out) = load_or_create(&path, false).unwrap();
            let KeyOutcome::ReplacedForeign { backup, reason } = out else {
                panic!("{out:?}");
            };
            assert!(!reason.is_empty());
            assert_eq!(backup.parent(), path.parent());
            let name = backup.file_name().unwrap().to_str().unwrap().to_owned();
            assert!(name.starts_with("pigeon.keys.bak-"), "{name}");
            assert_eq!(fs::read(&backup).unwrap(), foreign);
            assert_eq!(mode(&path), 0o600);
            assert_eq!(read_key_file(&path).unwrap().peer_id(), id.peer_id());
        }
        // Three backups within the same second got distinct names.
        let backups = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_str()
                    .unwrap()
                    .contains(".bak-")
            })
            .count();
        assert_eq!(backups, 3);
    }

    #[test]
    fn wrong_key_type_is_foreign() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        // secp256k1 private key from the libp2p spec (Type = 2).
        let secp = hex("0802122053DADF1D5A164D6B4ACDB15E24AA4C5B1D3461BDBD42ABEDB0A4404D56CED8FB");
        fs::write(&path, &secp).unwrap();
        let (_, out) = load_or_create(&path, false).unwrap();
        assert!(matches!(out, KeyOutcome::ReplacedForeign { .. }), "{out:?}");
        assert!(read_key_file(&path).is_ok());
    }

    #[test]
    fn read_key_file_says_why_the_bytes_are_no_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        fs::write(&path, b"garbage").unwrap();
        let e = read_key_file(&path).unwrap_err();
        assert!(
            matches!(
                e,
                IdentityError::Invalid {
                    source: KeyDecodeError::NotLibp2p(_),
                    ..
                }
            ),
            "{e:?}"
        );
        assert_eq!(fs::read(&path).unwrap(), b"garbage", "left as it was");
    }

    #[test]
    fn key_reset_keeps_old_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let (old, _) = load_or_create(&path, false).unwrap();
        let old_bytes = fs::read(&path).unwrap();
        let (new, out) = load_or_create(&path, true).unwrap();
        let KeyOutcome::Reset { backup } = out else {
            panic!("{out:?}");
        };
        assert_ne!(old.peer_id(), new.peer_id());
        assert_eq!(fs::read(&backup).unwrap(), old_bytes);
        assert_eq!(read_key_file(&backup).unwrap().peer_id(), old.peer_id());
        assert_eq!(read_key_file(&path).unwrap().peer_id(), new.peer_id());
        // key_reset without a file simply creates one.
        let (_, out) = load_or_create(&dir.path().join("fresh"), true).unwrap();
        assert_eq!(out, KeyOutcome::Created);
    }

    #[test]
    fn loose_permissions_are_tightened() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("k");
        let (a, _) = load_or_create(&path, false).unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).unwrap();
        let (b, out) = load_or_create(&path, false).unwrap();
        assert_eq!(
            out,
            KeyOutcome::Loaded {
                tightened_from: Some(0o644)
            }
        );
        assert_eq!(a.peer_id(), b.peer_id());
        assert_eq!(mode(&path), 0o600);
    }

    #[test]
    fn ephemeral_is_never_saved() {
        let dir = tempfile::tempdir().unwrap();
        let (a, out) = load_or_create(Path::new(""), false).unwrap();
        assert_eq!(out, KeyOutcome::Ephemeral);
        let (b, _) = load_or_create(Path::new(""), false).unwrap();
        assert_ne!(a.peer_id(), b.peer_id());
        assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 0);
    }

    #[test]
    fn unreadable_is_an_error_not_a_replacement() {
        let dir = tempfile::tempdir().unwrap();
        // A directory where the key file should be.
        let path = dir.path().join("k");
        fs::create_dir(&path).unwrap();
        let e = load_or_create(&path, false).unwrap_err();
        assert!(matches!(e, IdentityError::Read { .. }), "{e:?}");
        assert!(e.to_string().contains(&path.display().to_string()));
        assert!(path.is_dir());
        assert!(matches!(
            read_key_file(&dir.path().join("none")),
            Err(IdentityError::Read { .. })
        ));
    }

    #[test]
    fn debug_hides_secret() {
        let id = Identity::from_seed([7; 32]);
        let s = format!("{id:?}");
        assert!(s.contains(id.peer_id()));
        assert!(!s.contains("signing_key") && !s.contains("7, 7"), "{s}");
    }
}
