"""Encoder-decoder: teacher forcing vs the KV cache, sample folding, numerics, paper sizes."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlcv_lib.models import MODEL_PRESETS, MODEL_SIZES, EncoderDecoder, ModelConfig

TINY = MODEL_SIZES["tiny"].resolve(vocab_size=11, max_len=7)


@pytest.fixture(scope="module")
def model():
    return EncoderDecoder(TINY, rngs=nnx.Rngs(0))


def _inputs(b=2, n=3, seed=0):
    k1, k2 = jax.random.split(jax.random.key(seed))
    images = jax.random.uniform(k1, (b, 32, 32, 3))
    tokens = jax.random.randint(k2, (b * n, TINY.max_len), 0, TINY.vocab_size)
    return images, tokens


@nnx.jit
def _forward(model, images, tokens):
    return model(images, tokens)


@nnx.jit
def _all_steps(model, images, tokens):
    """Logits [B',L,V] from L KV-cache steps fed with ``tokens``."""
    cache = model.init_cache(model.encode(images), tokens.shape[0])
    prev = jnp.full((tokens.shape[0],), -1, jnp.int32)
    out = []
    for t in range(tokens.shape[1]):
        logits, cache = model.decode_step(cache, prev, jnp.int32(t))
        out.append(logits)
        prev = tokens[:, t]
    return jnp.stack(out, axis=1)


def test_cache_steps_equal_teacher_forcing(model):
    images, tokens = _inputs()
    np.testing.assert_allclose(_all_steps(model, images, tokens), _forward(model, images, tokens),
                               atol=1e-5, rtol=1e-5)


def test_folded_samples_equal_repeated_encoding(model):
    """B·N token rows against B encodings == the encodings repeated N times."""
    images, tokens = _inputs(b=2, n=3)

    @nnx.jit
    def both(model, images, tokens):
        enc = model.encode(images)
        return model.decode(tokens, enc), model.decode(tokens, jnp.repeat(enc, 3, axis=0))

    folded, repeated = both(model, images, tokens)
    np.testing.assert_allclose(folded, repeated, atol=1e-5)


def test_prefix_causality(model):
    """Changing token t changes no logit at positions ≤ t."""
    images, tokens = _inputs(b=1, n=1)
    a = _forward(model, images, tokens)
    b = _forward(model, images, tokens.at[:, 3].set((tokens[:, 3] + 1) % TINY.vocab_size))
    np.testing.assert_allclose(a[:, :4], b[:, :4], atol=1e-6)
    assert not np.allclose(a[:, 4:], b[:, 4:])


@pytest.mark.parametrize("overrides", [dict(stem="conv", enc_pos="sincos"),
                                       dict(stem="conv", stem_depth=2, stem_width=24),
                                       dict(dtype="bfloat16")])
def test_variants_run(overrides):
    cfg = dataclasses.replace(TINY, **overrides)
    images, tokens = _inputs(b=2, n=1)
    out = nnx.jit(lambda: EncoderDecoder(cfg, rngs=nnx.Rngs(1))(images, tokens))()
    assert out.shape == (2, 7, 11) and out.dtype == jnp.float32
    assert np.isfinite(np.asarray(out)).all()


def test_remat_gives_the_same_gradients(model):
    images, tokens = _inputs(b=2, n=1)
    rematted = nnx.clone(model)  # same parameters, blocks rematerialised
    rematted.encoder.cfg = rematted.decoder.cfg = dataclasses.replace(TINY, remat=True)

    @nnx.jit
    def grads(m):
        loss = lambda m: jnp.mean(m(images, tokens) ** 2)  # noqa: E731
        return nnx.state(nnx.grad(loss)(m), nnx.Param)

    g0, g1 = grads(model), grads(rematted)
    assert len(jax.tree.leaves(g0)) > 20
    for a, b in zip(jax.tree.leaves(g0), jax.tree.leaves(g1), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)


def test_bad_configs_name_the_field():
    with pytest.raises(ValueError, match="patch_size"):
        ModelConfig(image_size=30, patch_size=8, vocab_size=3, max_len=2).validate()
    with pytest.raises(ValueError, match="vocab_size"):
        ModelConfig().validate()
    with pytest.raises(ValueError, match="stem_depth"):
        ModelConfig(stem="conv", stem_depth=0, vocab_size=3, max_len=2).validate()
    with pytest.raises(ValueError, match="dec_heads"):
        ModelConfig(dec_width=30, dec_heads=4, vocab_size=3, max_len=2).validate()


def test_presets_cover_every_preset():
    assert set(MODEL_PRESETS) == {"smoke", "cpu", "gpu", "paper"}


PAPER = {"vit_b16_det600": (1100, 600), "vit_l16_pan256": (4097, 256),
         "vit_b16_cap128": (32000, 128)}  # the paper's (vocabulary, tokens), from their tasks
# One pre-LN block: 4 (D²+D) attention, 2 D·M + M + D MLP, 2 LayerNorms of 2D.
BLOCK = {768: 4 * (768 ** 2 + 768) + 2 * 768 * 3072 + 3072 + 768 + 4 * 768,
         1024: 4 * (1024 ** 2 + 1024) + 2 * 1024 * 4096 + 4096 + 1024 + 4 * 1024}


@pytest.mark.parametrize("name", PAPER)
def test_paper_configs_pass_eval_shape(name):
    """Init, a teacher-forced loss with its gradient, a KV-cache step and the sampler loop,
    all abstract (never compiled on the CPU)."""
    from rlcv_lib.core import sampling
    cfg = MODEL_SIZES[name].resolve(*PAPER[name])
    abstract = nnx.eval_shape(lambda: EncoderDecoder(cfg, rngs=nnx.Rngs(0)))
    graphdef, state = nnx.split(abstract)
    params = nnx.state(abstract, nnx.Param)
    enc_blocks = sum(x.size for x in jax.tree.leaves(nnx.state(abstract.encoder.blocks)))
    assert enc_blocks == cfg.enc_depth * BLOCK[cfg.enc_width]
    b, n, s = 2, 2, cfg.image_size
    images = jax.ShapeDtypeStruct((b, s, s, 3), jnp.float32)
    tokens = jax.ShapeDtypeStruct((b, n, cfg.max_len), jnp.int32)
    spec = sampling.DecodeSpec(max_len=cfg.max_len, num_samples=n)

    def loss_and_grad(state, images, tokens):
        model = nnx.merge(graphdef, state)

        def loss(model):
            return -sampling.teacher_forced(model, images, tokens, spec).logprobs.sum()
        return nnx.value_and_grad(loss)(model)

    value, grads = jax.eval_shape(loss_and_grad, state, images, tokens)
    assert value.shape == () and value.dtype == jnp.float32
    g = nnx.state(grads, nnx.Param)
    assert jax.tree.map(lambda x: x.shape, g) == jax.tree.map(lambda x: x.shape, params)

    def one_step(state, images):
        model = nnx.merge(graphdef, state)
        cache = model.init_cache(model.encode(images), b * n)
        return model.decode_step(cache, jnp.zeros((b * n,), jnp.int32), jnp.int32(0))

    logits, cache = jax.eval_shape(one_step, state, images)
    assert logits.shape == (b * n, cfg.vocab_size)
    assert cache.self_k[0].shape == (b * n, cfg.dec_heads, cfg.max_len,
                                     cfg.dec_width // cfg.dec_heads)
    assert cache.cross_k[0].shape[0] == b  # image keys stored once per image, not per sample

    def sample(state, images):  # the whole jitted sampler loop, traced abstractly
        return sampling.sample(nnx.merge(graphdef, state), images, jax.random.key(0), spec)

    out = jax.eval_shape(sample, state, images)
    assert out.tokens.shape == out.logprobs.shape == (b, n, cfg.max_len)


def test_vocabulary_and_length_come_from_the_task():
    cfg = MODEL_SIZES["tiny"]
    assert (cfg.resolve(11, 7).vocab_size, cfg.resolve(11, 7).max_len) == (11, 7)
    fixed = cfg.resolve(11, 7)
    assert fixed.resolve(11, 7) == fixed  # agreeing values are kept
    with pytest.raises(ValueError, match="model.vocab_size=11 contradicts the task's "
                                         "vocab_size=12"):
        fixed.resolve(12, 7)
    with pytest.raises(ValueError, match="model.max_len=7 contradicts"):
        fixed.resolve(11, 8)


def test_conv_stem_channels_and_depth():
    """Default: one strided conv per stage, channels up to half the width (the shipped models'
    layout); ``depth``/``last`` add stride-1 convolutions and set the last stage's channels."""
    from rlcv_lib.models.vit import ConvStem

    def kernels(**kw):
        stem = ConvStem(8, 128, dtype=jnp.float32, rngs=nnx.Rngs(0), **kw)
        return [c.kernel.shape for c in stem.convs]

    assert kernels() == [(3, 3, 3, 16), (3, 3, 16, 32), (3, 3, 32, 64)]
    assert kernels(depth=2, last=128) == [(3, 3, 3, 32), (3, 3, 32, 32), (3, 3, 32, 64),
                                          (3, 3, 64, 64), (3, 3, 64, 128), (3, 3, 128, 128)]
