"""The Neo4j adapter's error mapping, without a server (none can be installed here): the driver is
created lazily, so a gateway to an unreachable address can be built and its guard exercised."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Iterator

import pytest
from neo4j.exceptions import ConnectionAcquisitionTimeoutError, IncompleteCommit, Neo4jError

from graph_schema.statements.admin import LABEL_COUNTS
from kgrec.gateway.base import GraphQueryError, GraphTimeout, GraphUnavailable
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


@pytest.fixture
def silent_server() -> Iterator[int]:
    """A port that accepts connections and never answers: a stalled Neo4j host."""
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[socket.socket] = []

    def accept() -> None:
        with contextlib.suppress(OSError):  # closed at the end
            while True:
                accepted.append(listener.accept()[0])

    threading.Thread(target=accept, daemon=True).start()
    yield listener.getsockname()[1]
    listener.close()
    for connection in accepted:
        connection.close()


def test_a_bounded_gateway_gives_up_on_a_server_that_does_not_answer(silent_server: int) -> None:
    # The driver alone waits 60 s per connection attempt and retries a managed transaction for 30 s.
    gateway = Neo4jGateway(f"bolt://127.0.0.1:{silent_server}", "neo4j", "secret", "neo4j", timeout_s=4)
    try:
        started = time.monotonic()
        with pytest.raises(GraphUnavailable, match="Neo4j unavailable"):
            gateway.read(LABEL_COUNTS)
        assert time.monotonic() - started < 20
    finally:
        gateway.close()


@pytest.mark.parametrize("scheme", ["bolt", "neo4j"])
def test_a_command_s_probe_through_the_gateway_gives_up_within_its_bound(
    silent_server: int, scheme: str
) -> None:
    """A command probed Neo4j with a second driver of its own before opening its gateway. The probe
    now goes through the gateway's driver, unbounded (the driver waits 60 s for a connection):
    only the probe's session is bounded."""
    uri = f"{scheme}://127.0.0.1:{silent_server}"
    gateway = Neo4jGateway(uri, "neo4j", "secret", "kgrec")
    try:
        started = time.monotonic()
        with pytest.raises(GraphUnavailable, match=f"^Neo4j at {uri} is not reachable: "):
            gateway.verify_reachable(2.0)
        assert time.monotonic() - started < 6
    finally:
        gateway.close()


def test_a_transaction_the_server_timed_out_is_a_timeout() -> None:
    gateway = Neo4jGateway("neo4j://127.0.0.1:9", "neo4j", "secret", "neo4j", timeout_s=2.5)
    try:
        # Each transaction function carries the bound for the server to enforce.
        assert gateway._bounded(lambda tx: None).timeout == 2.5

        def timed_out() -> None:
            raise Neo4jError._hydrate_neo4j(
                code="Neo.ClientError.Transaction.TransactionTimedOutClientConfiguration",
                message="The transaction has been terminated.",
            )

        with pytest.raises(GraphTimeout, match=r"did not finish within 2\.5 s"):
            gateway._guard(timed_out)
    finally:
        gateway.close()


def test_a_pool_without_a_free_connection_is_unavailable_and_a_lost_commit_may_have_landed() -> None:
    gateway = Neo4jGateway("neo4j://127.0.0.1:9", "neo4j", "secret", "neo4j", timeout_s=2)
    try:

        def no_connection() -> None:
            raise ConnectionAcquisitionTimeoutError("failed to obtain a connection from the pool within 1.0s")

        def lost_commit() -> None:
            raise IncompleteCommit("Connection failure during commit")

        with pytest.raises(GraphUnavailable, match="Neo4j unavailable") as refused:
            gateway._guard(no_connection)
        assert not isinstance(refused.value, GraphTimeout)  # nothing was sent: "nothing was written"
        with pytest.raises(GraphTimeout, match="answer to a commit was lost"):
            gateway._guard(lost_commit)
    finally:
        gateway.close()
