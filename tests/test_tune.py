"""Task-agnostic reward tuning: REINFORCE from an MLE model with an eval curve, both tasks."""

import numpy as np
import pytest
from flax import nnx

from rlcv_lib.config import get_config
from rlcv_lib.core import tune as tuning
from rlcv_lib.models import build_model
from rlcv_lib.tasks.captioning import pretrain as cp
from rlcv_lib.tasks.detection import pretrain as dp


def _cfg(baseline="loo"):
    return get_config("smoke", overrides={"tune.num_steps": 2, "tune.eval_every": 1,
                                          "tune.log_every": 1, "tune.ckpt_every": 2,
                                          "tune.batch_size": 2, "rl.num_samples": 2,
                                          "rl.baseline": baseline})


def _params(model):
    return [np.asarray(v.value) for _, v in nnx.state(model, nnx.Param).flat_state()]


@pytest.mark.parametrize("recipe,baseline", [(dp.RECIPE, "loo"),
                                             (cp.RECIPE, "greedy")])
def test_tune_updates_the_model_and_records_the_curve(recipe, baseline, tmp_path):
    cfg = _cfg(baseline)
    task = recipe.make_task(cfg, None)
    model = build_model(cfg.model, task, seed=0)
    before = _params(model)
    calls = []

    def eval_fn(m, step):
        calls.append(step)
        return {"probe": float(step)}

    run = tuning.tune(recipe, cfg, model, task, tmp_path / "tune", eval_fn=eval_fn,
                      train_size=16, progress=False)
    assert run.model is model and calls == [0, 1, 2]
    assert [r["probe"] for r in run.history.records("eval")] == [0.0, 1.0, 2.0]
    train = run.history.records("train")
    assert train[-1]["step"] == 2 and all(np.isfinite(r["reward_mean"]) for r in train)
    assert any(not np.array_equal(a, b) for a, b in zip(before, _params(model), strict=True))
    # a second call resumes the finished run: zero more steps, same parameters
    after = _params(model)
    again = tuning.tune(recipe, cfg, build_model(cfg.model, task, seed=0), task,
                        tmp_path / "tune", train_size=16, progress=False)
    for a, b in zip(after, _params(again.model), strict=True):
        np.testing.assert_array_equal(a, b)


def test_tuning_seeds_its_own_stream():
    """Tuning's batches come from the training split at seed_for(seed, "tune"), not MLE's."""
    from rlcv_lib.core import evaluate as ev

    assert ev.seed_for(3, "tune") != ev.seed_for(3, "pretrain")
    assert ev.seed_for(3, "tune") - 3 == ev.SEED_OFFSETS["tune"]


def test_tune_and_select_loads_the_best_evaluation_and_keeps_the_last(tmp_path):
    cfg = _cfg()
    task = dp.RECIPE.make_task(cfg, None)
    model = build_model(cfg.model, task, seed=0)
    scores = {0: 0.5, 1: 0.9, 2: 0.1}  # the best at update 1

    def make_eval(keeper):
        def evaluate(m, step):
            metrics = {"score": scores[step]}
            keeper.offer(m, step, metrics)
            return metrics
        return evaluate

    run = tuning.tune_and_select(dp.RECIPE, cfg, model, task, tmp_path / "t", name="x",
                                 select_on="score", make_eval=make_eval, train_size=16,
                                 progress=False)
    assert (run.name, run.best_step, run.best_value) == ("x", 1, 0.9)
    assert run.model is model
    chosen, last = _params(run.model), _params(run.last)
    assert any(not np.array_equal(a, b) for a, b in zip(chosen, last, strict=True))
