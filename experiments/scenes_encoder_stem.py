"""Which stem lets the cpu encoder read shape: short runs of the scenes encoder's pretraining.

Each variant trains for ``--steps`` updates (batch 32, the cpu ``train`` settings unless the
variant says otherwise) on the cpu world and prints, four times, the validation scores of
:func:`rlcv_lib.tasks.scenes_encoder.task.scores` on 256 validation scenes: ``shape_acc`` (the
thing class of patches at least half thing; chance is 1/3), ``thing_semantic_acc``,
``centre_acc``, ``colour_acc`` and ``grey_shape_acc``, with the seconds so far.

* ``stem1``: the one-convolution-per-stage stem (16-32-64 channels) the shipped detector and
  captioner were trained with;
* ``stem1_adamw``: the same with AdamW instead of Adafactor;
* ``stem2``: two convolutions per stage, 32-64-128 channels (``model.stem_depth=2``,
  ``model.stem_width=128``: the cpu preset since the shared encoder);
* ``cnn``: no Transformer: the ``stem2`` convolutions, two residual 3×3 convolutions on the
  8×8 grid and the shape head alone, Adam 1e-3 (does a convnet read these shapes quickly?).

    python experiments/scenes_encoder_stem.py stem1 stem2 cnn [--steps 1200]

About 4, 7 and 1.5 minutes per 1,200 steps on the 2-core CPU. Results: notes/scenes_encoder.md.
"""

from __future__ import annotations

import argparse
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx

from rlcv_lib.config import get_config
from rlcv_lib.core import evaluate, optim
from rlcv_lib.data import pipeline, sources
from rlcv_lib.models.vit import ConvStem
from rlcv_lib.tasks.scenes_encoder import task as enc

OVERRIDES = {
    "stem1": {"model.stem_depth": 1, "model.stem_width": 0},
    "stem1_adamw": {"model.stem_depth": 1, "model.stem_width": 0, "train.optimizer": "adamw"},
    "stem2": {"model.stem_depth": 2, "model.stem_width": 128},
    "cnn": {"model.stem_depth": 2, "model.stem_width": 128},
}
SHOWN = ("shape_acc", "thing_semantic_acc", "centre_acc", "colour_acc", "grey_shape_acc")


class ConvProbe(nnx.Module):
    """The stem, two residual 3×3 convolutions on the patch grid, a linear shape head."""

    def __init__(self, cfg, num_things: int, *, rngs: nnx.Rngs):
        d = cfg.stem_width
        self.stem = ConvStem(cfg.patch_size, d, depth=cfg.stem_depth, last=d,
                             dtype=jnp.float32, rngs=rngs)
        self.context = nnx.List([nnx.Conv(d, d, (3, 3), rngs=rngs) for _ in range(2)])
        self.head = nnx.Linear(d, num_things, rngs=rngs)

    def __call__(self, images):
        x = self.stem(images)
        for conv in self.context:
            x = x + jax.nn.gelu(conv(x))
        return self.head(x.reshape(x.shape[0], -1, x.shape[-1]))


def run_encoder(variant: str, steps: int) -> None:
    cfg = get_config("cpu", OVERRIDES[variant], task="scenes_encoder")
    task = enc.make_task(cfg)
    model = enc.build(cfg, task)
    optimizer = optim.make_optimizer(model, cfg.train)
    step = enc.make_step(task)
    batches, evaluator = _data(cfg, task)
    evaluate_fn = enc.make_evaluator(task, evaluator)
    start = time.time()
    for i in range(steps):
        step(model, optimizer, batches(i))
        if (i + 1) % (steps // 4) == 0:
            metrics = evaluate_fn(model)
            _show(variant, i + 1, start, {k: metrics[k] for k in SHOWN})


def run_cnn(steps: int) -> None:
    cfg = get_config("cpu", OVERRIDES["cnn"], task="scenes_encoder")
    task = enc.make_task(cfg)
    model = ConvProbe(cfg.model, task.num_things, rngs=nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    batches, val = _data(cfg, task)
    truth = task.targets(val.batch)

    @nnx.jit
    def update(m, opt, t):
        loss = lambda m: enc.weighted_xent(m(t["image"]), t["shape"], t["thing_weight"])  # noqa: E731
        grads = nnx.grad(loss)(m)
        opt.update(m, grads)

    predict = nnx.jit(lambda m, x: m(x))
    start = time.time()
    for i in range(steps):
        b = batches(i)
        update(model, optimizer, {k: jnp.asarray(b[k]) for k in ("image", "shape",
                                                                  "thing_weight")})
        if (i + 1) % (steps // 4) == 0:
            logits = np.asarray(predict(model, jnp.asarray(truth["image"])))
            mostly = truth["thing_weight"] >= 0.5
            acc = np.mean(np.argmax(logits, -1)[mostly] == np.argmax(truth["shape"], -1)[mostly])
            _show("cnn", i + 1, start, {"shape_acc": float(acc)})


def _data(cfg, task):
    src = sources.open_source("scenes", "train", world=cfg.world)
    loader = pipeline.Loader(src, cfg.train.batch_size, seed=0, max_boxes=cfg.world.max_objects)
    return (pipeline.Prefetcher(enc.make_batch_fn(task, loader, 0)),
            evaluate.load_split(cfg, "validation", 256))


def _show(variant: str, step: int, start: float, metrics: dict[str, float]) -> None:
    cells = " ".join(f"{k}={v:.3f}" for k, v in metrics.items())
    print(f"{variant:12s} step {step:5d} {time.time() - start:6.0f} s  {cells}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("variants", nargs="+", choices=sorted(OVERRIDES))
    parser.add_argument("--steps", type=int, default=1200)
    args = parser.parse_args()
    for variant in args.variants:
        run_cnn(args.steps) if variant == "cnn" else run_encoder(variant, args.steps)


if __name__ == "__main__":
    main()
