#!/usr/bin/env bash
# Warm webhook answers of webhook-receiver (host build, release profile) next to a minimal Python
# receiver, each under a local Lambda Runtime API with Function URL events; prints a Markdown
# table. Needs the test venv (moto, boto3): ./infra/setup-venv.sh test.
#
#   ./infra/coldstart/warm.sh [invokes] [name=other-webhook-receiver-binary ...]
#
# Extra binaries (for example one built from an earlier commit) are measured in the same run.
set -euo pipefail
cd "$(dirname "$0")/../.."
./infra/setup-venv.sh test >/dev/null
cargo build --release --quiet -p relay -p webhook-receiver --bins
invokes="${1:-100}"
shift || true
.venv/bin/python infra/coldstart/warm.py "$invokes" "$@" \
  webhook-receiver=target/release/webhook-receiver python=infra/coldstart/peer_receiver.py
