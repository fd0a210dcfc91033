#!/usr/bin/env bash
# Build the Debian packages of mos: mos (the binaries, the systemd units, the configuration in
# /etc/mos as conffiles, hugepages.sh, the manual pages, bash and zsh completions, the
# documents and the Grafana dashboard), libmos0 (the shared library libmos.so.0) and
# libmos-dev (headers, libmos.a, libmos.pc, the section 3 pages). Prints the paths of the .deb
# files it wrote.
#
#   scripts/package.sh [--out DIR] [--no-build] [--version V]
#
#   --out DIR      where the .deb files go (default target/debian, under CARGO_TARGET_DIR if
#                  set); packages of an earlier run there are replaced
#   --no-build     package what is built already in target/release (the binaries with
#                  `cargo build --release -p mos-sensor -p mos-ctl -p mos-analyzers --bins`,
#                  libmos with `cargo build --release -p mos-capi --lib`) instead of building
#   --version V    the packages' version (default: the workspace version of Cargo.toml). The
#                  binaries report the workspace version, so V is that version, optionally
#                  with a Debian revision: 0.1.0 or 0.1.0-2
#
# The packages are made with dpkg-buildpackage and debhelper from deploy/debian/ (copied into
# target/debian-build/ with a generated debian/changelog, so the source tree stays clean): the
# dependencies, on the DPDK runtime libraries among others, are computed by dpkg-shlibdeps
# from what the binaries link. The manual pages and completions come from scripts/gendocs.sh.
# Needs dpkg-dev, debhelper and cargo (scripts/setup.sh installs them). mos-log and mos-grep
# get their Kafka output when librdkafka-dev is installed, as with deploy/install.sh.
set -euo pipefail

# shellcheck source=scripts/lib.sh
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

out=""
build=1
deb_version=""

say() {
    echo "package: $*"
}
die() {
    mos_die "package: $*"
}
need_arg() {
    [[ $2 -ge 2 ]] || die "$1 needs a value (try --help)"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --out) need_arg "$1" $#; out=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --version) need_arg "$1" $#; deb_version=$2; shift 2 ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
done

cd "$MOS_ROOT"
mos_quiet_terminal

for tool in dpkg-buildpackage dpkg-architecture dh readelf; do
    command -v "$tool" >/dev/null 2>&1 \
        || die "$tool not found: apt-get install dpkg-dev debhelper binutils (scripts/setup.sh installs them)"
done
gendocs=$MOS_ROOT/scripts/gendocs.sh
[[ -f "$gendocs" ]] \
    || die "$gendocs is missing: the manual pages and completions the package ships come from it"

# The workspace version: every binary reports it (shm_layout::version!() takes the crate
# version, which each crate inherits from [workspace.package]).
version=$(awk '/^\[/ { in_pkg = ($0 == "[workspace.package]") }
              in_pkg && /^version[ \t]*=/ { sub(/^[^"]*"/, ""); sub(/".*/, ""); print; exit }' \
              Cargo.toml)
[[ "$version" =~ ^([0-9]+)\.([0-9]+)\.[0-9]+$ ]] \
    || die "no version x.y.z in [workspace.package] of Cargo.toml (found '$version')"
major=${BASH_REMATCH[1]}
minor=${BASH_REMATCH[2]}
if [[ -z "$deb_version" ]]; then
    deb_version=$version
fi
[[ "$deb_version" =~ ^${version//./\\.}(-[0-9A-Za-z.+~]+)?$ ]] \
    || die "--version $deb_version: the binaries report $version, so the package version is $version or $version-REVISION (change [workspace.package] version in Cargo.toml for another)"
header_version=$(awk '$1 == "#define" && $2 == "LIBMOS_VERSION_MAJOR" { major = $3 }
                      $1 == "#define" && $2 == "LIBMOS_VERSION_MINOR" { minor = $3 }
                      END { print major "." minor }' capi/include/mos_api.h)
[[ "$header_version" == "$major.$minor" ]] \
    || die "capi/include/mos_api.h says libmos $header_version, the workspace is version $version"

target_dir=${CARGO_TARGET_DIR:-$MOS_ROOT/target}
from=$target_dir/release
binaries=(mos-sensor mos-ctl mos-flowstat mos-dump mos-log mos-grep mos-pcap)

if [[ $build -eq 1 ]]; then
    mos_find_cargo || die "cargo not found: run scripts/setup.sh first (it installs Rust with rustup)"
    locked=$(mos_locked_flag)
    features=()
    if pkg-config --exists rdkafka 2>/dev/null; then
        features=(--features mos-analyzers/kafka)
    else
        say "librdkafka not found (pkg-config rdkafka): mos-log and mos-grep are packaged without their Kafka output (apt-get install librdkafka-dev for it)"
    fi
    say "building in release mode"
    # $locked is empty or one flag.
    # shellcheck disable=SC2086
    cargo build --release $locked "${features[@]}" -p mos-sensor -p mos-ctl -p mos-analyzers --bins
    # shellcheck disable=SC2086
    cargo build --release $locked -p mos-capi --lib
fi
for f in "${binaries[@]}"; do
    [[ -x "$from/$f" ]] || die "$from/$f is not built (run without --no-build)"
done
for f in libmos.so libmos.a; do
    [[ -f "$from/$f" ]] || die "$from/$f is not built (cargo build --release -p mos-capi --lib, or run without --no-build)"
done
built_soname=$(readelf -d "$from/libmos.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]$/\1/p')
[[ "$built_soname" == "libmos.so.$major" ]] \
    || die "$from/libmos.so has the soname '$built_soname', not libmos.so.$major (capi/build.rs sets it)"
# A stale build would package binaries of another version.
for f in "${binaries[@]}"; do
    reported=$("$from/$f" --version 2>&1 | head -n 1) || die "$from/$f --version failed: $reported"
    [[ "$reported" == "$f $version "* ]] \
        || die "$from/$f reports '$reported', not version $version: rebuild it (run without --no-build)"
done

# mos-sensor loads DPDK at run time through a shared object it embeds (sensor/dpdk/build.rs
# builds it into the crate's OUT_DIR), so the binary's own ELF names no DPDK library: the
# shim is what dpkg-shlibdeps reads for the mos package's DPDK dependencies. Every build of
# it comes from the same source and libdpdk; the newest is taken.
dpdk_shim=$(find "$from/build" -path '*/mos-dpdk-*/out/libmos_dpdk_shim.so' -printf '%T@ %p\n' 2>/dev/null \
    | sort -n | tail -n 1 | cut -d' ' -f2-)
[[ -n "$dpdk_shim" ]] \
    || die "no libmos_dpdk_shim.so under $from/build: mos-sensor was built without its dpdk feature (run without --no-build)"

build_dir=$target_dir/debian-build
src=$build_dir/mos-$deb_version
rm -rf "$build_dir"
mkdir -p "$src"
say "manual pages and completions (scripts/gendocs.sh)"
bash "$gendocs" "$build_dir/gendocs" || die "scripts/gendocs.sh failed"

cp -r deploy/debian "$src/debian"
# The package's changelog names this build; what changed is CHANGELOG.md, installed beside it
# (as the upstream changelog, changelog.gz, when the version has a Debian revision). Its date
# is the last commit's, so that the same tree packs the same way.
when=""
if git -C "$MOS_ROOT" rev-parse --git-dir >/dev/null 2>&1; then
    when=$(git -C "$MOS_ROOT" log -1 --format=%ct 2>/dev/null || true)
fi
[[ -n "$when" ]] || when=$(date +%s)
maintainer=$(sed -n 's/^Maintainer: //p' deploy/debian/control)
cat >"$src/debian/changelog" <<EOF
mos ($deb_version) unstable; urgency=medium

  * mos $version, as its changelog in /usr/share/doc/mos describes it.

 -- $maintainer  $(LC_ALL=C date -u -R -d "@$when")
EOF

say "dpkg-buildpackage in $src"
# -b: binary packages only; -us -uc: unsigned; -d: the build dependencies are cargo's and
# checked above, not Debian packages. noddebs: no -dbgsym packages.
(
    cd "$src"
    MOS_ROOT=$MOS_ROOT MOS_FROM=$from MOS_GENDOCS=$build_dir/gendocs MOS_DPDK_SHIM=$dpdk_shim \
        DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:+$DEB_BUILD_OPTIONS }noddebs" \
        dpkg-buildpackage -b -us -uc -d
) || die "dpkg-buildpackage failed (its output is above)"

arch=$(dpkg-architecture -qDEB_HOST_ARCH)
[[ -n "$out" ]] || out=$target_dir/debian
mkdir -p "$out"
out=$(cd "$out" && pwd)
rm -f "$out"/mos_*.deb "$out"/libmos0_*.deb "$out"/libmos-dev_*.deb
for p in mos libmos0 libmos-dev; do
    deb=$build_dir/${p}_${deb_version}_${arch}.deb
    [[ -f "$deb" ]] || die "dpkg-buildpackage made no $deb"
    cp "$deb" "$out/"
    echo "$out/$(basename "$deb")"
done
