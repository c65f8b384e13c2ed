"""Colorization's figures: the same test images before and after tuning (the paper's Figure 1c
analog); the validation curves during tuning are UViM's shared :func:`tuning_curves_figure`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from rlcv_lib.tasks.colorization.reward import colourfulness
from rlcv_lib.tasks.uvim.figures import tuning_curves_figure  # noqa: F401 (shared)


def to_unit(images: np.ndarray) -> np.ndarray:
    """Images on [−1, 1] -> [0, 1] for display (clipped)."""
    return np.clip((np.asarray(images, np.float32) + 1) / 2, 0, 1)


def before_after_figure(columns: Mapping[str, np.ndarray], indices: Sequence[int]):
    """A grid: one row per test image ``indices``, one column per entry of ``columns`` (name ->
    images [B,H,W,3] on [−1, 1], e.g. grey input, MLE, tuned, truth), each panel titled with its
    colourfulness."""
    import matplotlib.pyplot as plt

    names = list(columns)
    fig, axes = plt.subplots(len(indices), len(names), squeeze=False,
                             figsize=(1.9 * len(names), 1.9 * len(indices) + 0.4))
    for r, i in enumerate(indices):
        for c, name in enumerate(names):
            ax = axes[r, c]
            image = np.asarray(columns[name][i])
            ax.imshow(to_unit(image), interpolation="nearest")
            m = float(colourfulness(np.clip(image, -1, 1)[None].astype(np.float64))[0])
            ax.set_title(f"{name}\nM = {m:.2f}" if r == 0 else f"M = {m:.2f}", fontsize=8)
            ax.set_xticks([])
            ax.set_yticks([])
    fig.tight_layout()
    return fig
