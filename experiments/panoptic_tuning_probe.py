"""A validation-only probe of panoptic tuning from the shipped stage II: the validation
headroom (stage I oracle vs MLE greedy), the area filter's validation PQ per threshold, and one
run of ``--steps`` updates at each learning rate given, its validation curve printed (the test
split is not read). How the cpu tuning recipe was chosen (notes/panoptic.md).

    python experiments/panoptic_tuning_probe.py --lr 1e-4 3e-4 --steps 300
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
from rlcv_lib.core import tune as tuning
from rlcv_lib.tasks.panoptic import pretrain as pp
from rlcv_lib.tasks.panoptic import tune as pt


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--lr", type=float, nargs="+", default=[1e-4])
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--cache", default=None)
    p.add_argument("overrides", nargs="*", help="config overrides key=value")
    args = p.parse_args()
    for i, lr in enumerate(args.lr):
        cfg = get_config("cpu", task="panoptic", overrides={
            **parse_overrides(args.overrides), "tune.lr": lr, "tune.num_steps": args.steps,
            "tune.eval_every": args.eval_every})
        pre = shipped.load_or_pretrain(pp.STAGE2_RECIPE, cfg, None, cache_dir=args.cache)
        val = ev.load_split(cfg, "validation", cfg.panoptic.val_size, args.cache)
        key = jax.random.key(ev.seed_for(cfg.run.seed, "eval"))
        if i == 0:
            vb = pre.task.batch(val.batch)
            oracle = pt.judge_segments(*pt.predicted_segments(
                pre.task, pt.oracle_tokens(pre.task, vb), vb), vb, cfg)
            best, values = pt.choose_area_filter(pre.model, pre.task, val, cfg)
            print(json.dumps({"oracle": oracle, "area_filter": values, "chosen": best}))
        run = tuning.tune_and_select(
            pp.STAGE2_RECIPE, cfg, nnx.clone(pre.model), pre.task, tempfile.mkdtemp(),
            name=pt.RUN, select_on=pt.SELECT_ON,
            make_eval=lambda keeper, a=(pre.task, val, cfg, key): pt.make_tune_eval(*a, keeper),
            cache_dir=args.cache, progress=False)
        for e in run.history.records("eval"):
            print(json.dumps({"lr": lr, **{k: round(v, 4) if isinstance(v, float) else v
                                          for k, v in e.items()}}), flush=True)
        print(json.dumps({"lr": lr, "overrides": args.overrides, "best_step": run.best_step,
                          "seconds": round(run.seconds),
                          "steps_per_s": [r["steps_per_s"] for r in
                                          run.history.records("train")][-1]}), flush=True)


if __name__ == "__main__":
    main()
