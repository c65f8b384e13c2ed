"""Colorization's RL step on the cpu preset, split into its parts: sampling the codes, stage I
decoding, the reward, and the gradient step, beside the whole step (the shipped stage II and
stage I, ``tune.batch_size`` grey images × ``rl.num_samples`` samples).

The parts are timed separately (best of ``--repeats``, each after its compiling call, blocked
until ready), so they need not add up to the step: the step also moves the decoded images to the
host and back the rewards. The reward is the task's host form (NumPy float64 colourfulness with
its input check), timed beside the jitted JAX float32 colourfulness on the same decoded images,
which it must equal to 1e-6 relative.

    python benchmarks/bench_colorization_step.py [--repeats 3] [--no-save]
"""

from __future__ import annotations

import argparse

import numpy as np
from record import Suite, best_of


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--no-save", action="store_true", help="print only; leave results.json")
    args = ap.parse_args()

    import jax
    import jax.numpy as jnp
    import optax
    from flax import nnx

    from rlcv_lib.config import get_config
    from rlcv_lib.core import evaluate as ev
    from rlcv_lib.core import sampling, shipped, steps
    from rlcv_lib.tasks.colorization import pretrain as cp
    from rlcv_lib.tasks.colorization import reward as cr
    from rlcv_lib.tasks.uvim import stage2

    cfg = get_config("cpu", task="colorization")
    pre = shipped.load_or_pretrain(cp.STAGE2_RECIPE, cfg, None)
    task, model = pre.task, pre.model
    b, n = cfg.tune.batch_size, cfg.rl.num_samples
    split = ev.load_split(cfg, "validation", b)
    batch = task.batch(split.batch)
    images = jnp.asarray(batch["image"])
    spec = steps.rl_spec(task, cfg.rl)
    key = jax.random.key(0)

    def sample():
        return jax.block_until_ready(sampling.sample_jit(model, images, key, spec).tokens)

    tokens = np.asarray(sample())
    flat = jnp.asarray(task.detokenize(tokens).reshape(b * n, -1))
    ctx = jnp.asarray(np.repeat(batch["context"], n, axis=0))

    def decode():
        return jax.block_until_ready(stage2.stage1.decode_codes(task.frozen, flat, ctx))

    rgb = np.clip(np.asarray(decode()["rgb"]), -1, 1)
    jax_m = jax.jit(lambda x: cr.colourfulness(jnp.clip(x, -1, 1), xp=jnp))
    dev = jax.device_put(rgb)
    got = np.asarray(jax.block_until_ready(jax_m(dev)))
    want = cr.colourfulness_reward(rgb)
    rel = float(np.max(np.abs(got - want) / np.maximum(want, 1e-12)))
    assert rel <= 1e-6, f"JAX float32 colourfulness differs from NumPy float64: {rel:.3g}"

    live = nnx.clone(model)
    optimizer = nnx.Optimizer(live, optax.adafactor(cfg.tune.lr), wrt=nnx.Param)
    step = steps.make_rl_step(task, cfg.rl)
    rl_batch = {**batch, "tokens": tokens[:, 0]}

    def rl_step():
        m = step(live, optimizer, rl_batch, key)
        return jax.block_until_ready(m["loss"])

    rl_step()  # compiles
    t_step, _ = best_of(rl_step, args.repeats)
    t_sample, _ = best_of(sample, args.repeats)
    t_decode, _ = best_of(decode, args.repeats)
    t_reward, _ = best_of(lambda: task.reward(tokens, batch), args.repeats)
    t_numpy, _ = best_of(lambda: cr.colourfulness_reward(rgb), args.repeats)
    t_jax, _ = best_of(lambda: jax.block_until_ready(jax_m(dev)), args.repeats)

    suite = Suite("colorization_step", f"Colorization's RL step, cpu preset, B={b}×N={n}: "
                                       f"its parts timed alone")
    suite.add("RL step (sample, decode, reward, update)", t_step * 1e3, "ms/step")
    for label, t in (("sampling the codes (jit)", t_sample),
                     ("stage I decoding of the samples (jit)", t_decode),
                     ("reward: decoding + NumPy float64 colourfulness (host)", t_reward),
                     ("NumPy float64 colourfulness alone (checked)", t_numpy)):
        suite.add(label, t * 1e3, "ms/step", note=f"{t / t_step:.0%} of the step")
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
