"""One Lambda function as Lambda runs it: its binary under a local Runtime API
(`/2018-06-01/runtime/invocation/next`, `.../response`, `.../error`, `/runtime/init/error`),
one process kept warm and re-used for every invoke, and started anew (a cold start) after it
sat idle longer than the configured time, crashed, or ran past its timeout.

Used by the local Lambda host (host.py) and by the cold-start and warm-answer rigs
(infra/coldstart).
"""

import http.server
import json
import os
import queue
import socket
import subprocess
import threading
import time
import uuid

PREFIX = "/2018-06-01"
MAX_PAYLOAD = 6 * 1024 * 1024  # a synchronous invoke's request and response


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def answer_json(handler, status: int, body: bytes):
    """A JSON answer of a local server (the Runtime API, the host's control port)."""
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    handler.send_header("Content-Length", str(len(body)))
    handler.end_headers()
    handler.wfile.write(body)


class InvokeError(Exception):
    """The function failed the invoke: its error answer, a crash, or a timeout."""

    def __init__(self, kind: str, detail: str = ""):
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


class _Pending:
    def __init__(self, rid, event):
        self.rid = rid
        self.event = event
        self.done = threading.Event()
        self.handed_at = None
        self.answered_at = None
        self.result = None  # ("response", bytes) | ("error", bytes)


class _Api(http.server.ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, fn):
        self.fn = fn
        self.closing = False
        # Per process: a `next` still waiting from a stopped process must never take an event.
        self.events = queue.Queue()
        super().__init__(("127.0.0.1", 0), _Handler)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def setup(self):
        super().setup()
        # Headers and body go out as separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK add 40 ms to every event.
        self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def log_message(self, *args):
        pass

    def _answer(self, status, body=b""):
        answer_json(self, status, body)

    def do_GET(self):
        fn = self.server.fn
        if self.path != f"{PREFIX}/runtime/invocation/next":
            self._answer(404, b'{"errorType":"NotFound"}')
            return
        fn._asked_next(self.server)
        while True:
            try:
                p = self.server.events.get(timeout=0.5)
                break
            except queue.Empty:
                if self.server.closing:
                    return
        arn = f"arn:aws:lambda:{fn.region}:123456789012:function:{fn.name}"
        self.send_response(200)
        self.send_header("Lambda-Runtime-Aws-Request-Id", p.rid)
        self.send_header("Lambda-Runtime-Deadline-Ms", str(int(time.time() * 1000) + fn.timeout * 1000))
        self.send_header("Lambda-Runtime-Invoked-Function-Arn", arn)
        self.send_header("Lambda-Runtime-Trace-Id", f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]};Sampled=0")
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(p.event)))
        self.end_headers()
        p.handed_at = time.perf_counter()
        try:
            self.wfile.write(p.event)
            self.wfile.flush()
        except OSError:
            pass  # the process died while asking: the invoke sees it exit

    def do_POST(self):
        at = time.perf_counter()
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        fn = self.server.fn
        parts = self.path.split("/")
        if self.path == f"{PREFIX}/runtime/init/error":
            fn._init_error(body)
            self._answer(202, b'{"status":"OK"}')
            return
        if len(parts) == 6 and parts[3] == "invocation" and parts[5] in ("response", "error"):
            p = fn._inflight.get(parts[4])
            if p is None:
                self._answer(400, b'{"errorType":"InvalidRequestID"}')
                return
            p.answered_at = at
            p.result = (parts[5], body)
            p.done.set()
            self._answer(202, b'{"status":"OK"}')
            return
        self._answer(404, b'{"errorType":"NotFound"}')


class Function:
    """A function's binary, environment and timeout; `invoke` hands it one event."""

    def __init__(self, name: str, command: list, env: dict, timeout: int = 30, memory: int = 256,
                 idle_seconds: float = 600, log_path=None, region="eu-central-1"):
        self.name = name
        self.command = command
        self.env = env
        self.timeout = timeout
        self.memory = memory
        self.idle_seconds = idle_seconds
        self.log_path = log_path
        self.region = region
        self._inflight = {}
        self._lock = threading.Lock()  # one instance: one invoke at a time, as one Lambda instance
        self._proc = None
        self._api = None
        self._last_used = 0.0
        self._started_at = None
        self.first_next_at = None  # when the current process first asked for an event
        self._first_next = threading.Event()
        self._init_failure = None
        self.stats = {"cold_starts": 0, "invokes": 0, "errors": 0, "timeouts": 0}

    # -- process lifetime ------------------------------------------------------------------

    def _start(self):
        self._api = _Api(self)
        threading.Thread(target=self._api.serve_forever, daemon=True).start()
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{self._api.server_address[1]}",
            "AWS_LAMBDA_FUNCTION_NAME": self.name, "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": str(self.memory),
            "AWS_LAMBDA_LOG_GROUP_NAME": f"/aws/lambda/{self.name}",
            "AWS_LAMBDA_LOG_STREAM_NAME": f"local/{uuid.uuid4().hex}",
            "AWS_LAMBDA_INITIALIZATION_TYPE": "on-demand",
            "AWS_REGION": self.region, "AWS_DEFAULT_REGION": self.region,
            "AWS_EXECUTION_ENV": "AWS_Lambda_provided.al2023", "_HANDLER": "bootstrap",
            "LAMBDA_TASK_ROOT": "/var/task", "LAMBDA_RUNTIME_DIR": "/var/runtime", "TZ": ":UTC",
            **self.env,
        }
        out = open(self.log_path, "ab") if self.log_path else subprocess.DEVNULL
        self._first_next.clear()
        self.first_next_at = None
        self._init_failure = None
        self._started_at = time.perf_counter()
        self._proc = subprocess.Popen(self.command, env=env, stdout=out, stderr=subprocess.STDOUT
                                      if self.log_path else subprocess.DEVNULL, stdin=subprocess.DEVNULL)
        if self.log_path:
            out.close()
        self.stats["cold_starts"] += 1

    def _asked_next(self, api):
        if api is self._api and not self._first_next.is_set():
            self.first_next_at = time.perf_counter()
            self._first_next.set()

    def _init_error(self, body):
        self._init_failure = body
        self._first_next.set()

    def stop(self):
        if self._proc is not None:
            self._proc.kill()
            self._proc.wait()
            self._proc = None
        if self._api is not None:
            self._api.closing = True
            self._api.shutdown()
            self._api.server_close()
            self._api = None

    def start(self, wait: float = 20) -> float:
        """Starts a fresh process and waits until it asks for its first event: its init time
        (process start to first `next`), in milliseconds."""
        with self._lock:
            self.stop()
            self._start()
            return self._await_init(wait)

    def _await_init(self, wait):
        deadline = time.monotonic() + wait
        while not self._first_next.wait(timeout=0.05):
            if self._proc.poll() is not None:
                raise InvokeError("Runtime.ExitError", f"exited with {self._proc.returncode} during init")
            if time.monotonic() > deadline:
                raise InvokeError("Runtime.InitTimeout", "never asked for an event")
        if self._init_failure is not None:
            raise InvokeError("Runtime.InitError", self._init_failure.decode(errors="replace")[:2000])
        return (self.first_next_at - self._started_at) * 1000

    # -- invokes ---------------------------------------------------------------------------

    def invoke(self, event: bytes) -> tuple:
        """Hands one event to the warm instance (starting one if there is none, or it idled out)
        and returns (answer bytes, milliseconds from handing over the event to its answer).
        Raises InvokeError on an error answer, a crash or a timeout."""
        with self._lock:
            self.stats["invokes"] += 1
            idle = time.monotonic() - self._last_used
            if self._proc is not None and (self._proc.poll() is not None or idle > self.idle_seconds):
                self.stop()
            if self._proc is None:
                self._start()
                try:
                    self._await_init(self.timeout)
                except InvokeError:
                    self.stats["errors"] += 1
                    self.stop()
                    raise
            p = _Pending(str(uuid.uuid4()), event)
            self._inflight[p.rid] = p
            self._api.events.put(p)
            try:
                deadline = time.monotonic() + self.timeout
                while not p.done.wait(timeout=0.05):
                    if self._proc.poll() is not None:
                        self.stats["errors"] += 1
                        code = self._proc.returncode
                        self.stop()
                        raise InvokeError("Runtime.ExitError", f"exited with {code} during the invoke")
                    if time.monotonic() > deadline:
                        self.stats["errors"] += 1
                        self.stats["timeouts"] += 1
                        self.stop()
                        raise InvokeError("Sandbox.Timedout", f"task timed out after {self.timeout} s")
            finally:
                self._inflight.pop(p.rid, None)
                self._last_used = time.monotonic()
            kind, body = p.result
            if kind == "error":
                self.stats["errors"] += 1
                raise InvokeError("Function.Error", body.decode(errors="replace")[:2000])
            if len(body) > MAX_PAYLOAD:
                self.stats["errors"] += 1
                raise InvokeError("Function.ResponseSizeTooLarge", f"{len(body)} bytes")
            return body, (p.answered_at - p.handed_at) * 1000

    def invoke_json(self, event) -> object:
        body, _ = self.invoke(json.dumps(event).encode())
        return json.loads(body) if body.strip() else None
