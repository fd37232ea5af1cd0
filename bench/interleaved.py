"""Serving latency of two graph sizes measured side by side, in alternating turns.

On a shared VM the same code's p99 moves 2–5× between runs minutes apart, so a
ratio of two sizes measured in separate runs says as much about the machine as
about the code. Here both stacks (graph server and gunicorn API per size) are up
at once; the idle one costs no CPU. Each round offers every endpoint to each
size in turn for ``duration`` seconds, the order alternating between rounds
(A B, B A, …), so drift on the machine falls on both sides alike. The latencies
of each side are pooled over the rounds; the report gives the pooled p99 of
each side, their ratio, and the ratio of every round.

One stall of a few hundred milliseconds (the VM's, or a process's) sets the p99 of
the turn it falls in, so a run's pooled ratio can swing several-fold on one turn.
The per-round ratios are therefore summarised too: their geometric mean with a
bootstrap 95% interval, and how many are within a given bound. Each turn records
the share of the machine's CPU time the hypervisor stole during it (``/proc/stat``)
and when its slowest requests were sent, so a stall can be told from a slow side.
p99 follows the stolen share closely on a shared VM, so the report also gives the size
ratio at equal stolen CPU (a least-squares fit over the turns, bootstrap interval).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests

from bench.api import KEY, ROUTES, endpoint_paths, summarise
from bench.common import serve_api
from bench.loadgen import LoadResult, open_loop, pooled
from bench.round_stats import cpu_ticks, ratio_summary, steal_adjusted_ratio, stolen_share


@dataclass(frozen=True)
class Side:
    """One size's stack: its data directory (graph server running) and what to ask for."""

    label: str
    data_dir: Path
    users: list[str]
    items: list[str]


def measure(
    sides: tuple[Side, Side],
    rates: dict[str, float],
    duration: float,
    rounds: int,
    port: int,
    explained_users: int = 100,
) -> dict[str, Any]:
    """Alternate each endpoint's load between the two sides for ``rounds`` rounds.

    The second side is the one compared against the first: ratios are second / first.
    """
    first, second = sides
    runs: dict[str, dict[str, list[LoadResult]]] = {s.label: {name: [] for name in rates} for s in sides}
    per_round: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        bases = {
            s.label: stack.enter_context(serve_api(s.data_dir, KEY, port + k)) for k, s in enumerate(sides)
        }
        paths = {
            s.label: endpoint_paths(bases[s.label], requests.Session(), s.users, s.items, explained_users)
            for s in sides
        }
        for round_no in range(rounds):
            order = sides if round_no % 2 == 0 else (second, first)
            entry: dict[str, Any] = {"round": round_no + 1, "order": [s.label for s in order]}
            for name, rate in rates.items():
                if name not in ROUTES:
                    raise ValueError(f"rates: unknown endpoint {name!r} (one of {sorted(ROUTES)})")
                p99, steal, slowest = {}, {}, {}
                for side in order:
                    before = cpu_ticks()
                    result = open_loop(bases[side.label], paths[side.label][name], rate, duration)
                    steal[side.label] = stolen_share(before, cpu_ticks())
                    runs[side.label][name].append(result)
                    summary = summarise(result)
                    p99[side.label] = summary["p99_ms"]
                    slowest[side.label] = [s["at_s"] for s in summary["slowest"]]
                ratio = p99[second.label] / p99[first.label] if p99[first.label] else None
                entry[name] = {
                    "p99_ms": p99,
                    "ratio": None if ratio is None else round(ratio, 2),
                    "steal_share": steal,
                    "slowest_sent_at_s": slowest,
                }
                print(f"  round {round_no + 1} {name}: {p99}", flush=True)
            per_round.append(entry)
    endpoints: dict[str, Any] = {}
    for name in rates:
        summaries = {}
        for side in sides:
            summary = summarise(pooled(runs[side.label][name]))
            summary.pop("slowest")
            summaries[side.label] = summary
        ratio = (
            summaries[second.label]["p99_ms"] / summaries[first.label]["p99_ms"]
            if summaries[first.label]["p99_ms"]
            else None
        )
        rounds_ratios = [r[name]["ratio"] for r in per_round if r[name]["ratio"] is not None]
        turns = [
            (side is second, r[name]["steal_share"][side.label], r[name]["p99_ms"][side.label])
            for r in per_round
            for side in sides
            if r[name]["steal_share"][side.label] is not None
        ]
        endpoints[name] = {
            **summaries,
            "p99_ratio": None if ratio is None else round(ratio, 2),
            "round_ratios": rounds_ratios,
            "round_ratio_summary": ratio_summary(rounds_ratios),
            "steal_adjusted_ratio": steal_adjusted_ratio(turns),
        }
    return {
        "compared": f"{second.label} over {first.label}",
        "rates": rates,
        "duration_s_per_turn": duration,
        "rounds": rounds,
        "endpoints": endpoints,
        "per_round": per_round,
    }
