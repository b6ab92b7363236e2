//! Revocation lists: the organisation's signed, versioned list of
//! withdrawn credentials.
//!
//! ```text
//! 0    version      u8 = 1
//! 1    org key      32  Ed25519 public key of the organisation
//! 33   seq          u64 big-endian: a list replaces another only if its
//!                       seq is greater
//! 41   issued       u64 big-endian, Unix seconds
//! 49   next_update  u64 big-endian, Unix seconds: the administrator
//!                       promises a new list before then
//! 57   count        u16 big-endian
//! 59   entries      count × entry
//!      signature    64  Ed25519(org key, REVOCATION_DOMAIN ‖ all bytes before it)
//!
//! entry = 0x01 ‖ serial u64 ‖ until u64     (one credential, by serial)
//!       | 0x02 ‖ member key 32 ‖ until u64  (every credential of a key)
//! ```
//!
//! `until` is when the entry stops mattering (the revoked credential's
//! `not_after`; `u64::MAX` for ever): the administrator's tool leaves out
//! entries past their `until`, so the list stays small. A list travels in
//! one datagram, hence [`MAX_LIST_LEN`].

use super::{OrgError, be_u64, from_b64, org_id, strong_key, to_b64};
use crate::org::Credential;
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// Signing domain of revocation lists.
pub const REVOCATION_DOMAIN: &[u8] = b"pigeon-org-revocations/1\0";
/// Format version.
pub const VERSION: u8 = 1;
/// Largest encoded list: its base64 (832 characters) fits in one datagram
/// with the envelope of any network name (at most 64 characters): the rest
/// of an `org` datagram carrying a list takes at most 345 bytes of the
/// 1200 (`docs/PROTOCOL.md` §10.3). That is 29 serial entries or 12 key
/// entries.
pub const MAX_LIST_LEN: usize = 624;
const HEADER_LEN: usize = 59;

/// One revoked thing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RevocationEntry {
    /// The credential with this serial.
    Serial {
        /// Its serial.
        serial: u64,
        /// When the entry may be forgotten (Unix seconds).
        until: u64,
    },
    /// Every credential of this member key.
    Member {
        /// The member key.
        key: VerifyingKey,
        /// When the entry may be forgotten (Unix seconds).
        until: u64,
    },
}

impl RevocationEntry {
    fn until(&self) -> u64 {
        match self {
            Self::Serial { until, .. } | Self::Member { until, .. } => *until,
        }
    }
}

/// A revocation list whose signature verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RevocationList {
    /// The organisation.
    pub org: VerifyingKey,
    /// Version: greater replaces smaller.
    pub seq: u64,
    /// When it was made (Unix seconds).
    pub issued: u64,
    /// When the next one is due (Unix seconds).
    pub next_update: u64,
    /// What it revokes.
    pub entries: Vec<RevocationEntry>,
    bytes: Vec<u8>,
}

impl RevocationList {
    /// Signs a list. Entries past their `until` at `issued` are left out;
    /// an error if the rest does not fit [`MAX_LIST_LEN`].
    pub fn issue(
        org: &SigningKey,
        seq: u64,
        issued: u64,
        next_update: u64,
        entries: &[RevocationEntry],
    ) -> Result<RevocationList, OrgError> {
        let entries: Vec<RevocationEntry> = entries
            .iter()
            .filter(|e| e.until() > issued)
            .copied()
            .collect();
        let mut b = Vec::with_capacity(MAX_LIST_LEN);
        b.push(VERSION);
        b.extend_from_slice(org.verifying_key().as_bytes());
        b.extend_from_slice(&seq.to_be_bytes());
        b.extend_from_slice(&issued.to_be_bytes());
        b.extend_from_slice(&next_update.to_be_bytes());
        let count = u16::try_from(entries.len()).map_err(|_| OrgError::TooLarge {
            what: "revocation list",
            len: entries.len(),
            max: usize::from(u16::MAX),
        })?;
        b.extend_from_slice(&count.to_be_bytes());
        for e in &entries {
            match e {
                RevocationEntry::Serial { serial, until } => {
                    b.push(1);
                    b.extend_from_slice(&serial.to_be_bytes());
                    b.extend_from_slice(&until.to_be_bytes());
                }
                RevocationEntry::Member { key, until } => {
                    b.push(2);
                    b.extend_from_slice(key.as_bytes());
                    b.extend_from_slice(&until.to_be_bytes());
                }
            }
        }
        if b.len() + 64 > MAX_LIST_LEN {
            return Err(OrgError::TooLarge {
                what: "revocation list",
                len: b.len() + 64,
                max: MAX_LIST_LEN,
            });
        }
        let sig = org.sign(&signed(&b));
        b.extend_from_slice(&sig.to_bytes());
        Ok(RevocationList {
            org: org.verifying_key(),
            seq,
            issued,
            next_update,
            entries,
            bytes: b,
        })
    }

    /// Decodes the base64 form and checks the signature.
    pub fn decode(text: &str) -> Result<RevocationList, OrgError> {
        Self::from_bytes(&from_b64(text)?)
    }

    /// [`RevocationList::decode`] of the raw bytes.
    pub fn from_bytes(b: &[u8]) -> Result<RevocationList, OrgError> {
        const WHAT: &str = "revocation list";
        let malformed = |reason: &str| OrgError::Malformed {
            what: WHAT,
            reason: reason.to_owned(),
        };
        if b.len() > MAX_LIST_LEN {
            return Err(OrgError::TooLarge {
                what: WHAT,
                len: b.len(),
                max: MAX_LIST_LEN,
            });
        }
        if b.len() < HEADER_LEN + 64 {
            return Err(malformed("too short"));
        }
        if b[0] != VERSION {
            return Err(OrgError::Version {
                what: WHAT,
                version: b[0],
            });
        }
        let org = strong_key(b, 1, "list's organisation key")?;
        let body = &b[..b.len() - 64];
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&b[b.len() - 64..]);
        org.verify_strict(&signed(body), &Signature::from_bytes(&sig))
            .map_err(|_| OrgError::BadSignature(WHAT))?;
        let count = usize::from(u16::from_be_bytes([b[57], b[58]]));
        let mut entries = Vec::with_capacity(count.min(64));
        let mut at = HEADER_LEN;
        for _ in 0..count {
            match body.get(at) {
                Some(1) if body.len() >= at + 17 => {
                    entries.push(RevocationEntry::Serial {
                        serial: be_u64(body, at + 1),
                        until: be_u64(body, at + 9),
                    });
                    at += 17;
                }
                Some(2) if body.len() >= at + 41 => {
                    entries.push(RevocationEntry::Member {
                        key: strong_key(body, at + 1, "revoked member key")?,
                        until: be_u64(body, at + 33),
                    });
                    at += 41;
                }
                Some(1 | 2) => return Err(malformed("entry cut short")),
                _ => return Err(malformed("unknown entry type")),
            }
        }
        if at != body.len() {
            return Err(malformed("bytes after the entries"));
        }
        Ok(RevocationList {
            org,
            seq: be_u64(b, 33),
            issued: be_u64(b, 41),
            next_update: be_u64(b, 49),
            entries,
            bytes: b.to_vec(),
        })
    }

    /// The base64 form (file content, wire).
    pub fn encode(&self) -> String {
        to_b64(&self.bytes)
    }

    /// The exact bytes.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The organisation's id.
    pub fn org_id(&self) -> String {
        org_id(&self.org)
    }

    /// Whether the list withdraws `credential` (its serial, or its member
    /// key). The caller checks that the list is the credential's
    /// organisation's.
    pub fn revokes(&self, credential: &Credential) -> bool {
        self.entries.iter().any(|e| match e {
            RevocationEntry::Serial { serial, .. } => *serial == credential.serial,
            RevocationEntry::Member { key, .. } => *key == credential.member,
        })
    }

    /// Whether `now_s` is past the promised next update (the list may be
    /// missing revocations made since).
    pub fn is_stale(&self, now_s: u64) -> bool {
        now_s >= self.next_update
    }
}

fn signed(body: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(REVOCATION_DOMAIN.len() + body.len());
    v.extend_from_slice(REVOCATION_DOMAIN);
    v.extend_from_slice(body);
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::org::MembershipRequest;

    fn org() -> SigningKey {
        SigningKey::from_bytes(&[9; 32])
    }

    fn cred(seed: u8, serial: u64) -> Credential {
        let (req, _) = MembershipRequest::new(&SigningKey::from_bytes(&[seed; 32]));
        Credential::issue(&org(), &req, serial, 0, 10_000)
    }

    #[test]
    fn list_round_trips_and_revokes_by_serial_or_key() {
        let (a, b, c) = (cred(1, 11), cred(2, 12), cred(3, 13));
        let entries = [
            RevocationEntry::Serial {
                serial: 11,
                until: 10_000,
            },
            RevocationEntry::Member {
                key: b.member,
                until: u64::MAX,
            },
        ];
        let l = RevocationList::issue(&org(), 4, 100, 200, &entries).unwrap();
        let back = RevocationList::decode(&l.encode()).unwrap();
        assert_eq!(back, l);
        assert_eq!((back.seq, back.issued, back.next_update), (4, 100, 200));
        assert!(back.revokes(&a) && back.revokes(&b) && !back.revokes(&c));
        assert!(!back.is_stale(199) && back.is_stale(200));
    }

    #[test]
    fn expired_entries_are_left_out_and_size_is_bounded() {
        let old = RevocationEntry::Serial {
            serial: 1,
            until: 50,
        };
        let l = RevocationList::issue(&org(), 1, 100, 200, &[old]).unwrap();
        assert!(l.entries.is_empty());
        let many: Vec<RevocationEntry> = (0..29)
            .map(|s| RevocationEntry::Serial {
                serial: s,
                until: u64::MAX,
            })
            .collect();
        let l = RevocationList::issue(&org(), 1, 0, 1, &many).unwrap();
        assert!(l.as_bytes().len() <= MAX_LIST_LEN);
        let too_many: Vec<RevocationEntry> = (0..30)
            .map(|s| RevocationEntry::Serial {
                serial: s,
                until: u64::MAX,
            })
            .collect();
        assert!(matches!(
            RevocationList::issue(&org(), 1, 0, 1, &too_many),
            Err(OrgError::TooLarge { .. })
        ));
    }

    #[test]
    fn damaged_lists_are_refused() {
        let e = [RevocationEntry::Serial {
            serial: 5,
            until: u64::MAX,
        }];
        let l = RevocationList::issue(&org(), 2, 0, 10, &e).unwrap();
        for i in 0..l.as_bytes().len() {
            let mut b = l.as_bytes().to_vec();
            b[i] ^= 0x04;
            assert!(RevocationList::from_bytes(&b).is_err(), "byte {i}");
        }
        let b = l.as_bytes();
        assert!(RevocationList::from_bytes(&b[..b.len() - 1]).is_err());
        assert!(RevocationList::from_bytes(&[]).is_err());
        assert!(RevocationList::from_bytes(&vec![1u8; MAX_LIST_LEN + 1]).is_err());
    }
}
