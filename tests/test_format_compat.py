"""Stores written by an earlier build stay readable.

``tests/fixtures/v2-log`` and ``v2-root`` were written by the first binary format (record
format version 2) with every kind of record, one of them with a checkpoint; the JSON beside
each says what an open must find (see ``tests/fixtures/build_v2_root.py``). The current
build opens a copy and must find exactly that.
"""

from __future__ import annotations

import json
import os
import shutil

import pytest

from taquba import OpenOptions, Queue, QueueConfig

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")


def _options(now: float) -> OpenOptions:
    # The builder's queue configs: they decide retention and retries, not how records read.
    return OpenOptions(
        clock=lambda: now,
        background_threads=False,
        checkpoint_min_bytes=1 << 30,
        queue_configs={
            "kept": QueueConfig(keep_done=3600.0, retry_backoff_base=0.0, max_attempts=2),
            "retry": QueueConfig(retry_backoff_base=5.0, lease=7.5),
        },
    )


def _record_json(rec: object) -> dict[str, object]:
    out: dict[str, object] = {}
    for name in rec.__dataclass_fields__:  # type: ignore[attr-defined]
        v = getattr(rec, name)
        if isinstance(v, bytes):
            v = v.hex()
        elif hasattr(v, "value"):
            v = v.value
        elif name == "headers":
            v = dict(v)
        out[name] = v
    return out


@pytest.mark.parametrize("name", ["v2-log", "v2-root"])
def test_a_root_written_by_the_v2_format_opens_to_the_same_state(tmp_path, name):
    with open(os.path.join(FIXTURES, f"{name}.json")) as f:
        expected = json.load(f)
    root = tmp_path / name
    shutil.copytree(os.path.join(FIXTURES, name), root)
    with Queue.open(str(root), options=_options(expected["opened_at"])) as q:
        assert sorted(q.list_queues()) == sorted(expected["stats"])
        for queue, counts in expected["stats"].items():
            s = q.stats(queue)
            assert [s.pending, s.scheduled, s.claimed, s.done, s.dead] == counts, queue
            assert [j.id for j in q.dead_jobs(queue)] == expected["dead"][queue], queue
        assert len(expected["jobs"]) >= 12
        for job_id, record in expected["jobs"].items():
            got = q.get_job(job_id)
            assert (None if got is None else _record_json(got)) == record, job_id
        for key, value in expected["kv"].items():
            got = q.kv_get(key.encode())
            assert (None if got is None else got.decode()) == value, key
        # The old store takes new records too, and they read back after a reopen.
        new_id = q.enqueue("after", b"new")
    with Queue.open(str(root), options=_options(expected["opened_at"])) as q:
        assert q.get_job(new_id) is not None
        assert q.get_job(new_id).payload == b"new"


def test_the_fixtures_hold_every_kind_of_record():
    """The v2-log fixture exercises each record kind of format version 2 (tags 1-11)."""
    from taquba.log.format import MAGIC_SEGMENT, decode_blocks, decode_header

    kinds = set()
    segments = os.path.join(FIXTURES, "v2-log", "segments")
    for seg in sorted(os.listdir(segments)):
        with open(os.path.join(segments, seg), "rb") as f:
            data = f.read()
        fields, pos = decode_header(seg, MAGIC_SEGMENT, data)
        if fields.get("blocks"):
            for record in decode_blocks(seg, data, pos)[0]:
                assert record[0] >> 4 == 2  # record format version 2
                kinds.add(record[0] & 0x0F)
    assert kinds == set(range(1, 12))
