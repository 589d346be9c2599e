"""Quick start: enqueue, claim, ack, close, reopen — on a local directory.

Run it twice: the job enqueued by the first run and left pending is still there in the
second, because every transition is in the log under ``./data/quickstart``.

    python examples/quickstart.py
"""

from __future__ import annotations

import sys

from taquba import Queue


def main(location: str = "./data/quickstart") -> None:
    with Queue.open(location) as q:
        before = q.stats("email")
        print(f"opened {location}: {before.pending} pending, {before.done} done so far")

        q.enqueue("email", b"alice@example.com")
        q.enqueue("email", b"bob@example.com")

        claim = q.claim("email", lease=30.0)
        assert claim is not None
        print(f"working on {claim.payload.decode()} (job {claim.id}, attempt {claim.attempts})")
        q.ack(claim)

        after = q.stats("email")
        print(f"closing with {after.pending} pending, {after.done} done")

    # Reopen: the state comes back from storage.
    with Queue.open(location) as q:
        stats = q.stats("email")
        print(f"reopened: {stats.pending} pending, {stats.done} done — nothing was lost")


if __name__ == "__main__":
    main(*sys.argv[1:2])
