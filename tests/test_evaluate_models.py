"""``kgrec evaluate --baselines``: a named set, or model keys separated by commas; every baseline
takes the run's seed."""

from __future__ import annotations

import pytest

from workers.training.config import TrainConfig
from workers.training.evaluate import ALL_MODELS, DEFAULT_MODELS, models_of, sasrec_config
from workers.training.sasrec import SasRecConfig


def test_baselines_name_a_set_or_a_list_of_model_keys_with_kgrec_first() -> None:
    assert models_of("default") == DEFAULT_MODELS
    assert models_of("all") == ALL_MODELS
    assert models_of("kgrec") == ("kgrec",)
    assert models_of("markov, ease,sasrec") == ("kgrec", "markov", "ease", "sasrec")
    assert models_of("ease,kgrec,ease") == ("kgrec", "ease")
    for bad in ("", ",", "markov,nope", "everything"):
        with pytest.raises(ValueError, match="--baselines"):
            models_of(bad)


def test_sasrec_takes_the_runs_seed_and_the_published_settings() -> None:
    # Before, SASRec kept its own seed 7 whatever --seed said, while the run recorded the other seed.
    assert sasrec_config(TrainConfig(seed=11)) == SasRecConfig(seed=11)
    assert sasrec_config(TrainConfig()) == SasRecConfig()
