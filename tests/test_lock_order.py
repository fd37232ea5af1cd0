"""The write locks of the ABOUT writers' node and the model versions are taken in one order.

On Neo4j a write statement locks each node it writes when it writes it (and holds the lock to the
commit); two statements that lock the same nodes in different orders can deadlock (one is rolled
back with a transient error). The order, documented beside ``ABOUT_REVISION``
(``graph_schema/statements/topics.py``): the ABOUT writers' ``Revision`` node first, then
``ModelVersion`` nodes; a statement that may lock several versions takes the Revision's lock
first, so such statements queue on it. FalkorDB runs one write at a time, so no run shows a
deadlock: this reads the statement texts, in the order their clauses write.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pytest

from graph_schema.catalogue import Statement, all_statements, write

WRITES = [s for s in all_statements() if s.mode == "write"]
REVISION, VERSION = "Revision", "ModelVersion"  # the ABOUT writers' Revision {id: 'about'}

# A node pattern binding a variable: its label and whether it names one node by `id`.
NODE = re.compile(r"\((\w+):(\w+)\s*(\{[^}]*\})?")
CLAUSE = re.compile(
    r"\b(ON\s+CREATE\s+SET|ON\s+MATCH\s+SET|SET|REMOVE|DETACH\s+DELETE|DELETE|MERGE|OPTIONAL\s+MATCH|"
    r"MATCH|WITH|RETURN|UNWIND|WHERE|FOREACH|ORDER\s+BY|LIMIT|CALL)\b",
    re.IGNORECASE,
)
ITEM_TARGET = re.compile(r"^\s*(\w+)\s*(?:\.|:|\+=|=|$)")


@dataclass(frozen=True)
class Binding:
    """What a statement's variable is bound to: a node label, and whether one node."""

    label: str
    one: bool  # pinned to one node by its id (or the Revision's fixed id)


# Bindings that carry a node variable on: `collect(v) AS vs` (the list of v's nodes; also as the
# last branch of a CASE, `ELSE collect(v) END AS vs`), and
# `UNWIND … AS x` / `FOREACH (x IN … |` (each element of a list naming a bound variable).
COLLECT = re.compile(r"\bcollect\(\s*(?:DISTINCT\s+)?(\w+)\s*\)(?:\s+END)?\s+AS\s+(\w+)", re.IGNORECASE)
UNWIND = re.compile(r"\bUNWIND\b(.*?)\bAS\s+(\w+)", re.IGNORECASE | re.DOTALL)
FOREACH = re.compile(r"\bFOREACH\s*\(\s*(\w+)\s+IN\b(.*?)\|", re.IGNORECASE | re.DOTALL)


def bindings(cypher: str) -> dict[str, Binding]:
    """Each variable bound to nodes: by a labelled node pattern (its label, and whether it is one
    node), or carried on from one by ``collect``, ``UNWIND`` or ``FOREACH`` (several nodes, or as
    many as the list it walks)."""
    found: dict[str, Binding] = {}
    events = [(m.start(), "node", m) for m in NODE.finditer(cypher)]
    events += [
        (m.start(), kind, m)
        for kind, rx in (("collect", COLLECT), ("unwind", UNWIND), ("foreach", FOREACH))
        for m in rx.finditer(cypher)
    ]
    for _, kind, match in sorted(events, key=lambda e: e[0]):
        if kind == "node":
            var, label, props = match.groups()
            if label == REVISION and not re.search(r"\bid\s*:\s*'about'", props or ""):
                label = "another Revision"  # the catalogue's, the rules'...: not the ABOUT writers' lock
            one = bool(props) and re.search(r"\bid\s*:", props) is not None
            found.setdefault(var, Binding(label, one))
        elif kind == "collect":
            source, var = match.groups()
            if source in found:
                found.setdefault(var, Binding(found[source].label, False))
        else:
            var, walked = match.groups() if kind == "foreach" else reversed(match.groups())
            sources = [found[name] for name in re.findall(r"\b\w+\b", walked) if name in found]
            if sources:
                found.setdefault(var, Binding(sources[0].label, all(b.one for b in sources)))
    return found


def top_level_items(text: str) -> list[str]:
    """``text`` split at the commas outside brackets and CASE expressions."""
    items, depth, start = [], 0, 0
    for match in re.finditer(r"[()\[\]{},]|\bCASE\b|\bEND\b", text, re.IGNORECASE):
        token = match.group().upper()
        if token in ("(", "[", "{", "CASE"):
            depth += 1
        elif token in (")", "]", "}", "END"):
            depth -= 1
        elif depth == 0:
            items.append(text[start : match.start()])
            start = match.end()
    items.append(text[start:])
    return items


def locks(statement: Statement) -> list[str]:
    """The variables ``statement`` write-locks, in the order it first writes them: the targets of
    SET, REMOVE and DELETE, and the ends of a relationship MERGE creates. (MERGE of a lone node and
    ON CREATE SET lock only a node they create, which no other transaction holds.)"""
    text = statement.cypher
    marks = list(CLAUSE.finditer(text))
    order: list[str] = []
    for k, mark in enumerate(marks):
        keyword = " ".join(mark.group().upper().split())
        body = text[mark.end() : marks[k + 1].start() if k + 1 < len(marks) else len(text)]
        targets: list[str] = []
        if keyword in ("SET", "ON MATCH SET", "REMOVE", "DELETE", "DETACH DELETE"):
            targets = [m.group(1) for item in top_level_items(body) if (m := ITEM_TARGET.match(item))]
        elif keyword == "MERGE" and re.search(r"\)\s*<?-", body):
            targets = re.findall(r"\((\w+)[:)\s{]", body)
        for target in targets:
            if target not in order:
                order.append(target)
    return order


@dataclass(frozen=True)
class LockOrder:
    """Which of the two kinds of node a statement locks, in order, and whether it may lock several
    versions (a version bound by a scan, or two version variables)."""

    kinds: list[str]
    several_versions: bool

    @classmethod
    def of(cls, statement: Statement) -> LockOrder:
        bound = bindings(statement.cypher)
        locked = [v for v in locks(statement) if v in bound and bound[v].label in (REVISION, VERSION)]
        versions = [v for v in locked if bound[v].label == VERSION]
        several = len(versions) > 1 or any(not bound[v].one for v in versions)
        return cls([bound[v].label for v in locked], several)

    def problem(self) -> str | None:
        """Why the order breaks the rule, or None."""
        if VERSION not in self.kinds:
            return None
        if REVISION in self.kinds and self.kinds[0] != REVISION:
            return "locks a ModelVersion before the ABOUT writers' Revision"
        if self.several_versions and REVISION not in self.kinds:
            return "may lock several ModelVersion nodes without first locking the ABOUT writers' Revision"
        return None


@pytest.mark.parametrize("statement", WRITES, ids=lambda s: s.name)
def test_every_write_statement_takes_the_revision_lock_before_the_version_locks(statement: Statement) -> None:
    assert LockOrder.of(statement).problem() is None


def test_the_statements_that_take_both_locks_are_the_ones_the_rule_is_about() -> None:
    # the reading finds them (a rule the parser never applied would pass every statement)
    both = {s.name for s in WRITES if {REVISION, VERSION} <= set(LockOrder.of(s).kinds)}
    assert {
        "activate_model_version",
        "activate_owned_model_version",
        "activate_child_version",
        "erase_user",
        "forget_about_written",
        "mark_about_written",
    } <= both


ABOUT = "MERGE (r:Revision {id: 'about'}) ON CREATE SET r.created_at = $now"
# name: (statement breaking the rule, the same statement in the documented order)
CONTROLS = {
    "a version locked before the Revision": (
        f"MATCH (target:ModelVersion {{id: $id}}) {ABOUT} SET target.write_lock = true, r.write_lock = true "
        "SET r.write_lock = null, target.write_lock = null RETURN 1 AS done",
        f"MATCH (target:ModelVersion {{id: $id}}) {ABOUT} SET r.write_lock = true, target.write_lock = true "
        "SET r.write_lock = null, target.write_lock = null RETURN 1 AS done",
    ),
    "every version switched without the Revision": (
        "MATCH (t:ModelVersion {id: $id}) SET t.write_lock = true WITH t MATCH (m:ModelVersion) "
        "SET m.write_lock = null, m.active = (m.id = $id) RETURN count(*) AS n",
        f"MATCH (t:ModelVersion {{id: $id}}) {ABOUT} SET r.write_lock = true, t.write_lock = true WITH r, t "
        "SET r.write_lock = null WITH t MATCH (m:ModelVersion) SET m.write_lock = null, m.active = (m.id = $id) "
        "RETURN count(*) AS n",
    ),
    "marks removed before the Revision is locked": (
        f"{ABOUT} WITH r OPTIONAL MATCH (m:ModelVersion) REMOVE m.about_from WITH r, count(m) AS n "
        "SET r.write_lock = true SET r.write_lock = null RETURN n",
        f"{ABOUT} SET r.write_lock = true WITH r SET r.write_lock = null WITH r OPTIONAL MATCH (m:ModelVersion) "
        "REMOVE m.about_from RETURN count(m) AS n",
    ),
    "a relationship merged onto a scanned version first": (
        f"MATCH (m:ModelVersion) MATCH (t:Topic {{id: $t}}) MERGE (m)-[:HAS_TOPIC]->(t) WITH m {ABOUT} "
        "SET r.write_lock = true RETURN count(m) AS n",
        f"{ABOUT} SET r.write_lock = true WITH r MATCH (m:ModelVersion) MATCH (t:Topic {{id: $t}}) "
        "MERGE (m)-[:HAS_TOPIC]->(t) RETURN count(m) AS n",
    ),
    "versions reached through collect, UNWIND and FOREACH": (
        "MATCH (u:User {id: $u}) OPTIONAL MATCH (v:ModelVersion)-[:EMBEDDING]->(u) WITH collect(v) AS vs "
        "UNWIND vs AS m FOREACH (x IN [m] | SET x.adjusted_at = $now) RETURN count(*) AS n",
        f"{ABOUT} SET r.write_lock = true WITH r MATCH (u:User {{id: $u}}) "
        "OPTIONAL MATCH (v:ModelVersion)-[:EMBEDDING]->(u) WITH collect(v) AS vs "
        "UNWIND vs AS m FOREACH (x IN [m] | SET x.adjusted_at = $now) RETURN count(*) AS n",
    ),
}


@pytest.mark.parametrize("name", sorted(CONTROLS))
def test_the_reading_flags_a_statement_out_of_order_and_passes_it_in_order(name: str) -> None:
    wrong, right = (
        write(name, text, **{p: "x" for p in re.findall(r"\$(\w+)", text)}) for text in CONTROLS[name]
    )
    assert LockOrder.of(wrong).problem() is not None
    assert LockOrder.of(right).problem() is None
