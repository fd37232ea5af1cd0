"""``kgrec up`` as a test's server: the whole stack (its own graph server, the API under gunicorn,
a Celery worker and beat) on an Amazon Beauty subset, as an operator starts it."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

from kgrec.config import Settings
from kgrec.embedded import tied_to_parent
from kgrec.runtime import graph_session
from tests.processes import free_port, wait_for
from tests.subsets import amazon_beauty_subset
from workers.training.config import TrainConfig
from workers.training.job import run_training

# What would point the stack elsewhere than its own data dir and embedded graph.
FOREIGN_ENV = ("NEO4J_URI", "KGREC_GRAPH", "KGREC_DATA_DIR", "KGREC_READ_REQUIRES_KEY")
STOP_WAIT_S = 120.0


def up_argv(data_dir: Path, port: int, *options: str) -> list[str]:
    """The command line of ``kgrec up`` on ``data_dir`` with its API on ``port``."""
    return [
        sys.executable,
        "-m",
        "kgrec_cli.main",
        "up",
        "--port",
        str(port),
        "--data-dir",
        str(data_dir),
        *options,
    ]


class UpProcess:
    """A ``kgrec up`` in the foreground of its own session; SIGTERM stops everything it started."""

    def __init__(self, data_dir: Path, key: str, log: Path) -> None:
        self.port = free_port()
        self.log = log
        env = {k: v for k, v in os.environ.items() if k not in FOREIGN_ENV}
        self.env = {**env, "KGREC_API_KEYS": key}
        self.settings = Settings.from_env(self.env).with_overrides(data_dir=data_dir.resolve())
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the stack's API."""
        return f"http://127.0.0.1:{self.port}"

    def start(self, import_path: Path, timeout_s: float = 300.0) -> UpProcess:
        """``kgrec up --import <import_path>``; returns once the API answers ``/healthz``."""
        argv = up_argv(self.settings.data_dir, self.port, "--import", str(import_path))
        with open(self.log, "ab") as output:
            self.process = subprocess.Popen(
                tied_to_parent(argv),
                env=self.env,
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=Path(__file__).resolve().parent.parent,
            )
        wait_for(f"{self.url}/healthz", timeout_s=timeout_s)
        return self

    def stop(self) -> None:
        """SIGTERM (``kgrec up`` stops its children and the graph server), SIGKILL of the group if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(STOP_WAIT_S)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


@contextlib.contextmanager
def kgrec_up_on_subset(
    shared_data: Path, tmp: Path, *, users: int, key: str, versions: tuple[str, ...]
) -> Iterator[UpProcess]:
    """``kgrec up`` importing the first ``users`` Amazon Beauty users, with one quickly trained model
    per version (the last one active), trained here against the stack's graph server."""
    subset = amazon_beauty_subset(shared_data / "amazon-beauty-kg", tmp / "beauty", users=users)
    up = UpProcess(tmp / "var", key, tmp / "kgrec-up.log")
    try:
        up.start(subset)
        with graph_session(up.settings) as gateway:
            for version in versions:
                run_training(
                    gateway, up.settings, TrainConfig(epochs=1, use_ease=False), device="cpu", version=version
                )
        yield up
    finally:
        up.stop()
