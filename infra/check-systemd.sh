#!/usr/bin/env bash
# Checks the systemd units in infra/systemd with `systemd-analyze verify`: any complaint (an
# unknown or misspelt directive, a value that does not parse, a missing executable) fails.
# The units name /usr/local/bin/relay; the check points them at this checkout's build.
set -euo pipefail
cd "$(dirname "$0")/.."
./infra/setup-debian.sh systemd
cargo build --locked -q -p relay
relay="$PWD/target/debug/relay"
dir="$(mktemp -d)"
trap 'rm -rf "$dir"' EXIT
for unit in infra/systemd/*.service infra/systemd/*.timer; do
    sed "s#/usr/local/bin/relay#$relay#g" "$unit" >"$dir/$(basename "$unit")"
done
status=0
for unit in "$dir"/*; do
    out="$(systemd-analyze verify "$unit" 2>&1)" || status=1
    if [ -n "$out" ]; then
        echo "$out" | sed "s#$dir/#infra/systemd/#g"
        status=1
    fi
done
[ "$status" = 0 ] && echo "systemd units: ok ($(ls "$dir" | tr '\n' ' '))"
exit "$status"
