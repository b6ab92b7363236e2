//! The harness itself (`testkit::lab`): labs come up and go away
//! completely, hosts reach each other by multicast, loss and partitions
//! work, Redis servers restart in place, and the pigeon runs from a Slips
//! tree exactly as Slips runs it.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use socket2::{Domain, Protocol, Socket, Type};
use std::ffi::OsStr;
use std::fs;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};
use testkit::lab::{
    LAB_REDIS_PORT, Lab, RedisServer, SlipsTree, in_loopback_netns, redis_ping, redis_raw, run_ok,
};

/// The pigeons' group and port.
const GROUP: Ipv4Addr = *testkit::rogue::GROUP.ip();
const GROUP_PORT: u16 = testkit::rogue::GROUP.port();

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
    let out = run_ok(Command::new("ip").args(["netns", "identify", &sleeper.pid().to_string()]));
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
