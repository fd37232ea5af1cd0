"""The Flask adapter of the serving core: one :class:`~kgrec.serving.Serving` per app, in its extensions."""

from __future__ import annotations

import time

from flask import Flask, current_app

from kgrec.config import Settings
from kgrec.errors import NoActiveModel
from kgrec.gateway import GraphGateway
from kgrec.serving import Serving
from kgrec.text_model import encode

_EXTENSION = "kgrec"


def init_graph(app: Flask, settings: Settings) -> None:
    """Attach kgrec's serving state (settings, graph gateway, active model) to ``app``."""
    app.extensions[_EXTENSION] = Serving(settings)


def serving() -> Serving:
    """The serving state of the current app."""
    return current_app.extensions[_EXTENSION]


def graph() -> GraphGateway:
    """The gateway of the current app."""
    return serving().gateway


def settings() -> Settings:
    """The settings of the current app."""
    return serving().settings


def warm_model(app: Flask) -> None:
    """Load the active model and its per-version state now (:meth:`Serving.warm`), so that this
    process's first requests do not wait for them.

    Best effort: with no model yet, or the graph away, the first request loads it instead.
    """
    try:
        app.extensions[_EXTENSION].warm()
    except NoActiveModel:
        pass  # nothing trained yet
    except Exception as exc:  # any failure only defers the load to the first request
        app.logger.warning("kgrec: active model not loaded at start (%s); the first request loads it", exc)


def warm_text_model(app: Flask) -> float | None:
    """Load the sentence-transformer now and embed one text, so that this process's first review,
    tag or search event does not wait 4-6 s for it; returns the seconds it took.

    Best effort: a model that cannot load is logged (None), and the first text event tries again
    (and, failing, is answered 500 as before); the worker serves everything else.
    """
    started = time.perf_counter()
    try:
        encode(["warm up"], offline=app.extensions[_EXTENSION].settings.hf_hub_offline)
    except Exception as exc:  # the worker starts without it
        app.logger.warning("kgrec: text model not loaded at start (%s); the first text event loads it", exc)
        return None
    return time.perf_counter() - started
