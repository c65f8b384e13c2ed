"""Detection's figures."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlcv_lib.tasks.detection import task as det


def spread_by_count(examples: Sequence[Mapping[str, Any]], n: int) -> list[int]:
    """``n`` example indices that span the object counts: the first unused scene of each count,
    most objects first, round after round (sorted)."""
    counts = np.array([len(e["labels"]) for e in examples])
    queues = {c: list(np.flatnonzero(counts == c)) for c in sorted(set(counts), reverse=True)}
    picked: list[int] = []
    while len(picked) < min(n, len(examples)):
        for q in queues.values():
            if q and len(picked) < n:
                picked.append(int(q.pop(0)))
    return sorted(picked)


def before_after_figure(task: det.DetectionTask, examples: Sequence[Mapping[str, Any]],
                        rows: Sequence[tuple[str, Sequence[Mapping[str, np.ndarray]]]],
                        indices: Sequence[int], min_score: float = 0.0):
    """A grid: one row per ``(label, predictions)`` on the same ``examples[indices]`` (Figure
    1a analog); every predicted box is drawn unless ``min_score`` hides the lower-scoring ones
    (each panel's title says how many)."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(len(rows), len(indices), squeeze=False,
                             figsize=(2.6 * len(indices), 2.8 * len(rows)))
    for r, (label, preds) in enumerate(rows):
        for c, i in enumerate(indices):
            task.draw(examples[i], preds[i], ax=axes[r, c], min_score=min_score)
        axes[r, 0].set_ylabel(label, fontsize=10)
    fig.tight_layout()
    return fig
