#!/usr/bin/env bash
# Installs the Debian packages the tests use, where they are missing: caddy (the reverse-proxy
# test of relay serve), faketime (the suites with a moved clock), systemd (systemd-analyze),
# chromium (headless Chromium and its chromium-driver: the web inbox's browser tests), qemu-user
# and libc6-arm64-cross (arm64 Lambda builds run on an x86_64 machine: the deployed-path suite).
# Needs root and apt-get (CI and the development machines have both); elsewhere it says what to
# install and fails.
#   infra/setup-debian.sh caddy faketime
set -euo pipefail
missing=()
for pkg in "$@"; do
    case "$pkg" in
        caddy) probe=caddy ;;
        faketime) probe=faketime ;;
        systemd) probe=systemd-analyze ;;
        chromium) probe=chromedriver ;;
        qemu-user) probe=qemu-aarch64 ;;
        libc6-arm64-cross) probe=/usr/aarch64-linux-gnu/lib/ld-linux-aarch64.so.1 ;;
        *) echo "unknown package $pkg" >&2; exit 2 ;;
    esac
    { command -v "$probe" >/dev/null || [[ -e "$probe" ]]; } || missing+=("$pkg")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "error: install ${missing[*]} (Debian: apt-get install ${missing[*]})" >&2
    exit 1
fi
echo "installing ${missing[*]} (Debian packages) …" >&2
export DEBIAN_FRONTEND=noninteractive
# chromium comes with its WebDriver (a separate Debian package).
packages=()
for pkg in "${missing[@]}"; do
    packages+=("$pkg")
    [ "$pkg" = chromium ] && packages+=(chromium-driver)
done
apt-get install -y -qq "${packages[@]}" >/dev/null 2>&1 ||
    { apt-get update -qq >/dev/null && apt-get install -y -qq "${packages[@]}" >/dev/null; }
