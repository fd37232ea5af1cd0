"""gunicorn's settings and hooks for kgrec (``-c python:kgrec_cli.gunicorn_conf``): prometheus_client's
multiprocess mode, the model loaded before the first request, and JSON for gunicorn's own refusals."""

from __future__ import annotations

import gc
import json
import os
import shutil
from pathlib import Path
from typing import Any

import gunicorn.util

# One BLAS thread per request thread: the per-request matrix products are tiny, and
# OpenBLAS's own thread pool, multiplied by gunicorn's workers x threads on 2 cores,
# made a 0.8 ms ranking take 14 ms (measured). Set before any worker imports numpy.
for _variable in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")


# gunicorn's largest request line: a query of several percent-encoded ids (256 characters, up to
# 12 bytes each encoded) needs it; a longer line is refused with 414 before any view runs. (0, the
# only larger setting, means no limit at all: a client could make a worker buffer any amount.)
limit_request_line = 8190


def json_error(sock: Any, status_int: int, reason: str, mesg: str) -> None:
    """Write a request gunicorn refuses before the app sees it (414, 431, a malformed request line)
    as the app answers its errors: JSON ``{error, detail}``."""
    body = json.dumps({"error": reason.lower().replace(" ", "_"), "detail": mesg or reason}).encode()
    head = (
        f"HTTP/1.1 {status_int} {reason}\r\nConnection: close\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    )
    gunicorn.util.write_nonblock(sock, head.encode("latin-1") + body)


# gunicorn has no setting for the body of its own refusals (an HTML page); its workers call
# util.write_error for every one, so that function is replaced in the master, before it forks them.
gunicorn.util.write_error = json_error

# gunicorn 27's control socket defaults to one path per OS user (~/.gunicorn/gunicorn.ctl), so two
# kgrec APIs on one host (two shops, the test suite's servers) would take it from each other; kgrec
# never uses it.
control_socket_disable = True

# A worker must report in within this many seconds, post_worker_init included: loading a large
# model and the text model on a busy host takes longer than gunicorn's default 30 s, and a worker
# killed for it would be started again and killed again. (gthread workers report from their main
# loop, so a slow request never counts against it.)
timeout = 180


def _metrics_dir() -> Path | None:
    # Imported here: kgrec.config loads numpy, which must come after the thread variables above.
    from kgrec.config import Settings

    return Settings.from_env().prometheus_multiproc_dir


_OWNER = ".owner"  # the pid of the gunicorn master that made the metrics directory


def on_starting(server: Any) -> None:
    """Start with an empty metrics directory: old worker files would count twice."""
    folder = _metrics_dir()
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / _OWNER).write_text(str(os.getpid()))


def on_exit(server: Any) -> None:
    """Remove the metrics directory, unless a newer gunicorn on the port made it its own (this
    master's workers can take 20 s to stop after its socket closed)."""
    folder = _metrics_dir()
    if folder:
        try:
            owner = (Path(folder) / _OWNER).read_text()
        except OSError:
            return
        if owner == str(os.getpid()):
            shutil.rmtree(folder, ignore_errors=True)


def child_exit(server: Any, worker: Any) -> None:
    """Drop a dead worker's live gauges."""
    if _metrics_dir():
        from prometheus_client import multiprocess

        multiprocess.mark_process_dead(worker.pid)


def post_worker_init(worker: Any) -> None:
    """Load the active model and the text model, then move everything loaded so far out of the
    garbage collector's sight.

    A worker that loaded the model on its first request kept every request that
    reached it meanwhile waiting (2.5 s for bench.scale's 16x model: a p99 of tens
    of ms became hundreds). A full collection otherwise walks these hundreds of
    thousands of long-lived objects while a request waits: the p99 of a 2 ms
    endpoint was about 100 ms.
    """
    from app.graph import warm_model, warm_text_model

    warm_model(worker.wsgi)
    seconds = warm_text_model(worker.wsgi)  # the first review, tag or search would wait 4-6 s for it
    if seconds is not None:
        worker.log.info("kgrec: text model loaded in %.1f s", seconds)
    gc.collect()
    gc.freeze()
