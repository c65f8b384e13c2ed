"""The command line: ``python -m rlcv_lib pretrain|ship|tune|seeds TASK PRESET [key=value ...]``.

* ``pretrain``: MLE pretraining of a task's stage (resumable in ``--workdir``, default
  ``runs/pretrain/<task>-<preset>``), printing its validation curve and wrong-image control as
  JSON lines. ``make pretrain`` runs it, then ``ship``.
* ``ship``: that run's latest checkpoint (or ``--at STEP``) as the shipped starting point
  ``checkpoints/<task>-<preset>`` (or ``--out``), with its manifest.
* ``tune``: the task's tuning entry point (its spec's ``tune``) at one seed: tuning from the
  shipped MLE model, the checkpoint chosen on validation, the test rows; the result is written
  as JSON (``--out``, default ``<workdir>/seed<N>.json``).
* ``seeds``: ``tune`` for each of ``--seeds``, one JSON file per seed and ``summary.json`` with
  the spread of every test number over the seeds (:func:`rlcv_lib.core.evaluate.seed_spread`):
  those run now and the earlier seed files of the same experiment in ``--out``
  (:func:`gather_seeds`), so ``--seeds 0`` after ``--seeds 1 2`` completes a three-seed spread.

``key=value`` arguments override config fields (dotted or unambiguous bare names, as in
notebooks). An unknown task, preset, stage or field fails with a message naming it.
"""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from rlcv_lib import tasks
from rlcv_lib.config import PRESETS, ConfigError, check_consistent, get_config

OVERRIDE = re.compile(r"^[A-Za-z_][\w.]*=")
"""A ``key=value`` config override on the command line."""


class UsageError(ValueError):
    """A command line that names something that does not exist."""


def parse_overrides(items: Sequence[str]) -> dict[str, str]:
    """``["tune.lr=1e-4", ...]`` -> ``{"tune.lr": "1e-4"}`` (values are coerced later, by the
    config, against each field's type)."""
    out = {}
    for item in items:
        key, eq, value = item.partition("=")
        if not eq or not key:
            raise UsageError(f"override {item!r} is not key=value (e.g. tune.lr=1e-4)")
        out[key] = value
    return out


def resolve(task: str, preset: str, overrides: dict[str, str], seed: int | None = None):
    """(task spec, config) of a command line, or :class:`UsageError` naming what is unknown."""
    try:
        spec = tasks.get(task)
    except ValueError as e:
        raise UsageError(str(e)) from None
    if preset not in PRESETS:
        raise UsageError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
    if seed is not None:
        if "run.seed" in overrides or "seed" in overrides:
            raise UsageError("give the seed once: --seed or run.seed=, not both")
        overrides = {**overrides, "run.seed": seed}
    try:
        cfg = get_config(preset, overrides, task=task)
        check_consistent(cfg)
    except ConfigError as e:
        raise UsageError(str(e)) from None
    return spec, cfg


def _stage(spec: tasks.TaskSpec, stage: str | None) -> tasks.Stage:
    try:
        return spec.stage(stage)
    except ValueError as e:
        raise UsageError(str(e)) from None


def _default_workdir(spec: tasks.TaskSpec, stage: tasks.Stage, preset: str) -> Path:
    return Path("runs/pretrain") / f"{spec.stage_label(stage)}-{preset}"


def _mesh(args: argparse.Namespace):
    """A data-parallel mesh over every device (of every process) with ``--data-parallel``."""
    if not args.data_parallel:
        return None
    from rlcv_lib.core import parallel

    parallel.maybe_initialize_distributed()
    return parallel.make_mesh()


def _print(obj: Any) -> None:
    print(json.dumps(obj, default=float), flush=True)


# ------------------------------------------------------------------------------- commands


def cmd_pretrain(args: argparse.Namespace) -> None:
    from rlcv_lib.core import evaluate, pretrain, shipped

    spec, cfg = resolve(args.task, args.preset, parse_overrides(args.overrides))
    stage = _stage(spec, args.stage)
    recipe = shipped.recipe_for(spec.name, stage.name)
    workdir = Path(args.workdir) if args.workdir else _default_workdir(spec, stage, cfg.preset)
    run = pretrain.pretrain(recipe, cfg, workdir, cache_dir=args.cache,
                            train_size=args.train_size, progress=cfg.run.progress,
                            eval_examples=shipped.CONTROL_EXAMPLES, mesh=_mesh(args))
    for rec in run.history.records():
        _print(rec)
    _print({"wrong_image_control": evaluate.wrong_image_control(
        recipe, run.model, run.task, run.val.batch), "workdir": str(workdir)})


def cmd_ship(args: argparse.Namespace) -> None:
    from rlcv_lib.core import checkpoint, shipped

    spec, cfg = resolve(args.task, args.preset, parse_overrides(args.overrides))
    stage = _stage(spec, args.stage)
    workdir = Path(args.workdir) if args.workdir else _default_workdir(spec, stage, cfg.preset)
    if not (workdir / "checkpoints").exists():
        raise UsageError(f"no pretraining run in {workdir}: run `python -m rlcv_lib pretrain "
                         f"{spec.name} {cfg.preset}` first (or give --workdir)")
    out = shipped.ship_run(shipped.recipe_for(spec.name, stage.name), cfg, workdir, at=args.at,
                           out=args.out, cache_dir=args.cache, stage=stage.name)
    print(json.dumps({"shipped": str(out), **checkpoint.read_manifest(out)}, indent=1))


def _tune_fn(spec: tasks.TaskSpec):
    if spec.tune is None:
        raise UsageError(f"task {spec.name!r} has no tuning entry point"
                         + (f"; run its notebook {spec.notebook}" if spec.notebook else ""))
    return tasks.resolve(spec.tune)


def tune_one(spec: tasks.TaskSpec, cfg: Any, workdir: Path, *, start: str | None,
             cache_dir: str | None, out: Path, mesh: Any = None) -> dict[str, Any]:
    """One ``tune`` run: the task's entry point at ``cfg.run.seed``, its validation
    evaluations printed as they come, the result written to ``out`` and returned."""
    fn = _tune_fn(spec)
    t0 = time.perf_counter()
    seed = cfg.run.seed

    def show(record: dict[str, Any]) -> None:
        _print({"seed": seed, "wall_s": round(time.perf_counter() - t0, 1), "eval": record})

    result = fn(cfg, workdir=workdir / f"seed{seed}", start=start, cache_dir=cache_dir,
                progress=cfg.run.progress, on_eval=show, mesh=mesh).summary()
    result = {"task": spec.name, "preset": cfg.preset, "seed": seed, "start": start,
              "config": cfg.to_dict(), **result}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1, default=float) + "\n")
    for row, metrics in result["test"].items():
        _print({"seed": seed, "row": row, **{k: v for k, v in metrics.items()
                                             if isinstance(v, int | float)}})
    return result


def cmd_tune(args: argparse.Namespace) -> None:
    spec, cfg = resolve(args.task, args.preset, parse_overrides(args.overrides), args.seed)
    _tune_fn(spec)
    workdir = Path(args.workdir or f"runs/tune/{spec.name}-{cfg.preset}")
    out = Path(args.out) if args.out else workdir / f"seed{cfg.run.seed}.json"
    tune_one(spec, cfg, workdir, start=args.start, cache_dir=args.cache or
             str(workdir / "scenes_cache"), out=out, mesh=_mesh(args))


def seeds_summary(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The spread over seeds of every number of every test row, and of each row's difference
    to the MLE row (the result's ``gain_over``, default its first row): ``{"seeds": [...],
    "rows": {row: {metric: spread}}, "gain_over": that row, "gains": {row: {metric:
    spread}}}``."""
    from rlcv_lib.core import evaluate

    rows = list(results[0]["test"])
    base = results[0].get("gain_over", rows[0])
    spread, gains = {}, {}
    for row in rows:
        metrics = [k for k, v in results[0]["test"][row].items() if isinstance(v, int | float)
                   and not isinstance(v, bool)]
        spread[row] = {k: evaluate.seed_spread([r["test"][row][k] for r in results])
                       for k in metrics}
        if row != base:
            gains[row] = {k: evaluate.seed_spread([r["test"][row][k] - r["test"][base][k]
                                                   for r in results])
                          for k in metrics if k in results[0]["test"][base]}
    return {"seeds": [r["seed"] for r in results], "rows": spread, "gain_over": base,
            "gains": gains}


def _same_experiment(config: Mapping[str, Any]) -> dict[str, Any]:
    """A result's config without what differs between the seeds of one experiment."""
    run = {k: v for k, v in config.get("run", {}).items() if k not in ("seed", "progress")}
    return {**config, "run": run}


def gather_seeds(out: Path, results: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
    """``results`` and every other ``seed*.json`` in ``out`` of the same task, preset, start and
    config (``run.seed`` and ``run.progress`` aside), by seed: a spread can grow one seed run
    at a time. Files of another experiment are left out, each named on stdout."""
    first = results[0]
    key = (first["task"], first["preset"], first.get("start"), _same_experiment(first["config"]))
    by_seed = {r["seed"]: r for r in results}
    for path in sorted(out.glob("seed*.json")):
        other = json.loads(path.read_text())
        if other.get("seed") in by_seed:
            continue
        if (other.get("task"), other.get("preset"), other.get("start"),
                _same_experiment(other.get("config", {}))) != key:
            _print({"left out of the summary (another experiment)": str(path)})
            continue
        by_seed[other["seed"]] = other
    return [by_seed[k] for k in sorted(by_seed)]


def cmd_seeds(args: argparse.Namespace) -> None:
    overrides = parse_overrides(args.overrides)
    spec, cfg0 = resolve(args.task, args.preset, overrides, args.seeds[0])
    _tune_fn(spec)
    workdir = Path(args.workdir or f"runs/seeds/{spec.name}-{cfg0.preset}")
    out = Path(args.out) if args.out else workdir
    mesh = _mesh(args)  # once: jax.distributed may be initialised only once per process
    results = []
    for seed in args.seeds:
        _, cfg = resolve(args.task, args.preset, overrides, seed)
        results.append(tune_one(spec, cfg, workdir, start=args.start,
                                cache_dir=args.cache or str(workdir / "scenes_cache"),
                                out=out / f"seed{seed}.json", mesh=mesh))
    summary = seeds_summary(gather_seeds(out, results))
    (out / "summary.json").write_text(json.dumps(summary, indent=1, default=float) + "\n")
    _print({"summary": str(out / "summary.json"), "gains": summary["gains"]})


# --------------------------------------------------------------------------------- parser


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m rlcv_lib",
        description="Pretrain, ship and tune the tasks of rlcv (config overrides as "
                    "key=value; tasks: " + ", ".join(tasks.NAMES) + "; presets: "
                    + ", ".join(PRESETS) + ").")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def command(name: str, help: str, fn) -> argparse.ArgumentParser:
        c = sub.add_parser(name, help=help, description=help)
        c.add_argument("task", metavar="TASK", help="one of " + ", ".join(tasks.NAMES))
        c.add_argument("preset", metavar="PRESET", help="one of " + ", ".join(PRESETS))
        c.add_argument("overrides", nargs="*", metavar="key=value",
                       help="config overrides, e.g. tune.lr=1e-4 rl.num_samples=4")
        c.add_argument("--workdir", help="where runs and checkpoints go")
        c.add_argument("--cache", help="scenes cache directory")
        if name != "ship":
            c.add_argument("--data-parallel", action="store_true",
                           help="shard each batch over every device (a jax.sharding mesh; "
                                "several hosts: set JAX_COORDINATOR_ADDRESS, see "
                                "rlcv_lib.core.parallel)")
        c.set_defaults(fn=fn)
        return c

    c = command("pretrain", "MLE-pretrain a task (resumable)", cmd_pretrain)
    c.add_argument("--stage", help="the stage of a multi-stage task (default: the last)")
    c.add_argument("--train-size", type=int, help="stream over only the first N training scenes")
    c = command("ship", "ship a pretraining run as the task's starting point", cmd_ship)
    c.add_argument("--stage", help="the stage of a multi-stage task (default: the last)")
    c.add_argument("--at", type=int, help="ship this checkpoint step (default: the latest)")
    c.add_argument("--out", help="ship here instead of checkpoints/<task>-<preset>")
    c = command("tune", "reward-tune from the shipped MLE model at one seed", cmd_tune)
    c.add_argument("--seed", type=int, help="run.seed (default: the preset's)")
    c.add_argument("--start", help="a shipped checkpoint directory to start from")
    c.add_argument("--out", help="result JSON (default <workdir>/seed<N>.json)")
    c = command("seeds", "tune at several seeds; per-seed JSON and their spread", cmd_seeds)
    c.add_argument("--seeds", type=int, nargs="+", required=True, help="e.g. --seeds 0 1 2")
    c.add_argument("--start", help="a shipped checkpoint directory to start from")
    c.add_argument("--out", help="directory of the per-seed JSON and summary.json")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    p = parser()
    argv = list(sys.argv[1:] if argv is None else argv)
    # key=value overrides may stand anywhere (also after a list option such as --seeds)
    overrides = [a for a in argv if OVERRIDE.match(a)]
    args = p.parse_args([a for a in argv if not OVERRIDE.match(a)])
    args.overrides = [*args.overrides, *overrides]
    try:
        args.fn(args)
    except UsageError as e:
        p.exit(2, f"{p.prog} {args.command}: error: {e}\n")
    return 0
