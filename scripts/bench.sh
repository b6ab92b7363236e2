#!/usr/bin/env bash
# bench.sh: every benchmark of docs/BENCHMARKS.md, in one command.
#
#   sudo scripts/bench.sh                 criterion benches, then the lab benches
#   sudo scripts/bench.sh --quick         a smoke run: short criterion, small sizes,
#                                         results in target/bench-lab-quick/
#   sudo scripts/bench.sh --wait-quiet    first wait (up to 20 min) for the 1-minute
#                                         load average to drop below 1.0
#   sudo scripts/bench.sh --pure-only | --lab-only
#
# The criterion benches (`cargo bench --bench pure`) need nothing special.
# The lab benches (`cargo bench --bench lab -- all`) need root: they build
# simulated LANs of network namespaces with scripts/lab.sh (each host runs
# its own redis-server), start real pigeons in them, and remove everything
# at the end, also on Ctrl-C or failure. No socket is opened in this
# machine's own network namespace. They take about 15 minutes (the idle
# traffic count alone needs 6). Needs redis-server, redis-tools, nftables,
# iproute2 and, for the plots' text, fonts-dejavu-core.
#
# Results: target/criterion/, target/bench-lab/*.json, docs/plots/*.png, and
# a Markdown summary on stdout (`cargo bench --bench lab -- summary`).

set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
QUICK=0 WAIT_QUIET=0 PURE=1 LAB=1

usage() { sed -n '2,22p' "$0" | sed 's/^# \{0,1\}//'; }

for a in "$@"; do
    case "$a" in
        --quick) QUICK=1 ;;
        --wait-quiet) WAIT_QUIET=1 ;;
        --pure-only) LAB=0 ;;
        --lab-only) PURE=0 ;;
        -h | --help)
            usage
            exit 0
            ;;
        *)
            echo "bench.sh: unknown option '$a'" >&2
            usage >&2
            exit 2
            ;;
    esac
done

# Under sudo, cargo usually lives in the invoking user's ~/.cargo/bin.
if ! command -v cargo >/dev/null 2>&1; then
    for home in "${HOME:-}" "$(getent passwd "${SUDO_USER:-root}" | cut -d: -f6)"; do
        if [ -n "$home" ] && [ -x "$home/.cargo/bin/cargo" ]; then
            export PATH="$home/.cargo/bin:$PATH"
            break
        fi
    done
fi
command -v cargo >/dev/null 2>&1 || {
    echo "bench.sh: cargo not found" >&2
    exit 2
}

if [ "$LAB" -eq 1 ]; then
    [ "$(id -u)" -eq 0 ] || {
        echo "bench.sh: the lab benchmarks need root (network namespaces); try: sudo $0 $*" >&2
        exit 2
    }
    for tool in redis-server redis-cli nft ip; do
        command -v "$tool" >/dev/null 2>&1 || {
            echo "bench.sh: '$tool' not found (Debian: apt-get install redis-server redis-tools nftables iproute2)" >&2
            exit 2
        }
    done
    # Whatever happens, none of our labs survives us. The bench names its
    # labs pg<pid>_<n> (testkit::lab::Lab): one whose process is gone is a
    # leftover; labs of live processes (a test run) are left alone.
    cleanup() {
        local ns lab
        for ns in $(ip netns list 2>/dev/null | awk '{print $1}'); do
            lab=${ns%-*}
            if [[ "$lab" =~ ^pg([0-9]+)_[0-9]+$ ]] && [ ! -e "/proc/${BASH_REMATCH[1]}" ]; then
                "$ROOT/scripts/lab.sh" down "$lab" >/dev/null 2>&1 || true
            fi
        done
    }
    trap cleanup EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
fi

if [ "$WAIT_QUIET" -eq 1 ]; then
    for _ in $(seq 1 120); do
        load=$(cut -d' ' -f1 /proc/loadavg)
        awk -v l="$load" 'BEGIN { exit !(l < 1.0) }' && break
        echo "bench.sh: load average $load; waiting for < 1.0 (10 s)"
        sleep 10
    done
fi

echo "== machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ *//'), load $(cut -d' ' -f1-3 /proc/loadavg)"
echo "== building (release profile)"
cargo bench --bench pure --bench lab --no-run

if [ "$PURE" -eq 1 ]; then
    echo "== criterion: cargo bench --bench pure"
    if [ "$QUICK" -eq 1 ]; then
        cargo bench --bench pure -- --warm-up-time 0.3 --measurement-time 1
    else
        cargo bench --bench pure
    fi
fi

if [ "$LAB" -eq 1 ]; then
    echo "== lab: cargo bench --bench lab -- all"
    if [ "$QUICK" -eq 1 ]; then
        # Results and plots of a smoke run never overwrite the real ones.
        cargo bench --bench lab -- all --out target/bench-lab-quick \
            --plots target/bench-lab-quick/plots --count 100 --fan-n 3,5 \
            --requests 5 --conv-n 5,10 --idle-s 5 --warmup-s 5 --count-s 30
    else
        cargo bench --bench lab -- all
    fi
elif [ "$PURE" -eq 1 ]; then
    cargo bench --bench lab -- summary
fi
