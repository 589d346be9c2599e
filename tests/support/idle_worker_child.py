"""An idle queue owner for tests/test_queue_fence_check.py.

    python tests/support/idle_worker_child.py SPEC_JSON

``SPEC_JSON`` holds ``location``, ``storage_options``, ``fence_check_interval`` and
``concurrent`` (which worker loop to run). The process opens the queue, prints ``ready``
and runs the worker loop on an empty queue until it raises; then it prints ``F <type>`` and
exits 3 when that is a ``FencedError``, ``X <type> <message>`` and exits 4 otherwise. A
loop that returned prints ``returned`` and exits 0 (the parent fails the test).
"""

from __future__ import annotations

import json
import sys
import threading

from taquba import FencedError, OpenOptions, Queue
from taquba.worker import run_worker, run_worker_concurrent


def main() -> int:
    spec = json.loads(sys.argv[1])
    options = OpenOptions(fence_check_interval=spec["fence_check_interval"])
    q = Queue.open(
        spec["location"], options=options, storage_options=spec["storage_options"] or None
    )
    print("ready", flush=True)
    shutdown = threading.Event()
    try:
        if spec["concurrent"]:
            run_worker_concurrent(
                q, "jobs", lambda claim: None, concurrency=2, shutdown=shutdown, poll_interval=0.5
            )
        else:
            run_worker(q, "jobs", lambda claim: None, shutdown=shutdown, poll_interval=0.5)
    except FencedError as exc:
        print(f"F {type(exc).__name__}", flush=True)
        q.close()
        return 3
    except Exception as exc:
        print(f"X {type(exc).__name__} {exc}", flush=True)
        return 4
    print("returned", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
