#!/usr/bin/env bash
# The fault suites, bigger than in the test run, with their summary tables printed:
#   tests/tests/faults.rs      AWS backend: moto behind a fault-injecting proxy, killed invocations
#   crates/cli/tests/faults.rs embedded backend: relay serve killed with SIGKILL and restarted
# Both: a fake 360dialog and a fake pharmacy endpoint answering 429/5xx and breaking connections.
#
#   ./infra/faults.sh                                   # 1,000 + 200 on moto, 6,000 + 1,000 embedded
#   FAULT_SEED=123 ./infra/faults.sh                    # replay a run's random choices
#   FAULT_WEBHOOKS=1000 FAULT_REPLIES=200 ./infra/faults.sh
set -euo pipefail
cd "$(dirname "$0")/.."
./infra/setup-venv.sh >/dev/null
export MOTO_SERVER="$PWD/.venv/bin/moto_server"
echo "== AWS backend (moto)"
FAULT_WEBHOOKS="${FAULT_WEBHOOKS:-1000}" FAULT_REPLIES="${FAULT_REPLIES:-200}" FAULT_CUSTOMERS="${FAULT_CUSTOMERS:-40}" \
  cargo test --quiet -p relay-e2e --test faults -- --nocapture
echo "== embedded backend (relay serve)"
FAULT_WEBHOOKS="${FAULT_WEBHOOKS:-6000}" FAULT_REPLIES="${FAULT_REPLIES:-1000}" FAULT_CUSTOMERS="${FAULT_CUSTOMERS:-200}" FAULT_KILLS="${FAULT_KILLS:-10}" \
  cargo test --quiet -p relay --test faults -- --nocapture
