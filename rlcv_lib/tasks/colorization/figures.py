"""Colorization's figures: the same test images before and after tuning (the paper's Figure 1c
analog), and the validation curves during tuning."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlcv_lib.tasks.colorization.reward import colourfulness


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


def tuning_curves_figure(curve: Sequence[Mapping[str, Any]], best_step: Mapping[str, int],
                         keys: Sequence[tuple[str, str]]):
    """One panel per ``(metric, label)`` of ``keys``: each run's validation curve (``curve``
    rows ``{"model", "step", metric...}``), the chosen step dotted."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(keys), figsize=(3.6 * len(keys), 3.1), squeeze=False)
    for ax, (key, label) in zip(axes[0], keys, strict=True):
        for j, name in enumerate(dict.fromkeys(r["model"] for r in curve)):
            rows = [r for r in curve if r["model"] == name]
            ax.plot([r["step"] for r in rows], [r[key] for r in rows], "o-", ms=3,
                    color=f"C{j}", label=name)
            if name in best_step:
                ax.axvline(best_step[name], color=f"C{j}", ls=":", lw=1)
        ax.set(xlabel="REINFORCE update", ylabel=label)
    axes[0, 0].legend(fontsize=8)
    fig.suptitle("Validation during tuning (dotted: the chosen checkpoint)", fontsize=10)
    fig.tight_layout()
    return fig
