"""The kgrec REST API: a Flask application factory."""

from __future__ import annotations

from flask import Flask

from app.errors import register_error_handlers
from app.graph import init_graph
from app.health import bp as health_bp
from kgrec.config import Settings


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app; one graph gateway per process, opened on first use."""
    app = Flask(__name__)
    init_graph(app, settings or Settings.from_env())
    register_error_handlers(app)
    app.register_blueprint(health_bp)
    return app
