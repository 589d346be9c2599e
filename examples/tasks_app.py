"""Tasks in one file: a decorated function, its result, a follow-up chain and a cron job.

    python examples/tasks_app.py                  # a finite demo on ./data/tasks-demo
    python examples/tasks_app.py --data DIR

The process owns the queue (``tasks.own()``), runs the worker in a thread, and submits:

- ``place_order.delay(...)`` returns a ``TaskResult``; ``.get(timeout)`` is the order's
  total, computed by the worker;
- ``place_order`` asks for ``send_receipt`` with ``follow_up``: the receipt job is made in
  the same atomic record as the order's ack, so it exists if and only if the order
  succeeded, exactly once;
- ``refund`` fails on a bad order: its job goes dead and ``.get`` raises ``TaskFailed``;
- ``@tasks.periodic`` registers ``tidy_up`` as a schedule that the worker keeps while it
  runs; its first occurrence is printed.

In a web app the same ``tasks`` object is used without ``own()``: ``delay`` then submits
through a ``Producer`` and ``get`` reads through a ``QueueReader``, while one worker
process (``tasks.run_worker``) owns the queue.
"""

from __future__ import annotations

import argparse
import logging
import threading
from typing import Any

from taquba.tasks import TaskFailed, Tasks

tasks = Tasks("./data/tasks-demo")

PRICES = {"apple": 0.5, "pear": 0.75, "melon": 3.0}


@tasks.task(name="shop.place_order", queue="orders", max_attempts=3, store_result=True)
def place_order(order_id: int, items: list[str]) -> dict[str, Any]:
    """Price an order, and ask for its receipt once the order is done."""
    total = round(sum(PRICES[item] for item in items), 2)
    receipt = send_receipt.follow_up(order_id, total)
    return {"order": order_id, "total": total, "receipt_job": receipt.id}


@tasks.task(name="shop.send_receipt", queue="mail", store_result=True)
def send_receipt(order_id: int, total: float) -> str:
    """The follow-up: runs only after its order's ack."""
    return f"receipt for order {order_id}: {total:.2f}"


@tasks.task(name="shop.refund", queue="orders", max_attempts=1, store_result=True)
def refund(order_id: int) -> None:
    raise ValueError(f"order {order_id} was never paid")


@tasks.periodic("0 3 * * *", name="shop.tidy_up", timezone="Europe/Paris")
def tidy_up() -> str:
    """Every night at 03:00 Paris time, while a worker owns the queue."""
    return "tidied"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--data", default="./data/tasks-demo", help="the queue's location")
    ns = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    tasks.location = ns.data

    shutdown = threading.Event()
    with tasks.own() as q:
        worker = threading.Thread(
            target=tasks.run_worker,
            name="tasks-demo-worker",
            kwargs={"shutdown": shutdown, "concurrency": 4, "poll_interval": 0.2},
        )
        worker.start()
        try:
            order = place_order.delay(42, ["apple", "pear", "melon"]).get(timeout=30)
            print(f"order {order['order']}: total {order['total']:.2f}")
            receipt = tasks.result(order["receipt_job"], "shop.send_receipt")
            print(f"follow-up: {receipt.get(timeout=30)}")
            try:
                refund.delay(7).get(timeout=30)
            except TaskFailed as exc:
                print(f"refund failed: {exc.error}")
            for schedule in q.list_schedules():
                print(
                    f"schedule {schedule.name}: {schedule.cron} ({schedule.timezone}), "
                    f"next at {schedule.next_run_at:.0f}"
                )
        finally:
            shutdown.set()
            worker.join()
    print("stopped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
