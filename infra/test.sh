#!/usr/bin/env bash
# The whole test suite: unit, handler, moto-backed AWS adapter and end-to-end tests, and the
# deployed-path suite (the Lambda binaries under infra/lambda-host on moto).
# Makes the Python venv with moto on first use (infra/setup-venv.sh) and installs the Debian
# packages the tests use (infra/setup-debian.sh: caddy, chromium); tests start their own moto server on a
# free loopback port.
set -euo pipefail
cd "$(dirname "$0")/.."
./infra/setup-venv.sh
./infra/setup-debian.sh caddy chromium
export MOTO_SERVER="$PWD/.venv/bin/moto_server"
exec cargo test --workspace --locked "$@"
