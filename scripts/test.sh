#!/usr/bin/env bash
# test.sh: every check CI runs, in order; exits non-zero on the first failure.
#
#   scripts/test.sh            formatting, clippy, fuzz targets compile, all
#                              tests, installer test
#   scripts/test.sh install    only the installer test (a fake Slips tree)
#
# Run as root (`sudo scripts/test.sh`): the integration tests build simulated
# LANs of network namespaces (scripts/lab.sh) with a redis-server in each.
# Missing Debian packages (redis-server, nftables, iproute2) are installed
# with apt-get. Nothing touches this machine's own network namespace.
#
# Environment: TEST_TIMEOUT_MIN (default 40): bound of the test run itself,
# after the build, so a hung test cannot eat the CI budget. CI=true or
# LONG_TESTS=1 also runs the 5-minute Redis outage test. PIGEON_SLIPS_TREE
# (default ../shared/slips-1.1.21): the Slips 1.1.21 tree that the real-Slips
# tests run; without it they skip and say so.

set -euo pipefail

# A shell started in the background without job control (`cmd &` in a
# script, nohup) hands SIGINT and SIGQUIT to its children ignored, and bash
# cannot undo that (bash(1), SIGNALS: "Signals ignored upon entry to the
# shell cannot be trapped or reset"). The tests stop the processes they
# start with SIGINT, as Slips stops the Pigeon: start again with the
# default handling (coreutils env(1) --default-signal, 8.31 and later).
if [ -z "${PIGEON_TEST_SIGNALS_RESET:-}" ] && env --default-signal=INT true 2>/dev/null; then
    export PIGEON_TEST_SIGNALS_RESET=1
    exec env --default-signal=INT,QUIT bash "$0" "$@"
fi

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
TEST_TIMEOUT_MIN=${TEST_TIMEOUT_MIN:-40}
# the Slips 1.1.21 tree the real-Slips tests run (and the fixes are checked
# against); they skip, saying so, without it
SLIPS_TREE=${PIGEON_SLIPS_TREE:-$ROOT/../shared/slips-1.1.21}
T0=$(date +%s)
declare -a SUMMARY=()

die() {
    echo "test.sh: FAILED: $*" >&2
    exit 1
}

# step NAME CMD...: run CMD, time it, stop everything if it fails.
step() {
    local name=$1 t rc=0
    shift
    echo
    echo "==> $name"
    t=$(date +%s)
    "$@" || rc=$?
    t=$(($(date +%s) - t))
    if [ "$rc" -ne 0 ]; then
        die "$name (exit $rc, after ${t}s)"
    fi
    SUMMARY+=("$(printf '%5ss  %s' "$t" "$name")")
}

install_missing() {
    local pkgs=()
    command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || pkgs+=(redis-tools)
    command -v nft >/dev/null 2>&1 || pkgs+=(nftables)
    command -v ip >/dev/null 2>&1 || pkgs+=(iproute2)
    command -v patch >/dev/null 2>&1 || pkgs+=(patch)
    if [ ${#pkgs[@]} -eq 0 ]; then
        echo "redis-server, redis-cli, nft and ip are present"
        return 0
    fi
    if [ "$(id -u)" -ne 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "missing: ${pkgs[*]}; install them (Debian: apt-get install ${pkgs[*]})" >&2
        return 1
    fi
    echo "installing ${pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
        apt-get update -qq
    fi
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null; }
}

# Optional: Go lets the installer test build the shim exactly as a Slips
# self-update would (`go build`); without it that one check is skipped.
install_go_if_possible() {
    command -v go >/dev/null 2>&1 && return 0
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            golang-go >/dev/null 2>&1 || echo "golang-go not installable: the shim build check will be skipped"
    fi
    return 0
}

# find_cargo: under sudo, cargo usually lives in the invoking user's
# ~/.cargo/bin, which sudo's PATH leaves out.
find_cargo() {
    local home
    if ! command -v cargo >/dev/null 2>&1; then
        for home in "${HOME:-}" "$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)"; do
            if [ -n "$home" ] && [ -x "$home/.cargo/bin/cargo" ]; then
                export PATH="$home/.cargo/bin:$PATH"
                export CARGO_HOME=${CARGO_HOME:-$home/.cargo}
                export RUSTUP_HOME=${RUSTUP_HOME:-$home/.rustup}
                break
            fi
        done
    fi
    command -v cargo >/dev/null 2>&1 || {
        echo "cargo not found: install Rust 1.88 or newer (https://rustup.rs)" >&2
        return 1
    }
    # rustfmt and clippy are rustup components; without rustup there is
    # nothing to add them with.
    if ! cargo fmt --version >/dev/null 2>&1 || ! cargo clippy --version >/dev/null 2>&1; then
        command -v rustup >/dev/null 2>&1 && rustup component add rustfmt clippy
    fi
    cargo --version
    cargo fmt --version
    cargo clippy --version
}

# Files written as root in a user's checkout go back to the checkout's owner.
restore_ownership() {
    local owner
    owner=$(stat -c %u:%g "$ROOT")
    if [ "$owner" != "0:0" ] && [ -d "$ROOT/target" ]; then
        chown -R "$owner" "$ROOT/target" 2>/dev/null || true
    fi
}

# ------------------------------------------------------------------ tests

lab_namespaces() {
    ip netns list 2>/dev/null | awk '{print $1}' | sort
}

# run_tests [CARGO TEST ARGS...]: the tests (all targets by default), then
# a check that they left no lab behind.
run_tests() {
    local before after leaked ns lab
    export RUST_BACKTRACE=1
    # (step runs this in an `||` context, where `set -e` does not apply)
    cargo test --locked --all-targets --no-run || return
    before=$(lab_namespaces)
    local rc=0
    timeout --kill-after=30 "${TEST_TIMEOUT_MIN}m" cargo test --locked "${@:---all-targets}" || rc=$?
    [ "$rc" -eq 124 ] && echo "the tests did not finish within $TEST_TIMEOUT_MIN minutes" >&2
    # every lab a test makes must be gone. The harness names labs
    # pg<pid>_<n>; one whose test process has exited is a leftover: remove
    # it and fail. Anything else may belong to someone else: leave it.
    after=$(lab_namespaces)
    leaked=""
    for ns in $(comm -13 <(echo "$before") <(echo "$after")); do
        lab=${ns%-*}
        if [[ "$lab" =~ ^pg([0-9]+)_[0-9]+$ ]] && [ ! -e "/proc/${BASH_REMATCH[1]}" ]; then
            leaked="$leaked $lab"
        fi
    done
    leaked=$(tr ' ' '\n' <<<"$leaked" | sort -u | grep . || true)
    if [ -n "$leaked" ]; then
        echo "labs left behind by the tests (now removed):" "$(tr "\n" " " <<<"$leaked")" >&2
        for lab in $leaked; do
            "$ROOT/scripts/lab.sh" down "$lab" >/dev/null 2>&1 || true
        done
        [ "$rc" -ne 0 ] || rc=1
    fi
    return "$rc"
}

run_unit_tests_only() {
    cargo test --locked --lib --bins || return
    echo >&2
    echo "test.sh: not root: only the unit tests ran. The integration tests need" >&2
    echo "network namespaces (root); run the full suite with: sudo scripts/test.sh" >&2
    return 1
}

# ------------------------------------------------------------------ installer test

# test_installer BINARY: install-into-slips.sh on a fake Slips tree with the
# Go Pigeon's layout; checks backups, the Go build guard, idempotence and
# --uninstall. If Go is installed, also Slips' own `go build` after a
# self-update.
test_installer() {
    local bin=$1 t p inst out
    inst=$ROOT/scripts/install-into-slips.sh
    t=$(mktemp -d)
    INSTALL_TMP=$t
    p=$t/slips/p2p4slips
    mkdir -p "$t/slips/modules/p2p_trust" "$t/slips/config" "$p/peer" "$p/vendor/x"
    echo 1.1.21 >"$t/slips/VERSION"
    printf 'local_p2p:\n   create_p2p_logfile : False\n   use_p2p : True\n' >"$t/slips/config/slips.yaml"
    printf 'package main\n\nimport "fmt"\n\nfunc main() { fmt.Println("go pigeon") }\n' >"$p/main.go"
    printf 'package main\n' >"$p/flags.go"
    printf 'module github.com/stratosphereips/p2p4slips\n\ngo 1.16\n' >"$p/go.mod"
    echo "fake sums" >"$p/go.sum"
    echo "package peer" >"$p/peer/peer.go"
    echo "# vendored" >"$p/vendor/modules.txt"
    printf '\177ELF\002 fake Go Pigeon, Go build ID: "abc"\n' >"$p/p2p4slips"
    chmod 755 "$p/p2p4slips"
    cp "$p/p2p4slips" "$t/go-pigeon"

    check() { [ "$@" ] || die "installer test: [ $* ] is false"; }
    same() { cmp -s "$1" "$2" || die "installer test: $1 differs from $2"; }

    # the fixes need the real Slips files: this tree has none, so the
    # installer refuses, names the first file, and changes nothing
    if "$inst" --binary "$bin" "$t/slips" >"$t/out0" 2>&1; then
        die "installer test: the fixes were applied to a tree without Slips' files"
    fi
    grep -q "refusing to apply the Slips fixes: .*scan_detections_db.py does not exist" "$t/out0" ||
        { cat "$t/out0"; die "installer test: the refusal does not name the file"; }
    same "$t/go-pigeon" "$p/p2p4slips"
    check -f "$p/main.go"

    "$inst" --binary "$bin" --no-fixes "$t/slips" >"$t/out1" || { cat "$t/out1"; die "install failed"; }
    grep -q -- "--no-fixes: Slips' own files left as they are" "$t/out1" || die "installer test: --no-fixes not reported"
    same "$bin" "$p/p2p4slips"
    same "$bin" "$p/pigeon"
    same "$t/go-pigeon" "$(echo "$p"/p2p4slips.go-pigeon.bak-*)"
    same "$ROOT/pigeon.toml" "$p/pigeon.toml"
    for f in main.go flags.go go.mod go.sum vendor/modules.txt; do
        check -f "$p/go-pigeon-src/$f"
    done
    check ! -e "$p/main.go"
    check -f "$p/peer/peer.go"
    grep -q pigeon-shim-v1 "$p/go.mod" || die "installer test: go.mod is not the shim's"
    grep -q 'syscall.Exec' "$p/pigeon_shim.go" || die "installer test: no shim source"
    "$p/p2p4slips" -help >/dev/null 2>&1 || die "installer test: installed binary does not run"
    grep -q "use_p2p is on" "$t/out1" || die "installer test: did not see use_p2p : True"

    # again: nothing moves, no new backup, the user's pigeon.toml is kept
    echo "# mine" >>"$p/pigeon.toml"
    cp "$p/pigeon.toml" "$t/mine.toml"
    "$inst" --binary "$bin" --no-fixes "$t/slips" >"$t/out2" || { cat "$t/out2"; die "second install failed"; }
    check "$(find "$p" -maxdepth 1 -name '*.bak-*' | wc -l)" -eq 1
    check "$(find "$p" -maxdepth 1 -name 'go-pigeon-src*' | wc -l)" -eq 1
    same "$t/mine.toml" "$p/pigeon.toml"
    same "$bin" "$p/p2p4slips"
    grep -q "already this pigeon" "$t/out2" || die "installer test: second run reinstalled"

    if command -v go >/dev/null 2>&1; then
        # a Slips self-update: Slips runs `go build -buildvcs=false` here
        (cd "$p" && GOFLAGS="" GOPROXY=off GOCACHE="$t/gocache" GOPATH="$t/gopath" go build -buildvcs=false) ||
            die "installer test: the shim does not build"
        grep -qa pigeon-shim-v1 "$p/p2p4slips" || die "installer test: go build did not build the shim"
        out=$("$p/p2p4slips" -help 2>&1) || die "installer test: the shim did not run pigeon: $out"
        case "$out" in
            *-key-file*) ;;
            *) die "installer test: the shim's output is not pigeon's usage: $out" ;;
        esac
        # reinstalling replaces the built shim without keeping it
        "$inst" --binary "$bin" --no-fixes "$t/slips" >"$t/out3" || die "install over the shim failed"
        same "$bin" "$p/p2p4slips"
        check "$(find "$p" -maxdepth 1 -name '*.bak-*' | wc -l)" -eq 1
        echo "Go found: Slips' go build after a self-update yields the shim, which runs pigeon"
    else
        echo "Go not installed: skipped building the shim the way Slips would"
    fi

    "$inst" --uninstall "$t/slips" >"$t/out4" || { cat "$t/out4"; die "uninstall failed"; }
    same "$t/go-pigeon" "$p/p2p4slips"
    for f in main.go flags.go go.sum vendor/modules.txt; do
        check -f "$p/$f"
    done
    grep -q pigeon-shim-v1 "$p/go.mod" && die "installer test: the shim's go.mod is still there"
    check ! -e "$p/pigeon"
    check ! -e "$p/go-pigeon-src"
    check ! -e "$p/pigeon_shim.go"
    echo "installer: install, reinstall, uninstall all as expected"
    rm -rf "$t"
    INSTALL_TMP=""
    test_installer_fixes "$bin"
}

# test_installer_fixes BINARY: the Slips fixes on a tree made of the real
# Slips 1.1.21 files they patch (from ../shared/slips-1.1.21; skipped, with
# a message, without it): applied, idempotent, refused for another VERSION
# or a changed file (naming it, changing nothing), undone by --uninstall.
test_installer_fixes() {
    local bin=$1 t s src inst p rel
    inst=$ROOT/scripts/install-into-slips.sh
    src=$SLIPS_TREE
    if [ ! -f "$src/VERSION" ]; then
        echo "SKIP installer fixes test: no Slips tree at $src (the fixes are checked against its files)"
        return 0
    fi
    check() { [ "$@" ] || die "installer fixes test: [ $* ] is false"; }
    t=$(mktemp -d)
    INSTALL_TMP=$t
    s=$t/slips
    mkdir -p "$s/modules/p2p_trust" "$s/config"
    cp "$src/VERSION" "$s/VERSION"
    for p in "$ROOT"/slips-fixes/1.1.21/*.patch; do
        rel=$(sed -n 's/^File: //p' "$p")
        mkdir -p "$(dirname "$s/$rel")"
        cp "$src/$rel" "$s/$rel"
    done
    cp -a "$s" "$t/orig"

    # another VERSION: refused before anything changes
    echo 1.1.22 >"$s/VERSION"
    if "$inst" --binary "$bin" "$s" >"$t/o1" 2>&1; then die "installer fixes test: applied to Slips 1.1.22"; fi
    grep -q "no fixes for Slips 1.1.22" "$t/o1" || { cat "$t/o1"; die "installer fixes test: wrong refusal for 1.1.22"; }
    check ! -e "$s/p2p4slips/p2p4slips"
    cp "$t/orig/VERSION" "$s/VERSION"

    # a file that is not the one the patch expects: refused, named
    echo "# local change" >>"$s/modules/p2p_trust/trust/trustdb.py"
    if "$inst" --binary "$bin" "$s" >"$t/o2" 2>&1; then die "installer fixes test: applied over a changed file"; fi
    grep -q "modules/p2p_trust/trust/trustdb.py is not the Slips 1.1.21 file" "$t/o2" ||
        { cat "$t/o2"; die "installer fixes test: the refusal does not name trustdb.py"; }
    check ! -e "$s/p2p4slips/p2p4slips"
    diff -r -x trustdb.py "$t/orig" "$s" >/dev/null || die "installer fixes test: a refused install changed files"
    cp "$t/orig/modules/p2p_trust/trust/trustdb.py" "$s/modules/p2p_trust/trust/trustdb.py"

    # applied; the result is each patch applied to the original
    "$inst" --binary "$bin" "$s" >"$t/o3" 2>&1 || { cat "$t/o3"; die "installer fixes test: install failed"; }
    check "$(grep -c 'Slips fix .*: applied to' "$t/o3")" -eq 6
    for p in "$ROOT"/slips-fixes/1.1.21/*.patch; do
        rel=$(sed -n 's/^File: //p' "$p")
        check "$(sha256sum "$s/$rel" | cut -d' ' -f1)" = "$(sed -n 's/^Sha256-After: //p' "$p")"
        cmp -s "$t/orig/$rel" "$s/.pigeon-fixes/orig/$rel" || die "installer fixes test: no backup of $rel"
    done
    # again: nothing to do
    "$inst" --binary "$bin" "$s" >"$t/o4" 2>&1 || { cat "$t/o4"; die "installer fixes test: second install failed"; }
    check "$(grep -c 'already applied' "$t/o4")" -eq 6

    # a patched file changed since: --uninstall refuses, names it
    cp "$s/modules/p2p_trust/utils/utils.py" "$t/utils.py"
    echo "# local change" >>"$s/modules/p2p_trust/utils/utils.py"
    if "$inst" --uninstall "$s" >"$t/o5" 2>&1; then die "installer fixes test: uninstalled over a changed file"; fi
    grep -q "modules/p2p_trust/utils/utils.py changed since" "$t/o5" ||
        { cat "$t/o5"; die "installer fixes test: the refusal does not name utils.py"; }
    check -e "$s/p2p4slips/p2p4slips"
    cp "$t/utils.py" "$s/modules/p2p_trust/utils/utils.py"

    # --uninstall: Slips' files are the originals again
    "$inst" --uninstall "$s" >"$t/o6" 2>&1 || { cat "$t/o6"; die "installer fixes test: uninstall failed"; }
    check "$(grep -c 'undone' "$t/o6")" -eq 6
    check ! -e "$s/.pigeon-fixes"
    rm -rf "$s/p2p4slips"
    diff -r "$t/orig" "$s" || die "installer fixes test: --uninstall did not restore Slips' files"
    echo "installer: Slips fixes applied, idempotent, refused for another VERSION or a changed file, undone"
    rm -rf "$t"
    INSTALL_TMP=""
}

# ------------------------------------------------------------------ real Slips

# real_slips_env: the venv and Redis 7.4 that the real-Slips tests need
# (scripts/slips-env.sh), when the Slips tree is there to run.
real_slips_env() {
    if [ ! -f "$SLIPS_TREE/slips.py" ]; then
        echo "SKIP real-Slips environment: no Slips tree at $SLIPS_TREE (the real_slips tests will skip too)"
        return 0
    fi
    "$ROOT/scripts/slips-env.sh" >/dev/null
}

# ------------------------------------------------------------------ main

INSTALL_TMP=""
on_exit() {
    [ -z "$INSTALL_TMP" ] || echo "test.sh: the installer test's files are in $INSTALL_TMP" >&2
    restore_ownership
}
trap on_exit EXIT

case "${1:-all}" in
    install)
        step "tools" find_cargo
        step "build (debug)" cargo build --locked --bin pigeon
        step "install-into-slips.sh on a fake Slips tree" test_installer "$ROOT/target/debug/pigeon"
        ;;
    all)
        step "system packages" install_missing
        step "Go (optional)" install_go_if_possible
        step "Rust toolchain" find_cargo
        if [ "$(id -u)" -eq 0 ]; then
            step "real-Slips environment (scripts/slips-env.sh)" real_slips_env
        fi
        step "cargo fmt --check" cargo fmt --all -- --check
        step "cargo clippy --workspace --all-targets -- -D warnings" \
            cargo clippy --locked --workspace --all-targets -- -D warnings
        # the fuzz targets (a crate of its own) must keep compiling against
        # the library; checked without libFuzzer, so neither cargo-fuzz, a
        # nightly toolchain nor a C++ compiler is needed. If pigeon's
        # dependencies changed, refresh fuzz/Cargo.lock with the same
        # command without --locked.
        step "fuzz targets compile (cargo check of fuzz/)" \
            cargo check --locked --manifest-path fuzz/Cargo.toml --no-default-features \
            --bins --target-dir "$ROOT/target"
        if [ "$(id -u)" -eq 0 ]; then
            # the real Slips (a dozen processes per host) runs alone, after
            # the others, one test at a time, so that its load does not skew
            # their timing nor stall Slips itself
            # (--skip reaches every test binary: the benches, whose lab
            # driver takes no test arguments, run in a step of their own)
            step "cargo test (unit and integration)" \
                run_tests --lib --bins --tests -- --skip real_slips::
            step "cargo test --benches (the benches build and their checks pass)" \
                run_tests --benches
            step "real Slips 1.1.21 on a lab LAN (tests/integration/real_slips.rs)" \
                run_tests --test integration real_slips:: -- --nocapture --test-threads=1
            if [ "${CI:-}" = true ] || [ "${LONG_TESTS:-}" = 1 ]; then
                # Redis down for 5 minutes during traffic, nothing lost
                # (about 5.5 min; skipped in quick local runs).
                step "long test: 5-minute Redis outage" \
                    cargo test --locked --test integration -- --ignored --exact \
                    redis_bridge::outage_of_5_minutes
            fi
        else
            step "cargo test (unit only: not root)" run_unit_tests_only
        fi
        step "install-into-slips.sh on a fake Slips tree" test_installer "$ROOT/target/debug/pigeon"
        ;;
    -h | --help)
        sed -n '2,17p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    *)
        echo "usage: scripts/test.sh [all|install]" >&2
        exit 2
        ;;
esac

echo
echo "==> all passed in $(($(date +%s) - T0))s"
printf '%s\n' "${SUMMARY[@]}"
