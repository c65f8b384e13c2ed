"""Panoptic reward tuning (tasks/panoptic/tune.py): the main path end to end on the smoke
preset: the checkpoint and the area filter chosen on validation, every row of the table, and a
JSON-able summary."""

import json

import numpy as np
import pytest

from rlcv_lib import config
from rlcv_lib.tasks.panoptic import tune as pt

CFG = config.get_config("smoke", task="panoptic")


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    d = tmp_path_factory.mktemp("panoptic")
    return pt.tune_and_evaluate(CFG, workdir=d, cache_dir=str(d / "cache"))


def test_every_row_of_the_table(result):
    names = {(r["model"], r["decoding"]) for r in result.rows}
    assert (pt.ORACLE, "reference") in names and (pt.AREA_FILTER, "greedy") in names
    for model in ("MLE", pt.MLE_AS_LONG, pt.RUN, f"{pt.RUN}, last update"):
        assert {(model, d) for d in pt.DECODINGS} <= names
    assert len({tuple(r) for r in result.rows}) == 1  # one set of columns (the saved table)
    for r in result.rows:
        assert 0 <= r["PQ"] <= 100 and 0 <= r["pq"] <= 1 and r["incoherent"] <= r["segments"]
        assert sum(r[f"segments_{s}"] for s in ("small", "medium", "large")) == \
            pytest.approx(r["segments"])
    assert set(result.segments) >= {f"{m}, {d}" for m, d in names if d != "reference"}


def test_choices_are_made_on_validation(result):
    evals = result.run.history.records("eval")
    assert evals[0]["step"] == 0 and result.headroom["mle_pq"] == evals[0]["pq"]
    chosen = [e for e in evals if e["step"] == result.run.best_step][0]
    assert chosen["pq"] == max(e["pq"] for e in evals) == result.run.best_value
    vals = result.area_filter_val
    assert set(vals) == set(CFG.panoptic.min_area_candidates)
    assert vals[result.min_area] == max(vals.values())
    mle, _ = result.segments["MLE, greedy"]
    filtered, _ = result.segments[f"{pt.AREA_FILTER}, greedy"]
    assert np.all((filtered == 0) | (filtered == mle))  # the filter only voids segments


def test_the_summary_is_json(result):
    summary = result.summary()
    json.dumps(summary, allow_nan=False)
    assert summary["gain_over"] in summary["test"]
    assert summary["best_step"] == {pt.RUN: result.run.best_step}
