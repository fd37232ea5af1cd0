"""Settings, read once from the environment."""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

# Per-behaviour weights added to an interest edge by one event (configurable).
DEFAULT_BEHAVIOUR_WEIGHTS: dict[str, float] = {
    "view": 1.0,
    "click": 1.0,
    "fav": 2.0,
    "cart": 3.0,
    "remove_from_cart": 0.0,
    "purchase": 5.0,
    "rating": 4.0,
    "review": 4.0,
}

FSYNC_POLICIES = ("always", "everysec", "no")


def _parse_weights(text: str) -> dict[str, float]:
    weights = dict(DEFAULT_BEHAVIOUR_WEIGHTS)
    for part in filter(None, (p.strip() for p in text.split(","))):
        name, _, value = part.partition("=")
        if name not in weights:
            raise ValueError(f"KGREC_BEHAVIOUR_WEIGHTS: unknown behaviour {name!r}")
        weights[name] = float(value)
    return weights


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
    shared_data_dir: Path = Path("../shared/data")
    api_keys: tuple[str, ...] = ()
    read_requires_key: bool = False
    max_clock_skew_s: float = 300.0
    bot_events_per_minute: int = 120
    prune_weight_below: float = 0.01
    event_retention_days: float = 30.0
    prune_interval_s: float = 600.0
    fold_in_interval_s: float = 30.0

    @property
    def embedded(self) -> bool:
        """True when kgrec runs its own FalkorDB instead of talking to Neo4j."""
        return not self.neo4j_uri

    @property
    def half_life_ms(self) -> float:
        """The interest half-life in milliseconds."""
        return self.half_life_days * 86_400_000.0

    def with_overrides(self, **changes: Any) -> Settings:
        """A copy with some fields replaced (None values are ignored)."""
        return replace(self, **{k: v for k, v in changes.items() if v is not None})

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> Settings:
        """Build settings from environment variables (see README, "Configuration")."""
        env = dict(os.environ if env is None else env)
        fsync = env.get("KGREC_AOF_FSYNC", "always")
        if fsync not in FSYNC_POLICIES:
            raise ValueError(f"KGREC_AOF_FSYNC must be one of {FSYNC_POLICIES}, not {fsync!r}")
        return cls(
            data_dir=Path(env.get("KGREC_DATA_DIR", "var")),
            graph_name=env.get("KGREC_GRAPH", "kgrec"),
            neo4j_uri=env.get("NEO4J_URI") or None,
            neo4j_user=env.get("NEO4J_USER", "neo4j"),
            neo4j_password=env.get("NEO4J_PASSWORD", ""),
            neo4j_database=env.get("NEO4J_DATABASE", "neo4j"),
            redis_url=env.get("REDIS_URL") or None,
            aof_fsync=fsync,
            half_life_days=float(env.get("KGREC_HALF_LIFE_DAYS", "14")),
            behaviour_weights=_parse_weights(env.get("KGREC_BEHAVIOUR_WEIGHTS", "")),
            shared_data_dir=Path(env.get("KGREC_SHARED_DATA_DIR", "../shared/data")),
            api_keys=tuple(k.strip() for k in env.get("KGREC_API_KEYS", "").split(",") if k.strip()),
            read_requires_key=env.get("KGREC_READ_REQUIRES_KEY", "").lower() in ("1", "true", "yes"),
            max_clock_skew_s=float(env.get("KGREC_MAX_CLOCK_SKEW_S", "300")),
            bot_events_per_minute=int(env.get("KGREC_BOT_EVENTS_PER_MINUTE", "120")),
            prune_weight_below=float(env.get("KGREC_PRUNE_WEIGHT_BELOW", "0.01")),
            event_retention_days=float(env.get("KGREC_EVENT_RETENTION_DAYS", "30")),
            prune_interval_s=float(env.get("KGREC_PRUNE_INTERVAL_S", "600")),
            fold_in_interval_s=float(env.get("KGREC_FOLD_IN_INTERVAL_S", "30")),
        )
