#!/usr/bin/env bash
# Cold start of the four function binaries (host build, release profile) against a local Lambda
# Runtime API, next to a hello-world Rust Lambda built the same way; prints a Markdown table.
# Needs the test venv (moto, boto3): ./infra/setup-venv.sh test.
#
#   ./infra/coldstart/run.sh [runs]
set -euo pipefail
cd "$(dirname "$0")/../.."
./infra/setup-venv.sh test >/dev/null
cargo build --release --quiet -p relay -p webhook-receiver -p message-router -p reply-sender -p inbox-api --bins
(cd infra/coldstart/hello && CARGO_TARGET_DIR="$PWD/../../../target/coldstart" cargo build --release --quiet)
.venv/bin/python infra/coldstart/coldstart.py target/release target/coldstart/release/hello "${1:-11}"
