"""Transformer building blocks shared by the encoder and the decoder (Flax NNX).

Shapes: B batch, T query tokens, S key tokens, D width, H heads, K = D / H head width.
Attention goes through ``jax.nn.dot_product_attention`` (fused/memory-efficient where the
backend has it). The decoder's cross-attention accepts *more query rows than image rows*: with
``B·N`` queries and ``B`` encoded images, the N samples of one image are folded into the query
axis, so an image's keys/values are computed and stored once and never repeated.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx


class KeySeq:
    """Stand-in for ``nnx.Rngs`` while building a model: ``params()`` returns
    ``fold_in(key, i)`` with a Python counter. (Under jax 0.10 each ``nnx.Rngs`` call inside a
    trace formats an error message that walks the whole jaxpr, which made tracing the
    construction of a 48-block model take ~30 s; this keeps it linear.)"""

    def __init__(self, rngs: nnx.Rngs | jax.Array):
        self.key = rngs.params() if isinstance(rngs, nnx.Rngs) else rngs
        self.count = 0

    def params(self) -> jax.Array:
        self.count += 1
        return jax.random.fold_in(self.key, self.count)


class Attention(nnx.Module):
    """Multi-head attention with separate q/k/v/out projections."""

    def __init__(self, width: int, heads: int, kv_width: int | None = None, *,
                 dtype=jnp.float32, rngs: nnx.Rngs):
        kv_width = kv_width or width
        self.heads = heads
        self.q = nnx.Linear(width, width, dtype=dtype, rngs=rngs)
        self.k = nnx.Linear(kv_width, width, dtype=dtype, rngs=rngs)
        self.v = nnx.Linear(kv_width, width, dtype=dtype, rngs=rngs)
        self.o = nnx.Linear(width, width, dtype=dtype, rngs=rngs)

    def _split(self, x: jax.Array) -> jax.Array:  # [B,T,D] -> [B,T,H,K]
        return x.reshape(*x.shape[:-1], self.heads, x.shape[-1] // self.heads)

    def project_kv(self, x: jax.Array) -> tuple[jax.Array, jax.Array]:
        """Keys and values of ``x`` [B,S,Dkv] -> two [B,S,H,K]."""
        return self._split(self.k(x)), self._split(self.v(x))

    def attend(self, x: jax.Array, k: jax.Array, v: jax.Array, *, is_causal: bool = False,
               mask: jax.Array | None = None) -> jax.Array:
        """Queries from ``x`` [B',T,D] against ``k``/``v`` [B,S,H,K] with B' = B·N -> [B',T,D].

        When B' = B·N (N > 1), the N query rows of each image are folded into the query axis
        (only valid without a causal mask, i.e. cross-attention).
        """
        q = self._split(self.q(x))  # [B',T,H,K]
        bq, t = q.shape[:2]
        b = k.shape[0]
        if bq % b:
            raise ValueError(f"query batch {bq} is not a multiple of key batch {b}")
        n = bq // b
        if n > 1:
            if is_causal or mask is not None:
                raise ValueError("folding samples into queries needs unmasked attention")
            q = q.reshape(b, n * t, *q.shape[2:])
        out = jax.nn.dot_product_attention(q, k.astype(q.dtype), v.astype(q.dtype),
                                           is_causal=is_causal, mask=mask)
        out = out.reshape(bq, t, -1)
        return self.o(out)

    def __call__(self, x: jax.Array, *, is_causal: bool = False) -> jax.Array:
        """Self-attention over ``x`` [B,T,D]."""
        k, v = self.project_kv(x)
        return self.attend(x, k, v, is_causal=is_causal)


class Mlp(nnx.Module):
    """Two-layer GELU MLP."""

    def __init__(self, width: int, hidden: int, *, dtype=jnp.float32, rngs: nnx.Rngs):
        self.fc1 = nnx.Linear(width, hidden, dtype=dtype, rngs=rngs)
        self.fc2 = nnx.Linear(hidden, width, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        return self.fc2(jax.nn.gelu(self.fc1(x)))


def layer_norm(width: int, dtype, rngs: nnx.Rngs) -> nnx.LayerNorm:
    return nnx.LayerNorm(width, dtype=dtype, rngs=rngs)


def maybe_remat(fn, remat: bool):
    """``nnx.remat(fn)`` when ``remat`` is set (recompute activations in the backward pass)."""
    return nnx.remat(fn) if remat else fn


def sincos_2d(h: int, w: int, width: int) -> jax.Array:
    """Fixed 2-D sine-cosine position embedding [h·w, width] (MoCo v3 / big_vision layout)."""
    if width % 4:
        raise ValueError(f"sincos position embedding needs width % 4 == 0, got {width}")
    y, x = jnp.mgrid[:h, :w]
    omega = 1.0 / 10000 ** (jnp.arange(width // 4) / (width // 4 - 1 or 1))
    y = y.reshape(-1)[:, None] * omega[None]
    x = x.reshape(-1)[:, None] * omega[None]
    return jnp.concatenate([jnp.sin(x), jnp.cos(x), jnp.sin(y), jnp.cos(y)], axis=1)
