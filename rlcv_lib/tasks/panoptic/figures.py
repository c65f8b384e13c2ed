"""Panoptic's figures: the same test images before and after tuning (the paper's Figure 1b
analog), predicted segments by size, and reward beside PQ on validation during tuning (the
paper's Figure 6b analog)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlcv_lib.tasks.panoptic import judges, reward

INCOHERENT_RGB = (1.0, 0.0, 0.0)
"""The outline colour of incoherent segments in :func:`before_after_figure`."""


def render_segments(pred_map: np.ndarray, pred_category: np.ndarray,
                    categories: Sequence[Mapping[str, Any]],
                    outline: np.ndarray | None = None) -> np.ndarray:
    """float [H,W,3] on [0, 1]: each segment of one image (``pred_map`` [H,W], ``pred_category``
    [P]) in its category's colour, every second instance of a category a little darker, void
    black, segment boundaries dark; the segments flagged in ``outline`` bool [P] (e.g.
    incoherent ones) drawn with a red boundary."""
    colours = {int(c["id"]): np.asarray(c["color"], np.float32) / 255 for c in categories}
    pred_map = np.asarray(pred_map)
    table = np.zeros((len(pred_category) + 1, 3), np.float32)  # row 0: void
    seen: dict[int, int] = {}
    for k, cat in enumerate(np.asarray(pred_category), start=1):
        if cat > 0:
            n = seen[int(cat)] = seen.get(int(cat), -1) + 1
            table[k] = colours.get(int(cat), np.full(3, 0.5)) * (0.7 if n % 2 else 1.0)
    image = table[pred_map]
    edge = np.zeros(pred_map.shape, bool)
    edge[1:] |= pred_map[1:] != pred_map[:-1]
    edge[:-1] |= pred_map[1:] != pred_map[:-1]
    edge[:, 1:] |= pred_map[:, 1:] != pred_map[:, :-1]
    edge[:, :-1] |= pred_map[:, 1:] != pred_map[:, :-1]
    image[edge] *= 0.35
    if outline is not None:
        flagged = np.concatenate([[False], np.asarray(outline, bool)])[pred_map]
        image[edge & flagged] = INCOHERENT_RGB
    return image


def before_after_figure(image: np.ndarray, columns: Mapping[str, tuple[np.ndarray, np.ndarray]],
                        gt: Mapping[str, np.ndarray], indices: Sequence[int],
                        categories: Sequence[Mapping[str, Any]]):
    """A grid: one row per test image ``indices``: the input ``image`` [B,H,W,3] on [0, 1], then
    one column per entry of ``columns`` (name -> predicted (map [B,H,W], categories [B,P]),
    e.g. MLE, tuned, truth), each titled with its per-image PQ, segment count and incoherent
    segments (outlined in red). ``gt``: the ``gt_*`` tables of the same images."""
    import matplotlib.pyplot as plt

    c = len(categories)
    names = list(columns)
    fig, axes = plt.subplots(len(indices), len(names) + 1, squeeze=False,
                             figsize=(1.9 * (len(names) + 1), 1.9 * len(indices) + 0.5))
    for r, i in enumerate(indices):
        axes[r, 0].imshow(np.clip(image[i], 0, 1), interpolation="nearest")
        axes[r, 0].set_title("input" if r == 0 else "", fontsize=8)
        for j, name in enumerate(names, start=1):
            pm, pc = (np.asarray(a)[i:i + 1] for a in columns[name])
            one = {k: np.asarray(v)[i:i + 1] for k, v in gt.items()}
            counts = reward.pq_counts(pm, pc, one["gt_map"], one["gt_category"],
                                      one["gt_crowd"], one["gt_area"], c)
            bad = judges.incoherent_segments(counts)[0]
            pq = reward.pq_from_counts(counts["tp"], counts["fp"], counts["fn"],
                                       counts["iou"])[0]
            ax = axes[r, j]
            ax.imshow(render_segments(pm[0], pc[0], categories, bad), interpolation="nearest")
            segs = int((counts["pred_area"][0] > 0).sum())
            label = f"PQ {pq:.2f} · {segs} seg · {int(bad.sum())} inc."
            ax.set_title(f"{name}\n{label}" if r == 0 else label, fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle("Predicted segments (red outline: incoherent, matching nothing)", fontsize=9)
    fig.tight_layout()
    return fig


def sizes_figure(rows: Sequence[Mapping[str, Any]], names: Sequence[str]):
    """Bars per size of :data:`~rlcv_lib.tasks.panoptic.judges.SIZES`: predicted segments and
    incoherent segments per image for the rows ``"<model>, <decoding>"`` in ``names``."""
    import matplotlib.pyplot as plt

    by_name = {f"{r['model']}, {r['decoding']}": r for r in rows}
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.2), sharey=False)
    x = np.arange(len(judges.SIZES))
    width = 0.8 / max(1, len(names))
    for ax, what in zip(axes, ("segments", "incoherent"), strict=True):
        for j, name in enumerate(names):
            vals = [by_name[name][f"{what}_{s}"] for s in judges.SIZES]
            ax.bar(x + (j - (len(names) - 1) / 2) * width, vals, width, label=name)
        ax.set_xticks(x, judges.SIZES)
        ax.set(ylabel=f"{what} segments per image" if what == "incoherent" else
               "predicted segments per image", xlabel="predicted segment size")
    axes[1].legend(fontsize=7)
    fig.tight_layout()
    return fig


def reward_metric_figure(curve: Sequence[Mapping[str, Any]], best_step: int, r: float):
    """Validation during tuning: the mean sampled reward (per-image PQ of ``rl.num_samples``
    samples) and the greedy PQ at each evaluation, the chosen step dotted, Pearson ``r`` of the
    two over the evaluations in the title (the paper's Figure 6b analog)."""
    import matplotlib.pyplot as plt

    steps = [e["step"] for e in curve]
    fig, ax = plt.subplots(figsize=(4.8, 3.2))
    ax.plot(steps, [e["reward_sampled"] for e in curve], "o-", label="reward (sampled)")
    ax.plot(steps, [e["pq"] for e in curve], "s-", label="PQ per image (greedy)")
    ax.axvline(best_step, color="k", ls=":", lw=1)
    ax.set(xlabel="REINFORCE update", ylabel="validation", title=f"Pearson r = {r:.2f}")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
