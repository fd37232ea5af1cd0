"""The per-process graph gateway of the API."""

from __future__ import annotations

import threading

from flask import Flask, current_app

from kgrec.config import Settings
from kgrec.gateway import GraphGateway, open_gateway

_EXTENSION = "kgrec"


class GraphExtension:
    """Holds the settings and lazily opens one gateway per process (gunicorn forks first)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._gateway: GraphGateway | None = None
        self._lock = threading.Lock()

    @property
    def gateway(self) -> GraphGateway:
        """The process's gateway, opened on first use."""
        with self._lock:
            if self._gateway is None:
                self._gateway = open_gateway(self.settings)
            return self._gateway


def init_graph(app: Flask, settings: Settings) -> None:
    """Attach kgrec's settings and graph gateway to ``app``."""
    app.extensions[_EXTENSION] = GraphExtension(settings)


def graph() -> GraphGateway:
    """The gateway of the current app."""
    return current_app.extensions[_EXTENSION].gateway


def settings() -> Settings:
    """The settings of the current app."""
    return current_app.extensions[_EXTENSION].settings
