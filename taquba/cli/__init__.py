"""The ``taquba`` command (also ``python -m taquba``): run a worker, inspect and operate.

::

    taquba worker TARGET [--location L] [--queue Q ...] [-c N] [--executor thread|process]
                         [--log-level LEVEL] [--metrics-port P] [--metrics-host H]
    taquba stats LOCATION [--queue Q] [--json]
    taquba queues LOCATION [--json]
    taquba job LOCATION JOB_ID [--json]
    taquba dead LOCATION QUEUE [--after ID] [--limit N] [--json]
    taquba schedules LOCATION [--json]
    taquba enqueue LOCATION QUEUE [PAYLOAD | -] [--delay S] [--priority P] [--dedup-key K]
    taquba cancel LOCATION JOB_ID
    taquba requeue LOCATION JOB_ID
    taquba dashboard LOCATION [--host H] [--port P] [--token T]

Rules this package keeps:

- Only ``worker`` opens the queue (and so takes it over, fencing any previous owner). Every
  other command reads through :class:`~taquba.QueueReader` and writes through
  :class:`~taquba.Producer`: it never fences the owner nor touches its running jobs.
- Exit status: 0 on success; 1 when the job or queue is not found, or the operation
  failed (storage, a fenced worker); 2 on a usage error (unknown command or option, a
  malformed location, id or value). Errors go to stderr as one line,
  ``taquba: error: <message>``.
- ``--storage-option KEY=VALUE`` (repeatable) passes fsspec options for URLs; a value that
  parses as JSON (``true``, ``3``, ``"x"``) is passed as that value, any other as a string.
- ``--json`` prints one JSON document on stdout (``stats``: a list of objects with the
  ``QueueStats`` fields; ``job``: the ``JobRecord`` fields with the payload as base64 under
  ``payload_b64``, and its ``attempt_history``; ``dead``: a list of such job objects
  without history; ``queues``: a list of names; ``schedules``: a list of objects with the
  ``Schedule`` fields, the payload as base64 under ``payload_b64``).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from typing import Any, NoReturn

from ..errors import ConfigError, InvalidArgument, JobNotFound, TaqubaError
from ..reader import QueueNotFound

EXIT_OK = 0
EXIT_NOT_FOUND = 1  # also: the operation failed
EXIT_USAGE = 2


class CommandError(Exception):
    """A command's failure, reported as one line on stderr with ``status`` as exit code."""

    def __init__(self, message: str, status: int = EXIT_NOT_FOUND) -> None:
        super().__init__(message)
        self.status = status


class UsageError(CommandError):
    """A usage error (exit status 2)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, EXIT_USAGE)


class _Parser(argparse.ArgumentParser):
    """An ``ArgumentParser`` whose errors are one line on stderr and exit status 2."""

    def error(self, message: str) -> NoReturn:
        """Raise :class:`UsageError` instead of printing the usage and exiting."""
        raise UsageError(f"{message} (see '{self.prog} --help')")


def storage_options(pairs: Sequence[str] | None) -> dict[str, Any] | None:
    """The ``--storage-option KEY=VALUE`` pairs as a dict (None when there are none).

    Raises:
        UsageError: a pair without ``=`` or with an empty key.
    """
    if not pairs:
        return None
    out: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise UsageError(f"--storage-option takes KEY=VALUE, got {pair!r}")
        try:
            out[key] = json.loads(text)
        except ValueError:
            out[key] = text
    return out


def _common(parser: argparse.ArgumentParser, *, json_output: bool = False) -> None:
    """Add the options every command shares (and ``--json`` to the read commands)."""
    parser.add_argument(
        "--storage-option",
        action="append",
        metavar="KEY=VALUE",
        help="an fsspec storage option for a URL location (repeatable)",
    )
    if json_output:
        parser.add_argument("--json", action="store_true", help="print one JSON document")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of the ``taquba`` command and its subcommands."""
    from .. import __version__

    parser = _Parser(prog="taquba", description="Run, inspect and operate taquba queues.")
    parser.add_argument("--version", action="version", version=f"taquba {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True

    p = sub.add_parser(
        "worker", help="own the queue and run jobs (the only command that takes the queue over)"
    )
    p.add_argument(
        "target",
        metavar="TARGET",
        help="module:attr of a handler callable, a Worker, or an object with a "
        "run_worker method (a taquba.tasks.Tasks)",
    )
    p.add_argument("--location", "-l", help="the queue's location (for a handler target)")
    p.add_argument(
        "--queue",
        "-q",
        action="append",
        dest="queues",
        metavar="Q",
        help="a queue to run (repeatable; required for a handler target)",
    )
    p.add_argument(
        "-c",
        "--concurrency",
        type=int,
        default=1,
        metavar="N",
        help="jobs in flight per queue (default 1)",
    )
    p.add_argument(
        "--executor",
        choices=("thread", "process"),
        default="thread",
        help="run handlers on threads (default) or in a process pool",
    )
    p.add_argument(
        "--log-level",
        default="INFO",
        metavar="LEVEL",
        help="DEBUG, INFO (default), WARNING or ERROR",
    )
    p.add_argument(
        "--poll-interval",
        type=float,
        default=1.0,
        metavar="S",
        help="seconds between looks for work and for a shutdown (default 1)",
    )
    p.add_argument(
        "--metrics-port",
        type=int,
        metavar="P",
        help="serve Prometheus metrics on this port at /metrics",
    )
    p.add_argument(
        "--metrics-host",
        default="127.0.0.1",
        metavar="H",
        help="the address the metrics server binds (default 127.0.0.1)",
    )
    _common(p)

    p = sub.add_parser("stats", help="job counts per queue")
    p.add_argument("location", metavar="LOCATION")
    p.add_argument("--queue", "-q", metavar="Q", help="only this queue")
    _common(p, json_output=True)

    p = sub.add_parser("queues", help="the queue names")
    p.add_argument("location", metavar="LOCATION")
    _common(p, json_output=True)

    p = sub.add_parser("job", help="one job, with its attempt history")
    p.add_argument("location", metavar="LOCATION")
    p.add_argument("job_id", metavar="JOB_ID")
    _common(p, json_output=True)

    p = sub.add_parser("dead", help="a page of a queue's dead jobs")
    p.add_argument("location", metavar="LOCATION")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument("--after", metavar="ID", help="the last id of the previous page")
    p.add_argument("--limit", type=int, default=100, metavar="N", help="page size (default 100)")
    _common(p, json_output=True)

    p = sub.add_parser("schedules", help="the cron schedules")
    p.add_argument("location", metavar="LOCATION")
    _common(p, json_output=True)

    p = sub.add_parser("enqueue", help="submit a job (through the inbox; prints its id)")
    p.add_argument("location", metavar="LOCATION")
    p.add_argument("queue", metavar="QUEUE")
    p.add_argument(
        "payload",
        metavar="PAYLOAD",
        nargs="?",
        default="",
        help="the payload as text, or - to read bytes from stdin (default empty)",
    )
    p.add_argument("--delay", type=float, metavar="S", help="run no sooner than S seconds from now")
    p.add_argument("--priority", type=int, metavar="P", help="lower runs first (default 1000)")
    p.add_argument("--dedup-key", metavar="K", help="no new job while one with this key waits")
    _common(p)

    for name, what in (
        ("cancel", "cancel a job (removed if waiting, asked to stop if running)"),
        ("requeue", "move a dead job back to pending"),
    ):
        p = sub.add_parser(name, help=what)
        p.add_argument("location", metavar="LOCATION")
        p.add_argument("job_id", metavar="JOB_ID")
        _common(p)

    p = sub.add_parser("dashboard", help="serve a small web page over the queue")
    p.add_argument("location", metavar="LOCATION")
    p.add_argument(
        "--host",
        default="127.0.0.1",
        help="the address to bind (default 127.0.0.1; any other needs --token)",
    )
    p.add_argument("--port", type=int, default=8080, help="the port (default 8080; 0: any free)")
    p.add_argument(
        "--token",
        help="require this token on every request (header "
        "'Authorization: Bearer T' or ?token=T once, which sets a cookie)",
    )
    p.add_argument(
        "--refresh",
        type=float,
        default=5.0,
        metavar="S",
        help="seconds between automatic refreshes of the overview (default 5)",
    )
    _common(p)
    return parser


def run(argv: Sequence[str] | None = None) -> int:
    """Parse ``argv`` and run the command; returns its exit status (errors raised)."""
    args = build_parser().parse_args(argv)
    options = storage_options(args.storage_option)
    if args.command == "worker":
        from .worker import worker_command

        return worker_command(args, options)
    if args.command == "dashboard":
        from .commands import dashboard_command

        return dashboard_command(args, options)
    from . import commands

    handler = getattr(commands, f"{args.command}_command")
    status: int = handler(args, options)
    return status


def _one_line(text: str) -> str:
    """``text`` with every run of whitespace (newlines included) made one space."""
    return " ".join(text.split()) or "failed"


def main(argv: Sequence[str] | None = None) -> int:
    """The console script: run the command, turn errors into one stderr line and a status."""
    try:
        return run(argv)
    except CommandError as exc:
        status, message = exc.status, str(exc)
    except (QueueNotFound, JobNotFound) as exc:
        status, message = EXIT_NOT_FOUND, str(exc)
    except (ConfigError, InvalidArgument) as exc:
        status, message = EXIT_USAGE, str(exc)
    except TaqubaError as exc:
        status, message = EXIT_NOT_FOUND, f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:  # stdout closed early (| head): not an error of ours
        return EXIT_OK
    print(f"taquba: error: {_one_line(message)}", file=sys.stderr)
    return status


__all__ = ["CommandError", "UsageError", "build_parser", "main", "run", "storage_options"]
