"""World statistics and figures: entropies, hue conversion, the reference CIDEr-D ceiling."""

import colorsys

import numpy as np
import pytest

from rlcv_lib.data import draw, scenes, stats

SMOKE = scenes.WORLD_PRESETS["smoke"]


def test_entropies():
    assert stats.entropy_bits([1, 1, 1, 1]) == pytest.approx(2.0)
    assert stats.entropy_bits([5, 0]) == 0.0
    # Y independent of X with 2 equiprobable values: H(Y|X) = 1 bit; Y determined by X: 0
    assert stats.conditional_entropy_bits([[1, 1], [3, 3]]) == pytest.approx(1.0)
    assert stats.conditional_entropy_bits([[4, 0], [0, 2]]) == 0.0


def test_hue_and_saturation_match_colorsys():
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 256, (200, 3)).astype(np.uint8)
    hue, sat = stats.rgb_to_hue_sat(rgb)
    for (r, g, b), h, s in zip(rgb / 255, hue, sat, strict=True):
        hh, ss, _ = colorsys.rgb_to_hsv(r, g, b)
        assert s == pytest.approx(ss, abs=1e-5)
        if ss > 0:
            assert min(abs(h - hh), 1 - abs(h - hh)) < 1e-5


def test_world_statistics_and_reference_cider():
    sc = [scenes.generate(SMOKE, "validation", i) for i in range(24)]
    obj = stats.object_stats(SMOKE, sc)
    assert obj["objects_per_image"].sum() == sum(obj["size_buckets"].values())
    assert sum(obj["class_counts"].values()) == obj["objects_per_image"].sum()
    assert 0 < obj["color_entropy_given_grey_bits"] < obj["color_entropy_bits"]
    pix = stats.pixel_hue_given_grey(np.stack([s.image for s in sc]))
    assert 0 < pix["hue_given_grey_bits"] <= pix["hue_bits"]
    caps = [s.captions for s in sc]
    mean, per = stats.reference_cider(caps)
    assert per.shape == (24, 5) and mean == pytest.approx(per.mean())
    # references that agree score far higher than the world's varied ones
    agree = [[f"a {c} star on the {s}"] * 5 for c in ("red", "blue", "green")
             for s in ("grass", "sand", "water")]
    same, _ = stats.reference_cider(agree)
    assert same > 5 * mean
    cap = stats.caption_stats(caps)
    assert cap["vocabulary"] > 20 and len(cap["lengths"]) == 24 * 5


def test_figures_draw():
    import matplotlib

    matplotlib.use("Agg")
    sc = [scenes.generate(SMOKE, "validation", i) for i in range(3)]
    obj = stats.object_stats(SMOKE, sc)
    pix = stats.pixel_hue_given_grey(np.stack([s.image for s in sc]))
    cap = stats.caption_stats([s.captions for s in sc])
    figs = [draw.gallery(SMOKE, sc), draw.statistics_figure(SMOKE, obj),
            draw.colour_figure(obj, pix), draw.captions_figure(cap, np.ones((3, 5)))]
    assert all(f.axes for f in figs)
    over = draw.panoptic_overlay(sc[0].image, sc[0].panoptic)
    assert over.shape == sc[0].image.shape and (over[sc[0].panoptic == 0] == 0).all()
