"""taquba: a durable, single-process task queue whose database is a bucket."""

from __future__ import annotations

__version__ = "0.1.0.dev0"

from .config import (
    MAX_KV_VALUE_SIZE,
    PRIORITY_HIGH,
    PRIORITY_LOW,
    PRIORITY_NORMAL,
    EnqueueOptions,
    OpenOptions,
    QueueConfig,
)
from .effects import EnqueueRequest, SettlementEffects
from .errors import (
    ClaimLost,
    ConfigError,
    CorruptionError,
    FencedError,
    InvalidArgument,
    JobNotFound,
    KvValueTooLarge,
    PermanentStorageError,
    QueueBroken,
    QueueClosed,
    StorageError,
    TaqubaError,
    TransientStorageError,
)
from .producer import Producer
from .queue import Queue
from .reader import QueueNotFound, QueueReader
from .records import (
    Attempt,
    CancelOutcome,
    Claim,
    EnqueueResult,
    JobRecord,
    JobStatus,
    QueueStats,
    Schedule,
    WaitOutcome,
    WaitStatus,
)
from .tasks import TaskFailed, TaskResult, Tasks
from .worker import Job, JobView, PermanentFailure, Worker, run_worker, run_worker_concurrent

__all__ = [
    "MAX_KV_VALUE_SIZE",
    "PRIORITY_HIGH",
    "PRIORITY_LOW",
    "PRIORITY_NORMAL",
    "Attempt",
    "CancelOutcome",
    "Claim",
    "ClaimLost",
    "ConfigError",
    "CorruptionError",
    "EnqueueOptions",
    "EnqueueRequest",
    "EnqueueResult",
    "FencedError",
    "InvalidArgument",
    "Job",
    "JobNotFound",
    "JobRecord",
    "JobStatus",
    "JobView",
    "KvValueTooLarge",
    "OpenOptions",
    "PermanentFailure",
    "PermanentStorageError",
    "Producer",
    "Queue",
    "QueueBroken",
    "QueueClosed",
    "QueueConfig",
    "QueueNotFound",
    "QueueReader",
    "QueueStats",
    "Schedule",
    "SettlementEffects",
    "StorageError",
    "TaqubaError",
    "TaskFailed",
    "TaskResult",
    "Tasks",
    "TransientStorageError",
    "WaitOutcome",
    "WaitStatus",
    "Worker",
    "__version__",
    "run_worker",
    "run_worker_concurrent",
]
