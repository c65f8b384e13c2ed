"""UViM stage I (models/vqvae.py): the quantizer, the codebook statistics, code dropout, and the
model's forward passes on the tiny size."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rlcv_lib.models import vqvae
from rlcv_lib.models.vqvae import VQVAE, VQVAE_SIZES, VQVAEConfig

TINY = VQVAE_SIZES["tiny"]


# -- quantizer ----------------------------------------------------------------------------------


def test_nearest_code_on_hand_built_vectors():
    e = jnp.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    x = jnp.array([[[0.9, 0.2], [0.1, -0.3]], [[-2.0, 0.5], [0.2, 3.0]]])
    np.testing.assert_array_equal(vqvae.nearest_code(x, e), [[0, 0], [2, 1]])


def test_straight_through_forward_is_the_code_and_gradient_the_identity():
    x = jnp.array([0.3, -1.2, 2.0])
    x_q = jnp.array([1.0, -1.0, 1.0])
    w = jnp.array([2.0, 3.0, -4.0])
    np.testing.assert_array_equal(vqvae.straight_through(x, x_q), x_q)
    grad = jax.grad(lambda v: jnp.sum(vqvae.straight_through(v, x_q) * w))(x)
    np.testing.assert_array_equal(grad, w)


def test_codewords_are_mean_vectors_normalised():
    sums = jnp.array([[3.0, 4.0], [0.0, -2.0]])
    counts = jnp.array([2.0, 4.0])
    np.testing.assert_allclose(vqvae.codewords(sums, counts), [[0.6, 0.8], [0.0, -1.0]])


# -- codebook statistics ------------------------------------------------------------------------


def test_moving_averages_on_a_constructed_batch():
    sums = jnp.array([[1.0, 0.0], [0.0, 1.0], [2.0, 2.0]])
    counts = jnp.array([1.0, 2.0, 4.0])
    x = jnp.array([[[1.0, 1.0], [3.0, -1.0]], [[0.5, 0.5], [7.0, 7.0]]])
    idx = jnp.array([[0, 0], [2, 0]])  # code 0 three times, code 2 once, code 1 never
    new_sums, new_counts = vqvae.update_codebook(sums, counts, x, idx, momentum=0.5)
    np.testing.assert_allclose(new_counts, [0.5 + 3, 1.0, 2.0 + 1])
    np.testing.assert_allclose(new_sums, [[0.5 + 11.0, 0.0 + 7.0], [0.0, 0.5], [1.5, 1.5]])


def test_split_moves_half_of_the_most_used_code_into_the_least_used():
    sums = jnp.array([[8.0, 4.0], [0.1, 0.1], [1.0, 3.0]])
    counts = jnp.array([4.0, 0.01, 2.0])
    s, c = vqvae.split_most_used(sums, counts, jax.random.key(0), perturbation=1e-3)
    np.testing.assert_allclose(c, [2.0, 2.0, 2.0])
    np.testing.assert_allclose(s[0], [4.0, 2.0])
    np.testing.assert_allclose(s[1], [4.0, 2.0], rtol=1e-3)  # perturbed copy
    assert not np.array_equal(s[1], s[0])
    np.testing.assert_array_equal(s[2], sums[2])


def test_revive_dead_codes_revives_every_dead_code_and_ends_when_all_are_dead():
    counts = jnp.array([100.0, 0.05, 0.0, 3.0])
    sums = jnp.arange(8.0).reshape(4, 2) + 1
    s, c = vqvae.revive_dead_codes(sums, counts, jax.random.key(1), 0.1, 1e-3)
    assert np.all(np.asarray(c) >= 0.1)
    np.testing.assert_allclose(np.sum(c), np.sum(counts) - 0.05, rtol=1e-6)  # dead mass gone
    np.testing.assert_allclose(sorted(np.asarray(c)), [3.0, 25.0, 25.0, 50.0])
    # every count below the threshold: the loop stops after K splits instead of spinning
    s, c = vqvae.revive_dead_codes(sums, jnp.full(4, 1e-3), jax.random.key(2), 0.1, 1e-3)
    assert np.all(np.isfinite(s)) and np.all(np.isfinite(c))


def test_codebook_usage_on_constructed_counts():
    usage = vqvae.codebook_usage(jnp.array([2.0, 2.0, 0.0, 0.0]))
    assert float(usage["codebook_used"]) == 0.5
    np.testing.assert_allclose(usage["codebook_perplexity"], 2.0, rtol=1e-6)
    np.testing.assert_allclose(usage["codebook_max_share"], 0.5)
    uniform = vqvae.codebook_usage(jnp.ones(8))
    np.testing.assert_allclose(uniform["codebook_perplexity"], 8.0, rtol=1e-6)


# -- code dropout -------------------------------------------------------------------------------


def test_keep_mask_keeps_the_stated_fraction():
    length = 9
    u = jnp.array([0.0, 0.05, 0.5, 0.95, 1.0])
    mask = np.asarray(vqvae.keep_mask(u, length))
    # code i kept iff 1 - (i+1)/10 > u: 9, 9, 4, 0, 0 codes, always a prefix
    np.testing.assert_array_equal(mask.sum(1), [9, 9, 4, 0, 0])
    for row in mask:
        assert not np.any(np.diff(row.astype(int)) > 0)


def test_random_code_dropout_keeps_a_uniform_fraction_anywhere():
    key = jax.random.key(3)
    ordered = np.asarray(vqvae.code_dropout_mask(key, 4000, 16, "ordered"))
    random = np.asarray(vqvae.code_dropout_mask(key, 4000, 16, "random"))
    np.testing.assert_array_equal(ordered.sum(1), random.sum(1))  # same fractions, moved
    kept = random.mean(1)
    assert abs(kept.mean() - 0.5) < 0.02 and kept.min() == 0.0 and kept.max() == 1.0
    assert abs(random.mean(0) - 0.5).max() < 0.05  # every position dropped equally often
    assert np.asarray(vqvae.code_dropout_mask(key, 3, 16, "none")).all()


# -- the model ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def model_and_batch():
    model = VQVAE(TINY, rngs=nnx.Rngs(0))
    # heads start at zero (as released); give them values so outputs depend on the codes
    for head in model.heads.values():
        head.kernel[...] = 0.1 * jax.random.normal(jax.random.key(4), head.kernel.shape)
    rng = np.random.default_rng(0)
    s = TINY.image_size
    rgb = jnp.asarray(rng.uniform(-1, 1, (4, s, s, 3)), jnp.float32)
    grey = jnp.repeat(rgb.mean(-1, keepdims=True), 3, axis=-1)
    return model, {"rgb": rgb}, grey


def test_patchify_round_trip():
    x = jnp.arange(2 * 8 * 8 * 3.0).reshape(2, 8, 8, 3)
    p = vqvae.patchify(x, 4)
    assert p.shape == (2, 4, 48)
    np.testing.assert_array_equal(p[0, 1], x[0, :4, 4:].reshape(-1))
    np.testing.assert_array_equal(vqvae.unpatchify(p, 4, 2), x)


def test_forward_shapes_and_standardised_codes(model_and_batch):
    model, targets, grey = model_and_batch
    outputs, aux = model(targets, grey)
    assert outputs["rgb"].shape == targets["rgb"].shape
    assert aux.z.shape == (4, TINY.num_codes, TINY.codeword_dim)
    assert aux.idx.shape == (4, TINY.num_codes) and aux.idx.dtype == jnp.int32
    np.testing.assert_allclose(aux.z.mean(-1), 0, atol=1e-5)
    np.testing.assert_allclose(aux.z.std(-1), 1, atol=1e-3)


def test_zero_initialised_heads_predict_zero():
    model = VQVAE(TINY, rngs=nnx.Rngs(1))
    s = TINY.image_size
    out, _ = model({"rgb": jnp.ones((1, s, s, 3))}, jnp.zeros((1, s, s, 3)))
    np.testing.assert_array_equal(out["rgb"], 0)


def test_decoding_the_codes_equals_the_eval_forward(model_and_batch):
    model, targets, grey = model_and_batch
    outputs, aux = model(targets, grey)
    np.testing.assert_array_equal(model.decode_codes(aux.idx, grey)["rgb"], outputs["rgb"])


def test_any_code_sequence_decodes(model_and_batch):
    model, _, grey = model_and_batch
    for codes in (jnp.zeros((4, TINY.num_codes), int), jnp.full((4, TINY.num_codes), 10 ** 6),
                  jnp.full((4, TINY.num_codes), -5)):
        assert np.all(np.isfinite(model.decode_codes(codes, grey)["rgb"]))


def test_dropped_codes_change_the_output_and_all_kept_does_not(model_and_batch):
    model, targets, grey = model_and_batch
    z = model.encode(targets, grey)
    z_q, _ = model.quantize(z)
    full = model.decode(z_q, grey)["rgb"]
    keep_all = jnp.ones(z.shape[:2], bool)
    np.testing.assert_array_equal(model.decode(z_q, grey, keep_all)["rgb"], full)
    dropped = model.decode(z_q, grey, ~keep_all)["rgb"]
    np.testing.assert_array_equal(dropped, model.decode(jnp.zeros_like(z_q), grey)["rgb"])
    assert not np.allclose(dropped, full)


def test_gradient_reaches_the_encoder_through_the_quantizer(model_and_batch):
    model, targets, grey = model_and_batch

    def loss(m):
        out, _ = m(targets, grey)
        return jnp.mean((out["rgb"] - targets["rgb"]) ** 2)

    grads = nnx.grad(loss)(model)
    assert float(jnp.abs(grads.embed["rgb"].kernel[...]).sum()) > 0
    assert float(jnp.abs(grads.encoder_head.kernel[...]).sum()) > 0
    # the codebook is not a parameter: the optimiser never sees it
    assert not any(isinstance(v, nnx.Param) for v in (model.sums, model.counts))


def test_training_learns_codebook_and_reconstruction():
    """A few Adam steps with code dropout on one batch: the loss falls, the statistics move,
    no code stays dead."""
    cfg = dataclasses.replace(TINY, code_dropout="random")
    model = VQVAE(cfg, rngs=nnx.Rngs(2))
    opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    rng = np.random.default_rng(1)
    s = cfg.image_size
    rgb = jnp.asarray(rng.uniform(-1, 1, (8, s, s, 3)), jnp.float32)
    grey = jnp.repeat(rgb.mean(-1, keepdims=True), 3, axis=-1)

    @nnx.jit
    def step(model, opt, key):
        k_drop, k_split = jax.random.split(key)
        keep = vqvae.code_dropout_mask(k_drop, rgb.shape[0], cfg.num_codes, cfg.code_dropout)

        def loss_fn(m):
            out, aux = m({"rgb": rgb}, grey, keep)
            return jnp.mean((out["rgb"] - rgb) ** 2), aux

        (loss, aux), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        opt.update(model, grads)
        return loss, model.learn_codebook(aux, k_split)

    counts0 = np.asarray(model.counts[...]).copy()
    losses = [float(step(model, opt, jax.random.key(i))[0]) for i in range(40)]
    assert np.mean(losses[-5:]) < 0.8 * np.mean(losses[:5])
    assert not np.allclose(model.counts[...], counts0)
    assert float(model.counts[...].min()) >= cfg.min_count
    np.testing.assert_allclose(float(model.counts[...].sum()),
                               cfg.momentum ** 40 * cfg.codebook_size
                               + 8 * cfg.num_codes * (1 - cfg.momentum ** 40) / (1 - cfg.momentum),
                               rtol=1e-4)


# -- bad input ----------------------------------------------------------------------------------


def test_bad_inputs_name_the_problem(model_and_batch):
    model, targets, grey = model_and_batch
    with pytest.raises(ValueError, match="targets must have keys"):
        model.encode({"colour": targets["rgb"]}, grey)
    with pytest.raises(ValueError, match=r"image must be \[B,32,32,3\]"):
        model.encode(targets, grey[:, :16])
    with pytest.raises(ValueError, match="codes must be"):
        model.decode_codes(jnp.zeros((4, 3), int), grey)


@pytest.mark.parametrize("change, message", [
    (dict(patch_size=5), "multiple of patch_size"),
    (dict(heads=3), "multiple of heads"),
    (dict(targets=()), "at least one"),
    (dict(targets=(("a", 1), ("a", 2))), "repeat"),
    (dict(code_grid=5), "code_grid"),
    (dict(momentum=1.0), "momentum"),
    (dict(code_dropout="some"), "code_dropout"),
])
def test_config_validation(change, message):
    with pytest.raises(ValueError, match=message):
        VQVAEConfig(**{**dataclasses.asdict(TINY), **change}).validate()
