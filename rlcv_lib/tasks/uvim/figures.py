"""Figures shared by the UViM tasks: validation curves during tuning."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any


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
