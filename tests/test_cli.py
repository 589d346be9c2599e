"""The ``taquba`` command, run as a subprocess against a live owner in another process:
JSON output parsed and checked, exit codes, one-line errors, and the owner never fenced."""

from __future__ import annotations

import base64
import json
from pathlib import Path

import pytest
from support.cli import Owner, taquba, taquba_json

from taquba import EnqueueOptions, OpenOptions, Queue, QueueConfig


def _seed(location: str, storage_options: dict[str, object] | None = None) -> dict[str, str]:
    """Jobs in known states: returns their ids by role."""
    ids: dict[str, str] = {}
    cfg = QueueConfig(keep_done=3600.0, retry_backoff_base=0, max_attempts=2)
    with Queue.open(
        location,
        options=OpenOptions(default_queue_config=cfg, background_threads=False),
        storage_options=storage_options,
    ) as q:
        ids["done"] = q.enqueue("emails", b"done")
        ids["pending"] = q.enqueue("emails", b"hello", headers={"tenant": "t1"})
        for n in range(3):
            ids[f"dead{n}"] = q.enqueue("reports", b"\xff\x00%d" % n, job_id=f"dead-{n}")
        ids["held"] = q.enqueue("held", b"running")
        claim = q.claim("emails")
        assert claim is not None and claim.id == ids["done"]
        q.ack(claim)
        claim = q.claim("emails")
        assert claim is not None and claim.id == ids["pending"]
        q.nack(claim, "smtp timeout")  # back to pending, with one attempt in its history
        for n in range(3):
            claim = q.claim("reports")
            assert claim is not None
            q.dead_letter(claim, f"bad report {n}")
    return ids


def test_read_commands_against_a_live_owner(tmp_path: Path) -> None:
    location = str(tmp_path / "q")
    ids = _seed(location)
    with Owner(location) as owner:
        stats = taquba_json("stats", location)
        assert stats == [
            {"queue": "emails", "pending": 1, "scheduled": 0, "claimed": 0, "done": 1, "dead": 0},
            {"queue": "held", "pending": 0, "scheduled": 0, "claimed": 1, "done": 0, "dead": 0},
            {"queue": "reports", "pending": 0, "scheduled": 0, "claimed": 0, "done": 0, "dead": 3},
        ]
        assert taquba_json("stats", location, "--queue", "reports") == [stats[2]]
        assert taquba_json("queues", location) == ["emails", "held", "reports"]

        job = taquba_json("job", location, ids["pending"])
        assert base64.b64decode(job["payload_b64"]) == b"hello"
        assert "payload" not in job
        assert job["status"] == "pending" and job["attempts"] == 1
        assert job["headers"] == {"tenant": "t1"} and job["last_error"] == "smtp timeout"
        assert [(a["attempt"], a["outcome"], a["error"]) for a in job["attempt_history"]] == [
            (1, "nacked", "smtp timeout")
        ]
        assert set(job) >= {
            "id",
            "queue",
            "status",
            "attempts",
            "max_attempts",
            "priority",
            "enqueued_at",
            "run_at",
            "claimed_at",
            "lease_expires_at",
            "completed_at",
            "failed_at",
            "dedup_key",
            "cancel_requested",
        }

        page = taquba_json("dead", location, "reports", "--limit", "2")
        assert [j["id"] for j in page] == ["dead-0", "dead-1"]
        assert [j["last_error"] for j in page] == ["bad report 0", "bad report 1"]
        assert base64.b64decode(page[0]["payload_b64"]) == b"\xff\x000"
        rest = taquba_json("dead", location, "reports", "--after", "dead-1")
        assert [j["id"] for j in rest] == ["dead-2"]

        text = taquba("stats", location)
        assert text.returncode == 0
        assert text.stdout.split("\n")[0].split() == [
            "QUEUE",
            "PENDING",
            "SCHEDULED",
            "CLAIMED",
            "DONE",
            "DEAD",
        ]
        assert text.stdout.split("\n")[3].split() == ["reports", "0", "0", "0", "0", "3"]
        text = taquba("job", location, ids["pending"])
        assert "smtp timeout" in text.stdout and "'hello'" in text.stdout
        assert "#1" in text.stdout and "nacked" in text.stdout
        owner.assert_not_fenced()
        # The held job is still the owner's: nothing the commands did touched it.
        assert owner.job(ids["held"]) == "claimed 1"


def test_write_commands_go_through_the_inbox(tmp_path: Path) -> None:
    location = str(tmp_path / "q")
    ids = _seed(location)
    with Owner(location) as owner:
        done = taquba(
            "enqueue",
            location,
            "emails",
            "-",
            "--priority",
            "5",
            "--dedup-key",
            "welcome-1",
            input=b"\x00binary\xff",
        )
        assert done.returncode == 0, done.stderr
        new_id = done.stdout.strip()
        owner.wait_for_job(new_id, "pending 0")
        assert (
            taquba("enqueue", location, "emails", "again", "--dedup-key", "welcome-1").returncode
            == 0
        )
        delayed = taquba("enqueue", location, "emails", "later", "--delay", "3600")
        assert delayed.returncode == 0
        owner.wait_for_job(delayed.stdout.strip(), "scheduled 0")
        job = taquba_json("job", location, new_id)
        assert base64.b64decode(job["payload_b64"]) == b"\x00binary\xff"
        assert job["priority"] == 5 and job["dedup_key"] == "welcome-1"

        assert taquba("requeue", location, "dead-1").returncode == 0
        owner.wait_for_job("dead-1", "pending 0")
        assert taquba("cancel", location, ids["pending"]).returncode == 0
        owner.wait_for_job(ids["pending"], "none")
        running = taquba("cancel", location, ids["held"])  # claimed: asked to stop
        assert running.returncode == 0 and "stop" in running.stdout
        owner.ask("intake")
        assert taquba_json("job", location, ids["held"])["cancel_requested"] is True
        assert owner.job(ids["held"]) == "claimed 1"  # still running: only asked to stop
        owner.assert_not_fenced()
        # The second enqueue hit the dedup key: one job holds it.
        stats = taquba_json("stats", location, "--queue", "emails")[0]
        assert (stats["pending"], stats["scheduled"]) == (1, 1)


@pytest.mark.parametrize(
    ("args", "status", "message"),
    [
        (("frobnicate",), 2, "invalid choice"),
        (("stats",), 2, "LOCATION"),
        (("stats", "nosuchprotocol://x"), 2, "nosuchprotocol"),
        (("stats", "{missing}"), 1, "no queue"),
        (("schedules", "{missing}"), 1, "no queue"),
        (("job", "{q}", "no-such-job"), 1, "not found"),
        (("job", "{q}", "not a job id!"), 2, "job_id"),
        (("stats", "{q}", "--queue", "nope"), 1, "not found"),
        (("dead", "{q}", "nope"), 1, "not found"),
        (("dead", "{q}", "reports", "--after", "no-such-job"), 1, "not a known job"),
        (("dead", "{q}", "reports", "--limit", "0"), 2, "limit"),
        (("stats", "{q}", "--storage-option", "novalue"), 2, "KEY=VALUE"),
        (("stats", "{q}", "--storage-option", "anon=true"), 2, "storage_options"),
        (("enqueue", "{missing}", "emails", "x"), 1, "no queue"),
        (("enqueue", "{q}", "emails", "x", "--priority", "-1"), 2, "priority"),
        (("cancel", "{q}", "no-such-job"), 1, "not found"),
        (("cancel", "{q}", "dead-0"), 1, "nothing to cancel"),
        (("requeue", "{q}", "dead-0x"), 1, "not found"),
        (("requeue", "{q}", "{pending}"), 1, "not dead"),
        (
            ("worker", "no_such_module_here:handle", "--location", "{q}", "--queue", "x"),
            2,
            "cannot import",
        ),
        (("worker", "json:dumps"), 2, "--location"),
        (("worker", "json"), 2, "module:attr"),
        (("dashboard", "{q}", "--host", "0.0.0.0"), 2, "--token"),
    ],
)
def test_bad_input_gives_one_line_and_the_documented_status(
    tmp_path: Path, args: tuple[str, ...], status: int, message: str
) -> None:
    location = str(tmp_path / "q")
    ids = _seed(location)
    with Owner(location) as owner:
        fill = {"q": location, "missing": str(tmp_path / "missing"), "pending": ids["pending"]}
        done = taquba(*(a.format(**fill) for a in args))
        assert done.returncode == status, (done.stdout, done.stderr)
        assert done.stdout == ""
        lines = done.stderr.splitlines()
        assert len(lines) == 1 and lines[0].startswith("taquba: error: "), done.stderr
        assert message in lines[0]
        owner.assert_not_fenced()
    # Nothing was submitted by a refused command.
    assert not (tmp_path / "missing").exists()
    assert not list((tmp_path / "q").glob("inbox/*/*"))


def test_storage_options_reach_an_object_store(s3_emulator: object) -> None:
    root = s3_emulator.root()  # type: ignore[attr-defined]
    _seed(root.location, root.storage_options)
    opts: list[str] = []
    for key, value in root.storage_options.items():
        opts += ["--storage-option", f"{key}={json.dumps(value)}"]
    stats = taquba_json("stats", root.location, "--queue", "reports", *opts)
    assert stats[0]["dead"] == 3
    without = taquba("stats", root.location)
    assert without.returncode != 0 and len(without.stderr.splitlines()) == 1


def test_python_dash_m_and_help() -> None:
    done = taquba("--help")
    assert done.returncode == 0
    for command in (
        "worker",
        "stats",
        "queues",
        "job",
        "dead",
        "schedules",
        "enqueue",
        "cancel",
        "requeue",
        "dashboard",
    ):
        assert command in done.stdout


def test_schedules_against_a_live_owner(tmp_path: Path) -> None:
    location = str(tmp_path / "q")
    _seed(location)
    with Queue.open(location, options=OpenOptions(background_threads=False)) as q:
        q.add_schedule("nightly", "30 2 * * *", "reports", b"\x00run", timezone="Europe/Paris")
        q.add_schedule("hourly", "@hourly", "emails", options=EnqueueOptions(priority=5))
    with Owner(location) as owner:
        got = {s["name"]: s for s in taquba_json("schedules", location)}
        assert set(got) == {"nightly", "hourly"}
        nightly = got["nightly"]
        assert (nightly["cron"], nightly["queue"], nightly["timezone"]) == (
            "30 2 * * *",
            "reports",
            "Europe/Paris",
        )
        assert base64.b64decode(nightly["payload_b64"]) == b"\x00run"
        assert nightly["last_run_at"] is None and nightly["next_run_at"] > 0
        assert got["hourly"]["priority"] == 5
        text = taquba("schedules", location)
        assert text.returncode == 0
        assert text.stdout.split("\n")[0].split() == [
            "NAME",
            "CRON",
            "TIMEZONE",
            "QUEUE",
            "NEXT_RUN",
            "LAST_RUN",
        ]
        assert "Europe/Paris" in text.stdout and "@hourly" in text.stdout
        owner.assert_not_fenced()


def test_the_console_script_points_at_main() -> None:
    import configparser
    import importlib

    from support.cli import REPO

    config = configparser.ConfigParser()
    config.read(REPO / "setup.cfg")
    scripts = config["options.entry_points"]["console_scripts"].strip().splitlines()
    assert scripts == ["taquba = taquba.cli:main"]
    module, _, attr = scripts[0].split(" = ")[1].partition(":")
    assert callable(getattr(importlib.import_module(module), attr))
