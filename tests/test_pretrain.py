"""Task-agnostic MLE pretraining: the curve, resume, the seed stream, restoring a step."""

import numpy as np
import pytest
from flax import nnx

from rlcv_lib.config import get_config
from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import pretrain as mle
from rlcv_lib.tasks.detection import pretrain as dp


def _params(model):
    return [np.asarray(v.value) for _, v in nnx.state(model, nnx.Param).flat_state()]


@pytest.fixture(scope="module")
def cfg():
    return get_config("smoke", overrides={"train.num_steps": 4, "train.eval_every": 2,
                                          "train.log_every": 2, "train.ckpt_every": 2,
                                          "train.schedule": "constant"})


def test_pretrain_curve_resume_and_restore(cfg, tmp_path, monkeypatch):
    seeds = []
    make_batch_fn = dp.RECIPE.make_batch_fn

    def recording(task, loader, seed):
        seeds.append(seed)
        return make_batch_fn(task, loader, seed)

    recipe = mle.Recipe(**{**dp.RECIPE.__dict__, "make_batch_fn": recording})
    run = mle.pretrain(recipe, cfg, tmp_path, eval_examples=8, train_size=16, progress=False)
    assert seeds == [ev.seed_for(cfg.run.seed, "pretrain")]
    assert [r["step"] for r in run.history.records("eval")] == [0, 2, 4]
    assert len(run.val) == 8 and run.seconds > 0
    again = mle.pretrain(recipe, cfg, tmp_path, eval_examples=8, train_size=16, progress=False)
    assert len(again.history.records("train")) == len(run.history.records("train"))
    for a, b in zip(_params(again.model), _params(run.model), strict=True):
        np.testing.assert_array_equal(a, b)  # resumed at the end: zero more steps
    model, _, step = mle.restore_model(recipe, cfg, tmp_path)
    assert step == 4
    for a, b in zip(_params(model), _params(run.model), strict=True):
        np.testing.assert_array_equal(a, b)
    early, _, step = mle.restore_model(recipe, cfg, tmp_path, step=2)
    assert step == 2 and any(not np.array_equal(a, b) for a, b in
                             zip(_params(early), _params(run.model), strict=True))
