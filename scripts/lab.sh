#!/usr/bin/env bash
# lab.sh: a simulated LAN of network namespaces for pigeon's tests, demo and
# benchmarks.
#
# Every host is its own network namespace, plugged into a bridge that lives in
# a namespace of its own, and runs a private redis-server on 127.0.0.1:6379.
# Nothing is ever created in, or sends a packet from, the root namespace: the
# veth pairs are created inside the bridge namespace with their host ends
# moved straight into the host namespaces. Addresses: 10.77.0.I/24.
#
# Run `lab.sh --help` for the commands. Needs root, iproute2, redis-server
# and redis-cli; the loss/cut commands also need nft (package nftables).

set -eu
set -o pipefail

PROG=lab.sh
STATE_ROOT=${LAB_STATE:-/tmp/pigeon-lab}
SUBNET=10.77.0
REDIS_PORT=6379
MAX_HOSTS=200
MAX_NAME=16
REDIS_WAIT_TRIES=100     # x 0.05 s = 5 s per host
KILL_WAIT_TRIES=40       # x 0.05 s = 2 s before SIGKILL

usage() {
    cat <<EOF
usage: $PROG COMMAND ...

A simulated LAN in network namespaces (run as root). Host I of lab NAME is
namespace NAME-hI with veth0 = $SUBNET.I/24 and a route 224.0.0.0/4 dev veth0,
plugged into bridge br0 (mcast_snooping 0) of namespace NAME-br (port pI), and
runs redis-server on 127.0.0.1:$REDIS_PORT (reachable from inside host I only).
State (pid files, logs) lives in \${LAB_STATE:-/tmp/pigeon-lab}/NAME/.

commands:
  up NAME N              create lab NAME with hosts 1..N (N <= $MAX_HOSTS); refuses if it exists
  down NAME              kill every process of the lab, delete its namespaces and state;
                         never fails, also on a half-built lab
  exec NAME I CMD...     run CMD inside host I (exit status of CMD)
  loss NAME I PCT        drop PCT% of everything host I sends (nft netdev egress on
                         its veth0); PCT 0 removes the rule
  link-loss NAME I PCT   drop PCT% of what the bridge forwards to host I (nft bridge
                         forward hook, oifname pI); PCT 0 removes the rule
  cut NAME I             partition host I: the bridge drops 100% to and from it
  heal NAME I            undo cut
  default-route NAME I   give host I a default route via $SUBNET.254 (no such host), for
                         programs that need one to find their own address (Slips connects a
                         UDP socket to 8.8.8.8, which sends nothing); an nft rule in host I's
                         output hook refuses, at once, every packet to an address outside
                         $SUBNET.0/24, 224.0.0.0/4, 127.0.0.0/8 and ::1
  status NAME            show hosts, addresses, redis, loss rules and processes
  --help                 this text

NAME: letters, digits and '_', at most $MAX_NAME characters.
Examples:
  $PROG up demo 3
  $PROG exec demo 1 redis-cli ping
  $PROG loss demo 2 10
  $PROG down demo
EOF
}

die() {
    echo "$PROG: error: $*" >&2
    exit 2
}

note() {
    echo "$PROG: $*" >&2
}

need_root() {
    [ "$(id -u)" -eq 0 ] || die "must run as root (network namespaces need CAP_SYS_ADMIN); try: sudo $0 $*"
}

need_tool() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found${2:+; $2}"
}

check_name() {
    case "$1" in
        "" | *[!A-Za-z0-9_]*) die "invalid lab name '$1' (letters, digits and '_' only)" ;;
    esac
    [ "${#1}" -le "$MAX_NAME" ] || die "lab name '$1' is longer than $MAX_NAME characters"
}

check_uint() { # WHAT VALUE MIN MAX
    case "$2" in
        "" | *[!0-9]*) die "$1 must be a number, got '$2'" ;;
    esac
    [ "${#2}" -le 6 ] && [ "$2" -ge "$3" ] && [ "$2" -le "$4" ] ||
        die "$1 must be in $3..$4, got '$2'"
}

ns_exists() {
    [ -e "/run/netns/$1" ]
}

# lab_namespaces NAME: every namespace of the lab, hosts first, bridge last.
lab_namespaces() {
    local ns
    # `ip netns list` prints "name" or "name (id: N)".
    ip netns list 2>/dev/null | awk '{print $1}' | while read -r ns; do
        case "$ns" in
            "$1"-h[0-9]*) echo "$ns" ;;
        esac
    done | sort -V
    if ns_exists "$1-br"; then echo "$1-br"; fi
}

# check_host NAME I: host I of lab NAME exists.
check_host() {
    check_uint "host number" "$2" 1 "$MAX_HOSTS"
    ns_exists "$1-h$2" || die "no host $2 in lab '$1' (namespace $1-h$2 does not exist)"
}

# ---------------------------------------------------------------- up

cmd_up() {
    [ $# -eq 2 ] || die "usage: $PROG up NAME N"
    local name=$1 n=$2 i h dir
    check_name "$name"
    check_uint "N" "$n" 1 "$MAX_HOSTS"
    need_root up "$@"
    need_tool ip "install iproute2"
    need_tool redis-server "install redis-server"
    need_tool redis-cli "install redis-tools"

    mkdir -p "$STATE_ROOT"
    if ns_exists "$name-br" || [ -n "$(lab_namespaces "$name")" ]; then
        die "lab '$name' already exists (namespace $name-br or $name-h*); run: $PROG down $name"
    fi
    if [ -e "$STATE_ROOT/$name" ]; then
        die "state dir $STATE_ROOT/$name already exists; run: $PROG down $name"
    fi
    mkdir -p "$STATE_ROOT/$name"

    # From here on, any failure or interruption tears down what was built.
    trap 'rc=$?; trap - EXIT INT TERM; note "up failed, cleaning up"; cmd_down "$name" >/dev/null 2>&1 || true; exit $((rc ? rc : 1))' EXIT
    trap 'exit 130' INT TERM

    # Concurrent first uses of `ip netns add` race while making /run/netns a
    # shared mount point; serialise namespace creation across labs.
    exec 9>"$STATE_ROOT/.lock"
    flock -w 30 9 || die "timed out waiting for $STATE_ROOT/.lock"

    ip netns add "$name-br"
    ip -n "$name-br" link set lo up
    ip -n "$name-br" link add br0 type bridge mcast_snooping 0
    ip -n "$name-br" link set br0 up
    for i in $(seq 1 "$n"); do
        h="$name-h$i"
        ip netns add "$h"
        ip -n "$h" link set lo up
        # created inside the bridge namespace; the peer goes straight into
        # the host namespace, never through the root namespace
        ip -n "$name-br" link add "p$i" type veth peer name veth0 netns "$h"
        ip -n "$name-br" link set "p$i" master br0
        ip -n "$name-br" link set "p$i" up
        ip -n "$h" addr add "$SUBNET.$i/24" dev veth0
        ip -n "$h" link set veth0 up
        ip -n "$h" route add 224.0.0.0/4 dev veth0
    done
    flock -u 9
    exec 9>&-

    echo "$n" >"$STATE_ROOT/$name/hosts"
    for i in $(seq 1 "$n"); do
        dir="$STATE_ROOT/$name/h$i"
        mkdir -p "$dir"
        ip netns exec "$name-h$i" redis-server --port "$REDIS_PORT" --bind 127.0.0.1 \
            --save '' --appendonly no --daemonize yes --dir "$dir" \
            --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" >/dev/null
    done
    for i in $(seq 1 "$n"); do
        wait_redis "$name" "$i"
    done

    trap - EXIT INT TERM
    echo "$PROG: lab '$name' up: $n host(s) $SUBNET.1..$SUBNET.$n, redis on 127.0.0.1:$REDIS_PORT in each"
}

wait_redis() {
    local _
    for _ in $(seq 1 "$REDIS_WAIT_TRIES"); do
        if [ "$(ip netns exec "$1-h$2" redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" = PONG ]; then
            return 0
        fi
        sleep 0.05
    done
    die "redis-server in host $2 did not answer PING (log: $STATE_ROOT/$1/h$2/redis.log)"
}

# ---------------------------------------------------------------- down

# lab_pids NAME: PIDs of every process inside the lab's namespaces, plus the
# ones recorded in its pid files that are still inside one of them (a PID
# from a pid file that is now some other process is never touched).
lab_pids() {
    local name=$1 ns pid f
    for ns in $(lab_namespaces "$name"); do
        ip netns pids "$ns" 2>/dev/null || true
    done
    if [ -d "$STATE_ROOT/$name" ]; then
        for f in "$STATE_ROOT/$name"/*.pid "$STATE_ROOT/$name"/*/*.pid; do
            [ -f "$f" ] || continue
            pid=$(head -c 32 "$f" 2>/dev/null | tr -cd '0-9')
            [ -n "$pid" ] || continue
            if ip netns identify "$pid" 2>/dev/null | grep -q "^$name-"; then
                echo "$pid"
            fi
        done
    fi
}

cmd_down() {
    [ $# -eq 1 ] || die "usage: $PROG down NAME"
    local name=$1 pids _ ns
    check_name "$name"
    need_root down "$@"
    set +e

    pids=$(lab_pids "$name" | sort -un)
    if [ -n "$pids" ]; then
        # shellcheck disable=SC2086
        kill -TERM $pids 2>/dev/null
        for _ in $(seq 1 "$KILL_WAIT_TRIES"); do
            pids=$(lab_pids "$name" | sort -un)
            [ -z "$pids" ] && break
            sleep 0.05
        done
        if [ -n "$pids" ]; then
            # shellcheck disable=SC2086
            note "killing stubborn processes: $(printf '%s ' $pids)"
            # shellcheck disable=SC2086
            kill -KILL $pids 2>/dev/null
            for _ in $(seq 1 "$KILL_WAIT_TRIES"); do
                [ -z "$(lab_pids "$name")" ] && break
                sleep 0.05
            done
        fi
    fi

    for ns in $(lab_namespaces "$name"); do
        ip netns del "$ns" 2>/dev/null || note "could not delete namespace $ns"
    done
    rm -rf "${STATE_ROOT:?}/$name"
    set -e
    echo "$PROG: lab '$name' down"
    return 0
}

# ---------------------------------------------------------------- exec

cmd_exec() {
    [ $# -ge 3 ] || die "usage: $PROG exec NAME I CMD..."
    local name=$1 i=$2
    shift 2
    check_name "$name"
    need_root exec
    check_host "$name" "$i"
    exec ip netns exec "$name-h$i" "$@"
}

# ---------------------------------------------------------------- loss

# nft_replace NS FAMILY TABLE [BODY]: atomically replace (or, without BODY,
# remove) one nft table inside namespace NS.
nft_replace() {
    local ns=$1 family=$2 table=$3 body=${4:-}
    {
        # declaring the table first makes the delete succeed when it is absent
        echo "table $family $table"
        echo "delete table $family $table"
        if [ -n "$body" ]; then
            printf 'table %s %s {\n%s\n}\n' "$family" "$table" "$body"
        fi
    } | ip netns exec "$ns" nft -f -
}

# loss_match PCT: the nft match for "PCT% of the packets" (1..100).
loss_match() {
    if [ "$1" -ge 100 ]; then
        echo "meta length > 0" # every packet; numgen's range ends at 99
    else
        echo "numgen random mod 100 < $1"
    fi
}

need_nft() {
    need_tool nft "install it with: apt-get install -y nftables"
}

cmd_loss() {
    [ $# -eq 3 ] || die "usage: $PROG loss NAME I PCT"
    local name=$1 i=$2 pct=$3
    check_name "$name"
    need_root loss
    need_nft
    check_host "$name" "$i"
    check_uint "PCT" "$pct" 0 100
    if [ "$pct" -eq 0 ]; then
        nft_replace "$name-h$i" netdev lab_loss
        echo "$PROG: host $i: egress loss removed"
    else
        # netdev egress: silent loss (an inet output drop would be EPERM)
        nft_replace "$name-h$i" netdev lab_loss \
            "chain eg { type filter hook egress device \"veth0\" priority 0; policy accept; $(loss_match "$pct") counter drop; }"
        echo "$PROG: host $i: dropping $pct% of its egress"
    fi
}

cmd_link_loss() {
    [ $# -eq 3 ] || die "usage: $PROG link-loss NAME I PCT"
    local name=$1 i=$2 pct=$3
    check_name "$name"
    need_root link-loss
    need_nft
    check_host "$name" "$i"
    check_uint "PCT" "$pct" 0 100
    if [ "$pct" -eq 0 ]; then
        nft_replace "$name-br" bridge "lab_link_$i"
        echo "$PROG: link to host $i: loss removed"
    else
        nft_replace "$name-br" bridge "lab_link_$i" \
            "chain fw { type filter hook forward priority 0; policy accept; oifname \"p$i\" $(loss_match "$pct") counter drop; }"
        echo "$PROG: link to host $i: dropping $pct% of what the bridge forwards to it"
    fi
}

cmd_cut() {
    [ $# -eq 2 ] || die "usage: $PROG cut NAME I"
    local name=$1 i=$2
    check_name "$name"
    need_root cut
    need_nft
    check_host "$name" "$i"
    # silent, like a broken switch port: the host's link stays up and its
    # sends succeed, nothing gets through in either direction
    nft_replace "$name-br" bridge "lab_cut_$i" \
        "chain fw { type filter hook forward priority -10; policy accept; iifname \"p$i\" counter drop; oifname \"p$i\" counter drop; }"
    echo "$PROG: host $i cut off"
}

cmd_heal() {
    [ $# -eq 2 ] || die "usage: $PROG heal NAME I"
    local name=$1 i=$2
    check_name "$name"
    need_root heal
    need_nft
    check_host "$name" "$i"
    nft_replace "$name-br" bridge "lab_cut_$i"
    echo "$PROG: host $i healed"
}

cmd_default_route() {
    [ $# -eq 2 ] || die "usage: $PROG default-route NAME I"
    local name=$1 i=$2
    check_name "$name"
    need_root default-route
    need_nft
    check_host "$name" "$i"
    # the filter first: from the moment the route exists, nothing for the
    # outside world may leave; refused in the output hook, so a sender
    # fails at once (EPERM for UDP, "unreachable" for a TCP connect)
    nft_replace "$name-h$i" inet lab_wall \
        "chain out { type filter hook output priority 0; policy accept; ip daddr != { $SUBNET.0/24, 224.0.0.0/4, 127.0.0.0/8 } counter reject with icmpx type admin-prohibited; ip6 daddr != ::1 counter reject with icmpx type admin-prohibited; }"
    ip -n "$name-h$i" route replace default via "$SUBNET.254" dev veth0
    echo "$PROG: host $i: default route via $SUBNET.254, nothing outside the lab leaves it"
}

# ---------------------------------------------------------------- status

cmd_status() {
    [ $# -eq 1 ] || die "usage: $PROG status NAME"
    local name=$1 ns pids pong addr pid
    check_name "$name"
    need_root status
    if [ -z "$(lab_namespaces "$name")" ]; then
        echo "lab '$name': not up"
        [ -d "$STATE_ROOT/$name" ] && echo "  (stale state dir $STATE_ROOT/$name; run: $PROG down $name)"
        return 0
    fi
    echo "lab '$name' (state $STATE_ROOT/$name)"
    for ns in $(lab_namespaces "$name"); do
        case "$ns" in
            *-br)
                echo "  $ns: bridge br0, $(ip -n "$ns" -d link show br0 2>/dev/null | grep -o 'mcast_snooping [0-9]' || echo 'no br0')"
                ;;
            *)
                addr=$(ip -n "$ns" -4 -o addr show dev veth0 2>/dev/null | awk '{print $4}')
                pong=$(ip netns exec "$ns" redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null || true)
                echo "  $ns: veth0 ${addr:-none}, redis ${pong:-DOWN}"
                ;;
        esac
        if command -v nft >/dev/null 2>&1; then
            ip netns exec "$ns" nft list ruleset 2>/dev/null | awk '/^table/ {t=$2" "$3} /numgen|drop/ {gsub(/^[ \t]+/, ""); print "      " t ": " $0}'
        fi
        pids=$(ip netns pids "$ns" 2>/dev/null || true)
        for pid in $pids; do
            echo "      pid $pid: $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-100 | sed 's/ *$//')"
        done
    done
}

# ---------------------------------------------------------------- main

[ $# -ge 1 ] || {
    usage >&2
    exit 2
}
cmd=$1
shift
case "$cmd" in
    -h | --help | help) usage ;;
    up) cmd_up "$@" ;;
    down) cmd_down "$@" ;;
    exec) cmd_exec "$@" ;;
    loss) cmd_loss "$@" ;;
    link-loss) cmd_link_loss "$@" ;;
    cut) cmd_cut "$@" ;;
    heal) cmd_heal "$@" ;;
    default-route) cmd_default_route "$@" ;;
    status) cmd_status "$@" ;;
    *)
        echo "$PROG: error: unknown command '$cmd'" >&2
        usage >&2
        exit 2
        ;;
esac
