#!/usr/bin/env bash
# The demo: set up, build the sensor and the analyzers, replay a small bundled HTTP capture
# through mos-sensor with three analyzers attached as separate processes (mos-flowstat showing
# the live connections, mos-dump writing the streams, mos-log writing Zeek-style connection and
# HTTP logs), and show what they saw: flowstat's view, one row per TCP connection, the HTTP
# requests and responses from mos-log's http.jsonl, then the start of one request and its
# response from the streams.
#
#   scripts/demo.sh [--no-setup] [--no-apt] [--pcap FILE] [--out DIR] [--speed X]
#
#   --pcap FILE   a capture to show instead of demo/workshop_2011_browse.pcap
#   --out DIR     where mos-dump writes flows.jsonl and the streams, and mos-log its logs
#                 (DIR/logs) (default: a new temporary directory, kept and printed at the end)
#   --speed X     replay at X times the capture's pace (default 4: the 15 s capture takes
#                 about 4 s, so flowstat has live connections to show)
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

run_setup=1
setup_args=()
pcap="$MOS_ROOT/demo/workshop_2011_browse.pcap"
out=""
speed=4

while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-setup) run_setup=0; shift ;;
        --no-apt) setup_args+=(--no-apt); shift ;;
        --pcap) [[ $# -ge 2 ]] || mos_die "--pcap needs a file"; pcap=$2; shift 2 ;;
        --out) [[ $# -ge 2 ]] || mos_die "--out needs a directory"; out=$2; shift 2 ;;
        --speed) [[ $# -ge 2 ]] || mos_die "--speed needs a factor"; speed=$2; shift 2 ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) mos_die "demo: unknown argument: $1 (try --help)" ;;
    esac
done

[[ -f "$pcap" ]] || mos_die "capture not found: $pcap"
cd "$MOS_ROOT"
mos_quiet_terminal
demo_start=$(mos_now)

if [[ $run_setup -eq 1 ]]; then
    bash "$MOS_ROOT/scripts/setup.sh" "${setup_args[@]}"
fi
mos_find_cargo || mos_die "cargo not found (run scripts/setup.sh for how to install Rust)"

echo "== demo: building mos-sensor and the analyzers (release)"
build_start=$(mos_now)
# shellcheck disable=SC2046  # empty or one flag
cargo build --release -p mos-sensor -p mos-analyzers --bins $(mos_locked_flag)
echo "built in $(mos_elapsed "$build_start") s"
bin="${CARGO_TARGET_DIR:-$MOS_ROOT/target}/release"

if [[ -z "$out" ]]; then
    out=$(mktemp -d "${TMPDIR:-/tmp}/mos-demo.XXXXXX")
else
    mkdir -p "$out"
fi
run_dir=$(mktemp -d "${TMPDIR:-/tmp}/mos-demo-run.XXXXXX")
sock="$run_dir/control.sock"
pids=()
cleanup() {
    for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
    rm -rf "$run_dir"
}
trap cleanup EXIT

echo
echo "== demo: mos-sensor --pcap $pcap --speed $speed --control $sock --wait-analyzers 3"
echo "The sensor reassembles every TCP connection once and publishes it in shared memory;"
echo "mos-flowstat, mos-dump and mos-log are separate, unprivileged-capable processes that"
echo "attach to it over the control socket and read the shared memory read-only."
run_start=$(mos_now)
# The default sizes fit the 256 hugepages of 2 MiB that scripts/setup.sh reserves; without
# enough free hugepages the sensor says so and uses ordinary shared memory.
"$bin/mos-sensor" --pcap "$pcap" --speed "$speed" --control "$sock" --wait-analyzers 3 \
    2> "$run_dir/sensor.log" &
sensor_pid=$!
pids+=("$sensor_pid")
for _ in $(seq 100); do
    [[ -S "$sock" ]] && break
    kill -0 "$sensor_pid" 2>/dev/null || break
    sleep 0.05
done
[[ -S "$sock" ]] || { cat "$run_dir/sensor.log" >&2; mos_die "the sensor did not open $sock"; }
"$bin/mos-flowstat" --control "$sock" > "$run_dir/flowstat.out" 2> "$run_dir/flowstat.log" &
flowstat_pid=$!
pids+=("$flowstat_pid")
"$bin/mos-dump" --control "$sock" --out "$out" 2> "$run_dir/dump.log" &
dump_pid=$!
pids+=("$dump_pid")
"$bin/mos-log" --control "$sock" --logs conn,http --out "$out/logs" 2> "$run_dir/log.log" &
log_pid=$!
pids+=("$log_pid")
status=0
wait "$sensor_pid" || status=$?
wait "$dump_pid" || status=$?
wait "$log_pid" || status=$?
wait "$flowstat_pid" || status=$?
pids=()
echo "sensor and analyzers finished in $(mos_elapsed "$run_start") s"

echo
echo "== demo: what the sensor said (stderr)"
sed 's/^/   /' "$run_dir/sensor.log"
echo
echo "== demo: mos-flowstat (one snapshot a second, then its summary)"
sed 's/^/   /' "$run_dir/flowstat.out"
sed 's/^/   /' "$run_dir/flowstat.log"
echo
echo "== demo: mos-dump"
sed 's/^/   /' "$run_dir/dump.log"
echo
echo "== demo: mos-log"
sed 's/^/   /' "$run_dir/log.log"
[[ $status -eq 0 ]] || mos_die "a process of the demo failed (exit status $status); see above"
[[ -f "$out/flows.jsonl" ]] || mos_die "mos-dump wrote no $out/flows.jsonl"
[[ -f "$out/logs/conn.jsonl" ]] || mos_die "mos-log wrote no $out/logs/conn.jsonl"

echo
python3 - "$out" <<'PY'
import json, os, sys

out = sys.argv[1]
with open(os.path.join(out, "flows.jsonl"), encoding="utf-8") as f:
    flows = [json.loads(line) for line in f if line.strip()]

def num(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return None

def duration(fl):
    a, b = num(fl.get("start_ts")), num(fl.get("end_ts"))
    return "?" if a is None or b is None else f"{b - a:.3f}"

def path_of(p):
    if not p:
        return None
    return p if os.path.isabs(p) else os.path.join(out, p)

print(f"== demo: {len(flows)} TCP connections (from flows.jsonl)")
header = ("#", "client", "", "server", "c2s bytes", "s2c bytes", "lost c2s/s2c", "seconds")
rows = []
for i, fl in enumerate(flows):
    client = str(fl.get("client", "?")) + (" (guessed)" if fl.get("client_guessed") else "")
    rows.append((str(i), client, "->", str(fl.get("server", "?")),
                 str(fl.get("c2s_bytes", "?")), str(fl.get("s2c_bytes", "?")),
                 f"{fl.get('c2s_lost', '?')}/{fl.get('s2c_lost', '?')}", duration(fl)))
widths = [max(len(r[c]) for r in rows + [header]) for c in range(len(header))]
right = {0, 4, 5, 6, 7}
def fmt(r):
    return "  ".join(r[c].rjust(widths[c]) if c in right else r[c].ljust(widths[c])
                     for c in range(len(r)))
print(fmt(header))
for r in rows:
    print(fmt(r))

# mos-log's HTTP records: one line per request/response pair.
http_log = os.path.join(out, "logs", "http.jsonl")
http = []
if os.path.isfile(http_log):
    with open(http_log, encoding="utf-8") as f:
        http = [json.loads(line) for line in f if line.strip()]
print()
print(f"== demo: {len(http)} HTTP requests and responses (from mos-log's {http_log})")
if http:
    header = ("client", "method", "host", "uri", "status", "resp. body")
    rows = []
    for r in http:
        uri = str(r.get("uri", "-"))
        uri = uri if len(uri) <= 48 else uri[:45] + "..."
        rows.append((f"{r.get('id.orig_h')}:{r.get('id.orig_p')}", str(r.get("method", "-")),
                     str(r.get("host", "-")), uri, str(r.get("status_code", "-")),
                     str(r.get("response_body_len", "-"))))
    widths = [max(len(x[c]) for x in rows + [header]) for c in range(len(header))]
    for r in [header] + rows[:25]:
        print("  ".join(r[c].rjust(widths[c]) if c >= 4 else r[c].ljust(widths[c])
                        for c in range(len(r))))
    if len(rows) > 25:
        print(f"... and {len(rows) - 25} more in {http_log}")

# The first connection whose client stream looks like an HTTP request.
methods = (b"GET ", b"POST ", b"HEAD ", b"PUT ", b"DELETE ", b"OPTIONS ")
for i, fl in enumerate(flows):
    c2s = path_of(fl.get("c2s_file"))
    if not c2s or not os.path.isfile(c2s):
        continue
    with open(c2s, "rb") as f:
        req = f.read(4096)
    if not req.startswith(methods):
        continue
    s2c = path_of(fl.get("s2c_file"))
    resp = b""
    if s2c and os.path.isfile(s2c):
        with open(s2c, "rb") as f:
            resp = f.read(4096)
    for label, data, path in (("request", req, c2s), ("response", resp, s2c)):
        print()
        print(f"== demo: connection #{i}, first lines of the {label} ({path})")
        # The header block only: up to the first empty line, at most 12 lines.
        lines = data.decode("latin-1").split("\r\n\r\n")[0].split("\r\n")[:12]
        for line in lines:
            print("   " + "".join(ch if ch.isprintable() else "." for ch in line))
    break
else:
    print()
    print("no connection in this capture starts with an HTTP request")
PY

echo
echo "== demo done in $(mos_elapsed "$demo_start") s; mos-dump's output is in $out, mos-log's in $out/logs"
