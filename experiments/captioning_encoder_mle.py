"""MLE captioners side by side on VALIDATION: what each says, by CIDEr-D and the grounded judge.

Each ``NAME=PATH`` is a captioner: a shipped checkpoint directory (``checkpoints/captioning-cpu``)
or a pretraining work directory (its latest checkpoint), loaded with the cpu captioning config
plus the ``key=value`` overrides after it (``NAME=PATH:key=value,key=value``: the config it was
trained with). All are decoded greedily on the first ``--images`` validation scenes (never the
test split) and scored by pycocoevalcap (CIDEr-D, BLEU-4) and by the grounded judge (object
precision, recall, F1, count accuracy; distinct captions and words per 1,000 images).

    python experiments/captioning_encoder_mle.py \\
        encoder=checkpoints/captioning-cpu \\
        scratch=runs/captioning-scratch:model.encoder_init= \\
        previous=/tmp/old/checkpoints/captioning-cpu:model.stem_depth=1,model.stem_width=0,model.encoder_init=

prints one Markdown row per model. About a minute per model on the 2-core CPU at 1,024
images. Results: notes/scenes_encoder.md.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from rlcv_lib import cli
from rlcv_lib.core import checkpoint, evaluate, pretrain, shipped
from rlcv_lib.tasks.captioning import judge, metrics
from rlcv_lib.tasks.captioning.pretrain import RECIPE

COLUMNS = ("CIDEr-D", "BLEU-4", "precision", "recall", "F1", "count accuracy",
           "distinct captions/1000", "distinct words/1000")


def load(spec: str):
    """(name, model, task, cfg) of a ``NAME=PATH[:overrides]`` argument."""
    name, _, rest = spec.partition("=")
    path, _, overrides = rest.partition(":")
    _, cfg = cli.resolve("captioning", "cpu", cli.parse_overrides(
        [o for o in overrides.split(",") if o]))
    path = Path(path)
    if (path / checkpoint.MANIFEST).exists():
        pre = shipped.load_or_pretrain(RECIPE, cfg, None, path=path)
        return name, pre.model, pre.task, cfg
    model, task, _ = pretrain.restore_model(RECIPE, cfg, path)
    return name, model, task, cfg


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="+", metavar="NAME=PATH[:key=value,...]")
    parser.add_argument("--images", type=int, default=1024)
    args = parser.parse_args()
    loaded = [load(s) for s in args.models]
    cfg, task = loaded[0][3], loaded[0][2]
    val = evaluate.load_split(cfg, "validation", args.images)
    truths = judge.split_truth(cfg.world, val.examples)
    rows, _ = metrics.evaluate_models({n: m for n, m, _, _ in loaded}, task, val,
                                      methods=("greedy",), truths=truths)
    print("| model | " + " | ".join(COLUMNS) + " |")
    print("|---" * (len(COLUMNS) + 1) + "|")
    for row in rows:
        print(f"| {row['model']} | " + " | ".join(f"{row[c]:.4g}" for c in COLUMNS) + " |")


if __name__ == "__main__":
    main()
