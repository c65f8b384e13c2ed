"""Figures of the scenes world: the gallery and the statistics panels (matplotlib)."""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from typing import Any

import numpy as np

from rlcv_lib.data import palette, scenes


def panoptic_overlay(image: np.ndarray, panoptic: np.ndarray, alpha: float = 0.6) -> np.ndarray:
    """Each segment in its own colour over the image; void pixels black, edges white."""
    rng = np.random.default_rng(0)
    colours = rng.uniform(0.15, 1.0, (int(panoptic.max()) + 1, 3))
    colours[0] = 0
    over = colours[panoptic]
    out = (1 - alpha) * image.astype(np.float32) / 255 + alpha * over
    edge = np.zeros(panoptic.shape, bool)
    edge[:-1] |= panoptic[:-1] != panoptic[1:]
    edge[:, :-1] |= panoptic[:, :-1] != panoptic[:, 1:]
    out[edge] = 1.0
    out[panoptic == 0] = 0.0
    return np.clip(out, 0, 1)


def gallery(cfg: scenes.WorldConfig, sc_list: Sequence[scenes.Scene]) -> Any:
    """One row per scene: colour image with boxes and classes | panoptic overlay | grey input |
    the five captions."""
    import matplotlib.pyplot as plt
    from matplotlib.patches import Rectangle

    rows = len(sc_list)
    fig, axes = plt.subplots(rows, 4, figsize=(13, 2.9 * rows),
                             gridspec_kw={"width_ratios": [1, 1, 1, 1.7]})
    axes = np.atleast_2d(axes)
    n = cfg.image_size
    for r, sc in enumerate(sc_list):
        ax = axes[r, 0]
        ax.imshow(sc.image, interpolation="nearest")
        for t in sc.things:
            y0, x0, y1, x1 = t.bbox
            ax.add_patch(Rectangle((x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False,
                                   lw=1.2, ec="white"))
            ax.text(x0 - 0.5, y0 - 0.8, t.name, fontsize=6.5, color="white", va="bottom",
                    bbox={"fc": "black", "alpha": 0.55, "pad": 0.5, "lw": 0})
        ax.set_title(f"{len(sc.things)} things (+{sc.painted - len(sc.things)} hidden)",
                     fontsize=8)
        axes[r, 1].imshow(panoptic_overlay(sc.image, sc.panoptic), interpolation="nearest")
        axes[r, 1].set_title(f"panoptic: {len(sc.things)} things, "
                             f"{', '.join(s.name for s in sc.stuff)}", fontsize=8)
        axes[r, 2].imshow(palette.to_grey(sc.image), interpolation="nearest")
        axes[r, 2].set_title("grey input (colorization)", fontsize=8)
        text = "\n".join(textwrap.fill(f"{k + 1}. {c}", 48) for k, c in enumerate(sc.captions))
        axes[r, 3].text(0.0, 0.5, text, fontsize=8.5, va="center", family="monospace")
        for ax in axes[r]:
            ax.set_xticks([])
            ax.set_yticks([])
        for ax in axes[r, :3]:
            ax.set_xlim(-0.5, n - 0.5)
            ax.set_ylim(n - 0.5, -0.5)
        axes[r, 3].axis("off")
    fig.tight_layout()
    return fig


def statistics_figure(cfg: scenes.WorldConfig, obj: dict[str, Any]) -> Any:
    """Objects per image, COCO area buckets, class balance and stuff presence."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 4, figsize=(16, 3.4))
    counts = obj["objects_per_image"]
    bins = np.arange(0, max(counts.max(initial=0), obj["painted_per_image"].max(initial=0)) + 2)
    ax[0].hist([counts, obj["painted_per_image"]], bins=bins - 0.5,
               label=["annotated", "painted"])
    ax[0].axvline(7.5, color="k", ls=":", lw=1)
    ax[0].set_title(f"things per image (mean {obj['mean_objects']:.2f}, "
                    f"{100 * obj['crowded_fraction']:.0f}% with ≥8)", fontsize=9)
    ax[0].legend(fontsize=8)
    b = obj["size_buckets"]
    total = max(1, sum(b.values()))
    ax[1].bar(list(b), [v / total for v in b.values()], color=["#c44", "#888", "#48c"])
    s, lg = scenes.area_thresholds(cfg.image_size, cfg.image_size)
    ax[1].set_title(f"COCO area buckets (small<{s:.1f}px, large≥{lg:.1f}px)", fontsize=9)
    ax[1].set_ylabel("fraction of things")
    cc = obj["class_counts"]
    ax[2].bar(list(cc), list(cc.values()))
    ax[2].set_title("class balance (things)", fontsize=9)
    ax[2].tick_params(axis="x", rotation=45, labelsize=8)
    sp = obj["stuff_presence"]
    ax[3].bar(list(sp), list(sp.values()), color="#6a6")
    ax[3].set_title("stuff: fraction of images present", fontsize=9)
    fig.tight_layout()
    return fig


def colour_figure(obj: dict[str, Any], pix: dict[str, Any]) -> Any:
    """Colour names per grey level (stacked) and the pixel entropy of hue given grey."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 2, figsize=(13, 3.6))
    joint = obj["level_color_counts"]
    bottom = np.zeros(len(obj["grey_levels"]))
    for j, name in enumerate(obj["color_names"]):
        if joint[:, j].sum() == 0:
            continue
        ax[0].bar([f"{g:.2f}" for g in obj["grey_levels"]], joint[:, j], bottom=bottom,
                  color=palette.COLOR_RGB[j], edgecolor="k", lw=0.3, label=name)
        bottom += joint[:, j]
    ax[0].set_title(f"thing colours by grey level: H(colour | grey) = "
                    f"{obj['color_entropy_given_grey_bits']:.2f} bits "
                    f"({100 * obj['muted_fraction']:.0f}% muted)", fontsize=9)
    ax[0].set_xlabel("grey level (BT.601 luma)")
    ax[0].legend(fontsize=7, ncol=1, loc="upper left", bbox_to_anchor=(1.0, 1.0))
    centres = (np.arange(len(pix["per_grey_bits"])) + 0.5) / len(pix["per_grey_bits"])
    ax[1].bar(centres, pix["per_grey_bits"], width=0.9 / len(centres))
    ax[1].axhline(np.log2(pix["joint"].shape[1]), color="k", ls=":", lw=1)
    ax[1].set_title(f"pixels: H(hue | grey) = {pix['hue_given_grey_bits']:.2f} bits "
                    f"of {np.log2(pix['joint'].shape[1]):.2f} max", fontsize=9)
    ax[1].set_xlabel("grey value")
    ax[1].set_ylabel("bits")
    fig.tight_layout()
    return fig


def captions_figure(cap: dict[str, Any], cider: np.ndarray) -> Any:
    """Caption lengths, the most frequent words, and per-reference CIDEr-D."""
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(1, 3, figsize=(16, 3.6))
    lengths = cap["lengths"]
    ax[0].hist(lengths, bins=np.arange(lengths.max() + 2) - 0.5)
    ax[0].set_title(f"caption length (mean {cap['mean_length']:.1f} words, "
                    f"vocabulary {cap['vocabulary']})", fontsize=9)
    words, freq = zip(*cap["top_words"], strict=True)
    ax[1].barh(words[::-1], freq[::-1])
    ax[1].tick_params(axis="y", labelsize=7)
    ax[1].set_title("25 most frequent words", fontsize=9)
    ax[2].hist(cider.ravel(), bins=40)
    ax[2].axvline(cider.mean(), color="k", ls=":")
    ax[2].set_title(f"CIDEr-D of each reference vs the other four (mean {cider.mean():.3f})",
                    fontsize=9)
    fig.tight_layout()
    return fig
