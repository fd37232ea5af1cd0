"""``kgrec up``: the graph server and the API as one foreground process group."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

from graph_schema.statements import admin
from kgrec.config import Settings
from kgrec.embedded import die_with_parent
from kgrec.gateway import open_gateway
from kgrec.migrations import migrate
from kgrec.runtime import embedded_server


class StackError(RuntimeError):
    """A process of the stack died; everything was stopped."""


ImportRunner = Callable[[Settings, str, Path, Path | None], None]


def gunicorn_command(host: str, port: int, workers: int, threads: int) -> list[str]:
    """The gunicorn command line that serves the Flask app factory."""
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--bind",
        f"{host}:{port}",
        "--workers",
        str(workers),
        "--threads",
        str(threads),
        "--worker-class",
        "gthread",
        "--graceful-timeout",
        "20",
        "--access-logfile",
        "-",
        "app:create_app()",
    ]


def _example_curls(port: int) -> str:
    base = f"http://127.0.0.1:{port}"
    return "\n".join(
        [
            "kgrec is up. Try:",
            f"  curl -s {base}/healthz",
            f"  curl -s {base}/readyz",
            f"  curl -s {base}/v1/graph/stats",
        ]
    )


def _stop(children: list[subprocess.Popen[bytes]], timeout_s: float = 25.0) -> None:
    for child in children:
        if child.poll() is None:
            child.terminate()
    deadline = time.monotonic() + timeout_s
    for child in children:
        try:
            child.wait(max(0.1, deadline - time.monotonic()))
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def run_stack(settings: Settings, port: int, import_name: str | None, run_import: ImportRunner) -> None:
    """Start everything, block until Ctrl-C/SIGTERM or a child dies, then stop it all cleanly."""
    settings = settings.with_overrides(data_dir=settings.data_dir.resolve())
    server = embedded_server(settings) if settings.embedded else None
    if server is not None:
        info = server.start()
        print(f"graph server: FalkorDB on 127.0.0.1:{info.port}, data in {info.data_dir}", flush=True)
    children: list[subprocess.Popen[bytes]] = []
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    try:
        with open_gateway(settings) as gateway:
            migrate(gateway)
            items = int(gateway.read(admin.ITEM_COUNT)[0]["count"])
        if import_name:
            if items:
                print(
                    f"the graph already holds {items:,} items; skipping the import "
                    f"(run `kgrec import {import_name}` to reload)",
                    flush=True,
                )
            else:
                run_import(settings, import_name, settings.shared_data_dir, None)
        env = {**os.environ, "KGREC_DATA_DIR": str(settings.data_dir)}
        parent = os.getpid()
        children.append(
            subprocess.Popen(
                gunicorn_command("127.0.0.1", port, 2, 4),
                env=env,
                preexec_fn=lambda: die_with_parent(parent),
            )
        )
        print(_example_curls(port), flush=True)
        while not stopping:
            if any(child.poll() is not None for child in children):
                raise StackError("a kgrec process exited unexpectedly; stopping the stack")
            time.sleep(0.2)
    finally:
        _stop(children)
        if server is not None:
            server.stop()
        print("kgrec stopped", flush=True)
