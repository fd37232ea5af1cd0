"""``kgrec up``: the graph and impressions servers, API, worker and beat, supervised in the foreground."""

from __future__ import annotations

import os
import secrets
import signal
import sys
import tempfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from graph_schema.statements import admin
from kgrec.config import Settings
from kgrec.gateway import open_gateway
from kgrec.migrations import migrate
from kgrec.runtime import embedded_server
from kgrec_cli.supervisor import ChildProcess, GraphProcess, ImpressionsProcess, StackError, Supervisor

if TYPE_CHECKING:
    from kgrec.importer import ImportState

__all__ = ["StackError", "beat_argv", "gunicorn_command", "import_decision", "run_stack", "worker_argv"]


ImportRunner = Callable[[Settings, str, Path, Path | None], None]


def gunicorn_command(host: str, port: int, workers: int, threads: int) -> list[str]:
    """The gunicorn command line that serves the Flask app factory.

    Its workers share one prometheus_client multiprocess directory per port,
    emptied when gunicorn starts.
    """
    metrics_dir = Path(tempfile.gettempdir()) / f"kgrec-metrics-{port}"
    return [
        sys.executable,
        "-m",
        "gunicorn",
        "--config",
        "python:kgrec_cli.gunicorn_conf",
        "--env",
        f"PROMETHEUS_MULTIPROC_DIR={metrics_dir}",
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
        "--keep-alive",
        "30",
        "--access-logfile",
        "-",
        "app:create_app()",
    ]


def _celery_argv(command: str, *options: str) -> list[str]:
    app = "workers.worker:celery_app"
    return [sys.executable, "-m", "celery", "-A", app, command, "--loglevel", "INFO", *options]


def worker_argv(concurrency: int = 1, pool: str = "prefork", queues: str | None = None) -> list[str]:
    """The command line of a Celery worker for the kgrec tasks (``queues``: comma-separated, default all)."""
    options = ["--concurrency", str(concurrency), "--pool", pool]
    return _celery_argv("worker", *options, *(["--queues", queues] if queues else []))


def all_queues(settings: Settings) -> str:
    """Every queue kgrec sends tasks to: the default one and the training queue."""
    return ",".join(sorted({"celery", settings.train_queue}))


def beat_argv(settings: Settings) -> list[str]:
    """The command line of the Celery beat scheduler; its schedule file lives in the data dir."""
    schedule = Path(settings.data_dir).resolve() / "celerybeat-schedule"
    return _celery_argv("beat", "--schedule", str(schedule))


def _generated_api_key(data_dir: Path) -> str:
    """A write key for a local stack without KGREC_API_KEYS, kept in the data dir (mode 600)."""
    path = Path(data_dir) / "api_key"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(secrets.token_urlsafe(24))
        os.chmod(path, 0o600)
    return path.read_text().strip()


def _example_ids(settings: Settings) -> tuple[str, str]:
    """A user of the graph and the first item the active model recommends them (placeholders without one)."""
    from graph_schema.statements.training import FIRST_USERS
    from kgrec.serving import ItemFilters, NoActiveModel, Serving

    serving = Serving(settings)
    try:
        users = serving.gateway.read(FIRST_USERS, {"limit": 1})
        if not users:
            return "USER_ID", "ITEM_ID"
        user = str(users[0]["id"])
        page = serving.recommendations(
            user, k=1, offset=0, exclude="seen", filters=ItemFilters(), explain=False
        )
        return user, (page["items"][0]["item_id"] if page["items"] else "ITEM_ID")
    except NoActiveModel:
        return "USER_ID", "ITEM_ID"
    finally:
        serving.close()


def _example_curls(port: int, user: str, item: str) -> str:
    base = f"http://127.0.0.1:{port}"
    return "\n".join(
        [
            f"kgrec is up on {base} (API docs at {base}/docs; write key in KGREC_API_KEYS or the data dir's "
            "api_key file). Try:",
            f"  curl -s '{base}/v1/users/{user}/recommendations?k=5&explain=true'",
            f"  curl -s '{base}/v1/users/{user}/recommendations/{item}/explanation'",
            f"  curl -s '{base}/v1/items/{item}/similar?k=5'",
        ]
    )


def _train_if_no_model(settings: Settings) -> None:
    from graph_schema.statements.models import ACTIVE_VERSION
    from workers.training.config import TrainConfig
    from workers.training.job import start_training

    with open_gateway(settings) as gateway:
        if gateway.read(ACTIVE_VERSION):
            return
        print("no active model yet: training one (a few minutes on 2 cores) ...", flush=True)
        summary = start_training(
            gateway,
            settings,
            TrainConfig(),
            progress=lambda stage, fraction: print(f"  {stage:<12} {100 * fraction:5.1f}%", flush=True),
        )
        print(f"model {summary['version']} is active (validation {summary['validation']})", flush=True)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def import_decision(
    items: int, state: ImportState | None, import_name: str | None
) -> tuple[bool, str | None]:
    """Whether ``kgrec up`` runs the import ``import_name``, and what it says about the graph.

    An empty graph is imported. A graph whose last import did not finish (its process was
    killed part way) is imported again: every step is idempotent, so the import completes, and
    it rewrites the AOF the killed one left long. Any other graph with items is served as it is.
    """
    unfinished = state is not None and not state.finished
    if unfinished:
        assert state is not None
        what = f"the import of {state.dataset} started {_when(state.started_at)} did not finish"
        if import_name:
            return True, f"{what}: importing {import_name} again"
        return False, (
            f"{what}: the partial graph is served as it is (kgrec up --import {state.dataset} finishes it)"
        )
    if import_name and items:
        return False, (
            f"the graph already holds {items:,} items; skipping the import (the graph is served as it is)"
        )
    return bool(import_name), None


def run_stack(
    settings: Settings,
    port: int,
    import_name: str | None,
    run_import: ImportRunner,
    train_first: bool = False,
) -> None:
    """Start everything and supervise it until Ctrl-C/SIGTERM, then stop it all cleanly.

    A process that dies is restarted (see :class:`Supervisor`); the stack stops with
    :class:`StackError` only on what looks like a configuration error.
    """
    settings = settings.with_overrides(data_dir=settings.data_dir.resolve())
    graph = GraphProcess(embedded_server(settings)) if settings.embedded else None
    servers = [ImpressionsProcess(graph.server)] if graph is not None else []
    if graph is not None:
        info = graph.launch()
        servers[0].launch()  # started with the graph server: this only records its process
        print(f"graph server: FalkorDB on 127.0.0.1:{info.port}, data in {info.data_dir}", flush=True)
        print(
            f"impressions server: redis on 127.0.0.1:{info.impressions_port} "
            f"(appendfsync {settings.impressions_fsync})",
            flush=True,
        )
    supervisor: Supervisor | None = None
    stopping = False

    def request_stop(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True

    signal.signal(signal.SIGTERM, request_stop)
    signal.signal(signal.SIGINT, request_stop)
    from kgrec.importer import import_state

    try:
        with open_gateway(settings) as gateway:
            migrate(gateway)
            items = int(gateway.read(admin.ITEM_COUNT)[0]["count"])
            state = import_state(gateway)
        run_it, message = import_decision(items, state, import_name)
        if message:
            print(message, flush=True)
        if run_it and import_name:
            run_import(settings, import_name, settings.datasets_dir, None)
        if train_first:
            _train_if_no_model(settings)
        api_key = settings.api_keys[0] if settings.api_keys else _generated_api_key(settings.data_dir)
        env = {
            **os.environ,
            "KGREC_DATA_DIR": str(settings.data_dir),
            "KGREC_API_KEYS": ",".join(settings.api_keys or (api_key,)),
        }
        children = [
            ChildProcess("api", gunicorn_command("127.0.0.1", port, 2, 4), env),
            ChildProcess("worker", worker_argv(queues=all_queues(settings)), env),
            ChildProcess("beat", beat_argv(settings), env),
        ]
        supervisor = Supervisor(
            settings.data_dir, graph, children, should_stop=lambda: stopping, servers=servers
        )
        for child in children:
            child.launch()
        print(_example_curls(port, *_example_ids(settings)), flush=True)
        supervisor.run()
    finally:
        if supervisor is not None:
            supervisor.stop_all()
        elif graph is not None:
            graph.stop()
        print("kgrec stopped", flush=True)
