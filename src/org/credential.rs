//! Member credentials and the membership requests they are made from.
//!
//! A **credential** is 185 bytes, carried as standard base64 (248
//! characters):
//!
//! ```text
//! 0    version       u8 = 1
//! 1    org key       32  Ed25519 public key of the organisation
//! 33   member key    32  Ed25519 public key of the member (its identity)
//! 65   member x25519 32  the member's key-distribution key (HPKE, §10.4)
//! 97   serial        u64 big-endian, chosen by the administrator
//! 105  not_before    u64 big-endian, Unix seconds
//! 113  not_after     u64 big-endian, Unix seconds
//! 121  signature     64  Ed25519(org key, CREDENTIAL_DOMAIN ‖ bytes 0..121)
//! ```
//!
//! Unlike Iris' org signature (over the bare member key), it names its
//! purpose (the domain string), its organisation, a key for confidential
//! messages, a validity window and a serial that a revocation list can
//! name.
//!
//! A **membership request** is what a member hands its administrator: 129
//! bytes, base64 (172 characters): version u8 = 1 ‖ member key (32) ‖
//! member x25519 (32) ‖ Ed25519(member key, REQUEST_DOMAIN ‖ bytes 0..65).
//! It proves that whoever asks holds the member key, and binds the x25519
//! key to it.

use super::{OrgError, be_u64, from_b64, org_id, strong_key, to_b64};
use ed25519_dalek::{Signature, Signer, SigningKey, VerifyingKey};

/// Signing domain of credentials: a credential signature can never be
/// taken for any other pigeon (or Iris) signature.
pub const CREDENTIAL_DOMAIN: &[u8] = b"pigeon-org-credential/1\0";
/// Signing domain of membership requests.
pub const REQUEST_DOMAIN: &[u8] = b"pigeon-org-request/1\0";
/// Format version of credentials and requests.
pub const VERSION: u8 = 1;
/// Bytes of an encoded credential.
pub const CREDENTIAL_LEN: usize = 185;
/// Bytes of an encoded request.
pub const REQUEST_LEN: usize = 129;
const SIGNED_LEN: usize = CREDENTIAL_LEN - 64;

/// A credential whose signature verified (only [`Credential::decode`] and
/// [`Credential::issue`] make one). Whether it is valid *now*, for whom
/// and from whom is [`Credential::check`]'s business.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Credential {
    /// The organisation's key (its id is [`Credential::org_id`]).
    pub org: VerifyingKey,
    /// The member's identity key.
    pub member: VerifyingKey,
    /// The member's X25519 key-distribution key.
    pub member_x25519: [u8; 32],
    /// Administrator's serial: what a revocation list names.
    pub serial: u64,
    /// Valid from (Unix seconds, inclusive).
    pub not_before: u64,
    /// Valid until (Unix seconds, exclusive).
    pub not_after: u64,
    bytes: [u8; CREDENTIAL_LEN],
}

impl Credential {
    /// Signs a credential with the organisation key.
    pub fn issue(
        org: &SigningKey,
        request: &MembershipRequest,
        serial: u64,
        not_before: u64,
        not_after: u64,
    ) -> Credential {
        let mut bytes = [0u8; CREDENTIAL_LEN];
        bytes[0] = VERSION;
        bytes[1..33].copy_from_slice(org.verifying_key().as_bytes());
        bytes[33..65].copy_from_slice(request.member.as_bytes());
        bytes[65..97].copy_from_slice(&request.member_x25519);
        bytes[97..105].copy_from_slice(&serial.to_be_bytes());
        bytes[105..113].copy_from_slice(&not_before.to_be_bytes());
        bytes[113..121].copy_from_slice(&not_after.to_be_bytes());
        let sig = org.sign(&signed(CREDENTIAL_DOMAIN, &bytes[..SIGNED_LEN]));
        bytes[SIGNED_LEN..].copy_from_slice(&sig.to_bytes());
        Credential {
            org: org.verifying_key(),
            member: request.member,
            member_x25519: request.member_x25519,
            serial,
            not_before,
            not_after,
            bytes,
        }
    }

    /// Decodes the base64 form and checks the organisation's signature
    /// (`verify_strict`). Says nothing about time, org or member.
    pub fn decode(text: &str) -> Result<Credential, OrgError> {
        let b = from_b64(text)?;
        Self::from_bytes(&b)
    }

    /// [`Credential::decode`] of the raw bytes.
    pub fn from_bytes(b: &[u8]) -> Result<Credential, OrgError> {
        const WHAT: &str = "credential";
        if b.len() != CREDENTIAL_LEN {
            return Err(OrgError::Malformed {
                what: WHAT,
                reason: format!("{} bytes, not {CREDENTIAL_LEN}", b.len()),
            });
        }
        if b[0] != VERSION {
            return Err(OrgError::Version {
                what: WHAT,
                version: b[0],
            });
        }
        let org = strong_key(b, 1, "credential's organisation key")?;
        let member = strong_key(b, 33, "credential's member key")?;
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&b[SIGNED_LEN..]);
        org.verify_strict(
            &signed(CREDENTIAL_DOMAIN, &b[..SIGNED_LEN]),
            &Signature::from_bytes(&sig),
        )
        .map_err(|_| OrgError::BadSignature(WHAT))?;
        let mut member_x25519 = [0u8; 32];
        member_x25519.copy_from_slice(&b[65..97]);
        let mut bytes = [0u8; CREDENTIAL_LEN];
        bytes.copy_from_slice(b);
        Ok(Credential {
            org,
            member,
            member_x25519,
            serial: be_u64(b, 97),
            not_before: be_u64(b, 105),
            not_after: be_u64(b, 113),
            bytes,
        })
    }

    /// The base64 form (what `pigeon org sign` prints).
    pub fn encode(&self) -> String {
        to_b64(&self.bytes)
    }

    /// The exact bytes.
    pub fn as_bytes(&self) -> &[u8; CREDENTIAL_LEN] {
        &self.bytes
    }

    /// The organisation's id (`12D3KooW…`).
    pub fn org_id(&self) -> String {
        org_id(&self.org)
    }

    /// The member's peer id.
    pub fn member_id(&self) -> String {
        org_id(&self.member)
    }

    /// Whether it is within its validity window at `now_s`.
    pub fn check_time(&self, now_s: u64) -> Result<(), OrgError> {
        if now_s < self.not_before {
            return Err(OrgError::NotYetValid(self.not_before));
        }
        if now_s >= self.not_after {
            return Err(OrgError::Expired(self.not_after));
        }
        Ok(())
    }

    /// Whether it is `member`'s credential of organisation `org`, valid at
    /// `now_s`. Revocation is the list's business
    /// ([`super::RevocationList::revokes`]).
    pub fn check(
        &self,
        org: &VerifyingKey,
        member: &VerifyingKey,
        now_s: u64,
    ) -> Result<(), OrgError> {
        if self.org != *org {
            return Err(OrgError::OtherOrg {
                expected: org_id(org),
                found: self.org_id(),
            });
        }
        if self.member != *member {
            return Err(OrgError::OtherMember {
                expected: org_id(member),
                found: self.member_id(),
            });
        }
        self.check_time(now_s)
    }
}

/// A member's signed request for a credential.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MembershipRequest {
    /// The member's identity key (it signed the request).
    pub member: VerifyingKey,
    /// Its X25519 key-distribution key.
    pub member_x25519: [u8; 32],
}

impl MembershipRequest {
    /// The request of the pigeon whose identity key is `identity`.
    pub fn new(identity: &SigningKey) -> (MembershipRequest, String) {
        let x = super::crypto::MemberSecret::derive(&identity.to_bytes());
        let mut b = [0u8; REQUEST_LEN];
        b[0] = VERSION;
        b[1..33].copy_from_slice(identity.verifying_key().as_bytes());
        b[33..65].copy_from_slice(&x.public());
        let sig = identity.sign(&signed(REQUEST_DOMAIN, &b[..65]));
        b[65..].copy_from_slice(&sig.to_bytes());
        (
            MembershipRequest {
                member: identity.verifying_key(),
                member_x25519: x.public(),
            },
            to_b64(&b),
        )
    }

    /// Decodes and verifies a request (the member's signature).
    pub fn decode(text: &str) -> Result<MembershipRequest, OrgError> {
        const WHAT: &str = "membership request";
        let b = from_b64(text)?;
        if b.len() != REQUEST_LEN {
            return Err(OrgError::Malformed {
                what: WHAT,
                reason: format!("{} bytes, not {REQUEST_LEN}", b.len()),
            });
        }
        if b[0] != VERSION {
            return Err(OrgError::Version {
                what: WHAT,
                version: b[0],
            });
        }
        let member = strong_key(&b, 1, "request's member key")?;
        let mut sig = [0u8; 64];
        sig.copy_from_slice(&b[65..]);
        member
            .verify_strict(
                &signed(REQUEST_DOMAIN, &b[..65]),
                &Signature::from_bytes(&sig),
            )
            .map_err(|_| OrgError::BadSignature(WHAT))?;
        let mut member_x25519 = [0u8; 32];
        member_x25519.copy_from_slice(&b[33..65]);
        Ok(MembershipRequest {
            member,
            member_x25519,
        })
    }

    /// The member's peer id.
    pub fn member_id(&self) -> String {
        org_id(&self.member)
    }
}

/// `domain ‖ bytes`.
fn signed(domain: &[u8], bytes: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(domain.len() + bytes.len());
    v.extend_from_slice(domain);
    v.extend_from_slice(bytes);
    v
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn org() -> SigningKey {
        SigningKey::from_bytes(&[9; 32])
    }

    fn member() -> SigningKey {
        SigningKey::from_bytes(&[3; 32])
    }

    #[test]
    fn request_then_credential_round_trip() {
        let (req, text) = MembershipRequest::new(&member());
        assert_eq!(text.len(), 172);
        assert_eq!(MembershipRequest::decode(&text).unwrap(), req);
        let c = Credential::issue(&org(), &req, 77, 1_000, 2_000);
        let text = c.encode();
        assert_eq!(text.len(), 248);
        let back = Credential::decode(&text).unwrap();
        assert_eq!(back, c);
        assert_eq!(back.serial, 77);
        assert_eq!(back.member_x25519, req.member_x25519);
        let (o, m) = (org().verifying_key(), member().verifying_key());
        back.check(&o, &m, 1_000).unwrap();
        back.check(&o, &m, 1_999).unwrap();
        assert_eq!(back.check(&o, &m, 999), Err(OrgError::NotYetValid(1_000)));
        assert_eq!(back.check(&o, &m, 2_000), Err(OrgError::Expired(2_000)));
    }

    #[test]
    fn a_credential_is_bound_to_its_org_and_member() {
        let (req, _) = MembershipRequest::new(&member());
        let c = Credential::issue(&org(), &req, 1, 0, u64::MAX);
        let other = SigningKey::from_bytes(&[4; 32]).verifying_key();
        assert!(matches!(
            c.check(&org().verifying_key(), &other, 5),
            Err(OrgError::OtherMember { .. })
        ));
        assert!(matches!(
            c.check(&other, &member().verifying_key(), 5),
            Err(OrgError::OtherOrg { .. })
        ));
    }

    #[test]
    fn any_changed_byte_is_refused() {
        let (req, _) = MembershipRequest::new(&member());
        let c = Credential::issue(&org(), &req, 1, 0, 10);
        for i in 0..CREDENTIAL_LEN {
            let mut b = *c.as_bytes();
            b[i] ^= 0x20;
            assert!(Credential::from_bytes(&b).is_err(), "byte {i}");
        }
        assert!(Credential::from_bytes(&c.as_bytes()[1..]).is_err());
        assert_eq!(Credential::decode("!!"), Err(OrgError::Base64));
        let (_, text) = MembershipRequest::new(&member());
        let mut b = from_b64(&text).unwrap();
        b[40] ^= 1;
        assert!(MembershipRequest::decode(&to_b64(&b)).is_err());
        // A credential is not a request, nor the reverse.
        assert!(MembershipRequest::decode(&c.encode()).is_err());
        assert!(Credential::decode(&text).is_err());
    }

    #[test]
    fn iris_org_signature_is_not_a_credential() {
        // Iris signs the raw 32-byte member key: never valid here, whatever
        // bytes surround it (other length, other domain).
        let sig = org().sign(member().verifying_key().as_bytes());
        assert!(Credential::from_bytes(&sig.to_bytes()).is_err());
    }
}
