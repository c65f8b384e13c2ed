"""ViT encoder: patch (or small conv) stem, position embeddings, pre-LN blocks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from flax import nnx

from rlcv_lib.models.config import ModelConfig
from rlcv_lib.models.layers import Attention, Mlp, layer_norm, maybe_remat, sincos_2d


class EncoderBlock(nnx.Module):
    """x + Attn(LN(x)); x + MLP(LN(x))."""

    def __init__(self, width: int, heads: int, mlp: int, *, dtype, rngs: nnx.Rngs):
        self.ln1 = layer_norm(width, dtype, rngs)
        self.attn = Attention(width, heads, dtype=dtype, rngs=rngs)
        self.ln2 = layer_norm(width, dtype, rngs)
        self.mlp = Mlp(width, mlp, dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class ConvStem(nnx.Module):
    """log2(patch) stages of a stride-2 3×3 convolution then ``depth − 1`` stride-1 3×3
    convolutions (GELU each), channels doubling per stage up to ``last`` (0: half the width),
    then a 1×1 projection to the width."""

    def __init__(self, patch: int, width: int, *, depth: int = 1, last: int = 0, dtype,
                 rngs: nnx.Rngs):
        n = patch.bit_length() - 1
        last = last or width // 2
        chans = [3] + [max(last // 2 ** (n - 1 - i), 8) for i in range(n)]
        convs = []
        for i in range(n):
            convs.append(nnx.Conv(chans[i], chans[i + 1], (3, 3), strides=(2, 2),
                                  padding="SAME", dtype=dtype, rngs=rngs))
            convs += [nnx.Conv(chans[i + 1], chans[i + 1], (3, 3), padding="SAME", dtype=dtype,
                               rngs=rngs) for _ in range(depth - 1)]
        self.convs = nnx.List(convs)
        self.proj = nnx.Conv(chans[-1], width, (1, 1), dtype=dtype, rngs=rngs)

    def __call__(self, x: jax.Array) -> jax.Array:
        for conv in self.convs:
            x = jax.nn.gelu(conv(x))
        return self.proj(x)


class ViT(nnx.Module):
    """images float [B,H,W,3] -> tokens [B, (H/p)·(W/p), enc_width]."""

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        dtype = jnp.dtype(cfg.dtype)
        p, d = cfg.patch_size, cfg.enc_width
        self.cfg = cfg
        if cfg.stem == "conv":
            self.stem = ConvStem(p, d, depth=cfg.stem_depth, last=cfg.stem_width, dtype=dtype,
                                 rngs=rngs)
        else:
            self.stem = nnx.Conv(3, d, (p, p), strides=(p, p), padding="VALID", dtype=dtype,
                                 rngs=rngs)
        g = cfg.image_size // p
        if cfg.enc_pos == "learned":
            self.pos = nnx.Param(jax.random.normal(rngs.params(), (g * g, d)) * 0.02)
        else:
            self.pos = nnx.Variable(sincos_2d(g, g, d))  # not a Param: never trained
        self.blocks = nnx.List([EncoderBlock(d, cfg.enc_heads, cfg.enc_mlp, dtype=dtype,
                                             rngs=rngs) for _ in range(cfg.enc_depth)])
        self.ln = layer_norm(d, dtype, rngs)

    def __call__(self, images: jax.Array) -> jax.Array:
        s = self.cfg.image_size
        if images.ndim != 4 or images.shape[1:] != (s, s, 3):
            raise ValueError(f"images must be [B,{s},{s},3], got {images.shape}")
        x = self.stem(images.astype(jnp.dtype(self.cfg.dtype)))  # [B,g,g,D]
        x = x.reshape(x.shape[0], -1, x.shape[-1]) + self.pos[...].astype(x.dtype)
        run = maybe_remat(lambda blk, x: blk(x), self.cfg.remat)
        for blk in self.blocks:
            x = run(blk, x)
        return self.ln(x)
