//! The control socket: a Unix socket in the runtime directory
//! (`pigeon.sock` next to the key and the peer list) on which a running
//! pigeon answers `pigeon status`. Nothing listens on the network for it.
//!
//! * Only the daemon's owner (and root, whom file modes do not stop) may
//!   connect: the socket is made mode 0600 right after `bind`, and every
//!   connection's peer credentials (`SO_PEERCRED`) are checked against the
//!   socket file's owner, which closes the window between `bind` and
//!   `chmod`.
//! * At start, a socket file that still answers belongs to another live
//!   pigeon: this one refuses to start (two pigeons in one runtime
//!   directory would share a key and a peer list), after waiting up to
//!   [`BUSY_WAIT`] for it to go (a pigeon whose Slips just died needs up to
//!   a second to notice and lets go of its socket as it starts to close).
//!   A file that refuses connections is a stale socket of a pigeon that
//!   died: it is removed.
//! * Protocol: the client sends one line, `status`; the daemon answers
//!   with one JSON [`StatusReport`] (or `{"error": "..."}`) and closes.
//! * The daemon's select loop only builds the report (a pure snapshot,
//!   O(peers)); waiting for it, asking Redis for `PUBSUB NUMSUB`,
//!   serialising and writing happen in tasks of their own, each bounded in
//!   time, with at most [`MAX_CLIENTS`] at once.

use crate::io::redis_bridge::BridgeProbe;
use crate::status::StatusReport;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::net::{UnixListener, UnixStream};
use tokio::sync::{Semaphore, mpsc, oneshot};

/// Connections served at once; more wait in the kernel's backlog.
pub const MAX_CLIENTS: usize = 8;
/// Time a client gets to send its request, and the daemon to answer.
pub const IO_TIMEOUT: Duration = Duration::from_secs(3);
/// How long a start waits for a live socket's pigeon to exit.
pub const BUSY_WAIT: Duration = Duration::from_secs(3);
/// Poll interval of that wait.
const BUSY_POLL: Duration = Duration::from_millis(100);
/// Longest request line accepted.
const MAX_REQUEST: u64 = 256;

/// A request to the select loop: "send me a report".
pub type ReportRequest = oneshot::Sender<StatusReport>;

/// Why the control socket could not be set up.
#[derive(Debug, thiserror::Error)]
pub enum ControlError {
    /// Another pigeon answers on this socket.
    #[error(
        "another pigeon is running in this directory (its control socket {} answers); stop it first",
        .0.display()
    )]
    Busy(PathBuf),
    /// The path exists and is not a socket: never removed.
    #[error("{} exists and is not a socket; move it away", .0.display())]
    NotASocket(PathBuf),
    /// Creating, removing or securing the socket failed.
    #[error("control socket {}: {source}", path.display())]
    Io {
        /// The socket's path.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
}

/// A bound control socket; the file is removed on drop if it is still
/// the one we created.
#[derive(Debug)]
pub struct ControlSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Device and inode of the socket file we created.
    file_id: (u64, u64),
    /// Its owner: the only non-root user let in.
    owner_uid: u32,
}

impl Drop for ControlSocket {
    fn drop(&mut self) {
        if let Ok(m) = std::fs::symlink_metadata(&self.path)
            && (m.dev(), m.ino()) == self.file_id
        {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> ControlError + '_ {
    move |source| ControlError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Binds the control socket at `path`, waiting up to `busy_wait` for
/// another pigeon's live socket to go (see the module doc).
pub async fn bind_waiting(path: &Path, busy_wait: Duration) -> Result<ControlSocket, ControlError> {
    let deadline = tokio::time::Instant::now() + busy_wait;
    let mut logged = false;
    loop {
        match bind(path) {
            Err(ControlError::Busy(p)) if tokio::time::Instant::now() < deadline => {
                if !logged {
                    tracing::info!(socket = %p.display(), "another pigeon answers on the control socket; waiting for it to exit");
                    logged = true;
                }
                tokio::time::sleep(BUSY_POLL).await;
            }
            other => return other,
        }
    }
}

/// Binds the control socket at `path` (see the module doc for stale and
/// live sockets). Must be called inside a tokio runtime.
pub fn bind(path: &Path) -> Result<ControlSocket, ControlError> {
    if let Ok(meta) = std::fs::symlink_metadata(path) {
        if !meta.file_type().is_socket() {
            return Err(ControlError::NotASocket(path.to_owned()));
        }
        match std::os::unix::net::UnixStream::connect(path) {
            Ok(_) => return Err(ControlError::Busy(path.to_owned())),
            Err(e) => {
                tracing::info!(socket = %path.display(), "removing a stale control socket ({e})");
                match std::fs::remove_file(path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(path)(e)),
                }
            }
        }
    }
    let listener = UnixListener::bind(path).map_err(io_err(path))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(io_err(path))?;
    let meta = std::fs::symlink_metadata(path).map_err(io_err(path))?;
    Ok(ControlSocket {
        listener,
        path: path.to_owned(),
        file_id: (meta.dev(), meta.ino()),
        owner_uid: meta.uid(),
    })
}

impl ControlSocket {
    /// The socket's path.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

/// Serves the socket until the returned task is aborted (or dropped with
/// the runtime). `requests` reaches the select loop; `probe` asks Redis
/// whether Slips listens.
pub fn spawn(
    socket: ControlSocket,
    requests: mpsc::Sender<ReportRequest>,
    probe: BridgeProbe,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let limit = Arc::new(Semaphore::new(MAX_CLIENTS));
        loop {
            let Ok(permit) = Arc::clone(&limit).acquire_owned().await else {
                return;
            };
            let stream = match socket.listener.accept().await {
                Ok((s, _)) => s,
                Err(e) => {
                    tracing::debug!("control socket accept failed: {e}");
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    continue;
                }
            };
            let allowed = stream
                .peer_cred()
                .is_ok_and(|c| c.uid() == socket.owner_uid || c.uid() == 0);
            let (requests, probe) = (requests.clone(), probe.clone());
            tokio::spawn(async move {
                let _permit = permit;
                let _ = tokio::time::timeout(IO_TIMEOUT, serve(stream, allowed, &requests, &probe))
                    .await;
            });
        }
    })
}

/// Gets a report from the select loop and fills in what Redis says.
pub async fn fetch_report(
    requests: &mpsc::Sender<ReportRequest>,
    probe: &BridgeProbe,
) -> Option<StatusReport> {
    let (tx, rx) = oneshot::channel();
    // Never wait for the loop: a full queue means it is busy.
    requests.try_send(tx).ok()?;
    let (report, subscribers) = tokio::join!(rx, probe.gopy_subscribers());
    let mut report = report.ok()?;
    report.health.slips_subscribers = subscribers;
    Some(report)
}

async fn serve(
    stream: UnixStream,
    allowed: bool,
    requests: &mpsc::Sender<ReportRequest>,
    probe: &BridgeProbe,
) {
    let (read, mut write) = stream.into_split();
    let reply = if allowed {
        let mut line = String::new();
        let mut reader = BufReader::new(tokio::io::AsyncReadExt::take(read, MAX_REQUEST));
        match reader.read_line(&mut line).await {
            Ok(_) if line.trim() == "status" => match fetch_report(requests, probe).await {
                Some(r) => serde_json::to_string(&r).unwrap_or_default(),
                None => error_json("the pigeon is busy or stopping; try again"),
            },
            Ok(_) => error_json("unknown request (expected \"status\")"),
            Err(e) => error_json(&format!("bad request: {e}")),
        }
    } else {
        error_json("permission denied: only the user running this pigeon (or root) may ask it")
    };
    let _ = write.write_all(reply.as_bytes()).await;
    let _ = write.write_all(b"\n").await;
    let _ = write.shutdown().await;
}

fn error_json(message: &str) -> String {
    serde_json::json!({ "error": message }).to_string()
}

/// Why `pigeon status` got no report.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Nothing listens there: no pigeon runs with this runtime directory.
    #[error(
        "no pigeon is running here: {} {why}. Run `pigeon status` in Slips' \
         permanent/p2p_trust_runtime directory, or pass -socket PATH",
        path.display()
    )]
    NoPigeon {
        /// The socket path tried.
        path: PathBuf,
        /// "does not exist", "refuses connections (stale)".
        why: &'static str,
    },
    /// The socket exists but we may not use it.
    #[error("{}: permission denied; run as the user that runs pigeon (or root)", .0.display())]
    PermissionDenied(PathBuf),
    /// The daemon answered with an error.
    #[error("the pigeon answered: {0}")]
    Refused(String),
    /// Any other failure (timeout, garbled answer).
    #[error("{}: {why}", path.display())]
    Other {
        /// The socket path tried.
        path: PathBuf,
        /// What went wrong.
        why: String,
    },
}

/// Asks the pigeon listening on `path` for its report (blocking; for the
/// `pigeon status` command).
pub fn query(path: &Path, timeout: Duration) -> Result<StatusReport, ClientError> {
    let other = |e: &dyn std::fmt::Display| ClientError::Other {
        path: path.to_owned(),
        why: e.to_string(),
    };
    let mut stream = match std::os::unix::net::UnixStream::connect(path) {
        Ok(s) => s,
        Err(e) => {
            return Err(match e.kind() {
                std::io::ErrorKind::NotFound => ClientError::NoPigeon {
                    path: path.to_owned(),
                    why: "does not exist",
                },
                std::io::ErrorKind::ConnectionRefused => ClientError::NoPigeon {
                    path: path.to_owned(),
                    why: "refuses connections (left by a pigeon that stopped)",
                },
                std::io::ErrorKind::PermissionDenied => {
                    ClientError::PermissionDenied(path.to_owned())
                }
                _ => other(&e),
            });
        }
    };
    stream
        .set_read_timeout(Some(timeout))
        .and_then(|()| stream.set_write_timeout(Some(timeout)))
        .map_err(|e| other(&e))?;
    stream.write_all(b"status\n").map_err(|e| other(&e))?;
    let mut text = String::new();
    stream.read_to_string(&mut text).map_err(|e| other(&e))?;
    let value: serde_json::Value = serde_json::from_str(text.trim()).map_err(|e| other(&e))?;
    if let Some(err) = value.get("error").and_then(|e| e.as_str()) {
        return Err(ClientError::Refused(err.to_owned()));
    }
    serde_json::from_value(value).map_err(|e| other(&format!("unexpected answer: {e}")))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn socket_is_owner_only_and_removed_on_drop() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pigeon.sock");
        rt().block_on(async {
            let s = bind(&path).unwrap();
            let mode = std::fs::metadata(&path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
            drop(s);
        });
        assert!(!path.exists());
    }

    #[test]
    fn a_live_socket_refuses_a_second_pigeon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pigeon.sock");
        rt().block_on(async {
            let _first = bind(&path).unwrap();
            assert!(matches!(bind(&path), Err(ControlError::Busy(_))));
        });
    }

    #[test]
    fn a_start_waits_for_a_closing_pigeon() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pigeon.sock");
        rt().block_on(async {
            let first = bind(&path).unwrap();
            let closing = tokio::spawn(async move {
                tokio::time::sleep(Duration::from_millis(300)).await;
                drop(first);
            });
            let second = bind_waiting(&path, Duration::from_secs(5)).await;
            assert!(second.is_ok(), "{second:?}");
            closing.await.unwrap();
        });
    }

    #[test]
    fn a_stale_socket_is_replaced() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pigeon.sock");
        // A socket file nobody listens on, as a killed pigeon leaves it.
        drop(std::os::unix::net::UnixListener::bind(&path).unwrap());
        assert!(path.exists());
        assert!(matches!(
            query(&path, Duration::from_secs(1)),
            Err(ClientError::NoPigeon { .. })
        ));
        rt().block_on(async {
            let _s = bind(&path).unwrap();
        });
    }

    #[test]
    fn a_regular_file_is_never_removed() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("pigeon.sock");
        std::fs::write(&path, "mine").unwrap();
        rt().block_on(async {
            assert!(matches!(bind(&path), Err(ControlError::NotASocket(_))));
        });
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "mine");
    }

    #[test]
    fn no_socket_means_no_pigeon() {
        let dir = tempfile::tempdir().unwrap();
        let e = query(&dir.path().join("pigeon.sock"), Duration::from_secs(1)).unwrap_err();
        assert!(
            e.to_string().starts_with("no pigeon is running here"),
            "{e}"
        );
    }
}
