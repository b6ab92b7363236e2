//! `pigeon org …`: carries out [`OrgCommand`]s (files, clock, randomness);
//! the formats are in `pigeon::org`.

use anyhow::{Context as _, bail};
use pigeon::identity;
use pigeon::org::cli::{OrgCommand, usage};
use pigeon::org::{
    Credential, MembershipRequest, RevocationEntry, RevocationList, key_of_id, org_id, time,
};
use std::path::Path;

fn now_s() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// Runs one command. `Ok(false)`: `verify` found it not valid (exit 1
/// without an error line of our own; the reason was printed).
pub(crate) fn run(cmd: OrgCommand) -> anyhow::Result<bool> {
    let now = now_s();
    match cmd {
        OrgCommand::Help { topic } => print!("{}", usage(topic.as_deref())),
        OrgCommand::Create { org_key } => {
            let id = identity::create_key_file(&org_key).map_err(one_line)?;
            println!("{}", id.peer_id());
            eprintln!(
                "organisation key written to {} (mode 0600): keep it offline; the line above is the organisation id",
                org_key.display()
            );
        }
        OrgCommand::Request { key_file } => {
            let id = identity::read_key_file(&key_file).map_err(one_line)?;
            let (req, text) = MembershipRequest::new(id.signing_key());
            println!("{text}");
            eprintln!(
                "membership request of peer {}: give the line above to the organisation's administrator",
                req.member_id()
            );
        }
        OrgCommand::Sign {
            org_key,
            request,
            expires,
            not_before,
            serial,
        } => {
            let org = read_org_key(&org_key)?;
            let req = MembershipRequest::decode(&request).context("-request")?;
            let not_before = match not_before {
                Some(w) => {
                    time::parse_when(&w, now).map_err(|e| anyhow::anyhow!("-not-before: {e}"))?
                }
                None => now,
            };
            let not_after =
                time::parse_when(&expires, now).map_err(|e| anyhow::anyhow!("-expires: {e}"))?;
            if not_after <= not_before {
                bail!(
                    "-expires: {} is not after the start {}",
                    time::format(not_after),
                    time::format(not_before)
                );
            }
            let serial =
                serial.unwrap_or_else(|| rand::random::<u64>() & pigeon::wire::MAX_SAFE_INT);
            let c = Credential::issue(org.signing_key(), &req, serial, not_before, not_after);
            println!("{}", c.encode());
            eprintln!(
                "credential of peer {} in organisation {}, serial {}, valid {} to {}",
                c.member_id(),
                c.org_id(),
                c.serial,
                time::format(c.not_before),
                time::format(c.not_after)
            );
        }
        OrgCommand::Revoke {
            org_key,
            list,
            credential,
            serial,
            peer,
            until,
            next_update,
        } => {
            let org = read_org_key(&org_key)?;
            let org_pk = org.verifying_key();
            let old = match std::fs::read_to_string(&list) {
                Ok(text) => {
                    let l = RevocationList::decode(&text)
                        .with_context(|| format!("{}: not a revocation list", list.display()))?;
                    if l.org != org_pk {
                        bail!(
                            "{}: a list of organisation {}, not of {}",
                            list.display(),
                            l.org_id(),
                            org_id(&org_pk)
                        );
                    }
                    Some(l)
                }
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => None,
                Err(e) => return Err(e).with_context(|| format!("cannot read {}", list.display())),
            };
            let until_given = until
                .map(|w| time::parse_when(&w, now).map_err(|e| anyhow::anyhow!("-until: {e}")))
                .transpose()?;
            let entry = if let Some(c) = credential {
                let c = Credential::decode(&c).context("-credential")?;
                if c.org != org_pk {
                    bail!(
                        "-credential: issued by organisation {}, not this one",
                        c.org_id()
                    );
                }
                RevocationEntry::Serial {
                    serial: c.serial,
                    until: until_given.unwrap_or(c.not_after),
                }
            } else if let Some(s) = serial {
                RevocationEntry::Serial {
                    serial: s,
                    until: until_given.unwrap_or(u64::MAX),
                }
            } else {
                let p = peer.unwrap_or_default();
                let key = key_of_id(&p)
                    .ok_or_else(|| anyhow::anyhow!("-peer: not an ed25519 peer id: {p}"))?;
                RevocationEntry::Member {
                    key,
                    until: until_given.unwrap_or(u64::MAX),
                }
            };
            let next = time::parse_when(&next_update, now)
                .map_err(|e| anyhow::anyhow!("-next-update: {e}"))?;
            let mut entries = old.as_ref().map(|l| l.entries.clone()).unwrap_or_default();
            if !entries.contains(&entry) {
                entries.push(entry);
            }
            let seq = old.as_ref().map_or(1, |l| l.seq + 1);
            let l = RevocationList::issue(org.signing_key(), seq, now, next, &entries)?;
            write_atomic(&list, format!("{}\n", l.encode()).as_bytes())?;
            eprintln!(
                "{}: revocation list {} of organisation {}, {} entr{}, next update due {}",
                list.display(),
                l.seq,
                l.org_id(),
                l.entries.len(),
                if l.entries.len() == 1 { "y" } else { "ies" },
                time::format(l.next_update)
            );
        }
        OrgCommand::Check {
            verify,
            credential,
            request,
            list,
            org,
            peer,
        } => return check(now, verify, credential, request, list, org, peer),
    }
    Ok(true)
}

fn read_org_key(path: &Path) -> anyhow::Result<identity::Identity> {
    identity::read_key_file(path).map_err(one_line)
}

/// The error's own line: its `Display` already names the cause, which
/// `{:#}` would print a second time.
fn one_line(e: identity::IdentityError) -> anyhow::Error {
    anyhow::anyhow!("{e}")
}

/// Prints a credential, request or list and whether it is valid now.
fn check(
    now: u64,
    verify: bool,
    credential: Option<String>,
    request: Option<String>,
    list: Option<std::path::PathBuf>,
    org: Option<String>,
    peer: Option<String>,
) -> anyhow::Result<bool> {
    let expect_org = org
        .map(|o| key_of_id(&o).ok_or_else(|| anyhow::anyhow!("-org: not an organisation id: {o}")))
        .transpose()?;
    let expect_peer = peer
        .map(|p| key_of_id(&p).ok_or_else(|| anyhow::anyhow!("-peer: not an ed25519 peer id: {p}")))
        .transpose()?;
    let mut problems = Vec::new();
    if let Some(text) = credential {
        let c = Credential::decode(&text).context("credential")?;
        println!("credential (signature verifies)");
        println!("  organisation  {}", c.org_id());
        println!("  member        {}", c.member_id());
        println!("  x25519        {}", hex(&c.member_x25519));
        println!("  serial        {}", c.serial);
        println!("  valid from    {}", time::format(c.not_before));
        println!("  valid until   {}", time::format(c.not_after));
        if let Err(e) = c.check_time(now) {
            problems.push(e.to_string());
        }
        if expect_org.is_some_and(|o| o != c.org) {
            problems.push("of another organisation than -org".to_owned());
        }
        if expect_peer.is_some_and(|p| p != c.member) {
            problems.push("issued to another peer than -peer".to_owned());
        }
    } else if let Some(text) = request {
        let r = MembershipRequest::decode(&text).context("request")?;
        println!("membership request (signature verifies)");
        println!("  member        {}", r.member_id());
        println!("  x25519        {}", hex(&r.member_x25519));
        if expect_peer.is_some_and(|p| p != r.member) {
            problems.push("of another peer than -peer".to_owned());
        }
    } else if let Some(path) = list {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let l = RevocationList::decode(&text)
            .with_context(|| format!("{}: not a revocation list", path.display()))?;
        println!("revocation list (signature verifies)");
        println!("  organisation  {}", l.org_id());
        println!("  sequence      {}", l.seq);
        println!("  issued        {}", time::format(l.issued));
        println!("  next update   {}", time::format(l.next_update));
        for e in &l.entries {
            match e {
                RevocationEntry::Serial { serial, until } => {
                    println!(
                        "  revoked       serial {serial} (until {})",
                        forever(*until)
                    )
                }
                RevocationEntry::Member { key, until } => println!(
                    "  revoked       peer {} (until {})",
                    org_id(key),
                    forever(*until)
                ),
            }
        }
        if l.is_stale(now) {
            problems.push("past its next update: a newer list may exist".to_owned());
        }
        if expect_org.is_some_and(|o| o != l.org) {
            problems.push("of another organisation than -org".to_owned());
        }
    }
    for p in &problems {
        println!("  NOT VALID:    {p}");
    }
    if problems.is_empty() {
        println!("  valid now");
    }
    Ok(!verify || problems.is_empty())
}

fn forever(t: u64) -> String {
    if t == u64::MAX {
        "for ever".to_owned()
    } else {
        time::format(t)
    }
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Writes `bytes` to `path` through a temporary file in the same directory
/// (mode 0600), renamed into place.
fn write_atomic(path: &Path, bytes: &[u8]) -> anyhow::Result<()> {
    use std::io::Write as _;
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let mut tmp = tempfile::Builder::new()
        .prefix(".pigeon-list-")
        .tempfile_in(dir)
        .with_context(|| format!("cannot write in {}", dir.display()))?;
    tmp.write_all(bytes)?;
    tmp.as_file().sync_all()?;
    tmp.persist(path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}
