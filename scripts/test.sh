#!/usr/bin/env bash
# The whole test suite: setup, then each stage timed, stopping at the first failure.
#
#   scripts/test.sh [--no-setup] [--no-apt] [--only STAGE[,STAGE...]]
#
# Stages, in order: fmt clippy build package unit loom integration doc fuzz
#   fmt          cargo fmt --check
#   clippy       cargo clippy on every target, warnings are errors
#   build        release build of every binary and example analyzer (mos-log and mos-grep with
#                their Kafka output, cargo feature mos-analyzers/kafka, as in every stage), and of
#                the C library libmos (libmos.so, libmos.a): the integration tests run, install
#                and link them
#   package      the Debian packages of that build (scripts/package.sh --no-build) into
#                target/debian; the integration stage's tests/tests/package.rs lints,
#                installs and purges them (MOS_DEB_DIR)
#   unit         every test of the crates other than mos-tests (unit tests beside the code,
#                the TCP core's API tests in sensor/tests, doc tests), debug build
#   loom         the loom models of the shared-memory protocols (seqlock, event ring, packet
#                log, stream chunks), release build with --cfg loom in its own target directory
#   integration  the mos-tests package (corpus runner, multi-process tests, and the network
#                tests in namespaces: live.rs, impaired.rs), release build, with MOS_SENSOR_BIN
#                pointing at the release mos-sensor
#   doc          rustdoc, warnings are errors
#   fuzz         every cargo-fuzz target in fuzz/ for MOS_FUZZ_SECONDS (default 20) from its
#                seeds (scripts/fuzz.sh; installs cargo-fuzz if missing)
#
# PROPTEST_CASES, if set, is passed on to the tests. With CI=true cargo prints no colours or
# progress bars. Exits non-zero, naming the stage, at the first stage that fails.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

all_stages=(fmt clippy build package unit loom integration doc fuzz)
run_setup=1
setup_args=()
only=""

while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-setup) run_setup=0; shift ;;
        --no-apt) setup_args+=(--no-apt); shift ;;
        --only)
            [[ $# -ge 2 ]] || mos_die "--only needs a comma-separated list of stages"
            only=$2
            shift 2
            ;;
        -h|--help) sed -n '2,28p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) mos_die "test: unknown argument: $1 (try --help)" ;;
    esac
done

if [[ -n "$only" ]]; then
    IFS=, read -r -a wanted <<<"$only"
    for s in "${wanted[@]}"; do
        [[ " ${all_stages[*]} " == *" $s "* ]] || mos_die "unknown stage '$s' (stages: ${all_stages[*]})"
    done
else
    wanted=("${all_stages[@]}")
fi

cd "$MOS_ROOT"
mos_quiet_terminal
if [[ "${CI:-}" == "true" ]]; then
    # A fresh clone builds once; incremental artefacts would only cost time and disk.
    export CARGO_INCREMENTAL=0
fi
if [[ -n "${PROPTEST_CASES:-}" ]]; then
    export PROPTEST_CASES
fi

total_start=$(mos_now)
stage_names=()
stage_times=()
stage_results=()
test_log=$(mktemp "${TMPDIR:-/tmp}/mos-test-output.XXXXXX")
trap 'rm -f "$test_log"' EXIT

summary() {
    local i
    echo
    echo "== summary"
    printf '   %-12s %-8s %10s\n' stage result seconds
    for i in "${!stage_names[@]}"; do
        printf '   %-12s %-8s %10s\n' "${stage_names[$i]}" "${stage_results[$i]}" "${stage_times[$i]}"
    done
    printf '   %-12s %-8s %10s\n' total "" "$(mos_elapsed "$total_start")"
    # cargo prints one "test result:" line per test binary; add them up into the one closing
    # line that CI and people read.
    if grep -q 'test result:' "$test_log"; then
        awk '/test result:/ {
                for (i = 1; i <= NF; i++) {
                    w = $i; gsub(/[^a-z]/, "", w)
                    if (w == "passed") p += $(i - 1)
                    if (w == "failed") f += $(i - 1)
                    if (w == "ignored") s += $(i - 1)
                }
             }
             END { printf "tests: %d passed, %d failed, %d skipped\n", p, f, s }' "$test_log"
    fi
}

# run_stage NAME COMMAND...: runs one stage, timed; on failure prints the summary and exits.
run_stage() {
    local name=$1 start rc
    shift
    [[ " ${wanted[*]} " == *" $name "* ]] || return 0
    echo
    echo "== stage $name: $*"
    start=$(mos_now)
    set +e
    if [[ $name == unit || $name == integration ]]; then
        "$@" 2>&1 | tee -a "$test_log"
        rc=${PIPESTATUS[0]}
    else
        "$@"
        rc=$?
    fi
    set -e
    stage_names+=("$name")
    stage_times+=("$(mos_elapsed "$start")")
    if [[ $rc -ne 0 ]]; then
        stage_results+=(FAILED)
        echo "== stage $name FAILED (exit $rc) after ${stage_times[-1]} s"
        summary
        echo "FAILED at stage $name"
        exit "$rc"
    fi
    stage_results+=(ok)
    echo "== stage $name ... done in ${stage_times[-1]} s"
}

if [[ $run_setup -eq 1 ]]; then
    wanted+=(setup)
    run_stage setup bash "$MOS_ROOT/scripts/setup.sh" "${setup_args[@]}"
else
    mos_find_cargo || mos_die "cargo not found (run scripts/setup.sh for how to install Rust)"
fi
mos_find_cargo || mos_die "cargo not found"

locked=$(mos_locked_flag)
if [[ -z "$locked" ]]; then
    echo "warning: no Cargo.lock in the checkout; dependencies are resolved afresh (commit Cargo.lock)"
fi
target_dir=${CARGO_TARGET_DIR:-$MOS_ROOT/target}
export MOS_SENSOR_BIN=${MOS_SENSOR_BIN:-$target_dir/release/mos-sensor}
# Sensors the tests start read no /etc/mos/sensor.toml a host may have (an installed mos).
export MOS_SENSOR_CONFIG=""
echo "cargo $(cargo --version | cut -d' ' -f2); MOS_SENSOR_BIN=$MOS_SENSOR_BIN; PROPTEST_CASES=${PROPTEST_CASES:-default}"
if [[ -d "$MOS_ROOT/../shared/corpus" ]]; then
    echo "corpus: $(cd "$MOS_ROOT/../shared/corpus" && pwd)"
else
    echo "note: no corpus at ../shared/corpus beside the checkout"
fi

# mos-log's and mos-grep's Kafka output (librdkafka, from setup.sh's librdkafka-dev) is a
# cargo feature: built, linted and tested everywhere here.
kafka="--features mos-analyzers/kafka"

# $locked and $kafka are deliberately unquoted: empty or flags.
# shellcheck disable=SC2086
{
    run_stage fmt cargo fmt --all -- --check
    run_stage clippy cargo clippy --workspace --all-targets $kafka $locked -- -D warnings
    run_stage build bash -c "cargo build --workspace --release --bins --examples $kafka $locked &&
        cargo build --release -p mos-capi --lib $locked"
    run_stage package bash "$MOS_ROOT/scripts/package.sh" --no-build --out "$target_dir/debian"
    if [[ " ${wanted[*]} " == *" package "* ]]; then
        # The packages this run made are the ones tests/tests/package.rs checks.
        export MOS_DEB_DIR="$target_dir/debian"
    fi
    run_stage unit cargo test --workspace --exclude mos-tests --no-fail-fast $kafka $locked
    # Its own target directory: --cfg loom rebuilds every dependency differently.
    run_stage loom env RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$target_dir/loom" \
        cargo test -p shm-layout --release --test loom $locked
    if [[ " ${wanted[*]} " == *" integration "* && ! -x "$MOS_SENSOR_BIN" ]]; then
        echo "== stage integration: $MOS_SENSOR_BIN is missing; building it first"
        cargo build --release -p mos-sensor --bin mos-sensor $locked
    fi
    if [[ " ${wanted[*]} " == *" integration "* && ! -f "$(dirname "$MOS_SENSOR_BIN")/libmos.so" ]]; then
        echo "== stage integration: libmos.so is missing beside $MOS_SENSOR_BIN; building it first"
        cargo build --release -p mos-capi --lib $locked
    fi
    run_stage integration cargo test --release -p mos-tests --no-fail-fast $kafka $locked
    run_stage doc env RUSTDOCFLAGS="${RUSTDOCFLAGS:-} -Dwarnings" cargo doc --workspace --no-deps $kafka $locked
    run_stage fuzz bash scripts/fuzz.sh --seconds "${MOS_FUZZ_SECONDS:-20}"
}

summary
echo "all stages passed"
