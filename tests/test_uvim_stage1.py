"""UViM stage I training (tasks/uvim/stage1.py): losses, the step under the trainer (with
resume), and the evaluation forwards stage II relies on."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from flax import nnx

from rlcv_lib.core import train
from rlcv_lib.models.vqvae import VQVAE, VQVAE_SIZES
from rlcv_lib.tasks.uvim import stage1

TINY = VQVAE_SIZES["tiny"]
PANOPTIC = dataclasses.replace(TINY, targets=(("semantics", 3), ("instances", 4)))


def _colour_batch(step: int, size: int = 8) -> dict:
    rng = np.random.default_rng(step % 4)  # four batches, repeated: a loss that can fall
    s = TINY.image_size
    # flat blocks of colour: a target the tiny model can learn in a few dozen steps
    rgb = np.repeat(np.repeat(rng.uniform(-1, 1, (size, 4, 4, 3)), s // 4, 1), s // 4, 2)
    grey = np.repeat(rgb.mean(-1, keepdims=True), 3, -1)
    return {"image": grey.astype(np.float32), "rgb": rgb.astype(np.float32)}


def test_losses_by_hand():
    out = {"rgb": jnp.zeros((1, 2, 2, 3)), "sem": jnp.log(jnp.array([[[[1.0, 3.0]]]]))}
    tgt = {"rgb": jnp.full((1, 2, 2, 3), 0.5), "sem": jnp.array([[[[0.0, 1.0]]]])}
    loss, parts = stage1.reconstruction_loss(out, tgt, {"rgb": "l2", "sem": "xent"})
    np.testing.assert_allclose(parts["loss/rgb"], 0.25)
    np.testing.assert_allclose(parts["loss/sem"], -np.log(0.75), rtol=1e-6)
    np.testing.assert_allclose(loss, 0.25 - np.log(0.75), rtol=1e-6)


def test_losses_must_match_the_targets():
    with pytest.raises(ValueError, match="exactly the model's targets"):
        stage1.make_step(PANOPTIC, {"semantics": "xent"})
    with pytest.raises(ValueError, match="unknown losses"):
        stage1.make_step(TINY, {"rgb": "l1"})


def test_bad_batches_and_models_are_refused():
    step = stage1.make_step(TINY, {"rgb": "l2"})
    model = VQVAE(TINY, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    with pytest.raises(KeyError, match="lacks"):
        step(model, opt, {"image": _colour_batch(0)["image"]}, jax.random.key(0))
    with pytest.raises(ValueError, match="pass rng"):
        step(model, opt, _colour_batch(0))
    other = VQVAE(dataclasses.replace(TINY, codebook_size=8), rngs=nnx.Rngs(0))
    with pytest.raises(ValueError, match="another VQ-VAE config"):
        step(other, nnx.Optimizer(other, optax.adam(1e-3), wrt=nnx.Param), _colour_batch(0),
             jax.random.key(0))


def _fit(workdir, num_steps):
    model = VQVAE(TINY, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(3e-3), wrt=nnx.Param)
    result = train.fit(model, opt, stage1.make_step(TINY, {"rgb": "l2"}), _colour_batch,
                       num_steps=num_steps, seed=0, workdir=workdir, log_every=5, ckpt_every=5,
                       progress=False)
    return model, result


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return _fit(tmp_path_factory.mktemp("straight"), 30)


def test_training_lowers_the_loss_and_moves_the_codebook(trained):
    model, result = trained
    records = result.history.records("train")
    assert records[-1]["loss"] < 0.85 * records[0]["loss"]  # 0.29 -> 0.23 when written
    assert {"loss/rgb", "grad_norm", "codebook_used", "codebook_perplexity"} <= set(records[-1])
    assert float(model.counts[...].min()) >= TINY.min_count
    fresh = VQVAE(TINY, rngs=nnx.Rngs(0))
    assert not np.allclose(model.sums[...], fresh.sums[...])


def test_a_resumed_run_ends_where_the_straight_run_does(trained, tmp_path):
    """The codebook's moving averages are saved with the parameters: resuming at step 15
    reproduces the straight 30-step run exactly."""
    straight, _ = trained
    _fit(tmp_path, 15)
    resumed, _ = _fit(tmp_path, 30)
    np.testing.assert_array_equal(resumed.sums[...], straight.sums[...])
    np.testing.assert_array_equal(resumed.counts[...], straight.counts[...])
    np.testing.assert_array_equal(resumed.encoder_head.kernel[...],
                                  straight.encoder_head.kernel[...])


def test_codes_decode_to_the_eval_forward_exactly(trained):
    model, _ = trained
    batch = _colour_batch(1)
    targets, image = {"rgb": jnp.asarray(batch["rgb"])}, jnp.asarray(batch["image"])
    codes = stage1.encode_codes(model, targets, image)
    assert codes.shape == (8, TINY.num_codes)
    np.testing.assert_array_equal(stage1.decode_codes(model, codes, image)["rgb"],
                                  stage1.reconstruct(model, targets, image)["rgb"])
    no_codes = stage1.reconstruct_without_codes(model, image)["rgb"]
    keep_none = jnp.zeros((8, TINY.num_codes), bool)
    z_q = model.quantize(model.encode(targets, image))[0]
    np.testing.assert_allclose(no_codes, model.decode(z_q, image, keep_none)["rgb"], atol=1e-6)


def test_panoptic_targets_train_with_cross_entropy():
    model = VQVAE(PANOPTIC, rngs=nnx.Rngs(0))
    opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    step = stage1.make_step(PANOPTIC, {"semantics": "xent", "instances": "xent"})
    s = PANOPTIC.image_size
    rng = np.random.default_rng(0)
    batch = {"image": rng.uniform(0, 1, (2, s, s, 3)).astype(np.float32),
             "semantics": np.eye(3, dtype=np.float32)[rng.integers(0, 3, (2, s, s))],
             "instances": np.eye(4, dtype=np.float32)[rng.integers(0, 4, (2, s, s))]}
    metrics = step(model, opt, batch, jax.random.key(0))
    # zero-initialised heads: uniform predictions, cross-entropy log C per target
    np.testing.assert_allclose(metrics["loss/semantics"], np.log(3), rtol=1e-5)
    np.testing.assert_allclose(metrics["loss"], np.log(3) + np.log(4), rtol=1e-5)
