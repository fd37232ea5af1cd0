"""Benchmark: exporting an audience, with a fixed page against a page that grows with the audience.

For each size it starts an empty embedded graph and writes, through the import's own statements,
one brand and that many users interested in it (weights spread over 997 values, so ranks tie
often). It then times ``kgrec.audiences.iter_audience`` in the same run, twice each, alternating,
best of two: with a fixed page of ``EXPORT_PAGE`` members (every page walks the brand's whole
list of edges, so the export grows with the square of its size) and with the default page
(``export_page_size``: at most ``EXPORT_MAX_PAGES`` pages). Both must yield every member once,
in the same order.

    .venv/bin/python -m bench.audience_export [--sizes 100000,200000,400000]
        [--work-dir var/bench-audience-export] [--results bench/results/audience-export.json]
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path
from typing import Any

from bench.scale import paired_result, size_sweep
from graph_schema.statements.dataset_import import SET_BRAND_INTERESTS, UPSERT_BRANDS, UPSERT_USERS
from kgrec.audiences import EXPORT_PAGE, Audience, export_page_size, iter_audience
from kgrec.config import Settings
from kgrec.runtime import graph_session

BATCH = 10_000
BRAND = "brand"


def measure(users: int, work: Path) -> dict[str, Any]:
    """One size: a fresh graph of ``users`` users interested in one brand, both exports timed."""
    shutil.rmtree(work, ignore_errors=True)
    settings = Settings(data_dir=work)
    now = int(time.time() * 1000)
    with graph_session(settings, apply_migrations=True) as gateway:
        gateway.write(UPSERT_BRANDS, {"rows": [{"id": BRAND, "name": BRAND}], "now": now})
        for start in range(0, users, BATCH):
            ids = [f"u{k:09d}" for k in range(start, min(users, start + BATCH))]
            gateway.write(UPSERT_USERS, {"ids": ids, "now": now})
            rows = [
                {"user_id": u, "target_id": BRAND, "weight": 1.0 + (k % 997) / 100, "weight_ts": now}
                | {"count": 1, "first_ts": now, "last_ts": now}
                for k, u in enumerate(ids, start)
            ]
            gateway.write(SET_BRAND_INTERESTS, {"rows": rows})
        audience = Audience.from_conditions({"brand": BRAND})
        timings: dict[str, float] = {}
        orders: dict[str, list[str]] = {}
        # twice each, alternating, best of two: the first export also warms the engine's caches
        for name, page in [("fixed_page", EXPORT_PAGE), ("growing_page", None)] * 2:
            t0 = time.perf_counter()
            orders[name] = [m["user_id"] for m in iter_audience(gateway, settings, audience, page)]
            timings[name] = min(timings.get(name, float("inf")), time.perf_counter() - t0)
    shutil.rmtree(work, ignore_errors=True)
    assert len(set(orders["fixed_page"])) == users, "the fixed-page export lost or repeated members"
    assert orders["growing_page"] == orders["fixed_page"], "the two exports disagree"
    fields = {"users": users, "growing_page_members": export_page_size(users)}
    return paired_result(fields, timings, "fixed_page", "growing_page")


def main() -> None:
    size_sweep(
        __doc__,
        measure,
        ("fixed_page", "growing_page"),
        "100000,200000,400000",
        "bench/results/audience-export.json",
    )


if __name__ == "__main__":
    main()
