"""Sampler speed: KV-cache decoding vs recomputing the whole prefix at every step.

Each cell runs in its own subprocess under a time limit (a cell that runs out is reported as
such), times ``jit(...).lower().compile()`` separately from the steady-state calls, and counts
tokens as sequences × L (fixed length, no EOS). Ratios compare the two loops at the same
(L, sequences) on the same images, parameters and key; before timing, every recompute cell
checks that both loops draw the same tokens (``sampling.sample`` keys step t by
``fold_in(rng, t)``). Run from the repository root::

    python benchmarks/bench_sampler.py                 # cpu-preset model, the default cells
    python benchmarks/bench_sampler.py --quick         # a smaller set of cells
    python benchmarks/bench_sampler.py --steps         # MLE / RL step breakdown only

docs/design.md §6 targets checked here: ≥ 10k tokens/s for the cpu detection model at its
sequence length (L=36: 6 slots) at 256 sequences, and ≥ 5× recomputing the prefix at 100+ tokens.
The cells: L=24 and 36 (the cpu captioning and detection sequences), 108 and 600 (the gpu
preset's 18 slots, the paper's 100).

``--steps`` times the MLE step and splits the reward-tuning step of the cpu detection task
(scenes images and ground truth, the real reward) into sampling, reward and gradient step; the
grid over L, B and N is ``benchmarks/bench_train.py``. The helpers here import JAX lazily so
that ``bench_train.py`` and ``bench_gpu.py`` can reuse them.
"""

from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import statistics
import subprocess
import sys
import time

from record import Suite


@functools.cache
def cpu_detection_shape() -> tuple[int, int]:
    """(vocabulary, L) of the cpu preset's detection task: the tokens/s target's model (imports
    the task, hence JAX, on first use only)."""
    from rlcv_lib.config import get_config
    from rlcv_lib.tasks.detection.task import DetectionTask

    cfg = get_config("cpu", task="detection")
    task = DetectionTask(cfg.detection, cfg.world.thing_classes)
    return task.vocab_size, task.max_len


def cells(quick: bool) -> list[tuple[bool, int, int, int]]:
    """(use_cache, L, sequences, unroll): L=24 (the cpu captioning sequence), the cpu detection
    sequence, 108 and 600; ``quick``: three cells at the detection length."""
    L = cpu_detection_shape()[1]
    if quick:
        return [(True, L, 16, 1), (False, L, 16, 1), (True, L, 256, 1)]
    return [(True, 24, 256, 1), (True, 24, 16, 1), (False, 24, 16, 1),
            (True, L, 256, 1), (True, L, 256, 6), (True, L, 16, 1), (False, L, 16, 1),
            (True, 108, 256, 1), (True, 108, 16, 1), (False, 108, 16, 1),
            (True, 600, 64, 1), (True, 600, 4, 1), (False, 600, 4, 1)]


TARGET_TOK_S = 10_000  # docs/design.md §6: cpu detection model, 256 sequences
TARGET_SPEEDUP = 5.0  # docs/design.md §6: cache ÷ recompute at 100+ tokens


def run_cell(preset: str, vocab: int, use_cache: bool, length: int, seqs: int, unroll: int,
             repeats: int) -> dict:
    """One sampler cell: compile time, best call time, tokens/s (and, for a recomputing cell,
    whether the KV-cache loop draws the same tokens from the same inputs)."""
    import jax
    import numpy as np
    from flax import nnx

    from rlcv_lib.core import sampling
    from rlcv_lib.models import MODEL_PRESETS, EncoderDecoder

    cfg = dataclasses.replace(MODEL_PRESETS[preset], max_len=length, vocab_size=vocab)
    model = EncoderDecoder(cfg, rngs=nnx.Rngs(0))
    n = min(8, seqs)
    b = seqs // n
    graphdef, state = nnx.split(model)

    def compiled_sampler(cache: bool):
        spec = sampling.DecodeSpec(max_len=length, pad_id=0, eos_id=None, num_samples=n,
                                   use_cache=cache, unroll=unroll)
        fn = jax.jit(lambda st, x, k: sampling.sample(nnx.merge(graphdef, st), x, k,
                                                      spec).tokens)
        return fn.lower(state, images, jax.random.key(0)).compile()

    images = jax.random.uniform(jax.random.key(1), (b, cfg.image_size, cfg.image_size, 3))
    t0 = time.perf_counter()
    compiled = compiled_sampler(use_cache)
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    tokens = np.asarray(compiled(state, images, jax.random.key(0)))  # first call
    times = [time.perf_counter() - t0]
    agree = None
    if not use_cache:  # same inputs through the KV-cache loop: the same tokens?
        agree = float((np.asarray(compiled_sampler(True)(state, images, jax.random.key(0)))
                       == tokens).mean())
    for r in range(repeats if times[0] < 10 else 0):  # slow cells: the first call suffices
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(state, images, jax.random.key(r + 1)))
        times.append(time.perf_counter() - t0)
    call_s = min(times)
    mem = compiled.memory_analysis()
    temp = getattr(mem, "temp_size_in_bytes", None) if mem is not None else None
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return dict(cache=use_cache, L=length, seqs=b * n, unroll=unroll, compile_s=compile_s,
                call_s=call_s, tok_s=b * n * length / call_s, seq_s=b * n / call_s,
                params=params, devices=str(jax.devices()[0].platform), agree=agree,
                temp_mb=None if temp is None else temp / 2**20)


# ---------------------------------------------------------------------------------------------
# MLE and reward-tuning steps on the detection task (shared with bench_train.py, bench_gpu.py)


@dataclasses.dataclass
class DetectionBench:
    """A detection task, its model and optimizer, and scenes batches with ground truth."""

    task: object
    model: object
    opt: object
    batches: dict

    def batch(self, b: int) -> dict:
        return self.batches[b]


def detection_bench(world_preset: str, model_preset: str, slots: int, batch_sizes,
                    seed: int = 0) -> DetectionBench:
    """The detection task of ``world_preset`` with ``slots`` box slots (L = 6·slots) on the
    ``model_preset`` model; batches of each size from the in-memory scenes split."""
    import numpy as np
    import optax
    from flax import nnx

    from rlcv_lib.data import memory, pipeline, scenes
    from rlcv_lib.models import MODEL_PRESETS, build_model
    from rlcv_lib.tasks.detection.task import DETECTION_PRESETS, DetectionTask, class_counts

    world = scenes.WORLD_PRESETS[world_preset]
    ds = memory.generate_split(world, "train", max(batch_sizes))
    counts = class_counts([ds[i]["labels"] for i in range(len(ds))], len(world.thing_classes))
    cfg = dataclasses.replace(DETECTION_PRESETS[world_preset], num_slots=slots)
    task = DetectionTask.for_world(cfg, world, counts)
    batches = {}
    for b in batch_sizes:
        raw = pipeline.Loader(ds, b, seed=seed).batch(0)
        tokens = [task.tokenize({"boxes": raw["boxes"][i][:k], "labels": raw["labels"][i][:k]})
                  for i, k in enumerate(raw["num_boxes"])]
        batches[b] = {"image": raw["image"], "boxes": raw["boxes"], "labels": raw["labels"],
                      "tokens": np.stack(tokens)}
    model = build_model(MODEL_PRESETS[model_preset], task, seed=seed)
    opt = nnx.Optimizer(model, optax.adamw(1e-5), wrt=nnx.Param)
    return DetectionBench(task, model, opt, batches)


def time_mle(bench: DetectionBench, b: int, repeats: int) -> dict:
    """Seconds per MLE step at batch ``b`` (median of ``repeats``) and the first call."""
    import jax

    from rlcv_lib.core import steps

    step = steps.make_mle_step(bench.task)
    batch = bench.batch(b)
    t0 = time.perf_counter()
    jax.block_until_ready(step(bench.model, bench.opt, batch))
    first = time.perf_counter() - t0
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        jax.block_until_ready(step(bench.model, bench.opt, batch))
        times.append(time.perf_counter() - t0)
    return dict(step_s=statistics.median(times), first_s=first, examples_s=b / statistics.median(
        times))


def time_rl(bench: DetectionBench, b: int, n: int, repeats: int) -> dict:
    """The reward-tuning step at B=b, N=n and its parts, medians of ``repeats`` interleaved
    runs: the whole step (``steps.make_rl_step``), its sampling (the same jitted sampler, tokens
    fetched to the host), its reward (``task.reward``) and its gradient step (the same loss,
    advantages and optimizer update, jitted alone); ``other`` is the step minus the three."""
    import jax
    import jax.numpy as jnp
    import numpy as np
    from flax import nnx

    from rlcv_lib.core import reinforce, steps
    from rlcv_lib.core.reinforce import RLConfig

    task, model, opt = bench.task, bench.model, bench.opt
    rl_cfg = RLConfig(num_samples=n)
    spec = steps.rl_spec(task, rl_cfg)
    rl_step = steps.make_rl_step(task, rl_cfg)
    rl_step_device = steps.make_rl_step(task, dataclasses.replace(rl_cfg, device_reward=True))
    sample = steps.make_sample_fn(task, rl_cfg)
    device_reward = jax.jit(task.device_reward)

    @nnx.jit
    def grad_step(model, opt, images, tokens, rewards, aux):
        adv, weights = reinforce.advantages(rewards, rl_cfg)
        loss_fn = lambda m: steps.rl_loss(m, images, tokens, adv, weights, aux, spec,  # noqa: E731
                                          task, rl_cfg)
        (loss, _), grads = nnx.value_and_grad(loss_fn, has_aux=True)(model)
        opt.update(model, grads)
        return loss

    batch = bench.batch(b)
    images = jnp.asarray(batch["image"])
    gt = {k: jnp.asarray(batch[k]) for k in task.device_reward_keys}
    parts = {"step": [], "sampling": [], "reward": [], "gradient step": [],
             "step, device reward": [], "device reward": []}
    t0 = time.perf_counter()
    jax.block_until_ready(rl_step(model, opt, batch, jax.random.key(0)))
    first = time.perf_counter() - t0
    jax.block_until_ready(rl_step_device(model, opt, batch, jax.random.key(0)))  # compiles
    for r in range(repeats + 1):  # the first round compiles grad_step: dropped
        key = jax.random.key(r + 1)
        t0 = time.perf_counter()
        jax.block_until_ready(rl_step(model, opt, batch, key))
        t1 = time.perf_counter()
        tokens = np.asarray(sample(model, images, key).tokens)
        t2 = time.perf_counter()
        rewards, aux = task.reward(tokens, batch, task.frozen)
        t3 = time.perf_counter()
        arrays = {k: jnp.asarray(v) for k, v in aux.items() if np.ndim(v) > 0}
        jax.block_until_ready(grad_step(model, opt, images, jnp.asarray(tokens),
                                        jnp.asarray(rewards, jnp.float32), arrays))
        t4 = time.perf_counter()
        jax.block_until_ready(rl_step_device(model, opt, batch, key))
        t5 = time.perf_counter()
        dev_tokens = jnp.asarray(tokens)
        jax.block_until_ready(device_reward(dev_tokens, gt))
        t6 = time.perf_counter()
        if r:
            for k, dt in zip(parts, (t1 - t0, t2 - t1, t3 - t2, t4 - t3, t5 - t4, t6 - t5),
                             strict=True):
                parts[k].append(dt)
    out = {k: statistics.median(v) for k, v in parts.items()}
    out["other"] = out["step"] - out["sampling"] - out["reward"] - out["gradient step"]
    out["first_s"] = first
    out["sequences_s"] = b * n / out["step"]
    return out


def record_rl(suite: Suite, label: str, r: dict) -> None:
    """Rows of one RL breakdown: the step (s) and each part as a fraction of it."""
    suite.add(f"RL step {label}", r["step"], "s/step",
              note=f"{r['sequences_s']:.0f} sequences/s; first call (compile) "
                   f"{r['first_s']:.1f} s")
    for part in ("sampling", "reward", "gradient step", "other"):
        suite.add(f"  {part} {label}", r[part] / r["step"], "fraction of step",
                  note=f"{r[part]:.3f} s")
    if "step, device reward" in r:
        suite.add(f"RL step {label}, reward on the device", r["step, device reward"], "s/step",
                  reference="RL step, host reward", ratio=r["step"] / r["step, device reward"],
                  note=f"rl.device_reward=True; the jitted reward alone "
                       f"{r['device reward']:.4f} s ({r['device reward'] / r['step']:.1%} of "
                       f"the host-reward step); ratio > 1: faster")


# ---------------------------------------------------------------------------------------------


def run_cells(cells, args) -> list[dict]:
    rows = []
    for use_cache, length, seqs, unroll in cells:
        spec = dict(preset=args.preset, vocab=args.vocab, use_cache=use_cache, length=length,
                    seqs=seqs, unroll=unroll, repeats=args.repeats)
        try:
            out = subprocess.run([sys.executable, __file__, "--cell", json.dumps(spec)],
                                 capture_output=True, text=True, timeout=args.limit, check=True)
            row = json.loads(out.stdout.strip().splitlines()[-1])
        except subprocess.TimeoutExpired:
            row = dict(cache=use_cache, L=length, seqs=seqs, unroll=unroll, timeout=args.limit)
        except subprocess.CalledProcessError as e:
            raise SystemExit(f"cell {spec} failed:\n{e.stderr[-3000:]}") from None
        if row.get("agree") is not None and row["agree"] < 1.0:
            raise SystemExit(f"cell {spec}: the KV-cache and recomputing loops drew different "
                             f"tokens ({row['agree']:.1%} equal): the ratio would be void")
        rows.append(row)
        print("  " + _label(row) + (f": over the {args.limit:.0f} s limit" if "timeout" in row
                                    else f": {row['tok_s']:.0f} tokens/s"), flush=True)
    return rows


def _label(r: dict) -> str:
    loop = "KV cache" if r["cache"] else "recompute"
    return f"{loop} L={r['L']} seqs={r['seqs']}" + (f" unroll={r['unroll']}"
                                                      if r["unroll"] != 1 else "")


def record_cells(suite: Suite, rows: list[dict], args) -> None:
    done = [r for r in rows if "timeout" not in r]
    for r in rows:
        if "timeout" in r:
            suite.notes.append(f"{_label(r)}: over the {r['timeout']:.0f} s limit, not measured")
            continue
        other = [o for o in done if not o["cache"] and o["L"] == r["L"] and o["seqs"] == r["seqs"]]
        kw: dict = {}
        if r["cache"] and other and r["unroll"] == 1:
            ratio = r["tok_s"] / other[0]["tok_s"]
            kw = dict(reference=f"recompute, L={r['L']} seqs={r['seqs']}", ratio=ratio)
            if r["L"] >= 100:
                kw.update(target=f">= {TARGET_SPEEDUP:g}x recompute",
                          met=ratio >= TARGET_SPEEDUP)
        elif (r["cache"] and r["L"] == cpu_detection_shape()[1] and r["seqs"] >= 256
              and r["unroll"] == 1 and args.preset == "cpu"):
            kw = dict(target=f">= {TARGET_TOK_S // 1000}k tokens/s",
                      met=r["tok_s"] >= TARGET_TOK_S)
        mem = "" if r.get("temp_mb") is None else f", XLA temp {r['temp_mb']:.1f} MiB"
        agree = "" if r.get("agree") is None else ", tokens = KV-cache loop's"
        suite.add(_label(r), r["tok_s"], "tokens/s", note=f"{r['seq_s']:.1f} seqs/s, compile "
                  f"{r['compile_s']:.1f} s, call {r['call_s']:.3f} s{mem}{agree}", **kw)
    if done:
        suite.notes.append(f"{args.preset} model, vocab {args.vocab}, "
                           f"{done[0]['params'] / 1e6:.2f}M parameters, {done[0]['devices']}; "
                           f"best of {args.repeats + 1} calls (1 where the first took over 10 s); "
                           "tokens = sequences x L (no EOS)")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--vocab", type=int,
                    help="output vocabulary size (default: the cpu detection task's)")
    ap.add_argument("--limit", type=float, default=150.0, help="seconds per cell")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", action="store_true", help="MLE / RL step breakdown only")
    ap.add_argument("--slots", type=int, default=6, help="--steps: box slots (L = 6 x slots)")
    ap.add_argument("--length", type=int, help="--steps: tokens (a multiple of 6; sets --slots)")
    ap.add_argument("--no-save", action="store_true", help="print only; leave results.json")
    ap.add_argument("--cell", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.vocab is None and not args.cell:
        args.vocab = cpu_detection_shape()[0]
    if args.cell:
        print(json.dumps(run_cell(**json.loads(args.cell))))
        return
    if args.steps:
        if args.length:
            if args.length % 6:
                raise SystemExit(f"--length {args.length} is not a multiple of 6 (box tokens)")
            args.slots = args.length // 6
        bench = detection_bench(args.preset, args.preset, args.slots, (16, 32))
        suite = Suite("steps", f"MLE and reward-tuning step, {args.preset} detection task, "
                               f"L={6 * args.slots}")
        m = time_mle(bench, 32, max(args.repeats, 3))
        suite.add("MLE step B=32", m["examples_s"], "examples/s",
                  note=f"{m['step_s']:.3f} s/step; first call {m['first_s']:.1f} s")
        record_rl(suite, "B=16 N=8", time_rl(bench, 16, 8, max(args.repeats, 3)))
        suite.finish(save=not args.no_save)
        return
    suite = Suite("sampler", "KV-cache sampler vs recomputing the prefix "
                             f"({args.preset} model, fixed-length sequences)")
    record_cells(suite, run_cells(cells(args.quick), args), args)
    suite.notes.append("the GPU target (within 3x of the parameter-bandwidth floor at >= 256 "
                       "sequences) is benchmarks/bench_gpu.py's: not measured yet (no GPU)")
    suite.finish(save=not args.no_save)


if __name__ == "__main__":
    main()
