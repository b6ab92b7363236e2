#!/usr/bin/env bash
# install-into-slips.sh: install pigeon as the p2p4slips of a Slips checkout.
#
# Slips starts <slips>/p2p4slips/p2p4slips. This script builds pigeon (or
# takes --binary) and installs it there, keeping the file it replaces as a
# backup. It also guards against Slips' own `go build`: after a Slips
# self-update (and when the binary fails with ENOEXEC) Slips runs
# `go build -buildvcs=false` in p2p4slips/, which would overwrite pigeon with
# the Go Pigeon (whose messages Slips 1.1.21 drops, see docs/SLIPS.md). The
# Go sources are moved to p2p4slips/go-pigeon-src/ and replaced by a tiny Go
# program, the shim, which only execs p2p4slips/pigeon (a second copy of
# pigeon); so whatever `go build` produces still runs pigeon. Running it
# again is harmless: identical files are left alone, nothing is moved twice.
#
# It also applies pigeon's fixes for Slips' own P2P bugs (slips-fixes/<VERSION>/
# of this repository, GPL-2.0 like Slips), unless --no-fixes: only to a tree
# whose VERSION has fixes here and whose files are exactly what each patch
# expects (a SHA-256 in its header); otherwise it refuses, naming the file,
# before changing anything. Originals are kept in SLIPS_DIR/.pigeon-fixes/.
#
# usage: install-into-slips.sh [--binary FILE] [--no-fixes] SLIPS_DIR
#        install-into-slips.sh --uninstall SLIPS_DIR

set -euo pipefail

PROG=install-into-slips.sh
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
SHIM_MARKER=pigeon-shim-v1
SHIM_FILE=pigeon_shim.go
SRC_DIR=go-pigeon-src
STAMP=$(date +%Y%m%d-%H%M%S)
FIXES_ROOT=$ROOT/slips-fixes
FIXES_STATE=.pigeon-fixes

usage() {
    cat <<EOF
usage: $PROG [--binary FILE] [--no-fixes] SLIPS_DIR
       $PROG --uninstall SLIPS_DIR

Installs pigeon as SLIPS_DIR/p2p4slips/p2p4slips (the file it replaces is kept
as p2p4slips.bak-<date>, or p2p4slips.go-pigeon.bak-<date> for the Go Pigeon),
plus a copy as p2p4slips/pigeon, and a commented pigeon.toml next to them if
there is none. The Go sources in p2p4slips/ are moved to p2p4slips/$SRC_DIR/
and replaced by a shim that execs p2p4slips/pigeon, so that Slips' own
\`go build\` (after a Slips self-update) cannot bring the Go Pigeon back.

It also applies pigeon's fixes for Slips' P2P bugs (slips-fixes/<VERSION>/,
GPL-2.0 like Slips; see docs/SLIPS.md), only if SLIPS_DIR/VERSION has fixes
and every file to patch is exactly the one the patch was made against; the
originals go to SLIPS_DIR/$FIXES_STATE/.

  --binary FILE   install FILE instead of building (cargo build --release)
  --no-fixes      leave Slips' own files alone (install pigeon only)
  --uninstall     put the Go sources and the newest backup binary back, and
                  Slips' original files if the fixes were applied
EOF
}

die() {
    echo "$PROG: error: $*" >&2
    exit 1
}
say() { echo "$PROG: $*"; }

# ------------------------------------------------------------------ helpers

# is_go_binary FILE: FILE was built by Go.
is_go_binary() {
    grep -qa "Go build ID" "$1" 2>/dev/null
}

# is_shim FILE: FILE is our shim (source or binary).
is_shim() {
    grep -qa "$SHIM_MARKER" "$1" 2>/dev/null
}

# owner_of DIR: uid:gid, to give new files the owner of their directory
# (Slips drops root before it runs or rebuilds the pigeon).
owner_of() {
    stat -c %u:%g "$1"
}

# put SRC DEST MODE: atomically install SRC as DEST (rename in the same
# directory, so a running pigeon keeps its old file).
put() {
    local src=$1 dest=$2 mode=$3 tmp
    tmp=$(mktemp "$dest.new.XXXXXX")
    cat "$src" >"$tmp"
    chmod "$mode" "$tmp"
    if [ "$(id -u)" -eq 0 ]; then
        chown "$(owner_of "$(dirname "$dest")")" "$tmp"
    fi
    mv -f "$tmp" "$dest"
}

write_shim() {
    local dir=$1 tmp
    tmp=$(mktemp -d)
    cat >"$tmp/go.mod" <<EOF
// $SHIM_MARKER: written by pigeon's install-into-slips.sh. The Go Pigeon's
// own go.mod and sources are in $SRC_DIR/; \`install-into-slips.sh --uninstall\`
// puts them back.
module github.com/stratosphereips/p2p4slips

go 1.16
EOF
    cat >"$tmp/$SHIM_FILE" <<EOF
// Command p2p4slips is pigeon's shim ($SHIM_MARKER), written by pigeon's
// install-into-slips.sh in place of the Go Pigeon's sources.
//
// Slips runs \`go build -buildvcs=false\` in p2p4slips/ after a self-update
// and when p2p4slips/p2p4slips cannot be executed. Built from this file, that
// command yields a p2p4slips that replaces itself (same process, same
// arguments, so Slips' signals and exit status work unchanged) with pigeon,
// installed next to it as p2p4slips/pigeon.
package main

import (
	"fmt"
	"os"
	"path/filepath"
	"syscall"
)

const marker = "$SHIM_MARKER"

func main() {
	exe, err := os.Executable()
	if err != nil {
		fmt.Fprintf(os.Stderr, "p2p4slips (%s): cannot find itself: %v\n", marker, err)
		os.Exit(1)
	}
	target := filepath.Join(filepath.Dir(exe), "pigeon")
	err = syscall.Exec(target, os.Args, os.Environ())
	fmt.Fprintf(os.Stderr, "p2p4slips (%s): cannot start %s: %v\n", marker, target, err)
	os.Exit(1)
}
EOF
    put "$tmp/go.mod" "$dir/go.mod" 644
    put "$tmp/$SHIM_FILE" "$dir/$SHIM_FILE" 644
    rm -rf "$tmp"
}

# go_sources DIR: the Go Pigeon's top-level build files in DIR (never ours).
# Its sub-packages (peer/, utils/, ...) may stay: nothing imports them.
go_sources() {
    local f
    for f in "$1"/*.go "$1"/go.mod "$1"/go.sum "$1"/go.work "$1"/go.work.sum; do
        [ -f "$f" ] || continue
        is_shim "$f" && continue
        echo "$f"
    done
    # with a vendor/ folder, `go build` would check it against the shim's
    # go.mod and fail
    if [ -d "$1/vendor" ]; then echo "$1/vendor"; fi
}

# ------------------------------------------------------------------ install

install() {
    local slips=$1 binary=$2 dir backup dest src f moved=0 srcs
    dir=$slips/p2p4slips
    mkdir -p "$dir"

    # 1. The copy the shim execs, first: from the moment the shim exists,
    #    a `go build` by Slips yields a launcher of this file.
    if ! cmp -s "$binary" "$dir/pigeon"; then
        put "$binary" "$dir/pigeon" 755
        say "installed p2p4slips/pigeon (what the shim runs)"
    fi

    # 2. Neutralise the Go build: move the Go Pigeon's sources aside (its
    #    sub-packages may stay: nothing imports them any more), then write
    #    the shim.
    mapfile -t srcs < <(go_sources "$dir")
    if [ ${#srcs[@]} -gt 0 ]; then
        dest=$dir/$SRC_DIR
        if [ -e "$dest" ]; then
            dest=$dir/$SRC_DIR-$STAMP
        fi
        mkdir -p "$dest"
        [ "$(id -u)" -eq 0 ] && chown "$(owner_of "$dir")" "$dest"
        for f in "${srcs[@]}"; do
            mv "$f" "$dest/"
            moved=$((moved + 1))
        done
        say "moved the Go Pigeon's sources ($moved file(s)) to ${dest#"$slips"/}/"
    fi
    if ! is_shim "$dir/go.mod" || ! is_shim "$dir/$SHIM_FILE"; then
        write_shim "$dir"
        say "wrote the shim p2p4slips/go.mod and p2p4slips/$SHIM_FILE (Slips' \`go build\` now builds a launcher of pigeon)"
    fi

    # 3. The binary Slips starts.
    dest=$dir/p2p4slips
    if [ -e "$dest" ] && ! cmp -s "$binary" "$dest"; then
        if is_shim "$dest"; then
            rm -f "$dest" # built from our shim by Slips; nothing to keep
        else
            if is_go_binary "$dest"; then
                backup=$dir/p2p4slips.go-pigeon.bak-$STAMP
            else
                backup=$dir/p2p4slips.bak-$STAMP
            fi
            mv "$dest" "$backup"
            say "kept the previous p2p4slips as ${backup#"$slips"/}"
        fi
    fi
    if cmp -s "$binary" "$dest"; then
        say "p2p4slips/p2p4slips is already this pigeon"
    else
        put "$binary" "$dest" 755
        say "installed p2p4slips/p2p4slips"
    fi

    # 4. A commented configuration, never over the user's own.
    if [ -e "$dir/pigeon.toml" ]; then
        say "kept the existing p2p4slips/pigeon.toml"
    else
        put "$ROOT/pigeon.toml" "$dir/pigeon.toml" 644
        say "wrote p2p4slips/pigeon.toml (every setting, commented, at its default)"
    fi

    # 5. What Slips itself needs.
    if [ -f "$slips/VERSION" ]; then
        say "Slips VERSION: $(tr -d '\n' <"$slips/VERSION")"
    fi
    # slips.yaml writes "use_p2p : False" (a space before the colon)
    src=$slips/config/slips.yaml
    if [ -f "$src" ] && grep -qE '^[[:space:]]*use_p2p[[:space:]]*:[[:space:]]*[Tt]rue' "$src"; then
        say "config/slips.yaml: use_p2p is on"
    else
        say "note: P2P is off in config/slips.yaml; set 'use_p2p : True' under 'local_p2p:' and run Slips on an interface (-i) to use it (docs/SLIPS.md)"
    fi
    if [ -f "$src" ] && ! grep -qE '^[[:space:]]*create_p2p_logfile[[:space:]]*:[[:space:]]*[Tt]rue' "$src"; then
        say "note: create_p2p_logfile is off: Slips sends pigeon's stdout to /dev/null; pigeon's own log is permanent/p2p_trust_runtime/logs/p2p.log"
    fi
}

# ------------------------------------------------------------------ uninstall

uninstall() {
    local slips=$1 dir src f name newest
    dir=$slips/p2p4slips
    [ -d "$dir" ] || die "$dir does not exist"

    if is_shim "$dir/go.mod"; then
        rm -f "$dir/go.mod"
    fi
    if is_shim "$dir/$SHIM_FILE"; then
        rm -f "$dir/$SHIM_FILE"
    fi
    # the newest moved-aside sources come back
    src=$(find "$dir" -maxdepth 1 -type d -name "$SRC_DIR*" | sort | tail -n 1)
    if [ -n "$src" ]; then
        for f in "$src"/* "$src"/.[!.]*; do
            [ -e "$f" ] || continue
            name=$(basename "$f")
            [ -e "$dir/$name" ] && die "$dir/$name exists; not overwriting it with $f"
        done
        for f in "$src"/* "$src"/.[!.]*; do
            [ -e "$f" ] || continue
            mv "$f" "$dir/"
        done
        rmdir "$src"
        say "put the Go Pigeon's sources back from ${src#"$slips"/}/"
    fi

    # the Go Pigeon if it was backed up, else the newest backup (by the
    # date in its name)
    newest=""
    for name in 'p2p4slips.go-pigeon.bak-*' 'p2p4slips*.bak-*'; do
        newest=$(find "$dir" -maxdepth 1 -type f -name "$name" -printf '%f\n' |
            sed 's/^\(.*\.bak-\)\(.*\)$/\2 \1\2/' | sort | tail -n 1 | cut -d' ' -f2-)
        [ -n "$newest" ] && break
    done
    [ -n "$newest" ] && newest=$dir/$newest
    if [ -n "$newest" ]; then
        mv -f "$newest" "$dir/p2p4slips"
        say "restored p2p4slips from ${newest#"$slips"/}"
    elif [ -e "$dir/p2p4slips" ] && cmp -s "$dir/p2p4slips" "$dir/pigeon" 2>/dev/null; then
        rm -f "$dir/p2p4slips"
        say "removed pigeon's p2p4slips (no backup to restore; build the Go Pigeon with: cd $dir && go build)"
    fi
    rm -f "$dir/pigeon"
    [ -e "$dir/pigeon.toml" ] && say "left p2p4slips/pigeon.toml in place (unused without pigeon)"
    say "uninstalled"
}

# ------------------------------------------------------------------ Slips fixes

# fix_field PATCH NAME: the value of header line "NAME: value" of PATCH.
fix_field() {
    sed -n "s/^$2: //p" "$1" | head -n 1
}

sha256_of() {
    sha256sum "$1" | cut -d' ' -f1
}

# fixes_dir SLIPS: the patch directory for the tree's VERSION, or nothing.
fixes_dir() {
    local version
    version=$(tr -d ' \n\r' <"$1/VERSION")
    [ -d "$FIXES_ROOT/$version" ] && echo "$FIXES_ROOT/$version"
    return 0
}

# fix_state PATCH SLIPS: "applied", "original" or "different" for the file
# PATCH changes.
fix_state() {
    local file sum
    file=$2/$(fix_field "$1" File)
    [ -f "$file" ] || {
        echo missing
        return 0
    }
    sum=$(sha256_of "$file")
    if [ "$sum" = "$(fix_field "$1" Sha256-After)" ]; then
        echo applied
    elif [ "$sum" = "$(fix_field "$1" Sha256-Before)" ]; then
        echo original
    else
        echo different
    fi
}

# check_fixes SLIPS: every fix can be applied (or already is); dies naming
# the first file that is not what its patch expects. Changes nothing.
check_fixes() {
    local slips=$1 dir version p rel
    version=$(tr -d ' \n\r' <"$slips/VERSION")
    dir=$(fixes_dir "$slips")
    [ -n "$dir" ] || die "pigeon has no fixes for Slips $version (only for: $(find "$FIXES_ROOT" -mindepth 1 -maxdepth 1 -type d -printf '%f ' 2>/dev/null)); refusing to patch $slips/VERSION's version; run again with --no-fixes to install pigeon alone"
    command -v patch >/dev/null 2>&1 || die "'patch' not found (Debian: apt-get install patch), or run with --no-fixes"
    for p in "$dir"/*.patch; do
        [ -f "$p" ] || continue
        rel=$(fix_field "$p" File)
        [ -n "$rel" ] || die "$p has no File: header"
        case "$(fix_state "$p" "$slips")" in
            applied | original) ;;
            missing) die "refusing to apply the Slips fixes: $slips/$rel does not exist ($(basename "$p") is for Slips $version); run again with --no-fixes to install pigeon alone" ;;
            *) die "refusing to apply the Slips fixes: $slips/$rel is not the Slips $version file that $(basename "$p") expects (changed locally or by an update); run again with --no-fixes to install pigeon alone" ;;
        esac
    done
}

# apply_fixes SLIPS: applies every fix not yet applied, keeping the
# original of each file in SLIPS/.pigeon-fixes/orig/. Run check_fixes first.
apply_fixes() {
    local slips=$1 dir p rel file backup n=0
    dir=$(fixes_dir "$slips")
    for p in "$dir"/*.patch; do
        [ -f "$p" ] || continue
        rel=$(fix_field "$p" File)
        file=$slips/$rel
        if [ "$(fix_state "$p" "$slips")" = applied ]; then
            say "Slips fix $(basename "$p" .patch): already applied"
            continue
        fi
        backup=$slips/$FIXES_STATE/orig/$rel
        mkdir -p "$(dirname "$backup")"
        cp -p "$file" "$backup"
        if ! patch -s -p1 -F0 -N --no-backup-if-mismatch -r - -d "$slips" -i "$p" >/dev/null ||
            [ "$(fix_state "$p" "$slips")" != applied ]; then
            cp -p "$backup" "$file"
            die "$(basename "$p") did not apply to $file; it is restored"
        fi
        chown --reference="$backup" "$file" 2>/dev/null || true
        say "Slips fix $(basename "$p" .patch): applied to $rel"
        n=$((n + 1))
    done
    echo "$(basename "$dir")" >"$slips/$FIXES_STATE/version"
    say "Slips fixes: $n applied now, originals in $FIXES_STATE/orig/ (undo: $0 --uninstall $slips)"
}

# unapply_fixes SLIPS: puts back every original that a fix replaced; dies
# before changing anything if a patched file was changed since.
unapply_fixes() {
    local slips=$1 version dir p rel file backup
    [ -f "$slips/$FIXES_STATE/version" ] || return 0
    version=$(cat "$slips/$FIXES_STATE/version")
    dir=$FIXES_ROOT/$version
    [ -d "$dir" ] || die "$slips/$FIXES_STATE says fixes for Slips $version were applied, but this pigeon has no slips-fixes/$version/"
    for p in "$dir"/*.patch; do
        [ -f "$p" ] || continue
        rel=$(fix_field "$p" File)
        case "$(fix_state "$p" "$slips")" in
            applied)
                backup=$slips/$FIXES_STATE/orig/$rel
                [ -f "$backup" ] && [ "$(sha256_of "$backup")" = "$(fix_field "$p" Sha256-Before)" ] ||
                    die "cannot undo $(basename "$p"): its backup $backup is missing or not the original"
                ;;
            original | missing) ;;
            *) die "refusing to undo the Slips fixes: $slips/$rel changed since $(basename "$p") was applied; put it back by hand from $slips/$FIXES_STATE/orig/$rel or with git" ;;
        esac
    done
    for p in "$dir"/*.patch; do
        [ -f "$p" ] || continue
        rel=$(fix_field "$p" File)
        if [ "$(fix_state "$p" "$slips")" = applied ]; then
            cp -p "$slips/$FIXES_STATE/orig/$rel" "$slips/$rel"
            say "Slips fix $(basename "$p" .patch): undone, $rel is the original again"
        fi
    done
    rm -rf "${slips:?}/$FIXES_STATE"
}

# ------------------------------------------------------------------ main

mode=install
binary=""
fixes=1
slips=""
while [ $# -gt 0 ]; do
    case "$1" in
        -h | --help)
            usage
            exit 0
            ;;
        --uninstall) mode=uninstall ;;
        --no-fixes) fixes=0 ;;
        --binary)
            [ $# -ge 2 ] || die "--binary needs a file"
            binary=$2
            shift
            ;;
        --binary=*) binary=${1#--binary=} ;;
        -*) die "unknown option $1 (see --help)" ;;
        *)
            [ -z "$slips" ] || die "only one SLIPS_DIR, please"
            slips=$1
            ;;
    esac
    shift
done
[ -n "$slips" ] || {
    usage >&2
    exit 2
}
[ -d "$slips" ] || die "$slips is not a directory"
slips=$(cd "$slips" && pwd)
[ -f "$slips/VERSION" ] ||
    die "$slips has no VERSION file: not a Slips checkout? (pigeon reads it to tag messages for Slips)"
[ -d "$slips/modules/p2p_trust" ] ||
    say "warning: $slips has no modules/p2p_trust; is this a Slips checkout with the P2P module?"

if [ "$mode" = uninstall ]; then
    [ -z "$binary" ] || die "--binary makes no sense with --uninstall"
    unapply_fixes "$slips"
    uninstall "$slips"
    exit 0
fi

# the fixes are checked before anything is changed
if [ "$fixes" -eq 1 ]; then
    check_fixes "$slips"
fi

if [ -z "$binary" ]; then
    command -v cargo >/dev/null 2>&1 || die "cargo not found; install Rust (https://rustup.rs) or pass --binary FILE"
    say "building pigeon (cargo build --release --locked --bin pigeon)"
    (cd "$ROOT" && cargo build --release --locked --bin pigeon --quiet)
    binary=$ROOT/target/release/pigeon
fi
[ -f "$binary" ] && [ -x "$binary" ] || die "$binary is not an executable file"
"$binary" -help >/dev/null 2>&1 || die "$binary -help failed: not a working pigeon for this machine?"
install "$slips" "$binary"
if [ "$fixes" -eq 1 ]; then
    apply_fixes "$slips"
else
    say "--no-fixes: Slips' own files left as they are (docs/SLIPS.md explains what the fixes do)"
fi
say "done; to undo: $0 --uninstall $slips"
