#!/usr/bin/env python3
"""A minimal webhook receiver in Python, for measuring only: the peer that webhook-receiver is
compared with in docs/performance.md (infra/coldstart/warm.py runs both under the same local
Lambda Runtime API, on the same endpoints).

It does the least a receiver can: check the bearer token, put the body on the queue with one
SendMessage (boto3, created once per process as a warm Lambda keeps it), answer 200. No
validation, no sealing, no splitting — what the relay does on top is its own cost.

Environment: AWS_LAMBDA_RUNTIME_API, INBOUND_QUEUE_URL, WEBHOOK_TOKEN, and the AWS_* variables
boto3 reads (AWS_ENDPOINT_URL_SQS for a local endpoint).
"""

import hmac
import json
import os
import urllib.request

import boto3

API = os.environ["AWS_LAMBDA_RUNTIME_API"]
QUEUE = os.environ["INBOUND_QUEUE_URL"]
EXPECTED = "Bearer " + os.environ["WEBHOOK_TOKEN"]
sqs = boto3.client("sqs")


def handle(event: dict) -> dict:
    headers = {k.lower(): v for k, v in (event.get("headers") or {}).items()}
    if not hmac.compare_digest(headers.get("authorization", ""), EXPECTED):
        return {"statusCode": 401, "body": ""}
    sqs.send_message(QueueUrl=QUEUE, MessageBody=event.get("body") or "")
    return {"statusCode": 200, "headers": {"content-type": "application/json"},
            "body": '{"status":"queued"}'}


def main() -> None:
    base = f"http://{API}/2018-06-01/runtime/invocation"
    while True:
        with urllib.request.urlopen(f"{base}/next") as r:
            request_id = r.headers["Lambda-Runtime-Aws-Request-Id"]
            event = json.load(r)
        answer = json.dumps(handle(event)).encode()
        urllib.request.urlopen(urllib.request.Request(
            f"{base}/{request_id}/response", data=answer, method="POST")).close()


if __name__ == "__main__":
    main()
