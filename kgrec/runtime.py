"""Opening the configured graph for a command: reuse a running server, or start one for the duration."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from kgrec.config import Settings
from kgrec.embedded import EmbeddedServer
from kgrec.gateway import GraphGateway, open_gateway
from kgrec.migrations import migrate


def embedded_server(settings: Settings) -> EmbeddedServer:
    """The embedded server that owns ``settings.data_dir``."""
    return EmbeddedServer(settings.data_dir, settings.aof_fsync)


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
        if apply_migrations:
            migrate(gateway)
        yield gateway
    finally:
        gateway.close()
        if started_here:
            embedded_server(settings).stop()
