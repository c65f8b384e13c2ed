"""The encoder-decoder every task shares: ``EncoderDecoder(cfg, rngs=...)``."""

from __future__ import annotations

import jax
from flax import nnx

from rlcv_lib.models.config import ModelConfig
from rlcv_lib.models.decoder import Cache, Decoder
from rlcv_lib.models.layers import KeySeq
from rlcv_lib.models.vit import ViT


class EncoderDecoder(nnx.Module):
    """ViT encoder + autoregressive decoder.

    ``encode(images [B,H,W,3]) -> enc [B,S,De]`` runs once per image; the decoder methods accept
    ``B·N`` token rows for ``B`` images (the N samples of an image share its encoding).
    """

    def __init__(self, cfg: ModelConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        rngs = KeySeq(rngs)
        self.cfg = cfg
        self.encoder = ViT(cfg, rngs=rngs)
        self.decoder = Decoder(cfg, rngs=rngs)

    def encode(self, images: jax.Array) -> jax.Array:
        return self.encoder(images)

    def decode(self, tokens: jax.Array, enc: jax.Array) -> jax.Array:
        """Teacher-forced logits [B·N,L,V] for ``tokens`` [B·N,L] given ``enc`` [B,S,De]."""
        return self.decoder(tokens, enc)

    def __call__(self, images: jax.Array, tokens: jax.Array) -> jax.Array:
        """Teacher-forced logits [B·N,L,V] (float32) for images [B,...] and tokens [B·N,L]."""
        return self.decoder(tokens, self.encoder(images))

    def init_cache(self, enc: jax.Array, batch: int) -> Cache:
        return self.decoder.init_cache(enc, batch)

    def decode_step(self, cache: Cache, prev_token: jax.Array, t: jax.Array):
        """(logits [B·N,V], cache) at position ``t``; see :mod:`rlcv_lib.models.decoder`."""
        return self.decoder.step(cache, prev_token, t)


def build_model(cfg: ModelConfig, task=None, *, seed: int = 0) -> EncoderDecoder:
    """The model for ``task`` (fills vocab_size/max_len left at 0 from it)."""
    if task is not None:
        cfg = cfg.resolve(task.vocab_size, task.max_len)
    return EncoderDecoder(cfg, rngs=nnx.Rngs(seed))
