"""Colourfulness speed: the reward as one array program, NumPy float64 (the host reward and test
oracle) against jitted JAX float32 (the RL step's form), on the same RL batch.

Images: the first ``--images`` test scenes of the cpu world, each as ``--samples`` variants with
its chroma scaled around its BT.601 luma by a factor drawn uniformly in [0, 2] and clipped to
[−1, 1] (sampled-looking colourizations, from grey to oversaturated), at each ``--size`` (nearest
resize of the 64² scenes; 512² is the paper's resolution).

Both forms are checked to agree to 1e-6 relative on every image before anything is timed.
Timings: best of ``--repeats``; JAX on arrays already on the device, after its compiling call,
blocked until ready. The NumPy reward includes its input check (:func:`check_images`), timed
also alone.

    python benchmarks/bench_colorization_reward.py [--images 16 --samples 8 --size 64 512]
        [--repeats 3] [--no-save]
"""

from __future__ import annotations

import argparse

import numpy as np
from record import Suite, best_of

from rlcv_lib.tasks.colorization import reward as cr

LUMA = np.array([0.299, 0.587, 0.114])  # BT.601, the scenes palette's luma


def make_batch(images: int, samples: int, size: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(float32 [images·samples, size, size, 3] on [−1, 1], the scenes themselves float32
    [images, size, size, 3]) from the cpu world's test scenes."""
    from rlcv_lib.data import scenes

    world = scenes.WORLD_PRESETS["cpu"]
    rng = np.random.default_rng(seed)
    out, truth = [], []
    for i in range(images):
        rgb = scenes.example(world, "test", i)["image"].astype(np.float64) / 127.5 - 1.0
        idx = np.arange(size) * rgb.shape[0] // size  # nearest resize to size²
        rgb = rgb[idx][:, idx]
        truth.append(rgb)
        grey = rgb @ LUMA  # [H,W]
        for _ in range(samples):
            f = rng.uniform(0.0, 2.0)
            out.append(np.clip(grey[..., None] + f * (rgb - grey[..., None]), -1.0, 1.0))
    return np.stack(out).astype(np.float32), np.stack(truth).astype(np.float32)


def run(images: int, samples: int, size: int, repeats: int, seed: int
        ) -> list[tuple[str, float]]:
    """(label, seconds per batch) of each form at one size, after checking they agree."""
    import jax
    import jax.numpy as jnp

    batch, scenes_rgb = make_batch(images, samples, size, seed)
    fn = jax.jit(lambda x: cr.colourfulness(x, xp=jnp))
    dev = jax.device_put(batch)
    want = cr.colourfulness_reward(batch)  # float64 of the same float32 pixels
    got = np.asarray(jax.block_until_ready(fn(dev)))  # compiles
    rel = np.abs(got - want) / np.maximum(want, 1e-12)
    assert rel.max() <= 1e-6, f"JAX float32 differs from NumPy float64: {rel.max():.3g} relative"
    truth = cr.colourfulness_reward(scenes_rgb)
    print(f"{size}²: {len(batch)} images ({images} scenes × {samples}), JAX float32 equals "
          f"NumPy float64 to {rel.max():.2g} relative (max); M on [-1, 1] from {want.min():.3f} "
          f"to {want.max():.3f}; the {images} scenes themselves: mean {truth.mean():.3f} "
          f"(0–255: {cr.to_255_scale(truth.mean()):.1f})")
    b64 = batch.astype(np.float64)
    t_np, _ = best_of(lambda: cr.colourfulness_reward(batch), repeats)
    t_prog, _ = best_of(lambda: cr.colourfulness(b64), repeats)
    t_check, _ = best_of(lambda: cr.check_images(batch), repeats)
    t_jax, _ = best_of(lambda: jax.block_until_ready(fn(dev)), repeats)
    return [("NumPy float64 colourfulness_reward (checked)", t_np),
            ("NumPy float64 array program alone", t_prog),
            ("input check alone (check_images)", t_check),
            ("JAX float32 (jit)", t_jax)]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--images", type=int, default=16)
    ap.add_argument("--samples", type=int, default=8)
    ap.add_argument("--size", type=int, nargs="+", default=[64, 512],
                    help="image sides to time (64: the cpu world; 512: the paper)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-save", action="store_true", help="print only; leave results.json")
    args = ap.parse_args()
    suite = Suite("colorization_reward", "Colourfulness: jitted JAX float32 vs NumPy float64 "
                                         "on the same RL batch")
    for size in args.size:
        rows = dict(run(args.images, args.samples, size, args.repeats, args.seed))
        n = args.images * args.samples
        ref = rows["NumPy float64 colourfulness_reward (checked)"]
        for label, t in rows.items():
            kw: dict = {}
            if label.startswith("JAX"):
                kw = dict(reference="NumPy float64 colourfulness_reward", ratio=ref / t)
            suite.add(f"{label}, {size}² B={args.images}×{args.samples}", t * 1e3, "ms/batch",
                      note=f"{t / n * 1e6:.3g} µs/image", **kw)
    suite.notes += [
        "outputs agree on every image before timing (JAX float32 vs NumPy float64, 1e-6 "
        "relative)",
        "images: cpu-world test scenes with chroma scaled by U[0, 2] around BT.601 luma; "
        "sizes above 64² by nearest resize",
        "the checked NumPy reward = input check + cast of the float32 batch to float64 + the "
        "array program",
        f"best of {args.repeats} runs; JAX on device arrays after its compiling call"]
    suite.finish(save=not args.no_save)


if __name__ == "__main__":
    main()
