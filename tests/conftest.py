"""Shared fixtures: a real embedded graph server (or Neo4j when NEO4J_URI is set), real data."""

from __future__ import annotations

import contextlib
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.maintenance import clear_graph
from kgrec.migrations import migrate
from kgrec.runtime import embedded_server
from tests.processes import ApiProcess
from tests.subsets import beauty_graph
from workers.training.config import TrainConfig
from workers.training.job import run_training

REPO = Path(__file__).resolve().parent.parent
SHARED_DATA = Path(
    os.environ.get("KGREC_DATASETS_DIR")
    or os.environ.get("KGREC_SHARED_DATA_DIR")
    or REPO.parent / "shared" / "data"
)
ON_NEO4J = bool(os.environ.get("NEO4J_URI"))

embedded_only = pytest.mark.skipif(ON_NEO4J, reason="manages the embedded FalkorDB server")


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """The real data sets (never copied into the repository)."""
    if not (SHARED_DATA / "amazon-beauty-kg").is_dir():
        pytest.fail(f"real data not found at {SHARED_DATA}; set KGREC_DATASETS_DIR")
    return SHARED_DATA


@pytest.fixture(scope="session")
def settings(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for the test session: Neo4j from the environment, else a fresh data dir."""
    base = Settings.from_env()
    return base.with_overrides(data_dir=tmp_path_factory.mktemp("kgrec-data"), datasets_dir=SHARED_DATA)


@pytest.fixture(scope="session")
def graph_server(settings: Settings) -> Iterator[EmbeddedServer | None]:
    """The session's embedded graph server (None on Neo4j)."""
    if not settings.embedded:
        yield None
        return
    server = EmbeddedServer(settings.data_dir, settings.aof_fsync)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def own_server(tmp_path: Path) -> Iterator[tuple[EmbeddedServer, Settings]]:
    """Graph and impressions servers of the test's own (to kill), with their settings."""
    settings = Settings(data_dir=tmp_path / "var")
    server = embedded_server(settings)
    server.start()
    try:
        yield server, settings
    finally:
        server.stop()


@contextlib.contextmanager
def migrated_graph(settings: Settings, prefix: str) -> Iterator[GraphGateway]:
    """A migrated, empty graph: its own graph on FalkorDB, a wiped database on Neo4j; emptied afterwards."""
    name = f"{prefix}_{uuid.uuid4().hex[:12]}" if settings.embedded else None
    gw = open_gateway(settings, graph_name=name)
    clear_graph(gw)
    migrate(gw)
    try:
        yield gw
    finally:
        clear_graph(gw)
        gw.close()


@pytest.fixture
def gateway(settings: Settings, graph_server: EmbeddedServer | None) -> Iterator[GraphGateway]:
    """A migrated, empty graph for one test."""
    with migrated_graph(settings, "test") as gw:
        yield gw


@pytest.fixture
def broker_graph(
    settings: Settings, graph_server: EmbeddedServer | None
) -> Iterator[tuple[dict[str, str], Settings, GraphGateway]]:
    """A migrated graph of its own on the session server, with the env a worker or API needs for it."""
    if not settings.embedded:
        pytest.skip("uses the embedded redis-server as the Celery broker")
    graph_name = f"g_{uuid.uuid4().hex[:10]}"
    gw = open_gateway(settings, graph_name=graph_name)
    migrate(gw)
    env = {**os.environ, "KGREC_DATA_DIR": str(settings.data_dir), "KGREC_GRAPH": graph_name}
    yield env, Settings.from_env(env), gw
    gw.close()


SMALL_API_KEY = "small-api-key"


@contextlib.contextmanager
def served_subset(
    settings: Settings,
    shared_data: Path,
    tmp: Path,
    *,
    users: int,
    prefix: str,
    key: str,
    versions: tuple[str, ...] = ("small",),
) -> Iterator[ApiProcess]:
    """gunicorn on a graph of its own: the first ``users`` Amazon Beauty users and one quickly trained
    model per version (the last one active). The process carries ``graph_name``."""
    local, gateway = beauty_graph(settings, shared_data, tmp, users=users, prefix=prefix)
    with gateway:
        for version in versions:
            # Tests that are not about the blend train without the ease signal: its λ walk inverts
            # an items × items matrix per λ (items³), minutes per suite; tests/test_training.py,
            # test_promotion_gate.py and test_topics.py train with it.
            run_training(gateway, local, TrainConfig(epochs=1, use_ease=False), device="cpu", version=version)
    api = ApiProcess(
        {"KGREC_DATA_DIR": str(local.data_dir), "KGREC_GRAPH": local.graph_name, "KGREC_API_KEYS": key},
        log=tmp / "api.log",
    ).start()
    api.graph_name = local.graph_name  # type: ignore[attr-defined]
    try:
        yield api
    finally:
        api.stop()


@pytest.fixture(scope="session")
def small_api(
    settings: Settings,
    graph_server: EmbeddedServer | None,
    shared_data: Path,
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[ApiProcess]:
    """gunicorn on its own graph: 100 Amazon Beauty users and a quickly trained model (shared, mutable)."""
    if not settings.embedded:
        pytest.skip("runs its own API on the embedded graph")
    tmp = tmp_path_factory.mktemp("small-api")
    with served_subset(settings, shared_data, tmp, users=100, prefix="small", key=SMALL_API_KEY) as api:
        yield api


@pytest.fixture
def sessions_redis(settings: Settings, graph_server: EmbeddedServer | None) -> str:
    """A running Redis for the console's session nonces (the test session's graph server, or
    REDIS_URL on Neo4j), for an app whose own graph stays away (its data directory has no server)."""
    info = graph_server.running() if graph_server is not None else None
    url = info.redis_url() if info is not None else settings.redis_url
    assert url, "on Neo4j the tests need REDIS_URL"
    return url
