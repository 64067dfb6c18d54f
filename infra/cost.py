#!/usr/bin/env python3
"""Cost per million inbound messages and per million replies in eu-central-1.

Input: target/cost/measurements.json, written by `cargo test -p relay-e2e --test cost`
(request counts per message through the real code paths on moto). Output: a Markdown table
for docs/cost.md. Prices are list prices for eu-central-1 as recorded below; update PRICES
(and PRICES_AS_OF) when AWS changes them — the counts do not depend on them.

Usage: python3 infra/cost.py [path/to/measurements.json]
"""

import json
import sys
from pathlib import Path

PRICES_AS_OF = "2026-11 (recorded from the AWS price list; re-check before quoting)"
PRICES = {
    # DynamoDB on-demand, Standard table class, eu-central-1.
    "dynamodb_write_request_unit": 0.7625 / 1e6,
    "dynamodb_read_request_unit": 0.1525 / 1e6,
    # SQS standard queue, per request (each 64 KB chunk of a payload is one request).
    "sqs_request": 0.40 / 1e6,
    # Lambda, arm64.
    "lambda_request": 0.20 / 1e6,
    "lambda_gb_second_arm64": 0.0000133334,
    # API Gateway HTTP API, first 300 million requests a month.
    "http_api_request": 1.20 / 1e6,
    # KMS API requests (SQS SSE-KMS reuses data keys for 5 minutes; functions cache secrets).
    "kms_request": 0.03 / 1e4,
    # CloudWatch Logs ingestion.
    "logs_gb": 0.63,
}

# Small items (< 1 KB written, < 4 KB read): one unit per request; transactions cost two per
# item. Queries read up to 4 KB per unit; a conversation page is well under that.
WRITE_OPS = {"PutItem": 1, "UpdateItem": 1, "DeleteItem": 1}
READ_OPS = {"GetItem": 1, "Query": 1}

# Memory of every function in template.yaml (GB); durations come from the measurements.
MEMORY_GB = 0.256
# Which function runs (and how often) for one inbound message and for one reply with its three
# status webhooks. The router runs once per SQS batch of up to 10; the measurement drains
# batches, so its per-message time already divides the batch's cost.
# (function, invocations, messages handled) per inbound message / per reply.
INVOCATIONS = {
    "inbound": [("webhook-receiver", 1, 1), ("message-router", 0.1, 1)],
    "reply": [("inbox-api", 1, 1), ("reply-sender", 0.1, 1), ("webhook-receiver", 3, 3), ("message-router", 0.3, 3)],
}
LOG_BYTES = {"inbound": 600, "reply": 2000}


def units(calls: dict) -> dict:
    out = {"wru": 0.0, "rru": 0.0, "sqs": 0.0, "kms": 0.0}
    for op, n in calls.items():
        service, _, name = op.partition(".")
        if op == "DynamoDB.TransactItems":
            out["wru"] += 2 * n
        elif service.startswith("DynamoDB_") and name in WRITE_OPS:
            out["wru"] += WRITE_OPS[name] * n
        elif service.startswith("DynamoDB_") and name in READ_OPS:
            out["rru"] += READ_OPS[name] * n
        elif service == "AmazonSQS":
            out["sqs"] += n
        elif service == "TrentService":
            out["kms"] += n
    return out


def cost(kind: str, calls: dict, http_requests: float, duration_ms: dict) -> tuple[dict, float]:
    u = units(calls)
    invocations = sum(n for _, n, _ in INVOCATIONS[kind])
    # Durations were measured per message handled (a batch's time divided by its messages).
    gb_s = sum(MEMORY_GB * duration_ms[fn] * messages / 1000 for fn, _, messages in INVOCATIONS[kind])
    items = {
        "DynamoDB writes": u["wru"] * PRICES["dynamodb_write_request_unit"],
        "DynamoDB reads": u["rru"] * PRICES["dynamodb_read_request_unit"],
        "SQS requests": u["sqs"] * PRICES["sqs_request"],
        "Lambda requests": invocations * PRICES["lambda_request"],
        "Lambda duration": gb_s * PRICES["lambda_gb_second_arm64"],
        "HTTP API requests": http_requests * PRICES["http_api_request"],
        "KMS requests": u["kms"] * PRICES["kms_request"],
        "CloudWatch Logs": LOG_BYTES[kind] / 1e9 * PRICES["logs_gb"],
    }
    return {**u, "gb_s": gb_s, "items": items}, sum(items.values())


def main() -> None:
    path = Path(sys.argv[1] if len(sys.argv) > 1 else "target/cost/measurements.json")
    m = json.loads(path.read_text())
    d = m["duration_ms"]
    # Webhooks arrive on webhook-receiver's Function URL (no request charge beyond Lambda's);
    # only the inbox API's call goes through the HTTP API.
    inbound, in_total = cost("inbound", m["per_inbound_message"], 0, d)
    reply, reply_total = cost("reply", m["per_reply_with_three_statuses"], 1, d)
    print(f"Prices: eu-central-1, {PRICES_AS_OF}.\n")
    print("| per message | inbound message | reply (+3 status webhooks) |")
    print("|---|---|---|")
    print(f"| DynamoDB write units | {inbound['wru']:.1f} | {reply['wru']:.1f} |")
    print(f"| DynamoDB read units | {inbound['rru']:.1f} | {reply['rru']:.1f} |")
    print(f"| SQS requests | {inbound['sqs']:.1f} | {reply['sqs']:.1f} |")
    print(f"| KMS requests | {inbound['kms']:.2f} | {reply['kms']:.2f} |")
    print(f"| Lambda GB-s | {inbound['gb_s']:.4f} | {reply['gb_s']:.4f} |")
    print()
    print("| USD per 1 million | inbound messages | replies |")
    print("|---|---|---|")
    for key in inbound["items"]:
        print(f"| {key} | {inbound['items'][key] * 1e6:.2f} | {reply['items'][key] * 1e6:.2f} |")
    print(f"| **total** | **{in_total * 1e6:.2f}** | **{reply_total * 1e6:.2f}** |")


if __name__ == "__main__":
    main()
