#!/usr/bin/env bash
# Installs the system packages Chorus needs to build and test, when missing.
#
#   libclang   bindgen generates RocksDB's Rust bindings with it
#   g++        RocksDB itself is C++, built from source by librocksdb-sys
#   iproute2   `ip netns`: the real-process fault tests (tests/src/netns.rs)
#   nftables   `nft`: their partitions
#   faketime   libfaketime: their clock skew (tests/src/real.rs)
#   iptables   the NFQUEUE target that their link delay holds packets with
#   python3    runs that delayer (standard library only)
#
# Run as root (or with passwordless sudo) to install them; otherwise this
# prints what to install and exits non-zero.
set -euo pipefail

missing=()
have_libclang() {
    [ -n "${LIBCLANG_PATH:-}" ] && return 0
    # libclang-cpp is a different library; bindgen needs libclang itself.
    ldconfig -p 2>/dev/null | grep -Eq '[[:space:]]libclang(-[0-9.]+)?\.so' && return 0
    compgen -G '/usr/lib/llvm-*/lib/libclang.so*' >/dev/null
}
have_libclang || missing+=(libclang-dev)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
command -v ip >/dev/null 2>&1 || missing+=(iproute2)
command -v nft >/dev/null 2>&1 || [ -x /usr/sbin/nft ] || missing+=(nftables)
compgen -G '/usr/lib/*/faketime/libfaketimeMT.so.1' >/dev/null || missing+=(faketime)
command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing+=(iptables)
command -v python3 >/dev/null 2>&1 || missing+=(python3)

[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
    sudo=()
elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
    sudo=(sudo)
else
    echo "chorus: missing system packages: ${missing[*]}" >&2
    echo "chorus: install them with: sudo apt-get install ${missing[*]}" >&2
    exit 1
fi

echo "chorus: installing system packages: ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
"${sudo[@]}" apt-get update -qq
"${sudo[@]}" apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
