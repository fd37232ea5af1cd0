"""Sentence templates for explanation paths, one per knowledge relation.

The bundled ``kgrec/relation_sentences.toml`` gives the built-in relations
theirs; a user file (``KGREC_RELATION_SENTENCES``) is read after it, replacing
and adding relations one by one. A relation without a template falls back to a
sentence built from its readable name (:func:`relation_label`). Every template
is checked when the files are loaded, so a typo stops the service at start-up
with one line that names the file and the relation, not a request later.
"""

from __future__ import annotations

import re
import stat
import string
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from graph_schema.relation_names import relation_problem

__all__ = ["PLACEHOLDERS", "RelationSentences", "SentenceTemplateError", "load_sentences", "relation_label"]

BUNDLED = "relation_sentences.toml"

# What each table's templates may say.
PLACEHOLDERS: dict[str, frozenset[str]] = {
    "item_entity": frozenset({"hub", "target", "verb", "relation", "entity", "kind"}),
    "item_item": frozenset({"hub", "target", "verb", "relation"}),
}
DIRECTIONS = ("out", "in")

_SEGMENT = re.compile(r"[./:]+")
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_SEPARATORS = re.compile(r"[_\-\s]+")


class SentenceTemplateError(ValueError):
    """A sentence file that cannot be used; the message is one line naming the file and the entry."""


def relation_label(name: str) -> str:
    """A relation's readable name: its last segment, in words.

    ``film.film.genre`` → ``genre``, ``rdf:type`` → ``type``, ``also_bought`` →
    ``also bought``, ``dbo:birthPlace`` → ``birth place``; upper-case codes such
    as ``P31`` stay as they are.
    """
    segments = [s for s in _SEGMENT.split(name) if s.strip("_-")]
    last = segments[-1] if segments else name
    if not last.isupper():
        last = _CAMEL.sub(" ", last).lower()
    return _SEPARATORS.sub(" ", last).strip() or name


def _check_template(source: str, where: str, table: str, template: object) -> str:
    if not isinstance(template, str):
        raise SentenceTemplateError(f"{source}: {where}: a template must be a string, not {template!r}")
    allowed = PLACEHOLDERS[table]
    try:
        fields = list(string.Formatter().parse(template))
    except ValueError as error:
        raise SentenceTemplateError(f"{source}: {where}: {error} in {template!r}") from None
    for _, field, spec, conversion in fields:
        if field is None:
            continue
        if field not in allowed:
            raise SentenceTemplateError(  # quoted: a name may hold a line break, and the reason is one line
                f"{source}: {where}: unknown placeholder {'{' + field + '}'!r} "
                f"(allowed: {', '.join('{' + p + '}' for p in sorted(allowed))})"
            )
        if spec or conversion:
            raise SentenceTemplateError(
                f"{source}: {where}: write {{{field}}} without a format or conversion"
            )
    return template


def _directions(source: str, where: str, value: object) -> dict[str, str]:
    """An item–item template: one string for both directions, or ``{out, in}``."""
    if isinstance(value, Mapping):
        unknown = set(value) - set(DIRECTIONS)
        if unknown or set(value) != set(DIRECTIONS):
            raise SentenceTemplateError(
                f"{source}: {where}: give exactly 'out' and 'in' (got {sorted(value)})"
            )
        return {d: _check_template(source, f"{where}.{d}", "item_item", value[d]) for d in DIRECTIONS}
    template = _check_template(source, where, "item_item", value)
    return {d: template for d in DIRECTIONS}


@dataclass(frozen=True)
class RelationSentences:
    """Checked templates: per relation, and the fallbacks."""

    item_entity: Mapping[str, str]
    item_item: Mapping[str, Mapping[str, str]]  # relation -> {"out": ..., "in": ...}
    fallback_item_entity: str
    fallback_item_item: Mapping[str, str]

    def shared_attribute(
        self, relation: str, *, hub: str, target: str, verb: str, entity: str, kind: str | None
    ) -> str:
        """The sentence for user → hub -[relation]-> entity <-[relation]- target."""
        template = self.item_entity.get(relation, self.fallback_item_entity)
        return template.format(
            hub=hub,
            target=target,
            verb=verb,
            entity=entity,
            kind=kind or "entity",
            relation=relation_label(relation),
        )

    def related_item(self, relation: str, direction: str, *, hub: str, target: str, verb: str) -> str:
        """The sentence for user → hub -[relation]- target (``direction`` out: hub → target)."""
        templates = self.item_item.get(relation, self.fallback_item_item)
        label = relation_label(relation)
        return templates[direction].format(hub=hub, target=target, verb=verb, relation=label)


def _merge(source: str, data: Mapping[str, Any], into: dict[str, Any]) -> None:
    unknown = set(data) - {"fallback", "item_entity", "item_item"}
    if unknown:
        raise SentenceTemplateError(
            f"{source}: unknown table {sorted(unknown)[0]!r} (expected fallback, item_entity, item_item)"
        )
    fallback = data.get("fallback", {})
    if not isinstance(fallback, Mapping) or set(fallback) - {"item_entity", "item_item"}:
        raise SentenceTemplateError(f"{source}: [fallback] takes item_entity and item_item only")
    if "item_entity" in fallback:
        into["fallback_item_entity"] = _check_template(
            source, "fallback.item_entity", "item_entity", fallback["item_entity"]
        )
    if "item_item" in fallback:
        into["fallback_item_item"] = _directions(source, "fallback.item_item", fallback["item_item"])
    for table in ("item_entity", "item_item"):
        entries = data.get(table, {})
        if not isinstance(entries, Mapping):
            raise SentenceTemplateError(f"{source}: [{table}] must be a table of relation = template")
        for relation, value in entries.items():
            problem = relation_problem(relation)
            if problem is not None:
                raise SentenceTemplateError(f"{source}: [{table}] relation {problem}")
            where = f"relation {relation!r}"
            into[table][relation] = (
                _check_template(source, where, table, value)
                if table == "item_entity"
                else _directions(source, where, value)
            )


def _read(source: str, text: str) -> dict[str, Any]:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as error:
        raise SentenceTemplateError(f"{source}: not valid TOML: {error}") from None


MAX_FILE_BYTES = 1 << 20  # far above any set of sentences: a bigger file is a wrong path


def _file_text(path: Path) -> str:
    # A regular file only (a FIFO or a device would block or never end), read with its byte-order
    # mark left out, which TOML does not allow but editors write.
    status = path.stat()  # OSError (missing, no permission): the caller's "cannot read"
    if not stat.S_ISREG(status.st_mode):
        raise SentenceTemplateError(f"{path}: not a regular file")
    size = status.st_size
    if size > MAX_FILE_BYTES:
        raise SentenceTemplateError(f"{path}: {size:,} bytes, more than {MAX_FILE_BYTES:,}")
    return path.read_text(encoding="utf-8-sig")


def load_sentences(path: Path | None = None) -> RelationSentences:
    """The bundled templates, then ``path``'s (if given) over them; raises SentenceTemplateError."""
    merged: dict[str, Any] = {"item_entity": {}, "item_item": {}}
    bundled = resources.files("kgrec").joinpath(BUNDLED)
    _merge(f"kgrec/{BUNDLED}", _read(f"kgrec/{BUNDLED}", bundled.read_text(encoding="utf-8")), merged)
    if path is not None:
        try:
            text = _file_text(Path(path))
        except OSError as error:
            raise SentenceTemplateError(f"{path}: cannot read: {error.strerror or error}") from None
        except UnicodeDecodeError as error:
            raise SentenceTemplateError(
                f"{path}: not UTF-8 (byte {error.object[error.start]:#04x} at offset {error.start})"
            ) from None
        _merge(str(path), _read(str(path), text), merged)
    missing = {"fallback_item_entity", "fallback_item_item"} - set(merged)
    if missing:
        raise SentenceTemplateError(f"kgrec/{BUNDLED}: [fallback] lacks {sorted(missing)[0][9:]}")
    return RelationSentences(**merged)
