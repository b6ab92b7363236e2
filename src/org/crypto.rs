//! The cryptography of confidential org messages (`docs/PROTOCOL.md`
//! §10.4–10.5). Only well-kept crates: `hpke` (RFC 9180), `chacha20poly1305`
//! (XChaCha20-Poly1305), `hkdf`/`sha2`.
//!
//! * Each member has an **X25519 key-distribution key**, separate from its
//!   Ed25519 identity (key separation: the identity key only signs). It is
//!   derived from the identity seed, so it needs no file of its own:
//!   `ikm = HKDF-SHA256(salt = X25519_SALT, ikm = seed, info = "", L = 32)`,
//!   then RFC 9180 `DeriveKeyPair(ikm)` of DHKEM(X25519, HKDF-SHA256).
//! * Each member has, per organisation, a random 32-byte **sender key**
//!   identified by an epoch number; it wraps it for every other current
//!   member with HPKE base mode, suite DHKEM(X25519, HKDF-SHA256) /
//!   HKDF-SHA256 / ChaCha20-Poly1305, `info` = [`key_info`], empty `aad`.
//! * A message is the Slips payload sealed with XChaCha20-Poly1305 under
//!   the sender key, a random 24-byte nonce, `aad` = [`message_aad`].

use super::OrgError;
use chacha20poly1305::XChaCha20Poly1305;
use chacha20poly1305::aead::{Aead, KeyInit, Payload};
use hpke::aead::ChaCha20Poly1305;
use hpke::kdf::HkdfSha256;
use hpke::kem::X25519HkdfSha256;
use hpke::{Deserializable, Kem as _, OpModeR, OpModeS, Serializable};

/// Salt of the derivation of the X25519 key from the identity seed.
pub const X25519_SALT: &[u8] = b"pigeon-org-x25519/1";
/// Prefix of the HPKE `info` of a wrapped sender key.
pub const KEY_INFO_DOMAIN: &[u8] = b"pigeon-org-key/1\0";
/// Prefix of the AEAD associated data of a message.
pub const MESSAGE_AAD_DOMAIN: &[u8] = b"pigeon-org-msg/1\0";
/// Bytes of an HPKE encapsulated key (X25519).
pub const ENC_LEN: usize = 32;
/// Bytes of a wrapped sender key: 32 + the 16-byte tag.
pub const WRAPPED_LEN: usize = 48;
/// Bytes of a message nonce (XChaCha20).
pub const NONCE_LEN: usize = 24;
/// Bytes of the AEAD tag a message grows by.
pub const TAG_LEN: usize = 16;

type Kem = X25519HkdfSha256;

/// A member's X25519 key-distribution key pair.
pub struct MemberSecret {
    secret: <Kem as hpke::Kem>::PrivateKey,
    public: [u8; 32],
}

impl std::fmt::Debug for MemberSecret {
    /// The public half only.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("MemberSecret")
            .field("public", &self.public)
            .finish_non_exhaustive()
    }
}

impl MemberSecret {
    /// The key of the pigeon whose Ed25519 seed is `seed`.
    pub fn derive(seed: &[u8; 32]) -> MemberSecret {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(X25519_SALT), seed);
        let mut ikm = [0u8; 32];
        // 32 bytes are far below HKDF-SHA256's limit of 8160: never fails.
        let _ = hk.expand(b"", &mut ikm);
        let (secret, public) = Kem::derive_keypair(&ikm);
        let mut p = [0u8; 32];
        p.copy_from_slice(&public.to_bytes());
        MemberSecret { secret, public: p }
    }

    /// The public key (what credentials carry).
    pub fn public(&self) -> [u8; 32] {
        self.public
    }

    /// Unwraps a sender key wrapped to us with `info`.
    pub fn unwrap_key(
        &self,
        enc: &[u8],
        wrapped: &[u8],
        info: &[u8],
    ) -> Result<[u8; 32], OrgError> {
        let enc = <Kem as hpke::Kem>::EncappedKey::from_bytes(enc)
            .map_err(|_| OrgError::Crypto("bad encapsulated key"))?;
        let plain = hpke::single_shot_open::<ChaCha20Poly1305, HkdfSha256, Kem>(
            &OpModeR::Base,
            &self.secret,
            &enc,
            info,
            wrapped,
            b"",
        )
        .map_err(|_| OrgError::Crypto("sender key does not unwrap"))?;
        plain
            .as_slice()
            .try_into()
            .map_err(|_| OrgError::Crypto("wrapped sender key of the wrong size"))
    }
}

/// HPKE `info` of a sender key: `KEY_INFO_DOMAIN ‖ org key ‖ sender key ‖
/// epoch (u64 big-endian) ‖ recipient key` (Ed25519 keys, 32 bytes each).
/// A wrapped key opens only for the organisation, sender, epoch and
/// recipient it was made for.
pub fn key_info(org: &[u8; 32], sender: &[u8; 32], epoch: u64, recipient: &[u8; 32]) -> Vec<u8> {
    let mut v = Vec::with_capacity(KEY_INFO_DOMAIN.len() + 104);
    v.extend_from_slice(KEY_INFO_DOMAIN);
    v.extend_from_slice(org);
    v.extend_from_slice(sender);
    v.extend_from_slice(&epoch.to_be_bytes());
    v.extend_from_slice(recipient);
    v
}

/// Wraps `key` for the X25519 public key `to` with `info` (HPKE base
/// mode, single shot): `(enc, wrapped)`.
pub fn wrap_key(
    rng: &mut impl rand::CryptoRng,
    to: &[u8; 32],
    info: &[u8],
    key: &[u8; 32],
) -> Result<([u8; ENC_LEN], [u8; WRAPPED_LEN]), OrgError> {
    let pk = <Kem as hpke::Kem>::PublicKey::from_bytes(to)
        .map_err(|_| OrgError::Crypto("bad recipient key"))?;
    let (enc, ct) = hpke::single_shot_seal_with_rng::<ChaCha20Poly1305, HkdfSha256, Kem>(
        &OpModeS::Base,
        &pk,
        info,
        key,
        b"",
        rng,
    )
    .map_err(|_| OrgError::Crypto("cannot wrap the sender key"))?;
    let mut e = [0u8; ENC_LEN];
    e.copy_from_slice(&enc.to_bytes());
    let w: [u8; WRAPPED_LEN] = ct
        .as_slice()
        .try_into()
        .map_err(|_| OrgError::Crypto("wrapped key of the wrong size"))?;
    Ok((e, w))
}

/// AEAD associated data of a message: `MESSAGE_AAD_DOMAIN ‖ org key ‖
/// sender key ‖ epoch (u64 big-endian)`.
pub fn message_aad(org: &[u8; 32], sender: &[u8; 32], epoch: u64) -> Vec<u8> {
    let mut v = Vec::with_capacity(MESSAGE_AAD_DOMAIN.len() + 72);
    v.extend_from_slice(MESSAGE_AAD_DOMAIN);
    v.extend_from_slice(org);
    v.extend_from_slice(sender);
    v.extend_from_slice(&epoch.to_be_bytes());
    v
}

/// Seals `plain` (XChaCha20-Poly1305): ciphertext ‖ tag.
pub fn seal(key: &[u8; 32], nonce: &[u8; NONCE_LEN], aad: &[u8], plain: &[u8]) -> Vec<u8> {
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    // Encryption fails only for plaintexts beyond 256 GiB.
    cipher
        .encrypt(&(*nonce).into(), Payload { msg: plain, aad })
        .unwrap_or_default()
}

/// Opens what [`seal`] made.
pub fn open(
    key: &[u8; 32],
    nonce: &[u8; NONCE_LEN],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, OrgError> {
    let cipher = XChaCha20Poly1305::new(&(*key).into());
    cipher
        .decrypt(&(*nonce).into(), Payload { msg: sealed, aad })
        .map_err(|_| OrgError::Crypto("message does not decrypt"))
}

/// Prefix of a sealed payload in a `data` body. `:` is outside the base64
/// alphabet, so no Slips payload starts with it.
pub const SEALED_PREFIX: &str = "org1:";

/// A sealed payload as it travels in `data.payload`:
/// `org1:<org id>:<epoch>:<base64(nonce ‖ ciphertext ‖ tag)>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SealedPayload {
    /// The organisation's id (`12D3KooW…`).
    pub org_id: String,
    /// The sender key's epoch.
    pub epoch: u64,
    /// Nonce.
    pub nonce: [u8; NONCE_LEN],
    /// Ciphertext and tag.
    pub ciphertext: Vec<u8>,
}

impl SealedPayload {
    /// Whether `payload` is meant to be a sealed payload (whether or not
    /// it parses).
    pub fn is_sealed(payload: &str) -> bool {
        payload.starts_with(SEALED_PREFIX)
    }

    /// Parses one; `None` if it is not well-formed.
    pub fn parse(payload: &str) -> Option<SealedPayload> {
        let rest = payload.strip_prefix(SEALED_PREFIX)?;
        let mut parts = rest.split(':');
        let org_id = parts.next()?;
        let epoch = parts.next()?;
        let data = parts.next()?;
        if parts.next().is_some()
            || org_id.len() > 64
            || epoch.is_empty()
            || epoch.len() > 16
            || !epoch.bytes().all(|b| b.is_ascii_digit())
        {
            return None;
        }
        let epoch: u64 = epoch
            .parse()
            .ok()
            .filter(|e| *e <= crate::wire::MAX_SAFE_INT)?;
        let bytes = super::from_b64(data).ok()?;
        if bytes.len() < NONCE_LEN + TAG_LEN {
            return None;
        }
        let mut nonce = [0u8; NONCE_LEN];
        nonce.copy_from_slice(&bytes[..NONCE_LEN]);
        Some(SealedPayload {
            org_id: org_id.to_owned(),
            epoch,
            nonce,
            ciphertext: bytes[NONCE_LEN..].to_vec(),
        })
    }

    /// The string form.
    pub fn encode(&self) -> String {
        let mut b = Vec::with_capacity(NONCE_LEN + self.ciphertext.len());
        b.extend_from_slice(&self.nonce);
        b.extend_from_slice(&self.ciphertext);
        format!(
            "{SEALED_PREFIX}{}:{}:{}",
            self.org_id,
            self.epoch,
            super::to_b64(&b)
        )
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn member_key_is_deterministic_and_separate_from_the_identity() {
        let a = MemberSecret::derive(&[1; 32]);
        assert_eq!(a.public(), MemberSecret::derive(&[1; 32]).public());
        assert_ne!(a.public(), MemberSecret::derive(&[2; 32]).public());
        let ed = ed25519_dalek::SigningKey::from_bytes(&[1; 32]);
        // Not the Montgomery form of the Ed25519 key (no key reuse).
        assert_ne!(a.public(), ed.verifying_key().to_montgomery().to_bytes());
    }

    #[test]
    fn a_wrapped_key_opens_only_for_its_recipient_and_context() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let (r, other) = (
            MemberSecret::derive(&[5; 32]),
            MemberSecret::derive(&[6; 32]),
        );
        let info = key_info(&[1; 32], &[2; 32], 7, &[3; 32]);
        let key = [42u8; 32];
        let (enc, w) = wrap_key(&mut rng, &r.public(), &info, &key).unwrap();
        assert_eq!(r.unwrap_key(&enc, &w, &info).unwrap(), key);
        assert!(other.unwrap_key(&enc, &w, &info).is_err());
        let other_epoch = key_info(&[1; 32], &[2; 32], 8, &[3; 32]);
        assert!(r.unwrap_key(&enc, &w, &other_epoch).is_err());
        let mut bad = w;
        bad[0] ^= 1;
        assert!(r.unwrap_key(&enc, &bad, &info).is_err());
        assert!(r.unwrap_key(&enc[..31], &w, &info).is_err());
    }

    #[test]
    fn sealed_messages_open_with_key_nonce_and_aad() {
        let key = [7u8; 32];
        let nonce = [9u8; NONCE_LEN];
        let aad = message_aad(&[1; 32], &[2; 32], 3);
        let ct = seal(&key, &nonce, &aad, b"hello");
        assert_eq!(ct.len(), 5 + TAG_LEN);
        assert_eq!(open(&key, &nonce, &aad, &ct).unwrap(), b"hello");
        assert!(open(&[8; 32], &nonce, &aad, &ct).is_err());
        assert!(open(&key, &nonce, &message_aad(&[1; 32], &[2; 32], 4), &ct).is_err());
        let p = SealedPayload {
            org_id: "12D3KooWabc".to_owned(),
            epoch: 12,
            nonce,
            ciphertext: ct,
        };
        let text = p.encode();
        assert!(SealedPayload::is_sealed(&text));
        assert_eq!(SealedPayload::parse(&text), Some(p));
        for bad in [
            "org1:",
            "org1:x:1",
            "org1:x:-1:AAAA",
            "org1:x:1:!!",
            "org1:x:1:AAAA",
            "org1:x:1:AAAA:more",
            "org1:x:99999999999999999:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==",
        ] {
            assert_eq!(SealedPayload::parse(bad), None, "{bad}");
        }
    }
}
