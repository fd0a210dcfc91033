#!/usr/bin/env bash
# Measure issue 18's table on this machine: the sensor with and without publication, with two
# analyzers (pinned), the core alone against memcpy, and the whole process against libnids.
#
#   bash scripts/bench.sh [--runs N] [--quick] [--dir DIR] [--no-build]
#
#   --runs N     rounds of every measurement (default 5); each figure is the median of the
#                per-round ratios, with their minimum and maximum
#   --quick      3 rounds (unless --runs is given)
#   --dir DIR    where the synthetic captures, the merged corpus capture and the logs go
#                (default ${TMPDIR:-/tmp}/mos-bench; captures already there are reused)
#   --no-build   use the release binaries already built instead of running cargo build
#
# Stages (each timed on stderr; each one's full output is kept in DIR/logs/):
#   build     cargo build --release -p mos-sensor -p mos-tests --bins
#   captures  mkpcap short-flows --conns 20000, bulk --bytes 100000000, http-flows --conns 20000;
#             the corpus's Ethernet pcap files concatenated with mergecap -a (the "mixed"
#             capture)
#   pub       pub-bench, unpinned: --no-publish, publishing with no analyzer, two analyzers
#             (rows 1 and 3), on the short-flows capture
#   pinned    pub-bench --pin, the same modes and one analyzer (pub1) on short flows and bulk
#             (row 2): with 2 CPUs the sensor on one and the analyzers on the other, with 3 or
#             more each on its own; pub1's analyzer always has a CPU to itself, which gives the
#             table's projection for a machine with a CPU for every analyzer
#   core      core-bench --warm-tracker (checksums verified) against memcpy, short flows and
#             bulk (rows 4 and 5)
#   nids      pub-bench --modes nopub,nids: the sensor with --no-publish against the libnids peer
#             (tests/peers/nids-count.c), CPU time of the whole process, on the real-traffic
#             captures (row 6)
# Modes alternate round by round inside every stage. The corpus (MOS_CORPUS_DIR, else
# ../shared/corpus beside the checkout) gives the real-traffic captures: "mixed" is its
# Ethernet pcap files one after the other (mergecap -a); "http" is those of them whose
# MANIFEST.tsv lists app:http and neither a midstream connection nor a bad TCP checksum (so
# that libnids, which follows a connection only from its handshake and here checks no
# checksum, reassembles nearly what mos does), merged the same way (without mergecap, the
# one of them with the most TCP connections carrying payload). Without a corpus, the
# synthetic http-flows capture stands in, and the table says so. A row that cannot be measured
# (no corpus, no mergecap, no libnids-dev, fewer than 2 CPUs) is reported as not measured,
# with the reason.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

runs=""
quick=0
build=1
dir="${TMPDIR:-/tmp}/mos-bench"

while [[ $# -gt 0 ]]; do
    case "$1" in
        --runs)
            [[ $# -ge 2 && "$2" =~ ^[1-9][0-9]*$ ]] || mos_die "--runs needs a positive number"
            runs=$2
            shift 2
            ;;
        --quick) quick=1; shift ;;
        --dir)
            [[ $# -ge 2 ]] || mos_die "--dir needs a directory"
            dir=$2
            shift 2
            ;;
        --no-build) build=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d' | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) mos_die "bench: unknown argument: $1 (try --help)" ;;
    esac
done
if [[ -z "$runs" ]]; then
    if [[ $quick == 1 ]]; then runs=3; else runs=5; fi
fi

mkdir -p "$dir/logs"
dir=$(cd "$dir" && pwd)
logs="$dir/logs"
rm -f "$logs"/*.txt
notes=()
bench_start=$(mos_now)

# Runs "$@" as stage $1 (the rest is the command), its output into logs/$1.txt; times it on
# stderr. A failing stage stops the script with the end of its log.
stage() {
    local name=$1 start
    shift
    start=$(mos_now)
    echo "== $name: $*" >&2
    if ! "$@" >"$logs/$name.txt" 2>&1; then
        tail -n 30 "$logs/$name.txt" >&2
        mos_die "stage $name failed (full log: $logs/$name.txt)"
    fi
    echo "== $name: $(mos_elapsed "$start") s" >&2
}

# --- build -----------------------------------------------------------------------------------
mos_find_cargo || mos_die "cargo not found (install Rust with rustup, then rerun)"
mos_quiet_terminal
if [[ $build == 1 ]]; then
    # shellcheck disable=SC2046
    stage build cargo build --release $(mos_locked_flag) --manifest-path "$MOS_ROOT/Cargo.toml" \
        -p mos-sensor -p mos-tests --bins
fi
bin="${CARGO_TARGET_DIR:-$MOS_ROOT/target}/release"
for b in mos-sensor peek-sink mkpcap pub-bench core-bench; do
    [[ -x "$bin/$b" ]] || mos_die "$bin/$b not found (run without --no-build)"
done
# pub-bench finds the sensor and peek-sink through these, whatever its own location.
export MOS_BIN_DIR="$bin" MOS_SENSOR_BIN="$bin/mos-sensor"

# --- captures --------------------------------------------------------------------------------
captures_start=$(mos_now)
echo "== captures: in $dir" >&2
# make NAME ARGS...: mkpcap ARGS --out DIR/NAME.pcap unless it is there with its .expected.tsv.
make_capture() {
    local name=$1 out="$dir/$1.pcap"
    shift
    if [[ -s "$out" && -s "$out.expected.tsv" ]]; then
        echo "   $name.pcap: reused" >&2
        return
    fi
    rm -f "$out" "$out.expected.tsv"
    "$bin/mkpcap" "$@" --out "$out.tmp" >"$logs/mkpcap-$name.txt" 2>&1 \
        || { tail -n 20 "$logs/mkpcap-$name.txt" >&2; mos_die "mkpcap $* failed"; }
    mv "$out.tmp.expected.tsv" "$out.expected.tsv"
    mv "$out.tmp" "$out"
    echo "   $name.pcap: made (mkpcap $*)" >&2
}
make_capture short20k short-flows --conns 20000
make_capture bulk100m bulk --bytes 100000000
make_capture http20k http-flows --conns 20000
short="$dir/short20k.pcap"
bulk="$dir/bulk100m.pcap"

corpus="${MOS_CORPUS_DIR:-$MOS_ROOT/../shared/corpus}"
manifest="$corpus/pcaps/MANIFEST.tsv"
mixed=""
http=""
http_kind=""
if [[ ! -f "$manifest" ]]; then
    notes+=("no corpus at $corpus (set MOS_CORPUS_DIR): row 6 on mixed traffic is not measured, and the synthetic http-flows capture stands in for real HTTP traffic")
else
    # Columns by name, so that a reordered MANIFEST still reads right. Every HTTP capture
    # that fits the rule, the one with the most TCP connections carrying payload first.
    mapfile -t http_names < <(awk -F'\t' '
        NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
        {
            f = $col["features"]
            if ($col["linktype"] != "ether" || $col["format"] != "pcap") next
            if (f !~ /(^| )app:([a-z0-9-]+,)*http(,|$| )/) next
            if (f ~ /(^| )(midstream|bad-tcp-csum):/) next
            printf "%d\t%d\t%s\n", $col["tcp_streams_with_payload"], $col["packets"], $col["file"]
        }' "$manifest" | sort -t$'\t' -k1,1nr -k2,2nr | cut -f3)
    if [[ ${#http_names[@]} -gt 1 ]] && command -v mergecap >/dev/null 2>&1; then
        http="$dir/http-corpus.pcap"
        if [[ ! -s "$http" ]]; then
            (cd "$corpus/pcaps" && mergecap -a -F pcap -w "$http.tmp" "${http_names[@]}") \
                >"$logs/mergecap-http.txt" 2>&1 \
                || { tail -n 20 "$logs/mergecap-http.txt" >&2; mos_die "mergecap failed"; }
            mv "$http.tmp" "$http"
        fi
        http_kind="real: the corpus's ${#http_names[@]} HTTP captures with no midstream connection or bad checksum, one after the other (mergecap -a)"
    elif [[ ${#http_names[@]} -ge 1 ]]; then
        http="$corpus/pcaps/${http_names[0]}"
        http_kind="real: ${http_names[0]}, the corpus's HTTP capture with the most TCP connections and no midstream connection or bad checksum"
    fi
    if ! command -v mergecap >/dev/null 2>&1; then
        notes+=("mergecap not found (Debian: apt-get install wireshark-common, or tshark): row 6 on mixed traffic is not measured")
    else
        mixed="$dir/mixed-corpus.pcap"
        if [[ -s "$mixed" ]]; then
            echo "   mixed-corpus.pcap: reused" >&2
        else
            # One after the other (-a), each capture's packets in its own order.
            mapfile -t ether < <(awk -F'\t' '
                NR == 1 { for (i = 1; i <= NF; i++) col[$i] = i; next }
                $col["linktype"] == "ether" && $col["format"] == "pcap" { print $col["file"] }' \
                "$manifest")
            [[ ${#ether[@]} -gt 0 ]] || mos_die "no Ethernet pcap capture in $manifest"
            (cd "$corpus/pcaps" && mergecap -a -F pcap -w "$mixed.tmp" "${ether[@]}") \
                >"$logs/mergecap.txt" 2>&1 \
                || { tail -n 20 "$logs/mergecap.txt" >&2; mos_die "mergecap failed"; }
            mv "$mixed.tmp" "$mixed"
            echo "   mixed-corpus.pcap: made (mergecap -a of the corpus's ${#ether[@]} Ethernet pcap files)" >&2
        fi
    fi
fi
if [[ -z "$http" ]]; then
    http="$dir/http20k.pcap"
    if [[ -f "$manifest" ]]; then
        http_kind="SYNTHETIC: mkpcap http-flows --conns 20000, as no corpus capture fits the rule"
    else
        http_kind="SYNTHETIC: mkpcap http-flows --conns 20000, as there is no corpus"
    fi
fi
echo "== captures: $(mos_elapsed "$captures_start") s" >&2

# --- measurements ----------------------------------------------------------------------------
ncpu=$(nproc)
model=$(awk -F': *' '/^model name/ { print $2; exit }' /proc/cpuinfo 2>/dev/null || true)
[[ -n "$model" ]] || model=$(lscpu 2>/dev/null | awk -F': *' '/^Model name/ { print $2; exit }')
[[ -n "$model" ]] || model="unknown"

stage pub "$bin/pub-bench" --runs "$runs" --modes nopub,pub0,pub2 "$short"
if [[ $ncpu -ge 2 ]]; then
    stage pinned "$bin/pub-bench" --runs "$runs" --modes nopub,pub0,pub1,pub2 --pin "$short" "$bulk"
else
    notes+=("only $ncpu CPU: row 2 (pinned) is not measured")
fi
stage core "$bin/core-bench" --runs "$runs" --warm-tracker "$short" "$bulk"
if echo '#include <nids.h>' | cc -E -x c - >/dev/null 2>&1; then
    nids_caps=("$http")
    if [[ -n "$mixed" ]]; then nids_caps+=("$mixed"); fi
    stage nids "$bin/pub-bench" --runs "$runs" --modes nopub,nids "${nids_caps[@]}"
else
    notes+=("libnids-dev is not installed (apt-get install libnids-dev, or scripts/setup.sh): row 6 is not measured")
fi

# --- the table -------------------------------------------------------------------------------
stem() { local b; b=$(basename "$1"); echo "${b%.*}"; }
roles=(--role "short=$(stem "$short")" --role "bulk=$(stem "$bulk")" --role "http=$(stem "$http")")
if [[ -n "$mixed" ]]; then roles+=(--role "mixed=$(stem "$mixed")"); fi
hugepages=$(grep -h -m1 -o 'shared memory: .*' "$logs/pub.txt" || echo "shared memory: (no line from the sensor)")
pinning=$(grep -h -m1 -o 'pinned: [^;]*' "$logs/pinned.txt" 2>/dev/null || echo "not pinned")

echo
echo "# mos benchmark (issue 18): $(date -u '+%Y-%m-%d %H:%M UTC'), commit $(git -C "$MOS_ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)"
echo
echo "- machine: $ncpu CPUs usable, $model"
echo "- rounds: $runs per figure; each figure is the median (min-max) of the per-round ratios"
echo "- the sensor's default --hugepages (auto): $hugepages"
echo "- row 2: $pinning"
echo "- captures: short = $short, bulk = $bulk"
echo "- http (row 6): $http ($http_kind)"
echo "- mixed (row 6): ${mixed:-none}"
for n in "${notes[@]}"; do
    echo "- not measured: $n"
done
echo
reports=()
for s in pub pinned core nids; do
    if [[ -f "$logs/$s.txt" ]]; then reports+=("$logs/$s.txt"); fi
done
"$bin/pub-bench" --report "${roles[@]}" "${reports[@]}"
echo
echo "Rows (the issue's): 1 sensor CPU time with two peek-sink analyzers over --no-publish,"
echo "unpinned; 2a, 2b throughput with two analyzers over --no-publish, pinned; 3 each analyzer's"
echo "peek bandwidth over memcpy of the same chunks, unpinned; 4 core-bench --warm-tracker,"
echo "checksums verified; 5 the core's payload bandwidth over memcpy's; 6a, 6b mos-sensor"
echo "--no-publish CPU time over libnids' (whole processes, start-up included). Status compares"
echo "the median with the target. The projection for a CPU per analyzer (when printed) adds, for"
echo "each analyzer, what one analyzer on a CPU of its own (pub1, pinned) cost over publishing to"
echo "none (pub0, pinned): an estimate that leans high (the work shared by all analyzers is"
echo "counted once per analyzer), not a measurement of two. Logs: $logs"
echo "== total: $(mos_elapsed "$bench_start") s" >&2
