//! Organisations: verified groups of pigeons. Pure: no IO, no clock (times
//! are passed in as Unix seconds), no randomness of its own (callers pass
//! a cryptographic RNG).
//!
//! An organisation is an Ed25519 key; its id is the libp2p peer id of that
//! key (`12D3KooW…`), so an organisation key made by Iris' `orgsig` works
//! too. Its administrator signs **credentials** ([`credential`]): "member
//! key M, with key-distribution key X, serial S, valid from A to B". It
//! withdraws them with signed, versioned **revocation lists**
//! ([`revocation`]). Members encrypt org-scoped messages with per-sender
//! keys that they wrap for each other with HPKE ([`crypto`]).
//! `docs/PROTOCOL.md` §10 is the normative description; the byte layouts
//! are there and in each module.

pub mod cli;
pub mod config;
pub mod credential;
pub mod crypto;
pub mod revocation;
pub mod time;

pub use credential::{Credential, MembershipRequest};
pub use revocation::{RevocationEntry, RevocationList};

use ed25519_dalek::VerifyingKey;

/// Why an organisation object (credential, request, list, key) was
/// refused. Each message says what is wrong in one line.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum OrgError {
    /// Not standard base64.
    #[error("not base64")]
    Base64,
    /// The decoded bytes have the wrong length or layout.
    #[error("malformed {what}: {reason}")]
    Malformed {
        /// Credential, request, list.
        what: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// Unknown format version byte.
    #[error("{what} of unsupported version {version}")]
    Version {
        /// Credential, request, list.
        what: &'static str,
        /// The version found.
        version: u8,
    },
    /// A public key inside is not a valid, strong Ed25519 key.
    #[error("{0}: invalid or weak key")]
    BadKey(&'static str),
    /// The signature does not verify.
    #[error("{0}: bad signature")]
    BadSignature(&'static str),
    /// Not yet valid at the time given.
    #[error("not valid before {}", time::format(*.0))]
    NotYetValid(u64),
    /// Expired at the time given.
    #[error("expired at {}", time::format(*.0))]
    Expired(u64),
    /// Signed by another organisation than expected.
    #[error("signed by organisation {found}, not {expected}")]
    OtherOrg {
        /// The org id expected.
        expected: String,
        /// The org id found.
        found: String,
    },
    /// For another member key than expected.
    #[error("issued to {found}, not {expected}")]
    OtherMember {
        /// The peer id expected.
        expected: String,
        /// The peer id found.
        found: String,
    },
    /// Too large for one datagram.
    #[error("{what} too large: {len} bytes, at most {max}")]
    TooLarge {
        /// What.
        what: &'static str,
        /// Its size.
        len: usize,
        /// The bound.
        max: usize,
    },
    /// An encryption or decryption step failed (wrong key, damaged
    /// ciphertext).
    #[error("{0}")]
    Crypto(&'static str),
}

/// The org id (libp2p peer id string) of an organisation key.
pub fn org_id(key: &VerifyingKey) -> String {
    crate::identity::peer_id_of(key)
}

/// Decodes a peer id string (`12D3KooW…`) to its Ed25519 key: the
/// identity multihash of an Ed25519 libp2p key holds the key itself.
pub fn key_of_id(id: &str) -> Option<VerifyingKey> {
    let peer: libp2p_identity::PeerId = id.parse().ok()?;
    let public = libp2p_identity::PublicKey::try_decode_protobuf(
        peer.as_ref()
            .digest()
            .get(..)
            .filter(|_| peer.as_ref().code() == 0)?,
    )
    .ok()?;
    let ed = public.try_into_ed25519().ok()?;
    let key = VerifyingKey::from_bytes(&ed.to_bytes()).ok()?;
    (!key.is_weak()).then_some(key)
}

/// Reads a big-endian `u64` at `at` (the caller checked the length).
fn be_u64(b: &[u8], at: usize) -> u64 {
    let mut a = [0u8; 8];
    a.copy_from_slice(&b[at..at + 8]);
    u64::from_be_bytes(a)
}

/// A strong Ed25519 key from 32 bytes at `at`.
fn strong_key(b: &[u8], at: usize, what: &'static str) -> Result<VerifyingKey, OrgError> {
    let mut a = [0u8; 32];
    a.copy_from_slice(&b[at..at + 32]);
    let k = VerifyingKey::from_bytes(&a).map_err(|_| OrgError::BadKey(what))?;
    if k.is_weak() {
        return Err(OrgError::BadKey(what));
    }
    Ok(k)
}

/// Standard padded base64 (RFC 4648 §4), surrounding whitespace ignored.
fn from_b64(text: &str) -> Result<Vec<u8>, OrgError> {
    use base64::Engine as _;
    base64::prelude::BASE64_STANDARD
        .decode(text.trim())
        .map_err(|_| OrgError::Base64)
}

fn to_b64(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::prelude::BASE64_STANDARD.encode(bytes)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ed25519_dalek::SigningKey;

    #[test]
    fn org_id_and_key_of_id_round_trip() {
        for seed in 1..20u8 {
            let k = SigningKey::from_bytes(&[seed; 32]).verifying_key();
            let id = org_id(&k);
            assert!(id.starts_with("12D3KooW"), "{id}");
            assert_eq!(key_of_id(&id), Some(k));
        }
        assert_eq!(key_of_id("12D3KooWnot-a-peer-id"), None);
        assert_eq!(key_of_id(""), None);
        // A peer id of a hashed (non-identity) multihash: an RSA key's id.
        assert_eq!(
            key_of_id("QmYyQSo1c1Ym7orWxLYvCrM2EmxFTANf8wXmmE7DWjhx5N"),
            None
        );
    }
}
