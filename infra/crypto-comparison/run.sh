#!/usr/bin/env bash
# Reproduces the field-encryption comparison in docs/privacy.md: the AWS Database Encryption
# SDK for DynamoDB (aws-db-esdk) versus aes-gcm + KMS GenerateDataKey, each as the smallest
# program that sets it up next to the SDK clients the functions use, built like the functions
# (release, thin LTO, stripped). Prints cold build time, binary and zip size, dependency count
# and init time (median of 11 runs; no network calls are made).
set -euo pipefail
cd "$(dirname "$0")"
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
printf '%-6s %14s %12s %10s %6s %12s\n' variant cold_build_s binary_B zip_B deps init_median_ms
for v in gcm esdk; do
  start=$(date +%s)
  (cd "$v" && CARGO_TARGET_DIR="$out/$v" cargo build --release -q)
  build=$(( $(date +%s) - start ))
  bin="$out/$v/release/$v"
  cp "$bin" "$out/bootstrap"
  (cd "$out" && rm -f "$v.zip" && zip -q -9 "$v.zip" bootstrap)
  deps=$(cd "$v" && cargo tree -e normal --prefix none | sort -u | wc -l)
  init=$(for _ in $(seq 11); do AWS_ACCESS_KEY_ID=x AWS_SECRET_ACCESS_KEY=y "$bin" | sed -E 's/^init ([0-9.]+)(ms|µs).*/\1 \2/'; done \
    | awk '{ms = ($2 == "µs") ? $1 / 1000 : $1; print ms}' | sort -n | sed -n 6p)
  printf '%-6s %14s %12s %10s %6s %12s\n' "$v" "$build" "$(stat -c %s "$bin")" "$(stat -c %s "$out/$v.zip")" "$deps" "$init"
done
