//! pigeon's dev-only crate: everything the integration tests
//! (`tests/integration/`), the lab bench (`benches/lab/`) and the demo
//! (`scripts/demo.sh`, through the `pigeon-slips` binary) share, written
//! once:
//!
//! * [`lab`]: private network namespaces, the simulated LAN of
//!   `scripts/lab.sh` ([`lab::Lab`]), processes stopped by PID
//!   ([`lab::LabChild`]), Redis servers, and a Slips-shaped directory from
//!   which the pigeon is started exactly as Slips starts it
//!   ([`lab::SlipsTree`], Slips' argv in one place);
//! * [`slips`]: Slips' side of the Redis contract: the bytes Slips
//!   publishes ([`slips::build`]), the one checker of what Slips accepts
//!   ([`slips::check`]), and a subscriber that checks every message at
//!   receipt ([`slips::side`]);
//! * [`world`]: lab hosts each with a Slips tree, a Slips side and a
//!   pigeon, for end-to-end scenarios;
//! * [`rogue`]: an attacker that joins real pigeons (protocol v2);
//! * [`runtime`]: a tokio runtime on a thread of its own, for tests of
//!   pigeon's async adapters;
//! * [`wait`]: bounded polls, log tails, today's date.
//!
//! It is test code: set-up failures panic with a message naming what
//! failed. It is never a dependency of the pigeon binary (a
//! dev-dependency of the root crate only) and never published.

pub mod lab;
pub mod rogue;
pub mod runtime;
pub mod slips;
pub mod wait;
pub mod world;

use std::path::{Path, PathBuf};

/// The Slips release whose contract pigeon follows: the `version` Slips
/// puts in its scrolls and requires in ours, and the content of a
/// [`lab::SlipsTree`]'s `VERSION` file.
pub const SLIPS_VERSION: &str = "1.1.21";

/// Slips → pigeon channel (Slips' `-redis-channel-pygo`).
pub const PYGO: &str = "p2p_pygo";

/// pigeon → Slips channel (Slips' `-redis-channel-gopy`).
pub const GOPY: &str = "p2p_gopy";

/// The root of this repository (the testkit lives in `testkit/`).
pub fn repo_root() -> &'static Path {
    let testkit = Path::new(env!("CARGO_MANIFEST_DIR"));
    testkit.parent().unwrap_or(testkit)
}

/// Where the Slips 1.1.21 source tree is, which the real-Slips tests run
/// and the request-guard oracle imports: `PIGEON_SLIPS_TREE`, else
/// `../shared/slips-1.1.21` next to the repository (scripts/test.sh uses
/// the same rule). It may not exist: callers skip, saying so.
pub fn slips_source_tree() -> PathBuf {
    std::env::var_os("PIGEON_SLIPS_TREE")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join("../shared/slips-1.1.21"))
}

/// The `pigeon` binary of the build the running test or bench belongs to.
/// Cargo puts test and bench executables in `<target>/<profile>/deps/` and
/// the package's binaries, which it builds before running integration tests
/// and benches, in `<target>/<profile>/`. `PIGEON_BIN` overrides it.
///
/// Panics when there is no such file: nothing could be tested without it.
pub fn pigeon_binary() -> PathBuf {
    if let Some(bin) = std::env::var_os("PIGEON_BIN") {
        return PathBuf::from(bin);
    }
    let exe = std::env::current_exe().unwrap_or_else(|e| panic!("own executable: {e}"));
    let profile_dir = exe
        .parent()
        .filter(|d| d.ends_with("deps"))
        .and_then(Path::parent)
        .or_else(|| exe.parent())
        .unwrap_or_else(|| panic!("{} has no parent directory", exe.display()));
    let bin = profile_dir.join("pigeon");
    assert!(
        bin.is_file(),
        "no pigeon binary at {} (build it: cargo build --bin pigeon; or set PIGEON_BIN)",
        bin.display()
    );
    bin
}
