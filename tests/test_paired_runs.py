"""Two evaluation runs are compared user by user: what `kgrec evaluate --per-user` writes pairs up."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from bench.paired_runs import (
    PairingError,
    by_popularity,
    held_out_item_popularity,
    load_run,
    main,
    mean_of_runs,
    paired_difference,
)
from workers.training.evaluate import EvaluationReport


def _run(path: Path, hits: np.ndarray, users: list[str], items: list[list[str]]) -> Path:
    report = EvaluationReport(
        metrics={},
        protocol={},
        per_user={
            "kgrec": {"recall@10": hits.astype(float), "ndcg@10": hits * 0.5},
            "ease": {"recall@10": hits},
        },
        user_ids=users,
        test_items=items,
    )
    report.save_per_user(path)
    return path


USERS = [f"u{k}" for k in range(400)]
ITEMS = [[f"i{k % 7}", f"j{k % 5}"][: 1 + k % 2] for k in range(400)]  # one or two each


def test_a_planted_gain_is_found_and_identical_runs_differ_by_nothing(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    base = (rng.random(400) < 0.2).astype(float)
    better = np.maximum(base, (rng.random(400) < 0.15).astype(float))  # hits 15% more users
    a = _run(tmp_path / "a.npz", better, USERS, ITEMS)
    # The same users in another order: the pairing is by user id, not by position.
    order = rng.permutation(400)
    b = _run(tmp_path / "b.npz", base[order], [USERS[k] for k in order], [ITEMS[k] for k in order])

    result = paired_difference(load_run(a, "kgrec"), load_run(b, "kgrec"))
    assert set(result) == {"recall@10", "ndcg@10"}
    row = result["recall@10"]
    assert row["a"] == pytest.approx(better.mean()) and row["b"] == pytest.approx(base.mean())
    assert row["diff"] == pytest.approx(better.mean() - base.mean()) and row["diff"] > 0.05
    assert row["ci"][0] > 0 and row["p"] < 1e-6

    same = paired_difference(load_run(b, "kgrec"), load_run(b, "kgrec"))
    assert same["recall@10"]["diff"] == 0.0 and same["recall@10"]["p"] == 1.0


def test_runs_that_held_out_other_items_or_lack_the_model_are_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    hits = np.zeros(400)
    a = _run(tmp_path / "a.npz", hits, USERS, ITEMS)
    moved = _run(tmp_path / "b.npz", hits, USERS, [["other"], *ITEMS[1:]])
    with pytest.raises(PairingError, match="different test items for 1 users"):
        paired_difference(load_run(a, "kgrec"), load_run(moved, "kgrec"))
    # User 1's second item given to user 2: the same items in the same order, split differently.
    shifted = [ITEMS[0], ITEMS[1][:1], [ITEMS[1][1], *ITEMS[2]], *ITEMS[3:]]
    b = _run(tmp_path / "b.npz", hits, USERS, shifted)
    with pytest.raises(PairingError, match="different test items for 2 users"):
        paired_difference(load_run(a, "kgrec"), load_run(b, "kgrec"))
    fewer = _run(tmp_path / "c.npz", hits[:399], USERS[:399], ITEMS[:399])
    with pytest.raises(PairingError, match="different test users"):
        paired_difference(load_run(a, "kgrec"), load_run(fewer, "kgrec"))

    assert main([str(a), str(a), "--model", "sasrec"]) == 2
    error = capsys.readouterr().err.strip()
    assert error.count("\n") == 0 and "no model 'sasrec'" in error and "ease, kgrec" in error


def test_several_seeds_of_one_side_are_averaged_user_by_user(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    first = (rng.random(400) < 0.3).astype(float)
    second = (rng.random(400) < 0.3).astype(float)
    order = rng.permutation(400)
    runs = [
        load_run(_run(tmp_path / "s1.npz", first, USERS, ITEMS), "kgrec"),
        load_run(
            _run(tmp_path / "s2.npz", second[order], [USERS[k] for k in order], [ITEMS[k] for k in order]),
            "kgrec",
        ),
    ]
    users, _, metrics = mean_of_runs(runs)
    assert users.tolist() == USERS
    assert np.array_equal(metrics["recall@10"], (first + second) / 2)

    assert main([f"{tmp_path / 's1.npz'},{tmp_path / 's2.npz'}", str(tmp_path / "s1.npz"), "--json"]) == 0


def test_one_runs_model_against_another_runs_other_model(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    rng = np.random.default_rng(2)
    ours = (rng.random(400) < 0.4).astype(float)
    a = _run(tmp_path / "a.npz", ours, USERS, ITEMS)
    b = _run(tmp_path / "b.npz", np.zeros(400), USERS, ITEMS)  # its ease hits nobody
    assert main([str(a), str(b), "--model-b", "ease", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert set(result) == {"recall@10"}  # the metric the two models share
    assert result["recall@10"]["diff"] == pytest.approx(ours.mean()) and result["recall@10"]["b"] == 0.0


def test_users_are_split_by_their_test_items_popularity(tmp_path: Path) -> None:
    """A gain planted on the rare test items shows in their bucket alone, pairing by user id."""
    items = [[f"rare{k % 40}"] if k < 200 else [f"popular{k % 4}"] for k in range(400)]
    items[399] = ["popular0", "popular1", "rare0"]  # several test items: their median counts
    rng = np.random.default_rng(1)
    base = (rng.random(400) < 0.2).astype(float)
    better = base.copy()
    better[:200] = np.maximum(base[:200], (rng.random(200) < 0.3).astype(float))
    a = _run(tmp_path / "a.npz", better, USERS, items)
    order = rng.permutation(400)
    b = _run(tmp_path / "b.npz", base[order], [USERS[k] for k in order], [items[k] for k in order])
    # every (user, item) pair in the data: each test pair, 100 other users of each popular item,
    # 5 of rare0
    interactions = [(user, i) for user, joined in zip(USERS, items, strict=True) for i in joined]
    interactions += [(f"other{n}", f"popular{k}") for k in range(4) for n in range(100)]
    interactions += [(f"other{n}", "rare0") for n in range(5)]
    run_a, run_b = load_run(a, "kgrec"), load_run(b, "kgrec")
    popularity = held_out_item_popularity(run_a[1], interactions)
    assert popularity[0] == 5.0 and set(popularity[1:200]) - {5.0} == {0.0}  # rare0: user 0, 40, ...
    assert set(popularity[200:399]) == {100.0} and popularity[399] == 100.0

    rare, edge, popular = by_popularity(run_a, run_b, popularity, edges=[5.0, 6.0])
    assert (rare["popularity"], rare["users"]) == ([0.0, 5.0], 195)
    assert (edge["popularity"], edge["users"]) == ([5.0, 6.0], 5)  # a value on an edge: the upper bucket
    assert (popular["popularity"], popular["users"]) == ([6.0, None], 200)
    assert rare["metrics"] is not None and popular["metrics"] is not None
    rare_users = [k for k in range(200) if k % 40]
    gain = better[rare_users].mean() - base[rare_users].mean()
    assert rare["metrics"]["recall@10"]["diff"] == pytest.approx(gain) and gain > 0.05
    assert rare["metrics"]["recall@10"]["p"] < 1e-4
    assert popular["metrics"]["recall@10"]["diff"] == 0.0

    with pytest.raises(PairingError, match="fewer users in the data set than hold them out"):
        held_out_item_popularity(run_a[1], interactions[:200])  # another data set


def _split_by_popularity(
    tmp_path: Path, folder: Path, hits: np.ndarray, users: list[str], items: list[list[str]]
) -> tuple[Path, Path, list[str]]:
    """Runs A (``hits``) and B (no hit) of ``users``, and the command line that splits them by the
    popularity of their ``items`` in the data set ``folder`` at one edge, 5."""
    a = _run(tmp_path / "a.npz", hits, users, items)
    b = _run(tmp_path / "b.npz", np.zeros(len(users)), users, items)
    return a, b, [str(a), str(b), "--by-popularity", str(folder), "--edges", "5"]


def test_the_popularity_split_runs_from_the_command_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = tmp_path / "ml"
    folder.mkdir()
    users = [f"{k}" for k in range(1, 41)]
    items = [["10"] if k < 20 else ["20"] for k in range(40)]
    ratings = [f"{u},{i[0]},4.0,{1000 + k}" for k, (u, i) in enumerate(zip(users, items, strict=True))]
    ratings += [f"{u},20,3.0,{10 + k}" for k, u in enumerate(users)]  # item 20: 40 more ratings
    (folder / "ratings.csv").write_text("userId,movieId,rating,timestamp\n" + "\n".join(ratings) + "\n")
    (folder / "movies.csv").write_text("movieId,title,genres\n10,Ten (1990),Drama\n20,Twenty (1991),Comedy\n")
    hits = (np.arange(40) % 3 == 0).astype(float)
    a, b, split = _split_by_popularity(tmp_path, folder, hits, users, items)

    assert main([*split, "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert (result["dataset"], result["edges"]) == (str(folder), [5.0])
    rare, popular = result["by_popularity"]
    assert (rare["users"], popular["users"], popular["popularity"]) == (20, 20, [5.0, None])
    assert rare["metrics"]["recall@10"]["diff"] == pytest.approx(hits[:20].mean())

    assert main(split) == 0
    assert "held-out items with 5 or more training interactions: 20 users" in capsys.readouterr().out
    with pytest.raises(SystemExit):
        main([str(a), str(b), "--by-popularity", str(folder), "--edges", "20,5"])
    assert "the edges must be positive and increasing" in capsys.readouterr().err


def test_an_items_popularity_counts_its_users_not_their_records(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A shop's user views, carts and buys an item: three records, one (user, item) pair, one
    training edge. The buckets count pairs, as the split and the training graph do."""
    folder = tmp_path / "shop"
    folder.mkdir()
    users = [f"u{k}" for k in range(20)]
    items = [["a"] if k < 10 else ["b"] for k in range(20)]
    rows = []
    for k, (user, (item,)) in enumerate(zip(users, items, strict=True)):
        rows += [f"{user},{item},{1000 + k},view,", f"{user},{item},{1001 + k},purchase,9.5"]
    # a: 4 other users, each with a view, a cart and a purchase (12 records); b: 8 users, one view each
    rows += [f"v{n},a,{500 + n},{kind}," for n in range(4) for kind in ("view", "cart", "purchase")]
    rows += [f"w{n},b,{600 + n},view," for n in range(8)]
    (folder / "interactions.csv").write_text("user_id,item_id,ts,type,value\n" + "\n".join(rows) + "\n")
    (folder / "items.csv").write_text("item_id,title\na,A\nb,B\n")
    hits = (np.arange(20) % 2 == 0).astype(float)
    a, _, split = _split_by_popularity(tmp_path, folder, hits, users, items)

    assert main([*split, "--json"]) == 0
    under, over = json.loads(capsys.readouterr().out)["by_popularity"]
    # a: 4 training users, b: 8 (counted by records: 22 and 18, both 5 or more)
    assert (under["users"], over["users"]) == (10, 10)
    assert under["metrics"]["recall@10"]["a"] == pytest.approx(hits[:10].mean())
    run = load_run(a, "kgrec")
    pairs = [(f"v{n}", "a") for n in range(4) for _ in range(3)] + [(f"w{n}", "b") for n in range(8)]
    pairs += [(user, item) for user, (item,) in zip(users, items, strict=True) for _ in range(2)]
    assert held_out_item_popularity(run[1], pairs).tolist() == [4.0] * 10 + [8.0] * 10
