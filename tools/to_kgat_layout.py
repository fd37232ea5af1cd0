"""Convert a data set kgrec can read (e.g. a kgrec-layout folder) into the KGAT/KGIN layout.

    .venv/bin/python tools/to_kgat_layout.py SOURCE TARGET [--test-fraction 0.2]

SOURCE is anything :func:`kgrec.datasets.open_dataset` opens: a kgrec-layout folder
such as the demo shop from ``kgrec demo generate`` (whose brands, categories, title
attributes and co-purchase links are knowledge triples), a built-in name, or another
research folder.
TARGET receives ``train.txt``, ``test.txt``, ``kg_final.txt`` and the four
``*_list.txt`` id maps, which :class:`kgrec.datasets.kgat.KgatDataset` reads back, so
the project has a knowledge-graph data set of its own in the research format.

- Every interaction, of any type, is a positive; each user's distinct items are taken
  in time order (``ts``, then ``seq_index``, then file order) and the last
  ``test_fraction`` of them (at least one, when the user has two or more) goes to
  ``test.txt``: a per-user temporal split, not KGAT's random one.
- Items are ``items()`` then the items of the interactions; entities ``0 .. n_items-1``
  are the items, the other triple ends follow in order of first appearance. An item's
  brand and categories become ``produced_by`` / ``belongs_to`` triples (once, if the
  triples do not already state them).
- The relations a data set derives from its own interactions
  (:class:`kgrec.datasets.DerivedKnowledge`: a demo shop's ``also_bought``,
  ``bought_together`` and ``also_viewed``) are rebuilt from the interactions of the
  training pairs alone, less each user's validation pair (:func:`kgrec.datasets.training_triples`,
  :func:`workers.training.holdout.validation_pairs`: the pair an evaluation of the layout holds
  out of ``train.txt`` to fit its blend and baselines on, the largest tie key, the layout having
  no time): its files count them over every interaction, test ones included, which would carry
  test interactions into the training knowledge, and counted over the validation pairs they
  would show the fit its targets. Other triples (Amazon's ``also_bought`` comes from the shop's
  metadata, not from the data set's interactions) are copied as they are.
- The layout separates fields by white space, so every run of white space inside an
  org id (a brand "Acme Labs") is written as ``_``; ids without white space keep their
  exact form. Relation names are written as they are (``relation_list.txt``).
"""

from __future__ import annotations

import argparse
import math
import re
import sys
from collections import defaultdict
from collections.abc import Iterable
from pathlib import Path

from kgrec.datasets import Dataset, InteractionRecord, open_dataset, training_triples
from workers.training.holdout import validation_pairs

_SPACE = re.compile(r"\s+")


def _field(org_id: str) -> str:
    """An org id as one white-space-free field."""
    return _SPACE.sub("_", org_id.strip())


def _write_list(path: Path, header: str, ids: Iterable[str]) -> None:
    with open(path, "w", encoding="utf-8", newline="\n") as handle:
        handle.write(header + "\n")
        for remap, org_id in enumerate(ids):
            handle.write(f"{_field(org_id)} {remap}\n")


def to_kgat_layout(dataset: Dataset, target: Path, test_fraction: float = 0.2) -> dict[str, int]:
    """Write ``dataset`` into ``target`` in the KGAT layout (module docstring); returns what was written."""
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"test_fraction {test_fraction} must be at least 0 and below 1")
    target = Path(target)
    target.mkdir(parents=True, exist_ok=True)

    items: dict[str, int] = {}
    attributes: dict[tuple[str, str, str], None] = {}
    for record in dataset.items():
        items.setdefault(record.item_id, len(items))
        if record.brand:
            attributes[(record.item_id, "produced_by", record.brand)] = None
        for category in record.categories:
            attributes[(record.item_id, "belongs_to", category)] = None

    # user -> item -> (first ts, first seq, first position): the item's place in the user's history
    first: dict[str, dict[str, tuple[int, int, int]]] = defaultdict(dict)
    for position, event in enumerate(dataset.interactions()):
        items.setdefault(event.item_id, len(items))
        key = (
            event.ts if event.ts is not None else -1,
            event.seq if event.seq is not None else -1,
            position,
        )
        seen = first[event.user_id].get(event.item_id)
        if seen is None or key < seen:
            first[event.user_id][event.item_id] = key

    users = list(first)
    train_pairs = test_pairs = 0
    held_out: list[tuple[str, str]] = []
    trained: list[tuple[str, str]] = []
    with (
        open(target / "train.txt", "w", encoding="utf-8", newline="\n") as train,
        open(target / "test.txt", "w", encoding="utf-8", newline="\n") as test,
    ):
        for remap, user in enumerate(users):
            history = sorted(first[user], key=first[user].__getitem__)
            n_test = math.ceil(len(history) * test_fraction) if len(history) >= 2 else 0
            n_test = min(n_test, len(history) - 1)
            cut = len(history) - n_test
            train.write(" ".join([str(remap), *(str(items[i]) for i in history[:cut])]) + "\n")
            trained.extend((user, item) for item in history[:cut])
            if n_test:
                test.write(" ".join([str(remap), *(str(items[i]) for i in history[cut:])]) + "\n")
                held_out.extend((user, item) for item in history[cut:])
            train_pairs += cut
            test_pairs += n_test

    # What an evaluation of the layout holds out for validation, as it reads train.txt back (no
    # times, the ids as written): its links must not be counted over those pairs either.
    as_read = {(_field(user), _field(item)): (user, item) for user, item in trained}
    held_out.extend(as_read[p] for p in validation_pairs(InteractionRecord(*p, "purchase") for p in as_read))
    triples = dict(attributes)
    triples.update((t[:3], None) for t in training_triples(dataset, dataset.triples(), held_out))
    entities: dict[str, int] = dict(items)
    relations: dict[str, int] = {}
    with open(target / "kg_final.txt", "w", encoding="utf-8", newline="\n") as kg:
        for head, relation, tail in triples:
            ends = []
            for end in (head, tail):
                ends.append(entities.setdefault(end, len(entities)))
            kg.write(f"{ends[0]} {relations.setdefault(relation, len(relations))} {ends[1]}\n")

    _write_list(target / "user_list.txt", "org_id remap_id", users)
    _write_list(target / "item_list.txt", "org_id remap_id", items)
    _write_list(target / "entity_list.txt", "org_id remap_id", entities)
    _write_list(target / "relation_list.txt", "org_id remap_id", relations)
    return {
        "users": len(users),
        "items": len(items),
        "entities": len(entities) - len(items),
        "relations": len(relations),
        "triples": len(triples),
        "train_pairs": train_pairs,
        "test_pairs": test_pairs,
    }


def main(argv: list[str] | None = None) -> int:
    """Convert SOURCE into TARGET; prints the counts."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("source", help="a folder or built-in data set name")
    parser.add_argument("target", type=Path)
    parser.add_argument("--datasets-dir", type=Path, default=Path("../shared/data"))
    parser.add_argument("--test-fraction", type=float, default=0.2)
    args = parser.parse_args(argv)
    dataset = open_dataset(args.source, args.datasets_dir)
    counts = to_kgat_layout(dataset, args.target, args.test_fraction)
    print(", ".join(f"{name} {value:,}" for name, value in counts.items()))
    for problem in dataset.problems.rows[:20]:
        print(f"skipped {problem}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
