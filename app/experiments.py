"""A/B experiments between model versions: create, read results, stop, promote."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, TypeVar

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel, ValidationError

from app.body import json_body
from app.catalogue import BODY_ERRORS
from app.endpoints import read_endpoint, write_endpoint
from app.errors import ApiError
from app.experiment_schemas import (
    ExperimentList,
    ExperimentListQuery,
    ExperimentResults,
    ExperimentView,
    NewExperiment,
    Promotion,
)
from app.graph import graph, serving, settings
from app.impressions import impression_store, running_experiment
from app.schemas import Error
from kgrec.catalogue import error_problems
from kgrec.errors import NotFound
from kgrec.experiments import (
    ACTIVE,
    PROMOTION_LEASE_MS,
    Experiment,
    ExperimentConflict,
    ExperimentStore,
    Variant,
    results,
)
from kgrec.limits import MAX_SIDE_VERSIONS
from kgrec.model_versions import VersionNotReady, active_lineage, list_versions
from kgrec.serving import now_ms

bp = Blueprint("experiments", __name__)
Body = TypeVar("Body", bound=BaseModel)

NOT_FOUND = {"HTTP_404": (Error, "no such experiment")}


def _body(model: type[Body]) -> Body:
    """The JSON body as ``model``; else 422 naming the first field at fault."""
    try:
        return model.model_validate(json_body())
    except ValidationError as exc:
        problem = error_problems(exc, indexed=False)[0]
        raise ApiError(
            422,
            "validation_failed",
            f"{problem.field}: {problem.reason}",
            problem.field,
            errors=[problem.as_dict()],
        ) from None


def _store() -> ExperimentStore:
    return ExperimentStore(impression_store())


def _experiment(experiment_id: str) -> Experiment:
    found = _store().get(experiment_id)
    if found is None:
        raise NotFound("experiment_id", experiment_id, f"no experiment with id {experiment_id!r}")
    return found


def _checked_variants(body: NewExperiment) -> list[Variant]:
    """Distinct names, shares adding up to 1, at most MAX_SIDE_VERSIONS versions besides the active
    one, ready model versions (else 422 naming the field), each with its artifact file (else 409
    naming the field, as promoting the version would be)."""
    names = [v.name for v in body.variants]
    if len(set(names)) != len(names):
        raise ApiError(422, "validation_failed", f"variant names must be distinct: {names}", "variants")
    total = sum(v.traffic for v in body.variants)
    if abs(total - 1.0) > 1e-6:
        raise ApiError(422, "validation_failed", f"traffic must add up to 1 (got {total:g})", "variants")
    ready = {v["version"]: v for v in list_versions(graph(), settings().data_dir) if v["status"] != "writing"}
    active = {name for name, view in ready.items() if view["status"] == "active"}
    side = {v.model_version for v in body.variants} - {ACTIVE} - active
    if len(side) > MAX_SIDE_VERSIONS:
        # each serving process keeps that many loaded besides the active one: more would evict each
        # other, and requests would keep reading artifacts of about 0.2 GB again
        raise ApiError(
            422,
            "validation_failed",
            f"the variants name {len(side)} distinct model versions besides the active one; at most "
            f"{MAX_SIDE_VERSIONS} (what each serving process keeps loaded)",
            "variants",
        )
    for index, variant in enumerate(body.variants):
        if variant.model_version == ACTIVE:
            continue
        view = ready.get(variant.model_version)
        if view is None:
            raise ApiError(
                422,
                "validation_failed",
                f'no ready model version {variant.model_version!r} (or use "active")',
                f"variants.{index}.model_version",
            )
        if view["artifact"] and view["artifact_bytes"] is None:
            # as POST /v1/models/{version}/promote refuses it: every request of the variant would fail
            raise ApiError(
                409,
                "conflict",
                f"model version {variant.model_version} has no artifact file {view['artifact']} in the "
                "models folder; it cannot be served",
                f"variants.{index}.model_version",
            )
    return [Variant(v.name, v.model_version, v.traffic) for v in body.variants]


@write_endpoint(
    bp,
    "POST",
    "/v1/experiments",
    ExperimentView,
    "running: every serving process assigns users within about a second",
    {
        **BODY_ERRORS,
        "HTTP_409": (
            Error,
            "another experiment is running or a promotion is under way, or a variant's model version"
            " has no artifact file",
        ),
        "HTTP_422": (Error, "an invalid field (named in `field`)"),
    },
    body=NewExperiment,
)
def create_experiment() -> Response:
    """Start an experiment between model versions; users are split by hashing (experiment, user).

    The first variant is the control. A user's variant is sticky for the experiment's life, and
    recommendations and similar items (with `user_id`) carry `experiment` and `variant`.
    """
    body = _body(NewExperiment)
    variants = _checked_variants(body)
    try:
        experiment = _store().create(body.name, variants, body.unit, int(now_ms()))
    except ExperimentConflict as exc:
        raise ApiError(409, "conflict", exc.detail) from None
    running_experiment().stale()
    return jsonify(experiment.as_dict())


@read_endpoint(bp, "/v1/experiments", ExperimentList, "experiments, newest first")
def list_experiments(query: ExperimentListQuery) -> Response:
    """Every experiment's definition and state (running or stopped), newest first, a page at a time
    (``cursor``: the previous page's ``next_cursor``); results are per id."""
    store = _store()
    after = None
    if query.cursor:
        created_at, experiment_id = query.cursor.split(":", 1)
        after = (int(created_at), experiment_id)
    # One more than the page: whether another page follows, without a count of every experiment.
    found = store.list_experiments(query.status or None, query.limit + 1, after)
    page, more = found[: query.limit], len(found) > query.limit
    next_cursor = f"{page[-1].created_at}:{page[-1].id}" if more else None
    return jsonify(
        {
            "experiments": [x.as_dict() for x in page],
            "running": store.running_id(),
            "next_cursor": next_cursor,
        }
    )


@read_endpoint(
    bp,
    "/v1/experiments/<experiment_id>",
    ExperimentResults,
    "per variant: users, impressions, rates with 95% intervals, and the difference from the control",
    NOT_FOUND,
    experiment_id="the experiment's id",
)
def get_experiment(experiment_id: str) -> Response:
    """Results so far: CTR, add-to-cart rate, conversion and revenue per impression per variant.

    Rates are per impression (impressions with at least one attributed click, cart, purchase),
    with Wilson 95% intervals; each variant's difference from the control has a 95% interval and
    the two-sided p-value of a z-test with the user as the unit (delta method), from one standard
    error; ``sample_ratio_p`` tests the users per variant against the traffic shares.
    """
    experiment = _experiment(experiment_id)
    store = _store()
    return jsonify(results(experiment, store.counters(experiment), store.user_sums(experiment)))


@write_endpoint(
    bp,
    "POST",
    "/v1/experiments/<experiment_id>/stop",
    ExperimentView,
    "stopped",
    {**NOT_FOUND, "HTTP_409": (Error, "the experiment is being promoted by another request")},
    experiment_id="the experiment's id",
)
def stop_experiment(experiment_id: str) -> Response:
    """Stop it: users get the active model again; results stay readable. Stopping twice is harmless.

    A promotion claimed and never finished (the process promoting it died; the claim is older than
    ``PROMOTION_LEASE_MS``) is carried out instead, as a second promotion of that variant would; if
    its version cannot be activated, or another was activated since the claim, the experiment is
    stopped unpromoted.
    """
    store = _store()
    experiment = _experiment(experiment_id)
    claimed_at = store.claimed_at(experiment_id) if experiment.promoted else None
    if experiment.promoted and claimed_at is not None:
        claimed, claim = store.claim_promotion(experiment, experiment.promoted)
        if claim == -2:
            raise _under_way(experiment_id, experiment.promoted["variant"])
        if claim == 2:
            before = store.before_claim(claimed)
            try:
                return jsonify(_carry_out(store, claimed, before, resumed=claimed_at).as_dict())
            except ApiError:
                experiment = store.get(experiment_id) or before  # put back: stop it as usual
    stopped = store.stop(experiment)
    running_experiment().stale()
    return jsonify(stopped.as_dict())


@write_endpoint(
    bp,
    "POST",
    "/v1/experiments/<experiment_id>/promote",
    ExperimentView,
    "the variant's model version is active (all processes within about a second); the experiment is stopped",
    {
        **BODY_ERRORS,
        **NOT_FOUND,
        "HTTP_409": (
            Error,
            "the experiment was promoted before, or is being promoted by another request, or it is "
            "stopped while another runs, or the variant's model version cannot be activated (still "
            "being written, its artifact file is missing, or it was garbage-collected), or a resumed "
            "promotion found another version activated since its claim",
        ),
        "HTTP_422": (Error, "no such variant (`field`: variant)"),
    },
    body=Promotion,
    experiment_id="the experiment's id",
)
def promote_experiment(experiment_id: str) -> Response:
    """Make a variant's model version the active one (one graph statement), and stop the experiment."""
    experiment = _experiment(experiment_id)
    name = _body(Promotion).variant
    variant = experiment.variant(name)
    if variant is None:
        raise ApiError(
            422, "validation_failed", f"experiment {experiment_id} has no variant {name!r}", "variant"
        )
    # A stopped experiment may still be promoted (stop, read the results, promote the winner), but
    # once only, and not while another experiment runs: its `active` control would change under it.
    # The checks are made again by the claim, in one script, so that of two promotions of different
    # variants at once one goes on, and no experiment starts while the version is being activated.
    # A claim of this variant left unfinished (its process died) is carried out now.
    store = _store()
    promoted = {"variant": name, "model_version": variant.model_version, "activated_at": None}
    claimed_at = store.claimed_at(experiment_id)  # an unfinished claim's, before a take-over re-stamps it
    claimed, claim = store.claim_promotion(experiment, promoted)
    if claim == 0:
        done = store.get(experiment_id) or experiment
        first = f" ({done.promoted['variant']!r})" if done.promoted else ""
        raise ApiError(
            409,
            "conflict",
            f"experiment {experiment_id} was already promoted{first}; "
            "activate another model version with POST /v1/models/{version}/promote",
            "experiment_id",
        )
    if claim == -2:
        raise _under_way(experiment_id, name)
    if claim < 0:
        raise ApiError(
            409,
            "conflict",
            f"experiment {experiment_id} is stopped and experiment {store.running_id()} is running: "
            "promoting now would change the model that experiment's 'active' variants serve",
            "experiment_id",
        )
    if claim == 2:
        before = store.before_claim(claimed)
        return jsonify(_carry_out(store, claimed, before, resumed=claimed_at or 0).as_dict())
    return jsonify(_carry_out(store, claimed, experiment).as_dict())


def _under_way(experiment_id: str, variant: str) -> ApiError:
    return ApiError(
        409,
        "conflict",
        f"experiment {experiment_id} is being promoted ({variant!r}) by another request; if that "
        f"request died, send the promotion or the stop again after {PROMOTION_LEASE_MS // 60_000} minutes",
        "experiment_id",
    )


def _carry_out(
    store: ExperimentStore, claimed: Experiment, before: Experiment, resumed: int | None = None
) -> Experiment:
    """Activate the claimed promotion's version and record the promotion as finished (the
    experiment no longer runs); returns the record. When the version cannot be activated, the
    experiment is put back as ``before`` and the answer is 409.

    ``resumed``: when the claim was made (epoch ms) by a request that did not finish it; a version
    active already, or an incremental descendant of it (it got as far as the activation), is
    recorded as it is, not activated again, and another version activated since the claim (by
    hand, or the gate) is not replaced: the answer is then a 409.
    """
    assert claimed.promoted is not None  # a claim records the promotion
    promoted = dict(claimed.promoted)
    try:
        if promoted["model_version"] != ACTIVE:
            version = None if resumed is None else _resumed_view(promoted["model_version"], resumed)
            version = version or serving().promote(promoted["model_version"])
            promoted.update(model_version=version["version"], activated_at=version["activated_at"])
    except BaseException as exc:
        store.undo_promotion(claimed, before)  # as it was: running again, or stopped
        if isinstance(exc, VersionNotReady):
            raise ApiError(409, "conflict", exc.detail, "variant") from None
        if isinstance(exc, NotFound):  # the variant's version, garbage-collected: the experiment exists
            raise ApiError(
                409,
                "conflict",
                f"variant {promoted['variant']!r}'s model version {promoted['model_version']} no longer "
                "exists (garbage-collected); it cannot be promoted",
                "variant",
            ) from None
        raise
    done = replace(claimed, promoted=promoted)
    store.finish_promotion(done)
    running_experiment().stale()
    return done


def _resumed_view(version: str, claimed_at: int) -> dict[str, Any] | None:
    """The view of the active version when the resumed promotion activated ``version`` already (it
    or an incremental descendant of it is active); None when it is still to be activated. A 409
    when another version was activated since the claim (``claimed_at``, epoch ms)."""
    active, ancestry = active_lineage(graph(), settings().data_dir)
    if active is None:
        return None
    if version in ancestry:  # it, or an incremental version made from it, is active
        return active
    if (active["activated_at"] or 0) >= claimed_at:
        raise ApiError(
            409,
            "conflict",
            f"model version {active['version']} was activated after this promotion was claimed and "
            f"is kept; the experiment is put back unpromoted: promote it again to activate {version}",
            "experiment_id",
        )
    return None
