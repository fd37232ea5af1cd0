"""Business rules: ``POST /v1/rules``, ``GET /v1/rules``, ``DELETE /v1/rules/{rule_id}``."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.body import json_body
from app.catalogue import BODY_ERRORS
from app.endpoints import read_endpoint, write_endpoint
from app.errors import ApiError
from app.graph import serving
from app.schemas import Error, NewRule, RuleDeleted, RuleList, RuleView
from kgrec.rules import validate_rule

bp = Blueprint("rules", __name__)


@write_endpoint(
    bp,
    "POST",
    "/v1/rules",
    RuleView,
    "stored; every serving process applies it within a second",
    {**BODY_ERRORS, "HTTP_422": (Error, "an invalid rule, its problem in `errors`; nothing was written")},
    body=NewRule,
)
def post_rule() -> Response:
    """Create a rule (or replace the rule with the same `id`).

    `block` hides its targets; `boost` / `bury` multiply their scores by `factor`; `pin` puts one
    item at `position` for requests matching `when`. Rules apply after scoring, before paging.
    """
    rule, errors = validate_rule(json_body())
    if errors or rule is None:
        raise ApiError(
            422,
            "validation_failed",
            f"{len(errors)} problem(s) in the rule; nothing was written",
            errors=[e.as_dict() for e in errors],
        )
    return jsonify(serving().save_rule(rule))


@read_endpoint(bp, "/v1/rules", RuleList, "every rule")
def list_rules() -> Response:
    """Every stored rule, with whether it has started and whether it has ended."""
    return jsonify(serving().list_rules())


@write_endpoint(
    bp,
    "DELETE",
    "/v1/rules/<rule_id>",
    RuleDeleted,
    "deleted",
    {"HTTP_404": (Error, "no such rule")},
    rule_id="the rule",
)
def delete_rule(rule_id: str) -> Response:
    """Delete a rule; every serving process stops applying it within a second."""
    return jsonify(serving().delete_rule(rule_id))
