#!/usr/bin/env bash
# Reserve 2 MiB hugepages for the sensor where the kernel allows it.
#
# Idempotent: it only ever raises the reservation and mounts hugetlbfs once. It never fails
# for lack of permission (containers, CI): the sensor then runs on ordinary memory
# (DPDK's --no-huge), so this prints one line saying so and exits 0.
#
#   deploy/hugepages.sh [--pages N]   reserve at least N pages (default 256 = 512 MiB)
#   deploy/hugepages.sh --pages auto --sensor BIN [--config FILE]
#                                     as many as the sensor's configuration takes
#                                     (BIN --print-hugepages), at most half the memory
#   deploy/hugepages.sh --check       only report the current state
set -euo pipefail

pages=256
fallback_pages=256
sensor=""
config=""
check_only=0
mountpoint_dir=/dev/hugepages
nr_file=/proc/sys/vm/nr_hugepages

usage() {
    sed -n '2,9p' "$0" | sed 's/^# \{0,1\}//'
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --pages)
            [[ $# -ge 2 && "$2" =~ ^([0-9]+|auto)$ ]] || { echo "hugepages: --pages needs a number or auto" >&2; exit 2; }
            pages=$2
            shift 2
            ;;
        --pages=*)
            pages=${1#--pages=}
            [[ "$pages" =~ ^([0-9]+|auto)$ ]] || { echo "hugepages: --pages needs a number or auto" >&2; exit 2; }
            shift
            ;;
        --sensor)
            [[ $# -ge 2 ]] || { echo "hugepages: --sensor needs a path" >&2; exit 2; }
            sensor=$2
            shift 2
            ;;
        --config)
            [[ $# -ge 2 ]] || { echo "hugepages: --config needs a path" >&2; exit 2; }
            config=$2
            shift 2
            ;;
        --check) check_only=1; shift ;;
        -h|--help) usage; exit 0 ;;
        *) echo "hugepages: unknown argument: $1" >&2; usage >&2; exit 2 ;;
    esac
done

current_pages() {
    cat "$nr_file" 2>/dev/null || echo 0
}

is_mounted() {
    grep -qs " $mountpoint_dir hugetlbfs " /proc/mounts
}

report() {
    local n free mounted
    n=$(current_pages)
    free=$(awk '/^HugePages_Free:/ {print $2}' /proc/meminfo 2>/dev/null || echo 0)
    if is_mounted; then mounted="mounted at $mountpoint_dir"; else mounted="hugetlbfs not mounted"; fi
    echo "hugepages: ${n} x 2 MiB reserved, ${free:-0} free, ${mounted}"
}

unavailable() {
    echo "hugepages: unavailable here ($1); the sensor will use ordinary memory"
    exit 0
}

if [[ $check_only -eq 1 ]]; then
    report
    exit 0
fi

if [[ "$pages" == auto ]]; then
    [[ -n "$sensor" ]] || { echo "hugepages: --pages auto needs --sensor BIN" >&2; exit 2; }
    args=(--print-hugepages)
    [[ -n "$config" ]] && args=(--config "$config" --print-hugepages)
    errfile=$(mktemp)
    trap 'rm -f "$errfile"' EXIT
    if out=$("$sensor" "${args[@]}" 2>"$errfile") && [[ "$out" =~ ^[0-9]+$ ]]; then
        # Never more than half the memory: the rest of the host needs it, and a sensor that
        # finds too few pages runs on ordinary memory anyway.
        total_kib=$(awk '/^MemTotal:/ {print $2}' /proc/meminfo 2>/dev/null || echo 0)
        cap=$(( total_kib / 2 / 2048 ))
        if [[ $out -gt $cap ]]; then
            echo "hugepages: the sensor's configuration takes $out x 2 MiB; reserving at most half the memory, $cap"
            pages=$cap
        else
            echo "hugepages: the sensor's configuration takes $out x 2 MiB"
            pages=$out
        fi
    else
        why=$(grep -m1 'error' "$errfile" || true)
        echo "hugepages: cannot ask the sensor how many pages it takes (${why:-no number from $sensor}); reserving $fallback_pages"
        pages=$fallback_pages
    fi
fi

[[ -e "$nr_file" ]] || unavailable "kernel has no $nr_file"

if [[ $(current_pages) -lt $pages ]]; then
    # A read-only /proc/sys (containers) or a non-root user makes this write fail.
    if ! { echo "$pages" > "$nr_file"; } 2>/dev/null; then
        unavailable "cannot write $nr_file"
    fi
fi
# The kernel may grant fewer pages than asked when memory is fragmented.
if [[ $(current_pages) -eq 0 ]]; then
    unavailable "the kernel granted no pages"
fi

if ! is_mounted; then
    mkdir -p "$mountpoint_dir" 2>/dev/null || true
    if ! mount -t hugetlbfs -o pagesize=2M nodev "$mountpoint_dir" 2>/dev/null; then
        # DPDK's --in-memory mode works without the mount (memfd), so this is not fatal.
        echo "hugepages: could not mount hugetlbfs at $mountpoint_dir (DPDK --in-memory still works)"
    fi
fi

report
