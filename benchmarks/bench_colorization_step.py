"""Colorization's RL step on the cpu preset, split into its parts: sampling the codes, stage I
decoding, the reward, and the gradient step, beside the whole step (the shipped stage II and
stage I, ``tune.batch_size`` grey images × ``rl.num_samples`` samples).

The parts are timed separately (``uvim_step.py``: best of ``--repeats``, each after its
compiling call, blocked until ready), so they need not add up to the step: the step also moves
the decoded images to the host and back the rewards. The reward is the task's host form (NumPy
float64 colourfulness with its input check), timed beside the jitted JAX float32 colourfulness
on the same decoded images, which it must equal to 1e-6 relative.

    python benchmarks/bench_colorization_step.py [--repeats 3] [--no-save]
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

    from rlcv_lib.tasks.colorization import pretrain as cp
    from rlcv_lib.tasks.colorization import reward as cr

    parts = uvim_step.measure("colorization", cp.STAGE2_RECIPE, args.repeats)
    b, n = parts.cfg.tune.batch_size, parts.cfg.rl.num_samples
    rgb = np.clip(parts.outputs["rgb"], -1, 1)
    jax_m = jax.jit(lambda x: cr.colourfulness(jnp.clip(x, -1, 1), xp=jnp))
    dev = jax.device_put(rgb)
    got = np.asarray(jax.block_until_ready(jax_m(dev)))
    want = cr.colourfulness_reward(rgb)
    rel = float(np.max(np.abs(got - want) / np.maximum(want, 1e-12)))
    assert rel <= 1e-6, f"JAX float32 colourfulness differs from NumPy float64: {rel:.3g}"
    t_numpy, _ = best_of(lambda: cr.colourfulness_reward(rgb), args.repeats)
    t_jax, _ = best_of(lambda: jax.block_until_ready(jax_m(dev)), args.repeats)

    suite = Suite("colorization_step", f"Colorization's RL step, cpu preset, B={b}×N={n}: "
                                       f"its parts timed alone")
    uvim_step.add_parts(suite, parts, "reward: decoding + NumPy float64 colourfulness (host)")
    suite.add("NumPy float64 colourfulness alone (checked)", t_numpy * 1e3, "ms/step",
              note=f"{t_numpy / parts.step:.0%} of the step")
    suite.add("JAX float32 colourfulness alone (jit)", t_jax * 1e3, "ms/step",
              reference="NumPy float64 colourfulness alone", ratio=t_numpy / t_jax)
    suite.notes += [
        f"JAX float32 colourfulness equals the NumPy float64 reward to {rel:.2g} relative "
        f"(max over the {b * n} decoded samples)",
        "parts timed alone, best of each; the gradient step is the rest of the RL step",
        f"best of {args.repeats} runs after each part's compiling call"]
    suite.finish(save=not args.no_save)


if __name__ == "__main__":
    main()
