"""The shared scenes encoder's pretraining: its per-patch targets, heads, step and recipe."""

import dataclasses

import numpy as np
import pytest

from rlcv_lib.config import ConfigError, get_config
from rlcv_lib.core import optim
from rlcv_lib.data import palette, pipeline, scenes
from rlcv_lib.tasks.scenes_encoder import targets as tg
from rlcv_lib.tasks.scenes_encoder import task as enc


def _batch(cfg, n=8, split="train"):
    return pipeline.collate([scenes.example(cfg.world, split, i) for i in range(n)],
                            max_boxes=cfg.world.max_objects)


@pytest.fixture(scope="module")
def cpu_cfg():
    return get_config("cpu", task="scenes_encoder")


def test_the_colour_truth_is_the_colour_each_thing_was_painted_with(cpu_cfg):
    """Rims (a white rim is nearly grey) and noise must not change a thing's colour name."""
    checked = 0
    for i in range(150):
        scene = scenes.generate(cpu_cfg.world, "train", i)
        colours = tg.thing_colour_map(pipeline.collate([scenes.to_example(scene)]))[0]
        for t in scene.things:
            got = set(colours[scene.panoptic == t.segment_id].tolist())
            assert got == {palette.color_index(t.color)}, (i, t.color, got)
            checked += 1
        assert np.all(colours[~np.isin(scene.panoptic, [t.segment_id for t in scene.things])]
                      == -1)
    assert checked > 300


def test_patch_targets_are_shares_of_the_patch(cpu_cfg):
    b = _batch(cpu_cfg)
    task = enc.make_task(cpu_cfg)
    t = task.targets(b)
    p, g = cpu_cfg.model.patch_size, cpu_cfg.model.image_size // cpu_cfg.model.patch_size
    assert t["semantic"].shape == (8, g * g, task.num_categories)
    np.testing.assert_allclose(t["semantic"].sum(-1), 1, atol=1e-5)
    cats = tg.category_map(b)
    # patch (row 2, column 5) of image 3, from the pixels directly
    block = cats[3, 2 * p:3 * p, 5 * p:6 * p]
    np.testing.assert_allclose(t["semantic"][3, 2 * g + 5],
                               np.bincount(block.ravel(), minlength=task.num_categories) / p**2)
    has_thing = t["colour_weight"] > 0
    np.testing.assert_allclose(t["colour"][has_thing].sum(-1), 1, atol=1e-5)
    assert np.all(t["colour"][~has_thing] == 0)
    # a thing's box centre is in the patch that holds its class
    y0, x0, y1, x1 = b["boxes"][0, 0]
    centre = int((y0 + y1) / 2 * g) * g + int((x0 + x1) / 2 * g)
    assert t["centre"][0, centre] == 1 + b["labels"][0, 0]
    assert (t["centre"] > 0).sum() <= b["num_boxes"].sum()


def test_grey_inputs_lose_their_colour_targets_only(cpu_cfg):
    b = _batch(cpu_cfg, 4)
    task = enc.make_task(cpu_cfg)
    grey = np.array([True, False, True, False])
    t, plain = task.targets(b, grey), task.targets(b)
    assert np.all(t["colour_weight"][grey] == 0)
    np.testing.assert_array_equal(t["colour_weight"][~grey], plain["colour_weight"][~grey])
    img = t["image"][grey]
    np.testing.assert_allclose(img[..., 0], img[..., 2])
    np.testing.assert_allclose(img[..., 0], b["image"][grey] @ palette.LUMA, atol=1e-6)
    np.testing.assert_array_equal(t["image"][~grey], b["image"][~grey])
    for k in ("semantic", "centre"):
        np.testing.assert_array_equal(t[k], plain[k])


def test_grey_choice_is_a_pure_function_of_seed_and_step():
    a = enc.grey_choice(0, 7, 1000, 0.25)
    assert np.array_equal(a, enc.grey_choice(0, 7, 1000, 0.25))
    assert not np.array_equal(a, enc.grey_choice(0, 8, 1000, 0.25))
    assert 0.2 < a.mean() < 0.3


def test_the_step_learns_a_fixed_batch_and_the_evaluator_reports_both_inputs():
    cfg = get_config("smoke", task="scenes_encoder")
    task = enc.make_task(cfg)
    model = enc.build(cfg, task)
    batch = task.targets(_batch(cfg, 8), np.array([True, False] * 4))
    opt = optim.make_optimizer(model, dataclasses.replace(cfg.train, schedule="constant"))
    step = enc.make_step(task)
    first = float(step(model, opt, batch)["loss"])
    for _ in range(20):
        last = step(model, opt, batch)
    assert float(last["loss"]) < 0.7 * first
    assert set(last) >= {"loss/semantic", "loss/colour", "loss/centre", "grad_norm"}

    class Val:
        batch = _batch(cfg, 8, "validation")

    metrics = enc.make_evaluator(task, Val)(model)
    assert {"semantic_acc", "colour_acc", "centre_acc", "grey_semantic_acc",
            "grey_loss/semantic"} <= set(metrics)
    assert "grey_colour_acc" not in metrics and "grey_loss/colour" not in metrics
    assert all(np.isfinite(v) for v in metrics.values())


def test_contradictions_are_refused_naming_the_field():
    with pytest.raises(ConfigError, match="grey_fraction"):
        enc.make_task(get_config("smoke", {"scenes_encoder.grey_fraction": 1.5},
                                 task="scenes_encoder"))
    with pytest.raises(ConfigError, match="encoder_init"):
        enc.make_task(get_config("smoke", {"model.encoder_init": "shipped"},
                                 task="scenes_encoder"))
