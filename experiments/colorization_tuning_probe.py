"""A validation-only probe of colorization tuning from the shipped stage II: one run of
``tune.num_steps`` updates at each learning rate given, its validation curve printed (the test
split is not read). How the cpu tuning recipe was chosen (notes/colorization.md).

    python experiments/colorization_tuning_probe.py --lr 1e-4 3e-4 --steps 300
    python experiments/colorization_tuning_probe.py --run guarded colorization.guard_weight=0.5
"""

import argparse
import json
import tempfile

import jax
from flax import nnx

from rlcv_lib.cli import parse_overrides
from rlcv_lib.config import get_config
from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import shipped
from rlcv_lib.tasks.colorization import pretrain as cp
from rlcv_lib.tasks.colorization import tune as ct


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lr", type=float, nargs="+", default=[1e-4])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--run", default="tuned", choices=ct.RUNS)
    p.add_argument("--cache", default=None)
    p.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = p.parse_args()
    for lr in args.lr:
        cfg = get_config("cpu", task="colorization", overrides={
            **parse_overrides(args.overrides),
            "tune.lr": lr, "tune.num_steps": args.steps, "tune.eval_every": 50})
        pre = shipped.load_or_pretrain(cp.STAGE2_RECIPE, cfg, None, cache_dir=args.cache)
        val = ev.load_split(cfg, "validation", cfg.colorization.val_size, args.cache)
        key = jax.random.key(ev.seed_for(cfg.run.seed, "eval"))
        mle = ct.make_tune_eval(pre.task, val, cfg, key)(pre.model)
        floor = {"luma_psnr": mle["luma_psnr"] - cfg.colorization.select_luma_drop,
                 "in_palette": mle["in_palette"]}
        run = ct.tune_and_select(cfg, nnx.clone(pre.model), pre.task, tempfile.mkdtemp(),
                                 args.run, val, floor, key=key, cache_dir=args.cache,
                                 progress=False)
        for e in run.history.records("eval"):
            print(json.dumps({"lr": lr, **{k: round(v, 4) if isinstance(v, float) else v
                                          for k, v in e.items()}}))
        print(json.dumps({"lr": lr, "overrides": args.overrides, "best_step": run.best_step,
                          "seconds": round(run.seconds),
                          "steps_per_s": [r["steps_per_s"] for r in
                                          run.history.records("train")][-1]}))


if __name__ == "__main__":
    main()
