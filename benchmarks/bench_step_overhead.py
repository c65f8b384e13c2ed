"""Host time per training step, this checkout against an earlier commit, in the same run.

What ``train.fit`` pays per step outside the device work: the batch, the rng, the step's
Python (the pure step's call, the RL step's host reward and transfers), bookkeeping. It is
measured where the device work is small (the smoke-size model on the toy task), so the host
part dominates; the same steps are timed in the same way in both checkouts:

* ``MLE step through fit``, ``RL step through fit``: milliseconds per step of ``fit`` running
  the core step (after two compiling steps, median of ``--repeats`` runs of ``--steps``);
* ``MLE step called in place``: the notebooks' ``step(model, optimizer, batch, rng)``.

The earlier commit (``--against``, default the commit before the pure donated step) is checked
out in a temporary git worktree and imported from there in a subprocess; the two checkouts
alternate, run after run, so both see the same machine load. The ratio is this checkout's time
over the earlier one's (below 1: faster).

    python benchmarks/bench_step_overhead.py [--against 22bbc9b] [--repeats 5] [--no-save]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from record import Suite

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent

WORKER = r"""
import json, sys, time
import jax
try:  # this layout
    from rlcv_lib.core import optim, steps, train
    from rlcv_lib.core.reinforce import RL_PRESETS
    from rlcv_lib.tasks.toy.task import SortTask
except ImportError:  # the flat layout before it
    from rlcv_lib import optim, steps, train
    from rlcv_lib.reinforce import RL_PRESETS
    from rlcv_lib.tasks.toy import SortTask
from rlcv_lib.models import MODEL_PRESETS, build_model

n = int(sys.argv[1])
mcfg = MODEL_PRESETS["smoke"]
task = SortTask(max_numbers=4, image_size=mcfg.image_size)
tcfg = train.TRAIN_PRESETS["smoke"]
batches = [task.batch(seed=0, step=i, batch_size=8) for i in range(n + 2)]
out = {}
for name, make in (("MLE", lambda: steps.make_mle_step(task)),
                   ("RL", lambda: steps.make_rl_step(task, RL_PRESETS["smoke"]))):
    step = make()
    model = build_model(mcfg, task, seed=0)
    opt = optim.make_optimizer(model, tcfg)
    train.fit(model, opt, step, lambda i: batches[i], num_steps=2, progress=False)  # compile
    t0 = time.perf_counter()
    train.fit(model, opt, step, lambda i: batches[i], num_steps=n, log_every=n,
              progress=False)
    out[f"{name} step through fit"] = 1e3 * (time.perf_counter() - t0) / n
    if name == "MLE":
        jax.block_until_ready([step(model, opt, batches[i], jax.random.key(i))
                               for i in range(2)])  # compile
        t0 = time.perf_counter()
        metrics = None
        for i in range(n):
            metrics = step(model, opt, batches[i], jax.random.key(i))
        jax.block_until_ready(metrics)
        out["MLE step called in place"] = 1e3 * (time.perf_counter() - t0) / n
print(json.dumps(out))
"""


def run_worker(tree: Path, steps: int) -> dict[str, float]:
    env = dict(os.environ, PYTHONPATH=str(tree), JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", WORKER, str(steps)], env=env, cwd=tree,
                          capture_output=True, text=True, timeout=900)
    if proc.returncode:
        raise RuntimeError(f"worker in {tree} failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--against", default="22bbc9b", help="the earlier commit")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--no-save", action="store_true")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        old = Path(tmp) / "old"
        subprocess.run(["git", "worktree", "add", "--detach", str(old), args.against],
                       cwd=ROOT, check=True, capture_output=True)
        try:
            new_runs, old_runs = [], []
            for _ in range(args.repeats):  # alternating: both see the same load
                new_runs.append(run_worker(ROOT, args.steps))
                old_runs.append(run_worker(old, args.steps))
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(old)], cwd=ROOT,
                           capture_output=True)
    suite = Suite("step_overhead", f"Host time per step, this checkout against {args.against} "
                                   f"(smoke model, toy task, B=8)")
    for key in new_runs[0]:
        new = float(np.median([r[key] for r in new_runs]))
        old = float(np.median([r[key] for r in old_runs]))
        suite.add(f"{key}, {args.against}", old, "ms/step")
        suite.add(f"{key}, this checkout", new, "ms/step", reference=args.against,
                  ratio=new / old, target="ratio <= 1.05 (no regression)", met=new / old <= 1.05)
    suite.notes.append(f"medians of {args.repeats} alternating runs of {args.steps} steps per "
                       f"checkout, each after two compiling steps")
    suite.finish(save=not args.no_save)


if __name__ == "__main__":
    main()
