"""The scenes encoder's per-patch targets from a collated scenes batch."""


import numpy as np
import pytest

from rlcv_lib.config import get_config
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


def test_the_category_map_names_each_segments_category(cpu_cfg):
    b = _batch(cpu_cfg)
    cats = tg.category_map(b)
    want = np.zeros_like(cats)
    for i in range(len(cats)):
        for sid, cat in zip(b["seg_id"][i], b["seg_category"][i], strict=True):
            if sid > 0:
                want[i][b["panoptic"][i] == sid] = cat
    np.testing.assert_array_equal(cats, want)
    assert len(np.unique(cats)) > 3  # things and stuff, not all void


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
    np.testing.assert_array_equal(t["thing_weight"], t["colour_weight"])  # no grey image
    np.testing.assert_allclose(t["thing_weight"], t["semantic"][..., 1:1 + task.num_things]
                               .sum(-1), atol=1e-6)
    for k in ("colour", "shape"):
        np.testing.assert_allclose(t[k][has_thing].sum(-1), 1, atol=1e-5)
        assert np.all(t[k][~has_thing] == 0)
    # the shape target is the thing-class part of the category shares, renormalised
    i, j = np.argwhere(t["thing_weight"] > 0.3)[0]
    np.testing.assert_allclose(t["shape"][i, j] * t["thing_weight"][i, j],
                               t["semantic"][i, j, 1:1 + task.num_things], atol=1e-6)
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
    for k in ("semantic", "shape", "thing_weight", "centre"):
        np.testing.assert_array_equal(t[k], plain[k])
    every = tg.greyed(plain)  # the evaluator's all-grey targets, from the colour ones
    assert np.all(every["colour_weight"] == 0)
    np.testing.assert_array_equal(every["image"][grey], t["image"][grey])
