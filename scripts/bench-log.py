#!/usr/bin/env python3
"""mos-log's cost, beside mos-dump (the cost of copying the streams alone) and beside tshark
producing the same HTTP and TLS fields, on the same captures in the same run.

    scripts/bench-log.py [--runs N] [--bin DIR] [--keep DIR] CAPTURE...

For each capture and each run, in turn (the modes alternate so that a noisy neighbour spreads
over all of them):
  peek    mos-sensor --pcap CAPTURE with peek-sink attached: every stream byte read with peek
          and thrown away (the cost of copying alone)
  dump    mos-sensor --pcap CAPTURE with mos-dump --out attached: the copy, plus two files
          and two SHA-256 per connection
  log     mos-sensor --pcap CAPTURE with mos-log --out attached (every log)
  tshark  tshark -r CAPTURE -T fields with the HTTP request/response and TLS hello fields
and reports, as medians over the runs, the CPU time (user + system, from wait4) of the
analyzer, of the sensor, and of tshark; mos-log's connections and HTTP requests per second of
its CPU time; and the ratios mos-log / peek-sink, mos-log / mos-dump and mos-log / tshark. The machine's CPU count
and model head the table. Nothing here is a pass/fail check: it prints figures.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

TSHARK_FIELDS = [
    "tcp.stream", "http.request.method", "http.host", "http.request.uri",
    "http.response.code", "tls.handshake.extensions_server_name", "tls.handshake.ja3",
    "tls.handshake.version",
]
TSHARK_FILTER = "http.request or http.response or tls.handshake.type == 1 or tls.handshake.type == 2"


def cpu_model():
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def wait_rusage(proc):
    """Waits for proc; returns (exit status, CPU seconds user + system)."""
    _, status, ru = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return proc.returncode, ru.ru_utime + ru.ru_stime


def run_sensor_with(bindir, capture, analyzer, scratch):
    """One replay with one analyzer attached; returns a dict of CPU times and counts."""
    run = tempfile.mkdtemp(prefix="run.", dir=scratch)
    sock = os.path.join(run, "control.sock")
    out = os.path.join(run, "out")
    sensor_log = open(os.path.join(run, "sensor.log"), "wb")
    ana_log = open(os.path.join(run, "analyzer.log"), "wb")
    t0 = time.monotonic()
    sensor = subprocess.Popen(
        [os.path.join(bindir, "mos-sensor"), "--pcap", capture, "--control", sock,
         "--wait-analyzers", "1"], stdout=subprocess.DEVNULL, stderr=sensor_log)
    for _ in range(400):
        if os.path.exists(sock) or sensor.poll() is not None:
            break
        time.sleep(0.01)
    args = [os.path.join(bindir, analyzer), "--control", sock]
    if analyzer != "peek-sink":
        args += ["--out", out]
    ana = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=ana_log)
    a_rc, a_cpu = wait_rusage(ana)
    s_rc, s_cpu = wait_rusage(sensor)
    wall = time.monotonic() - t0
    sensor_log.close()
    ana_log.close()
    if a_rc != 0 or s_rc != 0:
        with open(os.path.join(run, "analyzer.log"), encoding="utf-8", errors="replace") as f:
            tail = f.read()[-2000:]
        sys.exit(f"{analyzer} on {capture}: analyzer exit {a_rc}, sensor exit {s_rc}\n{tail}")
    counts = {}
    for log in ("conn", "http", "tls", "ssh", "weird"):
        p = os.path.join(out, f"{log}.jsonl")
        if os.path.exists(p):
            with open(p, "rb") as f:
                counts[log] = sum(1 for _ in f)
    if analyzer == "mos-dump":
        with open(os.path.join(out, "flows.jsonl"), "rb") as f:
            counts["conn"] = sum(1 for _ in f)
    shutil.rmtree(run, ignore_errors=True)
    return {"analyzer_cpu": a_cpu, "sensor_cpu": s_cpu, "wall": wall, "counts": counts}


def run_tshark(capture):
    cmd = ["tshark", "-r", capture, "-n", "-Y", TSHARK_FILTER, "-T", "fields"]
    for f in TSHARK_FIELDS:
        cmd += ["-e", f]
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    lines = 0
    for _ in p.stdout:
        lines += 1
    rc, cpu = wait_rusage(p)
    if rc != 0:
        sys.exit(f"tshark on {capture} failed with exit status {rc}")
    return {"cpu": cpu, "wall": time.monotonic() - t0, "lines": lines}


def med(xs):
    return statistics.median(xs) if xs else float("nan")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=5, help="runs of each mode (default 5)")
    ap.add_argument("--bin", default=None, help="where the release binaries are "
                    "(default: target/release of this checkout)")
    ap.add_argument("captures", nargs="+")
    a = ap.parse_args()
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    bindir = a.bin or os.path.join(os.environ.get("CARGO_TARGET_DIR", os.path.join(root, "target")),
                                   "release")
    for b in ("mos-sensor", "mos-log", "mos-dump", "peek-sink"):
        if not os.access(os.path.join(bindir, b), os.X_OK):
            sys.exit(f"{bindir}/{b} is missing: cargo build --release -p mos-sensor "
                     "-p mos-analyzers --bins && cargo build --release -p mos-tests --bin peek-sink")
    if shutil.which("tshark") is None:
        sys.exit("tshark is missing (apt-get install tshark)")
    scratch = tempfile.mkdtemp(prefix="mos-bench-log.")
    print(f"machine: {os.cpu_count()} CPUs, {cpu_model()}; {a.runs} runs of each mode, medians")
    print()
    header = ("capture", "conns", "HTTP req", "peek CPU s", "dump CPU s", "log CPU s",
              "log/peek", "log/dump", "tshark CPU s", "log/tshark",
              "sensor CPU s (peek, dump, log)", "log conns/CPU-s", "log req/CPU-s")
    rows = []
    try:
        for cap in a.captures:
            res = {"peek": [], "dump": [], "log": [], "tshark": []}
            names = {"peek": "peek-sink", "dump": "mos-dump", "log": "mos-log"}
            for i in range(a.runs):
                order = ["peek", "dump", "log", "tshark"]
                order = order[i % 4:] + order[:i % 4]
                for mode in order:
                    if mode == "tshark":
                        res[mode].append(run_tshark(cap))
                    else:
                        res[mode].append(run_sensor_with(bindir, cap, names[mode], scratch))
                print(f"  {os.path.basename(cap)}: run {i + 1} of {a.runs} done", file=sys.stderr)
            counts = res["log"][-1]["counts"]
            conns, reqs = counts.get("conn", 0), counts.get("http", 0)
            peek_cpu = med([r["analyzer_cpu"] for r in res["peek"]])
            dump_cpu = med([r["analyzer_cpu"] for r in res["dump"]])
            log_cpu = med([r["analyzer_cpu"] for r in res["log"]])
            ts_cpu = med([r["cpu"] for r in res["tshark"]])
            s_peek = med([r["sensor_cpu"] for r in res["peek"]])
            s_dump = med([r["sensor_cpu"] for r in res["dump"]])
            s_log = med([r["sensor_cpu"] for r in res["log"]])
            rows.append((os.path.basename(cap), str(conns), str(reqs), f"{peek_cpu:.3f}",
                         f"{dump_cpu:.3f}", f"{log_cpu:.3f}", f"{log_cpu / peek_cpu:.2f}",
                         f"{log_cpu / dump_cpu:.2f}", f"{ts_cpu:.3f}", f"{log_cpu / ts_cpu:.3f}",
                         f"{s_peek:.3f}, {s_dump:.3f}, {s_log:.3f}",
                         f"{conns / log_cpu:,.0f}", f"{reqs / log_cpu:,.0f}"))
            print(json.dumps({"capture": cap, "counts": counts,
                              "peek_cpu": [r["analyzer_cpu"] for r in res["peek"]],
                              "dump_cpu": [r["analyzer_cpu"] for r in res["dump"]],
                              "log_cpu": [r["analyzer_cpu"] for r in res["log"]],
                              "tshark_cpu": [r["cpu"] for r in res["tshark"]],
                              "sensor_cpu_peek": [r["sensor_cpu"] for r in res["peek"]],
                              "sensor_cpu_dump": [r["sensor_cpu"] for r in res["dump"]],
                              "sensor_cpu_log": [r["sensor_cpu"] for r in res["log"]]}),
                  file=sys.stderr)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)
    widths = [max(len(r[c]) for r in rows + [header]) for c in range(len(header))]
    for r in [header] + rows:
        print(" | ".join(r[c].rjust(widths[c]) if c else r[c].ljust(widths[c])
                         for c in range(len(r))))


if __name__ == "__main__":
    main()
