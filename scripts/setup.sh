#!/usr/bin/env bash
# Prepare a Debian 12 machine to build, test and run mos. Idempotent: a second run only
# checks, and skips apt entirely when every package is already installed.
#
#   scripts/setup.sh [--no-apt] [--hugepages N] [--rust-only]
#
#   --no-apt         do not install system packages (only check that they are there)
#   --hugepages N    reserve N 2 MiB hugepages (default 256; 0 skips the step)
#   --rust-only      only the Rust toolchain step: no system packages, no hugepages
#
# When cargo is neither on PATH nor in ~/.cargo/bin ($CARGO_HOME/bin), installs rustup's
# stable toolchain (minimal profile with rustfmt and clippy) into ~/.cargo and ~/.rustup, the
# installer fetched with curl from MOS_RUSTUP_URL (default https://sh.rustup.rs; https only).
# Without network access that step fails with a message and exit status 1. Needs root for
# apt and hugepages, not for the toolchain.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

# libdpdk-dev, dpdk: the DPDK capture backend; libpcap-dev: DPDK's net_pcap driver, and the
# filter compiler analyzers link; clang: libclang for bindgen; ethtool, iproute2: veth/namespace
# network tests; python3: the demo's table and test helpers; systemd: systemd-analyze, which
# checks the units; tcpdump: what the filter tests compare the sensor's filtering with; gcc,
# g++, make: the C analyzers on libmos and the tests that build them (headers checked with both);
# tshark: what mos-log's HTTP and TLS records are compared with; redis-server: the Redis the
# event-bus tests send records to; librdkafka-dev: mos-log's and mos-grep's Kafka output;
# libnids-dev: the libnids peer scripts/bench.sh measures the sensor against (tests/peers/),
# whose mixed capture is merged with tshark's companion mergecap (wireshark-common); curl,
# ca-certificates: rustup's installer, when Rust is missing; tmux: the test of mos-ctl top;
# dpkg-dev, debhelper, fakeroot, lintian: building and checking the Debian packages (scripts/package.sh);
# man-db, groff-base: rendering the manual pages in their tests; debootstrap,
# systemd-container: the Debian 12 root the packages are installed into and booted with
# systemd-nspawn in the booted test.
MOS_APT_PACKAGES=(libdpdk-dev dpdk libpcap-dev clang pkg-config ethtool iproute2 python3 systemd tcpdump gcc g++ make tshark redis-server librdkafka-dev libnids-dev curl ca-certificates tmux dpkg-dev debhelper fakeroot lintian man-db groff-base debootstrap systemd-container)

rustup_url=${MOS_RUSTUP_URL:-https://sh.rustup.rs}

use_apt=1
hugepages=256
rust_only=0

while [[ $# -gt 0 ]]; do
    case "$1" in
        --no-apt) use_apt=0; shift ;;
        --rust-only) rust_only=1; shift ;;
        --hugepages)
            [[ $# -ge 2 && "$2" =~ ^[0-9]+$ ]] || mos_die "--hugepages needs a number"
            hugepages=$2
            shift 2
            ;;
        -h|--help) sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) mos_die "setup: unknown argument: $1 (try --help)" ;;
    esac
done

setup_start=$(mos_now)
did=()

missing_packages() {
    local p status
    for p in "${MOS_APT_PACKAGES[@]}"; do
        status=$(dpkg-query -W -f='${db:Status-Abbrev}' "$p" 2>/dev/null || true)
        [[ "$status" == ii* ]] || echo "$p"
    done
}

apt_install() {
    local log attempt
    log=$(mktemp "${TMPDIR:-/tmp}/mos-setup-apt.XXXXXX")
    export DEBIAN_FRONTEND=noninteractive
    # tshark's package asks whether non-root users may capture; the answer is no.
    echo "wireshark-common wireshark-common/install-setuid boolean false" \
        | debconf-set-selections 2>/dev/null || true
    local opts=(-y -q -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold)
    echo "apt-get update"
    if ! apt-get update -q >"$log" 2>&1 </dev/null; then
        tail -n 30 "$log" >&2
        mos_die "apt-get update failed (full log: $log)"
    fi
    # The first install of libdpdk-dev can stop halfway while upgrading systemd's packages
    # ("cannot access archive ... libsystemd-shared"); repairing with -f install and
    # installing again succeeds.
    for attempt in 1 2 3; do
        echo "apt-get install $* (attempt $attempt of 3; the first install takes several minutes)"
        if apt-get install "${opts[@]}" "$@" >>"$log" 2>&1 </dev/null; then
            rm -f "$log"
            return 0
        fi
        echo "apt-get install failed; repairing with 'dpkg --configure -a' and 'apt-get -f install'"
        dpkg --configure -a >>"$log" 2>&1 </dev/null || true
        apt-get -f install "${opts[@]}" >>"$log" 2>&1 </dev/null || true
    done
    tail -n 30 "$log" >&2
    mos_die "apt-get install failed 3 times (full log: $log)"
}

# Installs rustup's stable toolchain into ${CARGO_HOME:-~/.cargo} (rustup itself into
# ${RUSTUP_HOME:-~/.rustup}), fetching the installer from $rustup_url first so that a machine
# without network access gets one clear line. The installer adds ~/.cargo/env to the shell
# profiles; this script and those calling it find cargo through mos_find_cargo.
install_rust() {
    local cargo_home=${CARGO_HOME:-$HOME/.cargo}
    local installer err
    if ! command -v curl >/dev/null 2>&1; then
        if [[ $use_apt -eq 1 && $(id -u) -eq 0 ]] && command -v apt-get >/dev/null 2>&1; then
            apt_install curl ca-certificates
            did+=("installed curl ca-certificates")
        else
            mos_die "cargo not found, and curl (needed to fetch rustup's installer) is not installed either: apt-get install curl ca-certificates, then run this script again"
        fi
    fi
    echo "cargo not found: installing Rust's stable toolchain with rustup into $cargo_home (installer from $rustup_url)"
    installer=$(mktemp "${TMPDIR:-/tmp}/mos-rustup-init.XXXXXX")
    err=$(mktemp "${TMPDIR:-/tmp}/mos-rustup-err.XXXXXX")
    if ! curl --proto '=https' --tlsv1.2 -sSf --connect-timeout 20 --retry 2 \
        -o "$installer" "$rustup_url" 2>"$err"; then
        local why
        why=$(tr -s '\n' ' ' <"$err")
        why=${why% }
        rm -f "$installer" "$err"
        mos_die "could not download rustup's installer from $rustup_url: ${why:-curl failed}
Rust is needed to build mos. With network access, run this script again; without, install
Rust's stable toolchain by other means (https://forge.rust-lang.org/infra/other-installation-methods.html)
so that cargo is on PATH or in $cargo_home/bin, then run this script again."
    fi
    rm -f "$err"
    if ! sh "$installer" -y --profile minimal --default-toolchain stable \
        --component rustfmt --component clippy </dev/null; then
        rm -f "$installer"
        mos_die "rustup's installer failed (see above); nothing else was changed. Run this script again once it can reach static.rust-lang.org, or install Rust's stable toolchain by other means"
    fi
    rm -f "$installer"
    mos_find_cargo || mos_die "rustup reported success but there is no cargo in $cargo_home/bin"
    did+=("installed Rust's stable toolchain with rustup into $cargo_home")
}

if [[ $rust_only -eq 0 ]]; then
    echo "== setup: system packages"
    mapfile -t missing < <(missing_packages)
    if [[ ${#missing[@]} -eq 0 ]]; then
        echo "all ${#MOS_APT_PACKAGES[@]} packages already installed; apt skipped"
    elif [[ $use_apt -eq 0 ]]; then
        mos_die "missing packages: ${missing[*]}; install them with: apt-get install ${missing[*]} (or run without --no-apt)"
    elif [[ $(id -u) -ne 0 ]]; then
        mos_die "missing packages: ${missing[*]}; run this script as root, or: sudo apt-get install ${missing[*]}"
    elif ! command -v apt-get >/dev/null 2>&1; then
        mos_die "missing packages: ${missing[*]}, and there is no apt-get: mos is set up for Debian 12"
    else
        apt_start=$(mos_now)
        apt_install "${missing[@]}"
        mapfile -t still < <(missing_packages)
        [[ ${#still[@]} -eq 0 ]] || mos_die "apt reported success but these are not installed: ${still[*]}"
        did+=("installed ${missing[*]} ($(mos_elapsed "$apt_start") s)")
        echo "installed: ${missing[*]}"
    fi

    # What the build needs from those packages, checked directly so a broken install is named.
    pkg-config --exists libdpdk || mos_die "pkg-config cannot find libdpdk (package libdpdk-dev)"
    pkg-config --exists libpcap || mos_die "pkg-config cannot find libpcap (package libpcap-dev)"
    if ! compgen -G "/usr/lib/llvm-*/lib/libclang*.so*" >/dev/null \
        && ! compgen -G "/usr/lib/*/libclang*.so*" >/dev/null; then
        mos_die "libclang not found (bindgen needs it; package clang)"
    fi
    command -v python3 >/dev/null 2>&1 || mos_die "python3 not found (package python3)"
    echo "DPDK $(pkg-config --modversion libdpdk), libpcap $(pkg-config --modversion libpcap)"
fi

echo "== setup: Rust toolchain"
if ! mos_find_cargo; then
    rust_start=$(mos_now)
    install_rust
    echo "Rust installed in $(mos_elapsed "$rust_start") s; new shells find it through ~/.cargo/env"
fi
echo "$(cargo --version), $(rustc --version 2>/dev/null || echo 'rustc ?')"

if command -v rustup >/dev/null 2>&1; then
    need_components=()
    installed_components=$(rustup component list --installed 2>/dev/null || true)
    for c in rustfmt clippy; do
        grep -q "^$c" <<<"$installed_components" || need_components+=("$c")
    done
    if [[ ${#need_components[@]} -gt 0 ]]; then
        echo "rustup component add ${need_components[*]}"
        rustup component add "${need_components[@]}" \
            || mos_die "could not add rust components ${need_components[*]} (rustup component add ${need_components[*]})"
        did+=("added rust components ${need_components[*]}")
    fi
fi
cargo fmt --version >/dev/null 2>&1 || mos_die "cargo fmt does not work: rustup component add rustfmt"
cargo clippy --version >/dev/null 2>&1 || mos_die "cargo clippy does not work: rustup component add clippy"
echo "rustfmt and clippy present"

if [[ $rust_only -eq 0 ]]; then
    echo "== setup: hugepages"
    if [[ $hugepages -gt 0 ]]; then
        bash "$MOS_ROOT/deploy/hugepages.sh" --pages "$hugepages"
    else
        echo "skipped (--hugepages 0)"
    fi
fi

if [[ ${#did[@]} -eq 0 ]]; then
    did=("nothing to install: everything was already there")
fi
echo "== setup done in $(mos_elapsed "$setup_start") s:"
printf '   - %s\n' "${did[@]}"
