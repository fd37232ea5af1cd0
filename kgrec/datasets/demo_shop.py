"""A demo shop as a data set: the kgrec layout, with its event-derived relations rebuilt for a split.

A folder that ``kgrec demo generate`` (:mod:`kgrec.demo_shop`) wrote is in the kgrec layout and
is read as one; it also holds ``demo_shop.json``, the spec that made it. Its ``also_bought``,
``bought_together`` and ``also_viewed`` triples (:data:`kgrec.demo_shop.EVENT_RELATIONS`) are
counted from its events, so it declares them as derived (:class:`kgrec.datasets.DerivedKnowledge`)
and rebuilds them without a split's held-out pairs (:func:`kgrec.demo_shop.event_links`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from pathlib import Path

from kgrec.datasets.layout import LayoutDataset
from kgrec.datasets.records import TripleRecord
from kgrec.demo_shop import EVENT_RELATIONS, event_links

MANIFEST = "demo_shop.json"


class DemoShopDataset(LayoutDataset):
    """A demo shop's folder: read as the kgrec layout, its co-occurrence relations derived from its events."""

    derived_relations: tuple[str, ...] = EVENT_RELATIONS

    @staticmethod
    def recognises(folder: Path) -> bool:
        """Whether ``folder`` is a demo shop: it holds the generator's ``demo_shop.json``."""
        return (Path(folder) / MANIFEST).exists()

    def derived_triples(self, held_out: Iterable[tuple[str, str]]) -> Iterator[TripleRecord]:
        """The shop's :data:`~kgrec.demo_shop.EVENT_RELATIONS` triples rebuilt from the events of every
        (user, item) pair but the ``held_out`` ones (the events, with the sessions and bot flags the
        files do not keep, are generated again from ``demo_shop.json``'s spec)."""
        return (TripleRecord(*link) for link in event_links(self.folder, held_out))
