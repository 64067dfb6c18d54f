#!/usr/bin/env python3
"""Warm webhook answers: webhook-receiver binaries and a minimal Python receiver
(peer_receiver.py), each run as a Lambda under a local Runtime API that hands it Function URL
events (payload 2.0, as template.yaml fronts the receiver), one process kept warm; the time
of each invoke is from handing over the event to receiving the function's response.

SQS and DynamoDB/KMS are two moto servers, so that requests a function makes at the same time
are answered at the same time (one moto process answers one request at a time), as two AWS
services would. Run it with infra/coldstart/warm.sh.

Usage: warm.py <invokes> <name>=<webhook-receiver binary> ... [python=peer]
"""

import http.server
import json
import os
import queue
import socket
import statistics
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import boto3

from coldstart import ROOT, free_port, start_moto  # the cold-start rig beside this file

FIXTURE = ROOT / "tests/fixtures/text.json"  # a 360dialog text webhook (source beside it there)
TOKEN = "warm-token-1"
WARMUP = 5


AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_REGION": "eu-central-1",
       "AWS_DEFAULT_REGION": "eu-central-1"}


def provision(sqs_url: str, ddb_url: str) -> dict:
    kw = dict(region_name="eu-central-1", aws_access_key_id="testing", aws_secret_access_key="testing")
    ddb = boto3.client("dynamodb", endpoint_url=ddb_url, **kw)
    kms = boto3.client("kms", endpoint_url=ddb_url, **kw)
    sqs = boto3.client("sqs", endpoint_url=sqs_url, **kw)
    ddb.create_table(TableName="warm-relay", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk")],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    ddb.create_table(TableName="warm-keys", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    q = sqs.create_queue(QueueName="warm-q")["QueueUrl"]
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    pnid = json.loads(FIXTURE.read_text())["entry"][0]["changes"][0]["value"]["metadata"]["phone_number_id"]
    cfg = Path(os.environ.get("TMPDIR", "/tmp")) / "warm-relay.toml"
    cfg.write_text(f'[[tenants]]\nid = "warm"\nname = "Warm"\n\n[[tenants.channels]]\n'
                   f'phone_number_id = "{pnid}"\nprovider = "360dialog"\nwebhook_token = "{TOKEN}"\n')
    subprocess.run([str(ROOT / "target/release/relay"), "tenants", "apply", "--file", str(cfg),
                    "--table", "warm-relay", "--kms-key-id", key, "--endpoint-url", ddb_url],
                   check=True, capture_output=True, env={**os.environ, **AWS})
    return {"RELAY_TABLE": "warm-relay", "KEYS_TABLE": "warm-keys", "RELAY_KMS_KEY_ID": key,
            "INBOUND_QUEUE_URL": q, "WEBHOOK_TOKEN": TOKEN, "PNID": pnid,
            "AWS_ENDPOINT_URL_SQS": sqs_url, "AWS_ENDPOINT_URL_DYNAMODB": ddb_url,
            "AWS_ENDPOINT_URL_KMS": ddb_url}


def function_url_event(pnid: str, body: str) -> bytes:
    path = f"/webhooks/whatsapp/{pnid}"
    host = "abcdefghijklmnopqrstuvwxyz012345.lambda-url.eu-central-1.on.aws"
    return json.dumps({
        "version": "2.0", "routeKey": "$default", "rawPath": path, "rawQueryString": "",
        "headers": {"authorization": f"Bearer {TOKEN}", "content-type": "application/json",
                    "host": host, "user-agent": "warm-bench"},
        "requestContext": {
            "accountId": "anonymous", "apiId": host.split(".")[0], "domainName": host,
            "domainPrefix": host.split(".")[0], "requestId": str(uuid.uuid4()), "routeKey": "$default",
            "stage": "$default", "time": "02/Dec/2026:12:00:00 +0000", "timeEpoch": 1796212800000,
            "http": {"method": "POST", "path": path, "protocol": "HTTP/1.1", "sourceIp": "127.0.0.1",
                     "userAgent": "warm-bench"}},
        "body": body, "isBase64Encoded": False}).encode()


class RuntimeApi(http.server.ThreadingHTTPServer):
    """Hands out one event per `next`, and times it until its response arrives."""

    daemon_threads = True

    def __init__(self, port):
        self.events = queue.Queue()
        self.results = queue.Queue()
        self.sent_at = {}
        super().__init__(("127.0.0.1", port), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Headers and body go out as separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every event.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass

    def do_GET(self):
        if not self.path.endswith("/runtime/invocation/next"):
            self.send_error(404)
            return
        event = self.server.events.get()
        rid = str(uuid.uuid4())
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", rid)
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + 30_000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn",
                         "arn:aws:lambda:eu-central-1:123456789012:function:warm")
        self.send_header("Lambda-Runtime-Trace-Id", "Root=1-00000000-000000000000000000000000")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(event)))
        self.end_headers()
        self.server.sent_at[rid] = time.perf_counter()
        self.wfile.write(event)
        self.wfile.flush()

    def do_POST(self):
        done = time.perf_counter()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        parts = self.path.split("/")
        rid = parts[-2] if len(parts) > 2 else ""
        self.send_response(202)
        self.send_header("Content-Length", "0")
        self.end_headers()
        started = self.server.sent_at.pop(rid, None)
        if self.path.endswith("/response") and started is not None:
            self.server.results.put(((done - started) * 1000, body))
        else:
            self.server.results.put((None, body))


def measure(command: list, env: dict, invokes: int, event: bytes) -> list:
    port = free_port()
    api = RuntimeApi(port)
    threading.Thread(target=api.serve_forever, daemon=True).start()
    full = {**os.environ, **AWS, **env, "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{port}",
            "AWS_LAMBDA_FUNCTION_NAME": "warm", "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "256",
            "AWS_LAMBDA_FUNCTION_VERSION": "1", "RUST_LOG": "warn"}
    proc = subprocess.Popen(command, env=full, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    times = []
    try:
        for i in range(WARMUP + invokes):
            api.events.put(event)
            try:
                ms, body = api.results.get(timeout=30)
            except queue.Empty:
                raise SystemExit(f"{command[0]}: no answer\n{proc.stderr.read1().decode(errors='replace')[-2000:]}")
            answer = json.loads(body or b"{}")
            if ms is None or answer.get("statusCode") != 200:
                raise SystemExit(f"{command[0]}: invoke {i} failed: {body[:500]!r}")
            if i >= WARMUP:
                times.append(ms)
    finally:
        proc.kill()
        proc.wait()
        api.shutdown()
    return times


def main():
    invokes = int(sys.argv[1])
    subjects = [a.split("=", 1) for a in sys.argv[2:]]
    procs = []
    try:
        sqs_proc, sqs_url = start_moto()
        ddb_proc, ddb_url = start_moto()
        procs = [sqs_proc, ddb_proc]
        env = provision(sqs_url, ddb_url)
        event = function_url_event(env["PNID"], FIXTURE.read_text())
        sqs = boto3.client("sqs", endpoint_url=sqs_url, region_name="eu-central-1",
                           aws_access_key_id="testing", aws_secret_access_key="testing")
        # Rounds take turns, each on a fresh queue (moto slows down as a queue fills), so that
        # no subject is measured on a fuller queue or a busier moment than another.
        rounds = 5
        times = {name: [] for name, _ in subjects}
        for r in range(rounds):
            for i, (name, path) in enumerate(subjects):
                q = sqs.create_queue(QueueName=f"warm-{r}-{i}")["QueueUrl"]
                command = [sys.executable, path] if path.endswith(".py") else [path]
                times[name] += measure(command, {**env, "INBOUND_QUEUE_URL": q}, invokes // rounds, event)
                a = sqs.get_queue_attributes(QueueUrl=q, AttributeNames=["ApproximateNumberOfMessages"])
                n = int(a["Attributes"]["ApproximateNumberOfMessages"])
                # Every 200 was a message on the queue.
                if n != WARMUP + invokes // rounds:
                    raise SystemExit(f"{name}: {n} messages queued for {WARMUP + invokes // rounds} answers")
        print(f"| receiver | warm invoke, median of {rounds * (invokes // rounds)} | p90 |")
        print("|---|---|---|")
        for name, _ in subjects:
            t = sorted(times[name])
            p90 = t[int(len(t) * 0.9) - 1]
            print(f"| {name} | {statistics.median(t):.2f} ms | {p90:.2f} ms |")
    finally:
        for p in procs:
            p.kill()


if __name__ == "__main__":
    main()
