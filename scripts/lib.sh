# Helpers shared by scripts/setup.sh, scripts/test.sh and scripts/demo.sh; sourced, not run.
# shellcheck shell=bash

# The repository root, whatever directory the script was started from.
MOS_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
export MOS_ROOT

# Seconds since the epoch with fractions, for stage timings.
mos_now() {
    date +%s.%N
}

# Seconds elapsed since START (a mos_now value), to one decimal.
mos_elapsed() {
    awk -v a="$1" -v b="$(mos_now)" 'BEGIN { printf "%.1f", b - a }'
}

mos_die() {
    echo "error: $*" >&2
    exit 1
}

# rustup installs cargo into ~/.cargo/bin, which a non-login shell (CI, sudo) may not have on
# PATH; pick it up there before declaring cargo missing.
mos_find_cargo() {
    if ! command -v cargo >/dev/null 2>&1; then
        local home_bin="${CARGO_HOME:-$HOME/.cargo}/bin"
        if [[ -x "$home_bin/cargo" ]]; then
            PATH="$home_bin:$PATH"
            export PATH
        fi
    fi
    command -v cargo >/dev/null 2>&1
}

# Plain, line-oriented output when run by CI or without a terminal.
mos_quiet_terminal() {
    if [[ "${CI:-}" == "true" || ! -t 1 ]]; then
        export CARGO_TERM_COLOR=never
        export CARGO_TERM_PROGRESS_WHEN=never
    fi
}

# --locked when the lock file is part of the checkout, so a stale Cargo.lock fails loudly
# instead of being rewritten during the run.
mos_locked_flag() {
    if [[ -f "$MOS_ROOT/Cargo.lock" ]]; then
        echo "--locked"
    fi
}
