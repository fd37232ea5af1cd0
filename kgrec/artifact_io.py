"""Writing array files atomically: readers see the old file or the complete new one, never a part."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import numpy as np


def write_npz_atomically(path: Path, arrays: Mapping[str, np.ndarray]) -> None:
    """Write ``arrays`` to the ``.npz`` file ``path`` through a temporary file beside it, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # np.savez appends ".npz" to a name without it, so the temporary name keeps the suffix.
    tmp = path.with_name(f".{path.name}.tmp.npz")
    np.savez(tmp, **arrays)
    tmp.replace(path)
