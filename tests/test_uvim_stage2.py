"""UViM stage II (tasks/uvim/stage2.py): code tokens, the frozen decoder as detokenizer and
reward, the cached codes of a split, the pretraining recipe and its wrong-image control, on
colorization's smoke config with an untrained stage I (its codes are as good as any)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlcv_lib import config
from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import sampling
from rlcv_lib.core.task import check_task
from rlcv_lib.data import memory
from rlcv_lib.models import build_model
from rlcv_lib.models.vqvae import VQVAE
from rlcv_lib.tasks.colorization import pretrain as cp
from rlcv_lib.tasks.uvim import stage1, stage2

CFG = config.get_config("smoke", task="colorization")


def _task(seed: int = 0, cache_dir=None) -> stage2.Stage2Task:
    return cp.make_task(CFG, cache_dir, stage1_model=VQVAE(CFG.vqvae, rngs=nnx.Rngs(seed)))


@pytest.fixture(scope="module")
def task():
    return _task()


@pytest.fixture(scope="module")
def val():
    return ev.load_split(CFG, "validation", 8)


def test_the_task_protocol_and_its_vocabulary(task):
    check_task(task)
    k, length = CFG.vqvae.codebook_size, CFG.vqvae.num_codes
    assert (task.vocab_size, task.max_len, task.pad_id, task.eos_id) == (k + 1, length, 0, None)
    allowed = np.asarray(task.allowed(jnp.arange(length)[:, None], jnp.full((length, 3), -1)))
    assert allowed.shape == (length, 3, k + 1)
    assert not allowed[..., 0].any() and allowed[..., 1:].all()


def test_tokens_and_codes():
    codes = np.array([0, 3, 15])
    np.testing.assert_array_equal(stage2.tokens_of(codes), [1, 4, 16])
    np.testing.assert_array_equal(stage2.codes_of(stage2.tokens_of(codes), 16), codes)
    # the pad and ids beyond the codebook are clipped into it: any sequence decodes
    np.testing.assert_array_equal(stage2.codes_of(np.array([0, 17, 99, -5]), 16), [0, 15, 15, 0])


def test_tokenize_checks_the_code_count(task):
    np.testing.assert_array_equal(task.tokenize({"codes": np.arange(task.max_len)}),
                                  np.arange(task.max_len) + 1)
    with pytest.raises(ValueError, match="codes must be"):
        task.tokenize({"codes": np.arange(task.max_len + 1)})


def test_detokenize_of_tokenize_is_stage1s_evaluation_forward(task, val):
    batch = task.batch(val.batch)
    tokens = stage2.truth_tokens(task, val.batch)
    decoded = task.decode(tokens, batch["context"])
    forward = stage1.reconstruct(task.frozen, {"rgb": jnp.asarray(batch["rgb"])},
                                 jnp.asarray(batch["context"]))
    np.testing.assert_array_equal(decoded["rgb"], np.asarray(forward["rgb"]))


def test_the_batch_is_the_grey_input_its_context_and_the_colour_target(task, val):
    batch = task.batch(val.batch)
    assert set(batch) == {"image", "context", "rgb"}
    np.testing.assert_allclose(batch["context"], batch["image"] * 2 - 1, atol=1e-6)
    np.testing.assert_allclose(batch["rgb"], val.batch["image"] * 2 - 1)
    assert np.all(batch["image"][..., 0] == batch["image"][..., 1])


def test_reward_decodes_every_sample_with_its_images_context(task, val):
    batch = task.batch(val.batch)
    rng = np.random.default_rng(0)
    samples = rng.integers(1, task.vocab_size, (len(batch["image"]), 3, task.max_len))
    samples[0, 0] = 0  # the pad everywhere, and ids out of range: still decoded
    samples[1, 1] = 10 ** 6
    rewards, aux = task.reward(samples, batch)
    assert rewards.shape == (len(batch["image"]), 3) and aux == {}
    assert np.isfinite(rewards).all()
    one = task.decode(samples[2, 1][None], batch["context"][2:3])
    np.testing.assert_allclose(rewards[2, 1], cp.score(one, {})[0], rtol=1e-6)
    with pytest.raises(ValueError, match=r"\[B,N,L\]"):
        task.reward(samples[:, 0], batch)


def test_split_codes_are_the_batch_codes_and_cached_on_disk(tmp_path, val):
    task = _task(cache_dir=str(tmp_path))
    source = memory.load_split(CFG.world, "validation", size=8)
    codes = task.split_codes(source)
    np.testing.assert_array_equal(codes, task.codes(task.batch(val.batch)))
    files = list((tmp_path / "uvim_codes").glob("*.npy"))
    assert len(files) == 1
    again = _task(cache_dir=str(tmp_path))  # a new task reads the file
    np.testing.assert_array_equal(again.split_codes(source), codes)
    other = _task(seed=1, cache_dir=str(tmp_path))  # another stage I: its own codes
    other.split_codes(source)
    assert len(list((tmp_path / "uvim_codes").glob("*.npy"))) == 2
    assert stage2.state_digest(task.frozen) != stage2.state_digest(other.frozen)


def test_batches_are_pure_in_the_step_and_carry_the_cached_codes(task):
    from rlcv_lib.data import pipeline

    source = memory.load_split(CFG.world, "train", size=32)
    fn = stage2.make_batch_fn(task, pipeline.Loader(source, 4, seed=3), seed=3)
    a, b = fn(5), fn(5)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k])
    assert a["tokens"].shape == (4, task.max_len) and a["tokens"].min() >= 1
    np.testing.assert_array_equal(a["tokens"], stage2.tokens_of(task.codes(a)))


def test_sampler_logprobs_equal_teacher_forced_ones_for_code_sequences(task, val):
    model = build_model(CFG.model, task, seed=0)
    spec = sampling.DecodeSpec.for_task(task, num_samples=3)
    images = jnp.asarray(task.batch(val.batch)["image"][:4])
    out = sampling.sample(model, images, jax.random.key(1), spec)
    assert out.tokens.min() >= 1  # the pad is never drawn
    tf = sampling.teacher_forced(model, images, out.tokens, spec)
    np.testing.assert_allclose(np.asarray(out.logprobs), np.asarray(tf.logprobs), atol=1e-5)


def test_the_wrong_image_control_rolls_the_models_input(task, val):
    model = build_model(CFG.model, task, seed=0)
    control = ev.wrong_image_control(cp.STAGE2_RECIPE, model, task, val.batch)
    assert set(control["true"]) == {"code"}
    grey = task.batch(val.batch)["image"]
    tokens = stage2.truth_tokens(task, val.batch)
    expect = ev.masked_nll(model, task, grey, tokens, {"code": np.ones_like(tokens, bool)})
    np.testing.assert_allclose(control["true"]["code"], expect["code"], rtol=1e-6)
