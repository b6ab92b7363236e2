//! The `[org]` section of `pigeon.toml`: the organisations this pigeon
//! belongs to (its credentials) and the ones it trusts (with policies).
//! Defaults are safe: no memberships, no trusted organisations, blames of
//! members not forwarded unless `forward_blames`, what a member shares
//! goes to its organisation only.

use super::{Credential, key_of_id};
use serde::Deserialize;
use std::path::PathBuf;

/// Most organisations a pigeon belongs to: every credential travels in
/// each announce, which must fit one datagram (`docs/PROTOCOL.md` §10.2).
pub const MAX_MEMBERSHIPS: usize = 2;
/// Most trusted organisations.
pub const MAX_TRUSTED: usize = 16;

/// `[org]`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrgConfig {
    /// Directory of revocation lists (`*.list`, relative to the working
    /// directory): read at start and whenever a file changes; lists
    /// received from peers are saved here. Empty: lists are kept in memory
    /// only.
    pub revocation_dir: PathBuf,
    /// Whose requests reach Slips: `anyone` (default), or `members`: only
    /// verified members of a trusted organisation or of one we belong to,
    /// so that local intelligence is answered only to them.
    pub accept_requests: RequestPolicy,
    /// A member's sending key is replaced at least this often (while in
    /// use), besides on every revocation, expiry and join.
    pub rekey_interval_secs: u64,
    /// Organisations this pigeon belongs to (`[[org.member]]`).
    pub member: Vec<Membership>,
    /// Organisations whose members this pigeon trusts (`[[org.trusted]]`).
    pub trusted: Vec<TrustedOrg>,
}

impl Default for OrgConfig {
    fn default() -> Self {
        Self {
            revocation_dir: PathBuf::from("org-lists"),
            accept_requests: RequestPolicy::Anyone,
            rekey_interval_secs: 3_600,
            member: Vec::new(),
            trusted: Vec::new(),
        }
    }
}

/// Whose requests reach Slips.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum RequestPolicy {
    /// Every peer's (default: as without organisations).
    #[default]
    Anyone,
    /// Only verified members' of a trusted organisation or of one of ours.
    Members,
}

/// Where Slips' messages of one kind go.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Share {
    /// Encrypted to the organisation's current members only (default).
    #[default]
    Org,
    /// In clear to every pigeon of the LAN, as without organisations.
    All,
}

/// `[[org.member]]`: one organisation we belong to.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Membership {
    /// Our credential, as `pigeon org sign` printed it.
    pub credential: String,
    /// Slips' reports and blames (broadcast, and answers to a member).
    #[serde(default)]
    pub share_reports: Share,
    /// Slips' requests.
    #[serde(default)]
    pub share_requests: Share,
}

/// `[[org.trusted]]`: one organisation whose members we trust.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrustedOrg {
    /// The organisation id (`12D3KooW…`).
    pub id: String,
    /// The first reliability Slips hears for a verified member (Slips
    /// 1.1.21 keeps the first value it stores, forever).
    #[serde(default = "default_trust")]
    pub trust: f64,
    /// Forward a verified member's blames to Slips (which blocks a blamed
    /// IP without any check).
    #[serde(default)]
    pub forward_blames: bool,
}

fn default_trust() -> f64 {
    0.8
}

impl OrgConfig {
    /// Checks every value; `Err((dotted key, reason))`.
    pub fn validate(&self) -> Result<(), (String, String)> {
        if self.rekey_interval_secs < 60 {
            return Err((
                "org.rekey_interval_secs".to_owned(),
                format!("must be at least 60, got {}", self.rekey_interval_secs),
            ));
        }
        if self.member.len() > MAX_MEMBERSHIPS {
            return Err((
                "org.member".to_owned(),
                format!(
                    "at most {MAX_MEMBERSHIPS} memberships (each credential travels in every announce), got {}",
                    self.member.len()
                ),
            ));
        }
        let mut orgs = Vec::new();
        for (i, m) in self.member.iter().enumerate() {
            let c = Credential::decode(&m.credential)
                .map_err(|e| (format!("org.member[{i}].credential"), e.to_string()))?;
            if orgs.contains(&c.org) {
                return Err((
                    format!("org.member[{i}].credential"),
                    format!("a second credential of organisation {}", c.org_id()),
                ));
            }
            orgs.push(c.org);
        }
        if self.trusted.len() > MAX_TRUSTED {
            return Err((
                "org.trusted".to_owned(),
                format!(
                    "at most {MAX_TRUSTED} organisations, got {}",
                    self.trusted.len()
                ),
            ));
        }
        let mut seen = Vec::new();
        for (i, t) in self.trusted.iter().enumerate() {
            let Some(k) = key_of_id(&t.id) else {
                return Err((
                    format!("org.trusted[{i}].id"),
                    format!("not an organisation id: \"{}\"", t.id.escape_debug()),
                ));
            };
            if seen.contains(&k) {
                return Err((
                    format!("org.trusted[{i}].id"),
                    format!("listed twice: {}", t.id),
                ));
            }
            seen.push(k);
            if !(0.0..=1.0).contains(&t.trust) {
                return Err((
                    format!("org.trusted[{i}].trust"),
                    format!("must be in [0, 1], got {}", t.trust),
                ));
            }
        }
        Ok(())
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use crate::config::{Config, ConfigError};
    use crate::org::{Credential, MembershipRequest};
    use ed25519_dalek::SigningKey;

    fn cred(org: u8, member: u8) -> String {
        let (req, _) = MembershipRequest::new(&SigningKey::from_bytes(&[member; 32]));
        Credential::issue(&SigningKey::from_bytes(&[org; 32]), &req, 1, 0, 10).encode()
    }

    fn error(text: &str) -> String {
        match Config::from_toml(text).and_then(|c| c.validate()) {
            Err(e @ ConfigError::Invalid { .. }) | Err(e @ ConfigError::Toml { .. }) => {
                e.to_string()
            }
            other => panic!("expected an error for {text}, got {other:?}"),
        }
    }

    #[test]
    fn memberships_and_trusted_orgs_parse_as_tables() {
        let org = crate::org::org_id(&SigningKey::from_bytes(&[5; 32]).verifying_key());
        let text = format!(
            "[[org.member]]\ncredential = \"{}\"\nshare_requests = \"all\"\n\n[[org.trusted]]\nid = \"{org}\"\nforward_blames = true\n",
            cred(5, 1)
        );
        let c = Config::from_toml(&text).unwrap();
        c.validate().unwrap();
        assert_eq!(c.org.member.len(), 1);
        assert_eq!(c.org.member[0].share_reports, super::Share::Org);
        assert_eq!(c.org.member[0].share_requests, super::Share::All);
        assert_eq!(c.org.trusted[0].trust, 0.8);
        assert!(c.org.trusted[0].forward_blames);
    }

    #[test]
    fn bad_org_values_name_their_key() {
        let e = error("[[org.member]]\ncredential = \"AAAA\"\n");
        assert!(
            e.starts_with("org.member[0].credential: malformed credential"),
            "{e}"
        );
        let e = error("[[org.member]]\ncredntial = \"x\"\n");
        assert!(
            e.contains("org.member") && e.contains("unknown field"),
            "{e}"
        );
        let mut damaged = cred(5, 1).into_bytes();
        damaged[100] = if damaged[100] == b'A' { b'B' } else { b'A' };
        let e = error(&format!(
            "[[org.member]]\ncredential = \"{}\"\n",
            String::from_utf8(damaged).unwrap()
        ));
        assert!(
            e.contains("org.member[0].credential: credential: bad signature"),
            "{e}"
        );
        let three: String = (1..=3)
            .map(|o| format!("[[org.member]]\ncredential = \"{}\"\n", cred(o, 1)))
            .collect();
        assert!(error(&three).starts_with("org.member: at most 2"));
        let twice = format!(
            "[[org.member]]\ncredential = \"{0}\"\n[[org.member]]\ncredential = \"{0}\"\n",
            cred(5, 1)
        );
        assert!(error(&twice).contains("a second credential"));
        assert!(
            error("[[org.trusted]]\nid = \"nope\"\n")
                .starts_with("org.trusted[0].id: not an organisation id")
        );
        let org = crate::org::org_id(&SigningKey::from_bytes(&[5; 32]).verifying_key());
        assert!(
            error(&format!("[[org.trusted]]\nid = \"{org}\"\ntrust = 1.5\n"))
                .starts_with("org.trusted[0].trust: must be in [0, 1]")
        );
        assert!(error("[org]\nrekey_interval_secs = 5\n").starts_with("org.rekey_interval_secs"));
        assert!(error("[org]\naccept_requests = \"some\"\n").contains("org.accept_requests"));
    }
}
