#!/usr/bin/env bash
# Builds the matrix-appliance .deb for one architecture:
#
#   packaging/build-deb.sh <amd64|arm64|armhf> [--element TARBALL | --no-element]
#                          [--binary PATH] [--version VERSION] [--out DIR]
#
# amd64 is built with the machine's cargo; arm64 and armhf are cross-compiled with Debian's
# rustc-web (bookworm-security), which ships a std for those targets where rustup here cannot
# add one. Element Web is not in the repository: --element takes a release tarball; without it
# the script downloads the pinned release when the network allows, and otherwise builds a
# package without Element (`appliance element install` adds it later). --binary packages an
# already-built binary (CI packages the one its tests built). lintian runs at the end and any
# error fails the build.
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

# Element Web release shipped when no tarball is given, with the SHA-256 of its tarball. The
# checksum is the one two independent public deployments pin for this release; GitHub is not
# reachable from the machine this was written on, so it was cross-checked, not recomputed (see
# packaging/README.md). A mismatch stops the build.
ELEMENT_VERSION=1.12.25
ELEMENT_URL="https://github.com/element-hq/element-web/releases/download/v${ELEMENT_VERSION}/element-v${ELEMENT_VERSION}.tar.gz"
ELEMENT_SHA256=14d7f2671eb1fbccc690e7f176042d72ed2b4e34f7326a007e8b1540b1e748bb

usage() { sed -n '2,15p' "$0" | sed 's/^# \{0,1\}//'; exit 2; }

arch="${1:-}"
[[ -n "$arch" ]] || usage
shift
element=auto binary="" version="" out="$root/target/deb"
while [[ $# -gt 0 ]]; do
    case "$1" in
        --element) element="$2"; shift 2 ;;
        --no-element) element=none; shift ;;
        --binary) binary="$2"; shift 2 ;;
        --version) version="$2"; shift 2 ;;
        --out) out="$2"; shift 2 ;;
        *) usage ;;
    esac
done

case "$arch" in
    amd64) triple=x86_64-unknown-linux-gnu ;;
    arm64) triple=aarch64-unknown-linux-gnu gnu=aarch64-linux-gnu qemu=qemu-aarch64-static ;;
    armhf) triple=armv7-unknown-linux-gnueabihf gnu=arm-linux-gnueabihf qemu=qemu-arm-static ;;
    *) echo "unknown architecture '$arch' (amd64, arm64 or armhf)" >&2; exit 2 ;;
esac

need_packages() {
    local missing=()
    for p in "$@"; do dpkg -s "$p" >/dev/null 2>&1 || missing+=("$p"); done
    [[ ${#missing[@]} -eq 0 ]] && return 0
    echo "--- installing ${missing[*]}"
    if ! apt-get install -y --no-install-recommends "${missing[@]}"; then
        apt-get update || true
        apt-get install -y --no-install-recommends "${missing[@]}" || {
            echo "apt-get could not install ${missing[*]}." >&2
            echo "If it says a package has no installation candidate or a hash sum mismatch, the" >&2
            echo "mirror's bookworm-security index for that architecture may be stale: retry later." >&2
            exit 1
        }
    fi
}

need_packages debhelper lintian dpkg-dev fakeroot

# --- the binary
if [[ -z "$binary" ]]; then
    if [[ "$arch" == amd64 ]]; then
        cargo build --release --locked
        binary="${CARGO_TARGET_DIR:-target}/release/appliance"
    else
        if ! dpkg --print-foreign-architectures | grep -qx "$arch"; then
            dpkg --add-architecture "$arch"
            # A stale index of another architecture fails `update` as a whole; what we need
            # may still be there, and need_packages says so clearly if not.
            apt-get update || echo "apt-get update reported errors (see above); trying anyway" >&2
        fi
        need_packages rustc-web cargo-web "libstd-rust-web-dev:$arch" "gcc-$gnu" "libc6-dev-$arch-cross" qemu-user-static
        upper=$(echo "$triple" | tr 'a-z-' 'A-Z_')
        export "CARGO_TARGET_${upper}_LINKER=$gnu-gcc"
        export "CARGO_TARGET_${upper}_RUNNER=$qemu"
        # rustup's rustc has no std for these targets; Debian's has.
        RUSTC=/usr/bin/rustc CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-target}/cross" \
            cargo build --release --locked --target "$triple"
        binary="${CARGO_TARGET_DIR:-target}/cross/$triple/release/appliance"
    fi
fi
binary="$(realpath "$binary")"
[[ -x "$binary" ]] || { echo "no executable at $binary" >&2; exit 1; }

# --- Element Web
element_dir=""
if [[ "$element" == auto ]]; then
    cache="$root/target/element-v${ELEMENT_VERSION}.tar.gz"
    if [[ ! -s "$cache" ]] && ! curl -fsSL --max-time 120 -o "$cache.part" "$ELEMENT_URL"; then
        echo "--- cannot download Element Web $ELEMENT_VERSION: building without it" >&2
        rm -f "$cache.part"
        element=none
    else
        [[ -s "$cache" ]] || mv "$cache.part" "$cache"
        element="$cache"
        if ! echo "$ELEMENT_SHA256  $cache" | sha256sum -c --quiet; then
            echo "Element Web tarball checksum mismatch: $cache" >&2
            exit 1
        fi
    fi
fi

stage="$(mktemp -d "$root/target/deb-stage.XXXXXX")"
trap 'rm -rf "$stage"' EXIT
if [[ "$element" != none ]]; then
    mkdir -p "$stage/element"
    tar -xzf "$element" -C "$stage/element" --strip-components=1 --no-same-owner
    element_dir="$stage/element"
fi

# --- the package, built from a copy so that dpkg-buildpackage writes nothing in the tree
src="$stage/matrix-appliance"
mkdir -p "$src"
cp -R debian systemd README.md "$src/"
if [[ -n "$version" ]]; then
    {
        echo "matrix-appliance ($version) unstable; urgency=medium"
        echo
        echo "  * Build $version."
        echo
        echo " -- matrix-appliance developers <matrix-appliance@packages.invalid>  $(date -R)"
        echo
        cat debian/changelog
    } >"$src/debian/changelog"
fi

(
    cd "$src"
    # -d: the binary is built above, so no build dependency of the ARM architecture is needed.
    APPLIANCE_BINARY="$binary" ELEMENT_DIR="$element_dir" \
        DEB_BUILD_OPTIONS=noddebs dpkg-buildpackage --build=binary --host-arch="$arch" -d -us -uc
)
mkdir -p "$out"
deb="$(ls "$stage"/matrix-appliance_*_"$arch".deb)"
mv "$deb" "$out/"
deb="$out/$(basename "$deb")"

echo "--- lintian $(basename "$deb")"
# Errors fail the build; warnings are printed for the record.
lintian --fail-on error --suppress-tags binary-without-manpage "$deb"
echo "--- built $deb ($(du -h "$deb" | cut -f1); binary $(du -h "$binary" | cut -f1))"
