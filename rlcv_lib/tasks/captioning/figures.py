"""Captioning's figures and example tables: images with their captions before and after
tuning."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

from rlcv_lib.core import evaluate as ev
from rlcv_lib.tasks.captioning.metrics import Decoded


def example_rows(split: ev.Split, decoded: Mapping[str, Decoded], indices: Sequence[int]
                 ) -> list[dict[str, Any]]:
    """One row per shown image: its first reference, then each model's caption and that
    caption's fast CIDEr-D against the image's references."""
    rows = []
    for i in indices:
        row: dict[str, Any] = {"image": int(i), "reference": str(split.examples[i]["captions"][0])}
        for name, d in decoded.items():
            row[name] = d.captions[i]
            row[f"{name} CIDEr-D"] = float(d.reward[i])
        rows.append(row)
    return rows


def draw_examples(split: ev.Split, decoded: Mapping[str, Decoded], indices: Sequence[int],
                  width: int = 34):
    """A figure: each shown image above its first reference and each model's caption."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(indices), figsize=(2.9 * len(indices), 4.6), squeeze=False)
    for ax, i in zip(axes[0], indices, strict=True):
        ax.imshow(split.examples[i]["image"])
        ax.axis("off")
        lines = [f"ref: {split.examples[i]['captions'][0]}"]
        lines += [f"{name}: {d.captions[i]}" for name, d in decoded.items()]
        ax.set_title("\n".join(textwrap.fill(t, width) for t in lines), fontsize=6.5,
                     loc="left")
    fig.tight_layout()
    return fig
