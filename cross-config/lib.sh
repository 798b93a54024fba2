# Shared by cross-config/build and cross-config/test (sourced, not run).
# Debian route for ARM builds: Debian's rustc-web + Debian's prebuilt ARM std (from the security pool),
# cross gcc for linking, qemu-user-static for running. See cross-config/README.md.

XC_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
REPO="$(cd "$XC_DIR/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$REPO/target-cross}"
XC_CACHE="$CARGO_TARGET_DIR/cross-cache"     # downloaded .debs, indexes, unpacked sysroots
# Cargo profile of the binaries built here: `dist` (Cargo.toml: fat LTO, opt-level "s" with the sealing crates at 3,
# stripped), what image/build ships. OFFSITE_PROFILE=release builds the release profile (thin LTO).
PROFILE="${OFFSITE_PROFILE:-dist}"

APT_PACKAGES=(rustc-web cargo-web qemu-user-static gcc-aarch64-linux-gnu gcc-arm-linux-gnueabihf
              libc6-dev-arm64-cross libc6-dev-armhf-cross xz-utils gpgv debian-archive-keyring)

log() { printf '[cross] %s\n' "$*" >&2; }
die() { printf '[cross] error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi
}

# Map the short target name to everything else. Sets: TRIPLE DEB_ARCH GNU QEMU QEMU_LD TRIPLE_ENV TRIPLE_CC
set_target() {
    case "${1:-}" in
        aarch64)
            TRIPLE=aarch64-unknown-linux-gnu DEB_ARCH=arm64 GNU=aarch64-linux-gnu QEMU=qemu-aarch64-static ;;
        armv7)
            TRIPLE=armv7-unknown-linux-gnueabihf DEB_ARCH=armhf GNU=arm-linux-gnueabihf QEMU=qemu-arm-static ;;
        aarch64-musl)
            TRIPLE=aarch64-unknown-linux-musl DEB_ARCH=arm64 GNU=aarch64-linux-gnu QEMU=qemu-aarch64-static ;;
        armv7-musl)
            TRIPLE=armv7-unknown-linux-musleabihf DEB_ARCH=armhf GNU=arm-linux-gnueabihf QEMU=qemu-arm-static ;;
        *) die "usage: $(basename "$0") aarch64|armv7|aarch64-musl|armv7-musl" ;;
    esac
    SHORT="$1" QEMU_LD="/usr/$GNU"
    TRIPLE_ENV="$(echo "$TRIPLE" | tr 'a-z-' 'A-Z_')"    # AARCH64_UNKNOWN_LINUX_GNU
    TRIPLE_CC="$(echo "$TRIPLE" | tr '-' '_')"           # aarch64_unknown_linux_gnu
}

# ---------------------------------------------------------------- apt packages (idempotent)
pkg_installed() {
    [ "$(dpkg-query -W -f='${Status}' "$1" 2>/dev/null)" = "install ok installed" ]
}

ensure_apt_packages() {
    local missing=() p
    for p in "${APT_PACKAGES[@]}" "$@"; do pkg_installed "$p" || missing+=("$p"); done
    if [ "${#missing[@]}" -eq 0 ]; then
        log "apt packages present"
        return
    fi
    log "installing: ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
}

# ---------------------------------------------------------------- mirrors from the machine's apt sources
# Prints "URI SUITE SIGNED_BY" for the first enabled `deb` source whose suite matches the pattern (an ERE).
# Reads deb822 files (/etc/apt/sources.list.d/*.sources) and one-line files (sources.list, *.list).
apt_source_for() {
    local want="$1" f out
    for f in /etc/apt/sources.list.d/*.sources; do
        [ -f "$f" ] || continue
        out="$(awk -v want="$want" '
            function flush() {
                if (!found && types ~ /(^| )deb( |$)/ && enabled != "no" && uris != "") {
                    n = split(suites, s, " ")
                    for (i = 1; i <= n; i++) if (s[i] ~ want) { split(uris, u, " "); print u[1], s[i], signed; found = 1; break }
                }
                types = uris = suites = signed = ""; enabled = "yes"
            }
            BEGIN { enabled = "yes" }
            /^[ \t]*#/ { next }
            /^[ \t]*$/ { flush(); next }
            { line = $0; key = tolower(line); sub(/:.*/, "", key); val = line; sub(/^[^:]*:[ \t]*/, "", val)
              if (key == "types") types = val; else if (key == "uris") uris = val
              else if (key == "suites") suites = val; else if (key == "signed-by") signed = val
              else if (key == "enabled") enabled = tolower(val) }
            END { flush() }
        ' "$f" | head -n1)"
        [ -n "$out" ] && { echo "$out"; return 0; }
    done
    local files=()
    for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do [ -f "$f" ] && files+=("$f"); done
    [ "${#files[@]}" -gt 0 ] || return 0
    awk -v want="$want" '
        /^[ \t]*deb[ \t]/ {
            i = 2
            if ($2 ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
            if ($(i + 1) ~ want) { print $i, $(i + 1), ""; exit }
        }' "${files[@]}" | head -n1
}

# ---------------------------------------------------------------- downloads through apt's own fetcher
fetch_url() {   # fetch_url URL DEST [SHA256]   (apt's own fetcher: honours apt's proxy settings)
    local url="$1" dest="$2" sha="${3:-}" rc
    rm -f "$dest.part" "$dest.part.FAILED"
    set +e
    /usr/lib/apt/apt-helper download-file "$url" "$dest.part" ${sha:+"SHA256:$sha"} 2>&1 | grep -v unsandboxed >&2
    rc=${PIPESTATUS[0]}
    set -e
    rm -f "$dest.part.FAILED"
    if [ "$rc" -ne 0 ] || [ ! -f "$dest.part" ]; then rm -f "$dest.part"; return 1; fi
    if [ -n "$sha" ] && ! echo "$sha  $dest.part" | sha256sum -c --status; then rm -f "$dest.part"; return 1; fi
    mv "$dest.part" "$dest"
}

# Looks up PACKAGE VERSION ARCH in SUITE's main Packages index at URI (VERSION "": the first listed). Prints "Filename SHA256 STATUS", or
# nothing. STATUS "verified": the index matched the SHA256 listed in the InRelease whose signature gpgv checked
# (the plain path first, then the by-hash path). STATUS "unauthenticated": the mirror served an index that does
# not match its InRelease (seen here for armhf: "mirror sync in progress"); its SHA256 still catches a corrupt
# or truncated download, but is not signed.
index_lookup() {
    local uri="$1" suite="$2" keyring="$3" pkg="$4" ver="$5" arch="$6"
    local d="$XC_CACHE/index/$suite" rel want="" status="" base idx
    mkdir -p "$d"
    rel="$d/InRelease"
    base="$uri/dists/$suite/main/binary-$arch"
    idx="$d/Packages-$arch.xz"
    rm -f "$idx"
    if fetch_url "$uri/dists/$suite/InRelease" "$rel"; then
        [ -n "$keyring" ] && [ -f "$keyring" ] || keyring=/usr/share/keyrings/debian-archive-keyring.gpg
        if gpgv --keyring "$keyring" "$rel" 2>/dev/null; then
            want="$(awk '/^SHA256:/ {s = 1; next} /^[^ ]/ {s = 0} s && $3 == "main/binary-'"$arch"'/Packages.xz" {print $1}' "$rel")"
        else
            log "InRelease signature does not verify with $keyring"
        fi
    else
        log "cannot fetch $uri/dists/$suite/InRelease"
    fi
    if [ -n "$want" ]; then
        if fetch_url "$base/Packages.xz" "$idx" "$want" || fetch_url "$base/by-hash/SHA256/$want" "$idx" "$want"; then
            status=verified
        else
            log "Packages index for $arch does not match InRelease (mirror sync in progress?)"
        fi
    fi
    if [ -z "$status" ]; then
        fetch_url "$base/Packages.xz" "$idx" || return 0
        status=unauthenticated
    fi
    xz -dc "$idx" | awk -v p="$pkg" -v v="$ver" -v st="$status" '
        /^Package: / { pk = $2 } /^Version: / { vv = $2 } /^Filename: / { fn = $2 } /^SHA256: / { sh = $2 }
        /^$/ { if (pk == p && (v == "" || vv == v) && !done) { print fn, sh, st; done = 1 } pk = vv = fn = sh = "" }
        END { if (pk == p && (v == "" || vv == v) && !done) print fn, sh, st }'
}

# ---------------------------------------------------------------- Debian's prebuilt ARM std
# Sets SYSROOT: a folder whose lib/rustlib/<triple> holds libstd-rust-web-dev:<arch> for the installed
# rustc-web version (the .deb comes from the security archive's pool; its name is derived, not hard-coded).
ensure_arm_std() {
    local ver src uri suite keyring pkg=libstd-rust-web-dev fn sha status deb root
    ver="$(dpkg-query -W -f='${Version}' rustc-web)"
    root="$XC_CACHE/sysroot-$ver"
    SYSROOT="$root/usr"
    if [ -f "$SYSROOT/lib/rustlib/$TRIPLE/lib/.offsite-ok" ]; then
        log "ARM std $ver for $TRIPLE present in $SYSROOT"
        return
    fi
    src="$(apt_source_for '-security$|/updates$')"
    [ -n "$src" ] || die "no bookworm-security style source in the apt sources: cannot locate the ARM std pool"
    read -r uri suite keyring <<<"$src"
    uri="${uri%/}"
    log "security source: $uri $suite; rustc-web $ver; fetching $pkg:$DEB_ARCH"
    fn="" sha="" status=""
    read -r fn sha status < <(index_lookup "$uri" "$suite" "$keyring" "$pkg" "$ver" "$DEB_ARCH"; echo) || true
    if [ "$status" != verified ] && [ "${OFFSITE_CROSS_REQUIRE_SIGNED:-0}" = 1 ]; then
        die "no signed index entry for $pkg $ver $DEB_ARCH (OFFSITE_CROSS_REQUIRE_SIGNED=1)"
    fi
    case "$status" in
        verified) log "index: $fn sha256 $sha (InRelease signature and Packages hash verified)" ;;
        unauthenticated) log "WARNING: index entry $fn sha256 $sha comes from an index that does not match the signed InRelease: the download is checked against it, but that is not authenticated" ;;
        *) fn="pool/updates/main/r/rustc-web/${pkg}_${ver#*:}_${DEB_ARCH}.deb" sha=""
           log "WARNING: $pkg $ver $DEB_ARCH not found in any index; using the pool path without a SHA256 check" ;;
    esac
    mkdir -p "$XC_CACHE/debs"
    deb="$XC_CACHE/debs/$(basename "$fn")"
    if [ -f "$deb" ] && { [ -z "$sha" ] || echo "$sha  $deb" | sha256sum -c --status; }; then
        log "have $(basename "$deb")"
    else
        fetch_url "$uri/$fn" "$deb" "$sha" ||
            die "download of $uri/$fn failed (is rustc-web $ver still the current version in $suite? try: apt-get update && apt-get install rustc-web cargo-web)"
    fi
    mkdir -p "$root"
    dpkg-deb -x "$deb" "$root"
    compgen -G "$SYSROOT/lib/rustlib/$TRIPLE/lib/libstd-*.rlib" >/dev/null ||
        die "$deb holds no $TRIPLE std (expected $SYSROOT/lib/rustlib/$TRIPLE/lib/libstd-*.rlib)"
    touch "$SYSROOT/lib/rustlib/$TRIPLE/lib/.offsite-ok"
    log "ARM std unpacked: $SYSROOT/lib/rustlib/$TRIPLE"
}

# ---------------------------------------------------------------- toolchain environment
# Debian's cargo and rustc for every build here (x86_64 included), so all architectures use one compiler.
use_debian_toolchain() {
    export RUSTC=/usr/bin/rustc RUSTDOC=/usr/bin/rustdoc
    CARGO=/usr/bin/cargo
    unset RUSTUP_TOOLCHAIN RUSTFLAGS CARGO_BUILD_TARGET || true
}

export_target_env() {   # after set_target and ensure_arm_std
    export "CARGO_TARGET_${TRIPLE_ENV}_LINKER=$GNU-gcc"
    export "CARGO_TARGET_${TRIPLE_ENV}_RUSTFLAGS=--sysroot=$SYSROOT${XC_EXTRA_RUSTFLAGS:+ $XC_EXTRA_RUSTFLAGS}"
    export "CARGO_TARGET_${TRIPLE_ENV}_RUNNER=$QEMU -L $QEMU_LD"
    # Cross doctests (cargo test --target): rustdoc needs the same sysroot; with --target only the target uses it.
    export RUSTDOCFLAGS="--sysroot=$SYSROOT"
    export "CC_${TRIPLE_CC}=$GNU-gcc" "AR_${TRIPLE_CC}=$GNU-ar"
}

# Static musl builds: Debian ships no musl std, so std is built from Debian's rust-web-src (-Zbuild-std), linked
# by zig through cargo-zigbuild (both from PyPI, in a venv under the target dir).
ensure_musl_tools() {
    ensure_apt_packages rust-web-src python3-venv
    ZIG_VENV="${ZIG_VENV:-$CARGO_TARGET_DIR/zig-venv}"
    if [ ! -x "$ZIG_VENV/bin/cargo-zigbuild" ] || ! "$ZIG_VENV/bin/python3" -c 'import ziglang' 2>/dev/null; then
        log "installing cargo-zigbuild and ziglang (PyPI) into $ZIG_VENV"
        python3 -m venv "$ZIG_VENV"
        "$ZIG_VENV/bin/pip" install -q cargo-zigbuild ziglang
    else
        log "cargo-zigbuild and ziglang present in $ZIG_VENV"
    fi
    # venv first (cargo-zigbuild, and the python3 that has ziglang), then Debian's cargo ahead of rustup's.
    export PATH="$ZIG_VENV/bin:/usr/bin:$PATH"
    export RUSTC_BOOTSTRAP=1    # -Zbuild-std with Debian's stable cargo/rustc
    export "CARGO_TARGET_${TRIPLE_ENV}_RUSTFLAGS=-C link-self-contained=no"
    export "CARGO_TARGET_${TRIPLE_ENV}_RUNNER=$QEMU"
}

# Runs an ARM binary built here under qemu-user (QEMU_CPU in the environment picks the CPU model).
run_arm() { "$QEMU" -L "$QEMU_LD" "$@"; }
