"""The in-palette judge's tolerance, chosen on validation scenes: the distance of each annotated
pixel to its region's palette (``references.palette_distance``) for the truth, the dull bound and
a recoloured truth, and the in-palette rate of the truth and the dull bound at a few tolerances.

    python experiments/colorization_palette_tolerance.py [--images 128] [--cache DIR]
"""

import argparse

import numpy as np

from rlcv_lib.config import get_config
from rlcv_lib.core import evaluate as ev
from rlcv_lib.tasks.colorization import references as refs


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=128)
    ap.add_argument("--cache", default=None)
    args = ap.parse_args()
    cfg = get_config("cpu", task="colorization")
    val = ev.load_split(cfg, "validation", args.images, args.cache)
    truth = val.batch["image"] * 2 - 1
    pan, segs = val.batch["panoptic"], [e["segments"] for e in val.examples]
    rows = {"truth": truth, "dull bound": refs.dull_bound(truth, pan, segs, cfg.world),
            "recoloured truth": refs.recolour(truth, pan, segs, cfg.world,
                                              np.random.default_rng(0))}
    dist = {k: refs.palette_distance(v, truth, pan, segs, cfg.world) for k, v in rows.items()}
    for name, d in dist.items():
        print(f"{name}: distance percentiles 50/90/95/99 "
              f"{np.round(np.nanpercentile(d, [50, 90, 95, 99]), 4).tolist()}")
    for tol in (0.05, 0.1, 0.15, 0.2, 0.3):
        rates = {k: float(np.nanmean(refs.in_palette_rate(d, tol))) for k, d in dist.items()}
        print(f"tolerance {tol}: in-palette rate " +
              ", ".join(f"{k} {v:.4f}" for k, v in rates.items()))


if __name__ == "__main__":
    main()
