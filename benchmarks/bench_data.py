"""Data speed: scene generation and input-pipeline throughput vs what CPU training consumes.

Prints one table; every ratio is measured in this run. The consumer reference is the MLE
step of the cpu detection model (docs/design.md §6: about 3 steps/s at batch 32 on the 2-core
CPU), i.e. about 96 images/s; a ratio above 1 means data is not the bottleneck.

    python benchmarks/bench_data.py [--preset cpu] [--images 512] [--batch 32] [--steps 30]
"""

from __future__ import annotations

import argparse
import tempfile
import time

from record import Suite

from rlcv_lib.data import memory, pipeline, scenes

MLE_STEPS_PER_S = 3.0  # docs/design.md §6, cpu detection model at batch 32


def timed(fn, repeat: int = 1) -> float:
    t0 = time.perf_counter()
    for _ in range(repeat):
        fn()
    return (time.perf_counter() - t0) / repeat


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--images", type=int, default=512)
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--tfds", action="store_true", help="also time the TFDS path")
    ap.add_argument("--no-save", action="store_true", help="print only; leave results.json")
    args = ap.parse_args()
    world = scenes.WORLD_PRESETS[args.preset]
    n, b = args.images, args.batch
    consume = MLE_STEPS_PER_S * b  # images/s the MLE step consumes
    rows = []

    def row(name: str, images_per_s: float) -> None:
        rows.append((name, images_per_s, images_per_s / b, images_per_s / consume))

    t = timed(lambda: [scenes.generate(world, "train", i) for i in range(n)])
    row("generate scenes (1 process)", n / t)
    t = timed(lambda: [scenes.example(world, "train", i) for i in range(n)])
    row("generate example dicts", n / t)

    with tempfile.TemporaryDirectory() as cache:
        t0 = time.perf_counter()
        ds = memory.load_split(world, "train", cache_dir=cache, size=n)
        row("build + cache split (.npy)", n / (time.perf_counter() - t0))
        memory._MEMO.clear()
        t0 = time.perf_counter()
        ds = memory.load_split(world, "train", cache_dir=cache, size=n)
        _ = [ds[i] for i in range(n)]
        row("load cached split (mmap) + read all", n / (time.perf_counter() - t0))

        steps = args.steps
        lazy = pipeline.Loader(memory.SceneSource(world, "train"), b, seed=0)
        t = timed(lambda: [lazy.batch(s) for s in range(steps)])
        row(f"batches, generated on the fly (B={b})", steps * b / t)
        cached = pipeline.Loader(ds, b, seed=0)
        t = timed(lambda: [cached.batch(s) for s in range(steps)])
        row(f"batches, cached split (B={b})", steps * b / t)
        resized = pipeline.Loader(ds, b, seed=0, image_size=2 * world.image_size)
        t = timed(lambda: [resized.batch(s) for s in range(steps)])
        row(f"batches, cached + resize x2 (B={b})", steps * b / t)

        # A consumer that works like the MLE step (1/3 s, GIL released as in XLA) while the
        # prefetch thread generates scenes on the fly: how long does it wait for data?
        waits = []
        sim_steps = max(4, steps // 5)
        with pipeline.Prefetcher(lazy.batch, depth=2) as p:
            for s in range(sim_steps):
                t0 = time.perf_counter()
                p(s)
                waits.append(time.perf_counter() - t0)
                time.sleep(1 / MLE_STEPS_PER_S)
        wait = sum(waits[1:]) / (len(waits) - 1)  # the first batch has no head start
        prefetch_note = (f"on-the-fly generation + prefetch thread, consumer at "
                         f"{MLE_STEPS_PER_S:g} steps/s: waits {1000 * wait:.1f} ms per "
                         f"{1000 / MLE_STEPS_PER_S:.0f} ms step")

        if args.tfds:
            from rlcv_lib.data import adapters

            small = scenes.dataclasses.replace(world, train_size=n, validation_size=8,
                                               test_size=8)
            t0 = time.perf_counter()
            src = adapters.scenes_source(small, "train", cache)
            row("TFDS prepare (PNG, array_record)", n / (time.perf_counter() - t0))
            tf_loader = pipeline.Loader(src, b, seed=0)
            t = timed(lambda: [tf_loader.batch(s) for s in range(steps)])
            row(f"batches, TFDS as_data_source (B={b})", steps * b / t)

    suite = Suite("data", f"scenes generation and input pipeline ({args.preset} preset, "
                          f"{world.image_size}x{world.image_size}) vs what CPU MLE consumes")
    need = f"MLE need {consume:.0f} images/s"
    for name, ips, bps, ratio in rows:
        suite.add(name, ips, "images/s", reference=need, ratio=ratio,
                  target=">= 1x MLE need", met=ratio >= 1, note=f"{bps:.1f} batches/s")
    suite.notes += [f"MLE consumes {consume:.0f} images/s ({MLE_STEPS_PER_S:g} steps/s x {b}, "
                    "docs/design.md §6)", prefetch_note]
    suite.finish(save=not args.no_save)


if __name__ == "__main__":
    main()
