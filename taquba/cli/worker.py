"""``taquba worker TARGET``: own the queue and run jobs until SIGTERM or SIGINT.

What holds:

- ``TARGET`` is ``module:attr`` (``attr`` may be dotted), imported with the current
  directory on ``sys.path``. An object with a ``run_worker`` method (a
  ``taquba.tasks.Tasks``) runs as ``run_worker(shutdown=..., concurrency=N)`` and owns its
  own location; anything else is a handler (a callable or a ``Worker``), run with
  ``run_worker_concurrent`` on each ``--queue`` of the queue opened at ``--location``.
- The first SIGTERM or SIGINT stops claiming: the jobs in flight finish and are settled,
  the queue is closed, and the command exits 0. A second signal exits at once (status
  128 + the signal number); the jobs it interrupts are put back when the queue is next
  opened (their attempt shows as "abandoned").
- A loop that stops on its own (the queue was fenced by a newer owner, broke, ...) stops
  the others the same way, and the command exits 1 naming the error.
- ``--metrics-port`` serves ``/metrics`` (Prometheus text format) from this process,
  bound to ``--metrics-host`` (127.0.0.1 unless told otherwise).
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import signal
import sys
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Executor, ProcessPoolExecutor
from contextlib import contextmanager, nullcontext
from typing import Any

from ..queue import Queue
from ..worker import run_worker_concurrent
from . import EXIT_OK, CommandError, UsageError

logger = logging.getLogger("taquba.cli")

_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


def load_target(spec: str) -> object:
    """The object ``module:attr`` names.

    Raises:
        UsageError: ``spec`` is not ``module:attr``, the module cannot be imported or has no
            such attribute.
    """
    module_name, sep, attr = spec.partition(":")
    if not sep or not module_name or not attr:
        raise UsageError(f"TARGET must be module:attr (e.g. myapp.jobs:handle), got {spec!r}")
    cwd = os.getcwd()
    if cwd not in sys.path:
        sys.path.insert(0, cwd)
    try:
        obj: object = importlib.import_module(module_name)
    except ImportError as exc:
        raise UsageError(f"cannot import module {module_name!r}: {exc}") from None
    for part in attr.split("."):
        try:
            obj = getattr(obj, part)
        except AttributeError:
            raise UsageError(f"module {module_name!r} has no attribute {attr!r}") from None
    return obj


def _is_runner(obj: object) -> bool:
    """Whether ``obj`` runs its own worker (duck-typed: a ``Tasks`` has ``run_worker``)."""
    return callable(getattr(obj, "run_worker", None)) and not callable(
        getattr(obj, "process", None)
    )


class ShutdownSignals:
    """SIGTERM/SIGINT handlers: the first sets ``shutdown``, the second exits at once."""

    def __init__(self, shutdown: threading.Event) -> None:
        self.shutdown = shutdown
        self._previous: dict[int, Any] = {}

    def install(self) -> None:
        """Handle SIGTERM and SIGINT (call from the main thread)."""
        for sig in (signal.SIGTERM, signal.SIGINT):
            self._previous[sig] = signal.signal(sig, self._handle)

    def restore(self) -> None:
        """Put back the handlers that were there before :meth:`install`."""
        for sig, previous in self._previous.items():
            signal.signal(sig, previous)

    def _handle(self, signum: int, frame: object) -> None:
        """The first signal sets ``shutdown``; a second one ends the process at once."""
        name = signal.Signals(signum).name
        if self.shutdown.is_set():
            os.write(2, f"taquba: {name} again: exiting now\n".encode())
            os._exit(128 + signum)
        # Set before saying so: a second signal may arrive (and its handler run) while the
        # message is being written, and it must find the shutdown already under way.
        self.shutdown.set()
        logger.warning(
            "%s received: finishing the jobs in flight (send it again to exit at once)", name
        )


@contextmanager
def metrics_server(q: Queue, host: str, port: int) -> Iterator[None]:
    """Serve ``q``'s metrics at ``http://host:port/metrics`` for the duration of the block.

    Raises:
        UsageError: ``prometheus_client`` is not installed.
    """
    try:
        from prometheus_client import CollectorRegistry, start_http_server
    except ImportError:
        raise UsageError(
            "--metrics-port needs prometheus_client: pip install 'taquba[prometheus]'"
        ) from None
    from ..metrics import PrometheusCollector

    registry = CollectorRegistry()
    registry.register(PrometheusCollector(q))
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise CommandError(f"cannot serve metrics on {host}:{port}: {exc}") from None
    logger.info("metrics at http://%s:%d/metrics", host, server.server_port)
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5.0)


def _run_threads(jobs: Mapping[str, Callable[[], None]], shutdown: threading.Event) -> None:
    """Run each job on its own thread; the first failure stops the others and is raised
    once every thread has ended. The calling (main) thread stays free for signals."""
    errors: list[BaseException] = []

    def wrap(fn: Callable[[], None]) -> None:
        try:
            fn()
        except BaseException as exc:
            errors.append(exc)
            shutdown.set()

    threads = [threading.Thread(target=wrap, args=(fn,), name=name) for name, fn in jobs.items()]
    for t in threads:
        t.start()
    for t in threads:
        while t.is_alive():
            t.join(0.2)
    if errors:
        raise errors[0]


def worker_command(args: argparse.Namespace, options: Mapping[str, Any] | None) -> int:
    """``taquba worker TARGET ...``: see the module docstring."""
    level = args.log_level.upper()
    if level not in _LEVELS:
        raise UsageError(f"--log-level must be one of {', '.join(_LEVELS)}, got {args.log_level!r}")
    if args.concurrency < 1:
        raise UsageError(f"--concurrency must be at least 1, got {args.concurrency}")
    if args.poll_interval <= 0:
        raise UsageError(f"--poll-interval must be positive, got {args.poll_interval}")
    target = load_target(args.target)
    runner = _is_runner(target)
    if runner:
        if args.location is not None or options:
            raise UsageError(
                "--location and --storage-option apply to a handler target; "
                f"{args.target} opens its own location"
            )
        if args.executor != "thread":
            raise UsageError(f"--executor process needs a handler target, not {args.target}")
        if args.metrics_port is not None and not callable(getattr(target, "own", None)):
            raise UsageError(
                f"--metrics-port needs a handler target or an object with "
                f"own() (a taquba.tasks.Tasks), not {args.target}"
            )
    else:
        if not callable(target) and not callable(getattr(target, "process", None)):
            raise UsageError(
                f"{args.target} is neither a handler (a callable or an object "
                "with process()) nor an object with run_worker()"
            )
        if args.location is None or not args.queues:
            raise UsageError("a handler target needs --location and at least one --queue")
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    shutdown = threading.Event()
    signals = ShutdownSignals(shutdown)
    signals.install()
    try:
        if runner:
            _run_tasks(target, args, shutdown)
        else:
            _run_handler(target, args, options, shutdown)
    except (CommandError, KeyboardInterrupt):
        raise
    except Exception as exc:
        raise CommandError(f"worker stopped: {type(exc).__name__}: {exc}") from exc
    finally:
        signals.restore()
    logger.info("worker stopped")
    return EXIT_OK


def _run_tasks(target: Any, args: argparse.Namespace, shutdown: threading.Event) -> None:
    """Run an object with ``run_worker`` (serving its queue's metrics through ``own()``
    when asked) until ``shutdown`` is set."""
    kwargs: dict[str, Any] = {"shutdown": shutdown, "concurrency": args.concurrency}
    if args.queues:
        kwargs["queues"] = args.queues

    def run() -> None:
        if args.metrics_port is None:
            target.run_worker(**kwargs)
            return
        with target.own() as q, metrics_server(q, args.metrics_host, args.metrics_port):
            target.run_worker(**kwargs)

    _run_threads({"taquba-worker-main": run}, shutdown)


def _run_handler(
    handler: Any,
    args: argparse.Namespace,
    options: Mapping[str, Any] | None,
    shutdown: threading.Event,
) -> None:
    """Own the queue at ``--location`` and run ``handler`` on each ``--queue`` until
    ``shutdown`` is set; then close the queue."""
    q = Queue.open(args.location, storage_options=options)
    executor: Executor | None = None
    try:
        if args.executor == "process":
            executor = ProcessPoolExecutor(max_workers=args.concurrency * len(args.queues))
        serving = (
            nullcontext()
            if args.metrics_port is None
            else metrics_server(q, args.metrics_host, args.metrics_port)
        )
        with serving:
            loops = {
                f"taquba-loop-{name}": _loop(q, name, handler, args, shutdown, executor)
                for name in dict.fromkeys(args.queues)
            }
            _run_threads(loops, shutdown)
    finally:
        if executor is not None:
            executor.shutdown(wait=True)
        q.close()


def _loop(
    q: Queue,
    queue: str,
    handler: Any,
    args: argparse.Namespace,
    shutdown: threading.Event,
    executor: Executor | None,
) -> Callable[[], None]:
    """The worker loop of one queue, as a function for :func:`_run_threads`."""

    def run() -> None:
        run_worker_concurrent(
            q,
            queue,
            handler,
            concurrency=args.concurrency,
            shutdown=shutdown,
            poll_interval=args.poll_interval,
            executor=executor,
        )

    return run
