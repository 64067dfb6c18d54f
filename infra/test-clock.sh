#!/usr/bin/env bash
# The suites run with the machine's clock moved: two years ahead and one year back (libfaketime).
# No rule and no test may depend on the date it runs; this is where one that does shows up.
#
# Builds the test binaries first and runs them directly (cargo and rustdoc themselves misbehave
# under a faked clock: cargo rebuilds everything, doctests stall). The fault suites and
# the deployed-path suite are left out (they run in ./infra/test.sh); the rest, moto-backed
# ones included, run.
#
#   ./infra/test-clock.sh                 both shifts
#   CLOCK_SHIFTS="+3650d" ./infra/test-clock.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root="$PWD"
shifts="${CLOCK_SHIFTS:-+730d -365d}"

./infra/setup-debian.sh faketime caddy
./infra/setup-venv.sh
export MOTO_SERVER="$root/.venv/bin/moto_server"

# Every test binary with its package directory (cargo runs tests from there).
list="$(mktemp)"
trap 'rm -f "$list"' EXIT
cargo test --workspace --locked --no-run --message-format=json 2>/dev/null |
    python3 -c '
import json, os, sys
for line in sys.stdin:
    m = json.loads(line)
    if m.get("reason") != "compiler-artifact" or not m.get("executable") or not m["profile"]["test"]:
        continue
    name = m["target"]["name"]
    if name in ("faults", "deployed"):
        # The fault suites: long, and run by infra/test.sh. The deployed-path suite builds
        # the binaries with cargo (which misbehaves under a faked clock); it runs there too.
        continue
    print(os.path.dirname(m["manifest_path"]), m["executable"], name)
' >"$list"
[ -s "$list" ] || { echo "error: no test binaries found" >&2; exit 1; }

failed=0
out="$(mktemp)"
trap 'rm -f "$list" "$out"' EXIT
for shift in $shifts; do
    echo "== clock moved $shift ($(faketime -f "$shift" date -u +%F))"
    while read -r dir exe name; do
        # Monotonic time stays real: timeouts and tokio's timers measure durations, not dates.
        # Skipped here: the Caddy test, whose proxy (a Go binary) keeps the real clock, so its
        # certificates look expired or not yet valid to a client on the moved one.
        if (cd "$dir" && FAKETIME_DONT_FAKE_MONOTONIC=1 faketime -f "$shift" "$exe" \
            --skip behind_caddy_the_relay_answers_over_https </dev/null >"$out" 2>&1); then
            echo "  $name: $(grep -E '^test result' "$out" | tail -1)"
        else
            echo "FAILED: $name with the clock moved $shift"
            grep -E -A12 '^---- |^failures:|panicked' "$out" | head -60 | sed 's/^/    /'
            failed=$((failed + 1))
        fi
    done <"$list"
done
if [ "$failed" -gt 0 ]; then
    echo "$failed test binaries failed with a moved clock"
    exit 1
fi
echo "every suite passed with the clock moved ($shifts)"
