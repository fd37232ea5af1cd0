"""bench/training_pull.py on a small graph: every user read back, with their interactions."""

from __future__ import annotations

import random
from pathlib import Path

from bench.training_pull import ID_CHARACTERS, PER_USER, measure, random_ids


def test_random_ids_are_distinct_and_mix_the_characters_the_index_got_wrong() -> None:
    ids = random_ids(500, random.Random(1))
    assert len(set(ids)) == 500 and all(len(i) == 12 for i in ids)
    used = set("".join(ids))
    assert used <= set(ID_CHARACTERS) and {".", "_", ":"} <= used


def test_one_size_reads_every_user_and_interaction(tmp_path: Path) -> None:
    # measure() itself checks that the id read returns every user once and the pull holds them all
    result = measure(300, tmp_path / "graph", seed=3)
    # each user picks PER_USER items at random; a repeated pick merges into one interaction
    assert 300 * (PER_USER - 1) < result["interactions"] <= 300 * PER_USER
