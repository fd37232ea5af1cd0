"""Helpers that run kgrec's real processes (gunicorn API, CLI) for tests."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from kgrec_cli.stack import gunicorn_command


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for(url: str, timeout_s: float = 60.0, status: int = 200) -> requests.Response:
    """Poll ``url`` until it answers ``status``."""
    deadline = time.monotonic() + timeout_s
    last = "no answer"
    while time.monotonic() < deadline:
        try:
            response = requests.get(url, timeout=2)
            if response.status_code == status:
                return response
            last = f"{response.status_code} {response.text[:200]}"
        except (requests.ConnectionError, requests.Timeout) as exc:  # not up yet, or busy starting
            last = str(exc)
        time.sleep(0.1)
    raise AssertionError(f"{url} did not answer {status} within {timeout_s}s: {last}")


class ApiProcess:
    """A gunicorn serving ``app:create_app()`` in its own process group."""

    def __init__(self, env: dict[str, str], port: int | None = None, log: Path | None = None) -> None:
        self.port = port or free_port()
        self.env = {**os.environ, **env}
        self.log = log
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Base URL of the API."""
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> ApiProcess:
        """Start gunicorn and wait until /healthz answers."""
        output = open(self.log, "ab") if self.log else subprocess.DEVNULL  # noqa: SIM115
        self.process = subprocess.Popen(
            gunicorn_command("127.0.0.1", self.port, 2, 4),
            env=self.env,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=Path(__file__).resolve().parent.parent,
        )
        wait_for(f"{self.url}/healthz")
        return self

    def kill9(self) -> None:
        """SIGKILL the whole gunicorn process group (master and workers)."""
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        """Graceful stop (SIGTERM), then SIGKILL if it lingers."""
        if self.process is None or self.process.poll() is not None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()


def kgrec_cli(*args: str, env: dict[str, str], timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """Run the kgrec CLI in a subprocess."""
    return subprocess.run(
        [sys.executable, "-m", "kgrec_cli.main", *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextlib.contextmanager
def background(argv: list[str], env: dict[str, str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    """Run a kgrec process (worker, beat) for the length of a block; output goes to ``log``."""
    with open(log, "wb") as output:
        process = subprocess.Popen(argv, env=env, stdout=output, stderr=subprocess.STDOUT)
        try:
            yield process
        finally:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def graph_errors_total(api: ApiProcess) -> float:
    """``kgrec_graph_errors_total`` as the API's ``/metrics`` reports it."""
    text = requests.get(f"{api.url}/metrics", timeout=30).text
    return sum(
        float(line.split()[-1]) for line in text.splitlines() if line.startswith("kgrec_graph_errors_total")
    )


@contextlib.contextmanager
def tmpfs(path: Path, options: str) -> Iterator[Path]:
    """A tmpfs mounted with ``options`` on ``path`` (created) for the block; the test skips where
    it cannot be mounted (not root)."""
    path.mkdir(exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(path)], capture_output=True, text=True
    )
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs ({options}) here: {mounted.stderr.strip()}")
    try:
        yield path
    finally:
        subprocess.run(["umount", "-l", str(path)], check=False)
