"""Trainer overhead: the same MLE / RL steps run by a bare Python loop and by ``train.fit``.

``fit`` adds per step a ``batch_fn`` call, an rng ``fold_in`` and bookkeeping, and at log
intervals one device fetch; with a workdir it also writes checkpoints (asynchronously) and a
history file. This script times the *same* steps of the same model on the same batches both
ways, interleaved, after compiling outside the timed region, and reports examples/s and the
ratio (fit's time over the bare loop's; 1.0 = no overhead). Batches are precomputed so data
generation is not part of either. It also times one checkpoint save (the part that blocks
training) and one restore. The RL step's own split into sampling / reward / update is
``benchmarks/bench_sampler.py --steps``.

    python benchmarks/bench_train.py [--model cpu] [--batch 32] [--steps 40] [--no-save]
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time

import jax
import numpy as np
from record import Suite

from rlcv_lib import checkpoint, optim, steps, train
from rlcv_lib.models import MODEL_PRESETS, build_model
from rlcv_lib.reinforce import RL_PRESETS
from rlcv_lib.tasks.toy import SortTask


def bare_loop(step_fn, model, opt, batches, seed=0):
    key = jax.random.key(seed)
    metrics = None
    for i, batch in enumerate(batches):
        metrics = step_fn(model, opt, batch, jax.random.fold_in(key, i))
    jax.block_until_ready(metrics)


def fit_loop(step_fn, model, opt, batches, workdir=None, ckpt_every=0):
    train.fit(model, opt, step_fn, lambda i: batches[i], num_steps=len(batches), log_every=10,
              workdir=workdir, ckpt_every=ckpt_every, progress=False)


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="cpu", choices=sorted(MODEL_PRESETS))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rl-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-save", action="store_true")
    args = ap.parse_args()

    mcfg = MODEL_PRESETS[args.model]
    task = SortTask(max_numbers=8, image_size=mcfg.image_size)
    tcfg = dataclasses.replace(train.TRAIN_PRESETS["cpu"], warmup_steps=1)
    rl_cfg = RL_PRESETS["cpu"]
    model = build_model(mcfg, task, seed=0)
    opt = optim.make_optimizer(model, tcfg)
    suite = Suite("train", f"Trainer overhead: fit vs a bare loop over the same steps "
                           f"({args.model} model, toy task L={task.max_len})")

    for name, step_fn, bsz, unit in (
            ("MLE", steps.make_mle_step(task), args.batch, "examples/s"),
            ("RL", steps.make_rl_step(task, rl_cfg), args.rl_batch, "images/s")):
        batches = [task.batch(seed=0, step=i, batch_size=bsz) for i in range(args.steps)]
        t0 = time.perf_counter()
        bare_loop(step_fn, model, opt, batches[:2])  # compile outside the timed region
        compile_s = time.perf_counter() - t0
        bare_t, fit_t = [], []
        for _ in range(args.repeats):  # interleaved: both see the same machine load
            bare_t.append(timed(lambda f=step_fn, b=batches: bare_loop(f, model, opt, b)))
            fit_t.append(timed(lambda f=step_fn, b=batches: fit_loop(f, model, opt, b)))
        bare, fit = float(np.median(bare_t)), float(np.median(fit_t))
        n = args.steps * bsz
        suite.add(f"{name} step, bare loop (B={bsz})", n / bare, unit)
        suite.add(f"{name} step, through fit (B={bsz})", n / fit, unit,
                  reference="bare loop", ratio=fit / bare, target="time ratio <= 1.05",
                  met=fit / bare <= 1.05)
        suite.notes.append(f"{name}: first two steps (compile) {compile_s:.1f} s; medians of "
                           f"{args.repeats} interleaved runs of {args.steps} steps")

    with tempfile.TemporaryDirectory() as tmp:
        with checkpoint.Checkpointer(tmp, max_to_keep=None) as ckpt:
            ckpt.save(0, model, opt)  # first save sets up orbax's machinery
            ckpt.wait()
            blocking = []
            for s in range(1, args.repeats + 1):
                blocking.append(timed(lambda s=s: ckpt.save(s, model, opt)))
                ckpt.wait()
            restore = [timed(lambda: ckpt.restore(model, opt)) for _ in range(args.repeats)]
        params = sum(x.size for x in jax.tree.leaves(model))
        suite.add("checkpoint save, blocking part", 1e3 * float(np.median(blocking)), "ms",
                  note=f"model + optimizer state, {params / 1e6:.2f}M model parameters")
        suite.add("checkpoint restore", 1e3 * float(np.median(restore)), "ms")
    suite.finish(save=not args.no_save)


if __name__ == "__main__":
    main()
