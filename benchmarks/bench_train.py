"""Training speed: MLE examples/s, the reward-tuning step split into its parts over a small
grid of L, B and N, and the trainer's overhead over a bare loop.

**Breakdown** (suite ``train_breakdown``): the cpu detection task on scenes batches with the
real reward. The RL step (``steps.make_rl_step``) is timed whole, and its parts are timed
separately on the same batch, interleaved: sampling (the same jitted sampler, tokens fetched),
reward (``task.reward``), gradient step (the same loss and update jitted alone); "other" is
the step minus the three (host transfers, metrics; within noise it can come out negative). The
grid starts from a base cell and doubles one of L, B, N at a time; the notes give each part's
growth per doubling. With ``--plot`` (or when saving) a stacked-bar figure is written to
``benchmarks/train_breakdown.png`` (a negative "other" is drawn as 0).

**Trainer overhead** (suite ``train``): the same MLE / RL steps run by a bare Python loop and by
``train.fit``, and the per-call cost of ``nnx.jit``'s graph traversal (a jitted no-op taking the
model and optimizer) against ``jax.jit`` over their split state.

The bare loop calls the step in place (``nnx.jit``); ``fit`` runs the step's functional form
(both core steps have one), so a ratio below 1 is the traversal it saves. Where the device is
busier than the host (the MLE step on a CPU) asynchronous dispatch already hides the traversal;
where a step syncs with the host (the RL step's reward) or the device is fast (a GPU), it does
not. ``fit`` adds per step a ``batch_fn`` call, an rng ``fold_in`` and bookkeeping, and at log
intervals one device fetch; with a workdir it also writes checkpoints (asynchronously) and a
history file. This script times the *same* steps of the same model on the same batches both
ways, interleaved, after compiling outside the timed region, and reports examples/s and the
ratio (fit's time over the bare loop's; 1.0 = no overhead). Batches are precomputed so data
generation is not part of either. It also times one checkpoint save (the part that blocks
training) and one restore. The RL step's own split into sampling / reward / update is
``benchmarks/bench_sampler.py --steps``.

    python benchmarks/bench_train.py [--model cpu] [--batch 32] [--steps 20] [--no-save]
    python benchmarks/bench_train.py --quick --no-save    # smoke model, tiny grid
    python benchmarks/bench_train.py --suite train        # the trainer overhead only
"""

from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from bench_sampler import detection_bench, record_rl, time_mle, time_rl
from record import Suite

from rlcv_lib.core import checkpoint, optim, split_state, steps, train
from rlcv_lib.core.reinforce import RL_PRESETS
from rlcv_lib.models import MODEL_PRESETS, build_model
from rlcv_lib.tasks.toy.task import SortTask

HERE = Path(__file__).resolve().parent


def bare_loop(step_fn, model, opt, batches, seed=0):
    key = jax.random.key(seed)
    metrics = None
    for i, batch in enumerate(batches):
        metrics = step_fn(model, opt, batch, jax.random.fold_in(key, i))
    jax.block_until_ready(metrics)


def fit_loop(step_fn, model, opt, batches, workdir=None, ckpt_every=0):
    train.fit(model, opt, step_fn, lambda i: batches[i], num_steps=len(batches), log_every=10,
              workdir=workdir, ckpt_every=ckpt_every, progress=False)


def call_overhead(model, opt, repeats: int = 50) -> dict[str, float]:
    """Milliseconds per call of a jitted no-op that takes the model and optimizer: through
    ``nnx.jit`` (graph traversal of both objects on every call) and through ``jax.jit`` over
    their flat state (:mod:`rlcv_lib.core.split_state`, what ``fit`` runs when a step has a
    functional form)."""
    from flax import nnx

    noop = nnx.jit(lambda m, o: jnp.zeros(()))
    structure, leaves = split_state.split((model, opt))
    noop_leaves = split_state.jit_over_leaves(lambda m, o: jnp.zeros(()),
                                              returns_state=False)(structure)
    out = {}
    for name, call in (("nnx.jit", lambda: noop(model, opt)),
                       ("jax.jit over the state", lambda: noop_leaves(leaves))):
        call().block_until_ready()
        t0 = time.perf_counter()
        for _ in range(repeats):
            r = call()
        r.block_until_ready()
        out[name] = 1e3 * (time.perf_counter() - t0) / repeats
    return out


def timed(fn) -> float:
    t0 = time.perf_counter()
    fn()
    return time.perf_counter() - t0


QUICK_GRID = [(3, 2, 2), (6, 2, 2)]
QUICK_MLE_GRID = [(3, 4)]


def grids() -> tuple[list[tuple[int, int, int]], list[tuple[int, int]]]:
    """(slots, B, N) cells of the RL step: the cpu preset's detection tuning cell (its slots,
    ``tune.batch_size`` and ``rl.num_samples``), then L, B and N doubled one at a time; and
    (slots, B) cells of the MLE step: its slots and ``train.batch_size``, then each doubled."""
    from rlcv_lib.config import get_config

    cfg = get_config("cpu", task="detection")
    s, b, n = cfg.detection.num_slots, cfg.tune.batch_size, cfg.rl.num_samples
    mle_b = cfg.train.batch_size
    return ([(s, b, n), (2 * s, b, n), (s, 2 * b, n), (s, b, 2 * n)],
            [(s, mle_b), (2 * s, mle_b), (s, 2 * mle_b)])


def breakdown(args) -> tuple[Suite, dict]:
    """MLE examples/s and the RL step's parts over the grid (see the module docstring)."""
    world = "smoke" if args.quick else "cpu"
    grid, mle_grid = (QUICK_GRID, QUICK_MLE_GRID) if args.quick else grids()
    suite = Suite("train_breakdown", f"MLE examples/s and the reward-tuning step's parts "
                                     f"({args.model} model, {world} detection task, scenes)")
    benches = {}
    for slots in sorted({g[0] for g in grid} | {g[0] for g in mle_grid}):
        sizes = {g[1] for g in grid + mle_grid if g[0] == slots}
        benches[slots] = detection_bench(world, args.model, slots, sorted(sizes))
    for slots, b in mle_grid:
        m = time_mle(benches[slots], b, args.repeats)
        suite.add(f"MLE L={6 * slots} B={b}", m["examples_s"], "examples/s",
                  note=f"{m['step_s']:.3f} s/step; first call (compile) {m['first_s']:.1f} s")
    results = {}
    for slots, b, n in grid:
        r = results[(slots, b, n)] = time_rl(benches[slots], b, n, args.repeats)
        record_rl(suite, f"L={6 * slots} B={b} N={n}", r)
    base = grid[0]
    parts = ("sampling", "reward", "gradient step", "step")
    for cell, what in zip(grid[1:], ("L", "B", "N"), strict=False):
        growth = ", ".join(f"{p} x{results[cell][p] / results[base][p]:.2f}" for p in parts)
        suite.notes.append(f"doubling {what} (L={6 * cell[0]} B={cell[1]} N={cell[2]} vs the "
                           f"base L={6 * base[0]} B={base[1]} N={base[2]}): {growth}")
    suite.notes.append("the < 20% outside sampling and the gradient step of docs/design.md §6 "
                       "is a GPU target (benchmarks/bench_gpu.py, not measured yet): on this "
                       "CPU it is context only")
    suite.notes.append(f"medians of {args.repeats} interleaved runs per part; RL: REINFORCE "
                       "with the leave-one-out baseline (RLConfig defaults), detection reward "
                       "with the confidence loss")
    return suite, results


def plot(results: dict, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"L={6 * s}\nB={b} N={n}" for s, b, n in results]
    fig, ax = plt.subplots(figsize=(1.6 * len(results) + 2, 3.5))
    bottom = np.zeros(len(results))
    for part in ("sampling", "reward", "gradient step", "other"):
        v = np.array([max(r[part], 0.0) for r in results.values()])
        ax.bar(labels, v, bottom=bottom, label=part)
        bottom += v
    ax.set_ylabel("seconds per RL step")
    ax.set_title("Reward-tuning step: where the time goes")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="cpu", choices=sorted(MODEL_PRESETS))
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--rl-batch", type=int, default=8)
    ap.add_argument("--steps", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quick", action="store_true", help="smoke model, tiny grid, few steps")
    ap.add_argument("--plot", action="store_true", help="write the figure even with --no-save")
    ap.add_argument("--no-save", action="store_true")
    ap.add_argument("--suite", default="all", choices=("all", "breakdown", "train"))
    args = ap.parse_args()
    if args.quick:
        args.model, args.batch, args.rl_batch, args.steps, args.repeats = "smoke", 4, 2, 3, 1
    if args.suite in ("all", "breakdown"):
        suite, results = breakdown(args)
        suite.finish(save=not args.no_save)
        if args.plot or not args.no_save:
            plot(results, HERE / "train_breakdown.png")
    if args.suite in ("all", "train"):
        trainer_overhead(args)


def trainer_overhead(args) -> None:

    mcfg = MODEL_PRESETS[args.model]
    task = SortTask(max_numbers=8, image_size=mcfg.image_size)
    tcfg = dataclasses.replace(train.TRAIN_PRESETS["cpu"], warmup_steps=1)
    rl_cfg = RL_PRESETS["cpu"]
    model = build_model(mcfg, task, seed=0)
    opt = optim.make_optimizer(model, tcfg)
    suite = Suite("train", f"Trainer overhead: fit vs a bare loop over the same steps "
                           f"({args.model} model, toy task L={task.max_len})")

    calls = call_overhead(model, opt)
    suite.add("no-op call taking model + optimizer, nnx.jit", calls["nnx.jit"], "ms",
              note="graph traversal of both objects per call; the in-place step pays it")
    suite.add("no-op call over their flat state, jax.jit", calls["jax.jit over the state"],
              "ms", reference="nnx.jit", ratio=calls["jax.jit over the state"] / calls["nnx.jit"],
              note="what fit's functional path pays per step instead")
    for name, step_fn, bsz, unit in (
            ("MLE", steps.make_mle_step(task), args.batch, "examples/s"),
            ("RL", steps.make_rl_step(task, rl_cfg), args.rl_batch, "images/s")):
        batches = [task.batch(seed=0, step=i, batch_size=bsz) for i in range(args.steps)]
        t0 = time.perf_counter()
        bare_loop(step_fn, model, opt, batches[:2])  # compile outside the timed region: the
        fit_loop(step_fn, model, opt, batches[:2])  # in-place step, then fit's pure form
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
        suite.notes.append(f"{name}: compiling (two steps each way) {compile_s:.1f} s; medians of "
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
