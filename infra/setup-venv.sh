#!/usr/bin/env bash
# Creates the Python venvs the project uses. Idempotent: a venv whose requirements file has not
# changed is left as it is.
#   infra/setup-venv.sh          ./.venv        moto server (tests)
#   infra/setup-venv.sh infra    ./.venv-infra  SAM CLI, cfn-lint (+ serverless rules), checkov, cargo-lambda
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
case "${1:-test}" in
    test) venv=.venv; reqs=infra/requirements.txt; probe=moto_server ;;
    infra) venv=.venv-infra; reqs=infra/requirements-infra.txt; probe=sam ;;
    *) echo "usage: $0 [test|infra]" >&2; exit 2 ;;
esac
stamp=$venv/.requirements.sha256
want=$(sha256sum "$reqs" | cut -d' ' -f1)
if [[ -x $venv/bin/$probe && -f $stamp && "$(cat "$stamp")" == "$want" ]]; then
    exit 0
fi
echo "setting up $venv from $reqs …" >&2
"$PYTHON" -m venv "$venv"
"$venv/bin/python" -m pip install --quiet --upgrade pip
"$venv/bin/python" -m pip install --quiet -r "$reqs"
echo "$want" > "$stamp"
echo "  $venv ready" >&2
