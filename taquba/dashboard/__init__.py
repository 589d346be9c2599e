"""``taquba dashboard``: a small web page over a queue, for people operating it.

Built on the standard library's ``http.server`` (no dependency), server-rendered HTML
without JavaScript (pages.py). It reads through a :class:`~taquba.QueueReader` (refreshed on
every page) and acts through a :class:`~taquba.Producer`, so it never fences the owner.

Pages: ``/`` the queues with their counts, oldest pending age and throughput (acks a
minute, measured by this dashboard between refreshes), and the cron schedules, refreshed
automatically;
``/queues/<name>/dead?after=<id>`` the dead jobs, paged; ``/jobs/<id>`` a job with its
headers, a payload preview and its attempt history; ``POST /jobs/<id>/requeue`` and
``POST /jobs/<id>/cancel`` submit those actions.

Security rules this module keeps:

- It binds 127.0.0.1 unless told otherwise; binding any other address needs a token, and
  then every request must carry it (``Authorization: Bearer <token>``, or the cookie set by
  visiting once with ``?token=<token>``); a request without it gets 401.
- Without a token, the ``Host`` header must name a loopback address (so a page elsewhere
  cannot reach the dashboard through DNS rebinding).
- Every POST carries a CSRF token (a random secret of this server in each form) and, when
  the browser sends ``Origin``, an origin matching ``Host``; anything else gets 403.
- Every value from the queue is escaped (pages.py), and a Content-Security-Policy forbids
  scripts altogether.
"""

from __future__ import annotations

import hmac
import http.cookies
import ipaddress
import logging
import secrets
import signal
import threading
import time
import urllib.parse
from collections import deque
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from ..config import check_job_id, check_queue_name
from ..errors import ConfigError, InvalidArgument, JobNotFound, TaqubaError
from ..producer import Producer
from ..reader import QueueReader
from ..records import JobStatus
from . import pages

logger = logging.getLogger("taquba.dashboard")

_COOKIE = "taquba_token"
_DEAD_PAGE = 50
_RATE_WINDOW = 60.0  # seconds of done counts the throughput is measured over
_SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'; "
    "form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "no-referrer",
    "Cache-Control": "no-store",
}
_LOOPBACK_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost"}


def is_loopback(host: str) -> bool:
    """Whether ``host`` (a name or an address) is a loopback address."""
    name = host.strip("[]").lower()
    if name in _LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


class Dashboard:
    """The dashboard server of one queue. Make it with :meth:`Dashboard.open`."""

    def __init__(
        self,
        reader: QueueReader,
        producer: Producer,
        location: str,
        *,
        host: str,
        port: int,
        token: str | None,
        refresh: float,
    ) -> None:
        self.reader = reader
        self.producer = producer
        self.location = location
        self.token = token
        self.refresh = refresh
        self.csrf = secrets.token_urlsafe(32)
        self._rates: dict[str, deque[tuple[float, int]]] = {}
        self._rates_lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self.server = ThreadingHTTPServer((host, port), _handler_class(self))
        self.server.daemon_threads = True

    @classmethod
    def open(
        cls,
        location: Any,
        *,
        storage_options: Mapping[str, Any] | None = None,
        host: str = "127.0.0.1",
        port: int = 8080,
        token: str | None = None,
        refresh: float = 5.0,
    ) -> Dashboard:
        """Open a reader and a producer on ``location`` and bind ``host:port`` (0: any
        free port). Serve with :meth:`serve_forever`, :meth:`start` or
        :meth:`serve_until_signalled`.

        Raises:
            ConfigError: a non-loopback ``host`` without ``token``, or a bad location;
                ``QueueNotFound`` when it holds no queue.
            OSError: the address cannot be bound.
        """
        if not is_loopback(host) and not token:
            raise ConfigError(f"binding {host} (not a loopback address) needs a token")
        reader = QueueReader.open(location, storage_options=storage_options)
        try:
            producer = Producer.open(location, storage_options=storage_options)
            return cls(
                reader, producer, str(location), host=host, port=port, token=token, refresh=refresh
            )
        except BaseException:
            reader.close()
            raise

    @property
    def url(self) -> str:
        """The address it serves, as an ``http://`` URL."""
        host, port = self.server.server_address[:2]
        name = host.decode() if isinstance(host, bytes) else str(host)
        shown = f"[{name}]" if ":" in name else name
        return f"http://{shown}:{port}"

    def serve_forever(self) -> None:
        """Serve requests in this thread until :meth:`close` (from another thread)."""
        self.server.serve_forever(poll_interval=0.2)

    def start(self) -> None:
        """Serve requests on a background thread named ``taquba-dashboard``."""
        self._thread = threading.Thread(
            target=self.serve_forever, name="taquba-dashboard", daemon=True
        )
        self._thread.start()

    def serve_until_signalled(self) -> None:
        """Serve on a background thread until SIGINT or SIGTERM (main thread only)."""
        stop = threading.Event()
        previous = {
            sig: signal.signal(sig, lambda *_: stop.set())
            for sig in (signal.SIGINT, signal.SIGTERM)
        }
        try:
            self.start()
            while not stop.wait(0.5):
                pass
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)

    def close(self) -> None:
        """Stop serving and close the reader and producer."""
        if self._thread is not None:
            self.server.shutdown()
            self._thread.join(10.0)
        self.server.server_close()
        self.producer.close()
        self.reader.close()

    # -- what the pages show -------------------------------------------------------------

    def overview_rows(self) -> list[tuple[Any, float | None, float | None]]:
        """Per queue: its stats, the age of its oldest pending job and its acks a minute."""
        reader = self.reader
        reader.refresh()
        now_wall, now = time.time(), time.monotonic()
        rows = []
        for name in reader.list_queues():
            stats = reader.stats(name)
            oldest = reader.oldest_pending_at(name)
            rows.append(
                (
                    stats,
                    None if oldest is None else now_wall - oldest,
                    self._rate(name, now, stats.done),
                )
            )
        return rows

    def _rate(self, queue: str, now: float, done: int) -> float | None:
        """Acks a minute over the last ``_RATE_WINDOW`` seconds of samples (None until two
        samples exist)."""
        with self._rates_lock:
            samples = self._rates.setdefault(queue, deque())
            samples.append((now, done))
            while len(samples) > 2 and samples[1][0] <= now - _RATE_WINDOW:
                samples.popleft()
            first_at, first_done = samples[0]
            if now - first_at <= 0:
                return None
            return max(0, done - first_done) * 60.0 / (now - first_at)


def _handler_class(dashboard: Dashboard) -> type[BaseHTTPRequestHandler]:
    """The request handler class of ``dashboard`` (``http.server`` makes one per request)."""

    class Handler(_Handler):
        board = dashboard

    return Handler


class _Handler(BaseHTTPRequestHandler):
    """One request: authenticate, route, render (see the module docstring)."""

    board: Dashboard
    server_version = "taquba-dashboard"
    sys_version = ""

    def log_message(self, format: str, *args: Any) -> None:
        """Log requests to the ``taquba.dashboard`` logger instead of stderr."""
        logger.info("%s %s", self.address_string(), format % args)

    # -- responses -------------------------------------------------------------------------

    def _send(
        self,
        status: int,
        body: str,
        *,
        content_type: str = "text/html; charset=utf-8",
        headers: Mapping[str, str] | None = None,
    ) -> None:
        """Send a whole response with the security headers."""
        data = body.encode("utf-8")
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        for name, value in {**_SECURITY_HEADERS, **(headers or {})}.items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    def _refuse(self, status: HTTPStatus, reason: str) -> None:
        """Send a plain-text refusal."""
        self._send(
            status,
            f"{status.value} {status.phrase}: {reason}\n",
            content_type="text/plain; charset=utf-8",
        )

    def _redirect(self, location: str, headers: Mapping[str, str] | None = None) -> None:
        """Send a 303 to ``location`` (a path on this server)."""
        self._send(HTTPStatus.SEE_OTHER, "", headers={"Location": location, **(headers or {})})

    # -- checks ----------------------------------------------------------------------------

    def _allowed(self, query: dict[str, list[str]]) -> bool:
        """The token and Host checks; sends the refusal (or the token cookie's redirect)."""
        token = self.board.token
        if token is None:
            host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
            if not is_loopback(host):
                self._refuse(HTTPStatus.FORBIDDEN, "this dashboard answers to loopback names only")
                return False
            return True
        given = None
        auth = self.headers.get("Authorization") or ""
        if auth.startswith("Bearer "):
            given = auth[len("Bearer ") :].strip()
        if given is None:
            cookies = http.cookies.SimpleCookie(self.headers.get("Cookie") or "")
            if _COOKIE in cookies:
                given = cookies[_COOKIE].value
        in_query = query.get("token", [None])[0]
        if in_query is not None and hmac.compare_digest(in_query.encode(), token.encode()):
            path = urllib.parse.urlsplit(self.path).path
            self._redirect(
                path, {"Set-Cookie": f"{_COOKIE}={token}; HttpOnly; SameSite=Strict; Path=/"}
            )
            return False
        if given is None or not hmac.compare_digest(given.encode(), token.encode()):
            self._refuse(HTTPStatus.UNAUTHORIZED, "a valid token is required")
            return False
        return True

    def _csrf_ok(self, form: dict[str, list[str]]) -> bool:
        """Whether a POST carries this server's CSRF token and, if any, a matching Origin."""
        origin = self.headers.get("Origin")
        if (
            origin is not None
            and origin != "null"
            and urllib.parse.urlsplit(origin).netloc != self.headers.get("Host")
        ):
            return False
        given = form.get("csrf", [""])[0]
        return hmac.compare_digest(given.encode(), self.board.csrf.encode())

    # -- routes ----------------------------------------------------------------------------

    def do_HEAD(self) -> None:
        """As GET, without the body."""
        self.do_GET()

    def do_GET(self) -> None:
        """The pages (see the module docstring)."""
        url = urllib.parse.urlsplit(self.path)
        query = urllib.parse.parse_qs(url.query)
        if not self._allowed(query):
            return
        parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
        try:
            if not parts:
                rows = self.board.overview_rows()
                self._send(
                    HTTPStatus.OK,
                    pages.overview(
                        self.board.location,
                        rows,
                        self.board.refresh,
                        self.board.reader.list_schedules(),
                    ),
                )
            elif parts == ["jobs"]:
                self._redirect(f"/jobs/{pages.quote(query.get('id', [''])[0].strip())}")
            elif len(parts) == 2 and parts[0] == "jobs":
                self._job(parts[1], query.get("msg", [None])[0])
            elif len(parts) == 3 and parts[0] == "queues" and parts[2] == "dead":
                self._dead(parts[1], query.get("after", [None])[0])
            else:
                self._send(HTTPStatus.NOT_FOUND, pages.not_found(f"No page at {url.path}."))
        except (InvalidArgument, JobNotFound) as exc:
            self._send(HTTPStatus.NOT_FOUND, pages.not_found(str(exc)))
        except TaqubaError as exc:
            logger.exception("dashboard page failed")
            self._send(
                HTTPStatus.SERVICE_UNAVAILABLE, pages.not_found(f"{type(exc).__name__}: {exc}")
            )

    def _job(self, job_id: str, message: str | None) -> None:
        """The page of one job (404 when it is not kept)."""
        check_job_id(job_id)
        reader = self.board.reader
        reader.refresh()
        record = reader.get_job(job_id)
        if record is None:
            self._send(HTTPStatus.NOT_FOUND, pages.not_found(f"No job {job_id} is kept."))
            return
        notes = {
            "requeue": "Requeue submitted: the owner applies it shortly.",
            "cancel": "Cancel submitted: the owner applies it shortly.",
        }
        self._send(
            HTTPStatus.OK,
            pages.job_page(
                record, reader.attempt_history(job_id), self.board.csrf, notes.get(message or "")
            ),
        )

    def _dead(self, queue: str, after: str | None) -> None:
        """A page of a queue's dead jobs after the job ``after``."""
        check_queue_name(queue)
        reader = self.board.reader
        reader.refresh()
        jobs = reader.dead_jobs(queue, after=after, limit=_DEAD_PAGE)
        self._send(HTTPStatus.OK, pages.dead_page(queue, jobs, after, _DEAD_PAGE, self.board.csrf))

    def do_POST(self) -> None:
        """Requeue or cancel a job through the producer, then show the job."""
        url = urllib.parse.urlsplit(self.path)
        if not self._allowed(urllib.parse.parse_qs(url.query)):
            return
        length = int(self.headers.get("Content-Length") or 0)
        if length > 65536:
            self._refuse(HTTPStatus.REQUEST_ENTITY_TOO_LARGE, "form too large")
            return
        form = urllib.parse.parse_qs(self.rfile.read(length).decode("utf-8", "replace"))
        if not self._csrf_ok(form):
            self._refuse(HTTPStatus.FORBIDDEN, "missing or wrong CSRF token")
            return
        parts = [urllib.parse.unquote(p) for p in url.path.split("/") if p]
        if len(parts) != 3 or parts[0] != "jobs" or parts[2] not in ("requeue", "cancel"):
            self._refuse(HTTPStatus.NOT_FOUND, "no such action")
            return
        job_id, action = parts[1], parts[2]
        try:
            check_job_id(job_id)
            reader = self.board.reader
            reader.refresh()
            record = reader.get_job(job_id)
            if record is None:
                self._refuse(HTTPStatus.NOT_FOUND, f"no job {job_id}")
                return
            if action == "requeue":
                if record.status is not JobStatus.DEAD:
                    self._refuse(HTTPStatus.CONFLICT, f"job {job_id} is not dead")
                    return
                self.board.producer.requeue_dead_job(job_id)
            else:
                if record.status in (JobStatus.DONE, JobStatus.DEAD):
                    self._refuse(HTTPStatus.CONFLICT, f"job {job_id} is finished")
                    return
                self.board.producer.cancel(job_id)
        except InvalidArgument as exc:
            self._refuse(HTTPStatus.BAD_REQUEST, str(exc))
            return
        except TaqubaError as exc:
            logger.exception("dashboard action failed")
            self._refuse(HTTPStatus.SERVICE_UNAVAILABLE, f"{type(exc).__name__}: {exc}")
            return
        self._redirect(f"/jobs/{pages.quote(job_id)}?msg={action}")


__all__ = ["Dashboard", "is_loopback"]
