"""Sampler speed: KV-cache decoding vs recomputing the whole prefix at every step.

Each cell runs in its own subprocess under a time limit (a cell that runs out is reported as
such), times ``jit(...).lower().compile()`` separately from the steady-state calls, and counts
tokens as sequences × L (fixed length, no EOS). Ratios compare the two loops at the same
(L, sequences). Run from the repository root::

    python benchmarks/bench_sampler.py                 # cpu-preset model, the default cells
    python benchmarks/bench_sampler.py --quick         # a smaller set of cells
    python benchmarks/bench_sampler.py --steps         # MLE / RL step throughput only

``--steps`` times :func:`rlcv_lib.steps.make_mle_step` and :func:`make_rl_step` for the same
model on a synthetic task (uniform-random targets, a NumPy reward), splitting the RL step into
its sampling, reward and update parts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import subprocess
import sys
import time

DEFAULT_CELLS = [  # (use_cache, L, sequences, unroll); L=108: the cpu detection sequence
    (True, 60, 256, 1), (True, 60, 256, 6), (False, 60, 256, 1),
    (True, 60, 16, 1), (False, 60, 16, 1),
    (True, 108, 256, 1), (True, 108, 16, 1), (False, 108, 16, 1),
    (True, 600, 256, 1), (True, 600, 4, 1), (False, 600, 4, 1),
]
QUICK_CELLS = [(True, 60, 256, 1), (False, 60, 16, 1), (True, 60, 16, 1),
               (True, 600, 4, 1), (False, 600, 4, 1)]


def run_cell(preset: str, vocab: int, use_cache: bool, length: int, seqs: int, unroll: int,
             repeats: int) -> dict:
    import jax
    from flax import nnx

    from rlcv_lib import sampling
    from rlcv_lib.models import MODEL_PRESETS, EncoderDecoder

    cfg = MODEL_PRESETS[preset].resolve(vocab, length)
    cfg = dataclasses.replace(cfg, max_len=length, vocab_size=vocab)
    model = EncoderDecoder(cfg, rngs=nnx.Rngs(0))
    n = min(8, seqs)
    b = seqs // n
    spec = sampling.DecodeSpec(max_len=length, pad_id=0, eos_id=None, num_samples=n,
                               use_cache=use_cache, unroll=unroll)
    graphdef, state = nnx.split(model)
    fn = jax.jit(lambda st, x, k: sampling.sample(nnx.merge(graphdef, st), x, k, spec).tokens)
    images = jax.random.uniform(jax.random.key(1), (b, cfg.image_size, cfg.image_size, 3))
    t0 = time.perf_counter()
    compiled = fn.lower(state, images, jax.random.key(0)).compile()
    compile_s = time.perf_counter() - t0
    t0 = time.perf_counter()
    jax.block_until_ready(compiled(state, images, jax.random.key(0)))  # first call
    times = [time.perf_counter() - t0]
    for r in range(repeats if times[0] < 10 else 0):  # slow cells: the first call suffices
        t0 = time.perf_counter()
        jax.block_until_ready(compiled(state, images, jax.random.key(r + 1)))
        times.append(time.perf_counter() - t0)
    call_s = min(times)
    params = sum(x.size for x in jax.tree.leaves(nnx.state(model, nnx.Param)))
    return dict(cache=use_cache, L=length, seqs=b * n, unroll=unroll, compile_s=compile_s,
                call_s=call_s, tok_s=b * n * length / call_s, seq_s=b * n / call_s,
                params=params, devices=str(jax.devices()[0].platform))


class _BenchTask:
    """Synthetic task: vocabulary ``vocab``, ``length`` tokens, no EOS, everything allowed,
    reward = fraction of tokens equal to token 2 (host-side NumPy)."""

    name, pad_id, eos_id, state = "bench", 0, None, None

    def __init__(self, vocab: int, length: int):
        self.vocab_size, self.max_len = vocab, length

    def tokenize(self, example):
        return example["tokens"]

    def allowed(self, position, prev_token):
        import jax.numpy as jnp
        return jnp.ones((self.vocab_size,), bool)

    def detokenize(self, tokens):
        return list(tokens)

    def reward(self, samples, batch, state=None):
        import numpy as np
        return (np.asarray(samples) == 2).mean(-1).astype(np.float32), {}


def run_steps(preset: str, vocab: int, length: int, mle_batch: int, rl_batch: int,
              num_samples: int, repeats: int) -> list[str]:
    import jax
    import numpy as np
    import optax
    from flax import nnx

    from rlcv_lib import steps
    from rlcv_lib.models import MODEL_PRESETS, build_model
    from rlcv_lib.reinforce import RLConfig

    task = _BenchTask(vocab, length)
    cfg = MODEL_PRESETS[preset]
    model = build_model(cfg, task)
    opt = nnx.Optimizer(model, optax.adamw(1e-4), wrt=nnx.Param)
    rng = np.random.default_rng(0)
    s = cfg.image_size

    def batch(b):
        return {"image": rng.random((b, s, s, 3), np.float32),
                "tokens": rng.integers(1, vocab, (b, length)).astype(np.int32)}

    out = []
    mle = steps.make_mle_step(task, cfg)
    b = batch(mle_batch)
    t0 = time.perf_counter()
    jax.block_until_ready(mle(model, opt, b, None))
    first = time.perf_counter() - t0
    t0 = time.perf_counter()
    for _ in range(repeats):
        m = mle(model, opt, b, None)
    jax.block_until_ready(m)
    dt = (time.perf_counter() - t0) / repeats
    out.append(f"| MLE step | B={mle_batch} | {dt:.3f} s | {1 / dt:.2f} steps/s | "
               f"{mle_batch / dt:.0f} examples/s | first call (compile) {first:.1f} s |")

    rl_cfg = RLConfig(num_samples=num_samples)
    rl = steps.make_rl_step(task, rl_cfg)
    sample = steps.make_sample_fn(task, rl_cfg)
    b = batch(rl_batch)
    jax.block_until_ready(rl(model, opt, b, jax.random.key(0)))  # compile
    t0 = time.perf_counter()
    for i in range(repeats):
        m = rl(model, opt, b, jax.random.key(i + 1))
    jax.block_until_ready(m)
    dt = (time.perf_counter() - t0) / repeats
    jax.block_until_ready(sample(model, b["image"], jax.random.key(0)).tokens)
    t0 = time.perf_counter()
    for i in range(repeats):
        toks = sample(model, b["image"], jax.random.key(i)).tokens
        toks = np.asarray(toks)
    ts = (time.perf_counter() - t0) / repeats
    t0 = time.perf_counter()
    task.reward(toks, b)
    tr = time.perf_counter() - t0
    seqs = rl_batch * num_samples
    out.append(f"| RL step | B={rl_batch}×N={num_samples} | {dt:.3f} s | {1 / dt:.2f} steps/s | "
               f"{seqs / dt:.0f} sequences/s | sampling {ts:.3f} s, reward {tr:.4f} s, "
               f"update+rest {dt - ts - tr:.3f} s |")
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--vocab", type=int, default=100, help="output vocabulary size")
    ap.add_argument("--limit", type=float, default=300.0, help="seconds per cell")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--steps", action="store_true", help="time the MLE and RL steps only")
    ap.add_argument("--length", type=int, default=60, help="--steps: tokens per sequence")
    ap.add_argument("--cell", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.steps:
        print(f"steps, preset={args.preset}, vocab={args.vocab}, L={args.length}")
        print("| step | batch | time | rate | throughput | notes |")
        print("|---|---|---|---|---|---|")
        for line in run_steps(args.preset, args.vocab, args.length, 32, 16, 8,
                              max(args.repeats, 3)):
            print(line)
        return
    if args.cell:
        print(json.dumps(run_cell(**json.loads(args.cell))))
        return
    cells = QUICK_CELLS if args.quick else DEFAULT_CELLS
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
        rows.append(row)
        print(_fmt(row, rows), flush=True)
    print()
    print(_table(rows, args))


def _fmt(row: dict, rows: list[dict]) -> str:
    if "timeout" in row:
        return f"  {'cache' if row['cache'] else 'recompute'} L={row['L']} seqs={row['seqs']}: " \
               f"over the {row['timeout']:.0f} s limit"
    name = "cache" if row["cache"] else "recompute"
    return (f"  {name} L={row['L']} seqs={row['seqs']} unroll={row['unroll']}: "
            f"{row['tok_s']:.0f} tokens/s, compile {row['compile_s']:.1f} s")


def _table(rows: list[dict], args) -> str:
    done = [r for r in rows if "timeout" not in r]
    head = (f"sampler speed, preset={args.preset}, vocab={args.vocab}, "
            f"{done[0]['params'] / 1e6:.2f}M params, {done[0]['devices']}" if done else "")
    lines = [head,
             "| loop      |   L | seqs | unroll | compile s |   call s |  tokens/s |  seqs/s | "
             "cache ÷ recompute |",
             "|-----------|-----|------|--------|-----------|----------|-----------|---------|"
             "-------------------|"]
    for r in rows:
        name = "cache" if r["cache"] else "recompute"
        if "timeout" in r:
            lines.append(f"| {name:9s} | {r['L']:3d} | {r['seqs']:4d} | {r['unroll']:6d} | "
                         f"> {r['timeout']:.0f} s limit |")
            continue
        other = [o for o in done if o["cache"] != r["cache"] and o["L"] == r["L"]
                 and o["seqs"] == r["seqs"] and o["unroll"] == 1]
        ratio = ""
        if other:
            c, s = (r, other[0]) if r["cache"] else (other[0], r)
            ratio = f"{c['tok_s'] / s['tok_s']:.1f}×"
        lines.append(f"| {name:9s} | {r['L']:3d} | {r['seqs']:4d} | {r['unroll']:6d} | "
                     f"{r['compile_s']:9.1f} | {r['call_s']:8.3f} | {r['tok_s']:9.0f} | "
                     f"{r['seq_s']:7.1f} | {ratio:>17s} |")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
