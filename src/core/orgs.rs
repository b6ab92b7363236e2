//! The node's organisations (`docs/PROTOCOL.md` §10): membership proofs in
//! announces, revocation lists and their gossip, members' sending keys
//! (made, rotated, wrapped to each member, asked for), sealing and opening
//! org-scoped Slips messages, and the policies toward Slips. Sans-IO like
//! the rest of [`super::Node`]; the hooks in `core/mod.rs` are marked
//! "org:".
//!
//! Everything a remote peer can make us keep here is bounded: claims are
//! kept only for keys in the peer table and only for organisations we
//! belong to or trust (at most 2 + 16), two sending keys per member and
//! organisation, one list per organisation, and fixed-size maps of rate
//! limits.

use super::peers::PeerState;
use super::stats::DropReason;
use super::{Action, Destination, Millis, Node, Now, Via};
use crate::org::config::{OrgConfig, RequestPolicy, Share};
use crate::org::crypto::{self, MemberSecret, SealedPayload};
use crate::org::{Credential, RevocationList, key_of_id, org_id};
use crate::slips::Recipient;
use crate::slips::payload::{self, PayloadKind};
use crate::wire::{AnnounceBody, Kind, MAX_DATAGRAM, Verified};
use base64::Engine as _;
use base64::prelude::BASE64_STANDARD;
use ed25519_dalek::VerifyingKey;
use rand::rngs::StdRng;
use rand::{RngExt, SeedableRng};
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::net::SocketAddrV4;

/// How long the first `peer_update` of a newly proven peer waits for its
/// membership claims (its first announce at the proven address), when we
/// trust any organisation: Slips keeps the first reliability for ever.
/// A pigeon with memberships announces right after answering a challenge,
/// so the claims normally arrive within a round trip and 0–120 ms.
pub(crate) const ORG_PROOF_WAIT_MS: Millis = 2_000;
/// Sending keys kept per member and organisation (the current one and the
/// one before, for messages still in flight or being repaired).
const KEYS_KEPT: usize = 2;
/// Shortest gap between two requests for one sender's key of one epoch.
const KEYREQ_GAP_MS: Millis = 250;
/// Key requests remembered for their gap.
const MAX_KEYREQS: usize = 256;
/// Shortest gap between two lists pushed to one peer.
const LIST_PUSH_GAP_MS: Millis = 10_000;
/// Most `orgs` entries in an announce (more is a malformed body).
pub(crate) const MAX_ANNOUNCED_ORGS: usize = 4;
/// Longest `cred` or `id` string of an announce entry.
const MAX_CLAIM_LEN: usize = 300;

/// One entry of an announce's `orgs`: a membership (`cred`) or an
/// organisation we trust (`id`), with the sequence number of the newest
/// revocation list we hold for it (`rl`, 0 = none).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct OrgClaim {
    /// Our credential, base64.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) cred: Option<String>,
    /// An organisation id, for organisations we trust but are not in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) id: Option<String>,
    /// Our list's `seq`.
    #[serde(default)]
    pub(crate) rl: u64,
}

#[derive(Deserialize)]
struct AnnounceOrgs {
    #[serde(default)]
    orgs: Vec<OrgClaim>,
}

/// An announce body with `orgs` (its other fields as [`AnnounceBody`]).
#[derive(Debug, Serialize)]
pub(crate) struct AnnounceWithOrgs {
    #[serde(flatten)]
    pub(crate) base: AnnounceBody,
    pub(crate) orgs: Vec<OrgClaim>,
}

/// Body of an `org` datagram.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "lowercase")]
pub(crate) enum OrgBody {
    /// A revocation list (base64), multicast when new, unicast to a peer
    /// that announced an older one.
    List {
        /// The list.
        list: String,
    },
    /// A sending key wrapped to one member (unicast).
    Key {
        /// Organisation id.
        org: String,
        /// Epoch of the key.
        epoch: u64,
        /// Recipient's peer id.
        to: String,
        /// HPKE encapsulated key, base64 (32 bytes).
        enc: String,
        /// Wrapped key, base64 (48 bytes).
        key: String,
    },
    /// "Send me your key of this epoch" (unicast, to the sender).
    Keyreq {
        /// Organisation id.
        org: String,
        /// Epoch wanted.
        epoch: u64,
        /// Peer id of the key's owner.
        to: String,
    },
}

/// A sending key of ours.
#[derive(Debug, Clone)]
struct SendKey {
    epoch: u64,
    key: [u8; 32],
    created_ms: Millis,
    /// A message was sealed with it (so a joining member needs a new one).
    used: bool,
}

/// An organisation we belong to.
#[derive(Debug)]
struct Member {
    cred: Credential,
    share_reports: Share,
    share_requests: Share,
    /// Our credential is within its validity and not revoked.
    active: bool,
    sending: Option<SendKey>,
    prev: Option<(u64, [u8; 32])>,
    rotate_due: bool,
    /// Members the current key went to, with their session instance.
    sent_to: HashMap<[u8; 32], u64>,
    /// Members verified in this run (a first verification is a join).
    seen: HashSet<[u8; 32]>,
}

/// An organisation we belong to or trust.
#[derive(Debug)]
struct Org {
    key: VerifyingKey,
    id: String,
    /// `(trust, forward_blames)` if we trust it.
    trust: Option<(f64, bool)>,
    member: Option<Member>,
    list: Option<RevocationList>,
}

/// What we know of one peer's organisations.
#[derive(Debug, Default)]
struct PeerOrgs {
    /// Its claims were read (an announce at its proven address, with a
    /// session), with or without memberships.
    known: bool,
    /// When its first `peer_update` was first held back.
    first_held_ms: Option<Millis>,
    /// Verified memberships: organisation index and credential.
    member_of: Vec<(usize, Credential)>,
    /// Its sending keys: organisation index, epoch, key.
    keys: Vec<(usize, u64, [u8; 32])>,
}

/// The organisations of one node.
pub(crate) struct Orgs {
    secret: MemberSecret,
    rng: StdRng,
    rekey_ms: Millis,
    accept_requests: RequestPolicy,
    known: Vec<Org>,
    peers: HashMap<[u8; 32], PeerOrgs>,
    keyreqs: HashMap<([u8; 32], u64), Millis>,
    /// Key requests answered, per requester and epoch: each answer costs
    /// an HPKE wrap, so one is made at most every [`KEYREQ_GAP_MS`].
    answered: HashMap<([u8; 32], u64), Millis>,
    list_pushes: HashMap<[u8; 32], Millis>,
}

impl std::fmt::Debug for Orgs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Orgs")
            .field("orgs", &self.known.len())
            .finish_non_exhaustive()
    }
}

/// Why a membership in the configuration cannot be used by this key.
pub fn check_memberships(cfg: &OrgConfig, key: &ed25519_dalek::SigningKey) -> Result<(), String> {
    let x = MemberSecret::derive(&key.to_bytes()).public();
    for (i, m) in cfg.member.iter().enumerate() {
        let c = Credential::decode(&m.credential)
            .map_err(|e| format!("org.member[{i}].credential: {e}"))?;
        if c.member != key.verifying_key() {
            return Err(format!(
                "org.member[{i}].credential: issued to {}, not to this pigeon's key {}",
                c.member_id(),
                org_id(&key.verifying_key())
            ));
        }
        if c.member_x25519 != x {
            return Err(format!(
                "org.member[{i}].credential: its key-distribution key is not this pigeon's (made from another key file?)"
            ));
        }
    }
    Ok(())
}

impl Orgs {
    /// From the configuration; memberships that are not this key's are
    /// left out (the runtime refuses to start with them:
    /// [`check_memberships`]).
    pub(crate) fn new(
        cfg: &OrgConfig,
        key: &ed25519_dalek::SigningKey,
        rng_seed: [u8; 32],
    ) -> Self {
        let secret = MemberSecret::derive(&key.to_bytes());
        let mut known: Vec<Org> = Vec::new();
        for m in &cfg.member {
            let Ok(cred) = Credential::decode(&m.credential) else {
                continue;
            };
            if cred.member != key.verifying_key() || cred.member_x25519 != secret.public() {
                tracing::error!(org = %cred.org_id(), "membership credential of another key: ignored");
                continue;
            }
            known.push(Org {
                key: cred.org,
                id: cred.org_id(),
                trust: None,
                member: Some(Member {
                    cred,
                    share_reports: m.share_reports,
                    share_requests: m.share_requests,
                    active: true,
                    sending: None,
                    prev: None,
                    rotate_due: false,
                    sent_to: HashMap::new(),
                    seen: HashSet::new(),
                }),
                list: None,
            });
        }
        for t in &cfg.trusted {
            let Some(k) = key_of_id(&t.id) else { continue };
            match known.iter_mut().find(|o| o.key == k) {
                Some(o) => o.trust = Some((t.trust, t.forward_blames)),
                None => known.push(Org {
                    key: k,
                    id: org_id(&k),
                    trust: Some((t.trust, t.forward_blames)),
                    member: None,
                    list: None,
                }),
            }
        }
        Self {
            secret,
            rng: StdRng::from_seed(rng_seed),
            rekey_ms: cfg.rekey_interval_secs.saturating_mul(1000),
            accept_requests: cfg.accept_requests,
            known,
            peers: HashMap::new(),
            keyreqs: HashMap::new(),
            answered: HashMap::new(),
            list_pushes: HashMap::new(),
        }
    }

    fn index_of(&self, key: &[u8]) -> Option<usize> {
        self.known.iter().position(|o| o.key.as_bytes()[..] == *key)
    }

    fn index_of_id(&self, id: &str) -> Option<usize> {
        self.known.iter().position(|o| o.id == id)
    }

    /// Whether `cred` (already signature-checked) is valid now in org
    /// `idx`: time window and list.
    fn valid(&self, idx: usize, cred: &Credential, now_s: u64) -> bool {
        let o = &self.known[idx];
        cred.org == o.key
            && cred.check_time(now_s).is_ok()
            && !o.list.as_ref().is_some_and(|l| l.revokes(cred))
    }

    fn is_member(&self, peer: &[u8; 32], idx: usize) -> bool {
        self.peers
            .get(peer)
            .is_some_and(|p| p.member_of.iter().any(|(i, _)| *i == idx))
    }

    fn has_memberships(&self) -> bool {
        self.known.iter().any(|o| o.member.is_some())
    }

    fn trusts_any(&self) -> bool {
        self.known.iter().any(|o| o.trust.is_some())
    }
}

/// What became of a sealed payload (see [`Node::org_open`]).
pub(super) enum Opened {
    /// Decrypted: the Slips payload.
    Plain(String),
    /// Not readable yet (key or sender's membership not known): not
    /// delivered, so its copies or a repair bring it again.
    NotYet(&'static str),
    /// Not for us: we are not a current member, or the sender is not.
    NotForUs,
    /// Malformed, or does not decrypt with its sender's key.
    Bad(&'static str),
}

/// Where one Slips message goes (see [`Node::org_outgoing`]).
pub(super) enum Outgoing {
    /// In clear, as without organisations.
    Clear,
    /// Sealed, one payload per organisation.
    Sealed(Vec<String>),
    /// Nowhere.
    Refused(&'static str),
}

fn b64(bytes: &[u8]) -> String {
    BASE64_STANDARD.encode(bytes)
}

impl Node {
    /// The organisations' random generator: seeded here from the identity
    /// secret and this run's seed, re-seeded by the runtime from the
    /// operating system ([`Node::reseed_orgs`]); sending keys and nonces
    /// come from it.
    pub(super) fn org_rng_seed(
        key: &ed25519_dalek::SigningKey,
        rng_seed: u64,
        instance: u64,
    ) -> [u8; 32] {
        let hk = hkdf::Hkdf::<sha2::Sha256>::new(Some(b"pigeon-org-rng/1"), &key.to_bytes());
        let mut info = [0u8; 16];
        info[..8].copy_from_slice(&rng_seed.to_be_bytes());
        info[8..].copy_from_slice(&instance.to_be_bytes());
        let mut out = [0u8; 32];
        let _ = hk.expand(&info, &mut out);
        out
    }

    /// Seeds the random generator of sending keys and nonces with 32 bytes
    /// from the operating system (the runtime does, before any input).
    pub fn reseed_orgs(&mut self, seed: [u8; 32]) {
        self.orgs.rng = StdRng::from_seed(seed);
    }

    /// A revocation list read from a file (`org.revocation_dir`): kept if
    /// it is a valid list of an organisation we belong to or trust and
    /// newer than ours, then passed on to the LAN.
    pub fn handle_org_list(&mut self, now: Now, text: &str) -> Result<bool, String> {
        let t = self.set_clock(now);
        self.handling_from = None;
        let list = RevocationList::decode(text).map_err(|e| e.to_string())?;
        let Some(idx) = self.orgs.index_of(list.org.as_bytes()) else {
            return Err(format!(
                "a list of organisation {}, which we neither belong to nor trust",
                list.org_id()
            ));
        };
        Ok(self.install_list(t, idx, list))
    }

    /// Installs `list` if newer; returns whether it was.
    fn install_list(&mut self, t: Millis, idx: usize, list: RevocationList) -> bool {
        if self.orgs.known[idx]
            .list
            .as_ref()
            .is_some_and(|l| l.seq >= list.seq)
        {
            return false;
        }
        tracing::info!(org = %list.org_id(), seq = list.seq, entries = list.entries.len(), "new revocation list");
        let encoded = list.encode();
        let bytes = list.as_bytes().to_vec();
        self.orgs.known[idx].list = Some(list);
        self.actions.push_back(Action::SaveOrgList {
            org: self.orgs.known[idx].id.clone(),
            list: bytes,
        });
        // Everyone hears of it at once; peers that miss it announce an
        // older seq and get it from whoever holds it (§10.3).
        self.send(
            t,
            Destination::Multicast,
            Kind::Org,
            &OrgBody::List { list: encoded },
        );
        self.org_revalidate(t);
        // Members that lost their membership must not get our next key.
        self.org_rotations(t);
        true
    }

    /// Re-checks every verified membership (time, lists) and our own: a
    /// member that is no longer one makes each of our memberships of that
    /// organisation rotate its key.
    fn org_revalidate(&mut self, t: Millis) {
        let now_s = self.wall(t) / 1000;
        let mut lost: Vec<(usize, [u8; 32])> = Vec::new();
        let orgs = &self.orgs;
        let checks: Vec<([u8; 32], Vec<usize>)> = orgs
            .peers
            .iter()
            .map(|(k, p)| {
                let gone = p
                    .member_of
                    .iter()
                    .filter(|(i, c)| !orgs.valid(*i, c, now_s))
                    .map(|(i, _)| *i)
                    .collect();
                (*k, gone)
            })
            .collect();
        for (k, gone) in checks {
            if gone.is_empty() {
                continue;
            }
            if let Some(p) = self.orgs.peers.get_mut(&k) {
                p.member_of.retain(|(i, _)| !gone.contains(i));
                p.keys.retain(|(i, _, _)| !gone.contains(i));
            }
            for i in gone {
                tracing::info!(peer = %org_id_of(&k), org = %self.orgs.known[i].id, "membership ended (expired or revoked)");
                lost.push((i, k));
            }
        }
        for (i, k) in lost {
            if let Some(m) = self.orgs.known[i].member.as_mut()
                && m.sent_to.contains_key(&k)
            {
                m.rotate_due = true;
            }
        }
        for idx in 0..self.orgs.known.len() {
            let valid = match &self.orgs.known[idx].member {
                Some(m) => self.orgs.valid(idx, &m.cred, now_s),
                None => continue,
            };
            if let Some(m) = self.orgs.known[idx].member.as_mut()
                && m.active != valid
            {
                m.active = valid;
                if valid {
                    tracing::info!(org = %m.cred.org_id(), "our membership is valid");
                } else {
                    tracing::error!(org = %m.cred.org_id(), "our membership expired or was revoked: nothing more is sent to this organisation");
                    m.sending = None;
                    m.prev = None;
                }
            }
        }
    }

    /// `orgs` entries of our announce: memberships first, then trusted
    /// organisations (the caller drops those that do not fit).
    pub(super) fn org_announce_entries(&self) -> Vec<OrgClaim> {
        let rl = |o: &Org| o.list.as_ref().map_or(0, |l| l.seq);
        let mut v: Vec<OrgClaim> = self
            .orgs
            .known
            .iter()
            .filter_map(|o| {
                let m = o.member.as_ref().filter(|m| m.active)?;
                Some(OrgClaim {
                    cred: Some(m.cred.encode()),
                    id: None,
                    rl: rl(o),
                })
            })
            .collect();
        v.extend(
            self.orgs
                .known
                .iter()
                .filter(|o| o.member.as_ref().is_none_or(|m| !m.active))
                .map(|o| OrgClaim {
                    cred: None,
                    id: Some(o.id.clone()),
                    rl: rl(o),
                }),
        );
        v.truncate(MAX_ANNOUNCED_ORGS);
        v
    }

    /// Whether answering a challenge should be followed by an announce:
    /// the challenger is about to know us and wants our claims.
    pub(super) fn org_announce_after_response(&self) -> bool {
        self.orgs.has_memberships()
    }

    /// The `orgs` of a known peer's announce at its proven address:
    /// verify its memberships against its own key, push lists it lacks and
    /// our sending keys to new (or restarted) members.
    pub(super) fn on_org_claims(&mut self, t: Millis, v: &Verified<'_>) {
        if self.orgs.known.is_empty() {
            // No organisation of ours: nothing to verify, nothing kept.
            return;
        }
        let claims = match v.body::<AnnounceOrgs>() {
            Ok(a) => a.orgs,
            Err(_) => Vec::new(),
        };
        if claims.len() > MAX_ANNOUNCED_ORGS
            || claims.iter().any(|c| {
                c.cred.as_ref().is_some_and(|s| s.len() > MAX_CLAIM_LEN)
                    || c.id.as_ref().is_some_and(|s| s.len() > MAX_CLAIM_LEN)
                    || c.rl > crate::wire::MAX_SAFE_INT
            })
        {
            return self.misbehaved(t, v, DropReason::BadBody, "announce with malformed orgs");
        }
        let key = *v.key.as_bytes();
        let now_s = self.wall(t) / 1000;
        let mut verified: Vec<(usize, Credential)> = Vec::new();
        let mut behind: Vec<usize> = Vec::new();
        for c in &claims {
            let idx = if let Some(text) = &c.cred {
                // Only credentials of organisations we know cost a
                // signature check; others are not kept.
                let Ok(raw) = BASE64_STANDARD.decode(text) else {
                    continue;
                };
                let Some(idx) = raw.get(1..33).and_then(|o| self.orgs.index_of(o)) else {
                    continue;
                };
                match Credential::from_bytes(&raw) {
                    Ok(cred) if cred.member == v.key => {
                        if self.orgs.valid(idx, &cred, now_s)
                            && !verified.iter().any(|(i, _)| *i == idx)
                        {
                            verified.push((idx, cred));
                        }
                    }
                    // Another key's credential, or a forgery: it proves
                    // nothing about this sender.
                    _ => continue,
                }
                idx
            } else if let Some(idx) = c.id.as_deref().and_then(|id| self.orgs.index_of_id(id)) {
                idx
            } else {
                continue;
            };
            if self.orgs.known[idx]
                .list
                .as_ref()
                .is_some_and(|l| l.seq > c.rl)
            {
                behind.push(idx);
            }
        }
        let entry = self.orgs.peers.entry(key).or_default();
        let before: Vec<usize> = entry.member_of.iter().map(|(i, _)| *i).collect();
        entry.known = true;
        entry.member_of = verified;
        let after: Vec<usize> = entry.member_of.iter().map(|(i, _)| *i).collect();
        entry.keys.retain(|(i, _, _)| after.contains(i));
        for i in before.iter().filter(|i| !after.contains(i)) {
            if let Some(m) = self.orgs.known[*i].member.as_mut()
                && m.sent_to.contains_key(&key)
            {
                m.rotate_due = true;
            }
        }
        let session = self.peers.get(&v.key).and_then(|p| p.session_instance);
        for idx in after {
            let Some(m) = self.orgs.known[idx].member.as_mut().filter(|m| m.active) else {
                continue;
            };
            if m.seen.insert(key) {
                tracing::info!(peer = %org_id_of(&key), org = %m.cred.org_id(), "member verified");
                // A new member must not read what was sealed before it
                // joined: a key already used is replaced.
                if m.sending.as_ref().is_some_and(|s| s.used) {
                    m.rotate_due = true;
                    continue;
                }
            }
            let sent = m.sent_to.get(&key).copied();
            if m.sending.is_some() && session.is_some() && sent != session {
                self.push_key(t, idx, &v.key);
            }
        }
        for idx in behind {
            self.push_list(t, idx, &v.key);
        }
        self.org_rotations(t);
        // Its first `peer_update` may have waited for this.
        self.peer_update(t, &v.key, false);
    }

    /// Sends our list of org `idx` to `to` (at most once per
    /// [`LIST_PUSH_GAP_MS`] per peer).
    fn push_list(&mut self, t: Millis, idx: usize, to: &VerifyingKey) {
        let k = *to.as_bytes();
        if self
            .orgs
            .list_pushes
            .get(&k)
            .is_some_and(|l| t.saturating_sub(*l) < LIST_PUSH_GAP_MS)
        {
            return;
        }
        let Some(list) = self.orgs.known[idx].list.as_ref().map(|l| l.encode()) else {
            return;
        };
        let Some(addr) = self.proven_addr(to) else {
            return;
        };
        self.orgs.list_pushes.insert(k, t);
        self.reply(t, addr, 0, to, Kind::Org, &OrgBody::List { list });
    }

    fn proven_addr(&self, key: &VerifyingKey) -> Option<SocketAddrV4> {
        self.peers
            .get(key)
            .filter(|p| p.proven && p.state == PeerState::Active)
            .and_then(|p| p.addr)
    }

    /// Wraps our current sending key of org `idx` for member `to` and
    /// sends it.
    fn push_key(&mut self, t: Millis, idx: usize, to: &VerifyingKey) {
        let Some((epoch, key)) = self.orgs.known[idx]
            .member
            .as_ref()
            .and_then(|m| m.sending.as_ref())
            .map(|s| (s.epoch, s.key))
        else {
            return;
        };
        if self.send_key(t, idx, to, epoch, &key)
            && let Some(inst) = self.peers.get(to).and_then(|p| p.session_instance)
            && let Some(m) = self.orgs.known[idx].member.as_mut()
        {
            m.sent_to.insert(*to.as_bytes(), inst);
        }
    }

    /// Wraps `key` (epoch `epoch` of org `idx`) for `to` and sends it to
    /// its proven address; whether it was sent.
    fn send_key(
        &mut self,
        t: Millis,
        idx: usize,
        to: &VerifyingKey,
        epoch: u64,
        key: &[u8; 32],
    ) -> bool {
        let Some(addr) = self.proven_addr(to) else {
            return false;
        };
        let Some(x) = self.orgs.peers.get(to.as_bytes()).and_then(|p| {
            p.member_of
                .iter()
                .find(|(i, _)| *i == idx)
                .map(|(_, c)| c.member_x25519)
        }) else {
            return false;
        };
        let org = *self.orgs.known[idx].key.as_bytes();
        let info = crypto::key_info(
            &org,
            self.key.verifying_key().as_bytes(),
            epoch,
            to.as_bytes(),
        );
        let Ok((enc, wrapped)) = crypto::wrap_key(&mut self.orgs.rng, &x, &info, key) else {
            return false;
        };
        let body = OrgBody::Key {
            org: self.orgs.known[idx].id.clone(),
            epoch,
            to: org_id(to),
            enc: b64(&enc),
            key: b64(&wrapped),
        };
        self.reply(t, addr, 0, to, Kind::Org, &body)
    }

    /// Replaces the sending key of every membership whose rotation is due
    /// (or whose key is older than the rekey interval and was used), and
    /// sends the new one to every current member.
    fn org_rotations(&mut self, t: Millis) {
        for idx in 0..self.orgs.known.len() {
            let due = self.orgs.known[idx].member.as_ref().is_some_and(|m| {
                m.active
                    && m.sending.as_ref().is_some_and(|s| {
                        m.rotate_due
                            || (s.used && t.saturating_sub(s.created_ms) >= self.orgs.rekey_ms)
                    })
            });
            if due {
                self.rotate(t, idx);
            }
        }
    }

    /// A new sending key for org `idx`, sent to every current member.
    fn rotate(&mut self, t: Millis, idx: usize) {
        let epoch = self.orgs.rng.random_range(1..=crate::wire::MAX_SAFE_INT);
        let key: [u8; 32] = self.orgs.rng.random();
        let Some(m) = self.orgs.known[idx].member.as_mut() else {
            return;
        };
        m.prev = m.sending.as_ref().map(|s| (s.epoch, s.key));
        m.sending = Some(SendKey {
            epoch,
            key,
            created_ms: t,
            used: false,
        });
        m.rotate_due = false;
        m.sent_to.clear();
        tracing::debug!(org = %m.cred.org_id(), epoch, "new sending key");
        let members: Vec<VerifyingKey> = self
            .peers
            .iter()
            .filter(|p| self.orgs.is_member(p.key.as_bytes(), idx))
            .map(|p| p.key)
            .collect();
        for k in members {
            self.push_key(t, idx, &k);
        }
    }

    /// Where Slips' `message` goes: in clear, sealed to some of our
    /// organisations, or nowhere (`docs/PROTOCOL.md` §10.6).
    pub(super) fn org_outgoing(
        &mut self,
        t: Millis,
        message: &str,
        recipient: &Recipient,
    ) -> Outgoing {
        let request = payload::validate(message).is_ok_and(|p| p.kind == PayloadKind::Request);
        let targets: Vec<usize> = (0..self.orgs.known.len())
            .filter(|i| {
                self.orgs.known[*i].member.as_ref().is_some_and(|m| {
                    let share = if request {
                        m.share_requests
                    } else {
                        m.share_reports
                    };
                    share == Share::Org
                })
            })
            .collect();
        if targets.is_empty() {
            return Outgoing::Clear;
        }
        let active: Vec<usize> = targets
            .into_iter()
            .filter(|i| {
                self.orgs.known[*i]
                    .member
                    .as_ref()
                    .is_some_and(|m| m.active)
            })
            .collect();
        if active.is_empty() {
            return Outgoing::Refused("our memberships are expired or revoked");
        }
        let chosen: Vec<usize> = match recipient {
            Recipient::All => active,
            Recipient::Peer(id) => {
                let Some(k) = key_of_id(id) else {
                    return Outgoing::Refused("recipient is not a member");
                };
                match active
                    .into_iter()
                    .find(|i| self.orgs.is_member(k.as_bytes(), *i))
                {
                    Some(i) => vec![i],
                    None => return Outgoing::Refused("recipient is not a member"),
                }
            }
        };
        Outgoing::Sealed(
            chosen
                .into_iter()
                .map(|i| self.seal_for(t, i, message))
                .collect(),
        )
    }

    /// Seals `message` with our sending key of org `idx` (made or rotated
    /// first if needed).
    fn seal_for(&mut self, t: Millis, idx: usize, message: &str) -> String {
        let fresh = self.orgs.known[idx]
            .member
            .as_ref()
            .is_some_and(|m| m.sending.is_none());
        if fresh {
            self.rotate(t, idx);
        } else {
            self.org_rotations(t);
        }
        let nonce: [u8; crypto::NONCE_LEN] = self.orgs.rng.random();
        let org = *self.orgs.known[idx].key.as_bytes();
        let id = self.orgs.known[idx].id.clone();
        let sender = *self.key.verifying_key().as_bytes();
        let Some(s) = self.orgs.known[idx]
            .member
            .as_mut()
            .and_then(|m| m.sending.as_mut())
        else {
            return String::new();
        };
        s.used = true;
        let aad = crypto::message_aad(&org, &sender, s.epoch);
        SealedPayload {
            org_id: id,
            epoch: s.epoch,
            nonce,
            ciphertext: crypto::seal(&s.key, &nonce, &aad, message.as_bytes()),
        }
        .encode()
    }

    /// Opens a sealed payload from `sender` (`docs/PROTOCOL.md` §10.5).
    pub(super) fn org_open(&mut self, t: Millis, sender: &VerifyingKey, payload: &str) -> Opened {
        let Some(p) = SealedPayload::parse(payload) else {
            return Opened::Bad("malformed sealed payload");
        };
        let Some(idx) = self.orgs.index_of_id(&p.org_id) else {
            return Opened::NotForUs;
        };
        if !self.orgs.known[idx]
            .member
            .as_ref()
            .is_some_and(|m| m.active)
        {
            return Opened::NotForUs;
        }
        let s = *sender.as_bytes();
        let Some(po) = self.orgs.peers.get(&s).filter(|po| po.known) else {
            return Opened::NotYet("sender's memberships not known yet");
        };
        if !po.member_of.iter().any(|(i, _)| *i == idx) {
            return Opened::NotForUs;
        }
        let Some(key) = po
            .keys
            .iter()
            .find(|(i, e, _)| *i == idx && *e == p.epoch)
            .map(|(_, _, k)| *k)
        else {
            self.request_key(t, idx, sender, p.epoch);
            return Opened::NotYet("sender's key not received yet");
        };
        let aad = crypto::message_aad(self.orgs.known[idx].key.as_bytes(), &s, p.epoch);
        match crypto::open(&key, &p.nonce, &aad, &p.ciphertext) {
            Ok(plain) => match String::from_utf8(plain) {
                Ok(text) => Opened::Plain(text),
                Err(_) => Opened::Bad("sealed payload is not text"),
            },
            Err(_) => Opened::Bad("sealed payload does not decrypt"),
        }
    }

    /// Asks `sender` for its key of `epoch` (at most once per
    /// [`KEYREQ_GAP_MS`]).
    fn request_key(&mut self, t: Millis, idx: usize, sender: &VerifyingKey, epoch: u64) {
        if !gap_passed(&mut self.orgs.keyreqs, (*sender.as_bytes(), epoch), t) {
            return;
        }
        let Some(addr) = self.proven_addr(sender) else {
            return;
        };
        let body = OrgBody::Keyreq {
            org: self.orgs.known[idx].id.clone(),
            epoch,
            to: org_id(sender),
        };
        self.reply(t, addr, 0, sender, Kind::Org, &body);
    }

    /// An `org` datagram from a peer in the table.
    pub(super) fn on_org(&mut self, t: Millis, via: Via, v: &Verified<'_>) {
        let body = match v.body::<OrgBody>() {
            Ok(b) => b,
            Err(_) => return self.misbehaved(t, v, DropReason::BadBody, "malformed org datagram"),
        };
        match body {
            OrgBody::List { list } => {
                let l = match RevocationList::decode(&list) {
                    Ok(l) => l,
                    Err(_) => {
                        return self.misbehaved(
                            t,
                            v,
                            DropReason::BadBody,
                            "invalid revocation list",
                        );
                    }
                };
                let Some(idx) = self.orgs.index_of(l.org.as_bytes()) else {
                    return self.drop(
                        t,
                        DropReason::OrgPolicy,
                        &"list of an organisation we do not know",
                    );
                };
                let ours = self.orgs.known[idx].list.as_ref().map_or(0, |o| o.seq);
                if l.seq < ours {
                    // It is behind: give it ours.
                    return self.push_list(t, idx, &v.key);
                }
                self.install_list(t, idx, l);
            }
            OrgBody::Key {
                org,
                epoch,
                to,
                enc,
                key,
            } => {
                if via != Via::Unicast {
                    return self.drop(t, DropReason::WrongChannel, &"org key by multicast");
                }
                if to != self.peer_id {
                    return self.drop(t, DropReason::NotForUs, &"org key for another peer");
                }
                let Some(idx) = self.orgs.index_of_id(&org) else {
                    return self.drop(
                        t,
                        DropReason::OrgPolicy,
                        &"org key of an organisation we are not in",
                    );
                };
                if !self.orgs.known[idx]
                    .member
                    .as_ref()
                    .is_some_and(|m| m.active)
                    || !self.orgs.is_member(v.key.as_bytes(), idx)
                {
                    return self.drop(t, DropReason::OrgPolicy, &"org key from a non-member");
                }
                if self
                    .orgs
                    .peers
                    .get(v.key.as_bytes())
                    .is_some_and(|p| p.keys.iter().any(|(i, e, _)| *i == idx && *e == epoch))
                {
                    // Held already: a copy costs no HPKE open.
                    return self.drop(t, DropReason::Duplicate, &"org key held already");
                }
                let (Ok(enc), Ok(wrapped)) =
                    (BASE64_STANDARD.decode(&enc), BASE64_STANDARD.decode(&key))
                else {
                    return self.misbehaved(t, v, DropReason::BadBody, "malformed org key");
                };
                let info = crypto::key_info(
                    self.orgs.known[idx].key.as_bytes(),
                    v.key.as_bytes(),
                    epoch,
                    self.key.verifying_key().as_bytes(),
                );
                let Ok(k) = self.orgs.secret.unwrap_key(&enc, &wrapped, &info) else {
                    return self.misbehaved(t, v, DropReason::BadBody, "org key does not unwrap");
                };
                if let Some(p) = self.orgs.peers.get_mut(v.key.as_bytes()) {
                    p.keys.retain(|(i, e, _)| !(*i == idx && *e == epoch));
                    p.keys.push((idx, epoch, k));
                    while p.keys.iter().filter(|(i, _, _)| *i == idx).count() > KEYS_KEPT {
                        if let Some(pos) = p.keys.iter().position(|(i, _, _)| *i == idx) {
                            p.keys.remove(pos);
                        }
                    }
                }
            }
            OrgBody::Keyreq { org, epoch, to } => {
                if via != Via::Unicast {
                    return self.drop(t, DropReason::WrongChannel, &"org key request by multicast");
                }
                if to != self.peer_id {
                    return self.drop(t, DropReason::NotForUs, &"org key request for another peer");
                }
                let Some(idx) = self.orgs.index_of_id(&org) else {
                    return self.drop(
                        t,
                        DropReason::OrgPolicy,
                        &"key request of an organisation we are not in",
                    );
                };
                if !self.orgs.is_member(v.key.as_bytes(), idx) {
                    return self.drop(t, DropReason::OrgPolicy, &"key request from a non-member");
                }
                let key = self.orgs.known[idx]
                    .member
                    .as_ref()
                    .filter(|m| m.active)
                    .and_then(|m| match &m.sending {
                        Some(s) if s.epoch == epoch => Some(s.key),
                        _ => m.prev.filter(|(e, _)| *e == epoch).map(|(_, k)| k),
                    });
                if key.is_some()
                    && !gap_passed(&mut self.orgs.answered, (*v.key.as_bytes(), epoch), t)
                {
                    return self.drop(t, DropReason::PeerRate, &"org key requested again too soon");
                }
                match key {
                    Some(k) => {
                        if self.send_key(t, idx, &v.key, epoch, &k)
                            && let Some(inst) =
                                self.peers.get(&v.key).and_then(|p| p.session_instance)
                            && let Some(m) = self.orgs.known[idx].member.as_mut()
                            && m.sending.as_ref().is_some_and(|s| s.epoch == epoch)
                        {
                            m.sent_to.insert(*v.key.as_bytes(), inst);
                        }
                    }
                    None => self.drop(
                        t,
                        DropReason::OrgPolicy,
                        &"key request of an epoch we no longer have",
                    ),
                }
            }
        }
    }

    /// Once a second: expiry, rotations, forgetting what belongs to keys
    /// no longer in the table.
    pub(super) fn org_housekeeping(&mut self, t: Millis) {
        if self.orgs.known.is_empty() {
            return;
        }
        self.org_revalidate(t);
        self.org_rotations(t);
        let peers = &self.peers;
        self.orgs
            .peers
            .retain(|k, _| VerifyingKey::from_bytes(k).is_ok_and(|k| peers.get(&k).is_some()));
        self.orgs
            .keyreqs
            .retain(|_, l| t.saturating_sub(*l) < 10 * KEYREQ_GAP_MS);
        self.orgs
            .answered
            .retain(|_, l| t.saturating_sub(*l) < 10 * KEYREQ_GAP_MS);
        self.orgs
            .list_pushes
            .retain(|_, l| t.saturating_sub(*l) < LIST_PUSH_GAP_MS);
    }

    /// Whether the first `peer_update` of `key` waits for its claims.
    pub(super) fn org_hold_update(&mut self, key: &VerifyingKey, t: Millis) -> bool {
        if !self.orgs.trusts_any() {
            return false;
        }
        let p = self.orgs.peers.entry(*key.as_bytes()).or_default();
        if p.known {
            return false;
        }
        let first = *p.first_held_ms.get_or_insert(t);
        t.saturating_sub(first) < ORG_PROOF_WAIT_MS
    }

    /// The trust of the trusted organisations `key` is a verified member
    /// of (the highest), if any.
    pub(super) fn org_trust(&self, key: &VerifyingKey) -> Option<f64> {
        self.orgs
            .peers
            .get(key.as_bytes())?
            .member_of
            .iter()
            .filter_map(|(i, _)| self.orgs.known[*i].trust.map(|(t, _)| t))
            .reduce(f64::max)
    }

    /// Whether a blame from `key` goes to Slips by organisation policy: it
    /// is a verified member of a trusted organisation with
    /// `forward_blames`.
    pub(super) fn org_blame_allowed(&self, key: &VerifyingKey) -> bool {
        self.orgs.peers.get(key.as_bytes()).is_some_and(|p| {
            p.member_of
                .iter()
                .any(|(i, _)| self.orgs.known[*i].trust.is_some_and(|(_, fb)| fb))
        })
    }

    /// Whether a request from `key` goes to Slips (`accept_requests`).
    pub(super) fn org_request_allowed(&self, key: &VerifyingKey) -> bool {
        match self.orgs.accept_requests {
            RequestPolicy::Anyone => true,
            RequestPolicy::Members => self
                .orgs
                .peers
                .get(key.as_bytes())
                .is_some_and(|p| !p.member_of.is_empty()),
        }
    }

    /// Ids of the organisations `key` is a verified member of.
    pub(super) fn org_ids_of(&self, key: &VerifyingKey) -> Vec<String> {
        self.orgs
            .peers
            .get(key.as_bytes())
            .map_or_else(Vec::new, |p| {
                p.member_of
                    .iter()
                    .map(|(i, _)| self.orgs.known[*i].id.clone())
                    .collect()
            })
    }

    /// Builds the announce body with our `orgs`, leaving out trusted-only
    /// entries that do not fit in one datagram.
    pub(super) fn org_announce_body(
        &self,
        t: Millis,
        base: AnnounceBody,
    ) -> Option<AnnounceWithOrgs> {
        let mut body = AnnounceWithOrgs {
            base,
            orgs: self.org_announce_entries(),
        };
        if body.orgs.is_empty() {
            return None;
        }
        let memberships = body.orgs.iter().filter(|c| c.cred.is_some()).count();
        let stamp = self.next_stamp(t);
        while body.orgs.len() > memberships
            && crate::wire::sealed_len(
                &self.key,
                &self.settings.network,
                stamp,
                Kind::Announce,
                &body,
            )
            .is_none_or(|n| n > MAX_DATAGRAM)
        {
            body.orgs.pop();
        }
        Some(body)
    }
}

/// Whether `key` may act again ([`KEYREQ_GAP_MS`] since its last time in
/// `map`, which holds at most [`MAX_KEYREQS`] keys); records the time.
fn gap_passed(map: &mut HashMap<([u8; 32], u64), Millis>, key: ([u8; 32], u64), t: Millis) -> bool {
    if map
        .get(&key)
        .is_some_and(|l| t.saturating_sub(*l) < KEYREQ_GAP_MS)
    {
        return false;
    }
    if map.len() >= MAX_KEYREQS && !map.contains_key(&key) {
        map.retain(|_, l| t.saturating_sub(*l) < KEYREQ_GAP_MS);
        if map.len() >= MAX_KEYREQS {
            return false;
        }
    }
    map.insert(key, t);
    true
}

fn org_id_of(k: &[u8; 32]) -> String {
    VerifyingKey::from_bytes(k).map_or_else(|_| String::from("?"), |k| org_id(&k))
}
