"""The KGAT/KGIN research layout: ``train.txt``/``test.txt``, ``kg_final.txt`` and the ``*_list.txt`` id maps.

A folder in this layout holds (each file may also be gzipped, ``name.txt.gz``):

- ``train.txt``, ``test.txt``: ``user item item ...`` per line, remapped integer ids;
- ``user_list.txt``, ``item_list.txt`` (optional): ``org_id remap_id [freebase_id]``,
  a header line first; without them the remapped integers are the ids;
- ``kg_final.txt`` (optional): ``head relation tail`` integer ids, where entities
  ``0 .. n_items-1`` are the items themselves;
- ``entity_list.txt``, ``relation_list.txt`` (optional): ``org_id remap_id``, where the
  org id is everything before the last field (amazon-book lists Freebase literals with
  spaces, and a few empty org ids).

Every pair is a ``purchase``. The files carry no time: records come in file order, but
that order is not a sequence (research code treats the lists as sets), so no ``ts`` or
``seq`` is set and leave-last-out's seeded tie-break picks the held-out item; ``--protocol
given-split`` evaluates on the data set's own test file instead.

An item end of a triple is the item's id as :meth:`KgatDataset.items` yields it.
Any other entity is its ``entity_list`` org id (a Freebase MID such as ``m.045wq1q``),
or ``e:<remap_id>`` when there is no entity list, or when the org id is no valid id or
already names an item or another entity. Relation names come from the relation URIs
through :func:`readable_relation`, and entity kinds from :func:`relation_kind`.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

from graph_schema.allow_list import ATTRIBUTE_RELATIONS
from graph_schema.relation_names import MAX_RELATION_LENGTH
from kgrec.datasets.records import (
    EntityRecord,
    InteractionRecord,
    ItemRecord,
    Problems,
    TripleRecord,
    find_file,
    open_text,
)
from kgrec.field_types import whole_number
from kgrec.limits import MAX_GRAPH_INTEGER, MAX_KIND_LENGTH, id_problem

# Namespaces shortened to a prefix; any other URI only loses its scheme (``http://``).
URI_PREFIXES: tuple[tuple[str, str], ...] = (
    ("http://rdf.freebase.com/ns/", ""),
    ("https://rdf.freebase.com/ns/", ""),
    ("http://www.w3.org/1999/02/22-rdf-syntax-ns#", "rdf:"),
    ("http://www.w3.org/2000/01/rdf-schema#", "rdfs:"),
    ("http://www.w3.org/2002/07/owl#", "owl:"),
    ("http://www.w3.org/2004/02/skos/core#", "skos:"),
    ("http://schema.org/", "schema:"),
    ("https://schema.org/", "schema:"),
    ("http://dbpedia.org/ontology/", "dbo:"),
    ("http://purl.org/dc/terms/", "dct:"),
    ("http://www.wikidata.org/prop/direct/", "wdt:"),
)
_SCHEME = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*://")
_NOT_RELATION_CHARACTER = re.compile(r"[^A-Za-z0-9._/:-]+")
_STAND_IN = re.compile(r"^r[0-9]+$")
_SUFFIX = re.compile(r"(?:_r[0-9]+)+$")  # what unique_relation_names appends to a name taken twice
_LAST_FIELD = re.compile(r"^(.*?)\s*(\S+)$", re.DOTALL)  # (everything before, last field)
_LAST_SEGMENT = re.compile(r"[A-Za-z0-9_-]+$")


def readable_relation(raw: str) -> str | None:
    """A valid relation name for a relation URI or label from a research data set; None if none is left.

    1. surrounding white space and ``<``/``>`` are dropped;
    2. a known namespace becomes its prefix (:data:`URI_PREFIXES`): Freebase's
       ``http://rdf.freebase.com/ns/`` is dropped, ``http://www.w3.org/1999/02/22-rdf-syntax-ns#type``
       becomes ``rdf:type``; any other URI loses only its scheme (``http://``);
    3. every run of characters a relation name may not hold (``#``, ``?``, ``(``, spaces,
       non-ASCII letters...) becomes one ``_``, and ``_`` is stripped from both ends;
    4. a name longer than 128 characters keeps its last 128 (the most specific part).

    ``film.film.genre`` stays ``film.film.genre``. A name with no letter or digit left gives
    None; the loaders then name the relation ``r<remap_id>``.
    """
    name = raw.strip().removeprefix("<").removesuffix(">").strip()
    for namespace, prefix in URI_PREFIXES:
        if name.startswith(namespace):
            name = prefix + name[len(namespace) :]
            break
    else:
        name = _SCHEME.sub("", name)
    name = _NOT_RELATION_CHARACTER.sub("_", name).strip("_")
    if len(name) > MAX_RELATION_LENGTH:
        name = name[-MAX_RELATION_LENGTH:].lstrip("_.:/-")
    if not any(c.isalnum() for c in name):
        return None
    return name


def relation_kind(relation: str) -> str | None:
    """The kind of entity ``relation`` points at: the relation's last segment, lower-cased.

    The segment is what follows the last ``.``, ``/`` or ``:`` (at most 64 characters, so
    it is a valid kind, :func:`kgrec.limits.kind_problem`).

    ``film.film.genre`` -> ``genre``, ``music.artist.origin`` -> ``origin``,
    ``rdf:type`` and ``type.object.type`` -> ``type``. None when nothing is left, and for
    the stand-in names ``r<remap_id>``, which say nothing about what they point at; the
    ``_r<remap_id>`` that :func:`unique_relation_names` appends is left out.
    """
    if _STAND_IN.fullmatch(relation):
        return None
    match = _LAST_SEGMENT.search(_SUFFIX.sub("", relation))
    return match.group(0).lower()[-MAX_KIND_LENGTH:] if match else None


def unique_relation_names(raw_names: dict[int, str]) -> dict[int, str]:
    """remap_id -> relation name for every listed relation, each name used once, whatever the input.

    A raw name :func:`readable_relation` cannot turn into a name becomes ``r<remap_id>``.
    The first relation (by remap id) with a name keeps it; a later one with the same name gets
    ``_r<remap_id>`` appended, then ``_r<remap_id>_r2``, ``_r<remap_id>_r3``... until the name is
    one no relation has (as its own name or given before): ``a``, ``a_r2``, ``a`` gives ``a``,
    ``a_r2``, ``a_r2_r2``.
    """
    bases = {remap: readable_relation(raw) or f"r{remap}" for remap, raw in sorted(raw_names.items())}
    owner: dict[str, int] = {}
    for remap, base in bases.items():
        owner.setdefault(base, remap)
    taken = set(owner)  # reserved up front, so a listed name is never handed to another relation
    names: dict[int, str] = {}
    for remap, base in bases.items():
        name = base
        attempt = 1
        while owner[base] != remap and name in taken:
            suffix = f"_r{remap}" if attempt == 1 else f"_r{remap}_r{attempt}"
            name = base[: MAX_RELATION_LENGTH - len(suffix)] + suffix
            attempt += 1
        taken.add(name)
        names[remap] = name
    return names


class EntityKinds:
    """Counts, per entity, the relations that point at it; its kind is the most frequent one's kind."""

    def __init__(self) -> None:
        self._counts: dict[tuple[str, str], int] = {}
        self._order: dict[str, None] = {}

    def add(self, entity_id: str, incoming: str | None) -> None:
        """Note ``entity_id`` (in first-seen order), reached through ``incoming`` (None: as a head)."""
        self._order[entity_id] = None
        if incoming is not None:
            key = (entity_id, incoming)
            self._counts[key] = self._counts.get(key, 0) + 1

    def kinds(self) -> Iterator[tuple[str, str | None]]:
        """``(entity_id, kind)`` in first-seen order; ties go to the relation name first in sort order."""
        best: dict[str, tuple[int, str]] = {}
        for (entity_id, relation), count in self._counts.items():
            candidate = (-count, relation)
            if entity_id not in best or candidate < best[entity_id]:
                best[entity_id] = candidate
        for entity_id in self._order:
            top = best.get(entity_id)
            yield entity_id, None if top is None else relation_kind(top[1])


def parse_index(token: str) -> int | None:
    """A remapped id: a non-negative ASCII integer (``007`` is 7); None for anything else."""
    return whole_number(token, MAX_GRAPH_INTEGER)


def read_id_list(
    path: Path, problems: Problems, what: str, free_text_ids: bool = False
) -> tuple[dict[int, str], int]:
    """``(remap_id -> org_id, 1 + largest remap_id)`` from a ``*_list.txt`` file.

    User and item lists are ``org_id remap_id [freebase_id ...]``: an org id that breaks
    the id rule is reported (the remap id still counts towards the size). Entity and
    relation lists (``free_text_ids``) are ``org_id remap_id`` where the org id is all
    that comes before the last field: KGAT's amazon-book lists Freebase literals such as
    ``"I Love You 25708``, and lines with an empty org id; callers decide what such an id
    becomes. The first line is a header when its remap id is not an integer. Other lines
    whose remap id is no integer, or is listed twice, are reported.
    """
    ids: dict[int, str] = {}
    size = 0
    with open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            text = line.strip()
            if not text:
                continue
            if free_text_ids:
                org_id, remap_text = _LAST_FIELD.match(text).groups()  # type: ignore[union-attr]
            else:
                parts = text.split()
                if len(parts) < 2:
                    problems.add(path, line_number, f"expected org_id remap_id, found {len(parts)} field(s)")
                    continue
                org_id, remap_text = parts[0], parts[1]
            remap = parse_index(remap_text)
            if remap is None:
                if line_number > 1:
                    problems.add(path, line_number, f"{what} remap_id {remap_text[:40]!r} is not an integer")
                continue
            if remap in ids:
                problems.add(path, line_number, f"{what} remap_id {remap} is listed twice")
                continue
            size = max(size, remap + 1)
            problem = None if free_text_ids else id_problem(org_id)
            if problem is not None:
                problems.add(path, line_number, f"{what} {remap}: org_id {problem}")
                continue
            ids[remap] = org_id
    return ids, size


def integer_lines(path: Path, width: int, problems: Problems) -> Iterator[tuple[int, list[int]]]:
    """``(line_number, ints)`` for each line of exactly ``width`` non-negative integers; others reported."""
    with open_text(path) as handle:
        for line_number, line in enumerate(handle, start=1):
            parts = line.split()
            if len(parts) == width and all(p.isascii() and p.isdigit() for p in parts):
                yield line_number, [int(p) for p in parts]
                continue
            if not parts:
                continue
            if len(parts) != width:
                problems.add(path, line_number, f"expected {width} fields, found {len(parts)}")
                continue
            bad = next(p for p in parts if parse_index(p) is None)
            problems.add(path, line_number, f"{bad[:40]!r} is not a non-negative integer")


class KgatDataset:
    """A folder in the KGAT/KGIN layout (module docstring). The built-in ``kgat-amazon-book`` is one."""

    flags_bots = False  # no timestamps
    SPLITS = ("train", "test")

    def __init__(self, folder: Path, name: str | None = None) -> None:
        self.folder = Path(folder)
        self.name = name or self.folder.name
        self.problems = Problems()
        self._listed_items = 0
        for stem in ("train.txt", "test.txt"):
            self._file(stem)
        self.users = self._org_ids("user_list.txt", "user")
        self.item_ids = self._org_ids("item_list.txt", "item")
        self._n_items: int | None = None
        self._seen_items: set[int] | None = None
        self._entities: dict[int, str] | None = None
        self._entity_names: dict[str, str] = {}
        self._relations: dict[int, str] | None = None

    def _file(self, stem: str) -> Path:
        path = find_file(self.folder, stem)
        if path is None:
            raise FileNotFoundError(f"{self.folder}: no {stem} or {stem}.gz")
        return path

    def _org_ids(self, stem: str, what: str) -> dict[int, str] | None:
        """remap_id -> org_id of a user/item list (None when the folder has none)."""
        path = find_file(self.folder, stem)
        if path is None:
            return None
        ids, size = read_id_list(path, self.problems, what)
        if what == "item":
            self._listed_items = size
        return ids

    def _user(self, token: str) -> str | None:
        remap = parse_index(token)
        if remap is None:
            return None
        return str(remap) if self.users is None else self.users.get(remap)

    def _item(self, remap: int) -> str | None:
        return str(remap) if self.item_ids is None else self.item_ids.get(remap)

    def split(self, name: str) -> Iterator[InteractionRecord]:
        """Interactions of one split (``train`` or ``test``), in file order."""
        path = self._file(f"{name}.txt")
        listed = "in user_list" if self.users is not None else "a non-negative integer"
        with open_text(path) as handle:
            for line_number, line in enumerate(handle, start=1):
                parts = line.split()
                if not parts:
                    continue
                user = self._user(parts[0])
                if user is None:
                    self.problems.add(path, line_number, f"user {parts[0][:40]!r} is not {listed}")
                    continue
                for token in parts[1:]:
                    remap = parse_index(token)
                    item = None if remap is None else self._item(remap)
                    if item is None:
                        reason = "is not an integer" if remap is None else "is not in item_list"
                        self.problems.add(path, line_number, f"item {token[:40]!r} {reason}")
                        continue
                    yield InteractionRecord(user, item, "purchase")

    def interactions(self) -> Iterator[InteractionRecord]:
        """Both splits: the import loads all the data; evaluation uses :meth:`split`."""
        for name in self.SPLITS:
            yield from self.split(name)

    def _split_items(self) -> set[int]:
        """Every item index the splits name (read once; without an item list these are the items)."""
        if self._seen_items is None:
            self._seen_items = set()
            for name in self.SPLITS:
                with open_text(self._file(f"{name}.txt")) as handle:
                    for line in handle:
                        for token in line.split()[1:]:
                            remap = parse_index(token)
                            if remap is not None:
                                self._seen_items.add(remap)
        return self._seen_items

    def n_items(self) -> int:
        """Items are entities ``0 .. n_items-1``: the item list's size, else 1 + the largest split item."""
        if self._n_items is None:
            if self.item_ids is not None:
                self._n_items = self._listed_items
            else:
                self._n_items = max(self._split_items(), default=-1) + 1
        return self._n_items

    def items(self) -> Iterator[ItemRecord]:
        """Every item of the item list (no titles or brands in this layout), else every item index
        the splits or ``kg_final.txt`` name, in index order.

        Only indexes that occur become items: one stray large id in a split moves the item/entity
        boundary, but creates no item for each index below it.
        """
        if self.item_ids is not None:
            return (ItemRecord(item_id) for item_id in self.item_ids.values())
        seen = set(self._split_items())
        n_items = self.n_items()
        path = find_file(self.folder, "kg_final.txt")
        if path is not None:
            for _, (h, _, t) in integer_lines(path, 3, Problems()):
                seen.update(index for index in (h, t) if index < n_items)
        return (ItemRecord(str(remap)) for remap in sorted(seen))

    def relation_names(self) -> dict[int, str]:
        """remap_id -> relation name, from ``relation_list.txt`` (empty without one: names are ``r<id>``)."""
        if self._relations is None:
            path = find_file(self.folder, "relation_list.txt")
            raw: dict[int, str] = {}
            if path is not None:
                raw, _ = read_id_list(path, self.problems, "relation", free_text_ids=True)
            self._relations = unique_relation_names(raw)
        return self._relations

    def _entity_ids(self) -> dict[int, str] | None:
        """remap_id -> id of every listed entity that is not an item (None without an entity list)."""
        if self._entities is None:
            path = find_file(self.folder, "entity_list.txt")
            if path is None:
                return None
            listed, _ = read_id_list(path, self.problems, "entity", free_text_ids=True)
            n_items = self.n_items()
            taken = {item.item_id for item in self.items()}
            self._entities = {}
            for remap, org_id in sorted(listed.items()):
                if remap < n_items:
                    continue
                entity_id = org_id
                if id_problem(org_id) is not None or org_id in taken:
                    entity_id = f"e:{remap}"
                    while entity_id in taken:  # only if the data itself uses such ids
                        entity_id += "_"
                taken.add(entity_id)
                self._entities[remap] = entity_id
                if id_problem(org_id) is None:
                    self._entity_names[entity_id] = org_id
        return self._entities

    def _kg_rows(self, problems: Problems) -> Iterator[tuple[int, int, str, int, str, str]]:
        """``(line, head index, head id, tail index, tail id, relation name)`` of each valid kg_final line.

        An end below ``n_items`` is an item (its listed id, else its index), any other an
        entity (its id from :meth:`_entity_ids`, else ``e:<index>``). Bad lines go to
        ``problems``: :meth:`triples` reports them, :meth:`entities` reads past them.
        """
        path = find_file(self.folder, "kg_final.txt")
        if path is None:
            return
        relations = self.relation_names()
        entities = self._entity_ids()
        n_items = self.n_items()
        known: dict[int, str] = {**(self.item_ids or {}), **(entities or {})}

        def unknown_end(index: int) -> str | None:
            if index < n_items:
                return None if self.item_ids is not None else str(index)
            return None if entities is not None else f"e:{index}"

        for line_number, (h, r, t) in integer_lines(path, 3, problems):
            relation = relations.get(r) if relations else f"r{r}"
            if relation is None:
                problems.add(path, line_number, f"relation {r} is not in relation_list")
                continue
            head = known.get(h) or unknown_end(h)
            tail = known.get(t) or unknown_end(t)
            if head is None or tail is None:
                index = h if head is None else t
                where = "item_list" if index < n_items else "entity_list"
                problems.add(path, line_number, f"entity {index} is not in {where}")
                continue
            yield line_number, h, head, t, tail, relation

    def triples(self) -> Iterator[TripleRecord]:
        """Knowledge triples of ``kg_final.txt`` (none without one), in file order."""
        for _, _, head, _, tail, relation in self._kg_rows(self.problems):
            yield TripleRecord(head, relation, tail)

    def entities(self) -> Iterator[EntityRecord]:
        """Every entity of ``kg_final.txt`` that is not an item, with its kind and its org id as name.

        The kind is :func:`relation_kind` of the relation that most often points at the
        entity; None when only ``r<id>`` names are known or nothing points at it. The tail of
        ``produced_by`` / ``belongs_to`` is a brand or category, not an entity.
        """
        kinds = EntityKinds()
        n_items = self.n_items()
        for _, h, head, t, tail, relation in self._kg_rows(Problems()):
            if h >= n_items:
                kinds.add(head, None)
            if t >= n_items and relation not in ATTRIBUTE_RELATIONS:
                kinds.add(tail, relation)
        for entity_id, kind in kinds.kinds():
            yield EntityRecord(entity_id, kind, self._entity_names.get(entity_id))
