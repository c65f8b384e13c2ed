"""Jit-compiled decoding: sampling (temperature, top-k, top-p), greedy and beam search.

One loop serves every task. Per position ``t`` the decoder gives logits for the ``B·N`` rows
(N samples per image; the image is encoded once, see :mod:`rlcv_lib.models.layers`), the task's
allowed-token rule masks them, a token is chosen, and after an EOS the rest of a row is PAD with
log-prob 0. The allowed-token rule is part of the policy: :func:`teacher_forced` applies the
same rule, so the sampler's log-probs equal the teacher-forced log-probs of the same samples.

The allowed-token rule is ``allowed(position, prev_token) -> bool[..., V]``: ``position`` an
int32 array, ``prev_token`` the token at ``position - 1`` (``-1`` at position 0), broadcasting
against each other (the sampler calls it with a scalar position and [B·N] tokens; the
teacher-forced pass with [1,L] positions and [B·N,L] tokens). A state that depends on the
previous token covers e.g. detection's grammar (a PAD at a slot's first token forces PAD for the
rest of the slot). ``None`` allows everything.

Usage::

    spec = DecodeSpec.for_task(task, num_samples=8)      # hashable, static under jit
    out = sample(model, images, rng, spec)                # SampleOutput, [B,N,L] fields
    beams = beam_search(model, images, spec, beam_size=4)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

AllowedFn = Callable[[jax.Array, jax.Array], jax.Array]


@dataclasses.dataclass(frozen=True)
class DecodeSpec:
    """Static decoding settings (hashable: passed as a static argument to jit)."""

    max_len: int
    """Tokens per sequence L."""
    pad_id: int = 0
    """Token written after EOS (log-prob 0)."""
    eos_id: int | None = None
    """End-of-sequence token, or None for fixed-length outputs."""
    allowed: AllowedFn | None = None
    """The task's allowed-token rule (see the module docstring)."""
    num_samples: int = 1
    """N sequences per image."""
    temperature: float = 1.0
    """Logits are divided by it before sampling (RL: 1)."""
    top_k: int = 0
    """Keep only the k most likely tokens (0: off). Biases REINFORCE: RL flag only."""
    top_p: float = 1.0
    """Nucleus sampling: keep the smallest set with probability ≥ p (1: off)."""
    greedy: bool = False
    """Argmax instead of sampling."""
    use_cache: bool = True
    """KV-cache decoding; False recomputes the whole prefix each step (reference/benchmark)."""
    unroll: int = 1
    """``jax.lax.scan`` unroll factor of the decoding loop."""
    early_stop: bool = True
    """With an EOS: stop the loop once every row has emitted it (a ``while_loop``; the outputs
    are identical to running all L steps). Without an EOS the loop is a ``scan``."""

    @classmethod
    def for_task(cls, task: Any, **kw) -> DecodeSpec:
        return cls(max_len=task.max_len, pad_id=task.pad_id, eos_id=task.eos_id,
                   allowed=task.allowed, **kw)


class SampleOutput(NamedTuple):
    tokens: jax.Array  # int32 [B,N,L]; PAD after EOS
    logprobs: jax.Array  # float32 [B,N,L]; under the distribution sampled from; 0 after EOS
    lengths: jax.Array  # int32 [B,N]; tokens up to and including EOS (L without EOS)


class BeamOutput(NamedTuple):
    tokens: jax.Array  # int32 [B,K,L], best beam first
    logprobs: jax.Array  # float32 [B,K,L], per-token log-probs (temperature 1)
    scores: jax.Array  # float32 [B,K], summed log-probs
    lengths: jax.Array  # int32 [B,K]


class TeacherForced(NamedTuple):
    logprobs: jax.Array  # float32 [B,N,L]: log p of each given token under the mask, 0 if invalid
    valid: jax.Array  # bool [B,N,L]: position ≤ the first EOS
    log_softmax: jax.Array  # float32 [B,N,L,V]: the masked, temperature-scaled distributions


# ---------------------------------------------------------------------------------------------
# Masking and truncation


def allowed_mask(spec: DecodeSpec, position: jax.Array, prev: jax.Array, vocab: int):
    """bool [..., V]: the task's rule, or everything allowed."""
    if spec.allowed is None:
        return jnp.ones(prev.shape + (vocab,), bool)
    return jnp.broadcast_to(spec.allowed(position, prev), prev.shape + (vocab,))


def masked_logits(logits: jax.Array, allowed: jax.Array, temperature: float) -> jax.Array:
    """Temperature-scaled logits with disallowed tokens at -inf."""
    return jnp.where(allowed, logits / temperature, -jnp.inf)


def truncate(logits: jax.Array, top_k: int = 0, top_p: float = 1.0) -> jax.Array:
    """Top-k then top-p (nucleus) truncation: removed tokens get -inf."""
    if top_k:
        kth = jax.lax.top_k(logits, top_k)[0][..., -1:]
        logits = jnp.where(logits >= kth, logits, -jnp.inf)
    if top_p < 1.0:
        srt = jnp.sort(logits, axis=-1)[..., ::-1]
        probs = jax.nn.softmax(srt, axis=-1)
        keep = (jnp.cumsum(probs, axis=-1) - probs) < top_p  # first token always kept
        thresh = jnp.min(jnp.where(keep, srt, jnp.inf), axis=-1, keepdims=True)
        logits = jnp.where(logits >= thresh, logits, -jnp.inf)
    return logits


def _choose(logits, allowed, key, spec: DecodeSpec):
    """Token [B'] and its log-prob [B'] under the distribution actually sampled from."""
    z = truncate(masked_logits(logits, allowed, spec.temperature), spec.top_k, spec.top_p)
    logp = jax.nn.log_softmax(z, axis=-1)
    tok = jnp.argmax(z, -1) if spec.greedy else jax.random.categorical(key, z, axis=-1)
    tok = tok.astype(jnp.int32)
    return tok, jnp.take_along_axis(logp, tok[:, None], axis=-1)[:, 0]


def _finish(tok, logp, done, spec: DecodeSpec):
    """PAD with log-prob 0 after EOS; returns (tok, logp, valid, new_done)."""
    if spec.eos_id is None:
        return tok, logp, jnp.ones_like(done), done
    tok = jnp.where(done, spec.pad_id, tok)
    logp = jnp.where(done, 0.0, logp)
    return tok, logp, ~done, done | (tok == spec.eos_id)


# ---------------------------------------------------------------------------------------------
# Sampling


def sample(model: nnx.Module, images: jax.Array, rng: jax.Array, spec: DecodeSpec) -> SampleOutput:
    """N sequences per image, [B,N,L]. Pure function of (model, images, rng); jit it via
    :data:`sample_jit` (or inside a larger jitted function). The key of step t is
    ``fold_in(rng, t)``, so the cached and recomputing loops draw the same tokens."""
    b = images.shape[0]
    n, length = spec.num_samples, spec.max_len
    enc = model.encode(images)  # [B,S,De], once per image
    rows = b * n
    vocab = model.cfg.vocab_size
    if spec.use_cache:
        state = model.init_cache(enc, rows)
    else:
        state = jnp.full((rows, length), spec.pad_id, jnp.int32)  # tokens so far

    def body(carry, t):
        state, prev, done = carry
        if spec.use_cache:
            logits, state = model.decode_step(state, prev, t)
        else:
            logits = jax.lax.dynamic_index_in_dim(model.decode(state, enc), t, axis=1,
                                                  keepdims=False)
        allowed = allowed_mask(spec, t, prev, vocab) | done[:, None]  # after EOS: unused
        tok, logp = _choose(logits, allowed, jax.random.fold_in(rng, t), spec)
        tok, logp, valid, done = _finish(tok, logp, done, spec)
        if not spec.use_cache:
            state = jax.lax.dynamic_update_slice_in_dim(state, tok[:, None], t, axis=1)
        return (state, tok, done), (tok, logp, valid)

    init = (state, jnp.full((rows,), -1, jnp.int32), jnp.zeros((rows,), bool))
    if spec.eos_id is not None and spec.early_stop:
        toks, logps, valid = _while_all_done(body, init, length, spec.pad_id)
    else:
        _, (toks, logps, valid) = jax.lax.scan(body, init, jnp.arange(length),
                                               unroll=spec.unroll)
    toks, logps, valid = (x.T.reshape(b, n, length) for x in (toks, logps, valid))
    return SampleOutput(toks, logps, valid.sum(-1).astype(jnp.int32))


sample_jit = nnx.jit(sample, static_argnames=("spec",))


def _while_all_done(body, init, length: int, pad_id: int):
    """Runs ``body`` like ``scan`` over t = 0..L-1 but stops once every row is done; the
    positions never visited keep (PAD, 0, invalid), exactly what ``body`` writes after EOS."""
    rows = init[1].shape[0]
    bufs = (jnp.full((length, rows), pad_id, jnp.int32), jnp.zeros((length, rows)),
            jnp.zeros((length, rows), bool))

    def cond(c):
        t, (_, _, done), _ = c
        return (t < length) & ~jnp.all(done)

    def step(c):
        t, carry, bufs = c
        carry, outs = body(carry, t)
        bufs = tuple(buf.at[t].set(o.astype(buf.dtype)) for buf, o in zip(bufs, outs,
                                                                         strict=True))
        return t + 1, carry, bufs

    _, _, bufs = jax.lax.while_loop(cond, step, (jnp.int32(0), init, bufs))
    return bufs


def greedy(model: nnx.Module, images: jax.Array, spec: DecodeSpec) -> SampleOutput:
    """Greedy decoding under the mask: [B,1,L] outputs."""
    spec = dataclasses.replace(spec, greedy=True, num_samples=1)
    return sample(model, images, jax.random.key(0), spec)


greedy_jit = nnx.jit(greedy, static_argnames=("spec",))


# ---------------------------------------------------------------------------------------------
# Teacher forcing under the same mask


def valid_mask(tokens: jax.Array, eos_id: int | None) -> jax.Array:
    """bool [..., L]: positions up to and including the first EOS."""
    if eos_id is None:
        return jnp.ones(tokens.shape, bool)
    is_eos = (tokens == eos_id).astype(jnp.int32)
    seen_before = jnp.cumsum(is_eos, axis=-1) - is_eos
    return seen_before == 0


def prev_tokens(tokens: jax.Array) -> jax.Array:
    """The token before each position, -1 at position 0."""
    return jnp.concatenate([jnp.full(tokens.shape[:-1] + (1,), -1, tokens.dtype),
                            tokens[..., :-1]], axis=-1)


def teacher_forced(model: nnx.Module, images: jax.Array, tokens: jax.Array,
                   spec: DecodeSpec) -> TeacherForced:
    """Log-probs of given ``tokens`` [B,N,L] for ``images`` [B,...], under the same mask and
    temperature as sampling (truncation is not applied: RL samples without it)."""
    b, n, length = tokens.shape
    flat = tokens.reshape(b * n, length)
    logits = model(images, flat)  # [B·N,L,V]
    valid = valid_mask(flat, spec.eos_id)
    allowed = allowed_mask(spec, jnp.arange(length)[None, :], prev_tokens(flat),
                           logits.shape[-1])
    # After EOS nothing is scored; allowing every token there keeps log_softmax finite (an
    # all-masked row would put NaN into the gradient through jnp.where).
    allowed = allowed | ~valid[..., None]
    logsm = jax.nn.log_softmax(masked_logits(logits, allowed, spec.temperature), axis=-1)
    lp = jnp.take_along_axis(logsm, flat[..., None], axis=-1)[..., 0]
    lp = jnp.where(valid, lp, 0.0)
    return TeacherForced(lp.reshape(b, n, length), valid.reshape(b, n, length),
                         logsm.reshape(b, n, length, -1))


teacher_forced_jit = nnx.jit(teacher_forced, static_argnames=("spec",))


# ---------------------------------------------------------------------------------------------
# Beam search


def beam_search(model: nnx.Module, images: jax.Array, spec: DecodeSpec, beam_size: int,
                length_penalty: float = 0.0) -> BeamOutput:
    """Beam search with the KV cache, under the mask, temperature 1. Scores are summed
    log-probs divided by ``length ** length_penalty`` (0: plain sums, so a beam as wide as
    V^(L-1) finds the exact argmax). Finished beams continue with PAD at no cost."""
    b, k, length = images.shape[0], beam_size, spec.max_len
    enc = model.encode(images)
    vocab = model.cfg.vocab_size
    cache = model.init_cache(enc, b * k)
    pad_row = jnp.where(jnp.arange(vocab) == spec.pad_id, 0.0, -jnp.inf)  # [V]

    def gather(x, parent):  # x [B·K,...] rows reordered by parent [B,K]
        x = x.reshape(b, k, *x.shape[1:])
        idx = parent.reshape(b, k, *([1] * (x.ndim - 2)))
        return jnp.take_along_axis(x, idx, axis=1).reshape(b * k, *x.shape[2:])

    def body(carry, t):
        cache, prev, done, scores, toks, logps = carry
        logits, cache = model.decode_step(cache, prev.reshape(-1), t)
        allowed = allowed_mask(spec, t, prev.reshape(-1), vocab) | done.reshape(-1, 1)
        logp = jax.nn.log_softmax(masked_logits(logits, allowed, 1.0), -1).reshape(b, k, vocab)
        if spec.eos_id is not None:
            logp = jnp.where(done[..., None], pad_row, logp)
        cand = (scores[..., None] + logp).reshape(b, k * vocab)
        scores, idx = jax.lax.top_k(cand, k)  # [B,K]
        parent, tok = idx // vocab, (idx % vocab).astype(jnp.int32)
        tok_lp = jnp.take_along_axis(logp.reshape(b, k * vocab), idx, axis=1)
        take = lambda x: jnp.take_along_axis(x, parent[..., None], axis=1)  # noqa: E731
        toks = take(toks).at[:, :, t].set(tok)
        logps = take(logps).at[:, :, t].set(tok_lp)
        done = jnp.take_along_axis(done, parent, axis=1)
        if spec.eos_id is not None:
            done = done | (tok == spec.eos_id)
        cache = cache._replace(self_k=tuple(gather(x, parent) for x in cache.self_k),
                               self_v=tuple(gather(x, parent) for x in cache.self_v))
        return (cache, tok, done, scores, toks, logps), None

    scores0 = jnp.where(jnp.arange(k) == 0, 0.0, -jnp.inf)[None].repeat(b, 0)
    init = (cache, jnp.full((b, k), -1, jnp.int32), jnp.zeros((b, k), bool), scores0,
            jnp.full((b, k, length), spec.pad_id, jnp.int32), jnp.zeros((b, k, length)))
    (_, _, _, scores, toks, logps), _ = jax.lax.scan(body, init, jnp.arange(length))
    lengths = valid_mask(toks, spec.eos_id).sum(-1).astype(jnp.int32)
    if length_penalty:
        normed = scores / lengths.astype(jnp.float32) ** length_penalty
        order = jnp.argsort(-normed, axis=1)
        toks, logps = (jnp.take_along_axis(x, order[..., None], 1) for x in (toks, logps))
        scores, lengths = (jnp.take_along_axis(x, order, 1) for x in (scores, lengths))
    return BeamOutput(toks, logps, scores, lengths)


beam_search_jit = nnx.jit(beam_search,
                          static_argnames=("spec", "beam_size", "length_penalty"))
