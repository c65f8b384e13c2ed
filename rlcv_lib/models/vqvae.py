"""UViM's stage I: a ViT VQ-VAE that compresses a dense label map into a short grid of codes.

UViM (Kolesnikov et al. 2022; docs/design.md §10.2) turns a dense prediction task (a colour image,
a panoptic map) into a sequence task: stage I learns to encode the *target* into L discrete
codes and to decode it back, both seeing the input image as context; stage II (the package's
encoder-decoder) then learns to emit those codes from the image alone, and only stage II is
reward-tuned. This module is stage I::

    targets  {name: float [B,H,W,C_name]}   e.g. {"rgb": [B,H,W,3]} or one-hot panoptic channels
    image    float [B,H,W,3]                the context (the grey image for colorization)
      -> encode:   patches -> width, + image patches, + position, encoder blocks, LN
                   -> token grid g×g resized to code_grid×code_grid -> encoder_head -> [B,L,Dc]
                   -> standardised per vector (zero mean, unit variance over Dc)
      -> quantize: nearest of K L2-normalised codewords (for standardised vectors of equal
                   norm: the cosine match), straight-through gradient
      -> decode:   (code dropout in training) -> decoder_stem -> resize back to g×g,
                   + image patches, + position, decoder blocks, LN -> one head per target
    outputs  {name: float [B,H,W,C_name]}   values (colour) or logits (panoptic)

**The codebook is not a parameter.** It is two variables outside the optimiser, moving sums of
the vectors assigned to each code and moving counts (:class:`CodebookSums`,
:class:`CodebookCounts`, momentum ``cfg.momentum``); a codeword is its sum over its count,
L2-normalised. :func:`update_codebook` adds one batch's assignments; :func:`revive_dead_codes`
then replaces each code whose count fell below ``cfg.min_count`` by a perturbed half of the
most-used code (its count and sum halved between the two), as UViM's release does. Under
``jax.jit`` with a batch sharded over devices the scatter-adds run over the global batch, so the
statistics are already global (no explicit all-reduce). No commitment loss: the released configs
set its weight to 0 and the codebook follows the encoder by itself.

**Code dropout** (training only): per example a fraction u ~ U(0, 1) of the L codes is kept and
the rest zeroed before the decoder (``"random"``: which codes, uniformly; ``"ordered"``: the first
ones in raster order), so the decoder learns to use the image context when codes are missing and
the codes learn to carry what the image cannot tell.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Literal, NamedTuple

import jax
import jax.numpy as jnp
from flax import nnx

from rlcv_lib.models.layers import layer_norm
from rlcv_lib.models.vit import EncoderBlock


@dataclasses.dataclass(frozen=True)
class VQVAEConfig:
    """Size, codebook and training behaviour of the stage I VQ-VAE."""

    image_size: int = 64
    """Targets and context images are square ``image_size`` × ``image_size``."""
    patch_size: int = 8
    """Side of the square patch that becomes one token (image_size must divide by it)."""
    targets: tuple[tuple[str, int], ...] = (("rgb", 3),)
    """(name, channels) of each target map: its own patch embedding and output head. Colour:
    ``(("rgb", 3),)``; panoptic: one-hot semantic and instance channels."""
    width: int = 128
    """Token width of encoder and decoder."""
    enc_depth: int = 2
    """Encoder blocks."""
    dec_depth: int = 2
    """Decoder blocks."""
    heads: int = 4
    """Attention heads (width must divide by it)."""
    mlp: int = 512
    """Hidden width of the MLPs."""
    code_grid: int = 4
    """The codes form a ``code_grid`` × ``code_grid`` grid: L = code_grid² codes per map."""
    codebook_size: int = 256
    """K, the number of codewords."""
    codeword_dim: int = 32
    """Dc, the dimension of a codeword."""
    momentum: float = 0.995
    """Moving-average momentum of the codebook's sums and counts."""
    min_count: float = 0.1
    """A code whose moving count is below this is dead and revived (0.995^500 ≈ 0.08: about
    500 batches unused at the default momentum)."""
    split_perturbation: float = 1e-3
    """A revived code is the most-used code times U(1 − this, 1 + this) per dimension."""
    code_dropout: Literal["none", "random", "ordered"] = "random"
    """Training-time code dropout (module docstring); evaluation never drops codes."""
    encoder_context: bool = True
    """Add a patch embedding of the image to the encoder's tokens."""
    decoder_context: bool = True
    """Add a patch embedding of the image to the decoder's tokens."""
    dtype: Literal["float32", "bfloat16"] = "float32"
    """Compute dtype of the Transformer blocks (codebook statistics stay float32)."""

    @property
    def grid(self) -> int:
        """Tokens per side of the patch grid."""
        return self.image_size // self.patch_size

    @property
    def num_codes(self) -> int:
        """L, codes per map: stage II's sequence length."""
        return self.code_grid * self.code_grid

    def validate(self) -> None:
        """Raises ValueError naming the first inconsistent field."""
        if self.image_size % self.patch_size:
            raise ValueError(f"image_size={self.image_size} is not a multiple of "
                             f"patch_size={self.patch_size}")
        if self.width % self.heads:
            raise ValueError(f"width={self.width} is not a multiple of heads={self.heads}")
        if not self.targets or any(c <= 0 for _, c in self.targets):
            raise ValueError(f"targets needs at least one (name, channels > 0), got "
                             f"{self.targets}")
        if len({n for n, _ in self.targets}) != len(self.targets):
            raise ValueError(f"target names repeat in {self.targets}")
        if not 0 < self.code_grid <= self.grid:
            raise ValueError(f"code_grid={self.code_grid} must be in 1..{self.grid} (the patch "
                             f"grid of image_size/patch_size)")
        if self.codebook_size < 2 or self.codeword_dim < 2:
            raise ValueError(f"codebook_size and codeword_dim must be ≥ 2, got "
                             f"{self.codebook_size}, {self.codeword_dim}")
        if not 0 < self.momentum < 1:
            raise ValueError(f"momentum must be in (0, 1), got {self.momentum}")
        if self.code_dropout not in ("none", "random", "ordered"):
            raise ValueError(f"code_dropout must be none/random/ordered, got "
                             f"{self.code_dropout!r}")


class CodebookSums(nnx.Variable):
    """Moving sums of the encoder vectors assigned to each code, float32 [K, Dc]."""


class CodebookCounts(nnx.Variable):
    """Moving counts of the assignments of each code, float32 [K]."""


# ---------------------------------------------------------------------------------------------
# The quantizer and the codebook statistics, as pure functions.


def codewords(sums: jax.Array, counts: jax.Array) -> jax.Array:
    """Codebook [K, Dc]: each code's mean assigned vector, L2-normalised."""
    e = sums / counts[:, None]
    return e / jnp.linalg.norm(e, axis=-1, keepdims=True)


def nearest_code(x: jax.Array, e: jax.Array) -> jax.Array:
    """Index of the codeword nearest to each vector of ``x`` [..., Dc] (Euclidean), int32 [...].

    |x − e|² = |x|² − 2 x·e + |e|², and |x|² is the same for every code."""
    dist = jnp.sum(e * e, axis=-1) - 2 * jnp.einsum("...d,kd->...k", x, e)
    return jnp.argmin(dist, axis=-1).astype(jnp.int32)


def straight_through(x: jax.Array, x_q: jax.Array) -> jax.Array:
    """``x_q`` in the forward pass (exactly: x − x is 0), the identity's gradient to ``x`` in
    the backward pass."""
    return jax.lax.stop_gradient(x_q) + (x - jax.lax.stop_gradient(x))


def batch_counts(idx: jax.Array, codebook_size: int) -> jax.Array:
    """How often each code was assigned in ``idx`` (any shape), float32 [K]."""
    return jnp.zeros(codebook_size, jnp.float32).at[idx.reshape(-1)].add(1.0)


def update_codebook(sums: jax.Array, counts: jax.Array, x: jax.Array, idx: jax.Array,
                    momentum: float) -> tuple[jax.Array, jax.Array]:
    """Moving averages after one batch: ``sums·m + Σ assigned x``, ``counts·m + #assigned``.

    ``x`` [..., Dc] are the standardised encoder vectors (their gradient is stopped), ``idx``
    [...] their codes."""
    x = jax.lax.stop_gradient(x).reshape(-1, x.shape[-1]).astype(jnp.float32)
    added = jnp.zeros_like(sums).at[idx.reshape(-1)].add(x)
    return sums * momentum + added, counts * momentum + batch_counts(idx, counts.shape[0])


def split_most_used(sums: jax.Array, counts: jax.Array, key: jax.Array, perturbation: float
                    ) -> tuple[jax.Array, jax.Array]:
    """Replaces the least-used code by a perturbed copy of the most-used one and halves both
    codes' counts and sums (the pair then holds what the most-used code held)."""
    hi, lo = jnp.argmax(counts), jnp.argmin(counts)
    noise = jax.random.uniform(key, sums.shape[1:], sums.dtype, 1 - perturbation,
                               1 + perturbation)
    half_sum, half_count = sums[hi] / 2, counts[hi] / 2
    sums = sums.at[lo].set(half_sum * noise).at[hi].set(half_sum)
    counts = counts.at[lo].set(half_count).at[hi].set(half_count)
    return sums, counts


def revive_dead_codes(sums: jax.Array, counts: jax.Array, key: jax.Array, min_count: float,
                      perturbation: float) -> tuple[jax.Array, jax.Array]:
    """Splits the most-used code into the least-used while any count is below ``min_count``
    (at most K splits: the loop ends even if every code is dead)."""

    def dead(state):
        i, _, c, _ = state
        return jnp.any(c < min_count) & (i < c.shape[0])

    def split(state):
        i, s, c, k = state
        k, sub = jax.random.split(k)
        s, c = split_most_used(s, c, sub, perturbation)
        return i + 1, s, c, k

    _, sums, counts, _ = jax.lax.while_loop(dead, split, (0, sums, counts, key))
    return sums, counts


def codebook_usage(counts_in_batch: jax.Array) -> dict[str, jax.Array]:
    """Usage of the codebook by one batch's assignments (counts [K]): the fraction of codes
    used, the perplexity exp(entropy) of the assignment distribution (K = all used equally)
    and the share of the most-used code."""
    p = counts_in_batch / jnp.maximum(counts_in_batch.sum(), 1)
    entropy = -jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1)), 0))
    return {"codebook_used": jnp.mean(counts_in_batch > 0), "codebook_perplexity":
            jnp.exp(entropy), "codebook_max_share": jnp.max(p)}


def keep_mask(keep_fraction: jax.Array, length: int) -> jax.Array:
    """bool [B, L]: the first codes of each row kept, code i where 1 − (i+1)/(L+1) >
    ``keep_fraction`` [B] (u = 0 keeps all L, u = 1 none; u ~ U(0, 1) keeps 0..L about
    uniformly)."""
    importance = 1 - jnp.arange(1, length + 1) / (length + 1)
    return importance[None, :] > keep_fraction[:, None]


def code_dropout_mask(key: jax.Array, batch: int, length: int,
                      mode: Literal["none", "random", "ordered"]) -> jax.Array:
    """bool [B, L] of the codes the decoder sees in training (module docstring)."""
    if mode == "none":
        return jnp.ones((batch, length), bool)
    k_frac, k_perm = jax.random.split(key)
    mask = keep_mask(jax.random.uniform(k_frac, (batch,)), length)
    if mode == "random":
        mask = jax.random.permutation(k_perm, mask, axis=1, independent=True)
    return mask


# ---------------------------------------------------------------------------------------------
# The model.


def patchify(x: jax.Array, p: int) -> jax.Array:
    """[B,H,W,C] -> [B, (H/p)(W/p), p·p·C], raster order of patches."""
    b, h, w, c = x.shape
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, (h // p) * (w // p), p * p * c)


def unpatchify(x: jax.Array, p: int, grid: int) -> jax.Array:
    """Inverse of :func:`patchify`: [B, grid², p·p·C] -> [B, grid·p, grid·p, C]."""
    b, _, d = x.shape
    c = d // (p * p)
    x = x.reshape(b, grid, grid, p, p, c).transpose(0, 1, 3, 2, 4, 5)
    return x.reshape(b, grid * p, grid * p, c)


def resize_tokens(x: jax.Array, source: int, target: int) -> jax.Array:
    """Tokens on a ``source``² grid [B, source², D] resized (linear) to a ``target``² grid."""
    if source == target:
        return x
    b, _, d = x.shape
    x = jax.image.resize(x.reshape(b, source, source, d), (b, target, target, d), "linear")
    return x.reshape(b, target * target, d)


class Aux(NamedTuple):
    """What a forward pass also returns: the standardised encoder vectors ``z`` [B,L,Dc] (before
    quantization) and their codes ``idx`` int32 [B,L]."""

    z: jax.Array
    idx: jax.Array


class VQVAE(nnx.Module):
    """Stage I (module docstring). ``model(targets, image, keep=None) -> (outputs, Aux)``."""

    def __init__(self, cfg: VQVAEConfig, *, rngs: nnx.Rngs):
        cfg.validate()
        self.cfg = cfg
        dtype = jnp.dtype(cfg.dtype)
        p, d, g = cfg.patch_size, cfg.width, cfg.grid

        def blocks(depth):
            return nnx.List([EncoderBlock(d, cfg.heads, cfg.mlp, dtype=dtype, rngs=rngs)
                             for _ in range(depth)])

        def context():
            return nnx.Conv(3, d, (p, p), strides=(p, p), padding="VALID", dtype=dtype,
                            rngs=rngs)

        self.embed = nnx.Dict({name: nnx.Linear(p * p * c, d, dtype=dtype, rngs=rngs)
                               for name, c in cfg.targets})
        self.enc_context = context() if cfg.encoder_context else None
        self.dec_context = context() if cfg.decoder_context else None
        self.enc_pos = nnx.Param(jax.random.normal(rngs.params(), (g * g, d)) * 0.02)
        self.dec_pos = nnx.Param(jax.random.normal(rngs.params(), (g * g, d)) * 0.02)
        self.encoder, self.enc_ln = blocks(cfg.enc_depth), layer_norm(d, dtype, rngs)
        self.encoder_head = nnx.Linear(d, cfg.codeword_dim, rngs=rngs)
        self.decoder_stem = nnx.Linear(cfg.codeword_dim, d, dtype=dtype, rngs=rngs)
        self.decoder, self.dec_ln = blocks(cfg.dec_depth), layer_norm(d, dtype, rngs)
        # Zero-initialised heads (as released): training starts from a constant prediction.
        self.heads = nnx.Dict({name: nnx.Linear(d, p * p * c, kernel_init=nnx.initializers.zeros,
                                                rngs=rngs) for name, c in cfg.targets})
        k, dc = cfg.codebook_size, cfg.codeword_dim
        self.sums = CodebookSums(jax.random.normal(rngs.params(), (k, dc)) / k ** 0.5)
        self.counts = CodebookCounts(jnp.ones((k,), jnp.float32))

    # -- shapes -----------------------------------------------------------------------------

    def _check(self, name: str, x: jax.Array, channels: int) -> None:
        s = self.cfg.image_size
        if x.ndim != 4 or x.shape[1:] != (s, s, channels):
            raise ValueError(f"{name} must be [B,{s},{s},{channels}], got {x.shape}")

    def _tokens(self, x: jax.Array, blocks, ln, pos, context, image) -> jax.Array:
        if context is not None:
            ctx = context(image.astype(jnp.dtype(self.cfg.dtype)))
            x = x + ctx.reshape(ctx.shape[0], -1, ctx.shape[-1])
        x = x + pos[...].astype(x.dtype)
        for blk in blocks:
            x = blk(x)
        return ln(x)

    # -- the three stages -------------------------------------------------------------------

    def codebook(self) -> jax.Array:
        """The current codewords [K, Dc]."""
        return codewords(self.sums[...], self.counts[...])

    def encode(self, targets: Mapping[str, jax.Array], image: jax.Array) -> jax.Array:
        """Standardised code vectors z [B, L, Dc] of ``targets`` given ``image``."""
        cfg = self.cfg
        self._check("image", image, 3)
        if set(targets) != {n for n, _ in cfg.targets}:
            raise ValueError(f"targets must have keys {[n for n, _ in cfg.targets]}, got "
                             f"{sorted(targets)}")
        dtype = jnp.dtype(cfg.dtype)
        x = 0
        for name, c in cfg.targets:
            self._check(f"targets[{name!r}]", targets[name], c)
            x = x + self.embed[name](patchify(targets[name].astype(dtype), cfg.patch_size))
        x = self._tokens(x, self.encoder, self.enc_ln, self.enc_pos, self.enc_context, image)
        x = resize_tokens(x, cfg.grid, cfg.code_grid)
        z = self.encoder_head(x.astype(jnp.float32))
        return jax.nn.standardize(z, axis=-1)

    def quantize(self, z: jax.Array) -> tuple[jax.Array, jax.Array]:
        """(straight-through quantized z [B,L,Dc], codes int32 [B,L])."""
        e = self.codebook()
        idx = nearest_code(jax.lax.stop_gradient(z), e)
        return straight_through(z, e[idx]), idx

    def decode(self, z_q: jax.Array, image: jax.Array, keep: jax.Array | None = None
               ) -> dict[str, jax.Array]:
        """Outputs {name: [B,H,W,C]} from code vectors [B,L,Dc]; ``keep`` bool [B,L] zeroes
        the dropped codes (training)."""
        cfg = self.cfg
        self._check("image", image, 3)
        if keep is not None:
            z_q = z_q * keep[..., None]
        x = self.decoder_stem(z_q.astype(jnp.dtype(cfg.dtype)))
        x = resize_tokens(x, cfg.code_grid, cfg.grid)
        x = self._tokens(x, self.decoder, self.dec_ln, self.dec_pos, self.dec_context, image)
        x = x.astype(jnp.float32)
        return {name: unpatchify(self.heads[name](x), cfg.patch_size, cfg.grid)
                for name, _ in cfg.targets}

    def decode_codes(self, idx: jax.Array, image: jax.Array) -> dict[str, jax.Array]:
        """Outputs from codes int [B,L]; ids outside 0..K−1 are clipped into it, so any
        integer sequence decodes."""
        cfg = self.cfg
        if idx.ndim != 2 or idx.shape[1] != cfg.num_codes:
            raise ValueError(f"codes must be [B,{cfg.num_codes}], got {idx.shape}")
        e = self.codebook()
        return self.decode(e[jnp.clip(idx, 0, cfg.codebook_size - 1)], image)

    def __call__(self, targets: Mapping[str, jax.Array], image: jax.Array,
                 keep: jax.Array | None = None) -> tuple[dict[str, jax.Array], Aux]:
        z = self.encode(targets, image)
        z_q, idx = self.quantize(z)
        return self.decode(z_q, image, keep), Aux(z, idx)

    # -- training-time codebook learning ------------------------------------------------------

    def learn_codebook(self, aux: Aux, key: jax.Array) -> dict[str, jax.Array]:
        """Adds one batch's assignments to the moving averages, revives dead codes, and
        returns the batch's :func:`codebook_usage` (call after the gradient step, in the same
        jitted function)."""
        cfg = self.cfg
        used = batch_counts(aux.idx, cfg.codebook_size)
        sums, counts = update_codebook(self.sums[...], self.counts[...], aux.z, aux.idx,
                                       cfg.momentum)
        sums, counts = revive_dead_codes(sums, counts, key, cfg.min_count,
                                         cfg.split_perturbation)
        self.sums[...], self.counts[...] = sums, counts
        return codebook_usage(used)


VQVAE_SIZES: dict[str, VQVAEConfig] = {
    "tiny": VQVAEConfig(image_size=32, patch_size=8, width=32, enc_depth=1, dec_depth=1,
                        heads=2, mlp=64, code_grid=2, codebook_size=16, codeword_dim=8),
    "cpu": VQVAEConfig(image_size=64, patch_size=8, width=128, enc_depth=2, dec_depth=2,
                       heads=4, mlp=512, code_grid=4, codebook_size=256, codeword_dim=32),
    "gpu": VQVAEConfig(image_size=128, patch_size=8, width=384, enc_depth=4, dec_depth=4,
                       heads=6, mlp=1536, code_grid=8, codebook_size=1024, codeword_dim=64),
    # The released colorization stage I (docs/design.md §10.2): 512², patch 16, 256 codes,
    # width 768, depth 6 + 12, dictionary 4096 × 768.
    "uvim_color": VQVAEConfig(image_size=512, patch_size=16, width=768, enc_depth=6,
                              dec_depth=12, heads=12, mlp=3072, code_grid=16,
                              codebook_size=4096, codeword_dim=768, dtype="bfloat16"),
}
"""Named stage I sizes; the cpu and gpu rows are starting points to measure (issue 19)."""

VQVAE_PRESETS: dict[str, VQVAEConfig] = {
    "smoke": VQVAE_SIZES["tiny"],
    "cpu": VQVAE_SIZES["cpu"],
    "gpu": VQVAE_SIZES["gpu"],
    "paper": VQVAE_SIZES["uvim_color"],
}
"""The ``vqvae`` config section per preset (a UViM task brings its own targets through its
spec's shared presets)."""
