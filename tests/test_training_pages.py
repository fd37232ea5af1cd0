"""The training pull's keyset pages hold every id after their key, in order, whatever the ids look like.

FalkorDB answers ``x.id > $after`` on an indexed string property from the index alone, and
wrongly for ids that mix cases, digits and punctuation (``graph_schema/statements/training.py``
says how the page statements avoid it). These ids are such a mix, taken from real data sets
(MovieLens-100k's Freebase MIDs and release years, Amazon ids, KGAT's entity names): with the
plain filter, pages after ``release_year:unkonwn`` held it again and pages after ``Z`` were empty.
"""

from __future__ import annotations

import pytest

from graph_schema.statements.training import TRAINING_ENTITY_PAGE, TRAINING_ITEM_PAGE, TRAINING_USER_PAGE
from kgrec.gateway import GraphGateway
from workers.training.subgraph import all_ids

IDS = [
    "1995", "Z", "a", "a1", "a10", "a2", "a.b", "a:b", "a_b", "ab", "b", "e:i2", "m.03_nv3", "m.0bnth9_",
    "release_year:V", "release_year:unkonwn", "A3RTKL9KB8KLID", 'B00"<i>`x`', "0553092626", "038548254X",
]  # fmt: skip


def _create(gateway: GraphGateway, label: str) -> None:
    # `listed` makes them items the item page reads; users and entities ignore it
    gateway.run_query(f"UNWIND $ids AS id CREATE (n:{label} {{id: id, listed: true}})", {"ids": IDS})


@pytest.mark.parametrize(
    ("statement", "label"),
    [(TRAINING_USER_PAGE, "User"), (TRAINING_ITEM_PAGE, "Item"), (TRAINING_ENTITY_PAGE, "Entity")],
    ids=["users", "items", "entities"],
)
def test_each_page_holds_the_ids_after_its_key_in_order(
    gateway: GraphGateway, statement: object, label: str
) -> None:
    _create(gateway, label)
    for after in ["", *IDS]:
        rows = gateway.read(statement, {"after": after, "limit": 5})  # type: ignore[arg-type]
        assert [r["id"] for r in rows] == sorted(i for i in IDS if i > after)[:5], after


def test_paging_through_reads_every_id_once(gateway: GraphGateway) -> None:
    for label in ("User", "Item", "Entity"):
        _create(gateway, label)
    for statement in (TRAINING_USER_PAGE, TRAINING_ITEM_PAGE, TRAINING_ENTITY_PAGE):
        assert all_ids(gateway, statement) == sorted(IDS)
