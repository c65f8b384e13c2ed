"""Colorization reward tuning (tasks/colorization/tune.py): the guarded reward, the checkpoint
choice's floors, the judges, and the main path end to end on the smoke preset."""

import json

import numpy as np
import pytest
from flax import nnx

from rlcv_lib import config
from rlcv_lib.core import evaluate as ev
from rlcv_lib.models.vqvae import VQVAE
from rlcv_lib.tasks.colorization import pretrain as cp
from rlcv_lib.tasks.colorization import tune as ct

CFG = config.get_config("smoke", task="colorization")


def _context(rgb):
    y = ((rgb + 1) / 2) @ np.array([0.299, 0.587, 0.114], np.float32)
    return np.repeat(y[..., None] * 2 - 1, 3, -1)


def test_the_guard_costs_weight_per_db_below_its_threshold():
    rng = np.random.default_rng(0)
    rgb = rng.uniform(-0.5, 0.5, (3, 8, 8, 3)).astype(np.float32)
    batch = {"context": _context(rgb)}
    plain = cp.score({"rgb": rgb}, batch)
    # the decoded image keeps its luma exactly: no deficit below any threshold
    np.testing.assert_allclose(ct.guarded_score(60.0, 0.1)({"rgb": rgb}, batch), plain)
    shifted = rgb + 0.1  # luma 0.1 off everywhere: luma PSNR 10 log10(4 / 0.01) = 26.02 dB
    psnr = 10 * np.log10(4 / 0.01)
    got = ct.guarded_score(30.0, 0.1)({"rgb": shifted}, batch)
    np.testing.assert_allclose(got, cp.score({"rgb": shifted}, batch) - 0.1 * (30.0 - psnr),
                               rtol=1e-4)


def test_runs_and_their_rewards():
    task = cp.make_task(CFG, stage1_model=VQVAE(CFG.vqvae, rngs=nnx.Rngs(0)))
    assert ct.task_for_run(task, CFG, "tuned") is task
    guarded = ct.task_for_run(task, CFG, "guarded")
    assert guarded.score is not task.score and guarded.frozen is task.frozen
    with pytest.raises(ValueError, match="unknown run"):
        ct.task_for_run(task, CFG, "bold")


def test_selection_keeps_only_evaluations_at_the_floors():
    floor = {"luma_psnr": 30.0, "in_palette": 50.0}
    assert ct.selection({"colourfulness": 1.2, "luma_psnr": 31, "in_palette": 50}, floor) == 1.2
    assert ct.selection({"colourfulness": 1.2, "luma_psnr": 29.9, "in_palette": 60}, floor) == -1
    assert ct.selection({"colourfulness": 1.2, "luma_psnr": 31, "in_palette": 49.9}, floor) == -1


@pytest.fixture(scope="module")
def result(tmp_path_factory):
    d = tmp_path_factory.mktemp("colorization")
    return ct.tune_and_evaluate(CFG, workdir=d, cache_dir=str(d / "cache"))


def test_the_main_path_end_to_end(result):
    names = {(r["model"], r["decoding"]) for r in result.rows}
    refs = {"truth", "dull bound", "best in-palette recolouring"}
    assert {(n, "reference") for n in refs} <= names
    for model in ("MLE", ct.MLE_AS_LONG, *ct.RUNS):
        assert {(model, d) for d in ct.DECODINGS} <= names
    pick = {(r["model"], r["decoding"]): r for r in result.rows}
    truth = pick["truth", "reference"]
    assert truth["psnr"] == ct.PSNR_CAP and truth["luma_psnr"] > 60
    assert pick["best in-palette recolouring", "reference"]["in_palette"] == 100.0
    assert pick["best in-palette recolouring", "reference"]["colourfulness"] >= \
        truth["colourfulness"]
    summary = result.summary()
    json.dumps(summary, allow_nan=False)  # finite: what the command line writes
    for name, run in result.runs.items():
        evals = run.history.records("eval")
        chosen = [e for e in evals if e["step"] == run.best_step][0]
        assert chosen["select"] == max(e["select"] for e in evals)
        assert chosen["select"] >= 0  # step 0, the MLE model, always stands at its floors
        assert (name, "T=1") in {(r["model"].split(",")[0], r["decoding"]) for r in result.rows
                                 if r["model"] == f"{name}, last update"}
        assert summary["best_step"][name] == run.best_step


def test_the_tuning_curve_starts_at_the_mle_models_validation_metrics(result):
    mle = ct.make_tune_eval(result.pre.task, result.val, CFG,
                            ev_key(CFG))(result.pre.model)
    first = result.runs["tuned"].history.records("eval")[0]
    for k in ("reward_sampled", "colourfulness", "luma_psnr", "in_palette"):
        np.testing.assert_allclose(first[k], mle[k], rtol=1e-5)
    np.testing.assert_allclose(result.floor["luma_psnr"],
                               mle["luma_psnr"] - CFG.colorization.select_luma_drop, rtol=1e-5)


def ev_key(cfg):
    import jax

    return jax.random.key(ev.seed_for(cfg.run.seed, "eval"))
