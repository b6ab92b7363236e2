#!/usr/bin/env bash
# demo.sh: three Slips hosts on a simulated LAN, shown step by step.
#
# Run as root on Debian (or alike): `sudo scripts/demo.sh`. It installs what
# is missing (redis-server, nftables, iproute2), builds pigeon in release
# mode, starts a 3-host LAN of network namespaces with scripts/lab.sh, and in
# each host a pigeon started exactly as Slips starts its p2p4slips, with
# `pigeon-slips` playing Slips on that host's Redis. Nothing runs in, or
# sends a packet from, this machine's own network namespace. Everything it
# starts is stopped and removed on exit, also on Ctrl-C or failure.
#
# Environment: DEMO_LAB (lab name, default "demo"), DEMO_KEEP=1 (keep the
# temporary Slips trees for inspection; the lab is always removed).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
LABSH=$ROOT/scripts/lab.sh
LAB=${DEMO_LAB:-demo}
N=3
SLIPS_VERSION=1.1.21
ASKED_IP=203.0.113.7      # TEST-NET-3: an address nobody owns
BLAMED_IP=198.51.100.23   # TEST-NET-2
WAIT=15                   # seconds: bound of every wait in the demo

TMP=""
LAB_UP=0
declare -a PIDS=()        # every background process we started
declare -A PEER_ID=()     # host number -> peer id
declare -A PIGEON=()      # host number -> pigeon PID

if [ -t 1 ]; then
    BOLD=$'\e[1m' DIM=$'\e[2m' RED=$'\e[31m' GREEN=$'\e[32m' OFF=$'\e[0m'
else
    BOLD="" DIM="" RED="" GREEN="" OFF=""
fi

say() { printf '%s\n' "$*"; }
heading() { printf '\n%s== %s ==%s\n' "$BOLD" "$*" "$OFF"; }
explain() { printf '%s%s%s\n' "$DIM" "$*" "$OFF" | fold -s -w 78; }
ok() { printf '%s[ok]%s %s\n' "$GREEN" "$OFF" "$*"; }
die() {
    printf '%sdemo: %s%s\n' "$RED" "$*" "$OFF" >&2
    exit 1
}

# ------------------------------------------------------------------ setup

[ "$(id -u)" -eq 0 ] || {
    echo "demo: must run as root (network namespaces); try: sudo $0" >&2
    exit 2
}
case "$LAB" in
    "" | *[!A-Za-z0-9_]*) die "DEMO_LAB must be letters, digits and '_'" ;;
esac

# install_missing: Debian packages for lab.sh; `apt-get update` only when
# the package lists are empty or an install fails without it.
install_missing() {
    local pkgs=()
    command -v redis-server >/dev/null 2>&1 || pkgs+=(redis-server)
    command -v redis-cli >/dev/null 2>&1 || pkgs+=(redis-tools)
    command -v nft >/dev/null 2>&1 || pkgs+=(nftables)
    command -v ip >/dev/null 2>&1 || pkgs+=(iproute2)
    [ ${#pkgs[@]} -eq 0 ] && return 0
    command -v apt-get >/dev/null 2>&1 || die "missing ${pkgs[*]} and no apt-get: install them by hand"
    say "installing ${pkgs[*]} (apt-get)"
    export DEBIAN_FRONTEND=noninteractive
    if ! compgen -G "/var/lib/apt/lists/*_Packages*" >/dev/null; then
        apt-get update -qq
    fi
    apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null ||
        { apt-get update -qq && apt-get install -y -qq --no-install-recommends "${pkgs[@]}" >/dev/null; } ||
        die "could not install ${pkgs[*]}"
}

# find_cargo: under sudo, cargo usually lives in the invoking user's
# ~/.cargo/bin, which sudo's PATH leaves out.
find_cargo() {
    command -v cargo >/dev/null 2>&1 && return 0
    local home
    for home in "${HOME:-}" "$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)"; do
        if [ -n "$home" ] && [ -x "$home/.cargo/bin/cargo" ]; then
            export PATH="$home/.cargo/bin:$PATH"
            export CARGO_HOME=${CARGO_HOME:-$home/.cargo}
            export RUSTUP_HOME=${RUSTUP_HOME:-$home/.rustup}
            return 0
        fi
    done
    die "cargo not found: install Rust 1.88 or newer (https://rustup.rs)"
}

# Files written as root in a user's checkout go back to the checkout's owner.
restore_ownership() {
    local owner
    owner=$(stat -c %u:%g "$ROOT")
    [ "$owner" = "0:0" ] && return 0
    [ -d "$ROOT/target" ] && chown -R "$owner" "$ROOT/target" 2>/dev/null || true
}

cleanup() {
    local rc=$? pid _
    trap - EXIT INT TERM
    set +e
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null
    done
    for _ in $(seq 1 40); do
        local alive=0
        for pid in "${PIDS[@]}"; do
            kill -0 "$pid" 2>/dev/null && alive=1
        done
        [ "$alive" -eq 0 ] && break
        sleep 0.05
    done
    for pid in "${PIDS[@]}"; do
        kill -KILL "$pid" 2>/dev/null
    done
    if [ "$LAB_UP" -eq 1 ]; then
        "$LABSH" down "$LAB" >/dev/null 2>&1 || echo "demo: could not remove lab $LAB" >&2
    fi
    if [ -n "$TMP" ]; then
        if [ "${DEMO_KEEP:-0}" = 1 ] && [ "$rc" -eq 0 ]; then
            echo "demo: kept the Slips trees in $TMP"
        else
            rm -rf "$TMP"
        fi
    fi
    restore_ownership
    if [ "$rc" -ne 0 ]; then
        printf '%sdemo: FAILED (exit %s); everything started was stopped%s\n' "$RED" "$rc" "$OFF" >&2
    fi
    exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

heading "Preparing"
install_missing
find_cargo
say "building pigeon and pigeon-slips (cargo build --release --workspace --bins)"
# pigeon-slips is a binary of the dev-only testkit crate (testkit/)
(cd "$ROOT" && cargo build --release --workspace --bins --quiet)
BIN=$ROOT/target/release/pigeon
PS=$ROOT/target/release/pigeon-slips
[ -x "$BIN" ] && [ -x "$PS" ] || die "build produced no binaries"
START=$(date +%s)

if ip netns list 2>/dev/null | grep -qE "^$LAB-(br|h[0-9]+)( |$)"; then
    die "a lab named '$LAB' already exists; remove it with: $LABSH down $LAB (or set DEMO_LAB)"
fi
TMP=$(mktemp -d /tmp/pigeon-demo.XXXXXX)
"$LABSH" up "$LAB" "$N" >/dev/null
LAB_UP=1

# in_host I CMD...: run CMD inside lab host I.
in_host() {
    local i=$1
    shift
    "$LABSH" exec "$LAB" "$i" "$@"
}

# label [pad]: shorten peer ids and name their hosts, for reading only;
# with "pad", keep the id's width so that table columns stay aligned.
label() {
    local args=() i short
    for i in "${!PEER_ID[@]}"; do
        short="${PEER_ID[$i]:0:12}…(h$i)"
        if [ "${1:-}" = pad ]; then
            short=$(printf '%-*s' $((${#PEER_ID[$i]} + 2)) "$short") # "…" is 3 bytes
        fi
        args+=(-e "s/${PEER_ID[$i]}/$short/g")
    done
    if [ ${#args[@]} -eq 0 ]; then cat; else sed "${args[@]}"; fi
}

# show PREFIX FILE [pad]: print FILE indented, with peer ids labelled.
show() {
    label "${3:-}" <"$2" | sed "s/^/  $1 | /"
}

# bg NAME I CMD...: start CMD inside host I in the background, output to
# $TMP/NAME.out; the PID is in $BG.
bg() {
    local name=$1 i=$2
    shift 2
    # a simple command: its PID is the tool's own (lab.sh and ip exec it)
    "$LABSH" exec "$LAB" "$i" "$@" >"$TMP/$name.out" 2>&1 &
    BG=$!
    PIDS+=("$BG")
}

# wait_ok PID NAME: wait for a background command (all are bounded by
# their own --seconds) and fail the demo if it failed.
wait_ok() {
    local rc=0
    wait "$1" || rc=$?
    if [ "$rc" -ne 0 ]; then
        show "$2" "$TMP/$2.out" >&2
        die "$2 failed (exit $rc)"
    fi
}

# slips_tree I: lay out host I's Slips tree like a Slips checkout.
slips_tree() {
    local t=$TMP/h$1
    mkdir -p "$t/p2p4slips" "$t/permanent/p2p_trust_runtime" "$t/output/p2p_trust"
    echo "$SLIPS_VERSION" >"$t/VERSION"
    cp "$BIN" "$t/p2p4slips/p2p4slips"
    cat >"$t/permanent/p2p_trust_runtime/pigeon.toml" <<'EOF'
# Demo only. By default pigeon drops blames from peers: Slips 1.1.21 blocks
# a blamed IP without any check (evidence_handler_worker.py), so one lying peer
# could get any address blocked. The demo forwards them to show one.
[slips]
blames = "all"
EOF
}

# free_port I: a random TCP port in 32768..60999 that nothing in host I
# listens on (Slips passes a free port as -port).
free_port() {
    local p _
    for _ in $(seq 1 20); do
        p=$(shuf -i 32768-60999 -n 1)
        if [ -z "$(in_host "$1" ss -Htuln "sport = :$p")" ]; then
            echo "$p"
            return 0
        fi
    done
    die "no free port in host $1"
}

start_pigeon() {
    local i=$1 t=$TMP/h$1 port
    port=$(free_port "$i")
    # argv, cwd and stdout exactly as Slips 1.1.21 (p2p_trust.py); stderr is
    # Slips' console, kept in a file here.
    (
        cd "$t/permanent/p2p_trust_runtime"
        exec "$LABSH" exec "$LAB" "$i" "$t/p2p4slips/p2p4slips" \
            -port "$port" -host "10.77.0.$i" -key-file pigeon.keys \
            --redis-db localhost:6379 -redis-channel-pygo p2p_pygo -redis-channel-gopy p2p_gopy \
            >>"$t/output/p2p_trust/p2p.log" 2>"$TMP/h$i.stderr"
    ) &
    PIGEON[$i]=$!
    PIDS+=("$!")
    say "  host $i: started $t/p2p4slips/p2p4slips -port $port -host 10.77.0.$i ... (pid ${PIGEON[$i]})"
}

pigeon_failed() {
    local i=$1
    echo "--- host $i: stderr" >&2
    cat "$TMP/h$i.stderr" >&2 || true
    echo "--- host $i: last lines of p2p.log" >&2
    tail -n 20 "$TMP/h$i/output/p2p_trust/p2p.log" >&2 || true
    die "$2"
}

# ------------------------------------------------------------------ the story

heading "A LAN of three Slips hosts"
explain "Three network namespaces on one bridge stand for three machines: 10.77.0.1, \
10.77.0.2 and 10.77.0.3, each with its own Redis, as each Slips has. In each, \
a Slips-shaped folder holds VERSION ($SLIPS_VERSION) and p2p4slips/p2p4slips \
(our pigeon), and the pigeon is started exactly as Slips starts it: same \
arguments, working directory permanent/p2p_trust_runtime, stdout appended to \
output/p2p_trust/p2p.log. Here pigeon-slips plays Slips on each host's Redis."
say ""
explain "Demo setting: each runtime folder has a pigeon.toml with [slips] \
blames = \"all\". By default pigeon DROPS blames from peers: Slips $SLIPS_VERSION \
blocks a blamed IP without any check. It is turned on \
here only so step 3 can show one."
for i in $(seq 1 "$N"); do
    slips_tree "$i"
done
for i in $(seq 1 "$N"); do
    start_pigeon "$i"
done

heading "Step 1: discovery"
explain "Slips reads the key 'multiAddress' from Redis about 2 s after starting \
the pigeon and prints it. The pigeons find each other by signed UDP \
multicast announcements (group 239.255.112.103:47474, TTL 1) and tell their \
Slips about every peer with a peer_update message."
for i in $(seq 1 "$N"); do
    addr=""
    for _ in $(seq 1 50); do
        kill -0 "${PIGEON[$i]}" 2>/dev/null || pigeon_failed "$i" "the pigeon of host $i exited at start"
        addr=$(in_host "$i" redis-cli --raw get multiAddress 2>/dev/null || true)
        [ -n "$addr" ] && break
        sleep 0.1
    done
    [ -n "$addr" ] || pigeon_failed "$i" "host $i: no multiAddress in Redis after 5 s"
    PEER_ID[$i]=${addr##*/}
    say "  host $i: Your Multiaddress Is: $addr"
done
say ""
explain "Peer ids are shortened below and tagged with their host, e.g. (h2)."
for i in $(seq 1 "$N"); do
    say ""
    say "  host $i: the peer_updates its Slips received (pigeon-slips peers --expect 2)"
    rc=0
    in_host "$i" "$PS" peers --expect $((N - 1)) --seconds "$WAIT" >"$TMP/peers$i.out" 2>&1 || rc=$?
    show "h$i" "$TMP/peers$i.out" pad
    [ "$rc" -eq 0 ] || die "host $i's Slips did not hear of both other peers within $WAIT s"
done
ok "every Slips knows the two other peers, with their IP addresses"

heading "Step 2: host 1's Slips asks about $ASKED_IP"
explain "When Slips sees a new IP it asks the network: it publishes a request \
to '*' (every peer). Host 2's Slips has evidence about the IP (its cache, \
Redis DB 1, holds a threat level and a confidence, as Slips writes them), so \
its pigeon hands it the request; it answers with a report addressed to host \
1's peer id only, exactly as Slips does (pigeon-slips respond). Host 3's Slips \
knows nothing about the IP: Slips 1.1.21 would crash answering, so host 3's \
pigeon keeps the request from it (the request guard)."
in_host 2 redis-cli -n 1 HSET IPsInfo:threat_level "$ASKED_IP" high >/dev/null
in_host 2 redis-cli -n 1 HSET IPsInfo:confidence "$ASKED_IP" 0.9 >/dev/null
bg answer1 1 "$PS" listen --only go_data --count 1 --seconds "$WAIT"
a1=$BG
bg respond2 2 "$PS" respond --score 0.8 --confidence 0.9 --count 1 --seconds "$WAIT"
r2=$BG
bg listen3 3 "$PS" listen --only go_data --seconds 4
l3=$BG
sleep 0.3 # let them subscribe (pigeons also hold messages until someone listens)
say "  host 1: pigeon-slips request --ip $ASKED_IP   (the exact scroll Slips publishes:)"
in_host 1 "$PS" request --ip "$ASKED_IP" --require-subscriber >"$TMP/request1.out" 2>&1 ||
    { show h1 "$TMP/request1.out"; die "host 1's pigeon is not subscribed to p2p_pygo"; }
show h1 "$TMP/request1.out"
wait_ok "$r2" respond2
say "  host 2: its Slips got the request and answered (pigeon-slips respond):"
show h2 "$TMP/respond2.out"
wait_ok "$a1" answer1
say "  host 1: its Slips received the answer:"
show h1 "$TMP/answer1.out"
grep -q "report about $ASKED_IP: score 0.8, confidence 0.9" "$TMP/answer1.out" ||
    die "host 1 did not receive host 2's report"
grep -q "from ${PEER_ID[2]} " "$TMP/answer1.out" || die "the report on host 1 is not from host 2"
wait_ok "$l3" listen3
say "  host 3: its Slips got neither the request (no data: kept from it) nor the report meant for host 1:"
show h3 "$TMP/listen3.out"
if grep -q "request about $ASKED_IP" "$TMP/listen3.out"; then die "host 3's Slips got a request it cannot answer"; fi
if grep -q "report about" "$TMP/listen3.out"; then die "host 3 received the report meant for host 1"; fi
ok "request to everyone, delivered where Slips can answer; answer to the asker only"

heading "Step 3: host 3's Slips blames $BLAMED_IP"
explain "A blame is a report that says 'block this address', sent to every peer. \
Only because of this demo's blames = \"all\" do the other pigeons pass it on to \
their Slips; with the default they log it and drop it."
bg blame1 1 "$PS" listen --only go_data --count 1 --seconds "$WAIT"
b1=$BG
bg blame2 2 "$PS" listen --only go_data --count 1 --seconds "$WAIT"
b2=$BG
sleep 0.3
say "  host 3: pigeon-slips report --type blame --ip $BLAMED_IP --score 1 --confidence 1"
in_host 3 "$PS" report --type blame --ip "$BLAMED_IP" --score 1 --confidence 1 --require-subscriber \
    >"$TMP/blame3.out" 2>&1 || { show h3 "$TMP/blame3.out"; die "host 3's pigeon is not subscribed"; }
show h3 "$TMP/blame3.out"
wait_ok "$b1" blame1
wait_ok "$b2" blame2
show h1 "$TMP/blame1.out"
show h2 "$TMP/blame2.out"
for i in 1 2; do
    grep -q "blame about $BLAMED_IP: score 1, confidence 1" "$TMP/blame$i.out" ||
        die "host $i did not receive the blame"
done
ok "the blame reached both other hosts"

heading "Step 4: what an operator sees (pigeon status)"
explain "A running pigeon answers 'pigeon status' on its control socket, \
permanent/p2p_trust_runtime/pigeon.sock (owner-only; nothing listens on the \
network for it): the health of its links to Redis and Slips, its counters, \
and one row per peer. Add -json for scripts. Between the steps no Slips \
listens on p2p_gopy here, so it says NOT subscribed: a real Slips stays \
subscribed while it runs."
say "  host 1: cd permanent/p2p_trust_runtime && ../../p2p4slips/p2p4slips status"
(cd "$TMP/h1/permanent/p2p_trust_runtime" && ../../p2p4slips/p2p4slips status) >"$TMP/status1.out" 2>&1 ||
    { show h1 "$TMP/status1.out"; die "pigeon status failed on host 1"; }
show h1 "$TMP/status1.out"
grep -q "2 peer(s): 2 active" "$TMP/status1.out" || die "host 1's status does not show both peers active"
ok "host 1's pigeon shows both peers active"

heading "Step 5: stopping, and the saved peer lists"
explain "Slips stops its pigeon with SIGINT, often twice (Slips itself and \
Ctrl-C on the terminal's process group); any exit status but 0 would make \
Slips report a crash. On the way out each pigeon says goodbye to its peers \
and saves its peer list (permanent/p2p_trust_runtime/peers.json), so after a \
restart it knows its peers again."
for i in $(seq 1 "$N"); do
    kill -INT "${PIGEON[$i]}"
done
sleep 0.2
for i in $(seq 1 "$N"); do
    kill -INT "${PIGEON[$i]}" 2>/dev/null || true
done
for i in $(seq 1 "$N"); do
    for _ in $(seq 1 50); do
        kill -0 "${PIGEON[$i]}" 2>/dev/null || break
        sleep 0.1
    done
    kill -0 "${PIGEON[$i]}" 2>/dev/null && pigeon_failed "$i" "host $i's pigeon still runs 5 s after SIGINT"
    rc=0
    wait "${PIGEON[$i]}" || rc=$?
    say "  host $i: pigeon exited with status $rc"
    [ "$rc" -eq 0 ] || pigeon_failed "$i" "host $i's pigeon exited with status $rc"
done
for i in $(seq 1 "$N"); do
    say ""
    say "  host $i: pigeon peers -peerstore-file permanent/p2p_trust_runtime/peers.json"
    in_host "$i" "$BIN" peers -peerstore-file "$TMP/h$i/permanent/p2p_trust_runtime/peers.json" \
        >"$TMP/saved$i.out" 2>&1 || { show "h$i" "$TMP/saved$i.out"; die "no peer list saved on host $i"; }
    show "h$i" "$TMP/saved$i.out" pad
    [ "$(grep -c '12D3KooW' "$TMP/saved$i.out")" -eq $((N - 1)) ] ||
        die "host $i's peer list does not hold the two other peers"
done
say ""
say "  host 1: key lines of Slips' output/p2p_trust/p2p.log (the pigeon's stdout):"
grep -E "Multiaddress|peer active|received from peer|closing|stopped" \
    "$TMP/h1/output/p2p_trust/p2p.log" | label |
    sed -E 's/^[0-9-]+T([0-9:]+)\.[0-9]+Z/\1/' | cut -c1-140 >"$TMP/log1.out" || true
show h1 "$TMP/log1.out"
explain "(The same lines, and more, are in the pigeon's own daily log, \
permanent/p2p_trust_runtime/logs/p2p.log.YYYY-MM-DD. 'routine' counts the \
pigeon's own multicast datagrams coming back to it and duplicates; 'dropped' \
counts the datagrams that broke a rule.)"

heading "Done"
say "Steps 1-5 passed in $(($(date +%s) - START)) s after the build. Cleaning up: the pigeons"
say "are stopped, the lab '$LAB' and the temporary Slips trees are removed."
