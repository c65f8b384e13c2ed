"""The scenes generator: determinism, annotations consistent with pixels, statistics, errors."""

import dataclasses

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlcv_lib import config
from rlcv_lib.data import palette, scenes

CPU = scenes.WORLD_PRESETS["cpu"]
CROWDED = scenes.CROWDED_64
WORLDS = {
    "smoke": scenes.WORLD_PRESETS["smoke"],
    "cpu": CPU,
    "crowded96": dataclasses.replace(CPU, image_size=96, max_objects=25,
                                     thing_classes=scenes.THING_CLASSES),
    "flat": dataclasses.replace(CPU, texture_strength=0.0, noise_std=0.0, outline=False),
}
SETTINGS = settings(max_examples=40, deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def test_same_seed_same_scene_and_different_seeds_differ():
    a = scenes.example(CPU, "validation", 7)
    b = scenes.example(CPU, "validation", 7)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert scenes.annotation_hash(a) == scenes.annotation_hash(b)
    others = [scenes.example(CPU, "validation", 8), scenes.example(CPU, "test", 7),
              scenes.example(dataclasses.replace(CPU, world_seed=1), "validation", 7)]
    for o in others:
        assert scenes.annotation_hash(o) != scenes.annotation_hash(a)
        assert not np.array_equal(o["image"], a["image"])


@SETTINGS
@given(world=st.sampled_from(sorted(WORLDS)), split=st.sampled_from(list(scenes.SPLITS)),
       index=st.integers(0, 10 ** 6))
def test_annotations_match_the_panoptic_map(world, split, index):
    cfg = WORLDS[world]
    ex = scenes.example(cfg, split, index)
    n = cfg.image_size
    pan, segs = ex["panoptic"], ex["segments"]
    assert ex["image"].shape == (n, n, 3) and ex["image"].dtype == np.uint8
    assert pan.shape == (n, n) and pan.dtype == np.int32
    assert ex["boxes"].dtype == np.float32 and ex["labels"].dtype == np.int32
    k = len(ex["labels"])
    assert ex["boxes"].shape == (k, 4)
    assert ex["image_id"] == scenes.image_id(split, index)
    # segment infos match the map: same id set, areas, bboxes; things first, in box order
    ids = sorted(s["id"] for s in segs)
    assert ids == sorted(set(np.unique(pan).tolist()) - {0})
    min_px = scenes.min_visible_pixels(cfg)
    cats = {c["id"]: c for c in scenes.categories(cfg)}
    things = [s for s in segs if s["isthing"]]
    assert len(things) == k
    for s in segs:
        mask = pan == s["id"]
        assert s["area"] == mask.sum() >= min_px
        rows, cols = np.flatnonzero(mask.any(1)), np.flatnonzero(mask.any(0))
        assert s["bbox"] == [cols[0], rows[0], cols[-1] - cols[0] + 1, rows[-1] - rows[0] + 1]
        assert cats[s["category_id"]]["isthing"] == s["isthing"] == int(s["is_thing"])
    # every box is the tight box of its instance's visible pixels (pixel-edge convention)
    for box, label, s in zip(ex["boxes"], ex["labels"], things, strict=True):
        assert s["category_id"] == label + 1
        x, y, w, h = s["bbox"]
        np.testing.assert_allclose(box, [y / n, x / n, (y + h) / n, (x + w) / n], atol=1e-6)
    assert np.all((ex["boxes"] >= 0) & (ex["boxes"] <= 1))
    assert len(ex["captions"]) == 5 and all(isinstance(c, str) for c in ex["captions"])
    again = scenes.example(cfg, split, index)  # determinism: same pixels, same annotations
    np.testing.assert_array_equal(again["image"], ex["image"])
    assert scenes.annotation_hash(again) == scenes.annotation_hash(ex)


def test_occlusion_and_visibility_rule():
    """Some painted things end up hidden or partly covered; hidden ones are never annotated."""
    hidden = occluded = 0
    for i in range(200):
        sc = scenes.generate(CPU, "train", i)
        hidden += sc.painted - len(sc.things)
        for t in sc.things:
            y0, x0, y1, x1 = t.bbox
            occluded += t.area < 0.5 * (y1 - y0 + 1) * (x1 - x0 + 1)
    assert hidden > 0 and occluded > 0


def test_cpu_world_has_one_to_four_large_things_of_three_shapes():
    counts, buckets, labels = [], {"small": 0, "medium": 0, "large": 0}, set()
    for i in range(200):
        sc = scenes.generate(CPU, "validation", i)
        counts.append(len(sc.things))
        labels |= {t.label for t in sc.things}
        for t in sc.things:
            buckets[scenes.size_bucket(t.area, 64, 64)] += 1
    assert min(counts) == 1 and max(counts) == 4 and labels == {0, 1, 2}
    assert buckets["large"] > buckets["small"], buckets


def test_the_default_world_is_crowded_and_spans_sizes():
    counts, buckets = [], {"small": 0, "medium": 0, "large": 0}
    for i in range(400):
        sc = scenes.generate(CROWDED, "validation", i)
        counts.append(len(sc.things))
        for t in sc.things:
            buckets[scenes.size_bucket(t.area, 64, 64)] += 1
    counts = np.array(counts)
    assert counts.max() >= 12 - 1 and counts.min() == 0
    assert np.mean(counts >= 8) >= 0.2
    total = sum(buckets.values())
    assert all(b / total > 0.1 for b in buckets.values()), buckets


def test_area_thresholds_scale_coco():
    s, lg = scenes.area_thresholds(480, 640)
    assert (s, lg) == pytest.approx((32 ** 2, 96 ** 2))
    s64, lg64 = scenes.area_thresholds(64, 64)
    assert s64 == pytest.approx(1024 * 4096 / 307200)
    assert scenes.size_bucket(13, 64, 64) == "small" and scenes.size_bucket(123, 64, 64) == "large"
    assert scenes.coco_area_ranges(64, 64)[2] == [s64, lg64]


def test_palette_has_several_hues_per_grey_level_and_muted_keeps_luma():
    for level in palette.GREY_LEVELS:
        hues = palette.COLOR_IS_VIVID & (palette.COLOR_LEVEL == level)
        if hues.any():
            assert hues.sum() >= 3
    for i, name in enumerate(palette.COLOR_NAMES):
        for muted in (False, True):
            rgb = palette.thing_rgb(i, muted)
            assert palette.luma(rgb) == pytest.approx(palette.COLOR_LEVEL[i], abs=1e-5), name
    red = palette.color_index("red")
    sat = np.ptp(palette.thing_rgb(red, True)) / np.ptp(palette.thing_rgb(red, False))
    assert sat == pytest.approx(palette.MUTED_SATURATION)
    with pytest.raises(ValueError, match="unknown colour 'teal'"):
        palette.color_index("teal")


def test_every_shape_class_is_drawable_and_distinct():
    g = np.linspace(-1.1, 1.1, 41, dtype=np.float32)
    u, v = np.meshgrid(g, g)
    masks = {name: scenes.shape_mask(name, u, v) for name in scenes.THING_CLASSES}
    for name, m in masks.items():
        assert 0.1 < m.mean() < 0.9, name
    for a in masks:
        for b in masks:
            if a < b:
                assert (masks[a] != masks[b]).mean() > 0.05, (a, b)


def test_categories_coco_layout():
    cats = scenes.categories(CPU)
    assert [c["id"] for c in cats] == list(range(1, len(cats) + 1))
    assert [c["name"] for c in cats if c["isthing"]] == list(CPU.thing_classes)
    assert [c["name"] for c in cats if not c["isthing"]] == list(CPU.stuff_classes)


@pytest.mark.parametrize("change, message", [
    ({"image_size": 4}, "image_size must be in"),
    ({"max_objects": -1}, "max_objects must be >= 0"),
    ({"min_objects": 5, "max_objects": 2}, "min_objects"),
    ({"thing_classes": ("circle", "hexagon")}, "unknown thing_classes \\['hexagon'\\]"),
    ({"stuff_classes": ("lava",)}, "unknown stuff_classes"),
    ({"size_range": (0.5, 0.1)}, "size_range"),
    ({"muted_prob": 1.5}, "muted_prob"),
])
def test_invalid_configs_say_what_is_wrong(change, message):
    with pytest.raises(ValueError, match=message):
        dataclasses.replace(CPU, **change)


def test_bad_split_and_index():
    with pytest.raises(ValueError, match="unknown split 'val'"):
        scenes.generate(CPU, "val", 0)
    with pytest.raises(ValueError, match="index must be >= 0"):
        scenes.generate(CPU, "train", -1)


def test_registered_as_world_section():
    cfg = config.get_config("cpu", {"world.image_size": 96})
    assert isinstance(cfg.world, scenes.WorldConfig) and cfg.world.image_size == 96
    assert config.get_config("smoke").world == scenes.WORLD_PRESETS["smoke"]
    with pytest.raises(ValueError, match="image_size"):
        config.get_config("cpu", {"world.image_size": 1000})
    assert scenes.config_hash(CPU) != scenes.config_hash(WORLDS["flat"])


GOLDEN = {  # (world version, CROWDED world, validation index) -> annotation hash
    (3, 0): "8c47bdd8fdc56dab67ee9268911860044f597239584ea70905a92eb3193e5155",
    (3, 1): "a823f05c97cd0a1632e602c000b60fc09f85c32a43dd55a63fb277948dadbb7f",
}


def test_world_version_is_bumped_when_the_world_changes():
    """If this fails, generated scenes changed (code, preset or NumPy's random streams):
    bump WORLD_VERSION (every cache key includes it) and record the new hashes here."""
    for (version, index), want in GOLDEN.items():
        if version != scenes.WORLD_VERSION:
            pytest.fail(f"WORLD_VERSION is {scenes.WORLD_VERSION}: record its golden hashes")
        got = scenes.annotation_hash(scenes.example(CROWDED, "validation", index))
        assert got == want, "the scenes world changed without a WORLD_VERSION bump"


GOLDEN_CPU = {  # (world version, cpu preset, validation index) -> annotation hash, recorded
    (3, 0): "bbe1abd9c7ebb409ead31d7522587c5a657d86b12e22c0fb82295ca1e5460ee4",  # before
    (3, 1): "d47c99f45743b762a73c166149079bf5d90fb328e0d6af1b9871fdd6b11e7a85",  # stuff_hues
}
CPU_CONFIG_HASH = "e314483b1f093347"  # the cpu preset's cache key before stuff_hues existed


def test_stuff_hues_at_its_default_leaves_the_worlds_as_they_were():
    explicit = dataclasses.replace(CPU, stuff_hues=())
    assert scenes.WorldConfig().stuff_hues == ()
    for (version, index), want in GOLDEN_CPU.items():
        if version != scenes.WORLD_VERSION:
            pytest.fail(f"WORLD_VERSION is {scenes.WORLD_VERSION}: record its golden hashes")
        assert scenes.annotation_hash(scenes.example(CPU, "validation", index)) == want
        assert scenes.annotation_hash(scenes.example(explicit, "validation", index)) == want
    assert scenes.config_hash(CPU) == scenes.config_hash(explicit) == CPU_CONFIG_HASH
    assert "stuff_hues" not in config.hashed_fields(CPU)
    assert scenes.config_hash(dataclasses.replace(CPU, stuff_hues=("red",))) != CPU_CONFIG_HASH


def test_stuff_hues_change_only_the_stuff_chroma_and_keep_the_grey():
    """Same annotations, thing pixels and random streams; every stuff region in one of the
    hues; the grey image within one level (uint8 rounding) of the default world's."""
    hues = ("red", "green", "blue", "yellow")
    hued = dataclasses.replace(CPU, stuff_hues=hues)
    chroma = scenes.hue_chroma(hues)
    seen = set()
    for i in range(30):
        a, b = scenes.example(CPU, "train", i), scenes.example(hued, "train", i)
        for key in ("boxes", "labels", "panoptic"):
            np.testing.assert_array_equal(a[key], b[key])
        assert a["segments"] == b["segments"] and a["captions"] == b["captions"]
        grey_a, grey_b = (palette.to_grey(x["image"])[..., 0].astype(int) for x in (a, b))
        assert np.abs(grey_a - grey_b).max() <= 1
        things = np.isin(a["panoptic"], [s["id"] for s in a["segments"] if s["isthing"]])
        np.testing.assert_array_equal(a["image"][things], b["image"][things])
        assert not np.array_equal(a["image"][~things], b["image"][~things])
        for s in b["segments"]:
            if not s["isthing"]:
                px = b["image"][b["panoptic"] == s["id"]].astype(np.float32) / 255
                c = (px - (px @ palette.LUMA)[:, None]).mean(0)
                cos = chroma @ c / (np.linalg.norm(chroma, axis=1) * np.linalg.norm(c))
                assert cos.max() > 0.95, (i, s, cos)
                seen.add(int(np.argmax(cos)))
    assert seen == set(range(len(hues)))


def test_stuff_rgb_keeps_the_luma_and_shrinks_the_chroma_only_out_of_range():
    c = scenes.hue_chroma(("orange",))[0]  # orange at its level 0.52, chroma ~(.41, -.11, -.52)
    y = np.array([0.0, 0.1, 0.52, 1.0], np.float32)
    rgb = scenes.stuff_rgb(y, c)
    np.testing.assert_allclose(rgb @ palette.LUMA, y, atol=1e-6)
    np.testing.assert_allclose(rgb[2], palette.COLOR_RGB[palette.color_index("orange")],
                               atol=1e-6)  # at its own level: the palette colour, s = 1
    np.testing.assert_allclose(rgb[1], 0.1 + 0.1 / -c[2] * c, atol=1e-6)  # blue hits 0 first
    np.testing.assert_allclose(rgb[[0, 3]], [[0, 0, 0], [1, 1, 1]], atol=1e-6)
    assert scenes.stuff_chroma(CPU, "grass").shape == (3, 3)
    np.testing.assert_array_equal(
        scenes.stuff_chroma(dataclasses.replace(CPU, stuff_hues=("red",)), "grass"),
        scenes.hue_chroma(("red",)))


@pytest.mark.parametrize("hues", [("black",), ("red", "red"), ("teal",)])
def test_stuff_hues_must_be_distinct_vivid_palette_colours(hues):
    with pytest.raises(ValueError, match="stuff_hues must be distinct vivid palette colours"):
        dataclasses.replace(CPU, stuff_hues=hues)
