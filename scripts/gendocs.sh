#!/usr/bin/env bash
# Writes mos's manual pages and shell completions into OUTDIR, uncompressed:
#
#   OUTDIR/man/man1/BIN.1              mos-sensor mos-ctl mos-flowstat mos-dump mos-log
#                                      mos-grep mos-pcap, from each binary's clap definition
#   OUTDIR/man/man5/mos-sensor.toml.5  from the sensor's table of configuration keys (the
#                                      table that writes docs/CONFIG.md)
#   OUTDIR/man/man3/*.3                the C API (sources in capi/man/)
#   OUTDIR/completions/bash/BIN        bash completions
#   OUTDIR/completions/zsh/_BIN        zsh completions
#
# It builds the generator (mos-docgen, release profile) and runs it. Pages are dated
# SOURCE_DATE_EPOCH when set, else the last commit's date in a git checkout, else today, so a
# package built twice from one commit gets the same pages. Every page is then checked with
# `man --warnings` when man is installed; a warning fails the script.
#
# Usage: scripts/gendocs.sh OUTDIR
# Exits 0 on success, 1 on a failure (said on stderr), 2 on a wrong command line.
set -euo pipefail
source "$(dirname "$0")/lib.sh"

usage() {
    sed -n '2,18p' "$0" | sed 's/^# \{0,1\}//'
}

case "${1:-}" in
    -h | --help)
        usage
        exit 0
        ;;
    "" | -*)
        usage >&2
        exit 2
        ;;
esac
[[ $# -eq 1 ]] || {
    usage >&2
    exit 2
}
out=$1

mos_find_cargo || mos_die "cargo not found (scripts/setup.sh installs it)"
mos_quiet_terminal

if [[ -z "${SOURCE_DATE_EPOCH:-}" ]] && git -C "$MOS_ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    SOURCE_DATE_EPOCH=$(git -C "$MOS_ROOT" log -1 --format=%ct 2>/dev/null || true)
    [[ -n "$SOURCE_DATE_EPOCH" ]] && export SOURCE_DATE_EPOCH
fi

# With the features the other scripts build mos-analyzers with (Kafka where librdkafka is
# there), so that building the generator does not rebuild the analyzers the other way; the
# command lines, and so the pages, are the same either way.
features=()
if pkg-config --exists rdkafka 2>/dev/null; then
    features=(--features mos-analyzers/kafka)
fi
# shellcheck disable=SC2046 # --locked or nothing
(cd "$MOS_ROOT" && cargo build --release $(mos_locked_flag) "${features[@]}" -p mos-docgen --bin mos-docgen) ||
    mos_die "building mos-docgen failed"
target=$(cd "$MOS_ROOT" && cargo metadata --format-version 1 --no-deps 2>/dev/null |
    sed -n 's/.*"target_directory":"\([^"]*\)".*/\1/p')
target=${target:-$MOS_ROOT/target}
"$target/release/mos-docgen" "$out" || mos_die "mos-docgen failed"

if command -v man >/dev/null 2>&1; then
    bad=0
    for page in "$out"/man/man[135]/*.[135]; do
        # .so link pages are rendered through the page they name, from the man directory.
        warnings=$(cd "$out/man" && LC_ALL=C.UTF-8 MANROFFSEQ='' MANWIDTH=80 \
            man --warnings -E UTF-8 -l "${page#"$out/man/"}" 2>&1 >/dev/null) || {
            echo "gendocs: man cannot render $page" >&2
            bad=1
            continue
        }
        if [[ -n "$warnings" ]]; then
            printf 'gendocs: %s:\n%s\n' "$page" "$warnings" >&2
            bad=1
        fi
    done
    [[ $bad -eq 0 ]] || mos_die "manual pages with warnings (above)"
fi
echo "gendocs: manual pages and completions in $out"
