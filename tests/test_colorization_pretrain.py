"""Colorization's stage II (tasks/colorization/pretrain.py): the luma judge, the reward and the
judges of decoded images, the task made from a config, and MLE on the smoke preset."""

import dataclasses

import numpy as np
import pytest
from flax import nnx

from rlcv_lib import config
from rlcv_lib.core import pretrain
from rlcv_lib.models.vqvae import VQVAE
from rlcv_lib.tasks.colorization import pretrain as cp

CFG = config.get_config("smoke", task="colorization")


def test_luma_psnr_by_hand():
    context = np.zeros((2, 2, 2, 3), np.float32)
    pred = np.zeros((2, 2, 2, 3), np.float32)
    pred[1] += 0.1  # luma 0.1 everywhere (the weights sum to 1)
    pred[0, ..., 0] += 0.5  # a red shift: luma 0.299 * 0.5
    got = cp.luma_psnr(pred, context)
    np.testing.assert_allclose(got, [10 * np.log10(4 / 0.1495 ** 2), 10 * np.log10(4 / 0.01)],
                               rtol=1e-4)
    assert cp.luma_psnr(context, context)[0] == np.inf


def test_a_grey_decoded_image_has_zero_reward_and_a_colourful_one_more():
    grey = np.zeros((1, 4, 4, 3), np.float32)
    colourful = grey.copy()
    colourful[0, :2, :, 0], colourful[0, 2:, :, 2] = 1, 1
    np.testing.assert_array_equal(cp.score({"rgb": grey}, {}), [0.0])
    assert cp.score({"rgb": colourful * 3}, {})[0] == cp.score({"rgb": colourful}, {})[0]  # clipped
    assert cp.score({"rgb": colourful}, {})[0] > 0.5


def test_non_finite_decoder_outputs_stop_the_reward_with_a_message():
    bad = np.zeros((2, 4, 4, 3), np.float32)
    bad[1, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="non-finite.*image 1"):
        cp.score({"rgb": bad}, {})


def test_judge_of_the_truth_itself():
    rng = np.random.default_rng(0)
    rgb = rng.uniform(-1, 1, (2, 8, 8, 3)).astype(np.float32)
    context = np.repeat((((rgb + 1) / 2) @ np.array([0.299, 0.587, 0.114], np.float32)
                         )[..., None] * 2 - 1, 3, -1)
    m = cp.judge({"rgb": rgb}, {"rgb": rgb, "context": context})
    assert m["psnr"] == np.inf and m["luma_psnr"] > 60
    assert m["colourfulness"] > 0


def test_make_task_checks_the_image_sizes():
    bad = CFG.override({"model.image_size": 64, "model.patch_size": 8})
    with pytest.raises(ValueError, match="model.image_size=64"):
        cp.make_task(bad, stage1_model=VQVAE(CFG.vqvae, rngs=nnx.Rngs(0)))


def test_stage2_mle_on_the_smoke_preset_learns_the_codes(tmp_path):
    task = cp.make_task(CFG, stage1_model=VQVAE(CFG.vqvae, rngs=nnx.Rngs(0)))
    cfg = CFG.override({"train.num_steps": 30, "train.eval_every": 30, "train.lr": 3e-3})
    recipe = dataclasses.replace(cp.STAGE2_RECIPE, make_task=lambda c, d: task)
    run = pretrain.pretrain(recipe, cfg, tmp_path, eval_examples=8, progress=False)
    first, last = run.history.records("eval")[0], run.history.records("eval")[-1]
    assert last["nll_code"] < first["nll_code"] - 0.3
    for k in ("colourfulness", "colourfulness_sampled", "luma_psnr", "psnr", "code_accuracy"):
        assert np.isfinite(last[k]), k
