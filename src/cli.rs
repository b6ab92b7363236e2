//! The Go Pigeon's command line, parsed with Go `flag` rules. Pure: no IO.
//!
//! Slips starts the helper as
//! `p2p4slips -port 32768 -host 192.168.1.23 -key-file pigeon.keys
//! --redis-db localhost:6379 -redis-channel-pygo p2p_pygo
//! -redis-channel-gopy p2p_gopy`, so pigeon must accept exactly what Go's
//! `flag` package accepts:
//!
//! * a flag is `-name` or `--name`; its value is `-name=value` or the next
//!   argument (`-name value`), whatever that argument looks like;
//! * a boolean flag never consumes the next argument: bare means true,
//!   `-name=value` takes Go's `strconv.ParseBool` spellings;
//! * parsing stops at `--` (consumed) or at the first non-flag argument;
//! * a repeated flag: the last one wins.
//!
//! Every `Run` flag is an `Option` so that `config::Config` can
//! apply "flags > file > defaults". Two subcommands are pigeon extensions:
//! `id` and `peers` (see [`Command`]).
//!
//! Exit codes are the caller's business; Go's are: unknown flag or bad value
//! → usage on stderr and exit 2; `-help`/`-h` → usage and exit 0.

use std::ffi::{OsStr, OsString};
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};

/// What the command line asks pigeon to do.
// `Run` is much larger than the others; built once per process, so boxing
// would only make matching clumsier.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Command {
    /// Run the pigeon (no subcommand): what Slips does.
    Run(CliArgs),
    /// `-h`, `-help`, `--help`: print [`usage`] and exit 0, as Go does.
    Help,
    /// `pigeon id [-key-file F]`: print the peer id of a key file, so an
    /// operator can tell which peer a host is without starting it.
    Id {
        /// Key file to read (default `pigeon.keys`).
        key_file: PathBuf,
    },
    /// `pigeon peers [-peerstore-file F] [-json]`: print the saved peer
    /// list, for inspection without Redis or Slips.
    Peers {
        /// Peer list file (default `peers.json`).
        peerstore_file: PathBuf,
        /// Print JSON instead of a table.
        json: bool,
    },
    /// `pigeon status [-socket PATH] [-json]`: ask the running pigeon
    /// (through its control socket) what it sees now.
    Status {
        /// Control socket, or a directory holding `pigeon.sock` (default
        /// `pigeon.sock`: run it in Slips' `permanent/p2p_trust_runtime`).
        socket: PathBuf,
        /// Print JSON instead of the health block and table.
        json: bool,
    },
    /// `pigeon org …`: the organisation administrator's and member's tool
    /// (parsed in [`crate::org::cli`]).
    Org(crate::org::cli::OrgCommand),
}

/// Flags of a normal run. `None` means "flag absent": the file value or the
/// default applies (see `config::Config::apply_cli`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CliArgs {
    /// `-port`: unicast UDP port (Slips passes a free TCP port number).
    pub port: Option<u16>,
    /// `-host`: interface address. `None` = flag absent; `Some(None)` =
    /// `-host ""`, Go's default, meaning "let the kernel choose" (and it
    /// overrides a `host` set in the file); `Some(Some(ip))` = that address.
    pub host: Option<Option<Ipv4Addr>>,
    /// `-key-file`: key file path; an empty path means a one-time key.
    pub key_file: Option<PathBuf>,
    /// `-key-reset`: make a new key, keeping the old file as a backup.
    pub key_reset: Option<bool>,
    /// `-peerstore-file`: saved peer list path.
    pub peerstore_file: Option<PathBuf>,
    /// `-rename-with-port`: append the port to file and channel names (Go
    /// parity; Slips never passes it).
    pub rename_with_port: Option<bool>,
    /// `-redis-db` (Slips writes `--redis-db`): Redis address.
    pub redis_db: Option<String>,
    /// `-redis-delete`: delete the pigeon's Redis keys at start.
    pub redis_delete: Option<bool>,
    /// `-redis-channel-pygo`: Slips → pigeon channel.
    pub redis_channel_pygo: Option<String>,
    /// `-redis-channel-gopy`: pigeon → Slips channel.
    pub redis_channel_gopy: Option<String>,
    /// `-rendezvous`: network name.
    pub rendezvous: Option<String>,
    /// `-pid`: Go's libp2p stream protocol id. pigeon has no libp2p
    /// streams, so it is accepted (a drop-in must not reject it) and
    /// stored only so the caller can mention it in a log line.
    pub pid: Option<String>,
    /// `-test`: Go ran its test script instead of the pigeon. Accepted and
    /// ignored; stored so the caller can warn.
    pub test: Option<bool>,
    /// `-config`: pigeon extension, the `pigeon.toml` to read (a missing
    /// file is then an error).
    pub config: Option<PathBuf>,
    /// Arguments after the flags. Go keeps them in `flag.Args()` and
    /// ignores them; so does pigeon, but the caller should log a warning.
    pub extra: Vec<OsString>,
}

/// A command line pigeon cannot accept. Display is one line, in Go's
/// wording where Go has one, so scripts and humans see familiar messages.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CliError {
    /// A flag that pigeon (and Go) does not define.
    #[error("flag provided but not defined: -{0}")]
    UnknownFlag(String),
    /// A non-boolean flag was the last argument.
    #[error("flag needs an argument: -{0}")]
    MissingValue(String),
    /// A value that does not parse for its flag.
    #[error("invalid value \"{value}\" for flag -{flag}: {reason}")]
    BadValue {
        /// Flag name, without dashes.
        flag: String,
        /// The value as given (lossily converted to UTF-8).
        value: String,
        /// Why it was rejected.
        reason: String,
    },
    /// `---x`, `-=x` and the like (Go: "bad flag syntax").
    #[error("bad flag syntax: {0}")]
    BadSyntax(String),
    /// First argument is not a flag and names no known subcommand.
    #[error(
        "unknown subcommand \"{0}\" (expected \"id\", \"peers\", \"status\" or \"org\", or flags)"
    )]
    UnknownSubcommand(String),
    /// A subcommand ran without a flag it needs.
    #[error("{subcommand}: missing flag -{flag}")]
    MissingFlag {
        /// The subcommand being parsed.
        subcommand: String,
        /// The flag it needs.
        flag: String,
    },
    /// A positional argument after a subcommand's flags.
    #[error("unexpected argument \"{arg}\" for subcommand {subcommand}")]
    UnexpectedArgument {
        /// The subcommand being parsed.
        subcommand: String,
        /// The offending argument (lossily converted to UTF-8).
        arg: String,
    },
}

/// Default key file of the `id` subcommand.
const DEFAULT_ID_KEY_FILE: &str = "pigeon.keys";
/// Default peer list of the `peers` subcommand.
const DEFAULT_PEERS_FILE: &str = "peers.json";
/// Default control socket of the `status` subcommand.
const DEFAULT_SOCKET: &str = "pigeon.sock";

/// How a flag takes its value.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// Boolean: never consumes the next argument.
    Bool,
    /// Takes a value: `=value` or the next argument.
    Value,
}

/// One token split into flag name and optional inline value.
pub(crate) struct FlagToken {
    pub(crate) name: String,
    inline: Option<OsString>,
}

/// Result of looking at the next argument.
enum Next {
    /// Not a flag: stop parsing, leave it in place.
    Stop,
    /// `--`: stop parsing, consumed.
    End,
    /// A flag.
    Flag(FlagToken),
}

/// Parses the command line (without `argv[0]`).
///
/// The first argument selects a subcommand when it does not start with
/// `-`; otherwise everything is `Run` flags. See the module doc for the
/// syntax. Pure: no IO, no environment.
pub fn parse<I: IntoIterator<Item = OsString>>(args: I) -> Result<Command, CliError> {
    let args: Vec<OsString> = args.into_iter().collect();
    match args.first() {
        Some(first) if !first.as_encoded_bytes().starts_with(b"-") => {
            let sub = first.to_string_lossy().into_owned();
            match sub.as_str() {
                "id" => parse_id(&args[1..]),
                "peers" => parse_peers(&args[1..]),
                "status" => parse_status(&args[1..]),
                "org" => crate::org::cli::parse(&args[1..]).map(Command::Org),
                _ => Err(CliError::UnknownSubcommand(sub)),
            }
        }
        _ => parse_run(&args),
    }
}

/// Parses the flags of a normal run.
fn parse_run(args: &[OsString]) -> Result<Command, CliError> {
    let mut cli = CliArgs::default();
    let mut i = 0;
    while i < args.len() {
        let tok = match classify(&args[i])? {
            Next::Stop => break,
            Next::End => {
                i += 1;
                break;
            }
            Next::Flag(tok) => tok,
        };
        i += 1;
        let kind = match tok.name.as_str() {
            "h" => return Ok(Command::Help),
            "help" | "key-reset" | "rename-with-port" | "redis-delete" | "test" => Kind::Bool,
            "port" | "host" | "key-file" | "peerstore-file" | "redis-db" | "redis-channel-pygo"
            | "redis-channel-gopy" | "rendezvous" | "pid" | "config" => Kind::Value,
            _ => return Err(CliError::UnknownFlag(tok.name)),
        };
        let value = take_value(&tok, kind, args, &mut i)?;
        let name = tok.name.as_str();
        match name {
            "help" => {
                if parse_bool(name, &value)? {
                    return Ok(Command::Help);
                }
            }
            "key-reset" => cli.key_reset = Some(parse_bool(name, &value)?),
            "rename-with-port" => cli.rename_with_port = Some(parse_bool(name, &value)?),
            "redis-delete" => cli.redis_delete = Some(parse_bool(name, &value)?),
            "test" => cli.test = Some(parse_bool(name, &value)?),
            "port" => cli.port = Some(parse_port(name, &value)?),
            "host" => cli.host = Some(parse_host(name, &value)?),
            "key-file" => cli.key_file = Some(PathBuf::from(value)),
            "peerstore-file" => cli.peerstore_file = Some(PathBuf::from(value)),
            "config" => cli.config = Some(PathBuf::from(value)),
            "redis-db" => cli.redis_db = Some(utf8(name, value)?),
            "redis-channel-pygo" => cli.redis_channel_pygo = Some(utf8(name, value)?),
            "redis-channel-gopy" => cli.redis_channel_gopy = Some(utf8(name, value)?),
            "rendezvous" => cli.rendezvous = Some(utf8(name, value)?),
            "pid" => cli.pid = Some(utf8(name, value)?),
            _ => return Err(CliError::UnknownFlag(tok.name)),
        }
    }
    cli.extra = args[i..].to_vec();
    Ok(Command::Run(cli))
}

/// Parses `id [-key-file F]`.
fn parse_id(args: &[OsString]) -> Result<Command, CliError> {
    let mut key_file = PathBuf::from(DEFAULT_ID_KEY_FILE);
    let help = parse_subcommand_flags("id", args, |tok, args, i| match tok.name.as_str() {
        "key-file" => {
            key_file = PathBuf::from(take_value(tok, Kind::Value, args, i)?);
            Ok(true)
        }
        _ => Ok(false),
    })?;
    Ok(if help {
        Command::Help
    } else {
        Command::Id { key_file }
    })
}

/// Parses `peers [-peerstore-file F] [-json]`.
fn parse_peers(args: &[OsString]) -> Result<Command, CliError> {
    Ok(
        match parse_path_and_json("peers", "peerstore-file", DEFAULT_PEERS_FILE, args)? {
            None => Command::Help,
            Some((peerstore_file, json)) => Command::Peers {
                peerstore_file,
                json,
            },
        },
    )
}

/// Parses `status [-socket PATH] [-json]`.
fn parse_status(args: &[OsString]) -> Result<Command, CliError> {
    Ok(
        match parse_path_and_json("status", "socket", DEFAULT_SOCKET, args)? {
            None => Command::Help,
            Some((socket, json)) => Command::Status { socket, json },
        },
    )
}

/// The flags of a subcommand that reads one path (`-PATH_FLAG`, else
/// `default`) and prints text or `-json`: `None` when help was asked for.
fn parse_path_and_json(
    sub: &str,
    path_flag: &str,
    default: &str,
    args: &[OsString],
) -> Result<Option<(PathBuf, bool)>, CliError> {
    let mut path = PathBuf::from(default);
    let mut json = false;
    let help = parse_subcommand_flags(sub, args, |tok, args, i| {
        if tok.name == "json" {
            json = parse_bool("json", &take_value(tok, Kind::Bool, args, i)?)?;
            Ok(true)
        } else if tok.name == path_flag {
            path = PathBuf::from(take_value(tok, Kind::Value, args, i)?);
            Ok(true)
        } else {
            Ok(false)
        }
    })?;
    Ok((!help).then_some((path, json)))
}

/// The flag loop shared by the subcommands: `-h`/`-help` (returns true),
/// `--`, no positional arguments; every other flag goes to `flag`, which
/// returns false for a flag it does not know.
pub(crate) fn parse_subcommand_flags(
    subcommand: &str,
    args: &[OsString],
    mut flag: impl FnMut(&FlagToken, &[OsString], &mut usize) -> Result<bool, CliError>,
) -> Result<bool, CliError> {
    let mut i = 0;
    while i < args.len() {
        let tok = match classify(&args[i])? {
            Next::Stop => return Err(unexpected(subcommand, &args[i])),
            Next::End => {
                i += 1;
                break;
            }
            Next::Flag(tok) => tok,
        };
        i += 1;
        match tok.name.as_str() {
            "h" => return Ok(true),
            "help" => {
                let v = take_value(&tok, Kind::Bool, args, &mut i)?;
                if parse_bool("help", &v)? {
                    return Ok(true);
                }
            }
            _ => {
                if !flag(&tok, args, &mut i)? {
                    return Err(CliError::UnknownFlag(tok.name));
                }
            }
        }
    }
    match args.get(i) {
        Some(arg) => Err(unexpected(subcommand, arg)),
        None => Ok(false),
    }
}

/// Error for a positional argument after a subcommand.
fn unexpected(subcommand: &str, arg: &OsStr) -> CliError {
    CliError::UnexpectedArgument {
        subcommand: subcommand.to_owned(),
        arg: arg.to_string_lossy().into_owned(),
    }
}

/// Go's `FlagSet.parseOne` classification of one argument.
fn classify(arg: &OsStr) -> Result<Next, CliError> {
    let bytes = arg.as_encoded_bytes();
    if bytes.len() < 2 || bytes[0] != b'-' {
        return Ok(Next::Stop);
    }
    let dashes = if bytes[1] == b'-' {
        if bytes.len() == 2 {
            return Ok(Next::End);
        }
        2
    } else {
        1
    };
    let rest = &bytes[dashes..];
    if rest.is_empty() || rest[0] == b'-' || rest[0] == b'=' {
        return Err(CliError::BadSyntax(arg.to_string_lossy().into_owned()));
    }
    let (name, inline) = match rest.iter().position(|&b| b == b'=') {
        Some(eq) => (&rest[..eq], Some(os_from_bytes(&rest[eq + 1..], arg)?)),
        None => (rest, None),
    };
    // A non-UTF-8 name cannot be one of ours.
    let name = match std::str::from_utf8(name) {
        Ok(n) => n.to_owned(),
        Err(_) => {
            return Err(CliError::UnknownFlag(
                String::from_utf8_lossy(name).into_owned(),
            ));
        }
    };
    Ok(Next::Flag(FlagToken { name, inline }))
}

/// Rebuilds an `OsString` from a slice of another one's encoded bytes.
/// The slice starts right after an ASCII `=`, so on Unix any bytes are
/// valid; elsewhere non-UTF-8 inline values are rejected.
fn os_from_bytes(bytes: &[u8], whole: &OsStr) -> Result<OsString, CliError> {
    #[cfg(unix)]
    {
        let _ = whole;
        use std::os::unix::ffi::OsStrExt;
        Ok(OsStr::from_bytes(bytes).to_os_string())
    }
    #[cfg(not(unix))]
    {
        std::str::from_utf8(bytes)
            .map(OsString::from)
            .map_err(|_| CliError::BadSyntax(whole.to_string_lossy().into_owned()))
    }
}

/// The value of a flag: inline, "true" for a bare boolean, or the next
/// argument (whatever it looks like, as in Go).
pub(crate) fn take_value(
    tok: &FlagToken,
    kind: Kind,
    args: &[OsString],
    i: &mut usize,
) -> Result<OsString, CliError> {
    if let Some(v) = &tok.inline {
        return Ok(v.clone());
    }
    match kind {
        Kind::Bool => Ok(OsString::from("true")),
        Kind::Value => match args.get(*i) {
            Some(v) => {
                *i += 1;
                Ok(v.clone())
            }
            None => Err(CliError::MissingValue(tok.name.clone())),
        },
    }
}

/// Builds a [`CliError::BadValue`].
pub(crate) fn bad(flag: &str, value: &OsStr, reason: &str) -> CliError {
    CliError::BadValue {
        flag: flag.to_owned(),
        value: value.to_string_lossy().into_owned(),
        reason: reason.to_owned(),
    }
}

/// A value that must be UTF-8 text (names, addresses).
pub(crate) fn utf8(flag: &str, value: OsString) -> Result<String, CliError> {
    value
        .into_string()
        .map_err(|v| bad(flag, &v, "not valid UTF-8"))
}

/// Go's `strconv.ParseBool` set.
pub(crate) fn parse_bool(flag: &str, value: &OsStr) -> Result<bool, CliError> {
    match value.to_str() {
        Some("1" | "t" | "T" | "TRUE" | "true" | "True") => Ok(true),
        Some("0" | "f" | "F" | "FALSE" | "false" | "False") => Ok(false),
        _ => Err(bad(flag, value, "not a boolean (use true or false)")),
    }
}

/// A decimal port, 0..=65535. (Go's `flag.Int` would also take `0x..` and
/// octal `0..`; Slips never passes those.)
fn parse_port(flag: &str, value: &OsStr) -> Result<u16, CliError> {
    value
        .to_str()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| bad(flag, value, "not a port number"))
}

/// An IPv4 address, or empty for "not set".
fn parse_host(flag: &str, value: &OsStr) -> Result<Option<Ipv4Addr>, CliError> {
    match value.to_str() {
        Some("") => Ok(None),
        Some(s) => s
            .parse::<Ipv4Addr>()
            .map(Some)
            .map_err(|_| bad(flag, value, "not an IPv4 address")),
        None => Err(bad(flag, value, "not an IPv4 address")),
    }
}

/// The defaults [`usage`] shows. The caller takes them from the
/// configuration's defaults (`Config::usage_defaults`), so the text cannot
/// drift, and this module needs nothing of `config` (which builds on it).
#[derive(Debug, Clone, Copy)]
pub struct UsageDefaults<'a> {
    /// `-port`.
    pub port: u16,
    /// `-host` (`None`: the kernel chooses).
    pub host: Option<Ipv4Addr>,
    /// `-key-file` (empty: a one-time key).
    pub key_file: &'a Path,
    /// `-peerstore-file`.
    pub peerstore_file: &'a Path,
    /// `-redis-db`.
    pub redis_address: &'a str,
    /// `-redis-channel-pygo`.
    pub channel_pygo: &'a str,
    /// `-redis-channel-gopy`.
    pub channel_gopy: &'a str,
    /// `-rendezvous`.
    pub network: &'a str,
}

/// The help text: every flag with a one-line description and its default.
pub fn usage(d: &UsageDefaults<'_>) -> String {
    let host = d.host.map_or_else(|| "\"\"".to_owned(), |h| h.to_string());
    let key_file = d.key_file.display().to_string();
    let key_file = if key_file.is_empty() {
        "\"\"".to_owned()
    } else {
        key_file
    };
    let rows: Vec<(&str, String)> = vec![
        (
            "-config FILE",
            "pigeon.toml to read (default: ./pigeon.toml, then beside the binary)".to_owned(),
        ),
        (
            "-port N",
            format!("unicast UDP port, 0 = any (default {})", d.port),
        ),
        (
            "-host IPV4",
            format!("address of the interface to use; \"\" = kernel chooses (default {host})"),
        ),
        (
            "-key-file FILE",
            format!("ed25519 key file; \"\" = one-time key (default {key_file})"),
        ),
        (
            "-key-reset",
            "make a new key; the old file is kept as a backup".to_owned(),
        ),
        (
            "-peerstore-file FILE",
            format!("saved peer list (default {})", d.peerstore_file.display()),
        ),
        (
            "-rename-with-port",
            "append the port to key, peer list and channel names".to_owned(),
        ),
        (
            "-redis-db ADDR",
            format!(
                "Redis: host:port, redis://... or unix://... (default {})",
                d.redis_address
            ),
        ),
        (
            "-redis-delete",
            "delete the pigeon's keys in Redis at start".to_owned(),
        ),
        (
            "-redis-channel-pygo NAME",
            format!("Slips -> pigeon channel (default {})", d.channel_pygo),
        ),
        (
            "-redis-channel-gopy NAME",
            format!("pigeon -> Slips channel (default {})", d.channel_gopy),
        ),
        (
            "-rendezvous NAME",
            format!("network name shared by the peers (default {})", d.network),
        ),
        (
            "-pid ID",
            "accepted for Go compatibility, unused".to_owned(),
        ),
        ("-test", "accepted for Go compatibility, ignored".to_owned()),
        ("-help, -h", "print this help and exit".to_owned()),
    ];
    let mut out = String::from(
        "Usage: p2p4slips [flags]\n\
         \x20      p2p4slips id [-key-file FILE]      print the peer id of a key file (default pigeon.keys)\n\
         \x20      p2p4slips peers [-peerstore-file FILE] [-json]\n\
         \x20                                         print the saved peers (default peers.json)\n\
         \x20      p2p4slips status [-socket PATH] [-json]\n\
         \x20                                         ask the running pigeon what it sees (default\n\
         \x20                                         pigeon.sock; PATH may be its directory)\n\
         \x20      p2p4slips org COMMAND [flags]     organisations: create, request, sign, revoke,\n\
         \x20                                         show, verify (p2p4slips org -help)\n\
         \n\
         Flags (Go syntax: -name value, -name=value, --name value, --name=value;\n\
         booleans: bare = true, or -name=true|false). Flags override pigeon.toml.\n",
    );
    let width = rows.iter().map(|(f, _)| f.len()).max().unwrap_or(0);
    for (flag, text) in rows {
        out.push_str(&format!("  {flag:<width$}  {text}\n"));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn p(args: &[&str]) -> Result<Command, CliError> {
        parse(args.iter().map(OsString::from))
    }

    fn run(args: &[&str]) -> CliArgs {
        match p(args) {
            Ok(Command::Run(c)) => c,
            other => panic!("expected Run, got {other:?}"),
        }
    }

    #[test]
    fn exact_slips_argv() {
        let c = run(&[
            "-port",
            "32768",
            "-host",
            "192.168.1.23",
            "-key-file",
            "pigeon.keys",
            "--redis-db",
            "localhost:6379",
            "-redis-channel-pygo",
            "p2p_pygo",
            "-redis-channel-gopy",
            "p2p_gopy",
        ]);
        assert_eq!(
            c,
            CliArgs {
                port: Some(32768),
                host: Some(Some(Ipv4Addr::new(192, 168, 1, 23))),
                key_file: Some(PathBuf::from("pigeon.keys")),
                redis_db: Some("localhost:6379".into()),
                redis_channel_pygo: Some("p2p_pygo".into()),
                redis_channel_gopy: Some("p2p_gopy".into()),
                ..CliArgs::default()
            }
        );
    }

    #[test]
    fn four_syntaxes() {
        for args in [
            &["-port", "5"][..],
            &["-port=5"][..],
            &["--port", "5"][..],
            &["--port=5"][..],
        ] {
            assert_eq!(run(args).port, Some(5), "{args:?}");
        }
    }

    #[test]
    fn empty_values() {
        let c = run(&["-host", "", "-key-file="]);
        assert_eq!(c.host, Some(None));
        assert_eq!(c.key_file, Some(PathBuf::new()));
        assert_eq!(run(&[]), CliArgs::default());
    }

    #[test]
    fn booleans() {
        let c = run(&["-key-reset", "-port", "1"]);
        assert_eq!(c.key_reset, Some(true));
        assert_eq!(c.port, Some(1));
        for t in ["1", "t", "T", "TRUE", "true", "True"] {
            assert_eq!(
                run(&[&format!("-redis-delete={t}")]).redis_delete,
                Some(true)
            );
        }
        for f in ["0", "f", "F", "FALSE", "false", "False"] {
            assert_eq!(run(&[&format!("--test={f}")]).test, Some(false));
        }
        assert!(matches!(
            p(&["-key-reset=yes"]),
            Err(CliError::BadValue { flag, .. }) if flag == "key-reset"
        ));
        // A bare boolean does not eat the next argument: it is positional.
        let c = run(&["-rename-with-port", "false"]);
        assert_eq!(c.rename_with_port, Some(true));
        assert_eq!(c.extra, vec![OsString::from("false")]);
    }

    #[test]
    fn value_flags_take_next_argument_verbatim() {
        // Go takes the next argument even if it looks like a flag.
        let c = run(&[
            "-rendezvous",
            "-x",
            "-pid",
            "/slips/1.0",
            "-config",
            "a.toml",
        ]);
        assert_eq!(c.rendezvous.as_deref(), Some("-x"));
        assert_eq!(c.pid.as_deref(), Some("/slips/1.0"));
        assert_eq!(c.config, Some(PathBuf::from("a.toml")));
        assert_eq!(
            run(&["-peerstore-file", "p.json"]).peerstore_file,
            Some("p.json".into())
        );
        // Last one wins.
        assert_eq!(run(&["-port", "1", "-port=2"]).port, Some(2));
    }

    #[test]
    fn stops_at_double_dash_and_positional() {
        let c = run(&["-port", "7", "--", "-host", "x"]);
        assert_eq!(c.port, Some(7));
        assert_eq!(c.host, None);
        assert_eq!(c.extra, vec![OsString::from("-host"), OsString::from("x")]);
        let c = run(&["-port", "7", "-", "-host", "1.2.3.4"]);
        assert_eq!(c.extra.len(), 3);
    }

    #[test]
    fn errors() {
        assert_eq!(p(&["-foo"]), Err(CliError::UnknownFlag("foo".into())));
        assert_eq!(
            p(&["-foo"]).unwrap_err().to_string(),
            "flag provided but not defined: -foo"
        );
        assert_eq!(p(&["-port"]), Err(CliError::MissingValue("port".into())));
        assert_eq!(
            p(&["--port"]).unwrap_err().to_string(),
            "flag needs an argument: -port"
        );
        assert_eq!(
            p(&["-port", "abc"]).unwrap_err().to_string(),
            "invalid value \"abc\" for flag -port: not a port number"
        );
        assert!(matches!(
            p(&["-port", "65536"]),
            Err(CliError::BadValue { .. })
        ));
        assert!(matches!(
            p(&["-host", "example.org"]),
            Err(CliError::BadValue { .. })
        ));
        assert!(matches!(
            p(&["-host", "::1"]),
            Err(CliError::BadValue { .. })
        ));
        assert_eq!(p(&["---port"]), Err(CliError::BadSyntax("---port".into())));
        assert_eq!(p(&["-=1"]), Err(CliError::BadSyntax("-=1".into())));
        for e in [p(&["-foo"]), p(&["-port", "x"]), p(&["frob"])] {
            assert!(!e.unwrap_err().to_string().contains('\n'));
        }
    }

    #[test]
    fn help() {
        for h in [
            &["-h"][..],
            &["-help"],
            &["--help"],
            &["-port", "1", "-h"],
            &["-help=true"],
        ] {
            assert_eq!(p(h), Ok(Command::Help), "{h:?}");
        }
        assert!(matches!(p(&["-help=false"]), Ok(Command::Run(_))));
        assert_eq!(p(&["id", "-h"]), Ok(Command::Help));
        assert_eq!(p(&["peers", "--help"]), Ok(Command::Help));
    }

    #[test]
    fn subcommands() {
        assert_eq!(
            p(&["id"]),
            Ok(Command::Id {
                key_file: "pigeon.keys".into()
            })
        );
        assert_eq!(
            p(&["id", "-key-file=k"]),
            Ok(Command::Id {
                key_file: "k".into()
            })
        );
        assert_eq!(
            p(&["peers"]),
            Ok(Command::Peers {
                peerstore_file: "peers.json".into(),
                json: false
            })
        );
        assert_eq!(
            p(&["peers", "-json", "--peerstore-file", "x.json"]),
            Ok(Command::Peers {
                peerstore_file: "x.json".into(),
                json: true
            })
        );
        assert_eq!(
            p(&["status"]),
            Ok(Command::Status {
                socket: "pigeon.sock".into(),
                json: false
            })
        );
        assert_eq!(
            p(&["status", "-json", "-socket", "/run/x.sock"]),
            Ok(Command::Status {
                socket: "/run/x.sock".into(),
                json: true
            })
        );
        assert_eq!(
            p(&["frob"]),
            Err(CliError::UnknownSubcommand("frob".into()))
        );
        assert_eq!(
            p(&["id", "-port", "1"]),
            Err(CliError::UnknownFlag("port".into()))
        );
        assert!(matches!(
            p(&["id", "extra"]),
            Err(CliError::UnexpectedArgument { .. })
        ));
        assert!(matches!(
            p(&["peers", "-json", "x"]),
            Err(CliError::UnexpectedArgument { .. })
        ));
        assert_eq!(
            p(&["id", "-key-file"]),
            Err(CliError::MissingValue("key-file".into()))
        );
    }

    #[cfg(unix)]
    #[test]
    fn non_utf8_paths_survive() {
        use std::os::unix::ffi::OsStrExt;
        let raw = OsStr::from_bytes(b"-key-file=k\xff").to_os_string();
        match parse([raw]) {
            Ok(Command::Run(c)) => {
                assert_eq!(
                    c.key_file
                        .as_deref()
                        .map(|p| p.as_os_str().as_encoded_bytes()),
                    Some(&b"k\xff"[..])
                )
            }
            other => panic!("{other:?}"),
        }
    }
}
