"""A live queue owner in its own process, for the command line and dashboard tests.

    python tests/support/owner_child.py LOCATION

Opens the queue at LOCATION (taking it over), claims one job of the queue ``held`` if
there is one and keeps it running, prints ``ready`` and then answers one line of stdin at a
time with one line of stdout:

- ``check``: asks the storage whether another process has taken the queue over
  (``check_fence_now``) and writes a record (an enqueue on the queue ``probe``); prints
  ``ok``, or ``fenced <message>`` if either raised ``FencedError``;
- ``job ID``: ``<status> <attempts>`` of the job as the owner sees it (``none`` if gone);
- ``intake``: takes in what producers submitted now, prints ``taken <n>``;
- ``quit``: closes the queue, prints ``closed`` and exits.
"""

from __future__ import annotations

import sys

from taquba import FencedError, OpenOptions, Queue, QueueConfig


def main() -> None:
    q = Queue.open(
        sys.argv[1],
        options=OpenOptions(
            fence_check_interval=None, default_queue_config=QueueConfig(keep_done=3600.0)
        ),
    )
    held = q.claim("held")  # noqa: F841 (kept running until quit)
    print("ready", flush=True)
    for line in sys.stdin:
        command, _, arg = line.strip().partition(" ")
        if command == "check":
            try:
                q.check_fence_now()
                q.enqueue("probe", b"")
                print("ok", flush=True)
            except FencedError as exc:
                print(f"fenced {exc}".replace("\n", " "), flush=True)
        elif command == "job":
            record = q.get_job(arg)
            print(
                "none" if record is None else f"{record.status.value} {record.attempts}", flush=True
            )
        elif command == "intake":
            print(f"taken {q.intake_now()}", flush=True)
        elif command == "quit":
            q.close()
            print("closed", flush=True)
            return


if __name__ == "__main__":
    main()
