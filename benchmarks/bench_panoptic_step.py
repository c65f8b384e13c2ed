"""Panoptic's RL step on the cpu preset, split into its parts: sampling the codes, stage I
decoding, the reward, and the gradient step, beside the whole step (the shipped stage II and
stage I, ``tune.batch_size`` images × ``rl.num_samples`` samples).

The parts are timed separately (``uvim_step.py``: best of ``--repeats``, each after its
compiling call, blocked until ready), so they need not add up to the step. The reward is the
task's host form: stage I decoding, the decoding of its logits into segments
(:func:`~rlcv_lib.tasks.panoptic.task.decode_panoptic`, NumPy) and the per-image PQ (NumPy
float64 with its input check), the last two also timed alone, and the PQ beside its jitted JAX
float32 form on the same segments, which it must equal to 1e-6.

    python benchmarks/bench_panoptic_step.py [--repeats 3] [--no-save]
"""

from __future__ import annotations

import argparse

import numpy as np
import uvim_step
from record import Suite, best_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-save", action="store_true", help="print only; leave results.json")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp

    from rlcv_lib.tasks.panoptic import pretrain as pp
    from rlcv_lib.tasks.panoptic import reward as pr

    parts = uvim_step.measure("panoptic", pp.STAGE2_RECIPE, args.repeats)
    b, n = parts.cfg.tune.batch_size, parts.cfg.rl.num_samples
    pred_map, pred_cat = pp.segments(parts.outputs)
    gt = {k: np.repeat(parts.batch[k], n, axis=0) for k in pp.GROUND_TRUTH}
    c = parts.batch["semantics"].shape[-1] - 1
    args_pq = (pred_map, pred_cat, gt["gt_map"], gt["gt_category"], gt["gt_crowd"],
               gt["gt_area"])
    want = pr.pq_reward(*args_pq, c)
    jax_pq = jax.jit(lambda *a: pr.per_image_pq(*a, c, xp=jnp))
    dev = [jax.device_put(a) for a in args_pq]
    got = np.asarray(jax.block_until_ready(jax_pq(*dev)))
    err = float(np.max(np.abs(got - want)))
    assert err <= 1e-6, f"JAX float32 PQ differs from NumPy float64: {err:.3g}"
    t_segments, _ = best_of(lambda: pp.segments(parts.outputs), args.repeats)
    t_numpy, _ = best_of(lambda: pr.pq_reward(*args_pq, c), args.repeats)
    t_jax, _ = best_of(lambda: jax.block_until_ready(jax_pq(*dev)), args.repeats)

    suite = Suite("panoptic_step", f"Panoptic's RL step, cpu preset, B={b}×N={n}: its parts "
                                   f"timed alone")
    uvim_step.add_parts(suite, parts, "reward: decoding + segments + NumPy PQ (host)")
    for label, t in (("logits to segments alone (NumPy)", t_segments),
                     ("NumPy float64 per-image PQ alone (checked)", t_numpy)):
        suite.add(label, t * 1e3, "ms/step", note=f"{t / parts.step:.0%} of the step")
    suite.add("JAX float32 per-image PQ alone (jit)", t_jax * 1e3, "ms/step",
              reference="NumPy float64 per-image PQ alone", ratio=t_numpy / t_jax)
    suite.notes += [
        f"JAX float32 PQ equals the NumPy float64 reward to {err:.2g} (max over the {b * n} "
        f"decoded samples)",
        "parts timed alone, best of each; the gradient step is the rest of the RL step",
        f"best of {args.repeats} runs after each part's compiling call"]
    suite.finish(save=not args.no_save)


if __name__ == "__main__":
    main()
