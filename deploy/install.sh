#!/usr/bin/env bash
# Install mos: build in release mode, then install the binaries (mos-sensor, mos-ctl,
# mos-flowstat, mos-dump, mos-log, mos-grep, mos-pcap), the C library libmos (shared and
# static, its headers and its pkg-config file libmos.pc), the manual pages (one per binary,
# mos-sensor.toml(5) and the C API's libmos(3) and mtcp_*(3), gzipped), bash and zsh
# completions, the systemd units (sensor, analyzers, metrics server), the default
# configuration and environment files, the hugepage script and the documentation; on a system
# install also the group mos (whose members may attach analyzers) and the system user
# mos-sensor the sensor runs as. Idempotent: running it again updates binaries, library,
# pages, units and documents and keeps an edited configuration.
#
#   deploy/install.sh [options]
#   deploy/install.sh --uninstall [--purge] [options]
#
#   --prefix DIR      where binaries, library and documents go (default /usr/local): DIR/bin,
#                     DIR/lib (libmos.so, libmos.a), DIR/lib/pkgconfig (libmos.pc),
#                     DIR/include (mos_api.h, mtcp_api.h), DIR/lib/mos, DIR/share/doc/mos,
#                     DIR/share/man/man{1,3,5} (pages, .gz), DIR/share/bash-completion/
#                     completions, and zsh completions in DIR/share/zsh/vendor-completions
#                     for the prefix /usr, else DIR/share/zsh/site-functions (where zsh looks)
#   --destdir DIR     stage everything under DIR (also the DESTDIR variable), for packaging:
#                     nothing outside DIR is touched, no user or group is made
#   --sysconfdir DIR  configuration directory (default /etc for the prefixes /usr and
#                     /usr/local, else PREFIX/etc); the files go into DIR/mos
#   --unitdir DIR     systemd unit directory (default /etc/systemd/system for /usr and
#                     /usr/local, else PREFIX/lib/systemd/system)
#   --iface IF        on a fresh configuration, capture on IF (input.iface); by default a
#                     system install takes the interface of the default route
#   --no-build        install binaries built already (see --from) instead of building
#   --from DIR        where the built binaries, mos-docgen and libmos.so, libmos.a are
#                     (default: the workspace's target/release)
#   --docs DIR        install the pages and completions that `scripts/gendocs.sh DIR` wrote
#                     there, instead of generating them with mos-docgen from --from
#   --uninstall       remove what an earlier install put there (its manifest says what);
#                     the configuration and the user and group stay unless --purge
#   --purge           with --uninstall: remove the configuration, the user mos-sensor and the
#                     group mos too
#
# A system install is one into / (no --destdir) with the prefix /usr or /usr/local: only then
# does the script make the user and the group and run `systemctl daemon-reload` and `ldconfig`,
# which need root. Any other prefix installs files only, under that prefix, without root; a C
# program then finds libmos with PKG_CONFIG_PATH=DIR/lib/pkgconfig, and runs with DIR/lib in
# LD_LIBRARY_PATH (or an rpath).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
prefix=/usr/local
destdir=${DESTDIR:-}
sysconfdir=""
unitdir=""
iface=""
build=1
from=""
docs=""
uninstall=0
purge=0

die() {
    echo "install: error: $*" >&2
    exit 1
}
say() {
    echo "install: $*"
}
need_arg() {
    [[ $2 -ge 2 ]] || die "$1 needs a value (try --help)"
}

while [[ $# -gt 0 ]]; do
    case "$1" in
        --prefix) need_arg "$1" $#; prefix=$2; shift 2 ;;
        --destdir) need_arg "$1" $#; destdir=$2; shift 2 ;;
        --sysconfdir) need_arg "$1" $#; sysconfdir=$2; shift 2 ;;
        --unitdir) need_arg "$1" $#; unitdir=$2; shift 2 ;;
        --iface) need_arg "$1" $#; iface=$2; shift 2 ;;
        --from) need_arg "$1" $#; from=$2; shift 2 ;;
        --no-build) build=0; shift ;;
        --uninstall) uninstall=1; shift ;;
        --purge) purge=1; shift ;;
        --docs) need_arg "$1" $#; docs=$2; shift 2 ;;
        -h|--help) sed -n '2,43p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) die "unknown argument: $1 (try --help)" ;;
    esac
done

[[ "$prefix" == /* ]] || die "--prefix must be an absolute path, not $prefix"
[[ -z "$destdir" || "$destdir" == /* ]] || die "--destdir must be an absolute path, not $destdir"
[[ $purge -eq 0 || $uninstall -eq 1 ]] || die "--purge goes with --uninstall"
prefix=${prefix%/}
[[ -n "$prefix" ]] || prefix=/
destdir=${destdir%/}

case "$prefix" in
    /usr|/usr/local) system_prefix=1 ;;
    *) system_prefix=0 ;;
esac
if [[ -z "$sysconfdir" ]]; then
    if [[ $system_prefix -eq 1 ]]; then sysconfdir=/etc; else sysconfdir=$prefix/etc; fi
fi
if [[ -z "$unitdir" ]]; then
    if [[ $system_prefix -eq 1 ]]; then
        unitdir=/etc/systemd/system
    else
        unitdir=$prefix/lib/systemd/system
    fi
fi
system=0
if [[ $system_prefix -eq 1 && -z "$destdir" ]]; then
    system=1
fi

bindir=$prefix/bin
libdir=$prefix/lib
pkgconfigdir=$libdir/pkgconfig
includedir=$prefix/include
libexecdir=$prefix/lib/mos
docdir=$prefix/share/doc/mos
mandir=$prefix/share/man
bashcompdir=$prefix/share/bash-completion/completions
if [[ "$prefix" == /usr ]]; then
    zshcompdir=$prefix/share/zsh/vendor-completions
else
    zshcompdir=$prefix/share/zsh/site-functions
fi
confdir=$sysconfdir/mos
manifest=$libexecdir/install-manifest
binaries=(mos-sensor mos-ctl mos-flowstat mos-dump mos-log mos-grep mos-pcap)

if [[ $system -eq 1 && $(id -u) -ne 0 ]]; then
    die "a system install (prefix $prefix) needs root; run it as root, or give --prefix DIR or --destdir DIR to install elsewhere"
fi

systemd_running() {
    [[ -d /run/systemd/system ]] && command -v systemctl >/dev/null 2>&1
}

if [[ $uninstall -eq 1 ]]; then
    [[ -f "$destdir$manifest" ]] || die "no install manifest at $destdir$manifest: nothing installed there (same --prefix/--destdir as the install?)"
    if [[ $system -eq 1 ]] && systemd_running; then
        # Stop the analyzers and the metrics server before the sensor they ask.
        mapfile -t running < <(systemctl list-units --plain --no-legend 'mos-analyzer@*' 2>/dev/null | awk '{print $1}')
        for u in "${running[@]}" mos-metrics.service mos-sensor.service; do
            systemctl disable --now "$u" >/dev/null 2>&1 || true
        done
    fi
    removed=0
    kept=()
    while IFS= read -r f; do
        [[ -n "$f" ]] || continue
        case "$f" in
            "$confdir"/*)
                if [[ $purge -eq 0 ]]; then
                    kept+=("$f")
                    continue
                fi
                ;;
        esac
        if [[ -e "$destdir$f" || -L "$destdir$f" ]]; then
            rm -f "$destdir$f"
            removed=$((removed + 1))
        fi
    done <"$destdir$manifest"
    rm -f "$destdir$manifest"
    # Directories of ours left empty.
    for d in "$docdir/docs" "$docdir" "$libexecdir" "$confdir/analyzers" "$confdir"; do
        rmdir "$destdir$d" 2>/dev/null || true
    done
    if [[ $system -eq 1 ]]; then
        # The dynamic linker's cache forgets libmos.
        ldconfig || true
        if systemd_running; then
            systemctl daemon-reload || true
        fi
        if [[ $purge -eq 1 ]]; then
            if getent passwd mos-sensor >/dev/null; then userdel mos-sensor && say "removed the user mos-sensor"; fi
            if getent group mos >/dev/null; then groupdel mos && say "removed the group mos"; fi
        fi
    fi
    say "removed $removed files"
    if [[ ${#kept[@]} -gt 0 ]]; then
        say "kept the configuration (remove it with --uninstall --purge): ${kept[*]}"
    fi
    exit 0
fi

# The binaries.
if [[ $build -eq 1 ]]; then
    command -v cargo >/dev/null 2>&1 || [[ -x "${CARGO_HOME:-$HOME/.cargo}/bin/cargo" ]] \
        || die "cargo not found: run scripts/setup.sh first (it installs Rust with rustup)"
    PATH="${CARGO_HOME:-$HOME/.cargo}/bin:$PATH"
    locked=()
    [[ -f "$root/Cargo.lock" ]] && locked=(--locked)
    # mos-log's and mos-grep's Kafka output needs librdkafka (Debian: librdkafka-dev to build,
    # librdkafka1 to run); without it they are built without Kafka and say so when asked.
    features=()
    if pkg-config --exists rdkafka 2>/dev/null; then
        features=(--features mos-analyzers/kafka)
    else
        say "librdkafka not found (pkg-config rdkafka): mos-log and mos-grep are built without their Kafka output (apt-get install librdkafka-dev, then install again)"
    fi
    say "building in release mode (cargo build --release ${features[*]})"
    (cd "$root" && cargo build --release "${locked[@]}" "${features[@]}" -p mos-sensor -p mos-ctl -p mos-analyzers -p mos-docgen --bins)
    say "building libmos in release mode (cargo build --release -p mos-capi)"
    (cd "$root" && cargo build --release "${locked[@]}" -p mos-capi --lib)
fi
if [[ -z "$from" ]]; then
    from="${CARGO_TARGET_DIR:-$root/target}/release"
fi
for b in "${binaries[@]}"; do
    [[ -x "$from/$b" ]] || die "$from/$b is not built (run without --no-build, or give --from DIR)"
done
if [[ -z "$docs" ]]; then
    [[ -x "$from/mos-docgen" ]] || die "$from/mos-docgen is not built (cargo build --release -p mos-docgen; or run without --no-build, or give --docs DIR made by scripts/gendocs.sh DIR)"
fi
for l in libmos.so libmos.a; do
    [[ -f "$from/$l" ]] || die "$from/$l is not built (cargo build --release -p mos-capi; or run without --no-build, or give --from DIR)"
done

# libmos's version is the workspace's; its soname carries the major version (capi/build.rs
# sets it), and the header states the same major and minor.
version=$(awk '/^\[/ { in_pkg = ($0 == "[workspace.package]") }
              in_pkg && /^version[ \t]*=/ { sub(/^[^"]*"/, ""); sub(/".*/, ""); print; exit }' \
              "$root/Cargo.toml")
[[ "$version" =~ ^([0-9]+)\.([0-9]+)\.[0-9]+$ ]] \
    || die "no version x.y.z in [workspace.package] of $root/Cargo.toml (found '$version')"
soname=libmos.so.${BASH_REMATCH[1]}
header_version=$(awk '$1 == "#define" && $2 == "LIBMOS_VERSION_MAJOR" { major = $3 }
                      $1 == "#define" && $2 == "LIBMOS_VERSION_MINOR" { minor = $3 }
                      END { print major "." minor }' "$root/capi/include/mos_api.h")
[[ "$header_version" == "${BASH_REMATCH[1]}.${BASH_REMATCH[2]}" ]] \
    || die "capi/include/mos_api.h says libmos $header_version, the workspace is version $version"
if command -v readelf >/dev/null 2>&1; then
    built_soname=$(readelf -d "$from/libmos.so" | sed -n 's/.*(SONAME).*\[\(.*\)\]$/\1/p')
    [[ "$built_soname" == "$soname" ]] \
        || die "$from/libmos.so has the soname '$built_soname', not $soname (capi/build.rs sets it)"
fi

installed=()
# install_file MODE SOURCE DEST: copies SOURCE to DESTDIR+DEST (directories made as needed).
install_file() {
    install -D -m "$1" "$2" "$destdir$3"
    installed+=("$3")
}

# A unit or file with its @...@ paths filled in.
render() {
    sed -e "s#@bindir@#$bindir#g" -e "s#@libexecdir@#$libexecdir#g" \
        -e "s#@sysconfdir@#$sysconfdir#g" -e "s#@docdir@#$docdir#g" "$1"
}

tmp=$(mktemp -d "${TMPDIR:-/tmp}/mos-install.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

for b in "${binaries[@]}"; do
    install_file 0755 "$from/$b" "$bindir/$b"
done
# libmos: the shared library under its full version, the soname's link (what programs load),
# the development link (what -lmos finds), the archive, the headers, the pkg-config file.
install_file 0644 "$from/libmos.so" "$libdir/libmos.so.$version"
# The shared library of an earlier install of another version goes.
if [[ -f "$destdir$manifest" ]]; then
    while IFS= read -r f; do
        if [[ "$f" == "$libdir"/libmos.so.*.*.* && "$f" != "$libdir/libmos.so.$version" ]]; then
            rm -f "$destdir$f"
        fi
    done <"$destdir$manifest"
fi
ln -sfn "libmos.so.$version" "$destdir$libdir/$soname"
ln -sfn "$soname" "$destdir$libdir/libmos.so"
installed+=("$libdir/$soname" "$libdir/libmos.so")
install_file 0644 "$from/libmos.a" "$libdir/libmos.a"
for h in mos_api.h mtcp_api.h; do
    install_file 0644 "$root/capi/include/$h" "$includedir/$h"
done
sed -e "s#@prefix@#$prefix#g" -e "s#@version@#$version#g" "$root/capi/libmos.pc.in" >"$tmp/libmos.pc"
install_file 0644 "$tmp/libmos.pc" "$pkgconfigdir/libmos.pc"
install_file 0755 "$root/deploy/hugepages.sh" "$libexecdir/hugepages.sh"
for u in mos-sensor.service mos-analyzer@.service mos-metrics.service; do
    render "$root/deploy/$u" >"$tmp/$u"
    install_file 0644 "$tmp/$u" "$unitdir/$u"
done
install_file 0644 "$root/deploy/mos-sensor-dpdk.conf" "$docdir/mos-sensor-dpdk.conf"
install_file 0644 "$root/deploy/grafana/mos.json" "$docdir/grafana-mos.json"
install_file 0644 "$root/README.md" "$docdir/README.md"
for d in "$root"/docs/*.md; do
    install_file 0644 "$d" "$docdir/docs/$(basename "$d")"
done

# Manual pages (gzipped, as man-db reads them and Debian ships them) and completions, made by
# mos-docgen from the binaries' command lines, the configuration's table of keys and capi/man.
if [[ -z "$docs" ]]; then
    docs=$tmp/docs
    # Pages dated by the last commit when there is one, so that installing again gives the
    # same files.
    if [[ -z "${SOURCE_DATE_EPOCH:-}" ]] && command -v git >/dev/null 2>&1; then
        SOURCE_DATE_EPOCH=$(git -C "$root" log -1 --format=%ct 2>/dev/null || true)
        [[ -n "$SOURCE_DATE_EPOCH" ]] && export SOURCE_DATE_EPOCH
    fi
    said=$("$from/mos-docgen" "$docs" 2>&1) || die "$from/mos-docgen could not write the manual pages: $said"
fi
for b in "${binaries[@]}"; do
    for f in "man/man1/$b.1" "completions/bash/$b" "completions/zsh/_$b"; do
        [[ -f "$docs/$f" ]] || die "$docs/$f is missing (scripts/gendocs.sh writes it)"
    done
done
[[ -f "$docs/man/man5/mos-sensor.toml.5" && -f "$docs/man/man3/libmos.3" ]] \
    || die "$docs/man holds no mos-sensor.toml.5 or libmos.3 (scripts/gendocs.sh writes them)"
mkdir -p "$tmp/man"
for page in "$docs"/man/man[135]/*.[135]; do
    sect=$(basename "$(dirname "$page")")
    gzip -9n -c "$page" >"$tmp/man/$(basename "$page").gz"
    install_file 0644 "$tmp/man/$(basename "$page").gz" "$mandir/$sect/$(basename "$page").gz"
done
for b in "${binaries[@]}"; do
    install_file 0644 "$docs/completions/bash/$b" "$bashcompdir/$b"
    install_file 0644 "$docs/completions/zsh/_$b" "$zshcompdir/_$b"
done

# The configuration: installed when missing, never overwritten (the shipped default is always
# at DOCDIR/sensor.toml for comparison).
install_file 0644 "$root/deploy/sensor.toml" "$docdir/sensor.toml"
conf=$confdir/sensor.toml
if [[ -e "$destdir$conf" ]]; then
    say "kept the existing $conf (the shipped default is $docdir/sensor.toml)"
    installed+=("$conf")
else
    cp "$root/deploy/sensor.toml" "$tmp/sensor.toml"
    if [[ -z "$iface" && $system -eq 1 ]] && command -v ip >/dev/null 2>&1; then
        iface=$(ip -o route show default 2>/dev/null | awk '{for (i = 1; i < NF; i++) if ($i == "dev") {print $(i + 1); exit}}')
    fi
    if [[ -n "$iface" ]]; then
        # Uncomment the shipped `iface = ...` line of [input] with this interface.
        sed -i -E "0,/^#[[:space:]]*iface[[:space:]]*=.*/s//iface = \"$iface\"/" "$tmp/sensor.toml"
        grep -q "^iface = \"$iface\"" "$tmp/sensor.toml" || die "could not set input.iface in the configuration"
        say "the sensor will capture on $iface (input.iface in $conf)"
    else
        say "no input set: edit $conf (one of input.iface, input.dpdk, input.pcap) before starting the sensor"
    fi
    install_file 0644 "$tmp/sensor.toml" "$conf"
fi
# Environment files of the units: installed when missing, an edited one kept.
for e in "$root"/deploy/analyzers/*.env "$root"/deploy/metrics.env; do
    case "$e" in
        */analyzers/*) f=$confdir/analyzers/$(basename "$e") ;;
        *) f=$confdir/$(basename "$e") ;;
    esac
    if [[ -e "$destdir$f" ]]; then
        installed+=("$f")
    else
        install_file 0644 "$e" "$f"
    fi
done

printf '%s\n' "${installed[@]}" | sort -u >"$tmp/manifest"
install -D -m 0644 "$tmp/manifest" "$destdir$manifest"

if [[ $system -eq 1 ]]; then
    if ! getent group mos >/dev/null; then
        groupadd --system mos
        say "made the group mos: its members may attach analyzers (usermod -aG mos USER)"
    fi
    if ! getent passwd mos-sensor >/dev/null; then
        useradd --system --gid mos --no-create-home --home-dir /nonexistent \
            --shell /usr/sbin/nologin --comment "mos sensor" mos-sensor
        say "made the system user mos-sensor (the sensor runs as it)"
    fi
    ldconfig
    say "libmos installed in $libdir: cc prog.c \$(pkg-config --cflags --libs libmos)"
    if systemd_running; then
        systemctl daemon-reload
        say "units installed: systemctl enable --now mos-sensor; systemctl enable --now mos-analyzer@flowstat; systemctl enable --now mos-metrics (Prometheus metrics at 127.0.0.1:9477, $confdir/metrics.env)"
    else
        say "units installed in $unitdir (systemd is not running here: start them where it is)"
    fi
else
    say "files only (prefix $prefix${destdir:+, destdir $destdir}): no user, group, daemon-reload or ldconfig"
    if [[ -z "$destdir" ]]; then
        say "libmos installed in $libdir: PKG_CONFIG_PATH=$pkgconfigdir cc prog.c \$(pkg-config --cflags --libs libmos), run with LD_LIBRARY_PATH=$libdir"
    fi
fi
say "manual pages in $mandir: man mos-sensor, man mos-sensor.toml, man libmos"
say "installed $(wc -l <"$tmp/manifest") files; the manifest is $destdir$manifest"
