"""Name search on the graph server: a name is found by any casing of a word in it, whatever the
script, the same on every engine (kgrec.browse.SEARCH_FOLDS)."""

from __future__ import annotations

import pytest

from kgrec.browse import search
from kgrec.gateway import GraphGateway


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ("ξηρες", "greek-cream"),  # FalkorDB lower-cased the title's final Σ to σ, Python to ς
        ("ΞΗΡΕΣ", "greek-cream"),
        ("ξηρεσ", "greek-cream"),
        ("ΠΑΠΑΔΟΠΟΥΛΟΣ", "papadopoulos"),  # a brand's whole name
        ("İpek", "turkish-shampoo"),  # Python lower-cases İ to i and a combining dot, FalkorDB to i
        ("ipek", "turkish-shampoo"),
        ("şampuan", "turkish-shampoo"),
        ("z\u0307o\u0142w", "polish-turtle"),  # a dot over another letter is kept: ż (NFD) is not z
        ("zo\u0142w", None),
    ],
)
def test_a_name_is_found_by_any_casing_of_its_words(
    gateway: GraphGateway, query: str, found: str | None
) -> None:
    gateway.run_query(
        "CREATE (:Item {id: 'greek-cream', title: 'ΚΡΕΜΑ ΓΙΑ ΞΗΡΕΣ ΕΠΙΔΕΡΜΙΔΕΣ'}), "
        "(:Item {id: 'turkish-shampoo', title: 'İPEK Şampuan'}), "
        "(:Brand {id: 'papadopoulos', name: 'ΑΦΟΙ ΠΑΠΑΔΟΠΟΥΛΟΣ'}), "
        "(:Item {id: 'polish-turtle', title: $turtle})",
        {"turtle": "Z\u0307O\u0141W"},
    )
    hits = search(gateway, query, ["item", "brand"], 10)["results"]
    assert [hit["id"] for hit in hits] == ([found] if found else [])
