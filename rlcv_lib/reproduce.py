"""Runs the notebooks of ``notebooks/manifest.toml`` with papermill (what ``make`` calls).

    python -m rlcv_lib.reproduce run --preset cpu          # make reproduce
    python -m rlcv_lib.reproduce prepare --preset smoke --out DIR   # make test (nbval runs them)
    python -m rlcv_lib.reproduce results --preset cpu      # RESULTS.md again, running nothing
    python -m rlcv_lib.reproduce list                      # the manifest, in order

``run`` executes each notebook into ``runs/<preset>/notebooks/`` and then writes
``results.json`` and ``RESULTS.md`` into the figures dir: ``figures/`` for the cpu preset (the
committed results), ``runs/<preset>/figures/`` for the others.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
import tomllib
from pathlib import Path
from typing import Any

from rlcv_lib import config as config_lib
from rlcv_lib import results
from rlcv_lib.notebook import repo_root

MANIFEST = "notebooks/manifest.toml"


@dataclasses.dataclass(frozen=True)
class NotebookSpec:
    """One manifest entry: a notebook and the outputs it declares."""

    name: str
    figures: tuple[str, ...]
    results: tuple[str, ...]  # "task/metric" of every number the notebook records

    @property
    def path(self) -> Path:
        return repo_root() / "notebooks" / f"{self.name}.ipynb"


def load_manifest(path: Path | None = None) -> list[NotebookSpec]:
    path = path or repo_root() / MANIFEST
    with open(path, "rb") as f:
        data = tomllib.load(f)
    specs = []
    for i, entry in enumerate(data.get("notebook", [])):
        unknown = set(entry) - {"name", "figures", "results"}
        if "name" not in entry or unknown:
            raise ValueError(f"{path}: entry {i} needs `name` and may have only figures/results; "
                             f"got {sorted(entry)}")
        specs.append(NotebookSpec(entry["name"], tuple(entry.get("figures", ())),
                                  tuple(entry.get("results", ()))))
    names = [s.name for s in specs]
    if len(set(names)) != len(names):
        raise ValueError(f"{path}: duplicate notebook names in {names}")
    return specs


def default_dirs(preset: str, root: Path | None = None) -> tuple[Path, Path]:
    """(workdir, figures dir) that `make reproduce PRESET=...` uses."""
    root = root or repo_root()
    work = root / "runs" / preset
    return work, (root / "figures" if preset == "cpu" else work / "figures")


def parameters(preset: str, seed: int, workdir: Path, figures: Path,
               overrides: dict[str, Any] | None = None) -> dict[str, Any]:
    return {"preset": preset, "seed": seed, "workdir": str(workdir),
            "figures_dir": str(figures), "overrides": dict(overrides or {})}


def prepare(preset: str, out: Path, seed: int = 0) -> list[Path]:
    """Writes parameter-injected copies of every notebook to ``out/prepared`` (no execution).

    The notebooks write into ``out/work`` and ``out/figures``.
    """
    import papermill as pm  # noqa: PLC0415 - heavy import, only for this command

    out = out.resolve()
    (out / "prepared").mkdir(parents=True, exist_ok=True)
    written = []
    for spec in load_manifest():
        target = out / "prepared" / f"{spec.name}.ipynb"
        pm.execute_notebook(str(spec.path), str(target), prepare_only=True, log_output=False,
                            parameters=parameters(preset, seed, out / "work", out / "figures"))
        written.append(target)
    return written


def run(preset: str, seed: int = 0, from_scratch: bool = False,
        only: list[str] | None = None) -> dict[str, Any]:
    """Executes the manifest's notebooks in order, then writes results.json and RESULTS.md."""
    import papermill as pm  # noqa: PLC0415
    from traitlets.config import Config  # noqa: PLC0415

    # The kernel talks to papermill over local IPC sockets, not TCP: nothing leaves the machine,
    # and the kernel does not warn of unencrypted TCP under every notebook.
    kernel_config = Config({"KernelManager": {"transport": "ipc"}})
    specs = load_manifest()
    if only:
        unknown = set(only) - {s.name for s in specs}
        if unknown:
            raise SystemExit(f"--only: unknown notebooks {sorted(unknown)}")
    work, figures = default_dirs(preset)
    executed = work / "notebooks"
    executed.mkdir(parents=True, exist_ok=True)
    overrides = {"run.from_scratch": True} if from_scratch else {}
    timings: dict[str, float] = {}
    for spec in specs:
        if only and spec.name not in only:
            continue
        print(f"[reproduce] {spec.name} (preset {preset}) ...", flush=True)
        start = time.time()
        pm.execute_notebook(str(spec.path), str(executed / f"{spec.name}.ipynb"),
                            parameters=parameters(preset, seed, work, figures, overrides),
                            cwd=str(repo_root() / "notebooks"), progress_bar=False,
                            log_output=False, kernel_name="python3", config=kernel_config)
        timings[spec.name] = round(time.time() - start, 1)
        print(f"[reproduce] {spec.name} done in {timings[spec.name]:.0f} s", flush=True)
    order = [s.name for s in specs]
    if only:  # a partial run reports what the figures dir holds, in manifest order
        order = [n for n in order if (figures / "results" / f"{n}.json").exists()]
    doc = results.write(figures, order=order, timings=timings)
    print(f"[reproduce] wrote {figures / 'results.json'} and {figures / 'RESULTS.md'} "
          f"({len(doc['entries'])} numbers)")
    return doc


def gather(preset: str) -> dict[str, Any]:
    """Rewrites results.json and RESULTS.md from the fragments in ``preset``'s figures dir (in
    manifest order; each notebook's seconds as its fragment recorded them)."""
    _, figures = default_dirs(preset)
    order = [s.name for s in load_manifest() if (figures / "results" / f"{s.name}.json").exists()]
    doc = results.write(figures, order=order)
    print(f"[reproduce] wrote {figures / 'results.json'} and {figures / 'RESULTS.md'} "
          f"({len(doc['entries'])} numbers, {len(doc['claims'])} claims)")
    return doc


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m rlcv_lib.reproduce", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    p_run = sub.add_parser("run", help="execute every notebook, then write results")
    p_run.add_argument("--preset", default="cpu", choices=config_lib.PRESETS)
    p_run.add_argument("--seed", type=int, default=0)
    p_run.add_argument("--from-scratch", action="store_true",
                       help="retrain MLE models instead of starting from shipped checkpoints")
    p_run.add_argument("--only", nargs="*", help="run only these notebooks (by name)")
    p_prep = sub.add_parser("prepare", help="write parameter-injected copies (for nbval)")
    p_prep.add_argument("--preset", default="smoke", choices=config_lib.PRESETS)
    p_prep.add_argument("--seed", type=int, default=0)
    p_prep.add_argument("--out", type=Path, required=True)
    p_res = sub.add_parser("results", help="rewrite results.json and RESULTS.md from the "
                           "notebooks' fragments already in the figures dir (and, at cpu, the "
                           "claims table from the committed seed runs), running nothing")
    p_res.add_argument("--preset", default="cpu", choices=config_lib.PRESETS)
    sub.add_parser("list", help="print the manifest")
    args = parser.parse_args(argv)
    if args.command == "run":
        run(args.preset, args.seed, args.from_scratch, args.only)
    elif args.command == "results":
        gather(args.preset)
    elif args.command == "prepare":
        for p in prepare(args.preset, args.out, args.seed):
            print(p)
    else:
        for spec in load_manifest():
            print(f"{spec.name}: figures {list(spec.figures)}; results {list(spec.results)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
