"""Shared by the benchmarks: a gunicorn API for the length of a block, percentiles, processes' memory."""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import multiprocessing
import os
import re
import subprocess
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from pathlib import Path
from queue import Empty
from typing import TYPE_CHECKING, Any

import numpy as np
import requests

from kgrec_cli.stack import gunicorn_command

if TYPE_CHECKING:
    from kgrec.training_graph import TrainingGraph


def parsed_device(parser: argparse.ArgumentParser, name: str) -> str:
    """``--device`` resolved (``auto``: CUDA when present), or the parser's one-line error for a
    device this machine lacks, before any work starts."""
    from workers.training.kg_model import resolve_device

    try:
        return resolve_device(name)
    except ValueError as exc:
        parser.error(str(exc))


def positive_number(text: str) -> float | None:
    """``text`` as a finite number above 0, or None (not a number, 0 or less, NaN, infinite): the
    check of a command line's rates and weights, made before any work."""
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


def register_version(gateway: Any, version: str, artifact: str = "") -> int:
    """Write a hand-made model version into the graph as training's write-back leaves one: created,
    then ready (not active). Returns the time it used (epoch ms)."""
    from graph_schema.statements.models import CREATE_VERSION, MARK_VERSION_READY

    now = int(time.time() * 1000)
    fields = {"parameters": "{}", "counts": "{}", "metrics": "{}", "artifact": artifact}
    owner = f"bench-{version}"
    gateway.write(CREATE_VERSION, {"id": version, "owner": owner, "now": now, "data_until": now, **fields})
    gateway.write(MARK_VERSION_READY, {"id": version, "owner": owner, "erased": [], "now": now})
    return now


@contextlib.contextmanager
def serve_api(data_dir: Path, api_key: str, port: int) -> Iterator[str]:
    """Run ``kgrec``'s API (gunicorn 2 workers x 4 threads); yields its base URL once it answers."""
    env = {**os.environ, "KGREC_DATA_DIR": str(data_dir), "KGREC_API_KEYS": api_key}
    api = subprocess.Popen(
        gunicorn_command("127.0.0.1", port, 2, 4),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if requests.get(f"{base}/healthz", timeout=1).ok:
                    break
            except (requests.ConnectionError, requests.Timeout):  # not up yet, or busy starting
                time.sleep(0.1)
        yield base
    finally:
        api.terminate()
        api.wait()


def evaluation_training_graph(name: str, datasets_dir: Path, work: Path, protocol: str) -> TrainingGraph:
    """The training part of ``kgrec evaluate``'s split of data set ``name``, imported into a scratch
    embedded graph under ``work`` and pulled back: what training sees (the test items never)."""
    # Imported here: the API benchmarks use this module and should not load the training stack.
    from kgrec.config import Settings
    from kgrec.datasets import open_dataset
    from kgrec.runtime import embedded_server
    from workers.training.evaluate import load_training_graph, split_dataset

    settings = Settings(data_dir=work / "data", datasets_dir=datasets_dir)
    server = embedded_server(settings)
    server.start()
    try:
        return load_training_graph(
            settings, split_dataset(open_dataset(name, datasets_dir), protocol), protocol, print
        )
    finally:
        server.stop()


def validation_hold_out(
    name: str, datasets_dir: Path, work: Path
) -> tuple[TrainingGraph, np.ndarray, TrainingGraph, dict[int, int]]:
    """What the validation-only experiments train on: :func:`evaluation_training_graph` (leave-last-out),
    its item text embedded (cached under ``work``), and its hold-out, (graph without each user's
    latest interaction, user -> that item)."""
    from workers.training.holdout import hold_out_latest
    from workers.training.text import TextEmbeddingCache

    graph = evaluation_training_graph(name, datasets_dir.resolve(), work / name, "leave-last-out")
    text = TextEmbeddingCache(work / "text", "cpu").embed(graph.item_text)
    fit, targets = hold_out_latest(graph)
    return graph, text, fit, targets


def seeded_experiment_parser(description: str, kind: str) -> argparse.ArgumentParser:
    """The options every validation-only experiment takes: ``--dataset``, ``--datasets-dir``,
    ``--seeds`` (comma-separated; parsed to a list) and ``--save NAME`` (bench/results/KIND-NAME.json)."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--datasets-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--seeds", default=[7, 8, 9], type=lambda text: [int(s) for s in text.split(",")])
    parser.add_argument("--save", metavar="NAME", help=f"also write bench/results/{kind}-NAME.json")
    return parser


def percentile(values: list[float], q: float) -> float:
    """The q-th percentile (0-100), by linear interpolation; NaN for no values."""
    return float(np.percentile(np.asarray(values), q)) if values else float("nan")


_BUCKET = re.compile(
    r'^kgrec_http_request_duration_seconds_bucket\{endpoint="([^"]+)",le="([^"]+)"\} ([0-9.e+]+)$'
)


def server_histogram(base_url: str) -> dict[str, dict[float, float]]:
    """The API's own latency histogram (cumulative counts per bucket bound, seconds) per route."""
    histogram: dict[str, dict[float, float]] = {}
    for line in requests.get(f"{base_url}/metrics", timeout=30).text.splitlines():
        match = _BUCKET.match(line)
        if match:
            route, bound, count = match.groups()
            histogram.setdefault(route, {})[float(bound)] = float(count)
    return histogram


def server_side(before: dict[float, float], after: dict[float, float]) -> dict[str, float | int]:
    """Requests the server itself answered between two scrapes, and how many took over 20 / 100 ms.

    Read beside the load generator's figures, it tells queueing and stalls
    inside the API (its handler time) from time spent before a request reached it.
    """
    delta = {bound: after.get(bound, 0.0) - before.get(bound, 0.0) for bound in after}
    total = int(delta.get(float("inf"), 0.0))
    return {
        "requests": total,
        "over_20ms": total - int(delta.get(0.02, 0.0)),
        "over_100ms": total - int(delta.get(0.1, 0.0)),
    }


def _call_and_report(queue: Any, target: Callable[..., Any], args: tuple[Any, ...]) -> None:
    try:
        result = target(*args)
    except BaseException:
        queue.put(("error", traceback.format_exc()))
        raise
    queue.put(("ok", (result, _status_mb("self", "VmHWM"))))


def in_fresh_process(target: Callable[..., Any], *args: Any) -> tuple[Any, float]:
    """``target(*args)`` in a new (spawned) process; returns its result and that process's peak RSS in MB.

    A fresh interpreter makes the peak its own: nothing this process loaded counts. The peak
    is VmHWM, not ``ru_maxrss``: Linux carries ``ru_maxrss`` across exec, so a spawned child's
    would start at this (parent) process's size when it was forked.
    ``target`` must be a module-level function, and its arguments and result picklable.
    """
    context = multiprocessing.get_context("spawn")
    queue = context.Queue()
    process = context.Process(target=_call_and_report, args=(queue, target, args))
    process.start()
    try:
        while True:
            try:
                status, payload = queue.get(timeout=1.0)
                break
            except Empty:
                # Killed (out of memory, a signal) before it could answer: say so instead of waiting.
                if not process.is_alive() and queue.empty():
                    raise RuntimeError(
                        f"{getattr(target, '__name__', target)}'s process exited with code "
                        f"{process.exitcode} and no result"
                    ) from None
    finally:
        process.join()
    if status != "ok":
        raise RuntimeError(f"{getattr(target, '__name__', target)} failed in its own process:\n{payload}")
    return payload


def _status_mb(pid: int | str, field: str) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    raise ValueError(f"no {field} for process {pid}")


def rss_mb(pid: int) -> float:
    """The resident set size of process ``pid`` now, in MB (Linux /proc)."""
    return _status_mb(pid, "VmRSS")


def _peaks_of(needle: bytes) -> dict[int, float]:
    """VmHWM of the processes whose command line holds ``needle``, and of their children.

    Children count too since a server may retitle its workers (gunicorn does when
    setproctitle is installed).
    """
    matched: set[int] = set()
    parents: dict[int, int] = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            if needle in (proc / "cmdline").read_bytes():
                matched.add(int(proc.name))
            parents[int(proc.name)] = int((proc / "stat").read_text().rsplit(") ", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):  # gone meanwhile, or not ours to read
            continue
    peaks = {}
    for pid in matched | {child for child, parent in parents.items() if parent in matched}:
        try:
            peaks[pid] = _status_mb(pid, "VmHWM")
        except (OSError, ValueError):
            continue
    return peaks


@contextlib.contextmanager
def peak_rss_while(needle: str, every_s: float = 1.0) -> Iterator[dict[int, float]]:
    """Within the block, the peak RSS (VmHWM, MB) of every process whose command line holds ``needle``.

    Yields a dict (pid -> MB) filled in the background every ``every_s`` and once more at
    the end of the block, for processes (an API's gunicorn workers, say) that the block
    starts and stops itself.
    """
    peaks: dict[int, float] = {}
    done = threading.Event()

    def sample() -> None:
        while True:
            peaks.update(_peaks_of(needle.encode()))
            if done.wait(every_s):
                return

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    try:
        yield peaks
    finally:
        done.set()
        sampler.join()


def print_and_save(result: dict[str, Any], kind: str, name: str | None) -> None:
    """Print ``result`` as one JSON line; with ``name``, also write ``bench/results/<kind>-<name>.json``."""
    print(json.dumps(result))
    if name:
        path = Path(__file__).parent / "results" / f"{kind}-{name}.json"
        path.write_text(json.dumps(result, indent=2) + "\n")
