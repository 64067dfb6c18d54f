#!/usr/bin/env python3
"""Warm webhook answers: webhook-receiver binaries and a minimal Python receiver
(peer_receiver.py), each run as a Lambda under the local Lambda host's Runtime API
(infra/lambda-host/runtime.py) that hands it Function URL events (payload 2.0, as template.yaml
fronts the receiver), one process kept warm; the time of each invoke is from handing over the
event to receiving the function's response.

SQS and DynamoDB/KMS are two moto servers, so that requests a function makes at the same time
are answered at the same time (one moto process answers one request at a time), as two AWS
services would. Run it with infra/coldstart/warm.sh.

Usage: warm.py <invokes> <name>=<webhook-receiver binary> ... [python=peer]
"""

import json
import os
import statistics
import subprocess
import sys
import uuid
from pathlib import Path

import boto3

from coldstart import ROOT, start_moto  # the cold-start rig beside this file
from runtime import Function, InvokeError  # the local Lambda host's (coldstart puts it on the path)

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


def measure(command: list, env: dict, invokes: int, event: bytes) -> list:
    """One warm instance: WARMUP invokes, then `invokes` timed ones (event handed over ->
    the function's response received)."""
    fn = Function("warm", command, {**AWS, **env, "RUST_LOG": "warn"})
    times = []
    try:
        for i in range(WARMUP + invokes):
            try:
                body, ms = fn.invoke(event)
            except InvokeError as e:
                raise SystemExit(f"{command[0]}: invoke {i} failed: {e}")
            answer = json.loads(body or b"{}")
            if answer.get("statusCode") != 200:
                raise SystemExit(f"{command[0]}: invoke {i} answered {body[:500]!r}")
            if i >= WARMUP:
                times.append(ms)
    finally:
        fn.stop()
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
