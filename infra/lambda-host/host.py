#!/usr/bin/env python3
"""A local Lambda host for template.yaml: the functions the template defines, each its own
binary under a local Runtime API (runtime.py), fed as AWS would feed them, against a moto
server:

- the resources the functions use (KMS keys, DynamoDB tables, S3 buckets, SQS queues with
  their redrive policies) created on moto from the template's own definitions;
- each function's environment from the template (Globals and its own), its `!Ref`/`!GetAtt`
  resolved to those resources;
- a function with `FunctionUrlConfig` answers on a local port, one Function URL event
  (payload 2.0) per HTTP request; the routes of each `AWS::Serverless::HttpApi` answer on one
  local port, HTTP API events (payload 2.0, routeKey and pathParameters, 404 for no route);
- `SQS` events: an event-source mapping long-polls the queue, batches as configured
  (BatchSize, MaximumBatchingWindowInSeconds), deletes what succeeded, honours
  ReportBatchItemFailures and leaves failed records to the queue (its redrive policy moves them
  to the DLQ);
- `Schedule` events at their rate, and on demand through the control port.

When everything is up, the stack's outputs (the template's `Outputs`, resolved to the local
addresses) are printed and written to --outputs as JSON. Each function's log (what CloudWatch
would receive) goes to --log-dir/<function>.log.

Usage: host.py --endpoint-url http://127.0.0.1:5000 --bin-dir target/debug [options]
"""

import argparse
import base64
import http.server
import json
import platform
import re
import shutil
import signal
import sys
import threading
import time
import urllib.parse
import uuid
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parent))
from runtime import MAX_PAYLOAD, Function, InvokeError, answer_json  # noqa: E402
from template import ACCOUNT, REGION, Pending, Template, env_value, load  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]
CREDENTIALS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing"}
TEXT_TYPES = re.compile(r"^(text/|application/(json|.*\+json|xml|.*\+xml|javascript|x-www-form-urlencoded))", re.I)


def log(msg):
    print(f"[host] {msg}", file=sys.stderr, flush=True)


# -- resources --------------------------------------------------------------------------------


class Provisioner:
    def __init__(self, tpl: Template, endpoint: str, visibility_timeout):
        self.tpl = tpl
        kw = dict(endpoint_url=endpoint, region_name=REGION, aws_access_key_id="testing",
                  aws_secret_access_key="testing")
        self.kms = boto3.client("kms", **kw)
        self.ddb = boto3.client("dynamodb", **kw)
        self.sqs = boto3.client("sqs", **kw)
        self.s3 = boto3.client("s3", **kw)
        self.visibility_timeout = visibility_timeout

    def physical(self, logical, lower=False):
        name = f"{self.tpl.stack_name}-{logical}-{uuid.uuid4().hex[:8].upper()}"
        return name.lower() if lower else name

    def run(self):
        makers = {"AWS::KMS::Key": self.key, "AWS::DynamoDB::Table": self.table,
                  "AWS::S3::Bucket": self.bucket, "AWS::SQS::Queue": self.queue}
        todo = {k: v for k, v in self.tpl.resources.items() if v["Type"] in makers}
        while todo:
            progressed = False
            for logical, res in list(todo.items()):
                if "Condition" in res and not self.tpl.conditions[res["Condition"]]:
                    del todo[logical]
                    continue
                try:
                    props = self.tpl.resolve(res.get("Properties") or {})
                except Pending:  # it names a resource not created yet
                    continue
                makers[res["Type"]](logical, props)
                del todo[logical]
                progressed = True
            if not progressed:
                raise SystemExit(f"cannot resolve the references of {', '.join(todo)}")
        # What the host does not create (roles, log groups, alarms, topics) still has a name and
        # an ARN, so that a reference to it resolves.
        for logical, res in self.tpl.resources.items():
            if logical not in self.tpl.refs and res["Type"] != "AWS::Serverless::Function":
                name = f"{self.tpl.stack_name}-{logical}"
                self.tpl.refs[logical] = name
                self.tpl.attrs[(logical, "Arn")] = f"arn:aws:local:{REGION}:{ACCOUNT}:{name}"

    def key(self, logical, props):
        meta = self.kms.create_key(Description=props.get("Description", logical))["KeyMetadata"]
        self.tpl.refs[logical] = meta["KeyId"]
        self.tpl.attrs[(logical, "Arn")] = meta["Arn"]

    def table(self, logical, props):
        name = props.get("TableName") or self.physical(logical)
        args = {k: props[k] for k in ("AttributeDefinitions", "KeySchema", "GlobalSecondaryIndexes",
                                      "LocalSecondaryIndexes", "BillingMode", "ProvisionedThroughput",
                                      "StreamSpecification", "DeletionProtectionEnabled") if k in props}
        sse = props.get("SSESpecification")
        if sse:
            args["SSESpecification"] = {"Enabled": bool(sse.get("SSEEnabled")), "SSEType": sse.get("SSEType", "KMS"),
                                        **({"KMSMasterKeyId": sse["KMSMasterKeyId"]} if "KMSMasterKeyId" in sse else {})}
        desc = self.ddb.create_table(TableName=name, **args)["TableDescription"]
        ttl = props.get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled"):
            self.ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={
                "Enabled": True, "AttributeName": ttl["AttributeName"]})
        self.tpl.refs[logical] = name
        self.tpl.attrs[(logical, "Arn")] = desc["TableArn"]

    def bucket(self, logical, props):
        name = props.get("BucketName") or self.physical(logical, lower=True)
        self.s3.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": REGION})
        self.tpl.refs[logical] = name
        self.tpl.attrs[(logical, "Arn")] = f"arn:aws:s3:::{name}"

    def queue(self, logical, props):
        name = props.get("QueueName") or self.physical(logical)
        attrs = {}
        for k in ("DelaySeconds", "MaximumMessageSize", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds",
                  "VisibilityTimeout", "KmsMasterKeyId", "KmsDataKeyReusePeriodSeconds", "FifoQueue",
                  "ContentBasedDeduplication"):
            if k in props:
                attrs[k] = env_value(props[k])
        if "RedrivePolicy" in props:
            attrs["RedrivePolicy"] = json.dumps(props["RedrivePolicy"])
        if self.visibility_timeout is not None:
            attrs["VisibilityTimeout"] = str(self.visibility_timeout)
        url = self.sqs.create_queue(QueueName=name, Attributes=attrs)["QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        self.tpl.refs[logical] = url
        self.tpl.attrs[(logical, "Arn")] = arn
        self.tpl.attrs[(logical, "QueueName")] = name
        self.tpl.attrs[(logical, "QueueUrl")] = url


# -- HTTP fronts ------------------------------------------------------------------------------


def _now_fields():
    now = time.time()
    return time.strftime("%d/%b/%Y:%H:%M:%S +0000", time.gmtime(now)), int(now * 1000)


def http_event(handler, body: bytes, route_key: str, path_params, api_id: str, domain: str) -> dict:
    """The payload-2.0 event API Gateway's HTTP API and Function URLs hand a function."""
    url = urllib.parse.urlsplit(handler.path)
    headers, cookies = {}, []
    for k, v in handler.headers.items():
        k = k.lower()
        if k == "cookie":
            cookies += [c.strip() for c in v.split(";") if c.strip()]
            continue
        headers[k] = f"{headers[k]},{v}" if k in headers else v
    # What AWS adds in front of the function (it serves HTTPS only).
    client = handler.client_address[0]
    headers["x-forwarded-for"] = f"{headers['x-forwarded-for']}, {client}" if "x-forwarded-for" in headers else client
    headers["x-forwarded-proto"] = "https"
    headers["x-forwarded-port"] = "443"
    query = {}
    for k, v in urllib.parse.parse_qsl(url.query, keep_blank_values=True):
        query[k] = f"{query[k]},{v}" if k in query else v
    text, stamp = _now_fields()
    event = {
        "version": "2.0", "routeKey": route_key, "rawPath": url.path, "rawQueryString": url.query,
        "headers": headers,
        "requestContext": {
            "accountId": "anonymous" if route_key == "$default" else ACCOUNT, "apiId": api_id,
            "domainName": domain, "domainPrefix": domain.split(".")[0], "requestId": str(uuid.uuid4()),
            "routeKey": route_key, "stage": "$default", "time": text, "timeEpoch": stamp,
            "http": {"method": handler.command, "path": url.path, "protocol": "HTTP/1.1",
                     "sourceIp": client, "userAgent": handler.headers.get("user-agent", "")},
        },
        "isBase64Encoded": False,
    }
    if cookies:
        event["cookies"] = cookies
    if query:
        event["queryStringParameters"] = query
    if path_params:
        event["pathParameters"] = path_params
    if body:
        ctype = handler.headers.get("content-type", "")
        try:
            if not TEXT_TYPES.match(ctype):
                raise ValueError
            event["body"] = body.decode("utf-8")
        except ValueError:
            event["body"] = base64.b64encode(body).decode()
            event["isBase64Encoded"] = True
    return event


class Front(http.server.ThreadingHTTPServer):
    """A Function URL (one function, every path) or an HTTP API (routes to functions)."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, port, name, api_id, routes=None, function=None):
        self.name = name
        self.api_id = api_id
        self.routes = routes or []  # (method, regex, template path, Function)
        self.function = function
        super().__init__(("127.0.0.1", port), FrontHandler)

    @property
    def url(self):
        return f"http://127.0.0.1:{self.server_address[1]}"

    def route(self, method, path):
        if self.function is not None:
            return self.function, "$default", None
        for m, rx, tpl_path, fn in self.routes:
            hit = rx.match(path)
            if hit and m in (method, "ANY"):
                params = {k: urllib.parse.unquote(v) for k, v in hit.groupdict().items()}
                return fn, f"{m} {tpl_path}", params or None
        return None, None, None


class FrontHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _send(self, status, headers, cookies, body: bytes):
        self.send_response(status)
        for k, v in headers.items():
            if k.lower() not in ("content-length", "transfer-encoding", "connection"):
                self.send_header(k, v)
        for c in cookies:
            self.send_header("Set-Cookie", c)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _message(self, status, text):
        self._send(status, {"Content-Type": "application/json"}, [], json.dumps({"message": text}, separators=(",", ":")).encode())

    def handle_one(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        path = urllib.parse.urlsplit(self.path).path
        fn, route_key, params = self.server.route(self.command, path)
        if fn is None:
            self._message(404, "Not Found")
            return
        # The host the client asked for is the domain, as an execute-api or lambda-url domain is.
        domain = self.headers.get("host") or self.server.url.removeprefix("http://")
        event = json.dumps(http_event(self, body, route_key, params, self.server.api_id, domain)).encode()
        if len(event) > MAX_PAYLOAD:
            self._message(413, "Request Entity Too Large")
            return
        try:
            answer, _ = fn.invoke(event)
        except InvokeError as e:
            log(f"{fn.name}: {e.kind}")
            self._message(502, "Internal Server Error")
            return
        try:
            out = json.loads(answer)
        except ValueError:
            self._message(502, "Internal Server Error")
            return
        if not isinstance(out, dict) or "statusCode" not in out:
            # Payload 2.0: an answer without a status code is the body of a 200.
            self._send(200, {"Content-Type": "application/json"}, [], answer)
            return
        raw = out.get("body") or ""
        data = base64.b64decode(raw) if out.get("isBase64Encoded") else raw.encode()
        headers = dict(out.get("headers") or {})
        for k, values in (out.get("multiValueHeaders") or {}).items():
            headers[k] = ",".join(values)
        cookies = list(out.get("cookies") or [])
        set_cookie = [k for k in headers if k.lower() == "set-cookie"]
        for k in set_cookie:
            cookies.append(headers.pop(k))
        self._send(int(out["statusCode"]), headers, cookies, data)

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = handle_one


def path_regex(path: str):
    def part(m):
        name = m.group(1)
        if name.endswith("+"):
            return f"(?P<{name[:-1]}>.+)"
        return f"(?P<{name}>[^/]+)"

    return re.compile("^" + re.sub(r"\\\{([^}]+)\\\}", part, re.escape(path)) + "$")


# -- event sources ----------------------------------------------------------------------------


class SqsMapping(threading.Thread):
    """Lambda's SQS event-source mapping: long polls, batches, deletes what succeeded."""

    def __init__(self, sqs, fn: Function, queue_url: str, queue_arn: str, props: dict, stop: threading.Event):
        super().__init__(daemon=True, name=f"sqs-{fn.name}")
        self.sqs, self.fn, self.url, self.arn, self.stop = sqs, fn, queue_url, queue_arn, stop
        self.batch = int(props.get("BatchSize", 10))
        self.window = float(props.get("MaximumBatchingWindowInSeconds", 0))
        self.partial = "ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or [])
        self.stats = {"batches": 0, "records": 0, "deleted": 0, "failed": 0}

    def receive(self, n, wait):
        return self.sqs.receive_message(QueueUrl=self.url, MaxNumberOfMessages=min(n, 10), WaitTimeSeconds=wait,
                                        AttributeNames=["All"], MessageAttributeNames=["All"]).get("Messages", [])

    def run(self):
        while not self.stop.is_set():
            try:
                self.poll_once()
            except Exception as e:  # noqa: BLE001 - the mapping keeps polling, as Lambda's does
                log(f"{self.fn.name} event source: {type(e).__name__}: {e}")
                self.stop.wait(1)

    def poll_once(self):
        messages = self.receive(self.batch, 1)
        if not messages:
            return
        deadline = time.monotonic() + self.window
        while len(messages) < self.batch and time.monotonic() < deadline:
            more = self.receive(self.batch - len(messages), 0)
            if not more:
                self.stop.wait(0.05)
            messages += more
        # A record whose visibility ran out while the batch filled is in it twice (only with
        # a visibility timeout shorter than the window, as --visibility-timeout allows): once.
        latest = {m["MessageId"]: m for m in messages}
        messages = list(latest.values())
        records = [self.record(m) for m in messages]
        self.stats["batches"] += 1
        self.stats["records"] += len(records)
        try:
            answer = self.fn.invoke_json({"Records": records})
        except InvokeError as e:
            # The whole batch stays on the queue; it comes back after the visibility timeout.
            log(f"{self.fn.name}: batch of {len(records)} failed ({e.kind}); left to the queue")
            self.stats["failed"] += len(records)
            return
        failed = set()
        if self.partial and isinstance(answer, dict) and answer.get("batchItemFailures"):
            ids = {r["messageId"] for r in records}
            for f in answer["batchItemFailures"]:
                item = f.get("itemIdentifier") if isinstance(f, dict) else None
                if not item or item not in ids:
                    failed = ids  # an unusable failure report fails the whole batch
                    break
                failed.add(item)
        done = [m for m in messages if m["MessageId"] not in failed]
        self.stats["failed"] += len(failed)
        for i in range(0, len(done), 10):
            chunk = done[i:i + 10]
            self.sqs.delete_message_batch(QueueUrl=self.url, Entries=[
                {"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]} for j, m in enumerate(chunk)])
            self.stats["deleted"] += len(chunk)

    def record(self, m):
        attrs = {}
        for k, v in (m.get("MessageAttributes") or {}).items():
            a = {"dataType": v["DataType"], "stringListValues": [], "binaryListValues": []}
            if "StringValue" in v:
                a["stringValue"] = v["StringValue"]
            if "BinaryValue" in v:
                a["binaryValue"] = base64.b64encode(v["BinaryValue"]).decode()
            attrs[k] = a
        return {"messageId": m["MessageId"], "receiptHandle": m["ReceiptHandle"], "body": m["Body"],
                "attributes": m.get("Attributes", {}), "messageAttributes": attrs,
                "md5OfBody": m.get("MD5OfBody", ""), "eventSource": "aws:sqs", "eventSourceARN": self.arn,
                "awsRegion": REGION}


RATE = re.compile(r"^rate\((\d+) (minute|minutes|hour|hours|day|days)\)$")


def scheduled_event(rule: str) -> dict:
    return {"version": "0", "id": str(uuid.uuid4()), "detail-type": "Scheduled Event", "source": "aws.events",
            "account": ACCOUNT, "time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "region": REGION,
            "resources": [f"arn:aws:events:{REGION}:{ACCOUNT}:rule/{rule}"], "detail": {}}


class Schedule(threading.Thread):
    def __init__(self, fn: Function, name: str, expression: str, stop: threading.Event):
        super().__init__(daemon=True, name=f"schedule-{name}")
        m = RATE.match(expression)
        if not m:
            raise SystemExit(f"{name}: only rate(...) schedules are supported locally, not {expression}")
        unit = {"minute": 60, "hour": 3600, "day": 86400}[m.group(2).rstrip("s")]
        self.fn, self.name, self.every, self.stop = fn, name, int(m.group(1)) * unit, stop
        self.stats = {"runs": 0, "failed": 0}

    def fire(self):
        self.stats["runs"] += 1
        try:
            self.fn.invoke_json(scheduled_event(self.name))
            return True
        except InvokeError as e:
            self.stats["failed"] += 1
            log(f"{self.fn.name}: schedule {self.name} failed ({e.kind})")
            return False

    def run(self):
        while not self.stop.wait(self.every):
            self.fire()


# -- control ----------------------------------------------------------------------------------


class Control(http.server.ThreadingHTTPServer):
    """GET /stats: invokes, cold starts and errors per function, what each mapping did.
    POST /schedule/<event name>: runs a schedule now (its answer: 200, or 500 if it failed)."""

    daemon_threads = True

    def __init__(self, port, host):
        self.host = host
        super().__init__(("127.0.0.1", port), ControlHandler)


class ControlHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def _json(self, status, value):
        answer_json(self, status, json.dumps(value).encode())

    def do_GET(self):
        if self.path != "/stats":
            self._json(404, {"error": "no such path"})
            return
        h = self.server.host
        self._json(200, {"functions": {n: f.stats for n, f in h.functions.items()},
                         "mappings": {m.fn.name: m.stats for m in h.mappings},
                         "schedules": {s.name: s.stats for s in h.schedules}})

    def do_POST(self):
        name = self.path.removeprefix("/schedule/")
        for s in self.server.host.schedules:
            if s.name == name:
                self._json(200 if s.fire() else 500, s.stats)
                return
        self._json(404, {"error": f"no schedule {name}"})


def command(exe: Path) -> list:
    """How to start a binary here: directly, or an arm64 one (as deployed) under qemu-user."""
    with open(exe, "rb") as f:
        head = f.read(20)
    if head[:4] != b"\x7fELF":
        raise SystemExit(f"{exe} is not an ELF binary")
    machine = int.from_bytes(head[18:20], "little")
    if machine == 0xB7 and platform.machine() not in ("aarch64", "arm64"):
        qemu = shutil.which("qemu-aarch64") or shutil.which("qemu-aarch64-static")
        if not qemu:
            raise SystemExit(f"{exe} is an arm64 binary: install qemu-user (and libc6-arm64-cross) to run it here")
        return [qemu, "-L", "/usr/aarch64-linux-gnu", str(exe)]
    return [str(exe)]


# -- the host ---------------------------------------------------------------------------------


class Host:
    def __init__(self, args):
        self.args = args
        overrides = dict(p.split("=", 1) for p in args.param)
        self.tpl = Template(load(args.template), args.stack_name, overrides)
        self.stop = threading.Event()
        self.functions = {}  # logical id -> Function
        self.fronts = []
        self.mappings = []
        self.schedules = []

    def port(self, n):
        return 0 if self.args.port == 0 else self.args.port + n

    def start(self):
        a = self.args
        Provisioner(self.tpl, a.endpoint_url, a.visibility_timeout).run()
        log_dir = Path(a.log_dir)
        log_dir.mkdir(parents=True, exist_ok=True)
        doc = self.tpl.doc
        glob = ((doc.get("Globals") or {}).get("Function") or {})
        fn_specs = {k: v for k, v in self.tpl.resources.items() if v["Type"] == "AWS::Serverless::Function"}
        for logical, res in fn_specs.items():
            props = res.get("Properties") or {}
            name = self.tpl.resolve(props.get("FunctionName", f"{a.stack_name}-{logical}"))
            self.tpl.refs[logical] = name
            self.tpl.attrs[(logical, "Arn")] = f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:{name}"
        # Fronts first: a function's environment may name an address (none does today).
        n = 0
        for logical, res in fn_specs.items():
            if "FunctionUrlConfig" in (res.get("Properties") or {}):
                n += 1
                self.url_ports = getattr(self, "url_ports", {})
                self.url_ports[logical] = self.port(n)
        http_apis = [k for k, v in self.tpl.resources.items() if v["Type"] == "AWS::Serverless::HttpApi"]
        api_ports = {}
        for api in http_apis:
            api_ports[api] = self.port(0) if not api_ports else self.port(10 + len(api_ports))
            front = Front(api_ports[api], api, f"local{len(api_ports)}")
            self.fronts.append(front)
            self.tpl.refs[api] = front.api_id
            self.tpl.local_urls[api] = front.url
        for logical, res in fn_specs.items():
            props = res.get("Properties") or {}
            binary = (res.get("Metadata") or {}).get("BuildProperties", {}).get("Binary")
            if not binary:
                raise SystemExit(f"{logical}: no Metadata.BuildProperties.Binary")
            if a.sam_build_dir:
                exe = Path(a.sam_build_dir) / logical / "bootstrap"
                if not exe.exists():
                    raise SystemExit(f"{logical}: {exe} does not exist (run sam build, or ./infra/build-lambdas.sh)")
            else:
                exe = Path(a.bin_dir) / binary
                if not exe.exists():
                    raise SystemExit(f"{logical}: {exe} does not exist (build it: cargo build -p {binary})")
            variables = {**((glob.get("Environment") or {}).get("Variables") or {}),
                         **((props.get("Environment") or {}).get("Variables") or {})}
            env = {k: env_value(v) for k, v in self.tpl.resolve(variables).items()}
            logging = {**(glob.get("LoggingConfig") or {}), **(props.get("LoggingConfig") or {})}
            if logging.get("LogFormat") == "JSON":
                env["AWS_LAMBDA_LOG_FORMAT"] = "JSON"
                env["AWS_LAMBDA_LOG_LEVEL"] = logging.get("ApplicationLogLevel", "INFO")
            env.update(CREDENTIALS)
            env["AWS_ENDPOINT_URL"] = a.endpoint_url
            timeout = int(self.tpl.resolve(props.get("Timeout", glob.get("Timeout", 3))))
            memory = int(self.tpl.resolve(props.get("MemorySize", glob.get("MemorySize", 128))))
            name = self.tpl.refs[logical]
            fn = Function(name, command(exe), env, timeout=timeout, memory=memory, idle_seconds=a.idle_seconds,
                          log_path=log_dir / f"{logical}.log")
            self.functions[logical] = fn
            if logical in getattr(self, "url_ports", {}):
                front = Front(self.url_ports[logical], f"{logical}Url", uuid.uuid4().hex[:32], function=fn)
                self.fronts.append(front)
                self.tpl.attrs[(f"{logical}Url", "FunctionUrl")] = front.url + "/"
                self.tpl.refs[f"{logical}Url"] = front.url + "/"
            for ev_name, ev in (props.get("Events") or {}).items():
                ep = self.tpl.resolve(ev.get("Properties") or {})
                if ev["Type"] == "HttpApi":
                    api = next(k for k, v in api_ports.items() if self.tpl.refs[k] == ep.get("ApiId")) \
                        if ep.get("ApiId") else http_apis[0]
                    front = next(f for f in self.fronts if f.name == api)
                    method = ep.get("Method", "ANY").upper()
                    front.routes.append((method, path_regex(ep.get("Path", "/{proxy+}")), ep.get("Path"), fn))
                elif ev["Type"] == "SQS":
                    arn = ep["Queue"]
                    url = next(self.tpl.refs[k] for (k, at), v in self.tpl.attrs.items() if at == "Arn" and v == arn)
                    self.mappings.append(SqsMapping(boto3.client(
                        "sqs", endpoint_url=a.endpoint_url, region_name=REGION, aws_access_key_id="testing",
                        aws_secret_access_key="testing"), fn, url, arn, ep, self.stop))
                elif ev["Type"] == "Schedule":
                    self.schedules.append(Schedule(fn, ev_name, ep["Schedule"], self.stop))
                else:
                    log(f"{logical}: event {ev_name} of type {ev['Type']} is not run locally")
        # Specific routes before greedy ones, as API Gateway picks the most specific match.
        for f in self.fronts:
            f.routes.sort(key=lambda r: ("+}" in r[2], -r[2].count("/"), r[2].count("{")))
        for f in self.fronts:
            threading.Thread(target=f.serve_forever, daemon=True).start()
            f.serving = True
        self.control = Control(self.port(20) if a.port else 0, self)
        threading.Thread(target=self.control.serve_forever, daemon=True).start()
        if a.warm:
            for logical, fn in self.functions.items():
                ms = fn.start()
                log(f"{logical}: initialised in {ms:.1f} ms")
        for m in self.mappings:
            m.start()
        for s in self.schedules:
            s.start()
        outputs = self.tpl.outputs()
        outputs["ControlUrl"] = f"http://127.0.0.1:{self.control.server_address[1]}"
        outputs["LogDir"] = str(log_dir.resolve())
        outputs["Functions"] = {k: f.name for k, f in self.functions.items()}
        if a.outputs:
            tmp = Path(str(a.outputs) + ".tmp")
            tmp.write_text(json.dumps(outputs, indent=2))
            tmp.replace(a.outputs)
        for k, v in outputs.items():
            if isinstance(v, str):
                print(f"{k:20s} {v}", flush=True)
        log("ready")

    def shutdown(self):
        self.stop.set()
        for f in self.fronts:
            if getattr(f, "serving", False):  # shutdown() waits for a serve_forever that never ran
                f.shutdown()
            f.server_close()
        for fn in self.functions.values():
            fn.stop()


def main():
    p = argparse.ArgumentParser(description="Runs template.yaml's Lambda functions locally against moto.")
    p.add_argument("--endpoint-url", required=True, help="the moto server (SQS, DynamoDB, KMS, S3)")
    p.add_argument("--bin-dir", default=str(ROOT / "target/debug"), help="where the function binaries are")
    p.add_argument("--sam-build-dir", help="run what `sam build` made (<dir>/<logical id>/bootstrap) instead; "
                   "arm64 binaries under qemu-aarch64")
    p.add_argument("--template", default=str(ROOT / "template.yaml"))
    p.add_argument("--stack-name", default="relay-local")
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="a template parameter")
    p.add_argument("--port", type=int, default=3000,
                   help="the HTTP API's port; Function URLs on the next ports, the control port at +20 "
                        "(0: free ports)")
    p.add_argument("--idle-seconds", type=float, default=600,
                   help="an instance idle this long is stopped; the next invoke is a cold start")
    p.add_argument("--visibility-timeout", type=int, default=None,
                   help="override the queues' VisibilityTimeout (seconds), so retries come sooner")
    p.add_argument("--warm", action="store_true", help="start every function at once, not on its first invoke")
    p.add_argument("--log-dir", default=str(ROOT / ".aws-local/logs"))
    p.add_argument("--outputs", help="write the stack's outputs here (JSON) once ready")
    args = p.parse_args()
    host = Host(args)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    try:
        host.start()
        done.wait()
    finally:
        host.shutdown()


if __name__ == "__main__":
    main()
