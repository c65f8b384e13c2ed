"""Which scenes world leaves colorization room: the reference rows of issue 19 on validation.

For each candidate world, on its first ``--images`` VALIDATION scenes (never the test split),
the mean colourfulness M on [−1, 1] (×127.5 for 0–255) of

* ``truth``: the scenes themselves;
* ``obj grey``: the same with every thing at its grey (its chroma removed);
* ``dull``: the dull bound, every region at its draw's expected colour (references.dull_bound);
* ``ceiling``: the best in-palette recolouring (references.best_recolouring);

beside ``ceil/dull`` and ``truth/dull``, the pixel share of things (``things %``), things per
image, the void share, the share of images whose ceiling search was exhaustive, and seconds.
A last line checks the coordinate ascent of the ceiling against the exhaustive search on the
chosen world's images small enough to enumerate (limit ``--check-limit`` combinations).

    python experiments/colorization_world.py [--images 256] [--gpu-images 64] [--worlds ...]

NumPy only; about a minute on one core at the defaults. The table is in
notes/colorization_world.md.
"""

from __future__ import annotations

import argparse
import dataclasses
import time

import numpy as np

from rlcv_lib.data import palette, scenes
from rlcv_lib.tasks.colorization import references
from rlcv_lib.tasks.colorization.reward import colourfulness
from rlcv_lib.tasks.colorization.world import COLORIZATION_WORLD_PRESETS, OBJECTS, STUFF_HUES

CPU, GPU = scenes.WORLD_PRESETS["cpu"], scenes.WORLD_PRESETS["gpu"]
SIX_HUES = ("red", "blue", "green", "orange", "yellow", "cyan")
BIG = {k: v for k, v in OBJECTS.items() if k != "muted_prob"}

CANDIDATES: dict[str, scenes.WorldConfig] = {
    "cpu (today)": CPU,
    "cpu +muted": dataclasses.replace(CPU, muted_prob=0.35),
    "cpu +hues": dataclasses.replace(CPU, stuff_hues=STUFF_HUES),
    "big": dataclasses.replace(CPU, **BIG),
    "big +muted": dataclasses.replace(CPU, **OBJECTS),
    "big +hues": dataclasses.replace(CPU, stuff_hues=STUFF_HUES, **BIG),
    "big +6 hues +muted": dataclasses.replace(CPU, stuff_hues=SIX_HUES, **OBJECTS),
    "chosen cpu": COLORIZATION_WORLD_PRESETS["cpu"],
    "chosen smoke": COLORIZATION_WORLD_PRESETS["smoke"],
}
GPU_CANDIDATES: dict[str, scenes.WorldConfig] = {
    "gpu (today)": GPU,
    "gpu +hues": dataclasses.replace(GPU, stuff_hues=STUFF_HUES),
    "chosen gpu": COLORIZATION_WORLD_PRESETS["gpu"],
}


def load(world: scenes.WorldConfig, n: int) -> tuple[np.ndarray, np.ndarray, list, np.ndarray]:
    """(images float32 [n,H,W,3] on [−1, 1], panoptic [n,H,W], segments, thing mask [n,H,W])
    of the first ``n`` validation scenes."""
    ex = [scenes.example(world, "validation", i) for i in range(n)]
    images = np.stack([e["image"] for e in ex]).astype(np.float32) / 127.5 - 1
    panoptic = np.stack([e["panoptic"] for e in ex])
    segments = [e["segments"] for e in ex]
    things = np.stack([np.isin(p, [s["id"] for s in segs if s["isthing"]])
                       for p, segs in zip(panoptic, segments, strict=True)])
    return images, panoptic, segments, things


def objects_grey(images: np.ndarray, things: np.ndarray) -> np.ndarray:
    """``images`` with every thing pixel at its BT.601 grey."""
    grey = ((images + 1) / 2) @ palette.LUMA * 2 - 1  # [n,H,W]
    return np.where(things[..., None], grey[..., None], images)


def measure(world: scenes.WorldConfig, n: int) -> dict[str, float]:
    t0 = time.perf_counter()
    images, panoptic, segments, things = load(world, n)
    best, exact = references.best_recolouring(images, panoptic, segments, world)
    m = references.colourfulness_rows({
        "truth": images, "obj grey": objects_grey(images, things),
        "dull": references.dull_bound(images, panoptic, segments, world), "ceiling": best})
    m.update({"ceil/dull": m["ceiling"] / m["dull"], "truth/dull": m["truth"] / m["dull"],
              "things %": 100 * float(things.mean()),
              "things/img": float(np.mean([sum(s["isthing"] for s in g) for g in segments])),
              "void %": 100 * float((panoptic == 0).mean()),
              "exact %": 100 * float(exact.mean()), "s": time.perf_counter() - t0})
    return m


def check_ascent(world: scenes.WorldConfig, n: int, limit: int) -> str:
    """Mean ceiling by coordinate ascent and exhaustively, on the images with <= ``limit``
    combinations."""
    images, panoptic, segments, _ = load(world, n)
    ascent, _ = references.best_recolouring(images, panoptic, segments, world,
                                            exhaustive_limit=0)
    full, exact = references.best_recolouring(images, panoptic, segments, world,
                                              exhaustive_limit=limit)
    a = colourfulness(ascent[exact].astype(np.float64))
    f = colourfulness(full[exact].astype(np.float64))
    return (f"ascent vs exhaustive on {int(exact.sum())}/{n} images (<= {limit} combinations): "
            f"mean {a.mean():.4f} vs {f.mean():.4f}, ascent below by up to {(f - a).max():.4f}, "
            f"equal on {int(np.sum(np.isclose(a, f, atol=1e-6)))}")


COLUMNS = ("truth", "obj grey", "dull", "ceiling", "ceil/dull", "truth/dull", "things %",
           "things/img", "void %", "exact %", "s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--images", type=int, default=256, help="validation scenes per cpu world")
    ap.add_argument("--gpu-images", type=int, default=64, help="validation scenes per gpu world")
    ap.add_argument("--worlds", nargs="*", help="only these candidates (names as printed)")
    ap.add_argument("--check-limit", type=int, default=200_000)
    args = ap.parse_args()
    todo = [(k, w, args.images) for k, w in CANDIDATES.items()]
    todo += [(k, w, args.gpu_images) for k, w in GPU_CANDIDATES.items()]
    if args.worlds:
        todo = [t for t in todo if t[0] in args.worlds]
    print("colourfulness M on [-1, 1] (x127.5 for 0-255), mean over validation scenes")
    print(f"{'world':20s} {'images':>6s} " + " ".join(f"{c:>10s}" for c in COLUMNS))
    for name, world, n in todo:
        m = measure(world, n)
        print(f"{name:20s} {n:6d} " + " ".join(f"{m[c]:10.3f}" for c in COLUMNS), flush=True)
    print(check_ascent(COLORIZATION_WORLD_PRESETS["cpu"], min(args.images, 64),
                       args.check_limit))
    for name in ("cpu", "gpu"):
        diff = {f.name: getattr(COLORIZATION_WORLD_PRESETS[name], f.name)
                for f in dataclasses.fields(scenes.WorldConfig)
                if getattr(COLORIZATION_WORLD_PRESETS[name], f.name)
                != getattr(scenes.WORLD_PRESETS[name], f.name)}
        print(f"chosen {name} = WORLD_PRESETS[{name!r}] with {diff}")


if __name__ == "__main__":
    main()
