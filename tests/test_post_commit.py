"""A committed write is answered as committed: what follows the commit (the fold-in request, the
rules' reload) cannot turn it into an error. Real embedded graph server, the serving core in process.

The failure after the commit is real, not a mock: the active version's artifact is not on disk, so
the fold-in request cannot read the active model (as when the graph cannot be read then).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest
from prometheus_client import REGISTRY

from kgrec.catalogue import CatalogueItem
from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.events.validation import validate_batch
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.maintenance import clear_graph
from kgrec.migrations import migrate
from kgrec.serving import Serving
from tests.conftest import embedded_only

pytestmark = embedded_only


@pytest.fixture
def unloadable_model(
    settings: Settings, graph_server: EmbeddedServer | None
) -> Iterator[tuple[Serving, GraphGateway]]:
    """A serving core on a graph of its own whose active version's artifact is missing."""
    name = f"post_commit_{uuid.uuid4().hex[:10]}"
    gateway = open_gateway(settings, graph_name=name)
    migrate(gateway)
    gateway.run_query(
        "CREATE (:ModelVersion {id: 'v-gone', active: true, status: 'ready', artifact: 'v-gone.npz'})", {}
    )
    core = Serving(settings.with_overrides(graph_name=name))
    try:
        yield core, gateway
    finally:
        core.close()
        clear_graph(gateway)
        gateway.close()


def failures(step: str) -> float:
    return REGISTRY.get_sample_value("kgrec_post_commit_failures_total", {"step": step}) or 0.0


def test_an_item_write_whose_fold_in_request_fails_is_answered_as_written(unloadable_model: tuple) -> None:
    core, gateway = unloadable_model
    before = failures("fold_in")
    answer = core.upsert_items([CatalogueItem(item_id="lamp-1", title="A desk lamp")])
    assert answer["items"] == 1
    assert gateway.run_query("MATCH (i:Item {id: 'lamp-1'}) RETURN i.title AS t", {}) == [
        {"t": "A desk lamp"}
    ]
    assert failures("fold_in") == before + 1


def test_an_event_batch_whose_fold_in_request_fails_is_answered_as_applied(unloadable_model: tuple) -> None:
    core, gateway = unloadable_model
    events, errors = validate_batch(
        [
            {
                "event_id": "pc-1",
                "user_id": "u1",
                "item_id": "new-item",
                "type": "purchase",
                "ts": 1_700_000_000_000,
            }
        ],
        max_skew_s=10**9,
    )
    assert errors == []
    before = failures("fold_in")
    assert core.ingest_events(events).applied == 1
    assert gateway.run_query("MATCH (e:Event {id: 'pc-1'}) RETURN count(e) AS n", {}) == [{"n": 1}]
    assert failures("fold_in") == before + 1
