"""Colourfulness (Hasler & Süsstrunk): hand-computed images, its invariances, jitted JAX float32
against the NumPy float64 oracle, the 0–255 scale, and bad input named."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlcv_lib.tasks.colorization import reward as cr

RED, GREEN, BLUE, YELLOW = (1, -1, -1), (-1, 1, -1), (-1, -1, 1), (1, 1, -1)


@pytest.fixture(scope="module")
def jitted():
    return jax.jit(lambda x: cr.colourfulness(x, xp=jnp))


def uniform(rgb, size=8):
    """One [1,size,size,3] image of a single colour."""
    return np.broadcast_to(np.asarray(rgb, np.float64), (1, size, size, 3)).copy()


def random_images(seed, shape=(6, 16, 12, 3)):
    """Uniform noise, a low-chroma image (grey plus a little colour) and a flat colour each."""
    rng = np.random.default_rng(seed)
    noise = rng.uniform(-1, 1, shape)
    dull = (rng.uniform(-1, 1, shape[:3] + (1,)) + 0.05 * rng.uniform(-1, 1, shape)).clip(-1, 1)
    flat = np.broadcast_to(rng.uniform(-1, 1, (shape[0], 1, 1, 3)), shape)
    return np.concatenate([noise, dull, flat])


@pytest.mark.parametrize("level", [-1.0, -0.3, 0.0, 0.7, 1.0])
def test_grey_image_is_exactly_zero(level, jitted):
    grey = uniform((level,) * 3)
    assert cr.colourfulness_reward(grey)[0] == 0.0
    assert float(jitted(grey.astype(np.float32))[0]) == 0.0


@pytest.mark.parametrize("rgb, want", [
    # red: rg = 1 − (−1) = 2, yb = ½(1 − 1) − (−1) = 1 -> 0.3·√(4 + 1)
    (RED, 0.3 * np.sqrt(5.0)),
    # green: rg = −2, yb = ½(−1 + 1) + 1 = 1 -> 0.3·√5
    (GREEN, 0.3 * np.sqrt(5.0)),
    # blue: rg = 0, yb = ½(−2) − 1 = −2 -> 0.3·2
    (BLUE, 0.6),
    # yellow: rg = 0, yb = ½(2) + 1 = 2 -> 0.3·2
    (YELLOW, 0.6),
    # (0.5, 0, −0.5): rg = 0.5, yb = 0.25 + 0.5 = 0.75 -> 0.3·√(0.25 + 0.5625)
    ((0.5, 0.0, -0.5), 0.3 * np.sqrt(0.8125)),
])
def test_uniform_colour_is_its_mean_chroma_term(rgb, want, jitted):
    # no spread: σ_rg = σ_yb = 0, M = 0.3·√(μ²_rg + μ²_yb)
    assert cr.colourfulness_reward(uniform(rgb))[0] == pytest.approx(want, abs=1e-15)
    assert float(jitted(uniform(rgb).astype(np.float32))[0]) == pytest.approx(want, abs=1e-6)


def test_half_red_half_blue_by_hand(jitted):
    # red (1,−1,−1): rg = 2, yb = 1;  blue (−1,−1,1): rg = 0, yb = −2;  half the pixels each.
    # μ_rg = (2 + 0)/2 = 1,  deviations ±1   -> σ²_rg = 1
    # μ_yb = (1 − 2)/2 = −½, deviations ±1.5 -> σ²_yb = 2.25
    # M = √(1 + 2.25) + 0.3·√(1² + ½²) = √3.25 + 0.3·√1.25 ≈ 2.1381
    image = uniform(RED)
    image[:, 4:] = BLUE  # rows 4..7 of 8
    want = np.sqrt(3.25) + 0.3 * np.sqrt(1.25)
    assert cr.colourfulness_reward(image)[0] == pytest.approx(want, abs=1e-15)
    # the split's direction and shape do not matter, only the pixel counts
    checker = uniform(RED)
    checker[0, ::2, ::2] = checker[0, 1::2, 1::2] = BLUE
    assert cr.colourfulness_reward(checker)[0] == pytest.approx(want, abs=1e-15)
    assert float(jitted(image.astype(np.float32))[0]) == pytest.approx(want, abs=1e-6)


def test_quarter_yellow_on_grey_by_hand():
    # one pixel in 4 yellow (rg = 0, yb = 2), the rest grey (rg = yb = 0):
    # μ_rg = 0, σ²_rg = 0;  μ_yb = ½, σ²_yb = E[yb²] − μ² = ¼·4 − ¼ = ¾
    # M = √0.75 + 0.3·½
    image = uniform((0.2,) * 3, size=4)
    image[0, :2, :2] = YELLOW
    assert cr.colourfulness_reward(image)[0] == pytest.approx(np.sqrt(0.75) + 0.15, abs=1e-15)


def test_batch_images_are_independent():
    images = random_images(0)
    batched = cr.colourfulness_reward(images)
    one_by_one = [cr.colourfulness_reward(images[i:i + 1])[0] for i in range(len(images))]
    np.testing.assert_allclose(batched, one_by_one, rtol=1e-14)


@pytest.mark.parametrize("shift", [-0.4, 0.25, 3.0])
def test_adding_a_constant_to_all_channels_changes_nothing(shift):
    images = random_images(1) * 0.5
    np.testing.assert_allclose(cr.colourfulness(images + shift), cr.colourfulness(images),
                               rtol=1e-12, atol=1e-12)


def test_shifting_one_channel_does_change_it():
    # the invariance above is not vacuous: a shift of R alone moves μ_rg and μ_yb
    images = random_images(2) * 0.5
    assert np.all(np.abs(cr.colourfulness(images + [0.3, 0, 0]) - cr.colourfulness(images))
                  > 1e-3)


@pytest.mark.parametrize("scale", [0.5, 2.0, -1.0, 127.5])
def test_scales_linearly_with_the_pixel_range(scale):
    images = random_images(3)
    np.testing.assert_allclose(cr.colourfulness(scale * images),
                               abs(scale) * cr.colourfulness(images), rtol=1e-12)


def test_the_0_255_scale_equals_m_on_0_255_pixels():
    images = random_images(4)
    on_255 = (images + 1.0) * 127.5  # [−1, 1] -> [0, 255]
    direct = cr.colourfulness(on_255)
    np.testing.assert_allclose(cr.to_255_scale(cr.colourfulness_reward(images)), direct,
                               rtol=1e-12)
    # and on quantised uint8 pixels, read back to [−1, 1]
    u8 = np.round(on_255).astype(np.uint8)
    np.testing.assert_allclose(cr.to_255_scale(cr.colourfulness_reward(u8 / 127.5 - 1.0)),
                               cr.colourfulness(u8.astype(np.float64)), rtol=1e-12)
    # half red, half blue on 0–255: 127.5 · 2.1381
    image = uniform(RED)
    image[:, 4:] = BLUE
    assert cr.colourfulness((image + 1) * 127.5)[0] == pytest.approx(
        127.5 * (np.sqrt(3.25) + 0.3 * np.sqrt(1.25)), rel=1e-14)


@pytest.mark.parametrize("size", [(16, 12), (64, 64)])
def test_jitted_jax_float32_equals_numpy_float64(size, jitted):
    images = random_images(5, (8, *size, 3)).astype(np.float32)
    want = cr.colourfulness_reward(images)  # float64 of the same float32 pixels
    got = np.asarray(jitted(jnp.asarray(images)))
    assert got.dtype == np.float32 and got.shape == want.shape
    assert np.abs(got - want).max() <= 1e-6
    assert (np.abs(got - want) / np.maximum(want, 1e-12)).max() <= 1e-6


def test_jax_has_no_nan_on_uniform_images(jitted):
    flat = np.stack([uniform(c)[0] for c in ((0.1, 0.1, 0.1), RED, (0.3, -0.7, 0.9))])
    got = np.asarray(jitted(jnp.asarray(flat, jnp.float32)))
    assert np.isfinite(got).all() and got[0] == 0.0
    np.testing.assert_allclose(got, cr.colourfulness_reward(flat), atol=1e-6)


def test_the_reward_is_float64_and_accepts_small_rounding():
    images = random_images(6).astype(np.float32)
    assert cr.colourfulness_reward(images).dtype == np.float64
    assert np.isfinite(cr.colourfulness_reward(np.clip(images * 1.00005, -1.00005, 1.00005)))\
        .all()


@pytest.mark.parametrize("images, message", [
    (np.zeros((8, 8, 3)), r"\[B,H,W,3\].*\(8, 8, 3\)"),
    (np.zeros((1, 1, 8, 8, 3)), r"\[B,H,W,3\].*\(1, 1, 8, 8, 3\)"),
    (np.zeros((2, 8, 8, 4)), r"\[B,H,W,3\].*\(2, 8, 8, 4\)"),
    (np.zeros((2, 8, 8, 1)), r"\[B,H,W,3\].*\(2, 8, 8, 1\)"),
    (np.zeros((2, 0, 8, 3)), "at least one pixel"),
    (np.zeros((2, 8, 8, 3), bool), "real numbers.*bool"),
    (np.zeros((2, 8, 8, 3), complex), "real numbers.*complex"),
])
def test_bad_shapes_and_types_are_named(images, message):
    with pytest.raises(ValueError, match=message):
        cr.colourfulness_reward(images)


def test_non_finite_values_are_named_with_their_image():
    images = np.zeros((3, 4, 4, 3))
    images[1, 2, 3, 0] = np.nan
    images[2, 0, 0, 1] = np.inf
    with pytest.raises(ValueError, match="2 non-finite values.*first in image 1"):
        cr.colourfulness_reward(images)


@pytest.mark.parametrize("bad, message", [
    (1.01, r"\[-1, 1\].*\[0, 1.01\].*image 2"),
    (-1.5, r"\[-1, 1\].*\[-1.5, 0\].*image 2"),
    (255.0, r"\[0, 255\].*0..255 or 0..1 pixels must be rescaled"),
])
def test_out_of_range_values_are_named(bad, message):
    images = np.zeros((3, 4, 4, 3))
    images[2, 1, 1, 2] = bad
    with pytest.raises(ValueError, match=message):
        cr.colourfulness_reward(images)
    assert np.isfinite(cr.colourfulness(images)).all()  # the array program itself takes any range
