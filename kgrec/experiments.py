"""A/B experiments between model versions: definitions, sticky assignment, counters and results.

Storage: next to the impressions they are measured on (:mod:`kgrec.impressions`, database 3
of the embedded server or of REDIS_URL's server), so definitions and counters share the
append-only file and its fsync:

* ``kgrec:<graph>:experiments``: a hash, experiment id -> its definition (JSON);
* ``kgrec:<graph>:experiment:running``: the id of the one running experiment;
* ``kgrec:<graph>:experiment:promoting``: a sorted set, the ids of the experiments whose promotion
  is claimed and neither finished nor undone, scored by the claim's time (its process may have
  died: past :data:`PROMOTION_LEASE_MS`, a promotion of the same variant, or a stop, carries it out);
* ``kgrec:<graph>:experiment:<id>:<variant>``: counters (``impressions``; ``click``, ``cart``,
  ``purchase``: impressions with at least one such attributed event; ``revenue`` and
  ``revenue_sq``: the sum, and the sum of squares, of each impression's attributed purchase
  value), kept exact because they are incremented in the same Lua script that records the
  impression or claims the event (:mod:`kgrec.attribution`);
* ``kgrec:<graph>:experiment:<id>:<variant>:users``: a HyperLogLog of the users served;
* ``kgrec:<graph>:experiment:<id>:<variant>:by-user:<metric>``: per-user totals (a hash, user id ->
  impressions, clicks, carts, purchases or revenue, see :data:`kgrec.impressions.PER_USER_METRICS`),
  written by the same scripts as the counters; an erasure deletes the user's fields. Beside the
  totals, fields prefixed ``\x01`` hold their sums over the users (:class:`UserSums`: users, Σn, Σn²
  in the impressions hash, Σx, Σx², Σx·n in each other metric's), updated in the same scripts (an
  erasure takes the user's totals out), so they expire and are erased with what they sum.

Assignment: a user's variant is fixed by ``sha256(experiment id, user id)`` read as a number in
[0, 1) against the variants' cumulative traffic shares, so it needs no stored state and stays the
same for the experiment's life (variants cannot change once it has started).

Results: rates (CTR, add-to-cart rate, conversion) and revenue are per impression, each variant's
with a Wilson (rates) or normal (revenue) 95% interval. Users are what is randomised, and one
user's impressions are correlated, so each difference from the control (the first variant) takes
the user as the unit of analysis: the ratio's variance by the delta method over the per-user
totals, and the 95% interval and the two-sided z-test's p-value from that one standard error (they
always agree on whether 0 is excluded). A χ² test of the users per variant against the traffic
shares (``sample_ratio_p``) flags a broken split. The p-values are fixed-horizon: read them once, at
the planned sample size. Both need only the sums over users, so a read costs a few commands per
variant however many users it has (:meth:`ExperimentStore.user_sums`); an experiment created before
the sums were kept (``per_user_sums`` false) is summed from a scan of its per-user totals instead.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import time
import uuid
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import numpy as np
from scipy import stats

from kgrec.gateway import GraphUnavailable
from kgrec.impressions import FLAG, IMPRESSION_SUMS, METRIC_SUMS, PER_USER_METRICS, ImpressionStore
from kgrec.single_flight import SingleFlight

log = logging.getLogger(__name__)

OUTCOMES = ("click", "cart", "purchase")
RATES = {"ctr": "click", "add_to_cart_rate": "cart", "conversion": "purchase"}
ACTIVE = "active"  # a variant's model_version: whatever version is active when the request is served
Z95 = 1.959963984540054
# A sample-ratio p-value below this marks the split as broken: users were lost or added unevenly
# (a strict threshold, since the check runs on every read of the results).
SRM_ALPHA = 0.001
# KEYS: running id, definitions, promoting; ARGV: experiment id, definition JSON. 2: an experiment of
# that id exists already (a fixed id, kgrec.gate_experiments: started before, maybe stopped since).
# {3, id}: experiment id's promotion is claimed and unfinished (a stopped experiment's claim leaves no
# running id): the version it activates would change what a new experiment's "active" variant serves
# mid-run.
_START = """
if redis.call('HEXISTS', KEYS[2], ARGV[1]) == 1 then
  return 2
end
local promoting = redis.call('ZRANGE', KEYS[3], 0, 0)
if #promoting > 0 then
  return {3, promoting[1]}
end
if not redis.call('SET', KEYS[1], ARGV[1], 'NX') then
  return 0
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
return 1
"""


# KEYS of the scripts below: the running id, the definitions hash, the sorted set of the experiments
# whose promotion is claimed and unfinished (by the claim's time). ARGV[1]: the experiment id.
# Whether the stored definition records a promotion (a JSON null decodes to cjson.null); 0 without one.
_READ_PROMOTED = """
local stored = redis.call('HGET', KEYS[2], ARGV[1])
if not stored then
  return 0
end
local promoted = cjson.decode(stored)['promoted']
local recorded = promoted ~= nil and promoted ~= cjson.null
"""
_PROMOTED = (
    _READ_PROMOTED
    + """
if recorded then
  return 0
end
"""
)
_RELEASE = """
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZREM', KEYS[3], ARGV[1])
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('DEL', KEYS[1])
end
return 1
"""
# ARGV[2]: the stopped definition. Stops the experiment unless a promotion was recorded first (a
# stop racing a promotion leaves the promotion's record).
_STOP_UNLESS_PROMOTED = _PROMOTED + _RELEASE
# ARGV[2]: the claimed definition (stopped, promoted), ARGV[3]: the variant's name, ARGV[4]: now
# (ms), ARGV[5]: the lease (ms). Records the claim unless a promotion was recorded first (0) or
# another experiment runs (-1); the running id stays until the claim is finished or undone, so no
# experiment can start while the version is being activated. A claim of the same variant that was
# never finished nor undone is taken over (2) once older than the lease: its process died between
# the claim and the finish; a younger one is under way (-2).
_CLAIM_PROMOTION = (
    _READ_PROMOTED
    + """
local running = redis.call('GET', KEYS[1])
local other = running and running ~= ARGV[1]
if recorded then
  local at = redis.call('ZSCORE', KEYS[3], ARGV[1])
  if not at or promoted['variant'] ~= ARGV[3] then
    return 0
  end
  if tonumber(at) > tonumber(ARGV[4]) - tonumber(ARGV[5]) then
    return -2
  end
  if other then
    return -1
  end
  redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
  return 2
end
if other then
  return -1
end
redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
redis.call('ZADD', KEYS[3], ARGV[4], ARGV[1])
return 1
"""
)
# ARGV[2]: the claimed definition, ARGV[3]: the one before the claim; put back while the claim stands.
_UNDO_CLAIM = """
if redis.call('HGET', KEYS[2], ARGV[1]) == ARGV[2] then
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[3])
end
redis.call('ZREM', KEYS[3], ARGV[1])
return 1
"""


# A promotion's claim older than this was made by a request that is gone: far longer than a
# promotion takes (its topic links, about 90 s at 1M items), since gunicorn's gthread workers put
# no time limit on a request that is being served.
PROMOTION_LEASE_MS = 1_800_000


class ExperimentConflict(Exception):
    """The request conflicts with the experiments' state (one already running, already stopped)."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class PromotionPending(ExperimentConflict):
    """No experiment may start: ``experiment_id``'s promotion is claimed and unfinished."""

    def __init__(self, experiment_id: str) -> None:
        super().__init__(
            f"the promotion of experiment {experiment_id} is under way; start the experiment once it "
            "has finished"
        )
        self.experiment_id = experiment_id


@dataclass(frozen=True)
class Variant:
    """One arm: a model version (or ``active``) and its share of the users."""

    name: str
    model_version: str
    traffic: float


@dataclass(frozen=True)
class Experiment:
    """An experiment's definition and state."""

    id: str
    name: str
    unit: str
    variants: tuple[Variant, ...]
    status: str  # running, stopped
    created_at: int
    stopped_at: int | None = None
    promoted: dict[str, Any] | None = None
    # Per-user totals kept from the start (experiments created since 2026-12-07); an older one, still
    # running across the upgrade, has them only from the deploy on, which biases its differences.
    per_user: bool = False
    # Sums over users kept beside the per-user totals from the start (experiments created since they
    # were added, later on 2026-12-07): the results read them. An older experiment's hashes got them
    # only from the deploy on, so its results sum a scan of the per-user totals on each read.
    per_user_sums: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def variant_for(self, user_id: str) -> Variant:
        """The user's variant: sticky, by hashing (experiment, user)."""
        digest = hashlib.sha256(f"{self.id}\x00{user_id}".encode()).digest()
        point = int.from_bytes(digest[:8], "big") / 2**64
        total = 0.0
        for variant in self.variants:
            total += variant.traffic
            if point < total:
                return variant
        return self.variants[-1]  # rounding: shares sum to 1 within 1e-9

    def variant(self, name: str) -> Variant | None:
        """The variant of that name."""
        return next((v for v in self.variants if v.name == name), None)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form."""
        body = asdict(self)
        body.pop("extra")
        body["variants"] = [asdict(v) for v in self.variants]
        return body

    @classmethod
    def from_json(cls, text: str | bytes) -> Experiment:
        """Read a stored definition."""
        data = json.loads(text)
        data["variants"] = tuple(Variant(**v) for v in data["variants"])
        return cls(**data)


class ExperimentStore:
    """Experiments of one graph, in the impression store's Redis."""

    def __init__(self, impressions: ImpressionStore) -> None:
        self.impressions = impressions
        prefix = impressions.prefix
        self.definitions = f"{prefix}:experiments"
        self.running_key = f"{prefix}:experiment:running"
        self.promoting_key = f"{prefix}:experiment:promoting"

    def counters_key(self, experiment_id: str, variant: str) -> str:
        """The counter hash of one variant."""
        return self.impressions.experiment_key(experiment_id, variant)

    def users_key(self, experiment_id: str, variant: str) -> str:
        """The HyperLogLog of one variant's users."""
        return f"{self.counters_key(experiment_id, variant)}:users"

    def create(
        self,
        name: str,
        variants: Sequence[Variant],
        unit: str = "user",
        now_ms: int | None = None,
        experiment_id: str | None = None,
    ) -> Experiment:
        """Start an experiment (``experiment_id``: under that id, else a new one); ExperimentConflict
        if one is running, a promotion is claimed and unfinished, or an experiment of that id
        exists (running or stopped)."""
        experiment = Experiment(
            id=experiment_id or f"exp-{uuid.uuid4().hex[:12]}",
            name=name,
            unit=unit,
            variants=tuple(variants),
            status="running",
            created_at=int(time.time() * 1000) if now_ms is None else now_ms,
            per_user=True,
            per_user_sums=True,
        )

        def start(client: Any) -> Any:
            # One script: a crash between the claim and the definition would leave a running id
            # with no definition, which nothing could stop.
            return client.eval(
                _START,
                3,
                self.running_key,
                self.definitions,
                self.promoting_key,
                experiment.id,
                json.dumps(experiment.as_dict()),
            )

        answer = self.impressions.run(start)
        if isinstance(answer, list):  # {3, id}: a promotion is claimed and unfinished
            raise PromotionPending(_decoded(answer[1]))
        started = int(answer)
        if started == 2:
            raise ExperimentConflict(f"experiment {experiment.id} exists already")
        if not started:
            raise ExperimentConflict(f"experiment {self.running_id()} is running; stop it first")
        return experiment

    def running_id(self) -> str | None:
        """The running experiment's id, if any."""
        value = self.impressions.run(lambda client: client.get(self.running_key))
        return value.decode() if isinstance(value, bytes) else value

    def promoting_id(self) -> str | None:
        """The id of an experiment whose promotion is claimed and unfinished (the earliest claim),
        if any: no experiment starts meanwhile."""
        found = self.impressions.run(lambda client: client.zrange(self.promoting_key, 0, 0))
        return _decoded(found[0]) if found else None

    def get(self, experiment_id: str) -> Experiment | None:
        """An experiment by id."""
        text = self.impressions.run(lambda client: client.hget(self.definitions, experiment_id))
        return Experiment.from_json(text) if text else None

    def list_experiments(
        self, status: str | None = None, limit: int | None = None, after: tuple[int, str] | None = None
    ) -> list[Experiment]:
        """Every experiment (or those with ``status``), newest first, at most ``limit``; with ``after``
        (a listed experiment's ``(created_at, id)``) only those listed after it, so pages neither
        repeat nor skip one whatever is created meanwhile."""
        stored = self.impressions.run(lambda client: client.hvals(self.definitions))
        found = [Experiment.from_json(text) for text in stored]
        found = [x for x in found if status is None or x.status == status]
        found = [x for x in found if after is None or (x.created_at, x.id) < after]
        found.sort(key=lambda x: (x.created_at, x.id), reverse=True)
        return found if limit is None else found[:limit]

    def running(self) -> Experiment | None:
        """The running experiment, if any."""
        running = self.running_id()
        return self.get(running) if running else None

    def stop(self, experiment: Experiment) -> Experiment:
        """Stop it (users go back to the active model); idempotent. A promotion recorded meanwhile
        stays: the experiment as stored is returned."""
        if experiment.status == "stopped":
            return experiment
        data = experiment.as_dict()
        data.update(status="stopped", stopped_at=int(time.time() * 1000))
        stopped = Experiment.from_json(json.dumps(data))
        if self._stop_unless_promoted(stopped):
            return stopped
        return self.get(experiment.id) or stopped

    def _stop_unless_promoted(self, stopped: Experiment) -> bool:
        return self._script(_STOP_UNLESS_PROMOTED, stopped.id, json.dumps(stopped.as_dict())) == 1

    def claim_promotion(self, experiment: Experiment, promoted: dict[str, Any]) -> tuple[Experiment, int]:
        """Claim the promotion of ``experiment`` in one script: its definition as claimed (stopped,
        ``promoted``) and 1, or 0 when a promotion was recorded first, or -1 when another
        experiment runs. :meth:`finish_promotion` or :meth:`undo_promotion` ends a claim.

        A claim of the same variant still unfinished after :data:`PROMOTION_LEASE_MS` (its process
        died before it finished or undid it) is taken over: its definition as claimed then, and 2;
        the caller carries it out as if it had claimed it. A younger one is under way: -2."""
        now = int(time.time() * 1000)
        data = experiment.as_dict()
        data.update(status="stopped", stopped_at=experiment.stopped_at or now, promoted=promoted)
        claimed = Experiment.from_json(json.dumps(data))
        definition = json.dumps(claimed.as_dict())
        claim = self._script(
            _CLAIM_PROMOTION, claimed.id, definition, promoted["variant"], now, PROMOTION_LEASE_MS
        )
        if claim == 2:
            return self.get(experiment.id) or claimed, claim
        return claimed, claim

    def claimed_at(self, experiment_id: str) -> int | None:
        """When the experiment's promotion was claimed, while it is neither finished nor undone
        (epoch ms); None without one."""
        score = self.impressions.run(lambda client: client.zscore(self.promoting_key, experiment_id))
        return None if score is None else int(score)

    def before_claim(self, claimed: Experiment) -> Experiment:
        """The definition a claimed, unfinished promotion replaced: running while the running id is
        still the experiment's (a claim keeps it), else stopped when it was."""
        running = self.running_id() == claimed.id
        return replace(
            claimed,
            promoted=None,
            status="running" if running else "stopped",
            stopped_at=None if running else claimed.stopped_at,
        )

    def finish_promotion(self, claimed: Experiment) -> None:
        """Record the claimed promotion as carried out; the experiment no longer runs."""
        self._script(_RELEASE, claimed.id, json.dumps(claimed.as_dict()))

    def undo_promotion(self, claimed: Experiment, before: Experiment) -> None:
        """Put ``before`` back, while the claim (as first recorded) still stands."""
        self._script(_UNDO_CLAIM, before.id, json.dumps(claimed.as_dict()), json.dumps(before.as_dict()))

    def _script(self, script: str, *args: str | int) -> int:
        reply = self.impressions.run(
            lambda client: client.eval(
                script, 3, self.running_key, self.definitions, self.promoting_key, *args
            )
        )
        return int(reply)

    def counters(self, experiment: Experiment) -> dict[str, dict[str, float]]:
        """Each variant's raw counters and user count (impressions recorded on this host so far included)."""
        self.impressions.settle()

        def read(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for variant in experiment.variants:
                pipe.hgetall(self.counters_key(experiment.id, variant.name))
                pipe.pfcount(self.users_key(experiment.id, variant.name))
            return pipe.execute()

        replies = self.impressions.run(read)
        result = {}
        for index, variant in enumerate(experiment.variants):
            raw, users = replies[2 * index], replies[2 * index + 1]
            values = {k.decode() if isinstance(k, bytes) else k: float(v) for k, v in raw.items()}
            result[variant.name] = {"users": float(users), **values}
        return result

    def user_sums(self, experiment: Experiment) -> dict[str, UserSums]:
        """Each variant's sums over its users (impressions recorded on this host so far included):
        one ``HMGET`` per per-user hash, of the sums kept beside the totals; for an experiment that
        has not kept them from its start (``per_user_sums`` false), or whose users counted beside
        the totals are not the users holding one (totals written without sums), summed from
        :meth:`user_totals`."""
        if not experiment.per_user_sums:
            return self._scanned_sums(experiment)
        self.impressions.settle()

        def read(client: Any) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for variant in experiment.variants:
                for metric in PER_USER_METRICS:
                    names = IMPRESSION_SUMS if metric == "impressions" else METRIC_SUMS
                    key = self.impressions.experiment_user_key(experiment.id, variant.name, metric)
                    pipe.hmget(key, [FLAG + name for name in names])
                    if metric == "impressions":
                        pipe.hlen(key)
            return pipe.execute()

        replies = iter(self.impressions.run(read))
        found = {}
        for variant in experiment.variants:
            stored = next(replies)
            users, n, n_sq = (_number(v) for v in stored)
            # The users counted beside the totals must be the users holding one (the hash's fields
            # less the sums present): a writer that kept totals without sums (an older kgrec, during
            # an upgrade) breaks that, and then only the totals can be trusted.
            if int(users) != next(replies) - sum(v is not None for v in stored):
                log.warning(
                    "experiment %s: sums over users out of step with the totals; scanning", experiment.id
                )
                return self._scanned_sums(experiment)
            sums = {metric: tuple(_number(v) for v in next(replies)) for metric in PER_USER_METRICS[1:]}
            found[variant.name] = UserSums(int(users), n, n_sq, sums)
        return found

    def _scanned_sums(self, experiment: Experiment) -> dict[str, UserSums]:
        """Each variant's sums over its users, summed from :meth:`user_totals` (a scan)."""
        return {name: UserSums.of(totals) for name, totals in self.user_totals(experiment).items()}

    def user_totals(self, experiment: Experiment) -> dict[str, UserTotals]:
        """Each variant's per-user totals (impressions recorded on this host so far included).

        Read with ``HSCAN`` in pages, so a large variant does not block the store; a user whose
        outcome was added between two pages' reads counts with it (the totals only grow)."""
        self.impressions.settle()

        def read(client: Any) -> dict[str, UserTotals]:
            found = {}
            for variant in experiment.variants:
                columns: dict[str, dict[str, float]] = {}
                for metric in PER_USER_METRICS:
                    key = self.impressions.experiment_user_key(experiment.id, variant.name, metric)
                    scanned = ((_decoded(u), v) for u, v in client.hscan_iter(key, count=5000))
                    columns[metric] = {u: float(v) for u, v in scanned if not u.startswith(FLAG)}
                users = sorted(columns["impressions"])
                found[variant.name] = UserTotals(
                    **{
                        m: np.array([columns[m].get(u, 0.0) for u in users], dtype=float)
                        for m in PER_USER_METRICS
                    }
                )
            return found

        return self.impressions.run(read)


def _decoded(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _number(value: bytes | str | None) -> float:
    """A stored sum: an int when it is one (counts stay exact), 0 when absent."""
    if value is None:
        return 0
    text = _decoded(value)
    return int(text) if text.lstrip("-").isdigit() else float(text)


@dataclass(frozen=True)
class UserTotals:
    """One variant's per-user totals, aligned by user (one entry per user served)."""

    impressions: np.ndarray
    click: np.ndarray
    cart: np.ndarray
    purchase: np.ndarray
    revenue: np.ndarray

    @property
    def users(self) -> int:
        """How many users were served."""
        return len(self.impressions)


@dataclass(frozen=True)
class UserSums:
    """One variant's sums over its users, all its results need of the per-user totals: the users,
    Σn and Σn² (n: a user's impressions), and per metric Σx, Σx² and Σx·n (x: a user's total)."""

    users: int
    n: float
    n_sq: float
    metrics: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # metric -> sums

    @classmethod
    def of(cls, totals: UserTotals) -> UserSums:
        """The sums of per-user totals."""
        n = totals.impressions
        columns = {metric: getattr(totals, metric) for metric in PER_USER_METRICS[1:]}
        sums = {metric: (float(x.sum()), float(x @ x), float(x @ n)) for metric, x in columns.items()}
        return cls(totals.users, float(n.sum()), float(n @ n), sums)


def wilson(successes: float, n: float) -> tuple[float, float]:
    """The Wilson score 95% interval of a proportion."""
    if n <= 0:
        return (0.0, 0.0)
    p = successes / n
    centre = (p + Z95**2 / (2 * n)) / (1 + Z95**2 / n)
    half = Z95 * math.sqrt(p * (1 - p) / n + Z95**2 / (4 * n * n)) / (1 + Z95**2 / n)
    return (max(0.0, centre - half), min(1.0, centre + half))


def _difference(
    difference: float, se: float, p_value: float, quantile: float = Z95
) -> dict[str, float | None]:
    return {
        "difference": difference,
        "ci_low": difference - quantile * se,
        "ci_high": difference + quantile * se,
        "p_value": p_value,
    }


def _z_difference(difference: float, se: float) -> dict[str, float | None]:
    """The difference with its 95% interval and the two-sided z-test's p-value, both from ``se``:
    the interval excludes 0 exactly when p < 0.05 (a zero ``se`` gives p 0 or 1, as its interval)."""
    if se == 0:
        return _difference(difference, se, 1.0 if difference == 0 else 0.0)
    return _difference(difference, se, float(2 * stats.norm.sf(abs(difference) / se)))


def two_proportions(x1: float, n1: float, x0: float, n0: float) -> dict[str, float | None]:
    """Difference p1 - p0 of independent proportions, with its 95% interval and the two-sided
    z-test's p-value, both from the unpooled standard error (so they agree)."""
    if n1 <= 0 or n0 <= 0:
        return {"difference": None, "ci_low": None, "ci_high": None, "p_value": None}
    p1, p0 = x1 / n1, x0 / n0
    return _z_difference(p1 - p0, math.sqrt(p1 * (1 - p1) / n1 + p0 * (1 - p0) / n0))


def _mean_sd(total: float, total_sq: float, n: float) -> tuple[float, float]:
    mean = total / n
    variance = max(0.0, (total_sq - n * mean * mean) / (n - 1)) if n > 1 else 0.0
    return mean, math.sqrt(variance)


def _ratio_variance(sums: UserSums, metric: str) -> float | None:
    """The delta-method variance of Σx / Σn over independent users: the sample variance of the
    residuals x - R n over the users, divided by users x mean(n)^2. The residuals' mean is 0, so
    their sum of squares is Σx² - 2 R Σxn + R² Σn²."""
    users, n = sums.users, sums.n
    if users < 2 or n <= 0:
        return None
    x, x_sq, xn = sums.metrics.get(metric, (0, 0, 0))
    # times (Σn)², so that integer counts give an exact numerator
    squares = (x_sq * n * n - 2 * x * n * xn + x * x * sums.n_sq) / (n * n)
    return max(0.0, squares) / (users - 1) / (users * (n / users) ** 2)


def ratio_difference(one: UserSums, control: UserSums, metric: str) -> dict[str, float | None]:
    """Difference of two per-impression ratios Σx/Σn of ``metric`` (a rate's outcome, or revenue)
    between two groups of randomised users, given their sums over users; the user is the unit of
    analysis (delta method), and the 95% interval and two-sided p-value share one standard error."""
    v1, v0 = _ratio_variance(one, metric), _ratio_variance(control, metric)
    if v1 is None or v0 is None:
        return {"difference": None, "ci_low": None, "ci_high": None, "p_value": None}
    ratio1, ratio0 = one.metrics[metric][0] / one.n, control.metrics[metric][0] / control.n
    return _z_difference(float(ratio1 - ratio0), math.sqrt(v1 + v0))


def sample_ratio_p(users: Sequence[int], traffic: Sequence[float]) -> float | None:
    """The χ² goodness-of-fit p-value of the users per variant against the traffic shares (a small
    one: the split is not what was configured); None without users."""
    total = sum(users)
    if total <= 0:
        return None
    expected = [total * share / sum(traffic) for share in traffic]
    return float(stats.chisquare(users, expected).pvalue)


def _metric(value: float, low: float, high: float) -> dict[str, float]:
    return {"value": round(value, 6), "ci_low": round(low, 6), "ci_high": round(high, 6)}


def _rounded(diff: dict[str, float | None]) -> dict[str, float | None]:
    return {
        k: (None if v is None else round(v, 6) if k != "p_value" else float(f"{v:.6g}"))
        for k, v in diff.items()
    }


def results(
    experiment: Experiment,
    counters: dict[str, dict[str, float]],
    user_sums: dict[str, UserSums] | None = None,
) -> dict[str, Any]:
    """Per variant: users, impressions, outcome counts, rates and revenue with 95% intervals; vs
    control, each difference by users (``user_sums``, :meth:`ExperimentStore.user_sums`); the
    sample-ratio check of the split. An experiment without per-user totals from its start
    (``per_user`` false: created before they were kept) answers null differences and sample ratio."""
    per_user = (user_sums or {}) if experiment.per_user else {}
    empty = UserSums(0, 0, 0)
    control_name = experiment.variants[0].name
    control = per_user.get(control_name, empty)
    variants = []
    for variant in experiment.variants:
        c = counters[variant.name]
        n = c.get("impressions", 0.0)
        body: dict[str, Any] = {
            "name": variant.name,
            "model_version": variant.model_version,
            "traffic": variant.traffic,
            "users": int(c.get("users", 0)),
            "impressions": int(n),
            **{f"{o}s": int(c.get(o, 0)) for o in OUTCOMES},
        }
        for rate, outcome in RATES.items():
            x = c.get(outcome, 0.0)
            body[rate] = _metric(x / n if n else 0.0, *wilson(x, n))
        if n:
            mean, sd = _mean_sd(c.get("revenue", 0.0), c.get("revenue_sq", 0.0), n)
            body["revenue_per_impression"] = _metric(
                mean, mean - Z95 * sd / math.sqrt(n), mean + Z95 * sd / math.sqrt(n)
            )
        else:
            body["revenue_per_impression"] = _metric(0.0, 0.0, 0.0)
        if variant.name != control_name:
            one = per_user.get(variant.name, empty)
            body["vs_control"] = {
                name: _rounded(ratio_difference(one, control, metric))
                for name, metric in {**RATES, "revenue_per_impression": "revenue"}.items()
            }
        variants.append(body)
    counted = (
        [per_user.get(v.name, empty).users for v in experiment.variants] if experiment.per_user else None
    )
    srm = None if counted is None else sample_ratio_p(counted, [v.traffic for v in experiment.variants])
    return {
        **experiment.as_dict(),
        "control": control_name,
        "tests": (
            "per impression, by user (the randomised unit): delta-method z-test and 95% interval from one "
            "standard error; per variant, Wilson (rates) and normal (revenue) 95% intervals per impression, "
            "not clustered by user; fixed-horizon p-values; sample ratio: chi-squared "
            "test of users per variant against traffic"
        ),
        "variants": variants,
        "sample_ratio_users": counted,
        "sample_ratio_p": None if srm is None else float(f"{srm:.6g}"),
        "sample_ratio_mismatch": srm is not None and srm < SRM_ALPHA,
        "sample_ratio_alpha": SRM_ALPHA,
    }


@dataclass(frozen=True)
class _Read:
    """What a read of the running experiment found (held even when none runs, unlike a bare None)."""

    experiment: Experiment | None


class RunningExperiment:
    """A process's view of the running experiment, re-read at most every ``check_every_s``."""

    def __init__(self, store: ExperimentStore, check_every_s: float = 1.0) -> None:
        self.store = store
        self.check_every_s = check_every_s
        self._view: SingleFlight[_Read] = SingleFlight(check_every_s)

    def get(self) -> Experiment | None:
        """The running experiment, if any (read at most ``check_every_s`` ago).

        One request re-reads it while the others answer with the known one; when the impression
        store cannot be read (restarting, hung) the known one stays, so recommendations are
        still answered (and journalled) meanwhile. A process that never read it has nothing to
        go on: it raises GraphUnavailable (a 503), rather than serve every user the active model
        as if no experiment ran. After :meth:`stale`, the answer is that of a read begun after it
        (or, if that read fails, the known one).
        """
        try:
            read = self._view.get(lambda _held: _Read(self.store.running()))
        except GraphUnavailable as exc:
            known = self._view.held()
            if known is None:
                raise
            log.warning("could not read the running experiment (%s); serving the one known", exc)
            return known.experiment
        assert read is not None  # a load answers a _Read or raises
        return read.experiment

    def stale(self) -> None:
        """Make the next use wait for a read begun after this call (this process changed the
        experiments, and its next answer must show it, whatever read was under way)."""
        self._view.stale()


def assignment(running: RunningExperiment, user_id: str | None) -> tuple[Experiment, Variant] | None:
    """The running experiment and the user's variant; None without a user or an experiment."""
    if not user_id:
        return None
    experiment = running.get()
    return (experiment, experiment.variant_for(user_id)) if experiment is not None else None
