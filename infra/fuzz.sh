#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for a bounded time on the checked-in corpus
# (fuzz/corpus/<target>, seeds; new finds go to a temporary directory). A crash fails the run
# and leaves the input in fuzz/artifacts/<target>/: turn it into a regression test.
#
# cargo-fuzz passes flags only nightly Rust accepts; this project builds with one stable
# toolchain, so RUSTC_BOOTSTRAP=1 lets stable rustc take them. No sanitizer (-s none): the
# code under test is safe Rust, and libFuzzer's coverage guidance is what we are after.
#
#   FUZZ_SECONDS=300 ./infra/fuzz.sh      # longer runs
#   ./infra/fuzz.sh webhook               # one target
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${FUZZ_SECONDS:-20}"
targets=("$@")
[ ${#targets[@]} -gt 0 ] || targets=(webhook auth inbox_body sealed)
if ! command -v cargo-fuzz >/dev/null; then
  echo "installing cargo-fuzz …"
  cargo install cargo-fuzz --locked --quiet
fi
export RUSTC_BOOTSTRAP=1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for t in "${targets[@]}"; do
  echo "== fuzz $t (${secs} s)"
  mkdir -p "$work/$t"
  if ! cargo fuzz run --fuzz-dir fuzz -s none "$t" "$work/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$secs" -rss_limit_mb=2048 -print_final_stats=1 >"$work/$t.log" 2>&1; then
    tail -n 40 "$work/$t.log" >&2
    echo "fuzz target $t failed; a failing input is kept in fuzz/artifacts/$t/" >&2
    exit 1
  fi
  grep -E "^stat::(number_of_executed_units|peak_rss_mb)|^Done" "$work/$t.log" || true
done
