//! The test harness: private network namespaces, Redis servers, the
//! simulated LAN of `scripts/lab.sh`, and a Slips-shaped directory tree.
//!
//! Nothing here touches the root network namespace's interfaces: every
//! socket a test opens must be created inside [`in_loopback_netns`] or
//! [`Lab::run_in`]. A socket stays in the namespace it was created in, so
//! the way to get, say, a Redis connection to lab host 2 is to *create* it
//! inside `lab.run_in(2, ...)`, return it, and use it from anywhere. Threads
//! and child processes started from inside such a closure inherit its
//! namespace too.
//!
//! Everything here needs root (`unshare(CLONE_NEWNET)`, `ip netns`).
//! Processes are always stopped by PID, and labs are torn down on drop; labs
//! left behind by a killed test run (`pg<pid>_<n>` of a dead PID) are
//! removed by the next [`Lab::up`].
//!
//! Failures while setting up panic with a message naming what failed: this
//! is test code.

// A module of the single integration-test binary: `pub` is its API for the
// other test modules, not a crate API; not every helper is used by every
// test yet; and panicking with a message is how test setup reports errors.
#![allow(unreachable_pub, dead_code, clippy::expect_used, clippy::unwrap_used)]

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

/// The lab's subnet: host `i` is `10.77.0.i`.
pub const LAB_SUBNET: [u8; 3] = [10, 77, 0];

/// The Redis port inside every lab host.
pub const LAB_REDIS_PORT: u16 = 6379;

/// The Slips version written to a [`SlipsTree`]'s `VERSION` file.
pub const SLIPS_VERSION: &str = "1.1.21";

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
fn run_in_netns<T: Send>(ns: &File, f: impl FnOnce() -> T + Send) -> T {
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
fn current_netns() -> File {
    File::open("/proc/thread-self/ns/net").expect("cannot open /proc/thread-self/ns/net")
}

/// Runs a command to completion and panics, with its output, unless it
/// succeeds.
fn run_ok(cmd: &mut Command) -> Output {
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
fn redis_raw(addr: SocketAddr, request: &[u8], timeout: Duration) -> io::Result<Vec<u8>> {
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
    Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/lab.sh")
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
        self.run_in(i, move || {
            let client = redis::Client::open(format!("redis://127.0.0.1:{LAB_REDIS_PORT}/1"))
                .expect("redis client");
            let mut con = client
                .get_connection_with_timeout(Duration::from_secs(2))
                .unwrap_or_else(|e| panic!("cannot reach host {i}'s Redis to seed it: {e}"));
            for (field, value) in [("threat_level", "medium"), ("confidence", "0.5")] {
                let mut cmd = redis::cmd("HSET");
                cmd.arg(format!("IPsInfo:{field}"));
                for ip in &ips {
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
        format!("redis://127.0.0.1:{LAB_REDIS_PORT}/0")
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

    /// Runs `f` on a thread inside the bridge's namespace (`NAME-br`),
    /// where every frame between the hosts passes: a capture made there
    /// sees the whole LAN, unicast included.
    pub fn run_in_bridge<T: Send>(&self, f: impl FnOnce() -> T + Send) -> T {
        let path = format!("/run/netns/{}-br", self.name);
        let ns = File::open(&path).unwrap_or_else(|e| panic!("cannot open {path}: {e}"));
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
/// <root>/p2p4slips/p2p4slips                      a copy of the pigeon binary
/// <root>/permanent/p2p_trust_runtime/             the Pigeon's cwd
/// <root>/output/p2p_trust/p2p.log                 the Pigeon's stdout
/// <root>/output/p2p_trust/pigeon.stderr           its stderr (Slips: console)
/// ```
pub struct SlipsTree {
    dir: tempfile::TempDir,
}

impl SlipsTree {
    /// A tree with `VERSION` = `1.1.21`.
    pub fn new() -> Self {
        Self::with_version(SLIPS_VERSION)
    }

    /// A tree whose `VERSION` file holds `version` and a newline.
    pub fn with_version(version: &str) -> Self {
        let dir = tempfile::Builder::new()
            .prefix("pigeon-slips-")
            .tempdir()
            .expect("cannot create a temp dir for the Slips tree");
        let tree = SlipsTree { dir };
        fs::write(tree.root().join("VERSION"), format!("{version}\n")).expect("write VERSION");
        fs::create_dir_all(tree.root().join("p2p4slips")).expect("mkdir p2p4slips");
        fs::create_dir_all(tree.runtime_dir()).expect("mkdir runtime dir");
        fs::create_dir_all(tree.root().join("output/p2p_trust")).expect("mkdir output");
        fs::copy(env!("CARGO_BIN_EXE_pigeon"), tree.binary()).expect("copy the pigeon binary");
        tree
    }

    /// The Slips root (Slips' cwd).
    pub fn root(&self) -> &Path {
        self.dir.path()
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
            "p2p_pygo",
            "-redis-channel-gopy",
            "p2p_gopy",
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
        cmd.args(self.argv(host_ip, port, redis_port))
            .args(extra)
            .current_dir(self.runtime_dir())
            .stdin(Stdio::null())
            .stdout(append(&self.log_path())?)
            .stderr(append(&self.stderr_path())?);
        Ok(cmd)
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
            .args(self.argv(lab.host_ip(i), port, LAB_REDIS_PORT))
            .current_dir(self.runtime_dir())
            .stdin(Stdio::null())
            .stdout(append(&self.log_path())?)
            .stderr(append(&self.stderr_path())?);
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

// ------------------------------------------------------------------ tests

#[cfg(test)]
mod tests {
    use super::*;
    use socket2::{Domain, Protocol, Socket, Type};
    use std::net::{SocketAddrV4, UdpSocket};

    const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 112, 103);
    const GROUP_PORT: u16 = 47474;

    /// A multicast receiver joined on `iface`, as the pigeon sets it up.
    fn receiver(iface: Ipv4Addr) -> UdpSocket {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_reuse_address(true).unwrap();
        s.set_reuse_port(true).unwrap();
        s.bind(&SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, GROUP_PORT).into())
            .unwrap();
        s.join_multicast_v4(&GROUP, &iface).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        s.into()
    }

    fn sender(iface: Ipv4Addr) -> UdpSocket {
        let s = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP)).unwrap();
        s.set_multicast_if_v4(&iface).unwrap();
        s.set_multicast_ttl_v4(1).unwrap();
        s.set_multicast_loop_v4(false).unwrap();
        s.bind(&SocketAddrV4::new(iface, 0).into()).unwrap();
        s.into()
    }

    /// Datagrams received until a read times out, with their sources.
    fn drain(s: &UdpSocket) -> Vec<(Vec<u8>, Ipv4Addr)> {
        let mut got = Vec::new();
        let mut buf = [0u8; 2048];
        while let Ok((n, from)) = s.recv_from(&mut buf) {
            let SocketAddr::V4(from) = from else {
                panic!("IPv6 source {from}");
            };
            got.push((buf[..n].to_vec(), *from.ip()));
        }
        got
    }

    fn send_burst(s: &UdpSocket, n: usize) {
        for k in 0..n {
            s.send_to(format!("dgram {k}").as_bytes(), (GROUP, GROUP_PORT))
                .unwrap();
        }
    }

    fn namespaces_of(name: &str) -> Vec<String> {
        let out = run_ok(Command::new("ip").args(["netns", "list"]));
        String::from_utf8_lossy(&out.stdout)
            .lines()
            .filter_map(|l| l.split_whitespace().next())
            .filter(|ns| ns.starts_with(&format!("{name}-")))
            .map(str::to_owned)
            .collect()
    }

    #[test]
    fn lab_up_down_cleans_up() {
        let lab = Lab::up(3);
        let name = lab.name().to_owned();
        assert_eq!(namespaces_of(&name).len(), 4, "{}", lab.status());
        assert_eq!(lab.host_ip(2), Ipv4Addr::new(10, 77, 0, 2));
        assert_eq!(lab.redis_url(3), "redis://127.0.0.1:6379/0");

        // every host has its own Redis
        for i in 1..=3 {
            assert!(lab.run_in(i, || redis_ping(LAB_REDIS_PORT)), "host {i}");
            let set = format!("*3\r\n$3\r\nSET\r\n$4\r\nhost\r\n$1\r\n{i}\r\n");
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, LAB_REDIS_PORT));
            let reply = lab.run_in(i, || {
                redis_raw(addr, set.as_bytes(), Duration::from_secs(2))
            });
            assert_eq!(reply.unwrap(), b"+OK\r\n");
        }
        for i in 1..=3 {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, LAB_REDIS_PORT));
            let get = b"*2\r\n$3\r\nGET\r\n$4\r\nhost\r\n";
            let reply = lab
                .run_in(i, || redis_raw(addr, get, Duration::from_secs(2)))
                .unwrap();
            assert_eq!(reply, format!("$1\r\n{i}\r\n").as_bytes(), "host {i}");
        }
        // multicast from host 1 reaches hosts 2 and 3, sockets created in
        // the hosts and used from this thread
        let (ip1, ip2, ip3) = (lab.host_ip(1), lab.host_ip(2), lab.host_ip(3));
        let rx2 = lab.run_in(2, move || receiver(ip2));
        let rx3 = lab.run_in(3, move || receiver(ip3));
        let tx1 = lab.run_in(1, move || sender(ip1));
        send_burst(&tx1, 20);
        for rx in [&rx2, &rx3] {
            let got = drain(rx);
            assert_eq!(got.len(), 20);
            assert!(got.iter().all(|(_, from)| *from == ip1));
            assert_eq!(got[0].0, b"dgram 0");
        }

        // a process in a host: PID, signals, exit status
        let mut sleeper = lab
            .spawn(2, "sleep", &["30"], None, None)
            .expect("spawn sleep");
        assert!(sleeper.is_running());
        assert!(sleeper.wait_timeout(Duration::from_millis(50)).is_none());
        let out =
            run_ok(Command::new("ip").args(["netns", "identify", &sleeper.pid().to_string()]));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), lab.netns(2));
        sleeper.sigint().unwrap();
        let status = sleeper
            .wait_timeout(Duration::from_secs(5))
            .expect("sleep exits on SIGINT");
        assert!(!status.success());
        // a leftover process is killed by `down`
        let out = lab
            .exec(
                3,
                Command::new("sh").args(["-c", "sleep 60 >/dev/null 2>&1 & echo $!"]),
            )
            .unwrap();
        let orphan: u32 = String::from_utf8_lossy(&out.stdout).trim().parse().unwrap();
        assert!(Path::new(&format!("/proc/{orphan}")).exists());

        drop(lab);
        assert!(namespaces_of(&name).is_empty());
        let state = std::env::var("LAB_STATE").unwrap_or_else(|_| "/tmp/pigeon-lab".into());
        assert!(!Path::new(&state).join(&name).exists());
        // the orphan is gone (or a zombie waiting for init to reap it)
        let stat = fs::read_to_string(format!("/proc/{orphan}/stat")).unwrap_or_default();
        assert!(stat.is_empty() || stat.contains(") Z "), "{stat}");
    }

    #[test]
    fn lab_loss_cut_and_heal() {
        let lab = Lab::up(3);
        let (ip1, ip2, ip3) = (lab.host_ip(1), lab.host_ip(2), lab.host_ip(3));
        let rx2 = lab.run_in(2, move || receiver(ip2));
        let rx3 = lab.run_in(3, move || receiver(ip3));
        let tx1 = lab.run_in(1, move || sender(ip1));
        let tx2 = lab.run_in(2, move || sender(ip2));

        lab.link_loss(3, 100);
        send_burst(&tx1, 10);
        assert_eq!(drain(&rx2).len(), 10);
        assert_eq!(drain(&rx3).len(), 0);
        lab.link_loss(3, 0);

        lab.loss(1, 100);
        send_burst(&tx1, 10);
        assert_eq!(drain(&rx2).len(), 0);
        assert_eq!(drain(&rx3).len(), 0);
        lab.loss(1, 0);

        lab.cut(2);
        send_burst(&tx1, 10);
        send_burst(&tx2, 10); // sends succeed, nothing arrives
        assert_eq!(drain(&rx2).len(), 0);
        assert_eq!(drain(&rx3).len(), 10, "only host 1's");
        lab.heal(2);
        send_burst(&tx1, 10);
        assert_eq!(drain(&rx2).len(), 10);
        assert_eq!(drain(&rx3).len(), 10);
    }

    #[test]
    fn loopback_netns_redis_restart() {
        let url = in_loopback_netns(|| {
            // the namespace is private: nothing but lo
            let links = run_ok(Command::new("ip").args(["-o", "link", "show"]));
            let links = String::from_utf8_lossy(&links.stdout).into_owned();
            assert_eq!(links.lines().count(), 1, "{links}");
            assert!(links.contains("lo:") && links.contains("UP"), "{links}");

            let mut redis = RedisServer::start(6390);
            assert!(redis.ping());
            let pid = redis.pid().unwrap();
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, 6390));
            let set = b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n";
            assert_eq!(
                redis_raw(addr, set, Duration::from_secs(2)).unwrap(),
                b"+OK\r\n"
            );

            redis.stop();
            assert!(!redis_ping(6390));
            assert!(redis.pid().is_none());
            redis.stop(); // idempotent

            // restarted from another thread: still in the same namespace
            std::thread::scope(|s| s.spawn(|| redis.restart()).join().unwrap());
            assert!(redis_ping(6390));
            assert_ne!(redis.pid().unwrap(), pid);
            let get = b"*2\r\n$3\r\nGET\r\n$1\r\nk\r\n";
            assert_eq!(
                redis_raw(addr, get, Duration::from_secs(2)).unwrap(),
                b"$-1\r\n",
                "no persistence"
            );
            redis.url()
        });
        assert_eq!(url, "redis://127.0.0.1:6390/0");
        // each loopback namespace is private
        assert!(!in_loopback_netns(|| redis_ping(6390)));
    }

    #[test]
    fn in_loopback_netns_propagates_panics() {
        let result = std::panic::catch_unwind(|| in_loopback_netns(|| panic!("boom")));
        let panic = result.unwrap_err();
        assert_eq!(panic.downcast_ref::<&str>(), Some(&"boom"));
    }

    #[test]
    fn slips_tree_layout_and_argv() {
        let tree = SlipsTree::new();
        let root = tree.root();
        assert_eq!(
            fs::read_to_string(root.join("VERSION")).unwrap(),
            "1.1.21\n"
        );
        assert!(tree.binary().is_absolute());
        let meta = fs::metadata(tree.binary()).unwrap();
        assert!(std::os::unix::fs::PermissionsExt::mode(&meta.permissions()) & 0o111 != 0);
        assert_eq!(
            meta.len(),
            fs::metadata(env!("CARGO_BIN_EXE_pigeon")).unwrap().len()
        );
        assert!(tree.runtime_dir().is_dir());
        assert!(tree.log_path().parent().unwrap().is_dir());
        assert_eq!(
            tree.argv(Ipv4Addr::new(10, 77, 0, 1), 32768, 6379)
                .join(" "),
            "-port 32768 -host 10.77.0.1 -key-file pigeon.keys --redis-db localhost:6379 \
             -redis-channel-pygo p2p_pygo -redis-channel-gopy p2p_gopy"
        );
        let cmd = tree
            .command(Ipv4Addr::LOCALHOST, 40000, 6390, &["-x"])
            .unwrap();
        assert_eq!(cmd.get_program(), tree.binary().as_os_str());
        assert_eq!(cmd.get_current_dir(), Some(tree.runtime_dir().as_path()));
        assert_eq!(cmd.get_args().last(), Some(OsStr::new("-x")));
    }

    /// The Pigeon runs where and how Slips would run it: in the lab host,
    /// with the absolute binary path as argv[0], cwd = the runtime dir and
    /// stdout into p2p.log; SIGINT reaches it.
    #[test]
    fn slips_tree_runs_the_pigeon_in_a_lab_host() {
        let lab = Lab::up(1);
        let tree = SlipsTree::new();
        let mut pigeon = tree.spawn_in_lab(&lab, 1, 40001).expect("spawn the pigeon");
        let pid = pigeon.pid();
        let deadline = Instant::now() + Duration::from_secs(5);
        let cmdline = loop {
            let cmdline = fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            if !cmdline.is_empty() || Instant::now() > deadline {
                break cmdline;
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        let argv: Vec<String> = cmdline
            .split(|b| *b == 0)
            .filter(|a| !a.is_empty())
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect();
        let mut want = vec![tree.binary().to_string_lossy().into_owned()];
        want.extend(tree.argv(lab.host_ip(1), 40001, LAB_REDIS_PORT));
        assert_eq!(argv, want, "stderr: {}", tree.read_stderr());
        assert_eq!(
            fs::read_link(format!("/proc/{pid}/cwd")).unwrap(),
            tree.runtime_dir().canonicalize().unwrap()
        );
        let out = run_ok(Command::new("ip").args(["netns", "identify", &pid.to_string()]));
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), lab.netns(1));

        pigeon.sigint().unwrap();
        let status = pigeon.wait_timeout(Duration::from_secs(10));
        assert!(
            status.is_some(),
            "the pigeon ignored SIGINT; log:\n{}",
            tree.read_log()
        );
        // whatever it printed went to p2p.log / pigeon.stderr, not here
        assert!(tree.log_path().exists() && tree.stderr_path().exists());
    }
}
