"""The Neo4j adapter's error mapping, without a server (none can be installed here): the driver is
created lazily, so a gateway to an unreachable address can be built and its guard exercised."""

from __future__ import annotations

import pytest

from kgrec.gateway.base import GraphQueryError, GraphUnavailable
from kgrec.gateway.neo4j_adapter import Neo4jGateway


@pytest.fixture
def gateway() -> Neo4jGateway:
    gw = Neo4jGateway("neo4j://127.0.0.1:9", "neo4j", "secret", "neo4j")
    yield gw
    gw.close()


def test_an_integer_the_driver_cannot_pack_is_a_query_error_not_a_crash(gateway: Neo4jGateway) -> None:
    def pack() -> None:
        raise OverflowError("Integer 10000000000000000000 out of range")  # the driver's packstream

    with pytest.raises(GraphQueryError, match="a parameter cannot be sent to Neo4j"):
        gateway._guard(pack)


def test_an_unreachable_server_is_unavailable(gateway: Neo4jGateway) -> None:
    with pytest.raises(GraphUnavailable, match="Neo4j unavailable"):
        gateway.run_query("RETURN 1 AS one", {})
