"""A real HTTP server for tests and examples, on 127.0.0.1 and a free port, whose behaviour tests script.

    with HttpTestServer() as server:          # or server = HttpTestServer().start(); ...; server.stop()
        url = server.url("/health")           # "http://127.0.0.1:PORT/health"
        server.set_health({"status": "down"}) # what /health answers from now on
        server.count("/health")               # requests seen on that path (query not counted apart)

Paths (any method; HEAD answers the headers only):
    /health, /health/NAME  the health JSON, {"status": "ok"} by default; `set_health(doc, status=200,
                           name="")` changes it (for all names, or one NAME: a rolling restart's
                           per-host check); `/health/NAME` falls back to the default one
    /status/NNN            answers status NNN with {"status": NNN}; a 3xx has `Location: /echo`
    /slow?s=N              waits N seconds (a float), then 200 {"slept": N}; a client that goes away
                           meanwhile is noticed at once and counted in `disconnects("/slow")`
    /echo                  200 with {"method", "path", "query", "headers", "body"} of the request
    /flaky?fails=N&key=K   503 for the first N requests with that key (default key ""), then 200
    /big?n=BYTES           200 with BYTES bytes of "x" (text/plain)
    anything else          what `route(path, status, body, headers)` set, else 404

Every request is counted by path (`count`) and recorded (`requests`: method, path, headers, body).
Run it alone with `python -m tests.httpserver [--port N]`: it prints its base URL, then serves until
SIGTERM or SIGINT.
"""

from __future__ import annotations

import argparse
import json
import select
import signal
import socket
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Route:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # headers and body go in two writes: no 40 ms delayed-ACK stall
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:  # quiet: tests read what they need
        pass

    def _handle(self) -> None:
        owner = self.server.owner
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        owner._record(Recorded(self.command, parts.path, parts.query, dict(self.headers.items()), body))
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        path = parts.path
        try:
            if path == "/health" or path.startswith("/health/"):
                status, doc = owner._health_of(path[len("/health/"):] if path.startswith("/health/") else "")
                self._json(status, doc)
            elif path.startswith("/status/") and path[8:].isdigit() and 100 <= int(path[8:]) <= 599:
                code = int(path[8:])
                self._json(code, {"status": code}, {"Location": "/echo"} if 300 <= code < 400 else {})
            elif path == "/slow":
                self._slow(float(query.get("s", "1")))
            elif path == "/echo":
                self._json(200, {"method": self.command, "path": path, "query": parts.query,
                                 "headers": dict(self.headers.items()), "body": body.decode("utf-8", "replace")})
            elif path == "/flaky":
                failing = owner._flaky(query.get("key", ""), int(query.get("fails", "1")))
                self._json(503 if failing else 200, {"status": "unavailable" if failing else "ok"})
            elif path == "/big":
                self._send(200, b"x" * int(query.get("n", "0")), {"Content-Type": "text/plain"})
            elif (route := owner._route(path)) is not None:
                self._send(route.status, route.body, route.headers)
            else:
                self._json(404, {"error": "not found", "path": path})
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True

    def _slow(self, seconds: float) -> None:
        owner = self.server.owner
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline and not owner._stopping.is_set():
            if self._client_gone(0.02):
                owner._disconnected(self.path.split("?", 1)[0])
                self.close_connection = True
                return
        self._json(200, {"slept": seconds})

    def _client_gone(self, wait_s: float) -> bool:
        """Whether the client closed its end (readable with nothing to read) within `wait_s`."""
        readable, _, _ = select.select([self.connection], [], [], wait_s)
        if not readable:
            return False
        try:
            return self.connection.recv(1, socket.MSG_PEEK) == b""
        except OSError:
            return True

    def _json(self, status: int, doc: Any, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(doc).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _send(self, status: int, body: bytes, headers: dict[str, str]) -> None:
        self.send_response(status)
        for name, value in headers.items():
            self.send_header(name, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD" and status not in (204, 304) and status >= 200:
            self.wfile.write(body)

    do_GET = do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = _handle


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    owner: HttpTestServer


class HttpTestServer:
    """A scriptable HTTP server in a background thread (see the module's docstring)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host, self.port = host, port
        self._lock = threading.Lock()
        self._stopping = threading.Event()
        self._counts: Counter[str] = Counter()
        self._disconnects: Counter[str] = Counter()
        self._flaky_seen: Counter[str] = Counter()
        self._health_docs: dict[str, tuple[int, Any]] = {"": (200, {"status": "ok"})}
        self._routes: dict[str, Route] = {}
        self.requests: list[Recorded] = []
        self._httpd: _Server | None = None
        self._thread: threading.Thread | None = None

    # ------------------------------------------------------------ life

    def start(self) -> HttpTestServer:
        httpd = _Server((self.host, self.port), _Handler)
        httpd.owner = self
        self.port = httpd.server_address[1]
        self._httpd = httpd
        self._thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"httpserver:{self.port}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the listening socket; slow requests in flight end at once."""
        self._stopping.set()
        if self._httpd is not None:
            self._httpd.shutdown()
            self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)
        self._httpd = self._thread = None

    def __enter__(self) -> HttpTestServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------ for tests

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def url(self, path: str = "/") -> str:
        return self.base_url + path

    def set_health(self, doc: Any, status: int = 200, name: str = "") -> None:
        """What /health (name "") or /health/NAME answers from now on."""
        with self._lock:
            self._health_docs[name] = (status, doc)

    def route(self, path: str, status: int = 200, body: bytes | str | Any = b"", headers: dict[str, str] | None = None) -> None:
        """Answer `path` with this status and body (bytes, text, or anything else as JSON)."""
        headers = dict(headers or {})
        if isinstance(body, str):
            body = body.encode()
            headers.setdefault("Content-Type", "text/plain; charset=utf-8")
        elif not isinstance(body, bytes):
            body = json.dumps(body).encode()
            headers.setdefault("Content-Type", "application/json")
        with self._lock:
            self._routes[path] = Route(status, body, headers)

    def count(self, path: str) -> int:
        """Requests seen on `path` (any method, any query)."""
        with self._lock:
            return self._counts[path]

    def disconnects(self, path: str) -> int:
        """Requests on `path` whose client went away before the answer (only /slow notices)."""
        with self._lock:
            return self._disconnects[path]

    def reset(self) -> None:
        """Forget counts, recorded requests, flaky keys, routes and named health; health back to ok."""
        with self._lock:
            self._counts.clear()
            self._disconnects.clear()
            self._flaky_seen.clear()
            self._routes.clear()
            self._health_docs = {"": (200, {"status": "ok"})}
            self.requests = []

    # ------------------------------------------------------------ for the handler

    def _record(self, request: Recorded) -> None:
        with self._lock:
            self._counts[request.path] += 1
            self.requests.append(request)

    def _disconnected(self, path: str) -> None:
        with self._lock:
            self._disconnects[path] += 1

    def _health_of(self, name: str) -> tuple[int, Any]:
        with self._lock:
            return self._health_docs.get(name) or self._health_docs[""]

    def _flaky(self, key: str, fails: int) -> bool:
        with self._lock:
            self._flaky_seen[key] += 1
            return self._flaky_seen[key] <= fails

    def _route(self, path: str) -> Route | None:
        with self._lock:
            return self._routes.get(path)


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the tests' scriptable HTTP server until SIGTERM.")
    parser.add_argument("--port", type=int, default=0)
    opts = parser.parse_args()
    server = HttpTestServer(port=opts.port).start()
    print(server.base_url, flush=True)
    done = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: done.set())
    signal.signal(signal.SIGINT, lambda *_: done.set())
    done.wait()
    server.stop()


if __name__ == "__main__":
    main()
