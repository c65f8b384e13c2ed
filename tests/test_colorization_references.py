"""The reference rows of colorization on hand-built images: the colours a region can take, the
dull bound, the best in-palette recolouring (exhaustive and by coordinate ascent), recolouring."""

import dataclasses
import itertools

import numpy as np
import pytest

from rlcv_lib.data import palette, scenes
from rlcv_lib.tasks.colorization import references as refs
from rlcv_lib.tasks.colorization.reward import colourfulness

WORLD = dataclasses.replace(scenes.WORLD_PRESETS["cpu"], muted_prob=0.0)  # no muted colours
MUTED = dataclasses.replace(WORLD, muted_prob=0.35)
THING = {"id": 1, "category_id": 1, "isthing": 1}
OTHER = {"id": 2, "category_id": 2, "isthing": 1}
GRASS = {"id": 3, "category_id": len(WORLD.thing_classes) + 1 + WORLD.stuff_classes.index(
    "grass"), "isthing": 0}


def rgb(name: str) -> np.ndarray:
    return palette.COLOR_RGB[palette.color_index(name)]


def chroma(name: str) -> np.ndarray:
    return rgb(name) - palette.COLOR_LEVEL[palette.color_index(name)]


def image(*columns: np.ndarray, height: int = 2) -> np.ndarray:
    """[1, height, len(columns), 3] on [−1, 1]: one flat colour (on [0, 1]) per column."""
    return (2 * np.stack([np.stack(columns)] * height) - 1)[None].astype(np.float32)


def grey(x: np.ndarray) -> np.ndarray:
    return ((x + 1) / 2) @ palette.LUMA


def test_a_things_colours_are_its_levels_with_the_worlds_probabilities():
    c, p = refs.region_palette(WORLD, THING, np.full(5, 0.52))
    want = np.stack([chroma("green"), chroma("orange"), chroma("pink"), np.zeros(3)])
    np.testing.assert_allclose(c, want, atol=1e-6)
    np.testing.assert_allclose(p, [1 / 3.5] * 3 + [0.5 / 3.5])  # neutral_weight 0.5
    c, p = refs.region_palette(MUTED, THING, np.array([0.31, 0.32, 0.33, 0.18]))  # a dark rim
    assert len(c) == 8  # red, blue, purple, brown, each vivid and muted
    np.testing.assert_allclose(c[:2], [chroma("red"), palette.MUTED_SATURATION * chroma("red")],
                               atol=1e-6)
    np.testing.assert_allclose(p[:2], [0.65 / 4, 0.35 / 4])
    c, p = refs.region_palette(WORLD, THING, np.array([0.09, 0.11]))
    np.testing.assert_array_equal(c, np.zeros((1, 3)))
    assert p.tolist() == [1.0]


def test_a_stuff_regions_colours_are_its_class_family_or_the_worlds_hues():
    c, p = refs.region_palette(WORLD, GRASS, np.full(3, 0.4))
    np.testing.assert_array_equal(c, scenes.stuff_chroma(WORLD, "grass"))
    np.testing.assert_allclose(p, [1 / 3] * 3)
    hued = dataclasses.replace(WORLD, stuff_hues=("red", "cyan"))
    c, p = refs.region_palette(hued, GRASS, np.full(3, 0.4))
    np.testing.assert_allclose(c, [chroma("red"), chroma("cyan")], atol=1e-6)
    np.testing.assert_allclose(p, [0.5, 0.5])


def test_the_dull_bound_is_the_expected_colour_at_the_same_luma():
    # a pink thing (level 0.52) beside a void column that must stay as it is
    x = image(rgb("pink"), np.array([0.9, 0.1, 0.3]))
    pan = np.array([[[1, 0], [1, 0]]], np.int32)
    dull = refs.dull_bound(x, pan, [[THING]], WORLD)
    # every colour of level 0.52 fits there with s = 1: the mean of the three hues and grey
    want = 0.52 + (chroma("green") + chroma("orange") + chroma("pink")) / 3.5
    np.testing.assert_allclose((dull[0, :, 0] + 1) / 2, [want, want], atol=1e-5)
    np.testing.assert_array_equal(dull[0, :, 1], x[0, :, 1])
    np.testing.assert_allclose(grey(dull), grey(x), atol=1e-6)
    white = refs.dull_bound(image(rgb("white")), np.ones((1, 2, 1), np.int32), [[THING]], WORLD)
    np.testing.assert_allclose(white, image(rgb("white")), atol=1e-6)  # the only colour there


def test_the_best_recolouring_of_one_flat_thing_is_its_most_chromatic_colour():
    # flat: M = 0.3·|(rg, yb)|; on [−1, 1] red (1.40, 0.74) beats blue (−0.32, −1.40),
    # purple (0.76, −0.74) and brown (0.44, 0.62)
    x = image(rgb("blue"), rgb("blue"))
    best, exact = refs.best_recolouring(x, np.ones((1, 2, 2), np.int32), [[THING]], WORLD)
    assert exact.tolist() == [True]
    np.testing.assert_allclose((best[0] + 1) / 2, np.broadcast_to(rgb("red"), (2, 2, 3)),
                               atol=1e-5)
    r, g, b = 2 * rgb("red") - 1
    assert refs.colourfulness_rows({"best": best, "grey": np.zeros((3, 2, 2, 3))}) == (
        pytest.approx({"best": 0.3 * np.hypot(r - g, (r + g) / 2 - b), "grey": 0.0}, abs=1e-5))


@pytest.mark.parametrize("limit", [4096, 0])  # exhaustive, coordinate ascent
def test_the_best_recolouring_of_two_halves_takes_the_most_distant_pair(limit):
    # two halves of level 0.32: M = |a − b|/2 + 0.3·|a + b|/2 in the opponent plane, largest
    # for red and blue (|a − b| = |(1.72, 2.14)|): 1.37 + 0.19 = 1.56, red twice only 0.47
    x = image(rgb("brown"), rgb("purple"))
    pan = np.array([[[1, 2], [1, 2]]], np.int32)
    best, exact = refs.best_recolouring(x, pan, [[THING, OTHER]], WORLD, exhaustive_limit=limit)
    assert exact.tolist() == [limit > 0]
    got = {palette.COLOR_NAMES[int(np.argmin(np.abs(palette.COLOR_RGB - (best[0, 0, j] + 1) / 2)
                                             .sum(1)))] for j in (0, 1)}
    assert got == {"red", "blue"}
    assert colourfulness(best.astype(np.float64))[0] == pytest.approx(1.56, abs=0.01)
    np.testing.assert_allclose(grey(best), grey(x), atol=1e-6)


def total_m(fixed, options, choice):
    return refs.m_of_sums(fixed + sum(o[c] for o, c in zip(options, choice,
                                                                        strict=True)))


def test_the_ascent_never_beats_the_exhaustive_search_which_is_the_brute_force_maximum():
    rng = np.random.default_rng(0)
    for _ in range(20):
        fixed = np.array([5.0, *rng.normal(size=2), *rng.uniform(1, 3, 2)])
        options = [np.column_stack([np.full(c, 3.0), rng.normal(size=(c, 2)),
                                    rng.uniform(1, 3, (c, 2))]) for c in (2, 3, 4)]
        full, exact = refs.best_assignment(fixed, options, rng)
        ascent, not_exact = refs.best_assignment(fixed, options, rng, exhaustive_limit=0)
        assert exact and not not_exact
        brute = max(itertools.product(*(range(len(o)) for o in options)),
                    key=lambda c: total_m(fixed, options, c))
        best = total_m(fixed, options, full)
        assert best == pytest.approx(total_m(fixed, options, brute))
        assert total_m(fixed, options, ascent) <= best + 1e-12


def test_recolour_draws_each_region_from_the_worlds_colours_at_its_luma():
    n = 700
    x = np.repeat(image(rgb("green"), height=1), n, axis=0)  # [n,1,1,3] green things
    out = refs.recolour(x, np.ones((n, 1, 1), np.int32), [[THING]] * n, WORLD,
                        np.random.default_rng(0))
    np.testing.assert_allclose(grey(out), grey(x), atol=1e-6)
    names = ["green", "orange", "pink", "grey"]
    colours = np.stack([rgb(k) for k in names])
    drawn = np.argmin(np.abs((out[:, 0, 0, None] + 1) / 2 - colours).sum(-1), 1)
    assert np.abs((out[:, 0, 0] + 1) / 2 - colours[drawn]).max() < 1e-5
    share = np.bincount(drawn, minlength=4) / n
    np.testing.assert_allclose(share, [1 / 3.5] * 3 + [0.5 / 3.5], atol=0.05)


def test_bad_shapes_are_named():
    x = image(rgb("red"))
    with pytest.raises(ValueError, match="panoptic must be"):
        refs.dull_bound(x, np.ones((1, 3, 1), np.int32), [[THING]], WORLD)
    with pytest.raises(ValueError, match="one list per image"):
        refs.recolour(x, np.ones((1, 2, 1), np.int32), [], WORLD, np.random.default_rng(0))
    with pytest.raises(ValueError, match="images must be"):
        refs.best_recolouring(x[0], np.ones((1, 2, 1), np.int32), [[THING]], WORLD)


def test_palette_distance_is_zero_on_a_drawable_colour_and_nan_on_void():
    world = dataclasses.replace(WORLD, stuff_hues=("red", "blue"))
    truth = image(rgb("green"), rgb("green"), rgb("grey"))  # thing, thing, void
    pan = np.array([[[1, 1, 0]] * 2])
    segs = [[THING]]
    recoloured = truth.copy()
    recoloured[..., 1, :] = 2 * rgb("orange") - 1  # another colour of the same grey level
    d = refs.palette_distance(recoloured, truth, pan, segs, world)
    np.testing.assert_allclose(d[..., :2], 0, atol=1e-5)
    assert np.isnan(d[..., 2]).all()
    off = truth.copy()
    off[..., 0, :] += np.array([0.3, -0.3, 0.0])  # no colour of the palette
    d = refs.palette_distance(off, truth, pan, segs, world)
    assert (d[..., 0] > 0.2).all()
    np.testing.assert_allclose(refs.in_palette_rate(d, 0.1), [0.5])  # one of two thing pixels
    np.testing.assert_allclose(refs.in_palette_rate(d, 1.0), [1.0])
    with pytest.raises(ValueError, match="like the truth"):
        refs.palette_distance(off[:, :1], truth, pan, segs, world)


def test_the_in_palette_rate_of_an_image_without_regions_is_nan():
    assert np.isnan(refs.in_palette_rate(np.full((1, 2, 2), np.nan), 0.1)[0])


def test_hue_shares_and_their_entropy():
    pixels = image(rgb("red"), rgb("red"), rgb("blue"), rgb("grey"))  # grey: neutral
    shares = refs.hue_shares(pixels)
    assert shares["red"] == pytest.approx(0.5) and shares["blue"] == pytest.approx(0.25)
    assert shares[refs.NEUTRAL] == pytest.approx(0.25)
    assert sum(shares.values()) == pytest.approx(1.0)
    assert refs.entropy_bits(shares) == pytest.approx(1.5)
    muted = image(palette.thing_rgb(palette.color_index("red"), muted=True))
    assert refs.hue_shares(muted)["red"] == 1.0  # a muted red is still red
    assert refs.entropy_bits({"a": 1.0, "b": 0.0}) == 0.0
