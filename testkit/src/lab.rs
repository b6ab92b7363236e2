//! The namespace lab: private network namespaces, Redis servers, the
//! simulated LAN of `scripts/lab.sh`, and a Slips-shaped directory tree.
//!
//! Nothing here touches the root network namespace's interfaces: every
//! socket must be created inside [`in_loopback_netns`] or [`Lab::run_in`].
//! A socket stays in the namespace it was created in, so the way to get,
//! say, a Redis connection to lab host 2 is to *create* it inside
//! `lab.run_in(2, ...)`, return it, and use it from anywhere. Threads and
//! child processes started from inside such a closure inherit its
//! namespace too.
//!
//! Everything here needs root (`unshare(CLONE_NEWNET)`, `ip netns`).
//! Processes are always stopped by PID, and labs are torn down on drop; labs
//! left behind by a killed run (`pg<pid>_<n>` of a dead PID) are removed by
//! the next [`Lab::up`].
//!
//! Failures while setting up panic with a message naming what failed: this
//! is test code.

// Panicking with a message is how this harness reports a failed set-up.
#![allow(clippy::expect_used, clippy::unwrap_used)]

use nix::sched::{CloneFlags, setns, unshare};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::Once;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use crate::{GOPY, PYGO, SLIPS_VERSION};

/// The lab's subnet: host `i` is `10.77.0.i`.
pub const LAB_SUBNET: [u8; 3] = [10, 77, 0];

/// The Redis port inside every lab host.
pub const LAB_REDIS_PORT: u16 = 6379;

/// DB 0 of the Redis of a lab host, seen from inside the host: where Slips
/// and the pigeon meet.
pub const LAB_REDIS_URL: &str = "redis://127.0.0.1:6379/0";

/// How long a Redis server may take to answer its first PING.
const REDIS_READY_TIMEOUT: Duration = Duration::from_secs(5);

/// How long a process gets between SIGTERM and SIGKILL.
const STOP_GRACE: Duration = Duration::from_secs(3);

// ------------------------------------------------------------------ namespaces

/// Runs `f` on a new thread inside a new, private network namespace whose
/// only interface is `lo`, already up. Sockets, threads and child processes
/// created by `f` live in that namespace. A panic in `f` is re-raised in the
/// caller.
pub fn in_loopback_netns<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> T {
    let handle = std::thread::Builder::new()
        .name("loopback-netns".to_owned())
        .spawn(move || {
            unshare(CloneFlags::CLONE_NEWNET)
                .expect("unshare(CLONE_NEWNET) failed: the integration tests must run as root");
            // a child inherits the netns of the thread that spawns it
            run_ok(Command::new("ip").args(["link", "set", "lo", "up"]));
            f()
        })
        .expect("cannot spawn a thread");
    match handle.join() {
        Ok(value) => value,
        Err(panic) => std::panic::resume_unwind(panic),
    }
}

/// Runs `f` on a scoped thread that has joined the network namespace `ns`
/// (an open `/proc/.../ns/net` or `/run/netns/...` file); re-raises a panic.
pub fn run_in_netns<T: Send>(ns: &File, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|scope| {
        let handle = scope.spawn(|| {
            setns(ns, CloneFlags::CLONE_NEWNET).expect("setns(CLONE_NEWNET) failed (root?)");
            f()
        });
        match handle.join() {
            Ok(value) => value,
            Err(panic) => std::panic::resume_unwind(panic),
        }
    })
}

/// The calling thread's network namespace, as a file to [`setns`] into.
pub fn current_netns() -> File {
    File::open("/proc/thread-self/ns/net").expect("cannot open /proc/thread-self/ns/net")
}

/// Runs a command to completion and panics, with its output, unless it
/// succeeds.
pub fn run_ok(cmd: &mut Command) -> Output {
    let out = cmd
        .stdin(Stdio::null())
        .output()
        .unwrap_or_else(|e| panic!("cannot run {cmd:?}: {e}"));
    assert!(
        out.status.success(),
        "{cmd:?} failed ({}):\n{}{}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Spawns `cmd`, retrying briefly on ETXTBSY: a freshly copied binary can
/// still be open for writing in a child that another test thread forked
/// meanwhile (it closes at that child's exec).
fn spawn_retrying(cmd: &mut Command) -> io::Result<Child> {
    let mut tries = 0;
    loop {
        match cmd.spawn() {
            Err(e) if e.raw_os_error() == Some(nix::libc::ETXTBSY) && tries < 100 => {
                tries += 1;
                std::thread::sleep(Duration::from_millis(20));
            }
            other => return other,
        }
    }
}

// ------------------------------------------------------------------ Redis

/// Sends one RESP command to `addr` and returns the raw reply bytes (a
/// simple, error, integer or bulk reply; not arrays).
pub fn redis_raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect_timeout(&addr, timeout)?;
    stream.set_read_timeout(Some(timeout))?;
    stream.set_write_timeout(Some(timeout))?;
    stream.write_all(request)?;
    let mut reply = Vec::new();
    let mut buf = [0u8; 512];
    while !resp_complete(&reply) {
        let n = stream.read(&mut buf)?;
        if n == 0 {
            break;
        }
        reply.extend_from_slice(&buf[..n]);
    }
    Ok(reply)
}

/// Whether `reply` holds one whole RESP reply of a non-array type.
fn resp_complete(reply: &[u8]) -> bool {
    let Some(line_end) = reply.windows(2).position(|w| w == b"\r\n") else {
        return false;
    };
    if reply[0] != b'$' {
        return true;
    }
    let len: i64 = std::str::from_utf8(&reply[1..line_end])
        .ok()
        .and_then(|t| t.parse().ok())
        .unwrap_or(-1);
    len < 0 || reply.len() >= line_end + 2 + len as usize + 2
}

/// PINGs the Redis server at `127.0.0.1:port` of the calling thread's
/// network namespace (plain RESP over TCP).
pub fn redis_ping(port: u16) -> bool {
    let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
    redis_raw(addr, b"PING\r\n", Duration::from_millis(500)).is_ok_and(|r| r == b"+PONG\r\n")
}

/// A `redis-server` child process bound to 127.0.0.1 in the network
/// namespace it was started from, with its own temporary directory.
pub struct RedisServer {
    /// The TCP port on 127.0.0.1.
    pub port: u16,
    child: Option<Child>,
    netns: File,
    dir: tempfile::TempDir,
}

impl RedisServer {
    /// Starts `redis-server` on `127.0.0.1:port` in the calling thread's
    /// network namespace (normally inside [`in_loopback_netns`]) and waits
    /// until it answers PING (at most 5 s).
    pub fn start(port: u16) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pigeon-redis-")
            .tempdir()
            .expect("cannot create a temp dir for redis-server");
        let mut server = RedisServer {
            port,
            child: None,
            netns: current_netns(),
            dir,
        };
        server.launch();
        server
    }

    fn launch(&mut self) {
        let log = self.dir.path().join("redis.log");
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port")
            .arg(self.port.to_string())
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(self.dir.path())
            .arg("--logfile")
            .arg(&log)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let port = self.port;
        let child = run_in_netns(&self.netns, move || {
            let mut child = cmd.spawn().expect("cannot start redis-server");
            let deadline = Instant::now() + REDIS_READY_TIMEOUT;
            loop {
                if redis_ping(port) {
                    return child;
                }
                if let Ok(Some(status)) = child.try_wait() {
                    panic!(
                        "redis-server on port {port} exited at start ({status}):\n{}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                if Instant::now() > deadline {
                    let _ = child.kill();
                    let _ = child.wait();
                    panic!(
                        "redis-server on port {port} did not answer PING within {REDIS_READY_TIMEOUT:?}:\n{}",
                        fs::read_to_string(&log).unwrap_or_default()
                    );
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        });
        self.child = Some(child);
    }

    /// `redis://127.0.0.1:PORT/0`.
    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/0", self.port)
    }

    /// The server's PID while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Whether it answers PING (checked from its own namespace).
    pub fn ping(&self) -> bool {
        let port = self.port;
        run_in_netns(&self.netns, move || redis_ping(port))
    }

    /// Runs `f` in the server's network namespace (to create clients).
    pub fn run_in<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        run_in_netns(&self.netns, f)
    }

    /// Stops the server: SIGTERM, then SIGKILL after a grace period; waits
    /// for it. Does nothing if it is not running.
    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            stop_child(&mut child, Signal::SIGTERM, STOP_GRACE);
        }
    }

    /// Stops the server (if running) and starts it again on the same port,
    /// in the same namespace, with an empty dataset; waits until it answers.
    pub fn restart(&mut self) {
        self.stop();
        self.launch();
    }

    /// The server's log file.
    pub fn log(&self) -> String {
        fs::read_to_string(self.dir.path().join("redis.log")).unwrap_or_default()
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Signals `child` (if it still runs), waits up to `grace`, then SIGKILLs
/// it; always reaps it.
fn stop_child(child: &mut Child, signal: Signal, grace: Duration) -> ExitStatus {
    if let Ok(Some(status)) = child.try_wait() {
        return status;
    }
    let _ = kill(Pid::from_raw(child.id() as i32), signal);
    let deadline = Instant::now() + grace;
    while Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            return status;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let _ = child.kill();
    child.wait().expect("cannot wait for a child process")
}

// ------------------------------------------------------------------ processes

/// A child process started by the harness, killed (SIGKILL) and reaped on
/// drop. Signals are only ever sent to its own PID, and never after it was
/// reaped.
#[derive(Debug)]
pub struct LabChild {
    child: Child,
    status: Option<ExitStatus>,
    what: String,
}

impl LabChild {
    pub fn new(child: Child, what: String) -> Self {
        LabChild {
            child,
            status: None,
            what,
        }
    }

    /// Its PID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// What it is, for messages (program and namespace).
    pub fn what(&self) -> &str {
        &self.what
    }

    /// Sends `signal`, unless the process has already been reaped.
    pub fn signal(&mut self, signal: Signal) -> io::Result<()> {
        if self.try_wait().is_some() {
            return Ok(());
        }
        kill(Pid::from_raw(self.child.id() as i32), signal).map_err(io::Error::from)
    }

    /// SIGINT, as Slips sends at shutdown (twice, with Ctrl-C).
    pub fn sigint(&mut self) -> io::Result<()> {
        self.signal(Signal::SIGINT)
    }

    /// SIGTERM.
    pub fn sigterm(&mut self) -> io::Result<()> {
        self.signal(Signal::SIGTERM)
    }

    /// SIGKILL.
    pub fn sigkill(&mut self) -> io::Result<()> {
        self.signal(Signal::SIGKILL)
    }

    /// Its exit status if it has exited (reaping it).
    pub fn try_wait(&mut self) -> Option<ExitStatus> {
        if self.status.is_none() {
            self.status = self.child.try_wait().ok().flatten();
        }
        self.status
    }

    /// Waits up to `timeout` for it to exit.
    pub fn wait_timeout(&mut self, timeout: Duration) -> Option<ExitStatus> {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(status) = self.try_wait() {
                return Some(status);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    /// Whether it is still running.
    pub fn is_running(&mut self) -> bool {
        self.try_wait().is_none()
    }

    /// SIGKILLs it (if running) and returns its exit status.
    pub fn kill_and_wait(&mut self) -> ExitStatus {
        if let Some(status) = self.try_wait() {
            return status;
        }
        let _ = self.child.kill();
        let status = self
            .child
            .wait()
            .unwrap_or_else(|e| panic!("cannot wait for {}: {e}", self.what));
        self.status = Some(status);
        status
    }

    /// The std handle, e.g. to take piped stdout.
    pub fn inner(&mut self) -> &mut Child {
        &mut self.child
    }
}

impl Drop for LabChild {
    fn drop(&mut self) {
        if self.status.is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

// ------------------------------------------------------------------ the lab

static LAB_COUNTER: AtomicUsize = AtomicUsize::new(0);
static REAP_STALE: Once = Once::new();

/// `scripts/lab.sh` of this repository.
pub fn lab_script() -> PathBuf {
    crate::repo_root().join("scripts/lab.sh")
}

/// A simulated LAN made by `scripts/lab.sh`: hosts `1..=n`, each a network
/// namespace with address `10.77.0.i/24` on a shared bridge and its own
/// Redis on 127.0.0.1:6379. Torn down (every process in it killed) on drop.
pub struct Lab {
    name: String,
    hosts: usize,
}

impl Lab {
    /// Builds a lab of `n` hosts with a name unique to this test process.
    pub fn up(n: usize) -> Lab {
        REAP_STALE.call_once(reap_stale_labs);
        let name = format!(
            "pg{}_{}",
            std::process::id(),
            LAB_COUNTER.fetch_add(1, Ordering::Relaxed)
        );
        let lab = Lab { name, hosts: n };
        // the lab is torn down by Drop even if `up` fails half-way
        run_ok(Command::new(lab_script()).args(["up", &lab.name, &n.to_string()]));
        for i in 1..=n {
            lab.seed_slips_cache(i);
        }
        lab
    }

    /// Gives host `i`'s Slips data about every documentation address the
    /// tests ask about (192.0.2.0/24, 198.51.96.0/20, 203.0.113.0/24 and
    /// 2001:db8::/120), as Slips stores it: `IPsInfo:threat_level` and
    /// `IPsInfo:confidence` hashes in its cache, DB 1 of the host's Redis.
    /// pigeon's request guard then lets requests about them through, as it
    /// would under a Slips that knows them; `tests/integration/
    /// request_guard.rs` tests the guard itself.
    pub fn seed_slips_cache(&self, i: usize) {
        let mut ips: Vec<String> = Vec::new();
        for net in ["192.0.2", "203.0.113"] {
            ips.extend((0..=255).map(|k| format!("{net}.{k}")));
        }
        // attacks.rs counts request IPs up from 198.51.100.0 by thousands.
        for c in 96..=111 {
            ips.extend((0..=255).map(|k| format!("198.51.{c}.{k}")));
        }
        ips.extend((0..=255).map(|k| format!("2001:db8::{k:x}")));
        self.seed_slips_cache_with(i, &ips);
    }

    /// Gives host `i`'s Slips data about each of `ips` (see
    /// [`Lab::seed_slips_cache`]), so that pigeon's request guard lets
    /// requests about them through.
    pub fn seed_slips_cache_with(&self, i: usize, ips: &[String]) {
        self.run_in(i, move || {
            let client = redis::Client::open(format!("redis://127.0.0.1:{LAB_REDIS_PORT}/1"))
                .expect("redis client");
            let mut con = client
                .get_connection_with_timeout(Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("cannot reach host {i}'s Redis to seed it: {e}"));
            for (field, value) in [("threat_level", "medium"), ("confidence", "0.5")] {
                let mut cmd = redis::cmd("HSET");
                cmd.arg(format!("IPsInfo:{field}"));
                for ip in ips {
                    cmd.arg(ip).arg(value);
                }
                let _: i64 = cmd
                    .query(&mut con)
                    .unwrap_or_else(|e| panic!("cannot seed host {i}'s Slips cache: {e}"));
            }
        });
    }

    /// The lab's name (namespaces are `NAME-br`, `NAME-h1`...).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The number of hosts.
    pub fn hosts(&self) -> usize {
        self.hosts
    }

    fn check_host(&self, i: usize) {
        assert!(
            (1..=self.hosts).contains(&i),
            "lab {} has hosts 1..={}, not {i}",
            self.name,
            self.hosts
        );
    }

    /// The namespace name of host `i`.
    pub fn netns(&self, i: usize) -> String {
        self.check_host(i);
        format!("{}-h{i}", self.name)
    }

    /// The address of host `i`: 10.77.0.i.
    pub fn host_ip(&self, i: usize) -> Ipv4Addr {
        self.check_host(i);
        let [a, b, c] = LAB_SUBNET;
        Ipv4Addr::new(a, b, c, u8::try_from(i).expect("host number > 255"))
    }

    /// The Redis of host `i`; reachable only from inside host `i`.
    pub fn redis_url(&self, i: usize) -> String {
        self.check_host(i);
        LAB_REDIS_URL.to_owned()
    }

    /// Runs `f` on a thread inside the bridge's namespace (`NAME-br`),
    /// where every frame between the hosts passes: a capture made there
    /// sees the whole LAN, unicast included.
    pub fn run_in_bridge<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}-br", self.name);
        let ns = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
        run_in_netns(&ns, f)
    }

    fn open_netns(&self, i: usize) -> File {
        let path = format!("/run/netns/{}", self.netns(i));
        File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"))
    }

    /// Runs `f` on a thread inside host `i`'s network namespace and returns
    /// its result (a panic is re-raised). Sockets created in `f` stay in
    /// host `i` wherever they are used afterwards.
    pub fn run_in<T: Send>(&self, i: usize, f: impl FnOnce() -> T + Send) -> T {
        let ns = self.open_netns(i);
        run_in_netns(&ns, f)
    }

    /// A `Command` running `program` inside host `i` through
    /// `ip netns exec`; add arguments, cwd and stdio as usual.
    pub fn command(&self, i: usize, program: impl AsRef<OsStr>) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", &self.netns(i)]).arg(program);
        cmd
    }

    /// Runs `cmd` to completion inside host `i` (it is spawned from a
    /// thread in that namespace; stdout and stderr are captured).
    pub fn exec(&self, i: usize, cmd: &mut Command) -> io::Result<Output> {
        self.run_in(i, || cmd.output())
    }

    /// Starts `cmd` inside host `i` (spawned from a thread in that
    /// namespace, so the PID is the program's own); killed on drop.
    pub fn spawn_command(&self, i: usize, cmd: &mut Command) -> io::Result<LabChild> {
        let what = format!("{:?} in {}", cmd.get_program(), self.netns(i));
        let child = self.run_in(i, || spawn_retrying(cmd))?;
        Ok(LabChild::new(child, what))
    }

    /// Starts `program args...` inside host `i`, in `cwd` if given, with
    /// stdout and stderr appended to `output` if given (else discarded) and
    /// stdin from /dev/null; killed on drop.
    pub fn spawn<S: AsRef<OsStr>>(
        &self,
        i: usize,
        program: impl AsRef<OsStr>,
        args: &[S],
        cwd: Option<&Path>,
        output: Option<&Path>,
    ) -> io::Result<LabChild> {
        let mut cmd = Command::new(program);
        cmd.args(args).stdin(Stdio::null());
        if let Some(cwd) = cwd {
            cmd.current_dir(cwd);
        }
        match output {
            Some(path) => {
                let file = append(path)?;
                cmd.stdout(file.try_clone()?).stderr(file);
            }
            None => {
                cmd.stdout(Stdio::null()).stderr(Stdio::null());
            }
        }
        self.spawn_command(i, &mut cmd)
    }

    fn lab_sh(&self, args: &[&str]) {
        run_ok(Command::new(lab_script()).args(args));
    }

    /// Host `i` loses `pct`% of everything it sends (0 removes the rule).
    pub fn loss(&self, i: usize, pct: u8) {
        self.check_host(i);
        self.lab_sh(&["loss", &self.name, &i.to_string(), &pct.to_string()]);
    }

    /// The bridge drops `pct`% of what it forwards to host `i` (0 removes
    /// the rule).
    pub fn link_loss(&self, i: usize, pct: u8) {
        self.check_host(i);
        self.lab_sh(&["link-loss", &self.name, &i.to_string(), &pct.to_string()]);
    }

    /// Partitions host `i`: nothing reaches it or leaves it (its link stays
    /// up and its sends succeed).
    pub fn cut(&self, i: usize) {
        self.check_host(i);
        self.lab_sh(&["cut", &self.name, &i.to_string()]);
    }

    /// Undoes [`Lab::cut`].
    pub fn heal(&self, i: usize) {
        self.check_host(i);
        self.lab_sh(&["heal", &self.name, &i.to_string()]);
    }

    /// Gives host `i` a default route via 10.77.0.254 (no such host), for
    /// programs that need one to learn their own address (Slips connects a
    /// UDP socket to 8.8.8.8, which sends nothing); an nft rule in the
    /// host's output hook refuses every packet to an address outside the
    /// lab, multicast and loopback (`lab.sh default-route`).
    pub fn default_route(&self, i: usize) {
        self.check_host(i);
        self.lab_sh(&["default-route", &self.name, &i.to_string()]);
    }

    /// `lab.sh`'s state directory of host `i` (`$LAB_STATE/NAME/hI`): its
    /// Redis' pid file, log and working directory.
    pub fn host_state_dir(&self, i: usize) -> PathBuf {
        self.check_host(i);
        let root = std::env::var_os("LAB_STATE").unwrap_or_else(|| "/tmp/pigeon-lab".into());
        PathBuf::from(root).join(&self.name).join(format!("h{i}"))
    }

    /// Whether host `i`'s Redis answers PING.
    pub fn redis_up(&self, i: usize) -> bool {
        self.run_in(i, || redis_ping(LAB_REDIS_PORT))
    }

    /// Stops host `i`'s Redis (`SHUTDOWN NOSAVE`, as an operator would)
    /// and waits until it no longer answers and its process is gone (at
    /// most 5 s). Clients see their connections closed.
    pub fn stop_redis(&self, i: usize) {
        let pidfile = self.host_state_dir(i).join("redis.pid");
        let pid = fs::read_to_string(&pidfile)
            .ok()
            .and_then(|p| p.trim().parse::<u32>().ok());
        // The reply is lost when the server closes the connection; the
        // polls below are the check.
        let _ = self.exec(
            i,
            Command::new("redis-cli").args([
                "-h",
                "127.0.0.1",
                "-p",
                &LAB_REDIS_PORT.to_string(),
                "shutdown",
                "nosave",
            ]),
        );
        let deadline = Instant::now() + REDIS_READY_TIMEOUT;
        while self.redis_up(i) || pid.is_some_and(process_alive) {
            assert!(
                Instant::now() < deadline,
                "redis-server of host {i} (pid {pid:?}) did not stop within {REDIS_READY_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Starts host `i`'s Redis again with the command line of `lab.sh up`
    /// (empty dataset) and waits until it answers PING (at most 5 s).
    pub fn start_redis(&self, i: usize) {
        let dir = self.host_state_dir(i);
        let mut cmd = Command::new("redis-server");
        cmd.args(["--port", &LAB_REDIS_PORT.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no", "--daemonize", "yes"])
            .arg("--dir")
            .arg(&dir)
            .arg("--pidfile")
            .arg(dir.join("redis.pid"))
            .arg("--logfile")
            .arg(dir.join("redis.log"))
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let out = self
            .exec(i, &mut cmd)
            .unwrap_or_else(|e| panic!("cannot run redis-server in host {i}: {e}"));
        assert!(
            out.status.success(),
            "redis-server in host {i}: {}",
            out.status
        );
        let deadline = Instant::now() + REDIS_READY_TIMEOUT;
        while !self.redis_up(i) {
            assert!(
                Instant::now() < deadline,
                "redis-server of host {i} did not answer PING within {REDIS_READY_TIMEOUT:?}:\n{}",
                fs::read_to_string(dir.join("redis.log")).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        self.seed_slips_cache(i);
    }

    /// [`Lab::stop_redis`], `down_for`, then [`Lab::start_redis`].
    pub fn restart_redis(&self, i: usize, down_for: Duration) {
        self.stop_redis(i);
        std::thread::sleep(down_for);
        self.start_redis(i);
    }

    /// `lab.sh status` output.
    pub fn status(&self) -> String {
        let out = run_ok(Command::new(lab_script()).args(["status", &self.name]));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// One Redis command on DB 0 of host `i`'s Redis, over a connection
    /// made inside the host for it (so it works across Redis restarts).
    pub fn redis<T: redis::FromRedisValue + Send>(
        &self,
        i: usize,
        cmd: &redis::Cmd,
    ) -> redis::RedisResult<T> {
        let url = self.redis_url(i);
        self.run_in(i, || {
            let client = redis::Client::open(url)?;
            let mut con = client.get_connection_with_timeout(Duration::from_secs(2))?;
            cmd.query(&mut con)
        })
    }

    /// The PIDs of every process now running in host `i` (`ip netns
    /// pids`, which only lists).
    pub fn pids(&self, i: usize) -> Vec<u32> {
        let out = run_ok(Command::new("ip").args(["netns", "pids", &self.netns(i)]));
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect()
    }

    /// Runs the nft `script` in host `i`'s namespace; returns its output.
    pub fn nft(&self, i: usize, script: &str) -> String {
        nft_in(&self.netns(i), script)
    }

    /// Runs the nft `script` in the namespace of the lab's bridge (e.g.
    /// counters on its ports); returns its output.
    pub fn bridge_nft(&self, script: &str) -> String {
        nft_in(&format!("{}-br", self.name), script)
    }
}

/// `nft -f -` with `script` on stdin, in the namespace `netns`.
fn nft_in(netns: &str, script: &str) -> String {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns, "nft", "-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap_or_else(|e| panic!("cannot run nft in {netns} (nftables installed?): {e}"));
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .unwrap_or_else(|e| panic!("writing to nft in {netns}: {e}"));
    }
    let out = child
        .wait_with_output()
        .unwrap_or_else(|e| panic!("waiting for nft in {netns}: {e}"));
    assert!(
        out.status.success(),
        "nft {script:?} in {netns}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

impl Drop for Lab {
    fn drop(&mut self) {
        match Command::new(lab_script())
            .args(["down", &self.name])
            .stdin(Stdio::null())
            .output()
        {
            Ok(out) if out.status.success() => {}
            Ok(out) => eprintln!(
                "lab.sh down {} failed: {}",
                self.name,
                String::from_utf8_lossy(&out.stderr)
            ),
            Err(e) => eprintln!("cannot run lab.sh down {}: {e}", self.name),
        }
    }
}

/// Tears down labs named `pg<pid>_<n>` whose test process is gone (a run
/// killed before its `Drop`s ran).
fn reap_stale_labs() {
    let Ok(out) = Command::new("ip").args(["netns", "list"]).output() else {
        return;
    };
    let mut stale = std::collections::BTreeSet::new();
    for line in String::from_utf8_lossy(&out.stdout).lines() {
        let Some(ns) = line.split_whitespace().next() else {
            continue;
        };
        let Some((lab, _)) = ns.rsplit_once('-') else {
            continue;
        };
        let Some((pid, counter)) = lab.strip_prefix("pg").and_then(|r| r.split_once('_')) else {
            continue;
        };
        let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), counter.parse::<u32>()) else {
            continue;
        };
        if pid != std::process::id() && !Path::new(&format!("/proc/{pid}")).exists() {
            stale.insert(lab.to_owned());
        }
    }
    for lab in stale {
        eprintln!("removing stale lab {lab}");
        let _ = Command::new(lab_script())
            .args(["down", &lab])
            .stdin(Stdio::null())
            .output();
    }
}

/// Whether process `pid` exists and is not a zombie (an orphan's exit may
/// never be reaped by PID 1 in a container).
pub fn process_alive(pid: u32) -> bool {
    match fs::read_to_string(format!("/proc/{pid}/stat")) {
        // the state follows the parenthesised command name
        Ok(stat) => stat
            .rsplit_once(") ")
            .is_some_and(|(_, rest)| !rest.starts_with('Z') && !rest.starts_with('X')),
        Err(_) => false,
    }
}

/// Opens `path` for appending, creating it.
pub fn append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

// ------------------------------------------------------------------ Slips tree

/// A Slips-shaped directory, laid out as Slips launches the Pigeon:
///
/// ```text
/// <root>/VERSION                                  "1.1.21\n"
/// <root>/p2p4slips/p2p4slips                      the pigeon binary (copy or link)
/// <root>/permanent/p2p_trust_runtime/             the Pigeon's cwd
/// <root>/output/p2p_trust/p2p.log                 the Pigeon's stdout
/// <root>/output/p2p_trust/pigeon.stderr           its stderr (Slips: console)
/// ```
pub struct SlipsTree {
    root: TreeRoot,
}

/// Where a [`SlipsTree`] lives.
enum TreeRoot {
    /// A temporary directory, removed on drop.
    Temp(tempfile::TempDir),
    /// A directory its owner removes (the bench keeps it with `--keep`).
    Kept(PathBuf),
}

impl Default for SlipsTree {
    fn default() -> Self {
        Self::new()
    }
}

impl SlipsTree {
    /// A temporary tree with `VERSION` = [`SLIPS_VERSION`] and a copy of
    /// [`crate::pigeon_binary`].
    pub fn new() -> Self {
        Self::with_version(SLIPS_VERSION)
    }

    /// A temporary tree whose `VERSION` file holds `version` and a newline.
    pub fn with_version(version: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pigeon-slips-")
            .tempdir()
            .expect("cannot create a temp dir for the Slips tree");
        let tree = SlipsTree {
            root: TreeRoot::Temp(dir),
        };
        tree.lay_out(version).expect("lay out the Slips tree");
        // A copy, not a link: tests change the binary's mode and neighbours.
        fs::copy(crate::pigeon_binary(), tree.binary()).expect("copy the pigeon binary");
        tree
    }

    /// A tree at `root` (created; left in place on drop) whose binary is a
    /// symbolic link to `pigeon`: the pigeon finds `VERSION` from its argv[0]
    /// as under Slips, and a hundred trees cost no hundred copies.
    pub fn linked_at(root: PathBuf, pigeon: &Path) -> io::Result<Self> {
        let tree = SlipsTree {
            root: TreeRoot::Kept(root),
        };
        tree.lay_out(SLIPS_VERSION)?;
        std::os::unix::fs::symlink(pigeon, tree.binary())?;
        Ok(tree)
    }

    fn lay_out(&self, version: &str) -> io::Result<()> {
        fs::create_dir_all(self.root().join("p2p4slips"))?;
        fs::create_dir_all(self.runtime_dir())?;
        fs::create_dir_all(self.root().join("output/p2p_trust"))?;
        fs::write(self.root().join("VERSION"), format!("{version}\n"))
    }

    /// The Slips root (Slips' cwd).
    pub fn root(&self) -> &Path {
        match &self.root {
            TreeRoot::Temp(dir) => dir.path(),
            TreeRoot::Kept(path) => path,
        }
    }

    /// `<root>/p2p4slips/p2p4slips`, absolute, as Slips runs it.
    pub fn binary(&self) -> PathBuf {
        self.root().join("p2p4slips/p2p4slips")
    }

    /// `<root>/permanent/p2p_trust_runtime`: the Pigeon's cwd.
    pub fn runtime_dir(&self) -> PathBuf {
        self.root().join("permanent/p2p_trust_runtime")
    }

    /// `<root>/output/p2p_trust/p2p.log`: the Pigeon's stdout.
    pub fn log_path(&self) -> PathBuf {
        self.root().join("output/p2p_trust/p2p.log")
    }

    /// Where the Pigeon's stderr goes.
    pub fn stderr_path(&self) -> PathBuf {
        self.root().join("output/p2p_trust/pigeon.stderr")
    }

    /// The Pigeon's stdout so far.
    pub fn read_log(&self) -> String {
        fs::read_to_string(self.log_path()).unwrap_or_default()
    }

    /// The Pigeon's stderr so far.
    pub fn read_stderr(&self) -> String {
        fs::read_to_string(self.stderr_path()).unwrap_or_default()
    }

    /// The arguments Slips 1.1.21 passes (after the program path).
    pub fn argv(&self, host_ip: Ipv4Addr, port: u16, redis_port: u16) -> Vec<String> {
        [
            "-port",
            &port.to_string(),
            "-host",
            &host_ip.to_string(),
            "-key-file",
            "pigeon.keys",
            "--redis-db",
            &format!("localhost:{redis_port}"),
            "-redis-channel-pygo",
            PYGO,
            "-redis-channel-gopy",
            GOPY,
        ]
        .map(str::to_owned)
        .to_vec()
    }

    /// The command Slips runs: the absolute binary path with [`Self::argv`]
    /// and `extra` arguments, cwd = runtime dir, stdout appended to
    /// `p2p.log`, stderr appended to `pigeon.stderr`, stdin /dev/null.
    pub fn command(
        &self,
        host_ip: Ipv4Addr,
        port: u16,
        redis_port: u16,
        extra: &[&str],
    ) -> io::Result<Command> {
        let mut cmd = Command::new(self.binary());
        cmd.args(self.argv(host_ip, port, redis_port)).args(extra);
        self.as_slips_runs_it(&mut cmd)?;
        Ok(cmd)
    }

    /// Gives `cmd` the surroundings Slips gives the Pigeon: cwd = runtime
    /// dir, stdin /dev/null, stdout appended to `p2p.log`, stderr appended
    /// to `pigeon.stderr` (for a launcher that `exec`s the Pigeon).
    pub fn as_slips_runs_it(&self, cmd: &mut Command) -> io::Result<()> {
        cmd.current_dir(self.runtime_dir())
            .stdin(Stdio::null())
            .stdout(append(&self.log_path())?)
            .stderr(append(&self.stderr_path())?);
        Ok(())
    }

    /// Starts the Pigeon in lab host `i` as Slips would, with `-host` =
    /// the host's address, `-port` = `port` and the host's Redis.
    pub fn spawn_in_lab(&self, lab: &Lab, i: usize, port: u16) -> io::Result<LabChild> {
        self.spawn_in_lab_with(lab, i, port, &[])
    }

    /// [`Self::spawn_in_lab`] with extra arguments appended.
    pub fn spawn_in_lab_with(
        &self,
        lab: &Lab,
        i: usize,
        port: u16,
        extra: &[&str],
    ) -> io::Result<LabChild> {
        let mut cmd = self.command(lab.host_ip(i), port, LAB_REDIS_PORT, extra)?;
        lab.spawn_command(i, &mut cmd)
    }

    /// [`Self::spawn_in_lab`] under umask 0, as Slips 1.1.21 runs it
    /// (through `sh -c 'umask 000; exec …'`: the same argv[0]).
    pub fn spawn_in_lab_umask0(&self, lab: &Lab, i: usize, port: u16) -> io::Result<LabChild> {
        let mut cmd = Command::new("sh");
        cmd.arg("-c")
            .arg("umask 000; exec \"$0\" \"$@\"")
            .arg(self.binary())
            .args(self.argv(lab.host_ip(i), port, LAB_REDIS_PORT));
        self.as_slips_runs_it(&mut cmd)?;
        lab.spawn_command(i, &mut cmd)
    }

    /// Starts the Pigeon in the calling thread's network namespace (e.g.
    /// inside [`in_loopback_netns`], with `host_ip` 127.0.0.1).
    pub fn spawn_here(
        &self,
        host_ip: Ipv4Addr,
        port: u16,
        redis_port: u16,
        extra: &[&str],
    ) -> io::Result<LabChild> {
        let mut cmd = self.command(host_ip, port, redis_port, extra)?;
        let child = spawn_retrying(&mut cmd)?;
        Ok(LabChild::new(child, "pigeon".to_owned()))
    }
}
