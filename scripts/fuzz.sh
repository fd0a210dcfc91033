#!/usr/bin/env bash
# Runs the cargo-fuzz targets in fuzz/, each for a while, from the seed inputs in fuzz/seeds.
#
#   scripts/fuzz.sh [--seconds N] [--jobs J] [TARGET...]
#
# With no TARGET, every target `cargo fuzz list` names. Each run starts from a fresh copy of
# fuzz/seeds/TARGET (if it exists) in target/fuzz-corpus/TARGET, so a run never depends on an
# earlier one, with the dictionary fuzz/TARGET.dict if there is one. cargo-fuzz is installed
# first if missing (cargo install, about two minutes).
# Fuzzing needs nightly-only compiler flags; RUSTC_BOOTSTRAP=1 lets the stable toolchain take
# them. A crash or leak fails the script, naming the target and the input libFuzzer saved.
# Prints each target's executions and executions per second.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

seconds=30
jobs=1
targets=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --seconds) [[ $# -ge 2 ]] || mos_die "--seconds needs a number"; seconds=$2; shift 2 ;;
        --jobs) [[ $# -ge 2 ]] || mos_die "--jobs needs a number"; jobs=$2; shift 2 ;;
        -h|--help) sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        -*) mos_die "fuzz: unknown option: $1 (try --help)" ;;
        *) targets+=("$1"); shift ;;
    esac
done
[[ "$seconds" =~ ^[0-9]+$ && "$seconds" -gt 0 ]] || mos_die "--seconds wants a positive whole number"

mos_find_cargo || mos_die "cargo not found (run scripts/setup.sh)"
cd "$MOS_ROOT"
if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "installing cargo-fuzz (cargo install cargo-fuzz --locked)"
    cargo install cargo-fuzz --locked --version 0.13.2 >/dev/null \
        || mos_die "could not install cargo-fuzz"
fi
export RUSTC_BOOTSTRAP=1
if [[ ${#targets[@]} -eq 0 ]]; then
    mapfile -t targets < <(cargo fuzz list)
fi

# One build of every target, debug assertions on (so overflows are found too).
echo "building the fuzz targets (cargo fuzz build -a)"
cargo fuzz build -a >/dev/null 2>&1 || { cargo fuzz build -a; mos_die "the fuzz targets do not build"; }

corpus_root="${CARGO_TARGET_DIR:-$MOS_ROOT/target}/fuzz-corpus"
failed=()
for t in "${targets[@]}"; do
    corpus="$corpus_root/$t"
    rm -rf "$corpus"
    mkdir -p "$corpus"
    if [[ -d "fuzz/seeds/$t" ]]; then
        cp -r "fuzz/seeds/$t/." "$corpus/"
    fi
    log="$corpus_root/$t.log"
    start=$(mos_now)
    dict=()
    if [[ -f "fuzz/$t.dict" ]]; then
        dict=(-dict="fuzz/$t.dict")
    fi
    parallel=()
    if [[ "$jobs" -gt 1 ]]; then
        # libFuzzer writes each job's log as fuzz-N.log in the working directory.
        parallel=(-jobs="$jobs" -workers="$jobs")
    fi
    if cargo fuzz run -a "$t" "$corpus" -- -max_total_time="$seconds" "${dict[@]}" "${parallel[@]}" \
        -print_final_stats=1 -rss_limit_mb=4096 \
        -artifact_prefix="$corpus_root/$t-" >"$log" 2>&1; then
        if [[ "$jobs" -gt 1 ]]; then
            cat fuzz-*.log >>"$log" 2>/dev/null || true
            rm -f fuzz-*.log
        fi
        execs=$(grep -h 'stat::number_of_executed_units' "$log" | awk '{s += $2} END {print s + 0}')
        echo "fuzz $t: $execs executions in $(mos_elapsed "$start") s ($((execs / seconds)) per second), no crash"
    else
        echo "fuzz $t: FAILED; the end of its log ($log):"
        tail -30 "$log"
        failed+=("$t")
    fi
done
if [[ ${#failed[@]} -gt 0 ]]; then
    mos_die "fuzzing found a problem in: ${failed[*]} (the crashing inputs are in $corpus_root)"
fi
