"""Sampler: KV cache vs recomputation, sampler vs teacher-forced log-probs, EOS/PAD, masks,
greedy, top-k/top-p and beam search (exhaustively checked on a tiny vocabulary)."""

import dataclasses
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlcv_lib.core import sampling
from rlcv_lib.models import MODEL_SIZES, EncoderDecoder

PAD, EOS, V, L, SLOT = 0, 1, 7, 8, 3


def grammar(position, prev):
    """Detection-like rule: 'slots' of 3 tokens; a slot's first token may be PAD (absent), EOS
    or a value 2..6; after a PAD inside a slot the rest of the slot is PAD; EOS only at a slot
    start; values elsewhere."""
    tok = jnp.arange(V)
    start = (position % SLOT == 0)[..., None]
    forced_pad = (~start) & (prev == PAD)[..., None]
    at_start = tok != -1  # everything
    inside = tok >= 2
    ok = jnp.where(start, at_start, inside)
    return jnp.where(forced_pad, tok == PAD, ok)


@pytest.fixture(scope="module")
def model():
    cfg = dataclasses.replace(MODEL_SIZES["tiny"], vocab_size=V, max_len=L)
    return EncoderDecoder(cfg, rngs=nnx.Rngs(0))


@pytest.fixture(scope="module")
def images():
    return jax.random.uniform(jax.random.key(1), (3, 32, 32, 3))


teacher_forced = sampling.teacher_forced_jit
SPEC = sampling.DecodeSpec(max_len=L, pad_id=PAD, eos_id=EOS, allowed=grammar, num_samples=4)


@pytest.fixture(scope="module")
def samples(model, images):
    return sampling.sample_jit(model, images, jax.random.key(7), SPEC)


def test_cache_equals_recomputing_the_prefix(model, images, samples):
    slow = sampling.sample_jit(model, images, jax.random.key(7),
                               dataclasses.replace(SPEC, use_cache=False))
    np.testing.assert_array_equal(samples.tokens, slow.tokens)
    np.testing.assert_allclose(samples.logprobs, slow.logprobs, atol=1e-5)
    np.testing.assert_array_equal(samples.lengths, slow.lengths)


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_sampler_logprobs_equal_teacher_forced(model, images, temperature):
    spec = dataclasses.replace(SPEC, temperature=temperature)
    out = sampling.sample_jit(model, images, jax.random.key(3), spec)
    tf = teacher_forced(model, images, out.tokens, spec)
    np.testing.assert_allclose(out.logprobs, tf.logprobs, atol=1e-5)
    np.testing.assert_array_equal(tf.valid.sum(-1), out.lengths)
    assert np.all(np.asarray(out.logprobs) <= 0) and np.any(np.asarray(out.logprobs) < -0.1)


def _eos_at_2(position, prev):  # every row ends at position 2: the loop can stop at t = 3
    return jnp.where(position >= 2, jnp.arange(V) == EOS, jnp.arange(V) >= 2)


@pytest.mark.parametrize("rule", [grammar, _eos_at_2])
def test_early_stop_equals_running_all_steps(model, images, samples, rule):
    spec = dataclasses.replace(SPEC, allowed=rule)
    early = samples if rule is grammar else sampling.sample_jit(model, images,
                                                                jax.random.key(7), spec)
    full = sampling.sample_jit(model, images, jax.random.key(7),
                               dataclasses.replace(spec, early_stop=False))
    for a, b in zip(early, full, strict=True):
        np.testing.assert_array_equal(a, b)
    if rule is _eos_at_2:
        assert np.all(np.asarray(early.lengths) == 3)


def test_samples_follow_the_grammar_and_eos(samples):
    toks, lps = np.asarray(samples.tokens), np.asarray(samples.logprobs)
    lengths = np.asarray(samples.lengths)
    assert toks.shape == (3, 4, L) and lps.shape == (3, 4, L) and lengths.shape == (3, 4)
    assert len({tuple(r) for r in toks.reshape(-1, L)}) > 6  # real sampling, rows differ
    for row, lp, n in zip(toks.reshape(-1, L), lps.reshape(-1, L), lengths.reshape(-1),
                          strict=True):
        prev = -1
        for t, tok in enumerate(row[:n]):
            assert bool(grammar(jnp.int32(t), jnp.int32(prev))[tok]), (row, t)
            prev = tok
        eos = np.flatnonzero(row == EOS)
        assert n == (eos[0] + 1 if len(eos) else L)
        assert np.all(row[n:] == PAD) and np.all(lp[n:] == 0)
    assert (lengths < L).any()  # some rows did stop at EOS


def test_same_key_same_samples_other_key_differs(model, images, samples):
    again = sampling.sample_jit(model, images, jax.random.key(7), SPEC)
    np.testing.assert_array_equal(again.tokens, samples.tokens)
    other = sampling.sample_jit(model, images, jax.random.key(8), SPEC)
    assert not np.array_equal(other.tokens, samples.tokens)


def test_greedy_is_the_masked_argmax(model, images):
    out = sampling.greedy_jit(model, images, SPEC)
    spec1 = dataclasses.replace(SPEC, num_samples=1)
    tf = teacher_forced(model, images, out.tokens, spec1)
    best = np.asarray(jnp.argmax(tf.log_softmax, -1))
    valid = np.asarray(tf.valid)
    np.testing.assert_array_equal(np.asarray(out.tokens)[valid], best[valid])


def test_top_k_1_and_tiny_top_p_are_greedy(model, images):
    g = sampling.greedy_jit(model, images, SPEC)
    for kw in (dict(top_k=1), dict(top_p=1e-6)):
        spec = dataclasses.replace(SPEC, num_samples=1, **kw)
        out = sampling.sample_jit(model, images, jax.random.key(0), spec)
        np.testing.assert_array_equal(out.tokens, g.tokens)
        np.testing.assert_allclose(out.logprobs, 0.0, atol=1e-6)  # truncated to one token


def test_truncate():
    logits = jnp.log(jnp.array([[0.5, 0.3, 0.15, 0.05]]))
    assert np.isfinite(sampling.truncate(logits, top_k=2)).sum() == 2
    assert np.isfinite(sampling.truncate(logits, top_p=0.79)).sum() == 2
    assert np.isfinite(sampling.truncate(logits, top_p=0.81)).sum() == 3


def test_beam_width_one_is_greedy(model, images):
    g = sampling.greedy_jit(model, images, SPEC)
    b = sampling.beam_search_jit(model, images, SPEC, beam_size=1)
    np.testing.assert_array_equal(b.tokens, g.tokens)
    np.testing.assert_allclose(b.logprobs, g.logprobs, atol=1e-5)
    np.testing.assert_allclose(b.scores[:, 0], g.logprobs.sum(-1)[:, 0], atol=1e-5)


def test_wide_beam_finds_the_exhaustive_argmax():
    """V=3, L=3, no EOS, a position-dependent mask: all 27 sequences scored by teacher forcing;
    a beam of width 9 = V^(L-1) keeps every prefix, so it must return the exact argmax."""
    v, length = 3, 3
    cfg = dataclasses.replace(MODEL_SIZES["tiny"], vocab_size=v, max_len=length)
    m = nnx.jit(lambda: EncoderDecoder(cfg, rngs=nnx.Rngs(5)))()
    images = jax.random.uniform(jax.random.key(2), (2, 32, 32, 3))

    def rule(position, prev):  # token 0 is not allowed right after token 2
        return jnp.where((prev == 2)[..., None], jnp.arange(v) != 0, True)

    spec = sampling.DecodeSpec(max_len=length, pad_id=0, eos_id=None, allowed=rule)
    seqs = jnp.array(list(itertools.product(range(v), repeat=length)), jnp.int32)  # [27,3]
    spec_all = dataclasses.replace(spec, num_samples=len(seqs))
    tokens = jnp.broadcast_to(seqs, (2,) + seqs.shape)
    scores = teacher_forced(m, images, tokens, spec_all).logprobs.sum(-1)  # [2,27]
    beams = sampling.beam_search_jit(m, images, spec, beam_size=9)
    for i in range(2):
        np.testing.assert_array_equal(beams.tokens[i, 0], seqs[jnp.argmax(scores[i])])
        np.testing.assert_allclose(beams.scores[i, 0], scores[i].max(), atol=1e-5)
        # all 9 beams are the 9 best sequences, in order
        np.testing.assert_allclose(beams.scores[i], jnp.sort(scores[i])[::-1][:9], atol=1e-5)
    greedy = sampling.greedy_jit(m, images, spec)
    assert np.all(np.asarray(beams.scores[:, 0]) >= np.asarray(greedy.logprobs.sum(-1)[:, 0])
                  - 1e-6)


def test_a_rule_that_forbids_everything_after_eos_keeps_gradients_finite(model, images):
    """Positions after EOS are never scored; a rule that allows nothing there (here: nothing
    after EOS or PAD) must not put NaN into the sampler or the teacher-forced gradient."""
    def rule(position, prev):
        dead = (prev == EOS) | (prev == PAD)
        return jnp.where(dead[..., None], False, jnp.arange(V) != PAD)

    spec = dataclasses.replace(SPEC, allowed=rule)
    out = sampling.sample_jit(model, images, jax.random.key(4), spec)
    assert (np.asarray(out.lengths) < L).any() and np.isfinite(np.asarray(out.logprobs)).all()

    @nnx.jit
    def grads(m):
        return nnx.grad(lambda m: sampling.teacher_forced(m, images, out.tokens, spec)
                        .logprobs.sum())(m)

    g = nnx.state(grads(model), nnx.Param)
    assert all(np.isfinite(np.asarray(x)).all() for x in jax.tree.leaves(g))
