"""The console's pages and its forms (sign in and out, train, promote, stop an experiment, export).

Pages are server-rendered shells; their JavaScript reads the public JSON API
(``/v1/...``) like any client. The forms check the session's CSRF token and the
origin (:mod:`app.console.session`) and send the write to the API with the
signed-in key (:mod:`app.console.forward`).
"""

from __future__ import annotations

from typing import Any

from flask import Blueprint, Response, jsonify, redirect, render_template, request, url_for
from pydantic import ValidationError

from app.auth import key_is_valid, some_read_needs_a_key
from app.console import session
from app.console.forward import api_path, call_api, decoded, relay, send
from app.graph import settings
from app.model_schemas import TrainRequest
from app.raw_path import relayed_path
from kgrec.browse import SEARCH_KINDS
from kgrec.limits import MAX_EPOCHS

bp = Blueprint(
    "console",
    __name__,
    url_prefix="/console",
    template_folder="templates",
    static_folder="static",
    static_url_path="/static",
)

# Scripts only from this origin (no inline script, no CDN); cytoscape and uPlot set inline styles.
CONTENT_SECURITY_POLICY = (
    "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'"
)

PAGES = (
    ("search", "Search"),
    ("audiences", "Audiences"),
    ("models", "Models"),
    ("experiments", "Experiments"),
    ("health", "Health"),
)
AUDIENCE_TARGETS = ("brand", "category", "topic", "item")
API_PROXY = "/console/api/v1"


@bp.after_request
def _protect(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CONTENT_SECURITY_POLICY
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    if response.mimetype == "text/html":
        response.headers["Cache-Control"] = "no-store"
    return session.save(response)


@bp.errorhandler(session.Refused)
def _refused(error: session.Refused) -> tuple[str, int]:
    html = page("console/refused.html", "Refused", reason=error.reason)
    # A refused (perhaps cross-site) post never replaces the session cookie: it cannot sign anyone out.
    session.current().changed = False
    return html, error.status


def page(template: str, title: str, **context: Any) -> str:
    """Render a console page with what every page needs (nav, sign-in state, CSRF token)."""
    signed_in = session.signed_in_key() is not None
    return render_template(
        template,
        title=title,
        pages=PAGES,
        signed_in=signed_in,
        # Where reads need a key (some do once admin keys are set: those that list users), a signed-in
        # console reads through /console/api (it adds the key).
        api_base=API_PROXY if signed_in and some_read_needs_a_key(settings()) else "/v1",
        csrf_token=session.current().csrf,
        notice=session.take_notice(),
        **context,
    )


@bp.get("/")
def home() -> Response:
    """The console starts at search."""
    return redirect(url_for("console.search"))


# The search page's kinds (every kind the API searches), as the drop-down names them.
_KIND_NAMES = [
    (kind, {"category": "categories", "entity": "entities"}.get(kind, f"{kind}s")) for kind in SEARCH_KINDS
]


@bp.get("/search")
def search() -> str:
    """Find users, items, brands, categories and entities."""
    return page("console/search.html", "Search", query=request.args.get("q", ""), kinds=_KIND_NAMES)


@bp.get("/users/<path:user_id>")
def user(user_id: str) -> str:
    """A user's interests, latest interactions and recommendations, with "why?"."""
    return page("console/user.html", f"User {user_id}", user_id=user_id)


@bp.get("/items/<path:item_id>")
def item(item_id: str) -> str:
    """An item's fields, neighbourhood, similar items and the rules that touch it."""
    return page("console/item.html", f"Item {item_id}", item_id=item_id)


def _audience_form() -> dict[str, str]:
    """The audience conditions as the form sent them (GET for the page, POST for the export)."""
    values = request.values
    kind = values.get("kind", "brand")
    return {
        "kind": kind if kind in AUDIENCE_TARGETS else "brand",
        "target": values.get("target", "").strip(),
        "min_weight": values.get("min_weight", "").strip(),
        "active_within_days": values.get("active_within_days", "").strip(),
    }


@bp.get("/audiences")
def audiences() -> str:
    """Users by their interest in a brand, category, topic or item; CSV export when signed in."""
    return page("console/audiences.html", "Audiences", form=_audience_form(), targets=AUDIENCE_TARGETS)


@bp.post("/audiences/export")
def export_audience() -> Response:
    """The whole audience as CSV, through ``POST /v1/audiences/export`` (it lists users: a key is needed)."""
    session.check_post()
    key = _signed_in_key()
    form = _audience_form()
    body: dict[str, Any] = {form["kind"]: form["target"]}
    for name in ("min_weight", "active_within_days"):
        if form[name]:
            body[name] = form[name]
    status, mimetype, data = send("POST", api_path("audiences", "export"), key, body)
    if status == 200 and mimetype == "text/csv":
        disposition = f'attachment; filename="audience-{form["kind"]}.csv"'
        return Response(data, mimetype="text/csv", headers={"Content-Disposition": disposition})
    session.set_notice(_outcome("Export", status, decoded(data)))
    return redirect(url_for("console.audiences", **form))


@bp.get("/models")
def models() -> str:
    """Model versions, promotion and training."""
    return page("console/models.html", "Models", job_id=request.args.get("job", ""), max_epochs=MAX_EPOCHS)


@bp.get("/health")
def health() -> str:
    """Graph, model, request rates and latency."""
    return page("console/health.html", "Health")


@bp.get("/api/v1/<path:_rest>")
def read_proxy(_rest: str) -> Response | tuple[Response, int]:
    """A GET of the API with the signed-in key, for servers whose reads need one (KGREC_READ_REQUIRES_KEY, or
    KGREC_ADMIN_KEYS for the reads that list users).

    The answer is the API's own (status, body, Retry-After: the Models page waits for it). ``_rest``
    is an API path, checked segment by segment once the session is known to be signed in (a signed-out
    request is a 401 whatever its path holds, as the API's own); the API checks it again.
    """
    key = session.signed_in_key()
    if key is None:
        return jsonify(error="unauthorized", detail="sign in to the console to read through it"), 401
    relayed_path(_rest)
    # gunicorn's raw request target keeps percent-encoded ids (a "/" inside an id) in one segment.
    raw = (request.environ.get("RAW_URI") or request.path).split("?", 1)[0]
    target = "/v1" + raw[len(API_PROXY) :]
    query = request.query_string.decode()
    return relay(f"{target}?{query}" if query else target, key)


@bp.get("/signin")
def signin_form() -> str:
    """The sign-in form."""
    return page("console/signin.html", "Sign in", next_page=_safe_next(request.args.get("next")))


def _safe_next(target: str | None) -> str:
    # Only a console path: never an open redirect.
    if target and target.startswith("/console/") and not target.startswith("//"):
        return target
    return url_for("console.search")


@bp.post("/signin")
def signin() -> Response | tuple[str, int]:
    """Check the key; on success the session remembers it (the key never reaches the page again)."""
    session.check_post()
    key = request.form.get("api_key", "").strip()
    if not key or not key_is_valid(key):
        back = _safe_next(request.form.get("next"))
        return page("console/signin.html", "Sign in", next_page=back, failed=True), 401
    session.sign_in(key)
    session.set_notice("Signed in.")
    return redirect(_safe_next(request.form.get("next")))


@bp.post("/signout")
def signout() -> Response:
    """Forget the key."""
    session.check_post()
    session.sign_out()
    session.set_notice("Signed out.")
    return redirect(url_for("console.search"))


def _signed_in_key() -> str:
    key = session.signed_in_key()
    if key is None:
        raise session.Refused(401, "refused: sign in with an API key to train, promote, stop or export")
    return key


def _outcome(action: str, status: int, payload: Any) -> str:
    # No route at all (404 without a field, or 405): the endpoint does not exist on this server.
    if status == 405 or (status == 404 and not (isinstance(payload, dict) and payload.get("field"))):
        return f"{action}: not available (this server has no such endpoint yet)"
    if status >= 400:
        detail = payload.get("detail") if isinstance(payload, dict) else None
        return f"{action} failed ({status}): {detail or 'no detail'}"
    return f"{action}: done."


def _post_to_api(action: str, path: str, body: Any = None) -> Any:
    """A console form's write: checks, the API call with the signed-in key, a notice; the answer or None."""
    session.check_post()
    key = _signed_in_key()
    status, payload = call_api("POST", path, key, body)
    session.set_notice(_outcome(action, status, payload))
    return payload if status < 400 else None


@bp.post("/models/<path:version>/promote")
def promote(version: str) -> Response:
    """Make ``version`` the active model, through ``POST /v1/models/{version}/promote``."""
    _post_to_api(f"Promote {version}", api_path("models", version, "promote"))
    return redirect(url_for("console.models"))


def _epochs_refusal(typed: str) -> str | None:
    """Why the typed epoch cap cannot go to the API (None when it can): the bounds are
    :class:`TrainRequest`'s own, so the form and the API never disagree."""
    shown = typed if len(typed) <= 20 else f"{typed[:20]}... ({len(typed)} characters)"
    if not typed.isdecimal():
        return f"Train refused: epochs = {shown} is not a whole number"
    # Over 20 digits stands in for any number too large: int() of thousands of digits raises.
    number = int(typed) if len(typed) <= 20 else 10**20
    try:
        TrainRequest.model_validate({"epochs": number})
    except ValidationError as error:
        return f"Train refused: epochs = {shown}: {error.errors()[0]['msg'].lower()}"
    return None


@bp.post("/models/train")
def train() -> Response:
    """Start a training job, through ``POST /v1/models/train``; the page then follows its progress.

    The form's epoch cap is checked against the API's own bounds (:class:`TrainRequest`) after
    the origin and CSRF checks, and refused with a notice naming the field and the value;
    "activate" is behind the promotion gate unless the form says "now".
    """
    # The origin and CSRF checks come before the form is read: a cross-site post learns nothing.
    session.check_post()
    _signed_in_key()
    body: dict[str, Any] = {"gate": request.form.get("activate", "gate") != "now"}
    epochs = request.form.get("epochs", "").strip()
    if epochs:
        refusal = _epochs_refusal(epochs)
        if refusal is not None:
            session.set_notice(refusal)
            return redirect(url_for("console.models"))
        body["epochs"] = int(epochs)
    answer = _post_to_api("Train", api_path("models", "train"), body=body)
    job = answer.get("id") if isinstance(answer, dict) else None
    if not job:
        return redirect(url_for("console.models"))
    session.set_notice(f"Train: queued as job {job}; a worker runs it, its progress shows below.")
    return redirect(url_for("console.models", job=job))


@bp.get("/experiments")
def experiments() -> str:
    """One experiment's results per variant, with intervals and p-values; stop and promote when signed in."""
    return page("console/experiments.html", "Experiments", experiment_id=request.args.get("id", "").strip())


@bp.post("/experiments/<path:experiment_id>/stop")
def stop_experiment(experiment_id: str) -> Response:
    """Stop the experiment, through ``POST /v1/experiments/{id}/stop``."""
    _post_to_api(f"Stop {experiment_id}", api_path("experiments", experiment_id, "stop"))
    return redirect(url_for("console.experiments", id=experiment_id))


@bp.post("/experiments/<path:experiment_id>/promote")
def promote_variant(experiment_id: str) -> Response:
    """Make a variant's model active, through ``POST /v1/experiments/{id}/promote``."""
    variant = request.form.get("variant", "")
    path = api_path("experiments", experiment_id, "promote")
    _post_to_api(f"Promote {variant or 'a variant'}", path, body={"variant": variant})
    return redirect(url_for("console.experiments", id=experiment_id))
