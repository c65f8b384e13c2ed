"""The benchmark suite's JAX parts on one GPU, in under 8 minutes, tables written to a file.

**Not yet measured on a GPU.** This script has only been run end to end on the 2-core CPU with
``--quick`` (tiny shapes); its GPU numbers, and whether the GPU targets below are met, are
unknown until someone runs it on a GPU and records the file it writes.

What it measures (docs/design.md §6), each in the same run:

1. **Sampler vs the parameter-bandwidth floor** at ≥ 256 sequences: the KV-cache sampler of the
   ``gpu`` preset (L=192, the gpu detection task's length) and of the paper's detection model
   (``paper``: ViT-B/16 at 1280², 6-layer decoder, L=600, bfloat16). The floor is the time to
   read the decoder's parameters from HBM once per decode step::

       floor_s = decoder parameter bytes × L / bandwidth

   (the encoder runs once per image and is left out of the floor but not of the measured
   call: the paper cell uses 8 images × 32 samples to keep the 1280² encoding small;
   ``--bandwidth-gbs`` defaults to the H100 SXM's 3350 GB/s or the H200's 4800 GB/s by device
   name). Target: within 3× of the floor.
   Also the KV-cache loop against recomputing the prefix (same inputs, tokens checked equal).
2. **Training**: MLE examples/s and the reward-tuning step of the gpu detection task (scenes
   images, the real reward) split into sampling, reward and gradient step (the helpers of
   ``bench_sampler.py``). Target: < 20% of the step outside sampling and the gradient step.

It imports only jax, flax, optax, orbax (through the package), numpy and the standard library
(data from the in-memory scenes path; no tfds, pycocotools, pycocoevalcap, papermill, tqdm or
matplotlib) and checks that at the end. Without a GPU it refuses to run the full sizes (exit 0,
so ``make bench`` on a CPU machine skips it)::

    python benchmarks/bench_gpu.py [--out benchmarks/gpu_results.md] [--bandwidth-gbs 3350]
    python benchmarks/bench_gpu.py --quick          # tiny shapes: runs anywhere (CPU check)
    python benchmarks/bench_gpu.py --out "$OUT/gpu_results.md"   # on a lent GPU machine
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

from bench_sampler import detection_bench, record_rl, time_mle, time_rl
from record import Suite

HERE = Path(__file__).resolve().parent
BANDWIDTH_GBS = {"H100": 3350.0, "H200": 4800.0}  # HBM3 / HBM3e, SXM parts
FORBIDDEN = ("tensorflow_datasets", "tensorflow", "pycocotools", "pycocoevalcap", "papermill",
             "tqdm", "matplotlib")
TARGET_FLOOR_X = 3.0
TARGET_OUTSIDE = 0.20


@dataclasses.dataclass(frozen=True)
class Sizes:
    """What one run measures: sampler cells and the training grid."""

    floor_cells: tuple  # (model preset, L, vocab, images B, samples N)
    recompute_cell: tuple  # (model preset, L, vocab, B, N): cache vs recompute
    world: str  # scenes world / detection preset of the training part
    model: str  # model preset of the training part
    slots: int
    mle_batch: int
    rl_cells: tuple  # (B, N)


FULL = Sizes(floor_cells=(("gpu", 192, 140, 32, 8), ("gpu", 192, 140, 128, 8),
                          ("paper", 600, 1100, 8, 32)),
             recompute_cell=("gpu", 192, 140, 2, 8), world="gpu", model="gpu", slots=32,
             mle_batch=128, rl_cells=((32, 8), (64, 8)))
QUICK = Sizes(floor_cells=(("smoke", 12, 50, 2, 2),), recompute_cell=("smoke", 12, 50, 1, 2),
              world="smoke", model="smoke", slots=2, mle_batch=4, rl_cells=((2, 2),))


def bandwidth(args, device_kind: str) -> tuple[float, str]:
    if args.bandwidth_gbs:
        return args.bandwidth_gbs, "--bandwidth-gbs"
    for name, bw in BANDWIDTH_GBS.items():
        if name in device_kind:
            return bw, f"{name} default"
    return BANDWIDTH_GBS["H100"], f"H100 default (device {device_kind!r} not recognised)"


def sampler_cell(preset: str, length: int, vocab: int, b: int, n: int, use_cache: bool = True,
                 repeats: int = 2) -> dict:
    """Compile and time ``sampling.sample`` for ``b`` images × ``n`` samples of ``length``
    tokens; returns the timings, the tokens of key 0, and the decoder's parameter bytes."""
    import jax
    import numpy as np
    from flax import nnx

    from rlcv_lib.core import sampling
    from rlcv_lib.models import MODEL_PRESETS, EncoderDecoder

    cfg = dataclasses.replace(MODEL_PRESETS[preset], max_len=length, vocab_size=vocab)
    model = EncoderDecoder(cfg, rngs=nnx.Rngs(0))
    graphdef, state = nnx.split(model)
    spec = sampling.DecodeSpec(max_len=length, pad_id=0, eos_id=None, num_samples=n,
                               use_cache=use_cache)
    fn = jax.jit(lambda st, x, k: sampling.sample(nnx.merge(graphdef, st), x, k, spec).tokens)
    images = jax.random.uniform(jax.random.key(1), (b, cfg.image_size, cfg.image_size, 3))
    t0 = time.perf_counter()
    compiled = fn.lower(state, images, jax.random.key(0)).compile()
    compile_s = time.perf_counter() - t0
    tokens = np.asarray(compiled(state, images, jax.random.key(0)))
    times = []
    for r in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(state, images, jax.random.key(r + 1)))
        times.append(time.perf_counter() - t0)
    dec_bytes = sum(x.nbytes for x in jax.tree.leaves(nnx.state(model.decoder, nnx.Param)))
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return dict(compile_s=compile_s, call_s=min(times), tokens=tokens, dec_bytes=dec_bytes,
                params=params, tok_s=b * n * length / min(times))


def sampler_suite(sizes: Sizes, args, bw_gbs: float, bw_src: str, deadline: float) -> Suite:
    suite = Suite("gpu_sampler", "KV-cache sampler vs the parameter-bandwidth floor and vs "
                                 "recomputing the prefix")
    for preset, length, vocab, b, n in sizes.floor_cells:
        label = f"{preset} model L={length} seqs={b * n}"
        if time.perf_counter() > deadline:
            suite.notes.append(f"{label}: skipped (time budget spent)")
            continue
        r = sampler_cell(preset, length, vocab, b, n, repeats=args.repeats)
        floor = r["dec_bytes"] * length / (bw_gbs * 1e9)
        ratio = r["call_s"] / floor
        suite.add(f"KV cache {label}", r["call_s"], "s/call", reference="bandwidth floor",
                  ratio=ratio, target=f"<= {TARGET_FLOOR_X:g}x floor",
                  met=ratio <= TARGET_FLOOR_X,
                  note=f"{r['tok_s']:.0f} tokens/s; floor {1e3 * floor:.2f} ms = "
                       f"{r['dec_bytes'] / 2**20:.1f} MiB decoder params x {length} steps / "
                       f"{bw_gbs:g} GB/s; {r['params'] / 1e6:.1f}M params; compile "
                       f"{r['compile_s']:.1f} s")
        print(f"  {label}: {r['tok_s']:.0f} tokens/s, {ratio:.2f}x floor", flush=True)
    preset, length, vocab, b, n = sizes.recompute_cell
    if time.perf_counter() < deadline:
        cache = sampler_cell(preset, length, vocab, b, n, True, args.repeats)
        rec = sampler_cell(preset, length, vocab, b, n, False, 1)
        agree = float((cache["tokens"] == rec["tokens"]).mean())
        if agree < 1.0:
            raise SystemExit(f"KV-cache and recomputing loops drew different tokens "
                             f"({agree:.1%} equal): the ratio would be void")
        label = f"{preset} model L={length} seqs={b * n}"
        suite.add(f"recompute {label}", rec["tok_s"], "tokens/s",
                  note=f"compile {rec['compile_s']:.1f} s")
        speedup = cache["tok_s"] / rec["tok_s"]
        suite.add(f"KV cache {label}", cache["tok_s"], "tokens/s", reference="recompute",
                  ratio=speedup, target=">= 5x recompute" if length >= 100 else None,
                  met=speedup >= 5 if length >= 100 else None,
                  note="same tokens as the recomputing loop")
    suite.notes.append(f"bandwidth {bw_gbs:g} GB/s ({bw_src}); floor = decoder parameter bytes "
                       "(as stored) x decode steps / bandwidth; the measured call also encodes "
                       "the images; best of the timed calls")
    return suite


def training_suite(sizes: Sizes, args, deadline: float) -> Suite:
    suite = Suite("gpu_train", f"MLE and the reward-tuning step's parts ({sizes.model} model, "
                               f"{sizes.world} detection task L={6 * sizes.slots})")
    batch_sizes = sorted({sizes.mle_batch} | {b for b, _ in sizes.rl_cells})
    bench = detection_bench(sizes.world, sizes.model, sizes.slots, batch_sizes)
    m = time_mle(bench, sizes.mle_batch, args.repeats)
    suite.add(f"MLE B={sizes.mle_batch}", m["examples_s"], "examples/s",
              note=f"{m['step_s'] * 1e3:.1f} ms/step; first call {m['first_s']:.1f} s")
    for b, n in sizes.rl_cells:
        if time.perf_counter() > deadline:
            suite.notes.append(f"RL B={b} N={n}: skipped (time budget spent)")
            continue
        r = time_rl(bench, b, n, args.repeats)
        label = f"B={b} N={n}"
        record_rl(suite, label, r)
        outside = 1 - (r["sampling"] + r["gradient step"]) / r["step"]
        suite.add(f"  outside sampling + gradient step {label}", outside, "fraction of step",
                  target=f"< {TARGET_OUTSIDE:.0%}", met=outside < TARGET_OUTSIDE)
    return suite


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="tiny shapes (runs on a CPU)")
    ap.add_argument("--bandwidth-gbs", type=float, default=0.0,
                    help="HBM bandwidth in GB/s (default by device: H100 3350, H200 4800)")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--budget-s", type=float, default=420.0,
                    help="start no new cell after this many seconds")
    ap.add_argument("--out", default=str(HERE / "gpu_results.md"),
                    help="markdown tables; a .json of the same rows is written beside it")
    ap.add_argument("--no-save", action="store_true", help="print only; write no file")
    args = ap.parse_args()
    import jax

    dev = jax.devices()[0]
    if dev.platform != "gpu" and not args.quick:
        print(f"bench_gpu: no GPU (JAX backend {dev.platform!r}); skipped. Use --quick to "
              "check the script on a CPU.")
        return
    start = time.perf_counter()
    deadline = start + args.budget_s
    sizes = QUICK if args.quick else FULL
    if args.quick:
        args.repeats = 1
    kind = getattr(dev, "device_kind", dev.platform)
    bw_gbs, bw_src = bandwidth(args, kind)
    suites = [sampler_suite(sizes, args, bw_gbs, bw_src, deadline),
              training_suite(sizes, args, deadline)]
    if args.quick:
        for s in suites:
            s.notes.append(f"--quick on {dev.platform}: tiny shapes that check the script; "
                           "no row here is a GPU measurement and no target is judged by it")
    loaded = sorted(m for m in FORBIDDEN if m in sys.modules)
    if loaded:
        raise SystemExit(f"bench_gpu imported {loaded}, which the GPU image does not have")
    head = (f"# GPU benchmark\n\n{kind} ({dev.platform}), jax {jax.__version__}, "
            f"{'--quick ' if args.quick else ''}{time.perf_counter() - start:.0f} s in all; "
            f"imports checked: none of {', '.join(FORBIDDEN)}\n")
    text = head + "\n" + "\n".join(s.table() for s in suites)
    print(text)
    if not args.no_save:
        out = Path(args.out)
        out.write_text(text)
        rows = {s.name: {"title": s.title, "notes": s.notes,
                         "measurements": [dataclasses.asdict(m) for m in s.rows]}
                for s in suites}
        out.with_suffix(".json").write_text(json.dumps(
            {"device": kind, "platform": dev.platform, "quick": args.quick, "suites": rows},
            indent=1) + "\n")
        print(f"wrote {out} and {out.with_suffix('.json')}")


if __name__ == "__main__":
    main()
