"""The category tree: inferred for imports, checked before paths are written, walked safely.

Inference: a hierarchy from which items carry which categories.

Real catalogues (Amazon's among them) list an item's categories as an
unordered set that merges several paths, so kgrec does not trust the order.
A category's parent is the smallest other category that covers at least
``coverage`` of its items. For clean general→specific paths this yields exactly
those paths; ties in size are broken by the order categories were first seen,
so the result is deterministic and acyclic.
"""

from __future__ import annotations

import itertools
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

import numpy as np
from pydantic_core import PydanticCustomError

from graph_schema.statements.catalogue import CATEGORY_LINKS_ABOVE

if TYPE_CHECKING:
    from kgrec.gateway import GraphGateway


def infer_parents(item_categories: Mapping[str, Iterable[str]], coverage: float = 0.9) -> dict[str, str]:
    """Map each category to its inferred parent (root categories are absent)."""
    order: dict[str, int] = {}
    for categories in item_categories.values():
        for category in categories:
            order.setdefault(category, len(order))
    if not order:
        return {}
    names = list(order)
    incidence = np.zeros((len(names), len(item_categories)), dtype=np.float32)
    for column, categories in enumerate(item_categories.values()):
        for category in categories:
            incidence[order[category], column] = 1.0
    shared = incidence @ incidence.T  # shared[c, p] = items carrying both c and p
    size = np.diag(shared).copy()
    rank = np.arange(len(names))
    # p may be c's parent if it covers c and is bigger, or as big and seen earlier.
    covers = shared >= coverage * size[:, None]
    bigger = (size[None, :] > size[:, None]) | (
        (size[None, :] == size[:, None]) & (rank[None, :] < rank[:, None])
    )
    candidate = covers & bigger
    np.fill_diagonal(candidate, False)
    parents: dict[str, str] = {}
    for child in range(len(names)):
        options = np.flatnonzero(candidate[child])
        if options.size:
            # the smallest covering category; among equal sizes the best coverage, then the
            # one seen latest, which is the more specific of two categories with the same items
            best = min(options, key=lambda p: (size[p], -shared[child, p], -rank[p]))
            parents[names[child]] = names[best]
    return parents


# --- the stored tree: paths checked before they are written, links walked safely -------------------


def repeated_category(path: Sequence[str]) -> str | None:
    """The first id a category path lists twice (a path with one makes a loop), or None."""
    seen: set[str] = set()
    for category in path:
        if category in seen:
            return category
        seen.add(category)
    return None


_Node = TypeVar("_Node", str, int)  # a category id, or its index in ItemFacts


def path_links(path: Sequence[str]) -> list[tuple[str, str]]:
    """A general→specific path's (child, parent) links."""
    return [(child, parent) for parent, child in itertools.pairwise(path)]


def reached(links: Mapping[_Node, Iterable[_Node]], starts: Iterable[_Node]) -> set[_Node]:
    """``starts`` and every category reached from them through ``links``: child -> its parents
    (every category above them), or parent -> its children (below them)."""
    seen = set(starts)
    frontier = list(seen)
    while frontier:
        frontier = [p for c in frontier for p in links.get(c, ()) if p not in seen]
        seen.update(frontier)
    return seen


@dataclass(frozen=True)
class PathCheck:
    """Category paths checked against the stored tree: those that would close a loop, and what the
    write of the others checks again (:data:`graph_schema.statements.knowledge.TREE_UNCHANGED`).

    ``tree_ids`` and ``tree_links`` are empty when every link of the paths is stored already: such a
    write adds no link, so it can close no loop and need not lock the tree.
    """

    problems: list[tuple[int, str]]  # (index, reason) of each path that would close a loop
    tree_ids: list[str]  # the paths' ids, whose links above were read
    tree_links: list[list[str]]  # the [child, parent] links read above them

    def params(self) -> dict[str, list[Any]]:
        """The write statement's parameters that check the tree again (``$tree_ids``, ``$tree_links``)."""
        return {"tree_ids": self.tree_ids, "tree_links": self.tree_links}


NOTHING_TO_CHECK = PathCheck([], [], [])


def check_paths(gateway: GraphGateway, paths: Sequence[tuple[int, Sequence[str]]]) -> PathCheck:
    """The paths whose links would close a loop in the category tree, as (index, reason), and the
    links read to decide it.

    One read: the links stored above every id of the paths. The paths are then added in
    order, link by link, each link checked against the stored links, the links of the paths
    before it and the path's own earlier links (a refused path's links are not added), so a
    loop that takes several links of a path is caught, as are two paths of one batch that
    reverse each other and a path that reverses the stored tree. Another writer may store links
    above these ids before this writer writes: its write checks them again, in the same statement.
    """
    ids = sorted({c for _, path in paths for c in path})
    if not any(len(path) > 1 for _, path in paths):
        return NOTHING_TO_CHECK
    read = [(row["child"], row["parent"]) for row in gateway.read(CATEGORY_LINKS_ABOVE, {"ids": ids})]
    parents: dict[str, set[str]] = defaultdict(set)
    for child, parent in read:
        parents[child].add(parent)
    stored = set(read)

    problems: list[tuple[int, str]] = []
    for index, path in paths:
        added: list[tuple[str, str]] = []  # this path's links so far: a loop may need several
        for child, parent in path_links(path):
            if parent in parents[child]:
                continue
            if child in reached(parents, [parent]):
                problems.append(
                    (
                        index,
                        f"would put {child!r} under {parent!r}, which is already below it (a loop in the "
                        f"category tree; got {list(path)!r})",
                    )
                )
                for c, p in added:  # a refused path adds nothing
                    parents[c].discard(p)
                break
            parents[child].add(parent)
            added.append((child, parent))
    if all(link in stored for _, path in paths for link in path_links(path)):
        return PathCheck(problems, [], [])
    return PathCheck(problems, ids, [list(link) for link in sorted(stored)])


def cycle_problems(
    gateway: GraphGateway, paths: Sequence[tuple[int, Sequence[str]]]
) -> list[tuple[int, str]]:
    """The paths whose links would close a loop in the category tree, as (index, reason)
    (:func:`check_paths`)."""
    return check_paths(gateway, paths).problems


def acyclic_links(pairs: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """The (child, parent) links minus self-loops and every link on a loop.

    A graph written before paths were checked may hold a loop (``A→B`` and ``B→A``); walking
    it would make each category of the loop contain the others and all that is below them.
    The links of a loop are left out (each of its categories is then a root of its own), so
    a walk ends and reaches only what is really below a category. Strongly connected
    components by Tarjan's algorithm, without recursion.
    """
    links = sorted({(int(c), int(p)) for c, p in pairs})
    up: dict[int, list[int]] = defaultdict(list)
    for child, parent in links:
        up[child].append(parent)
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    component: dict[int, int] = {}
    stack: list[int] = []
    on_stack: set[int] = set()
    for root in sorted({n for link in links for n in link}):
        if root in index:
            continue
        work = [(root, 0)]
        while work:
            node, position = work.pop()
            if position == 0:
                index[node] = low[node] = len(index)
                stack.append(node)
                on_stack.add(node)
            nexts = up.get(node, [])
            if position < len(nexts):
                work.append((node, position + 1))
                nxt = nexts[position]
                if nxt not in index:
                    work.append((nxt, 0))
                elif nxt in on_stack:
                    low[node] = min(low[node], index[nxt])
                continue
            if low[node] == index[node]:
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component[member] = node
                    if member == node:
                        break
            if work:
                parent_node = work[-1][0]
                low[parent_node] = min(low[parent_node], low[node])
    return [(c, p) for c, p in links if c != p and component[c] != component[p]]


def categories_above(gateway: GraphGateway, categories: Sequence[str]) -> list[str]:
    """Every category above ``categories`` in the stored tree, by id (``categories`` left out).

    One read of the links above them; the links on a loop are left out as serving's walk leaves
    them out (:func:`acyclic_links`), so a category filter or rule on exactly these categories
    (or on ``categories``) reaches an item listed under ``categories``.
    """
    if not categories:
        return []
    rows = gateway.read(CATEGORY_LINKS_ABOVE, {"ids": sorted(set(categories))})
    ids = sorted({row[end] for row in rows for end in ("child", "parent")})
    number = {category: k for k, category in enumerate(ids)}
    parents: dict[str, list[str]] = defaultdict(list)
    for child, parent in acyclic_links((number[row["child"]], number[row["parent"]]) for row in rows):
        parents[ids[child]].append(ids[parent])
    return sorted(reached(parents, categories) - set(categories))


def distinct_path(path: Sequence[str] | None) -> Sequence[str] | None:
    """A category path's validator: refuse one that lists an id twice (its links would loop)."""
    repeated = None if path is None else repeated_category(path)
    if repeated is not None:
        raise PydanticCustomError(
            "category_path",
            "lists {id} twice: a path goes from general to specific without repeats (got {path})",
            {"id": repr(repeated), "path": repr(list(path or ()))[:200]},
        )
    return path
