"""Opening the configured graph for a command: reuse a running server, or start one for the duration."""

from __future__ import annotations

import contextlib
import os
import threading
from collections.abc import Iterator

from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.migrations import migrate


def embedded_server(settings: Settings) -> EmbeddedServer:
    """The embedded server that owns ``settings.data_dir``."""
    return EmbeddedServer(
        settings.data_dir, settings.aof_fsync, settings.graph_threads, settings.impressions_fsync
    )


@contextlib.contextmanager
def graph_session(settings: Settings, *, apply_migrations: bool = False) -> Iterator[GraphGateway]:
    """A gateway to the configured graph.

    In embedded mode, a server already running for the data directory is used;
    otherwise one is started for this command and shut down cleanly afterwards.
    """
    started_here = False
    if settings.embedded:
        server = embedded_server(settings)
        if server.running() is None:
            server.start()
            started_here = True
    gateway = open_gateway(settings)
    try:
        check_neo4j(gateway)
        if apply_migrations:
            migrate(gateway)
        yield gateway
    finally:
        gateway.close()
        if started_here:
            embedded_server(settings).stop()


NEO4J_CHECK_TIMEOUT_S = 5.0


def check_neo4j(gateway: GraphGateway, timeout_s: float = NEO4J_CHECK_TIMEOUT_S) -> None:
    """A command's check that Neo4j answers (:class:`~kgrec.gateway.GraphUnavailable` in one line
    after about ``timeout_s`` if not), through the gateway's own driver before its first call,
    which would retry for a minute (:meth:`~kgrec.gateway.GraphGateway.verify_reachable`)."""
    gateway.verify_reachable(timeout_s)


class ProcessGateway:
    """One gateway per process, opened on first use.

    Servers fork (gunicorn, Celery's prefork pool) after the object is built: a
    gateway inherited from another process is left alone and a new one opened,
    since two processes must never share one connection.
    """

    def __init__(self, settings: Settings, timeout_s: float | None = None) -> None:
        self.settings = settings
        self.timeout_s = timeout_s  # per graph call (see open_gateway); None: the engine's batch default
        self._gateway: GraphGateway | None = None
        self._pid = 0
        self._lock = threading.Lock()

    def get(self) -> GraphGateway:
        """This process's gateway."""
        with self._lock:
            if self._gateway is None or self._pid != os.getpid():
                self._gateway = open_gateway(self.settings, timeout_s=self.timeout_s)
                self._pid = os.getpid()
            return self._gateway

    def close(self) -> None:
        """Close this process's gateway, if it opened one (the next :meth:`get` opens a new one)."""
        with self._lock:
            if self._gateway is not None and self._pid == os.getpid():
                self._gateway.close()
            self._gateway = None
