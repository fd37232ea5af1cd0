"""``kgrec up``: the graph and impressions servers, API, worker and beat, supervised in the foreground."""

from __future__ import annotations

import contextlib
import fcntl
import os
import secrets
import signal
import socket
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING

from graph_schema.statements import admin
from kgrec.config import Settings
from kgrec.datasets import import_source, recorded_source
from kgrec.gateway import open_gateway
from kgrec.job_queue import WORKER_PARENT_ENV, WORKER_SHUTDOWN_ENV
from kgrec.migrations import migrate
from kgrec.runtime import check_neo4j, embedded_server
from kgrec_cli.supervisor import (
    POLL_S,
    ChildProcess,
    GraphProcess,
    ImpressionsProcess,
    StackError,
    Supervisor,
)

if TYPE_CHECKING:
    from kgrec.importer import ImportState

__all__ = ["StackError", "beat_argv", "gunicorn_command", "import_decision", "run_stack", "worker_argv"]


ImportRunner = Callable[[Settings, str, Path, Path | None], None]
# How the graph's import record would name the data set an ImportRunner imports for a name.
ImportRecord = Callable[[Settings, str, Path], str]
LOCK_FILE = "up.lock"  # in the data dir: held (flock) by the one kgrec up that runs on it
HEALTH_POLL_TIMEOUT_S = 2.0


class StopRequested(BaseException):
    """Ctrl-C or SIGTERM while ``kgrec up`` was still starting (importing, training, waiting for the API).

    A BaseException, as KeyboardInterrupt is, so that no ``except Exception`` on the way swallows it.
    """


class _StopSignal:
    """``kgrec up``'s handler of SIGINT and SIGTERM.

    While the stack starts, the signal raises :class:`StopRequested` in the main thread, so an
    import or a training stops at once; while a step must not be cut short (:attr:`deferred`: a
    model's write-back) it waits for its end; once :meth:`settle` is called (the supervisor runs,
    or the stack is stopping) it only sets :attr:`requested`, which the supervisor reads.
    """

    REPEAT_S = 0.5

    def __init__(self) -> None:
        self.requested: str | None = None
        self.deferred = False
        self.settled = False

    def install(self) -> None:
        """Handle SIGINT and SIGTERM (and SIGALRM, which repeats the stop until it is caught)."""
        signal.signal(signal.SIGTERM, self._on_signal)
        signal.signal(signal.SIGINT, self._on_signal)
        signal.signal(signal.SIGALRM, self._interrupt)
        default_hook = sys.unraisablehook

        def quiet_when_repeated(unraisable: sys.UnraisableHookArgs) -> None:
            # A stop that lands in a __del__ cannot leave it; the repeat raises it again elsewhere.
            if not isinstance(unraisable.exc_value, StopRequested):
                default_hook(unraisable)

        sys.unraisablehook = quiet_when_repeated

    def _on_signal(self, signum: int, frame: object) -> None:
        first = self.requested is None
        self.requested = signal.Signals(signum).name
        if first and not self.settled:
            # Raised again every REPEAT_S until it is caught: code the signal happens to interrupt
            # (a __del__, a deferred step) would otherwise swallow or postpone the only one.
            signal.setitimer(signal.ITIMER_REAL, self.REPEAT_S, self.REPEAT_S)
            self._interrupt(signum, frame)

    def _interrupt(self, _signum: int, _frame: object) -> None:
        if self.requested is not None and not (self.deferred or self.settled):
            raise StopRequested(self.requested)

    def raise_if_requested(self) -> None:
        """Raise :class:`StopRequested` for a signal that came while the stop was deferred."""
        self._interrupt(0, None)

    def settle(self) -> None:
        """From now on a signal only sets :attr:`requested` (a second Ctrl-C never cuts a shutdown short)."""
        self.settled = True
        signal.setitimer(signal.ITIMER_REAL, 0)


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


def worker_argv(
    concurrency: int = 1, pool: str = "prefork", queues: str | None = None, hostname: str | None = None
) -> list[str]:
    """The command line of a Celery worker for the kgrec tasks (``queues``: comma-separated, default
    all; ``hostname``: its node name, Celery's default celery@<host> when None)."""
    options = ["--concurrency", str(concurrency), "--pool", pool]
    options += ["--queues", queues] if queues else []
    return _celery_argv("worker", *options, *(["--hostname", hostname] if hostname else []))


DEFAULT_QUEUE = "celery"  # Celery's: every task but training (unless KGREC_TRAIN_QUEUE is unset)
UP_TRAIN_QUEUE = "kgrec-train"  # training's queue under kgrec up when KGREC_TRAIN_QUEUE names none


def all_queues(settings: Settings) -> str:
    """Every queue kgrec sends tasks to: the default one and the training queue, and the training
    queue of `kgrec up` (:func:`up_train_queue`), so that a worker started after it takes the
    trainings it left queued."""
    return ",".join(sorted({DEFAULT_QUEUE, settings.train_queue, up_train_queue(settings)}))


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


def _train_if_no_model(settings: Settings, stop: _StopSignal) -> None:
    """Train and activate a model when none is active.

    Ctrl-C/SIGTERM stops the pull and the training at once (nothing is written before the
    write-back); once the write-back has begun it finishes, so no half-written version is left
    (``stop.deferred`` is then set, for the caller to clear).
    """
    from graph_schema.statements.models import ACTIVE_VERSION
    from workers.training.config import TrainConfig
    from workers.training.job import start_training

    def progress(stage: str, fraction: float) -> None:
        if stage == "write-back":
            stop.deferred = True
        print(f"  {stage:<12} {100 * fraction:5.1f}%", flush=True)

    with open_gateway(settings) as gateway:
        if gateway.read(ACTIVE_VERSION):
            return
        print("no active model yet: training one (a few minutes on 2 cores) ...", flush=True)
        summary = start_training(gateway, settings, TrainConfig(), progress=progress)
        print(f"model {summary['version']} is active (validation {summary['validation']})", flush=True)


def _when(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def import_decision(
    items: int,
    state: ImportState | None,
    import_name: str | None,
    requested: str | None = None,
    data_dir: Path | None = None,
) -> tuple[bool, str | None]:
    """Whether ``kgrec up`` runs the import ``import_name``, and what it says about the graph.

    An empty graph is imported. A graph whose last import did not finish (its process was
    killed part way) is imported again: every step is idempotent, so the import completes, and
    it rewrites the AOF the killed one left long. Any other graph with items is served as it is.
    ``requested``: how the import record would name ``import_name``'s data set (default
    ``import_name``); another data set than the unfinished one's is refused with a
    :class:`StackError`, as it would not complete that import but mix two data sets in one graph.
    ``data_dir``: the data sets folder the record's name is read in (:func:`mixing_refusal`).
    """
    unfinished = state is not None and not state.finished
    if unfinished:
        assert state is not None
        what = f"the import of {state.dataset} started {_when(state.started_at)} did not finish"
        refusal = mixing_refusal(state, import_name, requested, data_dir=data_dir) if import_name else None
        if refusal is not None:
            raise StackError(refusal)
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


def mixing_refusal(
    state: ImportState | None,
    import_name: str,
    requested: str | None = None,
    finish: str = "kgrec up --import",
    data_dir: Path | None = None,
) -> str | None:
    """Why importing ``import_name`` (which the import record names ``requested``, default
    ``import_name``) into a graph whose last import, of another data set, did not finish is
    refused: it would not complete that import but mix two data sets in one graph, and mark the
    graph finished. ``finish``: the command that completes the unfinished one. None: no refusal.
    ``data_dir``: the data sets folder, to read the record's name as :func:`import_source` names
    it today (a record kept before built-in data sets were named by their name holds the path)."""
    if state is None or state.finished:
        return None
    recorded = state.dataset if data_dir is None else recorded_source(state.dataset, data_dir)
    if (requested or import_name) == recorded:
        return None
    return (
        f"the import of {state.dataset} started {_when(state.started_at)} did not finish; importing "
        f"{import_name} over it would mix two data sets in one graph: finish it with {finish} "
        f"{state.dataset}, or use another --data-dir"
    )


@contextlib.contextmanager
def _stack_lock(data_dir: Path, port: int) -> Iterator[None]:
    """Hold the data dir's lock for this ``kgrec up``; refuse at once when another holds it.

    ``flock`` goes with its process, so the lock of a ``kgrec up`` killed with SIGKILL is free again.
    """
    data_dir.mkdir(parents=True, exist_ok=True)
    with open(data_dir / LOCK_FILE, "a+") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "pid unknown"
            raise StackError(
                f"kgrec up is already running on data dir {data_dir} ({holder}); "
                "stop it first, or give this one another --data-dir"
            ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}, API port {port}")
        handle.flush()
        yield


def check_port_free(port: int, host: str = "127.0.0.1") -> None:
    """Raise :class:`StackError` naming ``port`` when the API could not bind it on ``host``."""
    try:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as exc:
        raise StackError(f"--host {host!r} is not an address of this machine ({exc.strerror})") from None
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        # as gunicorn binds: connections of an earlier server in TIME_WAIT do not count as taken
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as exc:
            raise StackError(
                f"API port {port} on {host} is not free ({exc.strerror}); stop what holds it or use --port"
            ) from None


def _api_answers(port: int) -> bool:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=HEALTH_POLL_TIMEOUT_S):
            return True
    except urllib.error.HTTPError:
        return True  # it answered
    except OSError:
        return False


def run_stack(
    settings: Settings,
    port: int,
    import_name: str | None,
    run_import: ImportRunner,
    train_first: bool = False,
    import_record: ImportRecord | None = None,
) -> None:
    """Start everything and supervise it until Ctrl-C/SIGTERM, then stop it all cleanly.

    One ``kgrec up`` per data dir (a second is refused at once), and the API port must be free.
    Ctrl-C or SIGTERM stops it at any point, the import and the training included: an import
    stopped part way stays unfinished, and ``kgrec up --import`` completes it. A process that dies
    is restarted (see :class:`Supervisor`); the stack stops with :class:`StackError` only on what
    looks like a configuration error.
    """
    settings = settings.with_overrides(data_dir=settings.data_dir.resolve())
    stop = _StopSignal()
    with _stack_lock(settings.data_dir, port):
        check_port_free(port)
        stop.install()
        graph = GraphProcess(embedded_server(settings)) if settings.embedded else None
        supervisor: Supervisor | None = None
        doing = "starting"
        try:
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
            run_it, message = _import_plan(settings, import_name, import_record)
            if message:
                print(message, flush=True)
            if run_it and import_name:
                resume = _resume_import(settings, import_name)
                doing = f"importing {import_name} (unfinished: {resume} completes it)"
                run_import(settings, import_name, settings.datasets_dir, None)
            if train_first:
                doing = "training (no model version was written)"
                _train_if_no_model(settings, stop)
                doing = "training (its write-back had begun: the model it trained is active)"
                stop.deferred = False
                stop.raise_if_requested()
            doing = "starting the API, worker and beat"
            children = _children(settings, port)
            supervisor = Supervisor(
                settings.data_dir,
                graph,
                children,
                should_stop=lambda: stop.requested is not None,
                servers=servers,
            )
            for child in children:
                child.launch()
            while not _api_answers(port):
                supervisor.check()
                time.sleep(POLL_S)
            print(_example_curls(port, *_example_ids(settings)), flush=True)
            stop.settle()  # the supervisor reads stop.requested, set by a signal before this too
            supervisor.run()
        except StopRequested as stopped:
            stop.settle()  # first: the repeat must not raise again while this is handled
            print(f"kgrec up: {stopped} while {doing}; stopping", flush=True)
        finally:
            stop.settle()
            if supervisor is not None:
                supervisor.stop_all()
            elif graph is not None:
                graph.stop()
            print("kgrec stopped", flush=True)


def _resume_import(settings: Settings, import_name: str) -> str:
    """The command that completes an import stopped part way (a folder by its absolute path)."""
    try:
        return f"kgrec up --import {import_source(import_name, settings.datasets_dir)}"
    except FileNotFoundError:  # the import itself says so
        return f"kgrec up --import {import_name}"


def _import_plan(
    settings: Settings, import_name: str | None, import_record: ImportRecord | None = None
) -> tuple[bool, str | None]:
    """Migrate the graph, then :func:`import_decision` on what it holds."""
    from kgrec.importer import import_state

    with open_gateway(settings) as gateway:
        check_neo4j(gateway)
        migrate(gateway)
        items = int(gateway.read(admin.ITEM_COUNT)[0]["count"])
        state = import_state(gateway)
    requested = None
    if import_name and import_record is not None:
        requested = import_record(settings, import_name, settings.datasets_dir)
    return import_decision(items, state, import_name, requested, settings.datasets_dir)


def _children(settings: Settings, port: int) -> list[ChildProcess]:
    """The API, the worker and beat, with the data dir and the API keys in their environment."""
    api_key = settings.api_keys[0] if settings.api_keys else _generated_api_key(settings.data_dir)
    env = {
        **os.environ,
        "KGREC_DATA_DIR": str(settings.data_dir),
        "KGREC_API_KEYS": ",".join(settings.api_keys or (api_key,)),
    }
    # Training on a queue and a worker process of its own: on one worker (concurrency 1) a training
    # of hours held back every scheduled task, the snapshot guard among them.
    train_queue = up_train_queue(settings)
    env["KGREC_TRAIN_QUEUE"] = train_queue
    worker_env = {
        **env,
        **WORKER_SHUTDOWN_ENV,
        WORKER_PARENT_ENV: str(os.getpid()),
    }  # the launcher: this process
    return [
        ChildProcess("api", gunicorn_command("127.0.0.1", port, 2, 4), env),
        # Node names of their own: under one (celery@<host>) they shared the control queue, and a
        # broadcast (inspect active_queues) reached only one of them.
        ChildProcess("worker", worker_argv(queues=DEFAULT_QUEUE, hostname="worker@%h"), worker_env),
        ChildProcess("trainer", worker_argv(queues=train_queue, hostname="trainer@%h"), worker_env),
        ChildProcess("beat", beat_argv(settings), env),
    ]


def up_train_queue(settings: Settings) -> str:
    """The training queue of the stack ``kgrec up`` starts: KGREC_TRAIN_QUEUE, or UP_TRAIN_QUEUE when
    that is the default queue (the one every other task goes to)."""
    return UP_TRAIN_QUEUE if settings.train_queue == DEFAULT_QUEUE else settings.train_queue
