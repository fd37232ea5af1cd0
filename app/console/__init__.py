"""The operator console at ``/console``: server-rendered pages over the public JSON API."""

from app.console.views import bp

__all__ = ["bp"]
