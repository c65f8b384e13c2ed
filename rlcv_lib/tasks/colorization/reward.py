"""Colourfulness (Hasler & Süsstrunk 2003): the colorization task's reward.

Per image, over all its pixels, with the opponent channels of the signed form::

    rg = R − G,   yb = ½(R + G) − B
    M  = √(σ²_rg + σ²_yb) + 0.3 · √(μ²_rg + μ²_yb)

μ and σ are the mean and the population standard deviation (ddof 0) over the H·W pixels. One
array program, the same code in NumPy (float64: the test oracle and the host reward
:func:`colourfulness_reward`) and ``jax.numpy`` (jittable, float32, for the RL step)::

    images  float [B,H,W,3]   RGB on [−1, 1] (UViM's range)
    -> M    float [B]

**Properties.** A grey image (R = G = B) has rg = yb = 0, so M = 0 exactly. Adding one
constant to all three channels leaves rg and yb, hence M, unchanged; M scales linearly with the
pixel range: M(a·x) = |a|·M(x). So M on 0–255 pixels is 127.5 times M on [−1, 1]
(:func:`to_255_scale`) and twice M on [0, 1].

**Scale.** The paper reports colourfulness 0.41 → 1.79 without stating its pixel range or
variant. docs/design.md §10.3: the signed form peaks near 1.17 on [0, 1] (an |rg|, |yb| variant
in public code near 0.91), so 1.79 is not M on [0, 1]; it fits the signed form on [−1, 1]
(0.41 there is about 52 on 0–255), and M on 0–255 divided by 100 fits as well. The headline is M
on [−1, 1]; :func:`to_255_scale` gives the 0–255 value reported beside it.

**Reward only.** Nothing differentiates through M (REINFORCE needs its value, not its
gradient). The forward pass is finite on every finite image, uniform ones included: the
variances are means of squared deviations (never negative) and √0 = 0; only the gradient of √ at
0 would be infinite, and none is taken.

**Rounding.** The spread is computed on the pixels minus each image's first pixel (the shifted
data algorithm for the variance), so a flat image has σ = 0 exactly in float32 too, and the
means are taken over W, then over H (a two-level sum keeps float32 rounding small on 512²
images): jitted float32 agrees with float64 to about 1e-7.
"""

from __future__ import annotations

from typing import Any

import numpy as np

CHROMA_WEIGHT = 0.3
"""Weight of the mean chroma √(μ²_rg + μ²_yb) beside the spread √(σ²_rg + σ²_yb)."""
SCALE_255 = 127.5
"""M on 0–255 pixels per unit of M on [−1, 1] (M scales linearly with the pixel range)."""
RANGE_TOLERANCE = 1e-4
"""How far outside [−1, 1] a pixel may lie before :func:`check_images` rejects it (rounding)."""


def _mean_hw(x: Any) -> Any:
    """[B,...]: the mean of ``x`` [B,H,W,...] over H and W (over W first, then H)."""
    return x.mean(2).mean(1)


def colourfulness(images: Any, xp: Any = np) -> Any:
    """float [B]: M of each image ``images`` [B,H,W,3] (module docstring); ``xp``: ``numpy``
    or ``jax.numpy``. Any pixel range; the reward's inputs are checked by
    :func:`colourfulness_reward`."""
    r, g, b = images[..., 0], images[..., 1], images[..., 2]  # [B,H,W] each
    opp = xp.stack([r - g, 0.5 * (r + g) - b], -1)  # [B,H,W,2]: rg, yb
    ref = opp[:, :1, :1, :]  # [B,1,1,2]: each image's first pixel
    dev = opp - ref  # shifted data: exact zeros on a flat image, small sums in float32
    shift = _mean_hw(dev)  # [B,2]
    mu = ref[:, 0, 0, :] + shift  # [B,2]
    var = _mean_hw((dev - shift[:, None, None, :]) ** 2)  # [B,2], population variance
    return xp.sqrt(var.sum(-1)) + CHROMA_WEIGHT * xp.sqrt((mu ** 2).sum(-1))


def to_255_scale(m: Any) -> Any:
    """M of the same images on 0–255 pixels, from M on [−1, 1] (× 127.5)."""
    return SCALE_255 * m


def check_images(images: np.ndarray) -> None:
    """Raises ValueError naming the problem unless ``images`` is real [B,H,W,3] with H, W ≥ 1,
    finite, on [−1, 1] up to :data:`RANGE_TOLERANCE`."""
    a = np.asarray(images)
    if a.ndim != 4 or a.shape[-1] != 3:
        raise ValueError(f"images must be [B,H,W,3] (RGB), got shape {a.shape}")
    if a.shape[1] == 0 or a.shape[2] == 0:
        raise ValueError(f"images must have at least one pixel, got shape {a.shape}")
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
        raise ValueError(f"images must be real numbers, got dtype {a.dtype}")
    bad = ~np.isfinite(a)
    if bad.any():
        i = int(np.argwhere(bad)[0, 0])
        raise ValueError(f"images hold {int(bad.sum())} non-finite values (NaN or inf), the "
                         f"first in image {i}")
    lo, hi = a.min(initial=0), a.max(initial=0)
    if lo < -1 - RANGE_TOLERANCE or hi > 1 + RANGE_TOLERANCE:
        out = (a < -1 - RANGE_TOLERANCE) | (a > 1 + RANGE_TOLERANCE)
        i = int(np.argwhere(out)[0, 0])
        raise ValueError(f"images must lie on [-1, 1], got values in [{lo:g}, {hi:g}] (the "
                         f"first outside in image {i}; 0..255 or 0..1 pixels must be rescaled)")


def colourfulness_reward(images: np.ndarray) -> np.ndarray:
    """float64 [B]: :func:`colourfulness` in NumPy of ``images`` [B,H,W,3] on [−1, 1], checked
    first (:func:`check_images`)."""
    check_images(images)
    return colourfulness(np.asarray(images, np.float64), xp=np)
