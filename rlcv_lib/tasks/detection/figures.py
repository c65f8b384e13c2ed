"""Detection's figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlcv_lib.tasks.detection import task as det


def before_after_figure(task: det.DetectionTask, examples: Sequence[Mapping[str, Any]],
                        rows: Sequence[tuple[str, Sequence[Mapping[str, np.ndarray]]]],
                        indices: Sequence[int], min_score: float = 0.0):
    """A grid: one row per ``(label, predictions)`` on the same ``examples[indices]`` (Figure
    1a analog); boxes scoring below ``min_score`` are not drawn."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(indices), squeeze=False,
                             figsize=(1.9 * len(indices), 2.0 * len(rows)))
    for r, (label, preds) in enumerate(rows):
        for c, i in enumerate(indices):
            task.draw(examples[i], preds[i], ax=axes[r, c], min_score=min_score)
        axes[r, 0].set_ylabel(label, fontsize=8)
    fig.tight_layout()
    return fig
