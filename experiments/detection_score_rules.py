"""Ranks the same tuned boxes by three score rules (an ad-hoc check, not part of the package).

Tunes the shipped cpu detector with the notebook's recipe (seed 1, 500 updates: the seed-1 CLI
run's best state, reproduced exactly), then scores its greedy test boxes by the confidence
token, the class token, and their product, and prints the test mAP of each.

    python experiments/detection_score_rules.py     # ~5 min on the idle 2-core CPU

Printed on 2026-11-26 (32,000-update detector, the monitor then choosing by confidence-score
mAP): confidence 50.00, class 50.72, product 51.21. The monitor now chooses by the product (the
tuned rule since), so a rerun may pick another update; ``python -m rlcv_lib.detection_tuning``
reports the same three rows for any seed.
"""


from rlcv_lib import detection_experiment, pretrained
from rlcv_lib import detection_tuning as dt
from rlcv_lib.config import get_config

CACHE = "runs/pretrain/scenes_cache"

if __name__ == "__main__":
    cfg = get_config("cpu", overrides={"run.seed": "1", "tune.num_steps": "500",
                                       "tune.eval_every": "250"})
    pre = pretrained.load_or_pretrain(detection_experiment.RECIPE, cfg, None, cache_dir=CACHE,
                                      progress=False)
    task, model = pre.task, pre.model
    val_examples, val_batch = dt.split_set(cfg, "validation", 256, CACHE)
    test_examples, test_batch = dt.split_set(cfg, "test", cfg.run.eval_examples, CACHE)
    _, monitor = dt.tune_from_mle(cfg, model, task, val_examples, val_batch, cache_dir=CACHE,
                                  progress=False)
    print("best validation state: update", monitor.restore_best(model))
    scored, _ = dt.predict_scored(model, task, test_batch["image"], dt.TUNED_RULE)  # same boxes
    for name, preds in scored.items():
        m = dt.metrics_of(task, preds, test_examples)
        print(f"{name:>18}: " + ", ".join(f"{k} {100 * m[k]:.2f}"
                                          for k in ("mAP", "AP50", "AP75", "AR@100")))
