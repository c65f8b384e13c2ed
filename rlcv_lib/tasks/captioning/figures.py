"""Captioning's figures and example tables: images with their captions before and after
tuning."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from rlcv_lib.core import evaluate as ev
from rlcv_lib.tasks.captioning import judge
from rlcv_lib.tasks.captioning.metrics import Decoded


def example_rows(split: ev.Split, decoded: Mapping[str, Decoded], indices: Sequence[int],
                 truths: Sequence[Sequence[Any]] | None = None) -> list[dict[str, Any]]:
    """One row per shown image: its first reference, then each model's caption and that
    caption's fast CIDEr-D against the image's references; with the scenes' ``truths``, also
    the scene's things and each caption's grounded F1
    (:func:`rlcv_lib.tasks.captioning.judge.caption_f1`)."""
    rows = []
    for i in indices:
        row: dict[str, Any] = {"image": int(i), "reference": str(split.examples[i]["captions"][0])}
        if truths is not None:
            row["scene"] = judge.describe_truth(truths[i])
        for name, d in decoded.items():
            row[name] = d.captions[i]
            row[f"{name} CIDEr-D"] = float(d.reward[i])
            if truths is not None:
                row[f"{name} F1"] = judge.caption_f1(d.captions[i], truths[i])
        rows.append(row)
    return rows


def contrast_indices(before: Decoded, after: Decoded, truths: Sequence[Sequence[Any]],
                     num: int) -> list[int]:
    """Up to ``num`` images where ``after`` gained the most CIDEr-D over ``before`` while its
    grounded F1 fell (the reward rose, the truth did not), most gained first; images where
    both rose, then the others by CIDEr-D gain, fill the rest: examples of what a CIDEr-D gain
    is made of (``num`` of them whenever there are that many images)."""
    gain = np.asarray(after.reward, np.float64) - np.asarray(before.reward, np.float64)
    f1_gain = (judge.caption_f1s(after.captions, truths)
               - judge.caption_f1s(before.captions, truths))
    order = np.argsort(-gain, kind="stable")
    worse = [int(i) for i in order if gain[i] > 0 and f1_gain[i] < 0]
    better = [int(i) for i in order if gain[i] > 0 and f1_gain[i] > 0]
    chosen = (worse[:num] + better)[:num]
    return chosen + [int(i) for i in order if int(i) not in chosen][:num - len(chosen)]


def draw_examples(split: ev.Split, decoded: Mapping[str, Decoded], indices: Sequence[int],
                  width: int = 34, truths: Sequence[Sequence[Any]] | None = None):
    """A figure: each shown image above its first reference (and, with ``truths``, its
    things) and each model's caption."""
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(indices), figsize=(2.9 * len(indices), 4.6), squeeze=False)
    for ax, i in zip(axes[0], indices, strict=True):
        ax.imshow(split.examples[i]["image"])
        ax.axis("off")
        lines = [f"ref: {split.examples[i]['captions'][0]}"]
        if truths is not None:
            lines.append(f"truth: {judge.describe_truth(truths[i])}")
        lines += [f"{name}: {d.captions[i]}" for name, d in decoded.items()]
        ax.set_title("\n".join(textwrap.fill(t, width) for t in lines), fontsize=6.5,
                     loc="left")
    fig.tight_layout()
    return fig
