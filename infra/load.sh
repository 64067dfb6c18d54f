#!/usr/bin/env bash
# Load test of the local pipeline: builds `relay` (release), starts `relay serve` on a free
# port with a fresh data directory, posts TOTAL distinct webhooks over CONCURRENCY connections
# (tests/benches/load.rs), waits until every one is stored, prints a table. Logs at warn, as a
# busy deployment would run.
#
#   ./infra/load.sh                          # 20,000 webhooks, 64 connections, 1,000 replies
#   TOTAL=50000 CONCURRENCY=128 ./infra/load.sh
#   REPLIES=1000 SEND_RATE=80 ./infra/load.sh  # the burst at WhatsApp's default 80 messages/s
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet -p relay
work=$(mktemp -d)
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
fake_port=$(free_port)
send_rate="${SEND_RATE:-1000}"
cat >"$work/relay.toml" <<TOML
[[tenants]]
id = "load-apotheke"
name = "Load"
api_keys = ["sk_load_0123456789abcdef"]
[[tenants.channels]]
phone_number_id = "106540352242922"
provider = "360dialog"
webhook_token = "load-token"
api_key = "load-d360-key"
api_base_url = "http://127.0.0.1:$fake_port"
send_rate_per_second = $send_rate
TOML
RUST_LOG=warn ./target/release/relay serve --config "$work/relay.toml" \
  --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/serve.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$work"' EXIT
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done
echo "relay serve on 127.0.0.1:$port ($(nproc) cores)"
RELAY_URL="http://127.0.0.1:$port" RELAY_DB="$work/data/relay.db" WEBHOOK_TOKEN=load-token \
  FAKE_PORT="$fake_port" SEND_RATE="$send_rate" API_KEY=sk_load_0123456789abcdef \
  cargo bench --quiet -p relay-e2e --bench load
