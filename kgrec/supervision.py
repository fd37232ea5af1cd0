"""Restart counts of the processes ``kgrec up`` supervises, kept in a small JSON file in the data dir.

The supervisor (``kgrec_cli.stack``) records each restart; the API's ``/metrics``
reads the counts from here, so neither layer imports the other.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

RESTARTS_FILE = "restarts.json"
SUPERVISED = ("graph", "impressions", "api", "worker", "trainer", "beat")


def restarts_path(data_dir: Path) -> Path:
    """The restart-count file of the stack that owns ``data_dir``."""
    return Path(data_dir) / RESTARTS_FILE


def restart_counts(data_dir: Path) -> dict[str, int]:
    """Restarts per supervised process since ``kgrec up`` started (0 for each when none ran)."""
    counts = dict.fromkeys(SUPERVISED, 0)
    try:
        stored = json.loads(restarts_path(data_dir).read_text())
    except (OSError, ValueError):
        return counts
    if isinstance(stored, dict):
        counts.update({str(k): int(v) for k, v in stored.items() if isinstance(v, int)})
    return counts


def write_restart_counts(data_dir: Path, counts: dict[str, int]) -> None:
    """Replace the stored counts atomically (readers never see a half-written file)."""
    path = restarts_path(data_dir)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(counts, sort_keys=True))
    tmp.replace(path)
