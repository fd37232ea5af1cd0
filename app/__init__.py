"""The kgrec REST API: a Flask application factory."""

from __future__ import annotations

from flask import Flask

from app.audiences import bp as audiences_bp
from app.auth import install_access_control
from app.browse import bp as browse_bp
from app.catalogue import bp as catalogue_bp
from app.console import bp as console_bp
from app.errors import register_error_handlers
from app.events import bp as events_bp
from app.experiments import bp as experiments_bp
from app.graph import init_graph
from app.health import bp as health_bp
from app.impressions import bp as impressions_bp
from app.items import bp as items_bp
from app.jobs import bp as jobs_bp
from app.metrics import install_metrics
from app.models import bp as models_bp
from app.openapi import bp as openapi_bp
from app.raw_path import install_raw_path_routing
from app.recommendations import bp as recommendations_bp
from app.rules import bp as rules_bp
from app.topics import bp as topics_bp
from app.users import bp as users_bp
from kgrec.config import Settings
from kgrec.limits import MAX_BODY_BYTES


def create_app(settings: Settings | None = None) -> Flask:
    """Build the Flask app; one graph gateway per process, opened on first use."""
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES  # a bigger body is refused with 413
    install_access_control(app)  # first: a request without a key is a 401 before its path ids are read
    install_raw_path_routing(app)
    init_graph(app, settings or Settings.from_env())
    register_error_handlers(app)
    install_metrics(app)
    app.register_blueprint(health_bp)
    app.register_blueprint(events_bp)
    app.register_blueprint(jobs_bp)
    app.register_blueprint(models_bp)
    app.register_blueprint(recommendations_bp)
    app.register_blueprint(topics_bp)
    app.register_blueprint(items_bp)
    app.register_blueprint(impressions_bp)
    app.register_blueprint(experiments_bp)
    app.register_blueprint(catalogue_bp)
    app.register_blueprint(rules_bp)
    app.register_blueprint(audiences_bp)
    app.register_blueprint(users_bp)
    app.register_blueprint(browse_bp)
    app.register_blueprint(console_bp)
    app.register_blueprint(openapi_bp)
    return app
