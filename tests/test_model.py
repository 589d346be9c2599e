"""A Hypothesis state machine: the whole Queue against a plain reference model.

The machine drives one real queue on the local backend (a fresh directory per example, on
tmpfs when there is one so that shrinking is quick; ``TAQUBA_MODEL_DIR`` picks another
parent), with a manual clock, no background threads and a checkpoint threshold drawn per
example (from every few records to never), and a model made of a few dicts. Every step is checked against the model: each queue's stats, and each job ever
created (its status, attempts, errors, flags — or that it is gone), and the KV entries.

Crash-and-reopen comes in two forms:

- ``reopen_after_close``: close the handle cleanly and open the root again;
- ``reopen_taking_over``: open a second handle on the root while the first is still open
  (the process that "crashed" simply never writes again). The new handle fences the old
  one: ``poke_stale_handle`` (and the teardown) checks that the abandoned handle's next
  durable call raises ``FencedError`` — even after the new writer has checkpointed and
  compacted the log.

Either way, a job claimed by the previous handle counts that attempt: it comes back as
pending with its attempts kept, or goes to the dead set when its attempts are spent or a
cancel was requested; claims handed out by the previous handle are no longer current.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from dataclasses import dataclass

import hypothesis.strategies as st
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis.stateful import RuleBasedStateMachine, initialize, invariant, precondition, rule

from taquba import (
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_NORMAL,
    CancelOutcome,
    Claim,
    ClaimLost,
    EnqueueOptions,
    EnqueueRequest,
    FencedError,
    InvalidArgument,
    JobNotFound,
    JobStatus,
    OpenOptions,
    Queue,
    QueueConfig,
    SettlementEffects,
)

PENDING = JobStatus.PENDING
SCHEDULED = JobStatus.SCHEDULED
CLAIMED = JobStatus.CLAIMED
DONE = JobStatus.DONE
DEAD = JobStatus.DEAD

START = 1_700_000_000.0

# Queue "a": retries at once, acked jobs dropped, dead jobs kept forever.
# Queue "b": exponential backoff, acked jobs kept a minute, dead jobs swept after two.
CONFIGS = {
    "a": QueueConfig(
        max_attempts=2, lease=10.0, retry_backoff_base=0, keep_done=None, dead_retention=None
    ),
    "b": QueueConfig(
        max_attempts=3,
        lease=10.0,
        retry_backoff_base=2.0,
        retry_backoff_max=5.0,
        keep_done=60.0,
        dead_retention=120.0,
    ),
}
QUEUES = sorted(CONFIGS)
BACKOFF = {"a": (0.0, 0.0), "b": (2.0, 5.0)}
KEEP_DONE = {"a": None, "b": 60.0}
DEAD_RETENTION = {"a": None, "b": 120.0}
MAX_OLD_CLAIMS = 30
MODEL_DIR = os.environ.get("TAQUBA_MODEL_DIR") or (
    "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
)

# A failure is shrunk for up to 5 minutes (Hypothesis's own limit): let it finish and report.
pytestmark = pytest.mark.timeout(600)

pick = st.integers(min_value=0, max_value=63)  # an index into whatever list is current


@dataclass
class MJob:
    """The model's view of one job."""

    id: str
    queue: str
    payload: bytes
    priority: int
    seq: int
    max_attempts: int
    status: JobStatus
    dedup_key: str | None = None
    attempts: int = 0
    run_at: float | None = None
    lease_expires_at: float | None = None
    completed_at: float | None = None
    failed_at: float | None = None
    last_error: str | None = None
    cancel_requested: bool = False


def backoff(queue: str, failed_attempts: int) -> float:
    base, cap = BACKOFF[queue]
    return 0.0 if base == 0 else min(base * 2 ** (failed_attempts - 1), cap)


class QueueMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.root = tempfile.mkdtemp(prefix="taquba-model-", dir=MODEL_DIR)
        self.now = START
        self.options = OpenOptions()
        self.handles: list[Queue] = []
        # the model
        self.jobs: dict[str, MJob] = {}
        self.known: list[str] = []  # every id ever created, in creation order
        self.dedup: dict[tuple[str, str], str] = {}
        self.done_total = dict.fromkeys(QUEUES, 0)
        self.kv: dict[bytes, bytes] = {}
        self.next_seq = 0
        self.claims: dict[str, Claim] = {}  # job id -> its current claim
        self.old_claims: list[Claim] = []  # claims that are no longer current
        self.stale: list[tuple[Queue, list[Claim]]] = []  # fenced handles, their claims

    @initialize(
        checkpoint_min_bytes=st.sampled_from([256, 1024, 2048, 1 << 20]),
        checkpoint_ratio=st.sampled_from([0.2, 1.0]),
    )
    def open_queue(self, checkpoint_min_bytes: int, checkpoint_ratio: float) -> None:
        """Checkpoints from every few records (and compaction with them) to none at all."""
        self.options = OpenOptions(
            default_queue_config=CONFIGS["a"],
            queue_configs=CONFIGS,
            clock=lambda: self.now,
            background_threads=False,
            checkpoint_min_bytes=checkpoint_min_bytes,
            checkpoint_ratio=checkpoint_ratio,
        )
        self.q = Queue.open(self.root, options=self.options)
        self.handles.append(self.q)

    def _flush(self) -> None:
        """Wait until everything submitted is durable (a KV delete of a missing key does).

        Claims, lease renewals, ticks and the requeue at open do not wait for durability; the
        rules flush after them so that every step is its own segment. That keeps the log —
        and so where checkpoints fall — the same on every replay of an example, and the
        model exact: a claim lost in a crash would leave ``attempts`` one lower (and so,
        at the next open, the job pending where the model expects it dead, or vice versa).
        """
        self.q.kv_delete(b"no such key")

    # -- model helpers ---------------------------------------------------------------------

    def _ids(self, *statuses: JobStatus) -> list[str]:
        return [i for i in self.known if i in self.jobs and self.jobs[i].status in statuses]

    def _lose_claim(self, job_id: str) -> None:
        claim = self.claims.pop(job_id, None)
        if claim is not None:
            self.old_claims.append(claim)
            del self.old_claims[:-MAX_OLD_CLAIMS]

    def _forget(self, job: MJob) -> None:
        if job.dedup_key is not None and self.dedup.get((job.queue, job.dedup_key)) == job.id:
            del self.dedup[(job.queue, job.dedup_key)]
        del self.jobs[job.id]

    def _to_pending(self, job: MJob) -> None:
        job.status, job.run_at, job.lease_expires_at = PENDING, None, None

    def _to_dead(self, job: MJob, error: str) -> None:
        job.status, job.last_error, job.failed_at = DEAD, error, self.now
        job.lease_expires_at = None

    def _promote_all(self) -> int:
        due = [
            j
            for j in self.jobs.values()
            if j.status is SCHEDULED and j.run_at is not None and j.run_at <= self.now
        ]
        for job in due:
            self._to_pending(job)
        return len(due)

    def _next_pending(self, queue: str) -> MJob | None:
        ready = [j for j in self.jobs.values() if j.queue == queue and j.status is PENDING]
        return min(ready, key=lambda j: (j.priority, j.seq), default=None)

    def _claimed(self, job: MJob, lease: float) -> None:
        job.status = CLAIMED
        job.attempts += 1
        job.lease_expires_at = self.now + lease
        job.run_at = None
        if job.dedup_key is not None and self.dedup.get((job.queue, job.dedup_key)) == job.id:
            del self.dedup[(job.queue, job.dedup_key)]

    def _check_claim(self, claim: Claim, job: MJob) -> None:
        assert claim.id == job.id, (claim.id, job.id)
        assert claim.queue == job.queue
        assert claim.payload == job.payload
        assert claim.attempts == job.attempts
        assert claim.priority == job.priority
        assert claim.lease_expires_at == job.lease_expires_at

    def _release_claims_at_open(self) -> None:
        """A claim abandoned by the previous handle counts its attempt, like a reaped lease."""
        for job in self.jobs.values():
            if job.status is not CLAIMED:
                continue
            if job.cancel_requested:
                self._to_dead(job, "cancelled: claim abandoned by a previous process")
            elif job.attempts >= job.max_attempts:
                self._to_dead(job, "claim abandoned by a previous process")
            else:
                self._to_pending(job)
        for job_id in list(self.claims):
            self._lose_claim(job_id)

    # -- producing -----------------------------------------------------------------------------

    @rule(
        queue=st.sampled_from(QUEUES),
        payload=st.binary(max_size=24).map(lambda b: b * 8),
        priority=st.sampled_from([None, PRIORITY_HIGH, PRIORITY_NORMAL, PRIORITY_LOW, 0]),
        delay=st.sampled_from([None, None, 0, 4.0, 30.0]),
        dedup_key=st.sampled_from([None, None, "d0", "d1"]),
        max_attempts=st.sampled_from([None, None, 1, 3]),
        kv_key=st.sampled_from([None, None, b"k0", b"k1", b"k2"]),
    )
    def enqueue(
        self,
        queue: str,
        payload: bytes,
        priority: int | None,
        delay: float | None,
        dedup_key: str | None,
        max_attempts: int | None,
        kv_key: bytes | None,
    ) -> None:
        opts = EnqueueOptions(
            priority=priority, delay=delay, dedup_key=dedup_key, max_attempts=max_attempts
        )
        if kv_key is not None:
            result = self.q.enqueue_with_kv(queue, payload, {kv_key: payload}, opts)
            job_id, is_new = result.id, result.is_new
        else:
            job_id = self.q.enqueue_with(queue, payload, opts)
            is_new = job_id not in self.jobs
        existing = None if dedup_key is None else self.dedup.get((queue, dedup_key))
        if existing is not None:
            assert (job_id, is_new) == (existing, False), "a dedup hit must return the old job"
            return
        assert is_new, f"enqueue of {job_id} reported a dedup hit"
        self._created(job_id, queue, payload, priority, delay, dedup_key, max_attempts)
        if kv_key is not None:
            self.kv[kv_key] = payload

    def _created(
        self,
        job_id: str,
        queue: str,
        payload: bytes,
        priority: int | None = None,
        delay: float | None = None,
        dedup_key: str | None = None,
        max_attempts: int | None = None,
    ) -> None:
        assert job_id not in self.known, f"enqueue returned a reused id {job_id}"
        run_at = self.now + delay if delay else None
        self.jobs[job_id] = MJob(
            id=job_id,
            queue=queue,
            payload=payload,
            seq=self.next_seq,
            priority=CONFIGS[queue].default_priority if priority is None else priority,
            max_attempts=CONFIGS[queue].max_attempts if max_attempts is None else max_attempts,
            status=SCHEDULED if run_at is not None else PENDING,
            run_at=run_at,
            dedup_key=dedup_key,
        )
        self.next_seq += 1
        self.known.append(job_id)
        if dedup_key is not None:
            self.dedup[(queue, dedup_key)] = job_id

    @rule(
        queue=st.sampled_from(QUEUES),
        dedup_key=st.sampled_from(["d0", "d1"]),
        delay=st.sampled_from([None, 4.0]),
    )
    def enqueue_deduplicated(self, queue: str, dedup_key: str, delay: float | None) -> None:
        job_id = self.q.enqueue(queue, dedup_key.encode(), dedup_key=dedup_key, delay=delay)
        existing = self.dedup.get((queue, dedup_key))
        if existing is not None:
            assert job_id == existing, f"dedup hit returned {job_id}, expected {existing}"
        else:
            assert job_id not in self.known, (
                f"no pending or scheduled job holds {dedup_key!r}, yet enqueue returned {job_id}"
            )
            self._created(job_id, queue, dedup_key.encode(), delay=delay, dedup_key=dedup_key)

    @rule(
        queue=st.sampled_from(QUEUES),
        payloads=st.lists(st.binary(max_size=40), min_size=1, max_size=4),
    )
    def enqueue_batch(self, queue: str, payloads: list[bytes]) -> None:
        ids = self.q.enqueue_batch(queue, payloads)
        assert len(ids) == len(payloads)
        for job_id, payload in zip(ids, payloads):
            self._created(job_id, queue, payload)

    # -- consuming -----------------------------------------------------------------------------

    @precondition(lambda self: self.known)
    @rule(queue=st.sampled_from(QUEUES), lease=st.sampled_from([None, 3.0, 20.0]))
    def claim(self, queue: str, lease: float | None) -> None:
        claim = self.q.claim(queue, lease)
        self._flush()
        self._promote_all()
        job = self._next_pending(queue)
        if job is None:
            assert claim is None, f"claimed {claim!r} but the model has nothing pending"
            return
        assert claim is not None, f"expected to claim {job.id}, got nothing"
        self._claimed(job, CONFIGS[queue].lease if lease is None else lease)  # type: ignore[arg-type]
        self._check_claim(claim, job)
        assert claim.record.cancel_requested == job.cancel_requested
        assert claim.cancel_requested.is_set() == job.cancel_requested
        self.claims[job.id] = claim

    @precondition(lambda self: self.known)
    @rule(queue=st.sampled_from(QUEUES), n=st.integers(1, 3))
    def claim_batch(self, queue: str, n: int) -> None:
        got = self.q.claim_batch(queue, n)
        self._flush()
        self._promote_all()
        expected: list[MJob] = []
        while len(expected) < n:
            job = self._next_pending(queue)
            if job is None:
                break
            self._claimed(job, CONFIGS[queue].lease)  # type: ignore[arg-type]
            expected.append(job)
        assert [c.id for c in got] == [j.id for j in expected]
        for claim, job in zip(got, expected):
            self._check_claim(claim, job)
            self.claims[job.id] = claim

    def _pick_claim(self, i: int) -> tuple[Claim, MJob]:
        job_id = sorted(self.claims, key=lambda j: self.jobs[j].seq)[i % len(self.claims)]
        return self.claims[job_id], self.jobs[job_id]

    @precondition(lambda self: self.claims)
    @rule(i=pick)
    def ack(self, i: int) -> None:
        claim, job = self._pick_claim(i)
        self.q.ack(claim)
        self._acked(job)

    def _acked(self, job: MJob) -> None:
        self._lose_claim(job.id)
        self.done_total[job.queue] += 1
        if KEEP_DONE[job.queue] is None:
            self._forget(job)
        else:
            job.status, job.completed_at, job.lease_expires_at = DONE, self.now, None

    @precondition(lambda self: self.claims)
    @rule(i=pick, as_exception=st.booleans())
    def nack(self, i: int, as_exception: bool) -> None:
        claim, job = self._pick_claim(i)
        error: str | Exception = ValueError(f"bad {i}") if as_exception else f"boom {i}"
        self.q.nack(claim, error)
        self._nacked(job, f"ValueError: bad {i}" if as_exception else f"boom {i}")

    def _nacked(self, job: MJob, text: str) -> bool:
        """The model's nack of ``job``; whether the job went dead."""
        self._lose_claim(job.id)
        if job.cancel_requested:
            self._to_dead(job, f"cancelled: {text}")
        elif job.attempts >= job.max_attempts:
            self._to_dead(job, text)
        else:
            job.last_error, job.lease_expires_at = text, None
            delay = backoff(job.queue, job.attempts)
            if delay:
                job.status, job.run_at = SCHEDULED, self.now + delay
            else:
                self._to_pending(job)
            return False
        return True

    @precondition(lambda self: self.claims)
    @rule(i=pick)
    def dead_letter(self, i: int) -> None:
        claim, job = self._pick_claim(i)
        self.q.dead_letter(claim, f"poison {i}")
        self._lose_claim(job.id)
        self._to_dead(job, f"poison {i}")

    @precondition(lambda self: self.claims)
    @rule(
        i=pick,
        action=st.sampled_from(["ack", "nack", "dead_letter"]),
        follow_ups=st.lists(
            st.tuples(
                st.sampled_from(QUEUES),
                st.sampled_from([None, None, "d0", "d1"]),
                st.sampled_from([None, None, 4.0]),
            ),
            max_size=3,
        ),
        kv_write=st.sampled_from([None, b"k0", b"k1"]),
        kv_delete=st.sampled_from([None, b"k1", b"k2"]),
        invalid=st.sampled_from([False, False, False, True]),
    )
    def settle_with_effects(
        self,
        i: int,
        action: str,
        follow_ups: list[tuple[str, str | None, float | None]],
        kv_write: bytes | None,
        kv_delete: bytes | None,
        invalid: bool,
    ) -> None:
        """A settlement with follow-up jobs and KV writes: all or nothing. An invalid one
        (a follow-up with an id in use: the settled job's own) changes nothing at all."""
        claim, job = self._pick_claim(i)
        if kv_write is not None and kv_write == kv_delete:
            kv_delete = None
        requests = []
        for n, (queue, dedup_key, delay) in enumerate(follow_ups):
            job_id = f"fx{len(self.known)}-{n}"
            if invalid and n == len(follow_ups) - 1:
                job_id, dedup_key = job.id, None  # a dedup hit would skip it, id and all
            requests.append(
                EnqueueRequest(
                    queue,
                    job_id.encode(),
                    EnqueueOptions(job_id=job_id, dedup_key=dedup_key, delay=delay),
                )
            )
        effects = SettlementEffects(
            enqueue=requests,
            kv_writes=None if kv_write is None else {kv_write: job.id.encode()},
            kv_deletes=[] if kv_delete is None else [kv_delete],
        )
        settle = {
            "ack": lambda: self.q.ack(claim, effects),
            "nack": lambda: self.q.nack(claim, f"fx {i}", effects),
            "dead_letter": lambda: self.q.dead_letter(claim, f"fx {i}", effects),
        }[action]
        if invalid and follow_ups:
            with pytest.raises(InvalidArgument, match="already in use"):
                settle()
            return
        settle()
        if action == "ack":
            self._acked(job)
        elif action == "nack":
            if not self._nacked(job, f"fx {i}"):
                return  # retried: the effects do not apply
        else:
            self._lose_claim(job.id)
            self._to_dead(job, f"fx {i}")
        for request, (queue, dedup_key, delay) in zip(requests, follow_ups):
            if dedup_key is not None and (queue, dedup_key) in self.dedup:
                continue
            assert request.options is not None and request.options.job_id is not None
            self._created(
                request.options.job_id, queue, request.payload, delay=delay, dedup_key=dedup_key
            )
        if kv_write is not None:
            self.kv[kv_write] = job.id.encode()
        if kv_delete is not None:
            self.kv.pop(kv_delete, None)

    @precondition(lambda self: self.claims)
    @rule(i=pick, extension=st.sampled_from([1.0, 10.0, 15.0, 60.0]))
    def renew_lease(self, i: int, extension: float) -> None:
        claim, job = self._pick_claim(i)
        self.q.renew_lease(claim, extension)
        self._flush()
        job.lease_expires_at = self.now + extension
        assert claim.lease_expires_at == job.lease_expires_at

    @precondition(lambda self: self.old_claims)
    @rule(i=pick, action=st.sampled_from(["ack", "nack", "dead_letter", "renew"]))
    def settle_lost_claim(self, i: int, action: str) -> None:
        """A claim that is no longer current (reaped, settled, from an earlier handle)."""
        claim = self.old_claims[i % len(self.old_claims)]
        try:
            if action == "ack":
                self.q.ack(claim)
            elif action == "nack":
                self.q.nack(claim, "late")
            elif action == "dead_letter":
                self.q.dead_letter(claim, "late")
            else:
                self.q.renew_lease(claim, 5.0)
        except ClaimLost:
            pass
        else:
            raise AssertionError(f"{action} of a lost claim {claim!r} did not raise ClaimLost")

    # -- operating -------------------------------------------------------------------------------

    @precondition(lambda self: self.known)
    @rule(i=pick, status=st.sampled_from(["any", "pending", "scheduled", "claimed"]))
    def cancel(self, i: int, status: str) -> None:
        ids = self.known if status == "any" else self._ids(JobStatus(status)) or self.known
        job_id = ids[i % len(ids)]
        outcome = self.q.cancel(job_id)
        job = self.jobs.get(job_id)
        if job is None or job.status in (DONE, DEAD):
            assert outcome is CancelOutcome.NOT_FOUND, outcome
        elif job.status is CLAIMED:
            assert outcome is CancelOutcome.REQUESTED, outcome
            job.cancel_requested = True
            claim = self.claims.get(job_id)
            if claim is not None:
                assert claim.cancel_requested.is_set()
        else:
            assert outcome is CancelOutcome.REMOVED, outcome
            self._forget(job)

    @precondition(lambda self: self.known)
    @rule(i=pick, prefer_dead=st.booleans())
    def requeue_dead_job(self, i: int, prefer_dead: bool) -> None:
        ids = (self._ids(DEAD) if prefer_dead else []) or self.known
        job_id = ids[i % len(ids)]
        job = self.jobs.get(job_id)
        if job is None or job.status is not DEAD:
            try:
                self.q.requeue_dead_job(job_id)
            except JobNotFound:
                return
            raise AssertionError(f"requeue_dead_job({job_id}) of a non-dead job succeeded")
        self.q.requeue_dead_job(job_id)
        self._to_pending(job)
        job.attempts, job.failed_at, job.cancel_requested = 0, None, False

    @rule(dt=st.sampled_from([0.5, 1.0, 3.0, 5.0, 9.0, 11.0, 30.0, 61.0, 130.0]))
    def advance_clock(self, dt: float) -> None:
        self.now += dt

    @precondition(lambda self: self._ids(CLAIMED, DONE, DEAD))
    @rule()
    def reap_now(self) -> None:
        moved = self.q.reap_now()
        self._flush()
        expired = [
            j
            for j in self.jobs.values()
            if j.status is CLAIMED
            and j.lease_expires_at is not None
            and j.lease_expires_at <= self.now
        ]
        for job in expired:
            self._lose_claim(job.id)
            if job.cancel_requested:
                self._to_dead(job, "cancelled: lease expired")
            elif job.attempts >= job.max_attempts:
                self._to_dead(job, "lease expired")
            else:
                job.last_error = "lease expired"
                self._to_pending(job)
        assert moved == len(expired), (moved, [j.id for j in expired])
        for job in list(self.jobs.values()):
            if self._swept(job):
                self._forget(job)

    def _swept(self, job: MJob) -> bool:
        """Retention: done jobs kept ``keep_done``, dead ones ``dead_retention``."""
        if job.status is DONE:
            keep, at = KEEP_DONE[job.queue], job.completed_at
        elif job.status is DEAD:
            keep, at = DEAD_RETENTION[job.queue], job.failed_at
        else:
            return False
        return keep is not None and at is not None and at <= self.now - keep

    @precondition(lambda self: self._ids(SCHEDULED))
    @rule()
    def promote_scheduled_now(self) -> None:
        moved = self.q.promote_scheduled_now()
        self._flush()
        assert moved == self._promote_all()

    # -- crash and reopen ------------------------------------------------------------------

    def _open(self) -> None:
        self.q = Queue.open(self.root, options=self.options)
        self.handles.append(self.q)
        self._flush()
        self._release_claims_at_open()

    @precondition(lambda self: self.known)
    @rule()
    def reopen_after_close(self) -> None:
        self.q.close()
        self._open()

    @precondition(lambda self: self.known)
    @rule()
    def reopen_taking_over(self) -> None:
        """A second handle opens the root while the first is open; the first is abandoned."""
        old = self.q
        old_claims = list(self.claims.values())
        self._open()
        self.stale.append((old, old_claims))

    @precondition(lambda self: self.stale)
    @rule(i=pick, action=st.sampled_from(["enqueue", "ack", "nack"]))
    def poke_stale_handle(self, i: int, action: str) -> None:
        handle, claims = self.stale[i % len(self.stale)]
        self._expect_fenced(handle, claims, action, i)

    def _expect_fenced(self, handle: Queue, claims: list[Claim], action: str, i: int) -> None:
        try:
            if action == "ack" and claims:
                handle.ack(claims[i % len(claims)])
            elif action == "nack" and claims:
                handle.nack(claims[i % len(claims)], "stale")
            else:
                handle.enqueue(QUEUES[i % len(QUEUES)], b"from a stale handle")
        except FencedError:
            return
        raise AssertionError(
            f"{action} on a handle fenced by a newer open did not raise FencedError"
        )

    # -- checks ------------------------------------------------------------------------------

    @invariant()
    def stats_match(self) -> None:
        for name in QUEUES:
            counts = {s: 0 for s in JobStatus}
            for job in self.jobs.values():
                if job.queue == name:
                    counts[job.status] += 1
            s = self.q.stats(name)
            got = (s.pending, s.scheduled, s.claimed, s.done, s.dead)
            want = (
                counts[PENDING],
                counts[SCHEDULED],
                counts[CLAIMED],
                self.done_total[name],
                counts[DEAD],
            )
            assert got == want, f"stats({name!r}) = {got}, model says {want}"

    @invariant()
    def jobs_match(self) -> None:
        for job_id in self.known:
            rec = self.q.get_job(job_id)
            job = self.jobs.get(job_id)
            if job is None:
                assert rec is None, f"{job_id} should be gone, got {rec}"
                continue
            assert rec is not None, f"{job_id} is missing; model: {job}"
            got = (
                rec.status,
                rec.attempts,
                rec.last_error,
                rec.cancel_requested,
                rec.queue,
                rec.priority,
                rec.max_attempts,
                rec.dedup_key,
                rec.payload,
            )
            want = (
                job.status,
                job.attempts,
                job.last_error,
                job.cancel_requested,
                job.queue,
                job.priority,
                job.max_attempts,
                job.dedup_key,
                job.payload,
            )
            assert got == want, f"{job_id}: got {got}, model {want}"
            if job.status is SCHEDULED:
                assert rec.run_at == job.run_at, (rec.run_at, job.run_at)
            if job.status is CLAIMED:
                assert rec.lease_expires_at == job.lease_expires_at
            if job.status is DONE:
                assert rec.completed_at == job.completed_at
            if job.status is DEAD:
                assert rec.failed_at == job.failed_at

    @invariant()
    def kv_matches(self) -> None:
        for key in (b"k0", b"k1", b"k2"):
            assert self.q.kv_get(key) == self.kv.get(key), key

    def teardown(self) -> None:
        checkpoints = sum(h.committer.stats.checkpoints_written for h in self.handles)
        segments = sum(h.committer.stats.segments_written for h in self.handles)
        event(f"segments: {segments // 10 * 10}+")
        event(f"jobs: {len(self.known) // 5 * 5}+")
        event(f"checkpoints written: {min(checkpoints, 3)}{'+' if checkpoints >= 3 else ''}")
        event(f"handles opened: {min(len(self.handles), 3)}{'+' if len(self.handles) >= 3 else ''}")
        try:
            for n, (handle, claims) in enumerate(self.stale):
                self._expect_fenced(handle, claims, "enqueue", n)
        finally:
            for handle in self.handles:
                handle.close()
            shutil.rmtree(self.root, ignore_errors=True)


QueueMachine.TestCase.settings = settings(
    max_examples=500,
    stateful_step_count=60,
    deadline=None,
    report_multiple_bugs=False,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestQueueModel = QueueMachine.TestCase


def test_a_lease_is_reaped_once_even_with_twin_entries() -> None:
    """Regression found by the machine: a claim after ``requeue_dead_job`` (or a renewal)
    at the same clock reading left two identical lease entries, and the reaper failed the
    job twice: ``reap_now`` counted 2, and the dead set listed the job twice (and, after a
    requeue, still listed it while pending)."""
    now = [START]
    root = tempfile.mkdtemp(prefix="taquba-model-", dir=MODEL_DIR)
    q = Queue.open(
        root,
        options=OpenOptions(
            clock=lambda: now[0],
            background_threads=False,
            default_queue_config=QueueConfig(max_attempts=1, lease=10.0),
        ),
    )
    try:
        job_id = q.enqueue("q", b"x")
        c = q.claim("q")
        assert c is not None
        q.dead_letter(c, "poison")
        q.requeue_dead_job(job_id)
        c = q.claim("q")
        assert c is not None
        q.renew_lease(c, 10.0)  # the same expiry once more
        now[0] += 11
        assert q.reap_now() == 1
        assert [r.id for r in q.dead_jobs("q")] == [job_id]
        q.requeue_dead_job(job_id)
        assert q.dead_jobs("q") == [] and q.stats("q").pending == 1
    finally:
        q.close()
        shutil.rmtree(root, ignore_errors=True)
