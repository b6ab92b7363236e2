//! `pigeon org …`: the command line of the organisation tool, parsed with
//! the Go `flag` rules of [`crate::cli`]. Pure: the binary carries it out
//! (`src/org_ops.rs`).

use crate::cli::{CliError, Kind, parse_subcommand_flags, take_value, utf8};
use std::ffi::OsString;
use std::path::PathBuf;

/// One `pigeon org` command.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum OrgCommand {
    /// `-help` of `org` or of one of its commands.
    Help {
        /// The command whose help is asked (`None`: the overview).
        topic: Option<String>,
    },
    /// `org create -org-key FILE`: a new organisation key (0600); prints
    /// the org id.
    Create {
        /// Where to write the key (must not exist).
        org_key: PathBuf,
    },
    /// `org request [-key-file F]`: the member's signed request for a
    /// credential.
    Request {
        /// The member's pigeon key file.
        key_file: PathBuf,
    },
    /// `org sign -org-key F -request R -expires WHEN [-not-before WHEN]
    /// [-serial N]`: a credential.
    Sign {
        /// The organisation key.
        org_key: PathBuf,
        /// The member's request (base64).
        request: String,
        /// Days from now, or a UTC date.
        expires: String,
        /// Days from now, or a UTC date (default: now).
        not_before: Option<String>,
        /// Serial (default: random).
        serial: Option<u64>,
    },
    /// `org revoke -org-key F -list FILE (-credential C | -serial N | -peer
    /// ID) [-until WHEN] [-next-update WHEN]`: adds to (or creates) the
    /// revocation list, with the next sequence number.
    Revoke {
        /// The organisation key.
        org_key: PathBuf,
        /// The list file (read if it exists, then replaced).
        list: PathBuf,
        /// Revoke this credential (its serial, until its expiry).
        credential: Option<String>,
        /// Revoke this serial.
        serial: Option<u64>,
        /// Revoke every credential of this peer id.
        peer: Option<String>,
        /// How long the entry matters (default: the credential's expiry,
        /// or for ever).
        until: Option<String>,
        /// When the next list is due (default 30 days).
        next_update: String,
    },
    /// `org show` / `org verify`: decode and check a credential, request
    /// or list. `verify` fails (exit 1) unless it is valid now and matches
    /// `-org` / `-peer` when given.
    Check {
        /// `verify` rather than `show`.
        verify: bool,
        /// A credential (base64).
        credential: Option<String>,
        /// A membership request (base64).
        request: Option<String>,
        /// A revocation list file.
        list: Option<PathBuf>,
        /// The expected organisation id.
        org: Option<String>,
        /// The expected member peer id.
        peer: Option<String>,
    },
}

/// Parses what follows `org`.
pub fn parse(args: &[OsString]) -> Result<OrgCommand, CliError> {
    let Some(first) = args.first() else {
        return Ok(OrgCommand::Help { topic: None });
    };
    let sub = first.to_string_lossy().into_owned();
    let rest = &args[1..];
    if sub.starts_with('-') {
        // `org -help` (or anything else that is a flag): the overview.
        return match sub.trim_start_matches('-') {
            "h" | "help" => Ok(OrgCommand::Help { topic: None }),
            other => Err(CliError::UnknownFlag(other.to_owned())),
        };
    }
    let mut values: Vec<(String, OsString)> = Vec::new();
    let flags: &[(&str, Kind)] = match sub.as_str() {
        "create" => &[("org-key", Kind::Value)],
        "request" => &[("key-file", Kind::Value)],
        "sign" => &[
            ("org-key", Kind::Value),
            ("request", Kind::Value),
            ("expires", Kind::Value),
            ("not-before", Kind::Value),
            ("serial", Kind::Value),
        ],
        "revoke" => &[
            ("org-key", Kind::Value),
            ("list", Kind::Value),
            ("credential", Kind::Value),
            ("serial", Kind::Value),
            ("peer", Kind::Value),
            ("until", Kind::Value),
            ("next-update", Kind::Value),
        ],
        "show" | "verify" => &[
            ("credential", Kind::Value),
            ("request", Kind::Value),
            ("list", Kind::Value),
            ("org", Kind::Value),
            ("peer", Kind::Value),
        ],
        _ => return Err(CliError::UnknownSubcommand(format!("org {sub}"))),
    };
    let name = format!("org {sub}");
    let help = parse_subcommand_flags(&name, rest, |tok, args, i| {
        match flags.iter().find(|(f, _)| *f == tok.name) {
            Some((f, kind)) => {
                let v = take_value(tok, *kind, args, i)?;
                values.retain(|(n, _)| n != f);
                values.push(((*f).to_owned(), v));
                Ok(true)
            }
            None => Ok(false),
        }
    })?;
    if help {
        return Ok(OrgCommand::Help { topic: Some(sub) });
    }
    let get = |f: &str| values.iter().find(|(n, _)| n == f).map(|(_, v)| v.clone());
    let need = |f: &str| {
        get(f).ok_or_else(|| CliError::MissingFlag {
            subcommand: name.clone(),
            flag: f.to_owned(),
        })
    };
    let text = |f: &str| get(f).map(|v| utf8(f, v)).transpose();
    let number = |f: &str| -> Result<Option<u64>, CliError> {
        get(f)
            .map(|v| {
                v.to_str()
                    .and_then(|s| s.parse::<u64>().ok())
                    .filter(|n| *n <= crate::wire::MAX_SAFE_INT)
                    .ok_or_else(|| crate::cli::bad(f, &v, "not a number below 2^53"))
            })
            .transpose()
    };
    Ok(match sub.as_str() {
        "create" => OrgCommand::Create {
            org_key: need("org-key")?.into(),
        },
        "request" => OrgCommand::Request {
            key_file: get("key-file").map_or_else(|| "pigeon.keys".into(), PathBuf::from),
        },
        "sign" => OrgCommand::Sign {
            org_key: need("org-key")?.into(),
            request: utf8("request", need("request")?)?,
            expires: utf8("expires", need("expires")?)?,
            not_before: text("not-before")?,
            serial: number("serial")?,
        },
        "revoke" => {
            let (credential, serial, peer) =
                (text("credential")?, number("serial")?, text("peer")?);
            let given = [credential.is_some(), serial.is_some(), peer.is_some()];
            if given.iter().filter(|g| **g).count() != 1 {
                return Err(CliError::MissingFlag {
                    subcommand: name,
                    flag: "credential, -serial or -peer (exactly one)".to_owned(),
                });
            }
            OrgCommand::Revoke {
                org_key: need("org-key")?.into(),
                list: need("list")?.into(),
                credential,
                serial,
                peer,
                until: text("until")?,
                next_update: text("next-update")?.unwrap_or_else(|| "30".to_owned()),
            }
        }
        _ => {
            let (credential, request, list) = (
                text("credential")?,
                text("request")?,
                get("list").map(PathBuf::from),
            );
            let given = [credential.is_some(), request.is_some(), list.is_some()];
            if given.iter().filter(|g| **g).count() != 1 {
                return Err(CliError::MissingFlag {
                    subcommand: name,
                    flag: "credential, -request or -list (exactly one)".to_owned(),
                });
            }
            OrgCommand::Check {
                verify: sub == "verify",
                credential,
                request,
                list,
                org: text("org")?,
                peer: text("peer")?,
            }
        }
    })
}

/// The help of `org` (`None`) or of one of its commands.
pub fn usage(topic: Option<&str>) -> String {
    let text = match topic {
        Some("create") => {
            "Usage: p2p4slips org create -org-key FILE\n\
             Creates an organisation key (ed25519, libp2p protobuf encoding, mode 0600;\n\
             an existing file is never overwritten) and prints the organisation id.\n\
             A key made by Iris' orgsig works as well.\n"
        }
        Some("request") => {
            "Usage: p2p4slips org request [-key-file FILE]\n\
             Prints this pigeon's membership request (base64, signed by its key; default\n\
             key file pigeon.keys): give it to the organisation's administrator.\n"
        }
        Some("sign") => {
            "Usage: p2p4slips org sign -org-key FILE -request REQUEST -expires WHEN\n\
             \x20                         [-not-before WHEN] [-serial N]\n\
             Checks a member's request and prints its credential (one line for\n\
             [[org.member]] credential = \"...\" in the member's pigeon.toml).\n\
             WHEN is a number of days from now or a UTC date YYYY-MM-DD[THH:MM:SSZ].\n\
             -serial defaults to a random number; revocation lists name it.\n"
        }
        Some("revoke") => {
            "Usage: p2p4slips org revoke -org-key FILE -list FILE\n\
             \x20                           (-credential CRED | -serial N | -peer PEER_ID)\n\
             \x20                           [-until WHEN] [-next-update WHEN]\n\
             Adds an entry to the revocation list FILE (created if missing), with the\n\
             next sequence number, and rewrites it. Drop the file into any pigeon's\n\
             org.revocation_dir: pigeons pass it on to each other.\n\
             -until: when the entry may be forgotten (default: the credential's\n\
             expiry, or never for -serial/-peer). -next-update: default 30 days.\n"
        }
        Some("show") | Some("verify") => {
            "Usage: p2p4slips org show   (-credential CRED | -request REQ | -list FILE)\n\
             \x20      p2p4slips org verify (-credential CRED | -request REQ | -list FILE)\n\
             \x20                           [-org ORG_ID] [-peer PEER_ID]\n\
             Prints what it holds and whether its signature verifies. verify exits 1\n\
             unless it is valid now (and of -org, for -peer, when given).\n"
        }
        _ => {
            "Usage: p2p4slips org COMMAND [flags]   (p2p4slips org COMMAND -help)\n\
             \x20 create   make an organisation key, print its id        (administrator)\n\
             \x20 request  print this pigeon's membership request         (member)\n\
             \x20 sign     turn a request into a credential               (administrator)\n\
             \x20 revoke   add to the signed revocation list              (administrator)\n\
             \x20 show     print a credential, request or list\n\
             \x20 verify   check a credential, request or list (exit 1 if not valid)\n"
        }
    };
    text.to_owned()
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<OrgCommand, CliError> {
        parse(&args.iter().map(OsString::from).collect::<Vec<_>>())
    }

    #[test]
    fn commands_parse_with_go_flag_syntax() {
        assert_eq!(
            p(&["create", "--org-key=o.key"]),
            Ok(OrgCommand::Create {
                org_key: "o.key".into()
            })
        );
        assert_eq!(
            p(&["request"]),
            Ok(OrgCommand::Request {
                key_file: "pigeon.keys".into()
            })
        );
        assert_eq!(
            p(&[
                "sign",
                "-org-key",
                "o",
                "-request",
                "R",
                "-expires",
                "30",
                "-serial=5"
            ]),
            Ok(OrgCommand::Sign {
                org_key: "o".into(),
                request: "R".into(),
                expires: "30".into(),
                not_before: None,
                serial: Some(5),
            })
        );
        assert!(matches!(
            p(&["revoke", "-org-key", "o", "-list", "l", "-serial", "9"]),
            Ok(OrgCommand::Revoke {
                serial: Some(9),
                ..
            })
        ));
        assert!(matches!(
            p(&["verify", "-list", "l", "-org", "X"]),
            Ok(OrgCommand::Check { verify: true, .. })
        ));
    }

    #[test]
    fn help_and_errors() {
        assert_eq!(p(&[]), Ok(OrgCommand::Help { topic: None }));
        assert_eq!(p(&["-help"]), Ok(OrgCommand::Help { topic: None }));
        assert_eq!(
            p(&["sign", "-h"]),
            Ok(OrgCommand::Help {
                topic: Some("sign".into())
            })
        );
        for topic in [
            None,
            Some("create"),
            Some("request"),
            Some("sign"),
            Some("revoke"),
            Some("show"),
        ] {
            assert!(usage(topic).starts_with("Usage: p2p4slips org"));
        }
        assert_eq!(
            p(&["create"]),
            Err(CliError::MissingFlag {
                subcommand: "org create".into(),
                flag: "org-key".into()
            })
        );
        assert!(matches!(
            p(&["revoke", "-org-key", "o", "-list", "l"]),
            Err(CliError::MissingFlag { .. })
        ));
        assert!(matches!(
            p(&["show", "-credential", "a", "-list", "b"]),
            Err(CliError::MissingFlag { .. })
        ));
        assert!(matches!(
            p(&[
                "sign", "-org-key", "o", "-request", "R", "-expires", "1", "-serial", "x"
            ]),
            Err(CliError::BadValue { .. })
        ));
        assert_eq!(
            p(&["create", "-port", "1"]),
            Err(CliError::UnknownFlag("port".into()))
        );
        assert_eq!(
            p(&["frob"]),
            Err(CliError::UnknownSubcommand("org frob".into()))
        );
        assert!(matches!(
            crate::cli::parse(["org", "create", "-org-key", "k"].map(OsString::from)),
            Ok(crate::cli::Command::Org(OrgCommand::Create { .. }))
        ));
    }
}
