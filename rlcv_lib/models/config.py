"""Model sizes: :class:`ModelConfig` and the presets/named sizes of the encoder-decoder.

CPU sizes follow docs/design.md §4.1: decoding costs decoder depth × tokens while the encoder
runs once per image, so CPU models get a shallow decoder and a deeper encoder. The paper's sizes
(``vit_b16_*``, ``vit_l16_*``) are only ever traced abstractly on a CPU (``jax.eval_shape``).
"""

from __future__ import annotations

import dataclasses
from typing import Literal

from rlcv_lib.config import added_field


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Size and numerics of the ViT encoder + autoregressive Transformer decoder."""

    image_size: int = 64
    """Input images are square ``image_size`` × ``image_size`` RGB."""
    patch_size: int = 8
    """Side of the square patch that becomes one image token (image_size must divide by it)."""
    stem: Literal["patch", "conv"] = "patch"
    """``patch``: one strided convolution (plain ViT). ``conv``: stride-2 3×3 convolutions down to
    the patch grid, then a 1×1 projection (Xiao et al. 2021): localization is learnt sooner."""
    stem_depth: int = added_field(1)
    """``conv`` stem: convolutions per stage (the first strided, the others stride-1 3×3)."""
    stem_width: int = added_field(0)
    """``conv`` stem: channels of its last stage (halved per earlier stage); 0 = half of
    ``enc_width``."""
    enc_width: int = 128
    """Encoder token width."""
    enc_depth: int = 4
    """Number of pre-LN encoder blocks."""
    enc_heads: int = 4
    """Encoder attention heads (enc_width must divide by it)."""
    enc_mlp: int = 512
    """Hidden width of the encoder MLPs."""
    enc_pos: Literal["learned", "sincos"] = "learned"
    """Encoder position embedding: learned, or fixed 2-D sine-cosine."""
    dec_width: int = 128
    """Decoder token width."""
    dec_depth: int = 2
    """Number of decoder blocks (self-attention, cross-attention, MLP)."""
    dec_heads: int = 4
    """Decoder attention heads (dec_width must divide by it)."""
    dec_mlp: int = 512
    """Hidden width of the decoder MLPs."""
    vocab_size: int = 0
    """Output vocabulary; 0 = take it from the task (``Task.vocab_size``)."""
    max_len: int = 0
    """Output tokens per sequence; 0 = take it from the task (``Task.max_len``)."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Compute dtype of the Transformer (parameters stay float32; logits are float32)."""
    remat: bool = False
    """Rematerialise each block in the backward pass (less memory, ~1/3 more compute)."""
    encoder_init: str = added_field("")
    """Where MLE pretraining takes the encoder's initial weights from: ``""`` random,
    ``"shipped"`` the shipped scenes encoder of the preset (``checkpoints/scenes_encoder-<preset>``,
    docs/design.md §4.3), or the path of another checkpoint shipped in that format. Its encoder
    fields (image size, stem, patch, widths, depth, heads, position embedding) must be these
    (:mod:`rlcv_lib.core.encoder_init`)."""

    def resolve(self, vocab_size: int, max_len: int) -> ModelConfig:
        """Fills ``vocab_size``/``max_len`` left at 0 from the task's values; a non-zero value
        that contradicts the task's is refused (ValueError naming both)."""
        for name, want in (("vocab_size", vocab_size), ("max_len", max_len)):
            have = getattr(self, name)
            if have and have != want:
                raise ValueError(f"model.{name}={have} contradicts the task's {name}={want}; "
                                 f"leave model.{name} at 0 to take the task's")
        return dataclasses.replace(self, vocab_size=vocab_size, max_len=max_len)

    def validate(self) -> None:
        """Raises ValueError naming the first inconsistent field."""
        if self.vocab_size <= 0 or self.max_len <= 0:
            raise ValueError(f"ModelConfig needs vocab_size and max_len > 0 (got vocab_size="
                             f"{self.vocab_size}, max_len={self.max_len}); call .resolve()")
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not a multiple of "
                             f"patch_size={self.patch_size}")
        if self.stem == "conv" and self.patch_size & (self.patch_size - 1):
            raise ValueError(f"stem='conv' needs a power-of-two patch_size, got {self.patch_size}")
        if self.stem_depth < 1 or self.stem_width < 0:
            raise ValueError(f"stem_depth must be >= 1 and stem_width >= 0, got "
                             f"{self.stem_depth}, {self.stem_width}")
        for w, h, name in ((self.enc_width, self.enc_heads, "enc"),
                           (self.dec_width, self.dec_heads, "dec")):
            if w % h:
                raise ValueError(f"{name}_width={w} is not a multiple of {name}_heads={h}")


# Named sizes. ``cpu`` is the shared scenes encoder's (docs/design.md §4.3: two convolutions per
# stem stage, 32-64-128 channels, learnt shape where the one-convolution stem did not);
# ``cpu_stem1`` the size before it (the detector shipped until 2026-12-03 was trained with it).
# The three paper models (docs/design.md §4.1, §10.1): detection ViT-B/16 +
# 6-layer decoder, 600 tokens at 1280²; panoptic (UViM stage II) ViT-L/16 + 24-layer decoder, 256
# code tokens from a 4096 codebook at 512²; captioning ViT-B/16 + 6-layer decoder, 128 tokens.
# Their vocabulary and sequence length are the task's (0 here: build_model takes them from it).
_VIT_B = dict(patch_size=16, enc_width=768, enc_depth=12, enc_heads=12, enc_mlp=3072)
_VIT_L = dict(patch_size=16, enc_width=1024, enc_depth=24, enc_heads=16, enc_mlp=4096)

MODEL_SIZES: dict[str, ModelConfig] = {
    "tiny": ModelConfig(image_size=32, patch_size=8, enc_width=32, enc_depth=1, enc_heads=2,
                        enc_mlp=64, dec_width=32, dec_depth=1, dec_heads=2, dec_mlp=64),
    "cpu": ModelConfig(image_size=64, patch_size=8, stem="conv", stem_depth=2, stem_width=128,
                       enc_width=128, enc_depth=4, enc_heads=4, enc_mlp=512, dec_width=128,
                       dec_depth=2, dec_heads=4, dec_mlp=512),
    "cpu_stem1": ModelConfig(image_size=64, patch_size=8, stem="conv", enc_width=128,
                             enc_depth=4, enc_heads=4, enc_mlp=512, dec_width=128, dec_depth=2,
                             dec_heads=4, dec_mlp=512),
    "gpu": ModelConfig(image_size=128, patch_size=8, stem="conv", enc_width=384, enc_depth=8,
                       enc_heads=6, enc_mlp=1536, dec_width=384, dec_depth=4, dec_heads=6,
                       dec_mlp=1536),
    "vit_b16_det600": ModelConfig(image_size=1280, **_VIT_B, dec_width=768, dec_depth=6,
                                  dec_heads=12, dec_mlp=3072, dtype="bfloat16", remat=True),
    "vit_l16_pan256": ModelConfig(image_size=512, **_VIT_L, dec_width=1024, dec_depth=24,
                                  dec_heads=16, dec_mlp=4096, dtype="bfloat16", remat=True),
    "vit_b16_cap128": ModelConfig(image_size=512, **_VIT_B, dec_width=768, dec_depth=6,
                                  dec_heads=12, dec_mlp=3072, dtype="bfloat16", remat=True),
}

MODEL_PRESETS: dict[str, ModelConfig] = {
    "smoke": MODEL_SIZES["tiny"],
    "cpu": MODEL_SIZES["cpu"],
    "gpu": MODEL_SIZES["gpu"],
    "paper": MODEL_SIZES["vit_b16_det600"],
}
