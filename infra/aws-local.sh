#!/usr/bin/env bash
# The AWS shape on one machine, before `sam deploy`: a moto server, and template.yaml's four
# Lambda functions (the binaries `cargo build` makes) under the local Lambda host
# (infra/lambda-host/host.py), each with its environment from the template, webhook-receiver
# behind a Function URL, inbox-api behind the HTTP API, the router and reply-sender fed by
# their queues. Prints the stack's outputs (WebhookUrl, InboxApiUrl, InboxUrl, TableName, …);
# Ctrl-C stops everything.
#
#   ./infra/aws-local.sh                         # then apply tenants (below) and curl away
#   ./infra/aws-local.sh --tenants relay.toml    # applies the file once the stack is up
#   RELAY_AWS_LOCAL_PORT=4000 ./infra/aws-local.sh
#
# Tenants, by hand: relay tenants apply --file relay.toml --table <TableName>
#   --kms-key-id <KmsKeyId> --endpoint-url <MotoUrl>   (with AWS_ACCESS_KEY_ID=testing etc.)
# Nothing persists: moto keeps everything in memory.
set -euo pipefail
cd "$(dirname "$0")/.."
tenants=""
profile=debug
while [[ $# -gt 0 ]]; do
    case "$1" in
        --tenants) tenants="$2"; shift 2 ;;
        --release) profile=release; shift ;;
        -h|--help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done
[[ -z "$tenants" || -f "$tenants" ]] || { echo "no such file: $tenants" >&2; exit 2; }

./infra/setup-venv.sh
target="${CARGO_TARGET_DIR:-$PWD/target}"
flag=""; [[ $profile == release ]] && flag=--release
echo "== building the functions and the relay CLI ($profile)"
cargo build --locked $flag -p webhook-receiver -p message-router -p reply-sender -p inbox-api -p relay

port="${RELAY_AWS_LOCAL_PORT:-3000}"
moto_port=$((port + 30))
state=.aws-local
mkdir -p "$state"
rm -f "$state/outputs.json"
.venv/bin/moto_server -H 127.0.0.1 -p "$moto_port" >"$state/moto.log" 2>&1 &
moto=$!
trap 'kill $moto $host 2>/dev/null || true; wait 2>/dev/null || true' EXIT INT TERM
host=""
for _ in $(seq 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$moto_port") 2>/dev/null && break
    sleep 0.1
done
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing AWS_REGION=eu-central-1
.venv/bin/python infra/lambda-host/host.py --endpoint-url "http://127.0.0.1:$moto_port" \
    --bin-dir "$target/$profile" --port "$port" --log-dir "$state/logs" --outputs "$state/outputs.json" &
host=$!
for _ in $(seq 600); do
    [[ -f "$state/outputs.json" ]] && break
    kill -0 $host 2>/dev/null || { echo "the host stopped (see above)" >&2; exit 1; }
    sleep 0.1
done
echo "MotoUrl              http://127.0.0.1:$moto_port"
if [[ -n "$tenants" ]]; then
    table=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["TableName"])' "$state/outputs.json")
    key=$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["KmsKeyId"])' "$state/outputs.json")
    "$target/$profile/relay" tenants apply --file "$tenants" --table "$table" --kms-key-id "$key" \
        --endpoint-url "http://127.0.0.1:$moto_port"
fi
echo "function logs in $state/logs; Ctrl-C stops"
wait $host
