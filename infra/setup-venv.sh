#!/usr/bin/env bash
# Creates ./.venv with the Python tools the tests use (moto server). Idempotent: a venv whose
# requirements have not changed is left as it is.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
stamp=.venv/.requirements.sha256
want=$(sha256sum infra/requirements.txt | cut -d' ' -f1)
if [[ -x .venv/bin/moto_server && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
echo "setting up .venv (moto server for SQS/DynamoDB/KMS tests)…" >&2
"$PYTHON" -m venv .venv
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -r infra/requirements.txt
echo "$want" > "$stamp"
echo "  .venv ready: $(.venv/bin/python -m pip show moto | grep ^Version)" >&2
