"""Tasks for the task tests, importable by child processes: ``python -m support.tasks_child LOCATION``
owns the queue at LOCATION and runs these tasks until SIGTERM (exit 0) or a fence (exit 1)."""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from pathlib import Path
from typing import Any

from taquba import FencedError, OpenOptions, QueueConfig
from taquba.tasks import Tasks

tasks = Tasks(
    os.environ.get("TAQUBA_LOCATION", "memory://unused"),
    options=OpenOptions(default_queue_config=QueueConfig(retry_backoff_base=0)),
)


def register_common(tasks: Tasks) -> None:
    """The plain tasks that both the tests' in-process ``Tasks`` and this worker run."""

    @tasks.task(name="add", store_result=True)
    def add(x: int, y: int) -> int:
        return x + y

    @tasks.task(name="echo", queue="other", store_result=True)
    def echo(*args: Any, **kwargs: Any) -> dict[str, Any]:
        return {"args": list(args), "kwargs": kwargs}

    @tasks.task(name="fail", max_attempts=2, store_result=True)
    def fail(message: str) -> None:
        raise RuntimeError(message)

    @tasks.task(name="huge", store_result=True)
    def huge(size: int) -> str:
        return "x" * size

    @tasks.task(name="opaque", store_result=True)
    def opaque() -> object:
        return object()

    @tasks.task(name="quiet")  # by default, no result is kept
    def quiet() -> int:
        return 1


register_common(tasks)


@tasks.task(name="chain.parent", queue="chain", store_result=True)
def parent(marker: str, seconds: float) -> str:
    """Asks for a follow-up, notes the attempt, and sleeps on its first attempt only."""
    made = chain_child.follow_up(marker)
    path = Path(marker)
    with path.open("a") as f:
        f.write("parent\n")
    if path.read_text().count("parent") == 1:
        time.sleep(seconds)
    return made.id


@tasks.task(name="chain.child", queue="chain", store_result=True)
def chain_child(marker: str) -> None:
    with Path(marker).open("a") as f:
        f.write("child\n")


def main(location: str) -> None:
    tasks.location = location
    shutdown = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: shutdown.set())
    print("worker: running", flush=True)
    try:
        tasks.run_worker(shutdown=shutdown, concurrency=4, poll_interval=0.2)
    except FencedError:
        print("worker: fenced", flush=True)
        sys.exit(1)
    print("worker: stopped", flush=True)


if __name__ == "__main__":
    main(sys.argv[1])
