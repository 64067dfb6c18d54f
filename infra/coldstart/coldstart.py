#!/usr/bin/env python3
"""Cold start of each function binary: process start -> first `GET /runtime/invocation/next`
(the function is initialised and asks for its first event), under the local Lambda host's
Runtime API (infra/lambda-host/runtime.py), side by side with a hello-world Rust Lambda built
the same way.

The relay's functions read their settings, build their SDK clients and, at init, load the
deployment's pseudonymisation key (one DynamoDB GetItem + one KMS Decrypt): here against a moto
server on loopback, provisioned by this script. Run it with infra/coldstart/run.sh.

Usage: coldstart.py <target dir with the release binaries> <hello binary> [runs]
"""

import os
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import boto3

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "infra/lambda-host"))
from runtime import Function, InvokeError, free_port  # noqa: E402  the local Lambda host's runtime


def start_moto() -> tuple:
    """A moto server on a free loopback port, once it accepts connections: (process, URL)."""
    port = free_port()
    proc = subprocess.Popen([str(ROOT / ".venv/bin/moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    return proc, f"http://127.0.0.1:{port}"


def provision(endpoint: str) -> dict:
    kw = dict(endpoint_url=endpoint, region_name="eu-central-1",
              aws_access_key_id="testing", aws_secret_access_key="testing")
    ddb, sqs, kms, s3 = (boto3.client(s, **kw) for s in ("dynamodb", "sqs", "kms", "s3"))
    ddb.create_table(TableName="cs-relay", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("pk", "sk")],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}, {"AttributeName": "sk", "KeyType": "RANGE"}])
    ddb.create_table(TableName="cs-keys", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    ddb.create_table(TableName="cs-audit", BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": n, "AttributeType": "S"} for n in ("tenant", "at")],
                     KeySchema=[{"AttributeName": "tenant", "KeyType": "HASH"}, {"AttributeName": "at", "KeyType": "RANGE"}])
    q = sqs.create_queue(QueueName="cs-q")["QueueUrl"]
    key = kms.create_key()["KeyMetadata"]["KeyId"]
    s3.create_bucket(Bucket="cs-media", CreateBucketConfiguration={"LocationConstraint": "eu-central-1"})
    # The deployment's pseudonymisation key, as `relay tenants apply` creates it.
    cfg = Path(os.environ.get("TMPDIR", "/tmp")) / "coldstart-relay.toml"
    cfg.write_text('[[tenants]]\nid = "cs"\nname = "CS"\n')
    subprocess.run([str(ROOT / "target/release/relay"), "tenants", "apply", "--file", str(cfg),
                    "--table", "cs-relay", "--kms-key-id", key, "--endpoint-url", endpoint],
                   check=True, capture_output=True,
                   env={**os.environ, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                        "AWS_REGION": "eu-central-1"})
    return {"RELAY_TABLE": "cs-relay", "KEYS_TABLE": "cs-keys", "AUDIT_TABLE": "cs-audit",
            "RELAY_KMS_KEY_ID": key, "INBOUND_QUEUE_URL": q, "OUTBOUND_QUEUE_URL": q,
            "OUTBOUND_DLQ_URL": q, "MEDIA_BUCKET": "cs-media"}


def measure(binary: Path, env: dict, runs: int) -> list:
    """Init times: a fresh process each run, until it asks for its first event."""
    times = []
    for _ in range(runs):
        fn = Function(binary.name, [str(binary)], {**env, "RUST_LOG": "warn"})
        try:
            times.append(fn.start())
        except InvokeError as e:
            raise SystemExit(f"{binary.name} never asked for an event: {e}")
        finally:
            fn.stop()
    return times


def main():
    target, hello = Path(sys.argv[1]), Path(sys.argv[2])
    runs = int(sys.argv[3]) if len(sys.argv) > 3 else 11
    moto, endpoint = start_moto()
    try:
        env = provision(endpoint)
        aws = {"AWS_ENDPOINT_URL": endpoint, "AWS_ACCESS_KEY_ID": "testing",
               "AWS_SECRET_ACCESS_KEY": "testing"}
        base = statistics.median(measure(hello, {}, runs))
        print(f"| binary | size | init, median of {runs} | × hello-world |")
        print("|---|---|---|---|")
        print(f"| hello-world | {hello.stat().st_size / 1e6:.1f} MB | {base:.1f} ms | 1.0 |")
        for name in ("webhook-receiver", "message-router", "reply-sender", "inbox-api"):
            b = target / name
            m = statistics.median(measure(b, {**env, **aws}, runs))
            print(f"| {name} | {b.stat().st_size / 1e6:.1f} MB | {m:.1f} ms | {m / base:.1f} |")
    finally:
        moto.kill()


if __name__ == "__main__":
    main()
