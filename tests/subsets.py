"""Small, exact subsets of the real data sets, written in the kgrec layout for fast tests."""

from __future__ import annotations

import csv
import gzip
import uuid
from pathlib import Path

from kgrec.config import Settings
from kgrec.datasets import open_dataset
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.importer import import_dataset
from kgrec.migrations import migrate


def _rows(path: Path) -> list[dict[str, str]]:
    with gzip.open(path, "rt", encoding="utf-8", newline="") as handle:
        return list(csv.DictReader(handle))


def _write(path: Path, header: list[str], rows: list[dict[str, str]]) -> None:
    with gzip.open(path, "wt", encoding="utf-8", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=header)
        writer.writeheader()
        writer.writerows(rows)


def amazon_beauty_subset(source: Path, target: Path, users: int) -> Path:
    """The first ``users`` users of Amazon Beauty (file order), their items and those items' triples."""
    target.mkdir(parents=True, exist_ok=True)
    interactions = _rows(source / "interactions.csv.gz")
    keep_users: list[str] = []
    for row in interactions:
        if row["user_id"] not in keep_users:
            if len(keep_users) == users:
                break
            keep_users.append(row["user_id"])
    kept_users = set(keep_users)
    kept = [r for r in interactions if r["user_id"] in kept_users]
    items = {r["item_id"] for r in kept}
    _write(target / "interactions.csv.gz", ["user_id", "item_id", "seq_index"], kept)
    _write(
        target / "items.csv.gz",
        ["item_id", "brand", "categories"],
        [r for r in _rows(source / "items.csv.gz") if r["item_id"] in items],
    )
    _write(
        target / "kg_triples.csv.gz",
        ["head", "relation", "tail"],
        [r for r in _rows(source / "kg_triples.csv.gz") if r["head"] in items],
    )
    return target


def beauty_graph(
    settings: Settings, shared_data: Path, folder: Path, users: int, prefix: str
) -> tuple[Settings, GraphGateway]:
    """A graph of its own on the session server, migrated and loaded with an Amazon Beauty subset."""
    subset = amazon_beauty_subset(shared_data / "amazon-beauty-kg", folder / "beauty", users=users)
    graph_name = f"{prefix}_{uuid.uuid4().hex[:8]}"
    local = Settings(data_dir=settings.data_dir, graph_name=graph_name, datasets_dir=settings.datasets_dir)
    gateway = open_gateway(local, graph_name=graph_name)
    migrate(gateway)
    import_dataset(gateway, open_dataset(str(subset), local.datasets_dir), local)
    return local, gateway
