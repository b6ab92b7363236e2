//! Where Slips' Redis is and how to log in: Redis addresses in every form
//! Slips or a user may give ([`parse_address`], [`RedisAddress`]) and
//! Slips' Redis auth file ([`parse_auth_file`]). Pure parsing, except
//! [`read_auth_file`], which reads the one file.

use std::fmt;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

use super::BridgeError;

/// Redis' standard port, used when an address names none (as the Go
/// client does).
pub const DEFAULT_PORT: u16 = 6379;

/// Where Redis listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// A TCP server. `host` is a name or an IP literal (IPv6 without
    /// brackets); a name is resolved at every (re)connection.
    Tcp {
        /// Host name or IP address.
        host: String,
        /// TCP port.
        port: u16,
    },
    /// A Unix domain socket (absolute path).
    Unix(PathBuf),
}

/// A parsed Redis address: where to connect and how to log in.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisTarget {
    /// Where Redis listens.
    pub endpoint: Endpoint,
    /// Database selected after connecting (`SELECT`); 0 unless the address
    /// says otherwise. Pub/sub ignores it; `multiAddress` lives there.
    pub db: i64,
    /// ACL user name from the address, if any (`redis://user:pw@…`).
    pub username: Option<String>,
    /// Password from the address, if any. Never printed.
    pub password: Option<String>,
}

impl fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisTarget")
            .field("endpoint", &self.endpoint)
            .field("db", &self.db)
            .field("username", &self.username)
            .field("password", &self.password.as_ref().map(|_| "<redacted>"))
            .finish()
    }
}

impl fmt::Display for RedisTarget {
    /// A loggable form without credentials: `host:port/db` or
    /// `unix:/path?db=N`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.endpoint {
            Endpoint::Tcp { host, port } if host.contains(':') => {
                write!(f, "[{host}]:{port}/{}", self.db)
            }
            Endpoint::Tcp { host, port } => write!(f, "{host}:{port}/{}", self.db),
            Endpoint::Unix(path) => write!(f, "unix:{}?db={}", path.display(), self.db),
        }
    }
}

/// A Redis address as configured (`redis.address`, `slips.cache_redis`):
/// the text as given and what it means, parsed once when the value is set.
/// `Config::validate` reports why it means nothing; the bridge and the
/// request guard use [`RedisAddress::target`] without parsing again.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisAddress {
    /// As given (shown in the help text).
    text: String,
    /// What [`parse_address`] made of it; the error is its reason.
    parsed: Result<RedisTarget, String>,
}

impl RedisAddress {
    /// Parses `text` (any form [`parse_address`] accepts).
    pub fn new(text: impl Into<String>) -> Self {
        let text = text.into();
        let parsed = parse(&text);
        Self { text, parsed }
    }

    /// The text as given.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// Where to connect and how to log in, or why the text says nothing
    /// usable (the address in the error has any password redacted).
    pub fn target(&self) -> Result<&RedisTarget, BridgeError> {
        self.parsed
            .as_ref()
            .map_err(|reason| invalid_address(&self.text, reason.clone()))
    }
}

impl From<&str> for RedisAddress {
    fn from(text: &str) -> Self {
        Self::new(text)
    }
}

impl From<String> for RedisAddress {
    fn from(text: String) -> Self {
        Self::new(text)
    }
}

impl fmt::Debug for RedisAddress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("RedisAddress")
            .field(&redact_address(&self.text))
            .finish()
    }
}

impl<'de> Deserialize<'de> for RedisAddress {
    /// Any string: one that does not parse is reported by validation,
    /// naming the key.
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        String::deserialize(d).map(Self::new)
    }
}

/// Reads a Redis auth file. A file that does not exist means "no
/// password": Slips up to 1.1.21 has none, and Redis servers that a later
/// Slips started before it added passwords run without one (Slips'
/// `try_connect_with_and_without_password` in
/// `slips_files/core/database/redis_db/redis_auth.py`).
pub(super) fn read_auth_file(path: &Path) -> Result<Option<String>, BridgeError> {
    match std::fs::read_to_string(path) {
        Ok(text) => parse_auth_file(&text).map_err(|reason| BridgeError::AuthFileFormat {
            path: path.to_path_buf(),
            reason,
        }),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(BridgeError::AuthFileRead {
            path: path.to_path_buf(),
            source,
        }),
    }
}

/// Extracts the password from the contents of Slips' `redis_auth.conf`.
///
/// Slips does not document the format. It writes one line `requirepass
/// <password>` (`ensure_redis_password` in
/// `slips_files/core/database/redis_db/redis_auth.py`, Slips after 1.1.21),
/// but other tools may write the file, so these are accepted:
///
/// * blank lines and lines starting with `#` are ignored, and every line
///   is trimmed of surrounding whitespace;
/// * `requirepass <password>` (redis.conf syntax), `password=<password>`
///   or `password: <password>` (keys case-insensitive, spaces around `=`
///   and `:` allowed); the value may be wrapped in one pair of `"` or `'`,
///   which are removed (no escape sequences). If several such lines
///   exist, the last wins, as in redis.conf, and other lines are ignored;
/// * otherwise, a file with exactly one line: that whole line is the
///   password, taken literally (quotes kept).
///
/// An empty value or a file with nothing but blanks and comments means no
/// password (`Ok(None)`). Several lines without any of the keyed forms are
/// an error rather than a guess. The error text never contains the file's
/// contents.
pub fn parse_auth_file(text: &str) -> Result<Option<String>, String> {
    let lines: Vec<&str> = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .collect();
    let mut keyed = None;
    for line in &lines {
        if let Some(value) = keyed_password(line) {
            keyed = Some(value);
        }
    }
    if let Some(value) = keyed {
        return Ok(Some(value).filter(|v| !v.is_empty()));
    }
    match lines.as_slice() {
        [] => Ok(None),
        [single] => Ok(Some((*single).to_owned())),
        more => Err(format!(
            "{} non-comment lines and none of the form `requirepass <password>`, \
             `password=<password>` or `password: <password>`",
            more.len()
        )),
    }
}

/// The value of a `requirepass x` / `password=x` / `password: x` line.
fn keyed_password(line: &str) -> Option<String> {
    if let Some(rest) = strip_prefix_ignore_case(line, "requirepass") {
        if rest.is_empty() {
            return Some(String::new());
        }
        if rest.starts_with(char::is_whitespace) {
            return Some(unquote(rest.trim()).to_owned());
        }
    }
    if let Some(rest) = strip_prefix_ignore_case(line, "password") {
        let rest = rest.trim_start();
        if let Some(value) = rest.strip_prefix('=').or_else(|| rest.strip_prefix(':')) {
            return Some(unquote(value.trim()).to_owned());
        }
    }
    None
}

fn strip_prefix_ignore_case<'a>(s: &'a str, prefix: &str) -> Option<&'a str> {
    let head = s.get(..prefix.len())?;
    head.eq_ignore_ascii_case(prefix)
        .then(|| &s[prefix.len()..])
}

/// Removes one pair of matching surrounding quotes.
fn unquote(s: &str) -> &str {
    for quote in ['"', '\''] {
        if s.len() >= 2 && s.starts_with(quote) && s.ends_with(quote) {
            return &s[1..s.len() - 1];
        }
    }
    s
}

/// Parses a Redis address in any form Slips or a user may give.
///
/// * Go style (what Slips passes to `--redis-db`): `host:port`,
///   `[::1]:6379`, `host` alone (port 6379), a bare IPv6 literal (`::1`),
///   `:6379` (local host, like Go's dialer). No credentials, DB 0.
/// * `redis://[[user]:password@]host[:port][/db][?db=N&protocol=resp3]`
///   (also `valkey://`); user and password are percent-decoded.
/// * `unix:///path/to/sock` or `redis+unix:///path` (also
///   `valkey+unix://`) with optional `?db=N&user=U&pass=P` (`password=`
///   accepted too).
///
/// `0.0.0.0` and `::` (listen addresses) mean the local host, as for Go's
/// dialer on Linux, and become `127.0.0.1` and `::1`. TLS (`rediss://`) is
/// rejected: Slips' Redis is local and plain TCP. `protocol` may only be
/// RESP3 (`3`/`resp3`), which pigeon always uses: reconnecting pub/sub
/// needs it. Other query keys are rejected rather than ignored.
pub fn parse_address(s: &str) -> Result<RedisTarget, BridgeError> {
    parse(s).map_err(|reason| invalid_address(s, reason))
}

/// The error of an address that does not parse, password redacted.
fn invalid_address(s: &str, reason: String) -> BridgeError {
    BridgeError::InvalidAddress {
        address: redact_address(s.trim()),
        reason,
    }
}

/// [`parse_address`] with the reason alone as the error.
fn parse(s: &str) -> Result<RedisTarget, String> {
    let input = s.trim();
    if input.is_empty() {
        return Err("the address is empty".into());
    }
    let Some((scheme, rest)) = input.split_once("://") else {
        let (host, port) = parse_host_port(input, true)?;
        return Ok(RedisTarget {
            endpoint: Endpoint::Tcp { host, port },
            db: 0,
            username: None,
            password: None,
        });
    };
    match scheme.to_ascii_lowercase().as_str() {
        "redis" | "valkey" => parse_tcp_url(rest),
        "rediss" | "valkeys" => Err(
            "TLS (rediss://) is not supported: Slips' Redis is local and plain TCP; \
             use redis://host:port"
                .into(),
        ),
        "unix" | "redis+unix" | "valkey+unix" => parse_unix_url(rest),
        other => Err(format!(
            "unknown scheme {other:?}; expected host:port, redis://, or unix://"
        )),
    }
}

/// `host[:port]`, `[v6][:port]` or a bare IPv6 literal.
fn parse_host_port(s: &str, allow_empty_host: bool) -> Result<(String, u16), String> {
    let (host, port) = if let Some(inner) = s.strip_prefix('[') {
        let (v6, after) = inner
            .split_once(']')
            .ok_or("missing `]` after an IPv6 address")?;
        v6.parse::<Ipv6Addr>()
            .map_err(|_| format!("{v6:?} between brackets is not an IPv6 address"))?;
        let port = match after {
            "" => DEFAULT_PORT,
            _ => parse_port(after.strip_prefix(':').ok_or("unexpected text after `]`")?)?,
        };
        (v6.to_owned(), port)
    } else if s.parse::<Ipv6Addr>().is_ok() {
        (s.to_owned(), DEFAULT_PORT)
    } else if let Some((host, port)) = s.rsplit_once(':') {
        if host.contains(':') {
            return Err("an IPv6 address with a port must be written [address]:port".into());
        }
        (host.to_owned(), parse_port(port)?)
    } else {
        (s.to_owned(), DEFAULT_PORT)
    };
    if host.is_empty() {
        if !allow_empty_host {
            return Err("the host is missing".into());
        }
        return Ok(("localhost".to_owned(), port));
    }
    if host
        .chars()
        .any(|c| c.is_whitespace() || matches!(c, '/' | '@' | '?' | '#' | '[' | ']'))
    {
        return Err(format!("{host:?} is not a host name"));
    }
    let host = match host.parse::<IpAddr>() {
        Ok(ip) if ip == IpAddr::V4(Ipv4Addr::UNSPECIFIED) => Ipv4Addr::LOCALHOST.to_string(),
        Ok(ip) if ip == IpAddr::V6(Ipv6Addr::UNSPECIFIED) => Ipv6Addr::LOCALHOST.to_string(),
        _ => host,
    };
    Ok((host, port))
}

fn parse_port(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(0) | Err(_) => Err(format!("{s:?} is not a TCP port (1-65535)")),
        Ok(port) => Ok(port),
    }
}

fn parse_db(s: &str) -> Result<i64, String> {
    s.parse::<i64>()
        .ok()
        .filter(|db| *db >= 0)
        .ok_or_else(|| format!("{s:?} is not a database number"))
}

/// Credentials and DB from the query of a URL.
#[derive(Default)]
struct UrlQuery {
    /// `db=N`, to compare with a DB in the path.
    db: Option<i64>,
    /// `user=` of a Unix socket URL.
    username: Option<String>,
    /// `pass=` of a Unix socket URL.
    password: Option<String>,
}

fn parse_query(query: Option<&str>, allow_credentials: bool) -> Result<UrlQuery, String> {
    let mut out = UrlQuery::default();
    for pair in query.unwrap_or("").split('&').filter(|p| !p.is_empty()) {
        let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
        let value = percent_decode(value)?;
        match key {
            "db" => out.db = Some(parse_db(&value)?),
            "protocol" => {
                if !matches!(value.to_ascii_lowercase().as_str(), "3" | "resp3") {
                    return Err("pigeon always uses RESP3 (protocol=resp3): reconnecting \
                         pub/sub needs it"
                        .into());
                }
            }
            "user" | "username" if allow_credentials => {
                out.username = Some(value).filter(|v| !v.is_empty());
            }
            "pass" | "password" if allow_credentials => {
                out.password = Some(value).filter(|v| !v.is_empty());
            }
            other => return Err(format!("unsupported query parameter {other:?}")),
        }
    }
    Ok(out)
}

/// The part of `redis://…` after the scheme.
fn parse_tcp_url(rest: &str) -> Result<RedisTarget, String> {
    if rest.contains('#') {
        return Err("URL fragments (#…) are not supported".into());
    }
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let (authority, path) = match before_query.split_once('/') {
        Some((authority, path)) => (authority, path),
        None => (before_query, ""),
    };
    let (userinfo, hostport) = match authority.rsplit_once('@') {
        Some((userinfo, hostport)) => (Some(userinfo), hostport),
        None => (None, authority),
    };
    let (username, password) = match userinfo {
        None => (None, None),
        Some(info) => {
            let (user, pass) = match info.split_once(':') {
                Some((user, pass)) => (user, Some(pass)),
                None => (info, None),
            };
            let user = Some(percent_decode(user)?).filter(|u| !u.is_empty());
            let pass = match pass {
                Some(pass) => Some(percent_decode(pass)?).filter(|p| !p.is_empty()),
                None => None,
            };
            (user, pass)
        }
    };
    let (host, port) = parse_host_port(hostport, false)?;
    let path = path.trim_matches('/');
    let path_db = if path.is_empty() {
        None
    } else {
        Some(parse_db(path)?)
    };
    let query = parse_query(query, false)?;
    let db = match (path_db, query.db) {
        (Some(a), Some(b)) if a != b => {
            return Err(format!("database {a} in the path but {b} in the query"));
        }
        (a, b) => a.or(b).unwrap_or(0),
    };
    Ok(RedisTarget {
        endpoint: Endpoint::Tcp { host, port },
        db,
        username,
        password,
    })
}

/// The part of `unix://…` after the scheme: `/path[?query]`.
fn parse_unix_url(rest: &str) -> Result<RedisTarget, String> {
    let (path, query) = match rest.split_once('?') {
        Some((path, query)) => (path, Some(query)),
        None => (rest, None),
    };
    let path = percent_decode(path)?;
    if !path.starts_with('/') || path.len() < 2 {
        return Err("a Unix socket needs an absolute path: unix:///path/to/redis.sock".into());
    }
    let query = parse_query(query, true)?;
    Ok(RedisTarget {
        endpoint: Endpoint::Unix(PathBuf::from(path)),
        db: query.db.unwrap_or(0),
        username: query.username,
        password: query.password,
    })
}

/// Decodes `%XX` escapes (UTF-8 result required).
fn percent_decode(s: &str) -> Result<String, String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = s
                .get(i + 1..i + 3)
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or("invalid %-escape")?;
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| "a %-escaped value is not UTF-8".to_owned())
}

/// The address with any credentials replaced by `***`, for messages.
pub(super) fn redact_address(address: &str) -> String {
    let Some((scheme, rest)) = address.split_once("://") else {
        return address.to_owned();
    };
    let (before_query, query) = match rest.split_once('?') {
        Some((before, query)) => (before, Some(query)),
        None => (rest, None),
    };
    let authority_end = before_query.find('/').unwrap_or(before_query.len());
    let (authority, path) = before_query.split_at(authority_end);
    let authority = match authority.rsplit_once('@') {
        Some((_, hostport)) => format!("***@{hostport}"),
        None => authority.to_owned(),
    };
    let mut out = format!("{scheme}://{authority}{path}");
    if let Some(query) = query {
        let pairs: Vec<String> = query
            .split('&')
            .map(|pair| match pair.split_once('=') {
                Some((key, _)) if matches!(key, "pass" | "password") => format!("{key}=***"),
                _ => pair.to_owned(),
            })
            .collect();
        out.push('?');
        out.push_str(&pairs.join("&"));
    }
    out
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn tcp(host: &str, port: u16) -> Endpoint {
        Endpoint::Tcp {
            host: host.into(),
            port,
        }
    }

    #[test]
    fn go_style_addresses() {
        let t = parse_address("localhost:6379").unwrap();
        assert_eq!(t.endpoint, tcp("localhost", 6379));
        assert_eq!((t.db, t.username, t.password), (0, None, None));
        assert_eq!(
            parse_address("127.0.0.1:6380").unwrap().endpoint,
            tcp("127.0.0.1", 6380)
        );
        assert_eq!(
            parse_address("[::1]:6381").unwrap().endpoint,
            tcp("::1", 6381)
        );
        assert_eq!(parse_address("[::1]").unwrap().endpoint, tcp("::1", 6379));
        assert_eq!(parse_address("::1").unwrap().endpoint, tcp("::1", 6379));
        // Ambiguous but a valid IPv6 address, so taken as one (Go would
        // refuse it): write [::1]:6379 for a port.
        assert_eq!(
            parse_address("::1:6379").unwrap().endpoint,
            tcp("::1:6379", 6379)
        );
        assert_eq!(
            parse_address("redis-host").unwrap().endpoint,
            tcp("redis-host", 6379)
        );
        assert_eq!(
            parse_address(" localhost:1 ").unwrap().endpoint,
            tcp("localhost", 1)
        );
        assert_eq!(
            parse_address(":6390").unwrap().endpoint,
            tcp("localhost", 6390)
        );
        assert_eq!(
            parse_address("0.0.0.0:6390").unwrap().endpoint,
            tcp("127.0.0.1", 6390)
        );
        assert_eq!(
            parse_address("[::]:6390").unwrap().endpoint,
            tcp("::1", 6390)
        );
    }

    #[test]
    fn bad_go_style_addresses() {
        for bad in [
            "",
            "   ",
            "host:",
            "host:0",
            "host:65536",
            "host:port",
            "[::1",
            "[::1]x",
            "[nothex]:1",
            "a b:1",
            "host/x:1",
        ] {
            assert!(
                matches!(parse_address(bad), Err(BridgeError::InvalidAddress { .. })),
                "{bad:?} accepted"
            );
        }
    }

    #[test]
    fn redis_urls() {
        let t = parse_address("redis://127.0.0.1:6390/0").unwrap();
        assert_eq!(t.endpoint, tcp("127.0.0.1", 6390));
        assert_eq!(t.db, 0);
        let t = parse_address("redis://localhost").unwrap();
        assert_eq!((t.endpoint, t.db), (tcp("localhost", 6379), 0));
        let t = parse_address("redis://:s3cr%40t@host:1/3").unwrap();
        assert_eq!(t.password.as_deref(), Some("s3cr@t"));
        assert_eq!(t.username, None);
        assert_eq!((t.endpoint, t.db), (tcp("host", 1), 3));
        let t = parse_address("redis://alice:pw@[::1]:7/2?protocol=resp3").unwrap();
        assert_eq!(t.username.as_deref(), Some("alice"));
        assert_eq!(t.password.as_deref(), Some("pw"));
        assert_eq!((t.endpoint, t.db), (tcp("::1", 7), 2));
        let t = parse_address("REDIS://h/?db=4").unwrap();
        assert_eq!(t.db, 4);
        let t = parse_address("valkey://h:2/").unwrap();
        assert_eq!((t.endpoint, t.db), (tcp("h", 2), 0));
        // A password containing '@' unescaped: the last '@' separates.
        let t = parse_address("redis://:a@b@h").unwrap();
        assert_eq!(t.password.as_deref(), Some("a@b"));
    }

    #[test]
    fn bad_redis_urls() {
        for bad in [
            "redis://",
            "redis://:pw@",
            "redis://h:1/x",
            "redis://h:1/-1",
            "redis://h/1?db=2",
            "redis://h?protocol=resp2",
            "redis://h?foo=bar",
            "redis://h#frag",
            "redis://h:1/%zz",
            "http://h:1",
            "redis://:%ff@h",
        ] {
            assert!(parse_address(bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn tls_is_rejected_clearly() {
        let err = parse_address("rediss://:pw@h:6379").unwrap_err();
        let text = err.to_string();
        assert!(text.contains("TLS"), "{text}");
        assert!(!text.contains("pw"), "password leaked: {text}");
    }

    #[test]
    fn unix_urls() {
        let t = parse_address("unix:///run/redis/redis.sock").unwrap();
        assert_eq!(t.endpoint, Endpoint::Unix("/run/redis/redis.sock".into()));
        assert_eq!(t.db, 0);
        let t = parse_address("redis+unix:///tmp/r.sock?db=1&pass=x%20y&user=u").unwrap();
        assert_eq!(t.endpoint, Endpoint::Unix("/tmp/r.sock".into()));
        assert_eq!(t.db, 1);
        assert_eq!(t.password.as_deref(), Some("x y"));
        assert_eq!(t.username.as_deref(), Some("u"));
        assert!(parse_address("unix://relative/path").is_err());
        assert!(parse_address("unix:///").is_err());
        assert!(parse_address("unix:///s?x=1").is_err());
    }

    #[test]
    fn display_is_loggable() {
        assert_eq!(parse_address("[::1]:5").unwrap().to_string(), "[::1]:5/0");
        assert_eq!(parse_address("redis://h:5/2").unwrap().to_string(), "h:5/2");
        assert_eq!(
            parse_address("unix:///s.sock").unwrap().to_string(),
            "unix:/s.sock?db=0"
        );
    }

    #[test]
    fn auth_file_single_line() {
        assert_eq!(
            parse_auth_file("s3cret\n").unwrap().as_deref(),
            Some("s3cret")
        );
        assert_eq!(
            parse_auth_file("  with space  \r\n").unwrap().as_deref(),
            Some("with space")
        );
        assert_eq!(
            parse_auth_file("\"quoted\"").unwrap().as_deref(),
            Some("\"quoted\"")
        );
        assert_eq!(
            parse_auth_file("# Slips\n\npassword123\n")
                .unwrap()
                .as_deref(),
            Some("password123")
        );
        assert_eq!(
            parse_auth_file("requirepassword").unwrap().as_deref(),
            Some("requirepassword")
        );
    }

    #[test]
    fn auth_file_keyed_lines() {
        assert_eq!(
            parse_auth_file("requirepass abc").unwrap().as_deref(),
            Some("abc")
        );
        assert_eq!(
            parse_auth_file("port 6379\nREQUIREPASS \"a b\"\n# c\n")
                .unwrap()
                .as_deref(),
            Some("a b")
        );
        assert_eq!(
            parse_auth_file("password=xyz").unwrap().as_deref(),
            Some("xyz")
        );
        assert_eq!(
            parse_auth_file("user: slips\nPassword : 'x:y'\n")
                .unwrap()
                .as_deref(),
            Some("x:y")
        );
        assert_eq!(
            parse_auth_file("requirepass one\nrequirepass two\n")
                .unwrap()
                .as_deref(),
            Some("two")
        );
    }

    #[test]
    fn auth_file_without_password() {
        assert_eq!(parse_auth_file("").unwrap(), None);
        assert_eq!(parse_auth_file("\n  \n# only a comment\n").unwrap(), None);
        assert_eq!(parse_auth_file("requirepass").unwrap(), None);
        assert_eq!(parse_auth_file("requirepass \"\"").unwrap(), None);
        assert_eq!(parse_auth_file("password=").unwrap(), None);
    }

    #[test]
    fn auth_file_ambiguous() {
        let err = parse_auth_file("hunter2\nsecond line\n").unwrap_err();
        assert!(!err.contains("hunter2"));
    }
}
