"""A counting HTTP reverse proxy on 127.0.0.1, to see what a backend really sends.

``CountingProxy(upstream_port)`` listens on a free port of 127.0.0.1 and forwards every
request, unchanged (Host header included), to ``127.0.0.1:upstream_port``, recording its
method, path and query in ``requests``. Point a client at ``proxy.url`` instead of the
emulator and compare what the client believes it sent with what arrived.

The proxy reads each request and response whole; that is enough for the small objects the
tests move. ``Expect: 100-continue`` is answered by the proxy itself.
"""

from __future__ import annotations

import http.client
import http.server
import threading
import urllib.parse
from collections import Counter
from dataclasses import dataclass
from typing import Any

HOST = "127.0.0.1"
_HOP_BY_HOP = {
    "connection",
    "keep-alive",
    "proxy-connection",
    "transfer-encoding",
    "te",
    "trailer",
    "upgrade",
    "expect",
}


@dataclass(frozen=True)
class Request:
    method: str
    path: str
    query: str

    @property
    def params(self) -> dict[str, list[str]]:
        return urllib.parse.parse_qs(self.query, keep_blank_values=True)


class _Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length else b""

    def _forward(self) -> None:
        body = self._body()
        split = urllib.parse.urlsplit(self.path)
        self.server.record(Request(self.command, split.path, split.query))
        headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP_BY_HOP}
        if body or self.command in ("PUT", "POST"):
            headers["Content-Length"] = str(len(body))
        conn = http.client.HTTPConnection(HOST, self.server.upstream_port, timeout=60)
        try:
            conn.request(self.command, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            payload = resp.read()
            self.send_response(resp.status, resp.reason)
            for k, v in resp.getheaders():
                if k.lower() not in _HOP_BY_HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            if self.command == "HEAD":
                self.send_header("Content-Length", resp.getheader("Content-Length") or "0")
            else:
                self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(payload)
        finally:
            conn.close()

    do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = do_PATCH = _forward


class _Server(http.server.ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, upstream_port: int) -> None:
        super().__init__((HOST, 0), _Handler)
        self.upstream_port = upstream_port
        self.lock = threading.Lock()
        self.requests: list[Request] = []

    def record(self, request: Request) -> None:
        with self.lock:
            self.requests.append(request)


class CountingProxy:
    """``with CountingProxy(port) as proxy:`` forwards ``proxy.url`` to the upstream port."""

    def __init__(self, upstream_port: int) -> None:
        self._server = _Server(upstream_port)
        self.port = int(self._server.server_address[1])
        self.url = f"http://{HOST}:{self.port}"
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="counting-proxy", daemon=True
        )

    def __enter__(self) -> CountingProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(timeout=10)

    @property
    def requests(self) -> list[Request]:
        with self._server.lock:
            return list(self._server.requests)

    def clear(self) -> None:
        with self._server.lock:
            self._server.requests.clear()

    def methods(self) -> Counter[str]:
        return Counter(r.method for r in self.requests)
