"""Impressions: what each recommendations or similar-items response showed, kept in a Redis stream.

Recording. A serving process appends each impression to its journal, a memory-mapped local
file (kgrec/impression_journal.py), before the response leaves the API, and a thread of the
process ships the journal to the stream. The append is in the page cache when
the ``recommendation_id`` is answered, so kill -9 of the API or of either server loses none
(the next process ships a dead one's journal); an OS crash may lose the last seconds, as with
the server's ``appendfsync no``. No round trip is in the request path. Readers that must see
every impression recorded so far on this host call :meth:`ImpressionStore.settle` first.

Where the stream lives. On the embedded stack, in a redis-server of its own beside the graph
server (kgrec/embedded.py, :class:`~kgrec.embedded.ImpressionsServer`): ``appendonly yes``,
``appendfsync no`` by default (``KGREC_IMPRESSIONS_AOF_FSYNC``); its fsyncs never hold up the
graph server's main thread. With ``REDIS_URL`` set (Neo4j), in database 3 of that Redis (the
Celery broker): give it ``appendonly yes``. Keys are prefixed with the graph's name (the Neo4j
database), so several graphs on one server keep apart.

Shipping a batch of impressions is one Lua script call, idempotent by their ids. Per impression:

* ``kgrec:<graph>:impression:<recommendation_id>`` already kept: nothing to do. Otherwise
  ``XADD kgrec:<graph>:impressions MINID ~ <now - retention> *`` the impression (the trim
  drops whole stream nodes, so it costs next to nothing), and set that id key to the entry id,
  expiring with the impression: the lookup by id.
* for a known user, ``LPUSH`` the entry id on ``kgrec:<graph>:impressions:user:<user>``,
  ``LTRIM`` it to the newest :data:`USER_RECENT` and let it expire after the attribution
  window: the index that attribution by window reads.

Then the oldest entries beyond the entry cap are deleted with their id keys, so memory and disk
stay bounded by the retention setting and the cap.

A ``recommendation_id`` is a version-7 UUID made by the serving process
(:mod:`kgrec.impression_ids`); ids made by older kgrec versions, which encoded the entry id,
are still found.
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, NamedTuple, TypeVar

import redis

from kgrec import erasure, impression_ids
from kgrec.config import Settings
from kgrec.decay import DAY_MS
from kgrec.erasure import user_hash
from kgrec.gateway import GraphUnavailable
from kgrec.impression_journal import Journal
from kgrec.runtime import embedded_server
from kgrec.server_refusals import cannot_write_now

log = logging.getLogger(__name__)

IMPRESSIONS_DB = 3
USER_RECENT = 100  # a user's newest impressions that attribution by window looks through
HOUR_MS = 3_600_000
SURFACES = ("recommendations", "similar")
JOURNAL_DIR = "impression-journal"  # under the data directory, one folder per graph
COPY_TTL_MS = 600_000  # a stream copy (ImpressionStore.compact) not added to for this long is dropped
COPY_ATTEMPTS = 3  # copies of the stream a compaction makes before it gives up (see compact)

T = TypeVar("T")


class ErasedImpressions(NamedTuple):
    """What :meth:`ImpressionStore.erase_user` removed."""

    impressions: int  # kept impressions of the user
    journal_lines: int  # their lines blanked in this host's journals
    # whether the stream was rebuilt without deleted bytes; None when none was owed
    compacted: bool | None = None


class ImpressionsUnavailable(GraphUnavailable):
    """The impression store cannot be reached or written right now (a 503 that names it, not the graph).

    A GraphUnavailable, so every caller that waits out an outage waits out this one too.
    """

    answer = "the impression store is unavailable; retry later"  # the 503's detail


# The per-user totals an experiment variant keeps (one hash each: user id -> total), so its results
# can take the user, the unit that is randomised, as the unit of analysis (kgrec/experiments.py).
PER_USER_METRICS = ("impressions", "click", "cart", "purchase", "revenue")
BY_USER = ":by-user:"  # between a variant's counters key and a metric: that metric's per-user hash
# Prefix of a hash's own fields: the attributed hash's outcome flags and revenue (no event id has it),
# a per-user hash's sums (no user id has it).
FLAG = "\x01"
# The sums over its users that each per-user hash keeps beside the totals (fields FLAG + name), all
# the results read (kgrec.experiments.UserSums): the impressions hash, the users, Σn and Σn² (n: a
# user's impressions); every other metric's, Σx, Σx² and Σx·n (x: a user's total of it). Kept in
# the same hash, they expire and are erased with the totals they sum.
IMPRESSION_SUMS = ("users", "sum", "sum_sq")
METRIC_SUMS = ("sum", "sum_sq", "sum_n")
# Lua for the scripts that write per-user totals (impressions, attribution, erasure).
# add_total: adds d (text: as the command takes it) to a user's total in the per-user hash key of a
# metric other than impressions; Σx grows by d, Σx² by 2·x·d + d² (x: the total before), Σx·n by
# d·n (n: the user's impressions, in impressions_key).
PER_USER_SUMS = (
    "local OUTCOME_METRICS = {"
    + ", ".join(f"'{m}'" for m in PER_USER_METRICS[1:])
    + "}"
    + """
local function add_sum(key, name, d)
  if d ~= 0 then
    redis.call('HINCRBYFLOAT', key, '\1' .. name, string.format('%.17g', d))
  end
end
-- touch_all: one lifetime for a variant's five per-user hashes (by_user: their common prefix), so
-- none outlives another and the sums stay those of the totals beside them
local function touch_all(by_user, ttl)
  redis.call('PEXPIRE', by_user .. 'impressions', ttl)
  for _, metric in ipairs(OUTCOME_METRICS) do
    redis.call('PEXPIRE', by_user .. metric, ttl)
  end
end
local function add_total(key, impressions_key, user, d, text, command)
  local before = tonumber(redis.call('HGET', key, user)) or 0
  redis.call(command, key, user, text)
  local n = tonumber(redis.call('HGET', impressions_key, user)) or 0
  add_sum(key, 'sum', d)
  add_sum(key, 'sum_sq', 2 * before * d + d * d)
  add_sum(key, 'sum_n', d * n)
end
"""
)

# One call per batch of journal lines (kgrec/impression_journal.py): one round trip, and the lines
# are parsed here, not in the serving process, whose shipper thread would otherwise hold the GIL
# for it. KEYS: the stream, the erasures. ARGV: now (ms), retention (ms), max entries, user list
# length, window (ms), the graph's key prefix, an experiment variant's counters key
# (ImpressionStore.experiment_key) around the experiment id and the variant (three parts), the
# per-user keys' infix (:data:`BY_USER`), then the lines (JSON objects, as ImpressionStore.record
# writes them).
# The entry keeps the line as ``j``, with ``r`` (id), ``u`` (user) and ``a`` (explored arms) beside
# it for the scripts that scan entries. An id still kept is skipped: shipping is idempotent. So is
# a line of a user erased after it was recorded (a hash of the user id, scored by the erasure's time).
# Then the oldest entries beyond the cap are deleted with their id keys (retention expires both).
# A variant's per-user hashes (they hold user ids) expire together, the retention after the last write
# to any of them (touch_all; a claim renews them too); a
# user's new impression adds to the variant's users, Σn and Σn², and to every other metric's Σx·n.
# Returns how many impressions were new.
_STORE = (
    PER_USER_SUMS
    + """
local now, retention, window = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[5])
local prefix, by_user = ARGV[6], ARGV[10]
local min_id = string.format('%d', math.max(0, now - retention))
local touched = {}  -- the variants' per-user hash prefixes this batch wrote (renewed after it)

local function store(line)
  local rec = cjson.decode(line)
  local valid = type(rec) == 'table' and type(rec.r) == 'string' and type(rec.c) == 'number'
  if not (valid and type(rec.u) == 'string' and type(rec.e) == 'string' and type(rec.x) == 'string') then
    error('not an impression')
  end
  local ttl = rec.c + retention - now
  local id_key = prefix .. 'impression:' .. rec.r
  if ttl <= 0 or redis.call('EXISTS', id_key) == 1 then
    return 0
  end
  if rec.u ~= '' then
    local erased = redis.call('ZSCORE', KEYS[2], redis.sha1hex(rec.u))
    if erased and rec.c <= tonumber(erased) then
      return 0
    end
  end
  local fields = {'r', rec.r, 'u', rec.u, 'j', line}
  if type(rec.a) == 'table' then
    fields[7], fields[8] = 'a', cjson.encode(rec.a)
  end
  local id = redis.call('XADD', KEYS[1], 'MINID', '~', min_id, '*', unpack(fields))
  redis.call('SET', id_key, id, 'PX', string.format('%d', ttl))
  if rec.u ~= '' then
    local user_key = prefix .. 'impressions:user:' .. rec.u
    local user_ttl = math.max(1, rec.c + window - now)
    redis.call('LPUSH', user_key, id)
    redis.call('LTRIM', user_key, 0, tonumber(ARGV[4]) - 1)
    if redis.call('PTTL', user_key) < user_ttl then
      redis.call('PEXPIRE', user_key, string.format('%d', user_ttl))
    end
  end
  if rec.e ~= '' and rec.x ~= '' then
    local counters = ARGV[7] .. rec.e .. ARGV[8] .. rec.x .. ARGV[9]
    redis.call('HINCRBY', counters, 'impressions', 1)
    redis.call('PFADD', counters .. ':users', rec.u)
    if rec.u ~= '' then
      local impressions = counters .. by_user .. 'impressions'
      local n = redis.call('HINCRBY', impressions, rec.u, 1)
      if n == 1 then
        add_sum(impressions, 'users', 1)
      end
      add_sum(impressions, 'sum', 1)
      add_sum(impressions, 'sum_sq', 2 * n - 1)
      for _, metric in ipairs(OUTCOME_METRICS) do
        local x = tonumber(redis.call('HGET', counters .. by_user .. metric, rec.u))
        if x then
          add_sum(counters .. by_user .. metric, 'sum_n', x)
        end
      end
      touched[counters .. by_user] = true
    end
  end
  return 1
end

-- A line that cannot be stored (damaged, or a key of another type in its way) is logged and
-- skipped: it must not hold up the lines after it for ever.
local stored = 0
for i = 11, #ARGV do
  local ok, result = pcall(store, ARGV[i])
  if ok then
    stored = stored + result
  else
    redis.log(redis.LOG_WARNING, 'kgrec: skipped an impression journal line: ' .. tostring(result))
  end
end
-- every line of a batch has one time and retention: each variant's hashes are renewed once
for hashes in pairs(touched) do
  touch_all(hashes, ARGV[2])
end
local excess = redis.call('XLEN', KEYS[1]) - tonumber(ARGV[3])
if excess > 0 then
  local oldest = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', math.min(excess, 1000))
  local ids = {}
  for i, row in ipairs(oldest) do
    ids[i] = row[1]
    local fields = row[2]
    for j = 1, #fields, 2 do
      if fields[j] == 'r' then
        redis.call('DEL', prefix .. 'impression:' .. fields[j + 1])
        break
      end
    end
  end
  redis.call('XDEL', KEYS[1], unpack(ids))
end
return stored
"""
)
# KEYS: id keys. ARGV: the stream. Returns per key the entry it names ({} when none is kept).
_BY_ID = """
local out = {}
for i, key in ipairs(KEYS) do
  local id = redis.call('GET', key)
  if id then
    out[i] = redis.call('XRANGE', ARGV[1], id, id, 'COUNT', 1)
  else
    out[i] = {}
  end
end
return out
"""


@dataclass(frozen=True)
class ShownItem:
    """One item of an impression."""

    item_id: str
    position: int  # rank in the whole ranking, 1 = the top
    score: float


@dataclass(frozen=True)
class Impression:
    """One recorded response."""

    entry_id: str  # its stream entry
    recommendation_id: str  # the id the response carried
    created_at: int  # when it was recorded (epoch ms, the serving process's clock)
    surface: str
    user_id: str | None
    source_item_id: str | None  # similar items: the item they are similar to
    model_version: str
    experiment: str | None
    variant: str | None
    filters: dict[str, Any]
    offset: int
    shown: list[list[Any]]  # [[item_id, score], ...] in rank order, as stored
    explored: dict[str, str] = field(default_factory=dict)  # item id -> bandit arm (kgrec/exploration.py)

    @property
    def items(self) -> tuple[ShownItem, ...]:
        """The items with their positions (offset + rank, 1 = the top) and scores."""
        return tuple(
            ShownItem(item, self.offset + rank, score) for rank, (item, score) in enumerate(self.shown, 1)
        )

    @cached_property
    def _positions(self) -> dict[str, int]:
        positions: dict[str, int] = {}
        for rank, (item, _score) in enumerate(self.shown, 1):
            positions.setdefault(item, self.offset + rank)
        return positions

    def position_of(self, item_id: str) -> int | None:
        """Where ``item_id`` was shown, or None if it was not."""
        return self._positions.get(item_id)

    def as_dict(self) -> dict[str, Any]:
        """The JSON form (``GET /v1/impressions/{id}``, without its attributed events)."""
        return {
            "recommendation_id": self.recommendation_id,
            "surface": self.surface,
            "user_id": self.user_id,
            "item_id": self.source_item_id,
            "model_version": self.model_version,
            "experiment": self.experiment,
            "variant": self.variant,
            "filters": self.filters,
            "created_at": self.created_at,
            "items": [
                {"item_id": s.item_id, "position": s.position, "score": s.score}
                | ({"explore": self.explored[s.item_id]} if s.item_id in self.explored else {})
                for s in self.items
            ],
        }


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _impression(entry_id: str, fields: Mapping[bytes | str, bytes | str]) -> Impression:
    row = {_text(k): _text(v) for k, v in fields.items()}
    if "j" in row:  # the journal line as recorded
        line: dict[str, Any] = json.loads(row["j"])
    else:  # recorded by an older kgrec: fields of their own, and an id that encodes the entry id and a tag
        ms, _, seq = entry_id.partition("-")
        line = {
            **row,
            "r": impression_ids.encode_legacy(int(ms), int(seq), int(row["t"], 16)),
            "c": ms,
            **{name: json.loads(row[name]) for name in ("f", "i", "a") if name in row},
        }
    return Impression(
        entry_id=entry_id,
        recommendation_id=line["r"],
        created_at=int(line["c"]),
        surface=line["s"],
        user_id=line["u"] or None,
        source_item_id=line["q"] or None,
        model_version=line["m"],
        experiment=line["e"] or None,
        variant=line["x"] or None,
        filters=line["f"],
        offset=int(line["o"]),
        shown=line["i"],
        explored=line.get("a", {}),
    )


def impressions_redis_url(settings: Settings) -> str:
    """The Redis that holds impressions: database 3 of REDIS_URL's server when it is set, else the
    embedded impressions' redis-server (database 3 of the graph server for one started by an older
    kgrec, which has none)."""
    if settings.redis_url:
        url = settings.redis_url
        base = url.rsplit("/", 1)[0] if url.count("/") > 2 else url
        return f"{base}/{IMPRESSIONS_DB}"
    info = embedded_server(settings).running()
    if info is None:
        raise GraphUnavailable("the embedded graph server is not running")
    return info.impressions_url() or info.redis_url(IMPRESSIONS_DB)


def has_impression_store(settings: Settings) -> bool:
    """Whether this deployment has an impression store at all (REDIS_URL, or the embedded one
    running for the data directory); without one no experiment can be running."""
    return bool(settings.redis_url) or embedded_server(settings).running() is not None


class ImpressionStore:
    """One process's access to the impression stream (a client opened on first use, again after a fork)."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        namespace = settings.graph_name if settings.embedded else settings.neo4j_database
        self.prefix = f"kgrec:{namespace}"
        self.stream = f"{self.prefix}:impressions"
        self.erasures = f"{self.prefix}:erased"  # user hash -> erasure time (ms), kept for retention
        self.copies = f"{self.stream}:copies"  # the copies of the stream being made (compact)
        self.compaction_owed = f"{self.stream}:compaction-owed"  # set by a deletion, unset by a rebuild
        self.journal = Journal(settings.data_dir / JOURNAL_DIR / namespace, self._ship, self._erasures_since)
        self._lock = threading.Lock()
        self._client: redis.Redis | None = None
        self._pid = 0
        self._store: Any = None
        self._by_id: Any = None

    # --- keys ---------------------------------------------------------------------------------

    def id_key(self, recommendation_id: str) -> str:
        """The entry id of the impression a recommendation id names."""
        return f"{self.prefix}:impression:{recommendation_id}"

    def user_key(self, user_id: str) -> str:
        """The list of a user's newest impression entry ids."""
        return f"{self.prefix}:impressions:user:{user_id}"

    def attributed_key(self, entry_id: str) -> str:
        """The hash of events attributed to one impression (event id -> JSON)."""
        return f"{self.prefix}:attributed:{entry_id}"

    def experiment_key(self, experiment_id: str, variant: str) -> str:
        """The counters of one experiment variant (see kgrec/experiments.py)."""
        return f"{self.prefix}:experiment:{experiment_id}:{variant}"

    def experiment_user_key(self, experiment_id: str, variant: str, metric: str) -> str:
        """One variant's per-user totals of ``metric`` (a hash, user id -> total; see
        :data:`PER_USER_METRICS`), written by the scripts that write its counters."""
        return f"{self.experiment_key(experiment_id, variant)}{BY_USER}{metric}"

    def claim_key(self, event_id: str) -> str:
        """The impression an event was attributed to (set once: at most one attribution per event)."""
        return f"{self.prefix}:attribution:{event_id}"

    @property
    def retention_ms(self) -> int:
        """How long impressions (and what was attributed to them) are kept."""
        return int(self.settings.impression_retention_days * DAY_MS)

    @property
    def window_ms(self) -> int:
        """The attribution window."""
        return int(self.settings.attribution_window_hours * HOUR_MS)

    # --- connection ---------------------------------------------------------------------------

    def client(self) -> redis.Redis:
        """This process's client (the embedded server's address is re-read after a failure)."""
        with self._lock:
            if self._client is None or self._pid != os.getpid():
                bound = self.settings.serving_timeout_s  # every call is small: one batch, one script
                self._client = redis.Redis.from_url(
                    impressions_redis_url(self.settings),
                    socket_timeout=bound,
                    socket_connect_timeout=min(5, bound),
                )
                self._store = self._client.register_script(_STORE)
                self._by_id = self._client.register_script(_BY_ID)
                self._pid = os.getpid()
            return self._client

    def run(self, action: Callable[[redis.Redis], T]) -> T:
        """Run ``action`` with the client; a connection failure is ImpressionsUnavailable (503, retry)."""
        client = self.client()
        try:
            return action(client)
        except (redis.ConnectionError, redis.TimeoutError, redis.BusyLoadingError) as exc:
            with self._lock:
                if self._client is client:
                    self._client = None
            raise ImpressionsUnavailable(f"impression store unavailable: {exc}") from exc
        except redis.ResponseError as exc:
            if cannot_write_now(exc):
                raise ImpressionsUnavailable(f"impression store cannot write now: {exc}") from exc
            raise

    def ping(self) -> None:
        """Check that the impression store answers (ImpressionsUnavailable if not)."""
        self.run(lambda client: client.ping())

    def close(self) -> None:
        """Drop this process's connections."""
        with self._lock:
            if self._client is not None and self._pid == os.getpid():
                self._client.close()
            self._client = None

    # --- writes -------------------------------------------------------------------------------

    def record(
        self,
        *,
        surface: str,
        user_id: str | None,
        items: Sequence[tuple[str, float]],
        model_version: str,
        filters: Mapping[str, Any],
        offset: int = 0,
        source_item_id: str | None = None,
        experiment: str | None = None,
        variant: str | None = None,
        explored: Mapping[str, str] | None = None,
        now_ms: int,
    ) -> str:
        """Record one response durably (an append to this process's journal); returns its recommendation_id.

        ``explored`` maps the items exploration chose to their bandit arms (kgrec/exploration.py).
        A journal that cannot be written (a full disk) is ImpressionsUnavailable: 503, nothing recorded.
        """
        recommendation_id = impression_ids.new_id(now_ms)
        record = {
            "r": recommendation_id,
            "c": now_ms,
            "s": surface,
            "u": user_id or "",
            "q": source_item_id or "",
            "m": model_version,
            "e": experiment or "",
            "x": variant or "",
            "o": offset,
            "f": dict(filters),
            "i": [[item_id, score] for item_id, score in items],
        }
        if explored:
            record["a"] = dict(explored)
        line = json.dumps(record, separators=(",", ":")).encode() + b"\n"
        try:
            self.journal.append(line)
        except OSError as exc:
            raise ImpressionsUnavailable(f"impression journal cannot write: {exc}") from exc
        return recommendation_id

    def _ship(self, lines: list[bytes]) -> None:
        """Store journal lines in the stream: one script call, which parses them (the journal's
        shipper; idempotent)."""
        args: list[Any] = [
            int(time.time() * 1000),
            self.retention_ms,
            self.settings.impression_max_entries,
            USER_RECENT,
            self.window_ms,
            f"{self.prefix}:",
            *self.experiment_key("\0", "\0").split("\0"),  # no NUL in the prefix (an environment variable)
            BY_USER,
            *(line.rstrip(b"\n") for line in lines),
        ]
        self.run(lambda client: self._store(keys=[self.stream, self.erasures], args=args, client=client))

    def _erasures_since(self, since_ms: int) -> dict[str, int]:
        """The erasures (user hash -> time) recorded at or after ``since_ms`` (a journal's shipper
        blanks those users' lines)."""
        rows = self.run(lambda client: client.zrangebyscore(self.erasures, since_ms, "+inf", withscores=True))
        return {_text(user): int(at) for user, at in rows}

    def settle(self) -> None:
        """Put every impression recorded on this host so far into the stream (see Journal.settle)."""
        self.journal.settle()

    # --- reads --------------------------------------------------------------------------------

    def entries(self, entry_ids: Iterable[str]) -> dict[str, Impression]:
        """The impressions still kept under these entry ids (one round trip)."""
        wanted = list(dict.fromkeys(entry_ids))
        if not wanted:
            return {}

        def fetch(client: redis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for entry_id in wanted:
                pipe.xrange(self.stream, entry_id, entry_id, count=1)
            return pipe.execute()

        found: dict[str, Impression] = {}
        for rows in self.run(fetch):
            for entry_id, fields in rows:
                impression = _impression(_text(entry_id), fields)
                found[impression.entry_id] = impression
        return found

    def by_ids(self, recommendation_ids: Iterable[str]) -> dict[str, Impression]:
        """The impressions still kept under these recommendation ids (at most two round trips).

        Call :meth:`settle` first to see impressions recorded a moment ago.
        """
        wanted = list(dict.fromkeys(recommendation_ids))
        legacy = {rid: ref for rid in wanted if (ref := impression_ids.decode_legacy(rid)) is not None}
        current = [rid for rid in wanted if rid not in legacy]
        found: list[Impression] = []
        if current:
            keys = [self.id_key(rid) for rid in current]
            replies = self.run(lambda client: self._by_id(keys=keys, args=[self.stream], client=client))
            found += [  # a script's reply has the fields as one flat list
                _impression(_text(e), dict(zip(flat[::2], flat[1::2], strict=True)))
                for rows in replies
                for e, flat in rows
            ]
        found += self.entries(entry_id for entry_id, _tag in legacy.values()).values()
        return {i.recommendation_id: i for i in found if i.recommendation_id in wanted}

    def get(self, recommendation_id: str) -> Impression | None:
        """The impression with this id, if it is one of ours and still kept (recorded on this
        host a moment ago included)."""
        self.settle()
        wanted = recommendation_id.lower()
        return self.by_ids([wanted]).get(wanted)

    def recent_entry_ids(self, user_ids: Iterable[str]) -> dict[str, list[str]]:
        """Each user's newest impression entry ids, newest first (one round trip)."""
        users = list(dict.fromkeys(user_ids))
        if not users:
            return {}

        def fetch(client: redis.Redis) -> list[Any]:
            pipe = client.pipeline(transaction=False)
            for user_id in users:
                pipe.lrange(self.user_key(user_id), 0, USER_RECENT - 1)
            return pipe.execute()

        return {user: [_text(e) for e in ids] for user, ids in zip(users, self.run(fetch), strict=True)}

    def attributed(self, entry_id: str) -> list[dict[str, Any]]:
        """The events attributed to an impression, oldest first."""
        rows = self.run(lambda client: client.hgetall(self.attributed_key(entry_id)))
        events = [json.loads(_text(row)) for name, row in rows.items() if not _text(name).startswith(FLAG)]
        return sorted(events, key=lambda e: (e["attributed_at"], e["event_id"]))

    def length(self) -> int:
        """How many impressions are kept (recorded on this host so far included)."""
        self.settle()
        return int(self.run(lambda client: client.xlen(self.stream)))

    # --- erasure (DELETE /v1/users/{id}) ------------------------------------------------------

    # KEYS: stream; ARGV: user id, start id (inclusive; '(' + id: exclusive), entries to read.
    # Returns the last entry id read ('' when none), the user's entry ids, and the entry ids
    # without a user (anonymous similar items, whose attributed events may be the user's).
    _SCAN_USER = """
local rows = redis.call('XRANGE', KEYS[1], ARGV[2], '+', 'COUNT', tonumber(ARGV[3]))
local mine, anonymous = {}, {}
for _, row in ipairs(rows) do
  local fields = row[2]
  for j = 1, #fields, 2 do
    if fields[j] == 'u' then
      if fields[j + 1] == ARGV[1] then
        mine[#mine + 1] = row[1]
      elseif fields[j + 1] == '' then
        anonymous[#anonymous + 1] = row[1]
      end
      break
    end
  end
end
local last = ''
if #rows > 0 then last = rows[#rows][1] end
return {last, mine, anonymous}
"""

    # Deleting a stream entry (XDEL) only flags it: its bytes stay in its node, and in every
    # snapshot and AOF rewrite of the stream, until every entry of the node is deleted. So an
    # erasure rebuilds the stream (compact): it copies the kept entries, in scans, to a new key
    # with the same ids, then puts the copy in the stream's place. Entries deleted meanwhile are
    # deleted from the copies too (_DELETE: every copy in progress is listed in ``copies``);
    # entries shipped meanwhile come after the last one copied; the oldest trimmed meanwhile are
    # trimmed from the copy at the end.

    # KEYS: stream, copies, compaction owed. ARGV: entry ids. Deletes them from the stream and from
    # every copy in progress (forgetting copies that are gone), and marks a rebuild owed until one
    # is done (an erasure cut off before its rebuild leaves the mark to the next); returns how many
    # the stream had.
    _DELETE = """
local deleted = redis.call('XDEL', KEYS[1], unpack(ARGV))
if deleted > 0 then
  redis.call('SET', KEYS[3], '1')
end
for _, copy in ipairs(redis.call('SMEMBERS', KEYS[2])) do
  if redis.call('EXISTS', copy) == 1 then
    redis.call('XDEL', copy, unpack(ARGV))
  else
    redis.call('SREM', KEYS[2], copy)
  end
end
return deleted
"""

    # KEYS: stream, copy, copies. ARGV: start id ('-', or '(' + the last id copied), entries to
    # copy, the copy's ttl (ms). Returns the last id copied ('' when none) and how many; false
    # when the copy expired since the last call.
    _COPY = """
if ARGV[1] ~= '-' and redis.call('EXISTS', KEYS[2]) == 0 then
  return false
end
local rows = redis.call('XRANGE', KEYS[1], ARGV[1], '+', 'COUNT', tonumber(ARGV[2]))
for _, row in ipairs(rows) do
  redis.call('XADD', KEYS[2], row[1], unpack(row[2]))
end
if #rows == 0 then
  return {'', 0}
end
redis.call('SADD', KEYS[3], KEYS[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
return {rows[#rows][1], #rows}
"""

    # KEYS: stream, copy, copies, compaction owed. ARGV: start id of what is left to copy. Copies
    # the rest, trims from the copy what the stream's trimming took off since, and puts the copy in
    # the stream's place with the stream's ids (last, deleted, count added); no rebuild is owed
    # then (every deletion so far reached the copy). Returns 1, or 0 when the copy expired or does
    # not hold exactly the stream's entries (it is dropped: copy again).
    _SWAP = """
redis.call('SREM', KEYS[3], KEYS[2])
if ARGV[1] ~= '-' and redis.call('EXISTS', KEYS[2]) == 0 then
  return 0
end
local first = redis.call('XRANGE', KEYS[1], '-', '+', 'COUNT', 1)
if #first == 0 then
  redis.call('DEL', KEYS[2], KEYS[4])
  return 1
end
for _, row in ipairs(redis.call('XRANGE', KEYS[1], ARGV[1], '+')) do
  redis.call('XADD', KEYS[2], row[1], unpack(row[2]))
end
redis.call('XTRIM', KEYS[2], 'MINID', first[1][1])
if redis.call('XLEN', KEYS[2]) ~= redis.call('XLEN', KEYS[1]) then
  redis.call('DEL', KEYS[2])
  return 0
end
local info, meta = redis.call('XINFO', 'STREAM', KEYS[1]), {}
for i = 1, #info, 2 do
  meta[info[i]] = info[i + 1]
end
redis.call('XSETID', KEYS[2], meta['last-generated-id'], 'ENTRIESADDED', meta['entries-added'],
  'MAXDELETEDID', meta['max-deleted-entry-id'])
redis.call('RENAME', KEYS[2], KEYS[1])
redis.call('PERSIST', KEYS[1])
redis.call('DEL', KEYS[4])
return 1
"""

    def erase_user(self, user_id: str, now_ms: int, chunk: int = 500) -> ErasedImpressions:
        """Delete every kept impression of ``user_id``, the events attributed to them (with their
        claims), the user's events attributed to anonymous impressions, and the user's index; and
        their lines in this host's impression journals.

        Idempotent (a second call deletes nothing). The stream has no index by user beyond the
        newest :data:`USER_RECENT`, so this reads it in server-side scans of ``chunk`` entries
        (each a short Lua call that returns only ids): its cost grows with the stream, which
        retention bounds. Experiment counters are aggregates and stay; a variant's user count is
        a HyperLogLog, which keeps no ids; the user's per-user totals in every experiment's
        variants are deleted and taken out of the sums over users beside them.

        The erasure is recorded before the stream is read (the hash of the id at ``now_ms``, kept
        for the retention): from then on no host stores a line of the user recorded before it, and
        every process blanks such lines in its journals within
        :data:`~kgrec.impression_journal.ORPHAN_SCAN_S`.
        """
        mark = user_hash(user_id)

        def record(client: redis.Redis) -> None:
            pipe = client.pipeline(transaction=True)
            pipe.zadd(self.erasures, {mark: now_ms})
            pipe.zremrangebyscore(self.erasures, "-inf", f"({now_ms - self.retention_ms}")
            pipe.pexpire(self.erasures, self.retention_ms)
            pipe.execute()

        self.settle()  # this host's lines into the stream first, where they are counted and deleted
        self.run(record)
        scan = self.client().register_script(self._SCAN_USER)
        start, erased = "-", 0
        while True:
            args = [user_id, start, chunk]
            last, mine, anonymous = self.run(
                lambda client, args=args: scan(keys=[self.stream], args=args, client=client)
            )
            erased += self._erase_entries([_text(e) for e in mine])
            self._erase_attributed_events(user_id, [_text(e) for e in anonymous])
            if not last:
                break
            start = f"({_text(last)}"
        self.run(lambda client: client.delete(self.user_key(user_id)))
        self._erase_experiment_totals(user_id)
        compacted = None
        if erased or self.run(lambda client: client.exists(self.compaction_owed)):
            compacted = self.compact(chunk)
        return ErasedImpressions(erased, self.journal.scrub({mark: now_ms}), compacted)

    def compact(self, chunk: int = 500) -> bool:
        """Rebuild the stream without the bytes of its deleted entries (which ``XDEL`` leaves in
        their node); the entries, their ids and the stream's own ids stay as they are.

        Copies the stream in server-side scans of ``chunk`` entries (one short Lua call each), so
        it costs a scan of the stream and a copy of what it keeps, and memory for the copy while
        it is made. A copy spoiled meanwhile (it expired, or did not match) is made again, up to
        :data:`COPY_ATTEMPTS` copies; False when none matched: the rebuild stays owed
        (``compaction_owed``), and the next erasure makes it, whether or not it deletes anything.
        """
        for _attempt in range(COPY_ATTEMPTS):
            if self._copy_and_swap(chunk):
                return True
            log.warning("impressions: a copy of %s was spoiled while it was made; copying again", self.stream)
        return False

    def _copy_and_swap(self, chunk: int) -> bool:
        """Copy the stream and put the copy in its place (:attr:`_COPY`, :attr:`_SWAP`); False when
        the copy was spoiled."""
        client = self.client()
        copy, swap = client.register_script(self._COPY), client.register_script(self._SWAP)
        keys = [self.stream, f"{self.stream}:copy:{uuid.uuid4().hex}", self.copies, self.compaction_owed]
        start, copied = "-", chunk
        while copied >= chunk:  # a short scan: the rest is copied with the swap
            args = [start, chunk, COPY_TTL_MS]
            reply = self.run(lambda client, args=args: copy(keys=keys, args=args, client=client))
            if reply is None:
                return False
            last, copied = _text(reply[0]), int(reply[1])
            start = f"({last}" if last else start
        return bool(self.run(lambda client: swap(keys=keys, args=[start], client=client)))

    def rewrite_log(self) -> str:
        """Rewrite the store's append-only file after an erasure (:func:`kgrec.erasure.rewrite_log`):
        the impressions server's, or under REDIS_URL that Redis's, which holds the broker and the
        job results too."""
        return self.run(erasure.rewrite_log)

    def _erase_entries(self, entry_ids: list[str]) -> int:
        """Delete impressions with their attributed events and those events' claims; how many were kept."""
        if not entry_ids:
            return 0
        delete = self.client().register_script(self._DELETE)

        def erase(client: redis.Redis) -> int:
            read = client.pipeline(transaction=False)
            for entry_id in entry_ids:
                read.hkeys(self.attributed_key(entry_id))
            events = [_text(e) for names in read.execute() for e in names if not _text(e).startswith(FLAG)]
            write = client.pipeline(transaction=True)
            delete(keys=[self.stream, self.copies, self.compaction_owed], args=entry_ids, client=write)
            write.delete(*(self.attributed_key(e) for e in entry_ids), *(self.claim_key(e) for e in events))
            return int(write.execute()[0])

        return self.run(erase)

    # KEYS: one variant's per-user hashes (PER_USER_METRICS' order: impressions first). ARGV: a user
    # id. Takes the user's totals out of the sums beside them and deletes them; idempotent.
    _ERASE_TOTALS = (
        PER_USER_SUMS
        + """
local n = tonumber(redis.call('HGET', KEYS[1], ARGV[1])) or 0
for i = 2, #KEYS do
  local x = tonumber(redis.call('HGET', KEYS[i], ARGV[1]))
  if x then
    add_sum(KEYS[i], 'sum', -x)
    add_sum(KEYS[i], 'sum_sq', -x * x)
    add_sum(KEYS[i], 'sum_n', -x * n)
    redis.call('HDEL', KEYS[i], ARGV[1])
  end
end
if redis.call('HDEL', KEYS[1], ARGV[1]) == 1 then
  add_sum(KEYS[1], 'users', -1)
  add_sum(KEYS[1], 'sum', -n)
  add_sum(KEYS[1], 'sum_sq', -n * n)
end
"""
    )

    def _erase_experiment_totals(self, user_id: str) -> None:
        """Delete ``user_id``'s per-user totals in every experiment's variants, and take them out of
        the sums kept beside them (after the erasure is recorded, so no impression or claim of
        theirs adds them back)."""
        erase_totals = self.client().register_script(self._ERASE_TOTALS)

        def erase(client: redis.Redis) -> None:
            definitions = client.hvals(f"{self.prefix}:experiments")
            write = client.pipeline(transaction=True)
            for text in definitions:
                definition = json.loads(text)
                for variant in definition["variants"]:
                    keys = [
                        self.experiment_user_key(definition["id"], variant["name"], metric)
                        for metric in PER_USER_METRICS
                    ]
                    erase_totals(keys=keys, args=[user_id], client=write)
            write.execute()

        self.run(erase)

    def _erase_attributed_events(self, user_id: str, entry_ids: list[str]) -> None:
        """Remove ``user_id``'s events (and their claims) from anonymous impressions' attributions."""
        if not entry_ids:
            return

        def erase(client: redis.Redis) -> None:
            read = client.pipeline(transaction=False)
            for entry_id in entry_ids:
                read.hgetall(self.attributed_key(entry_id))
            write = client.pipeline(transaction=True)
            for entry_id, rows in zip(entry_ids, read.execute(), strict=True):
                events = [
                    _text(name)
                    for name, row in rows.items()
                    if not _text(name).startswith(FLAG) and json.loads(_text(row)).get("user_id") == user_id
                ]
                if events:
                    write.hdel(self.attributed_key(entry_id), *events)
                    write.delete(*(self.claim_key(e) for e in events))
            write.execute()

        self.run(erase)
