"""Autoregressive Transformer decoder with cross-attention and an explicit KV cache.

Two ways to run it, which must agree (tests/test_models.py):

* teacher-forced: ``decoder(tokens [B',L], enc [B,S,De]) -> logits [B',L,V]``, causal;
* incremental: ``cache = decoder.init_cache(enc, B')`` then
  ``logits [B',V], cache = decoder.step(cache, prev_token [B'], t)`` for t = 0, 1, ...

Position 0 reads a learned start vector, position t > 0 the embedding of token t-1, so the
task's vocabulary needs no BOS token. The cache is a plain pytree (the module is not mutated),
so a sampler can carry it through ``jax.lax.scan``.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from rlcv_lib.models.config import ModelConfig
from rlcv_lib.models.layers import Attention, Mlp, layer_norm, maybe_remat


class Cache(NamedTuple):
    """Decoding state. ``self_k``/``self_v``: per layer [B',H,L,K], filled up to the current
    position; ``cross_k``/``cross_v``: per layer [B,H,S,K], the image's keys/values, computed
    once (B' = B·N rows of samples share B images). Heads come before positions so that the
    per-step attention contracts without transposing the cache (on the CPU a transposed copy
    of the whole cache per step dominated long decodes)."""

    self_k: tuple[jax.Array, ...]
    self_v: tuple[jax.Array, ...]
    cross_k: tuple[jax.Array, ...]
    cross_v: tuple[jax.Array, ...]


class DecoderBlock(nnx.Module):
    """Pre-LN: causal self-attention, cross-attention to the image, MLP."""

    def __init__(self, cfg: ModelConfig, *, dtype, rngs: nnx.Rngs):
        d = cfg.dec_width
        self.ln1 = layer_norm(d, dtype, rngs)
        self.self_attn = Attention(d, cfg.dec_heads, dtype=dtype, rngs=rngs)
        self.ln2 = layer_norm(d, dtype, rngs)
        self.cross_attn = Attention(d, cfg.dec_heads, kv_width=cfg.enc_width, dtype=dtype,
                                    rngs=rngs)
        self.ln3 = layer_norm(d, dtype, rngs)
        self.mlp = Mlp(d, cfg.dec_mlp, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array, enc: jax.Array) -> jax.Array:
        x = x + self.self_attn(self.ln1(x), is_causal=True)
        k, v = self.cross_attn.project_kv(enc)
        x = x + self.cross_attn.attend(self.ln2(x), k, v)
        return x + self.mlp(self.ln3(x))

    def step(self, x, t, self_k, self_v, cross_k, cross_v):
        """One position: x [B',D] at index t; returns (x, updated self_k, self_v)."""
        b, d = x.shape
        sa, ca = self.self_attn, self.cross_attn
        h = self.ln1(x)
        heads = lambda y: y.reshape(b, sa.heads, 1, d // sa.heads)  # noqa: E731  [B',H,1,K]
        self_k = jax.lax.dynamic_update_slice_in_dim(self_k, heads(sa.k(h)).astype(self_k.dtype),
                                                     t, axis=2)
        self_v = jax.lax.dynamic_update_slice_in_dim(self_v, heads(sa.v(h)).astype(self_v.dtype),
                                                     t, axis=2)
        q = sa.q(h).reshape(b, sa.heads, d // sa.heads)  # [B',H,K]
        valid = jnp.arange(self_k.shape[2]) <= t  # [L]
        x = x + sa.o(_attend_cached(q, self_k, self_v, valid).reshape(b, d))
        nb = cross_k.shape[0]  # the N samples of an image are folded into its queries
        q = ca.q(self.ln2(x)).reshape(nb, b // nb, ca.heads, d // ca.heads)  # [B,N,H,K]
        o = _attend_cached(q.transpose(0, 2, 1, 3), cross_k, cross_v, None)  # [B,H,N,K]
        x = x + ca.o(o.transpose(0, 2, 1, 3).reshape(b, d))
        return x + self.mlp(self.ln3(x)), self_k, self_v


def _attend_cached(q, k, v, valid):
    """Softmax attention of q [B,H,(T,)K] over k/v [B,H,S,K]; ``valid`` bool [S] or None."""
    squeeze = q.ndim == 3
    q = q[:, :, None] if squeeze else q
    s = jnp.einsum("bhtk,bhsk->bhts", q, k.astype(q.dtype)).astype(jnp.float32)
    s = s / jnp.sqrt(jnp.float32(q.shape[-1]))
    if valid is not None:
        s = jnp.where(valid, s, -jnp.inf)
    p = jax.nn.softmax(s, axis=-1).astype(q.dtype)
    o = jnp.einsum("bhts,bhsk->bhtk", p, v.astype(q.dtype))
    return o[:, :, 0] if squeeze else o


class Decoder(nnx.Module):
    """Token + position embeddings, ``dec_depth`` blocks, final LN, linear head to the vocab."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.dtype)
        d = cfg.dec_width
        self.cfg = cfg
        self.embed = nnx.Embed(cfg.vocab_size, d, dtype=dtype, rngs=rngs)
        self.start = nnx.Param(jax.random.normal(rngs.params(), (d,)) * 0.02)
        self.pos = nnx.Param(jax.random.normal(rngs.params(), (cfg.max_len, d)) * 0.02)
        self.blocks = nnx.List([DecoderBlock(cfg, dtype=dtype, rngs=rngs)
                                for _ in range(cfg.dec_depth)])
        self.ln = layer_norm(d, dtype, rngs)
        self.head = nnx.Linear(d, cfg.vocab_size, dtype=dtype, rngs=rngs)

    def _inputs(self, tokens: jax.Array) -> jax.Array:  # [B',L] -> [B',L,D]
        dtype = jnp.dtype(self.cfg.dtype)
        b, length = tokens.shape
        start = jnp.broadcast_to(self.start[...].astype(dtype), (b, 1, self.cfg.dec_width))
        x = jnp.concatenate([start, self.embed(tokens[:, :-1])], axis=1)
        return x + self.pos[:length].astype(dtype)

    def __call__(self, tokens: jax.Array, enc: jax.Array) -> jax.Array:
        """Teacher-forced logits [B',L,V] (float32) for target ``tokens`` [B',L]."""
        if tokens.shape[1] > self.cfg.max_len:
            raise ValueError(f"{tokens.shape[1]} tokens exceed max_len={self.cfg.max_len}")
        x = self._inputs(tokens)
        run = maybe_remat(lambda blk, x, enc: blk(x, enc), self.cfg.remat)
        for blk in self.blocks:
            x = run(blk, x, enc)
        return self.head(self.ln(x)).astype(jnp.float32)

    def init_cache(self, enc: jax.Array, batch: int) -> Cache:
        """Empty self-attention cache for ``batch`` = B·N rows and the image keys/values."""
        dtype = jnp.dtype(self.cfg.dtype)
        h = self.cfg.dec_heads
        shape = (batch, h, self.cfg.max_len, self.cfg.dec_width // h)
        zeros = tuple(jnp.zeros(shape, dtype) for _ in self.blocks)
        kv = [blk.cross_attn.project_kv(enc) for blk in self.blocks]  # [B,S,H,K] each
        return Cache(zeros, zeros, tuple(k.transpose(0, 2, 1, 3) for k, _ in kv),
                     tuple(v.transpose(0, 2, 1, 3) for _, v in kv))

    def step(self, cache: Cache, prev_token: jax.Array, t: jax.Array) -> tuple[jax.Array, Cache]:
        """Logits [B',V] at position ``t`` given token ``prev_token`` [B'] at t-1 (ignored at
        t = 0, where the start vector is read)."""
        dtype = jnp.dtype(self.cfg.dtype)
        emb = self.embed(jnp.maximum(prev_token, 0))
        start = jnp.broadcast_to(self.start[...].astype(dtype), emb.shape)
        x = jnp.where(t == 0, start, emb) + self.pos[t].astype(dtype)  # [B',D]
        new_k, new_v = [], []
        for i, blk in enumerate(self.blocks):
            x, k, v = blk.step(x, t, cache.self_k[i], cache.self_v[i], cache.cross_k[i],
                               cache.cross_v[i])
            new_k.append(k)
            new_v.append(v)
        logits = self.head(self.ln(x)).astype(jnp.float32)
        return logits, cache._replace(self_k=tuple(new_k), self_v=tuple(new_v))
