"""Colorization task so far (tasks/colorization/task.py): grey input, stage I batches and
metrics, and stage I pretraining through the shared recipe, shipping and loading."""

import dataclasses

import numpy as np
import pytest

from rlcv_lib import config
from rlcv_lib.core import shipped
from rlcv_lib.tasks.colorization import task as ct


def test_grey_uses_the_stated_luma_weights():
    rgb = np.array([[[[1.0, 0.0, 0.0], [0.0, 1.0, 0.0], [0.2, 0.4, 0.6]]]], np.float32)
    np.testing.assert_allclose(ct.grey(rgb)[0, 0, :, 0], [0.299, 0.587, 0.363], atol=1e-6)
    np.testing.assert_allclose(ct.grey(rgb, "tf")[0, 0, 0], [0.2989] * 3, atol=1e-6)


def test_stage1_batch_is_grey_context_and_colour_target_on_minus_one_to_one():
    rng = np.random.default_rng(0)
    image = rng.uniform(0, 1, (2, 8, 8, 3)).astype(np.float32)
    batch = ct.stage1_batch({"image": image, "boxes": None})
    assert set(batch) == {"image", "rgb"}
    np.testing.assert_allclose(batch["rgb"], image * 2 - 1)
    np.testing.assert_allclose(batch["image"][..., 0], (image @ [0.299, 0.587, 0.114]) * 2 - 1,
                               atol=1e-6)
    assert np.all(batch["image"][..., 0] == batch["image"][..., 2])
    with pytest.raises(ValueError, match=r"\[B,H,W,3\]"):
        ct.stage1_batch({"image": image[..., :1]})


def test_psnr_by_hand_and_clipping():
    truth = np.zeros((2, 4, 4, 3))
    pred = truth + np.array([0.1, 3.0])[:, None, None, None]  # the second clips to 1.0
    np.testing.assert_allclose(ct.psnr(pred, truth), [10 * np.log10(4 / 0.01), 10 * np.log10(4)])
    assert ct.psnr(truth, truth)[0] == np.inf


def test_stage1_metrics_of_a_perfect_and_a_grey_reconstruction():
    rng = np.random.default_rng(1)
    batch = ct.stage1_batch({"image": rng.uniform(0, 1, (3, 8, 8, 3))})
    perfect = ct.stage1_metrics({"rgb": batch["rgb"]}, batch)
    assert perfect["psnr"] == np.inf
    assert perfect["colourfulness"] == pytest.approx(perfect["colourfulness_truth"])
    dull = ct.stage1_metrics({"rgb": batch["image"]}, batch)
    assert dull["colourfulness"] == pytest.approx(0.0, abs=1e-6) and dull["psnr"] < 30


def test_stage1_task_refuses_other_targets_and_sizes():
    cfg = config.get_config("smoke", task="colorization")
    other = dataclasses.replace(cfg.vqvae, targets=(("semantics", 3),))
    with pytest.raises(ValueError, match="one target"):
        ct.make_stage1_task(cfg.replace(vqvae=other))
    with pytest.raises(ValueError, match="differs from world.image_size"):
        ct.make_stage1_task(cfg.replace(vqvae=dataclasses.replace(cfg.vqvae, image_size=64)))


def test_stage1_pretrains_ships_and_loads_through_the_shared_recipe(smoke_stage_round_trip):
    """The generic pretraining (resumable fit, validation curve) runs the VQ-VAE with its own
    step and training section; shipping records no wrong-image control; the shipped stage
    loads back into an equal model through the manifest match."""
    _, run, manifest, loaded = smoke_stage_round_trip(ct.STAGE1_RECIPE, "colorization", "stage1")
    evals = run.history.records("eval")
    assert [e["step"] for e in evals] == [0, 4, 8]  # stage1.eval_every = 4, 8 steps
    assert {"loss", "loss_without_codes", "psnr", "psnr_without_codes", "colourfulness",
            "colourfulness_truth", "codebook_used", "codebook_perplexity"} <= set(evals[-1])
    assert len(run.history.records("train")) == 4  # stage1.log_every = 2
    assert manifest["stage"] == "stage1" and manifest["wrong_image_control"] is None
    assert set(manifest["config"]) == {"world", "vqvae", "stage1", "colorization"}
    assert loaded.source == "shipped"
    np.testing.assert_array_equal(loaded.model.sums[...], run.model.sums[...])
    np.testing.assert_array_equal(loaded.model.encoder_head.kernel[...],
                                  run.model.encoder_head.kernel[...])
    assert shipped.shipped_path("colorization", "cpu", stage="stage1").name == \
        "colorization-stage1-cpu"
    assert shipped.shipped_path("colorization", "cpu").name == "colorization-stage2-cpu"
