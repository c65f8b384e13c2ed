"""The conventions every notebook follows, in one place.

A notebook's first code cell is tagged ``parameters`` (papermill injects its values there)::

    preset = "cpu"     # smoke | cpu | gpu | paper
    seed = 0
    workdir = ""       # checkpoints and caches; "" -> runs/<preset>
    figures_dir = ""   # "" -> figures/ for the cpu preset, <workdir>/figures otherwise
    overrides = {}     # config overrides, e.g. {"world.image_size": 96}

and the next cell validates them, failing there with a message that names the bad parameter::

    from rlcv_lib import notebook
    ctx = notebook.setup("01_scenes_world", preset=preset, seed=seed, workdir=workdir,
                         figures_dir=figures_dir, overrides=overrides)

``ctx`` then saves figures and tables under stable names and records the numbers that go into
``figures/results.json``; its last cell calls ``ctx.finish()``, which writes the notebook's
results fragment ``<figures>/results/<name>.json`` that :mod:`rlcv_lib.results` gathers.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import os
import subprocess
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from rlcv_lib import config as config_lib
from rlcv_lib import tasks

PACKAGE_DIR = Path(__file__).resolve().parent


class ParameterError(ValueError):
    """A notebook parameter with a bad value; the message starts with the parameter's name."""


def repo_root() -> Path:
    """The checkout this package lives in (editable install), else the current directory."""
    candidate = PACKAGE_DIR.parent
    return candidate if (candidate / "notebooks").is_dir() else Path.cwd()


def git_commit(root: Path | None = None) -> str:
    """Short commit hash of the checkout, with ``-dirty`` if its code has uncommitted changes."""
    root = root or repo_root()
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=root, check=True,
                              capture_output=True, text=True).stdout.strip()
        # The outputs a run writes (figures/, benchmarks' records) do not make the code dirty.
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no", "--",
                                ".", ":!figures", ":!benchmarks/results.json",
                                ":!benchmarks/RESULTS.md", ":!benchmarks/*.png"],
                               cwd=root, check=True, capture_output=True, text=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return "unknown"
    return head + ("-dirty" if dirty.strip() else "")


def _finite_or_none(name: str, value: Any, undefined_ok: bool = False) -> float | None:
    if value is None:
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be a number, got {value!r}") from None
    if math.isnan(out) and undefined_ok:
        return None
    if not math.isfinite(out):
        raise ValueError(f"{name} is {out}; results hold finite numbers (a rate with nothing "
                         f"to rate: record(..., undefined_ok=True) writes null)")
    return out


@dataclasses.dataclass
class Context:
    """What a notebook gets back from :func:`setup`."""

    name: str
    config: config_lib.Config
    workdir: Path
    figures: Path
    started: float = dataclasses.field(default_factory=time.time)
    entries: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    written: list[str] = dataclasses.field(default_factory=list)

    @property
    def preset(self) -> str:
        return self.config.preset

    @property
    def seed(self) -> int:
        return self.config.run.seed

    def path(self, filename: str) -> Path:
        """Path of an output file in the figures dir (stable names, no directories)."""
        if not filename or "/" in filename or filename.startswith("."):
            raise ValueError(f"figure/table name must be a plain file name, got {filename!r}")
        self.written.append(filename)
        return self.figures / filename

    def save_figure(self, fig: Any, filename: str, dpi: int = 110) -> Path:
        """Saves a matplotlib figure as ``<figures>/<filename>`` (png unless another suffix)."""
        if "." not in filename:
            filename += ".png"
        path = self.path(filename)
        fig.savefig(path, dpi=dpi, bbox_inches="tight")
        return path

    def save_table(self, name: str, rows: list[Mapping[str, Any]], floatfmt: str = ".4g") -> Path:
        """Writes rows (dicts with the same keys) as ``<name>.md`` and ``<name>.csv``."""
        if not rows:
            raise ValueError(f"table {name!r} has no rows")
        columns = list(rows[0])

        def fmt(v: Any) -> str:
            return format(v, floatfmt) if isinstance(v, float) else str(v)

        md = ["| " + " | ".join(columns) + " |", "|" + "---|" * len(columns)]
        md += ["| " + " | ".join(fmt(r.get(c, "")) for c in columns) + " |" for r in rows]
        self.path(f"{name}.md").write_text("\n".join(md) + "\n")
        with open(self.path(f"{name}.csv"), "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=columns)
            writer.writeheader()
            writer.writerows(rows)
        return self.figures / f"{name}.md"

    def record(self, task: str, metric: str, *, value: float | None = None,
               mle: float | None = None, tuned: float | None = None,
               paper_mle: float | None = None, paper_tuned: float | None = None,
               note: str = "", undefined_ok: bool = False) -> dict[str, Any]:
        """Records one reported number for ``results.json``.

        Either a single ``value`` (a statistic of the world, a ceiling) or an ``mle`` / ``tuned``
        pair from the same run, with the paper's values where it has them. A NaN is refused
        (ValueError) unless ``undefined_ok``: then it is a rate with nothing to rate (the
        judge's precision of captions that claim no object) and is written as ``null``.
        """
        if value is None and mle is None and tuned is None:
            raise ValueError(f"record({task!r}, {metric!r}) needs value=, mle= or tuned=")
        numbers = {k: _finite_or_none(f"{task}/{metric}: {k}", v, undefined_ok) for k, v in
                   dict(value=value, mle=mle, tuned=tuned, paper_mle=paper_mle,
                        paper_tuned=paper_tuned).items()}
        entry = {"task": task, "metric": metric, "notebook": self.name, **numbers, "note": note}
        self.entries = [e for e in self.entries if (e["task"], e["metric"]) != (task, metric)]
        self.entries.append(entry)
        return entry

    def finish(self) -> Path:
        """Writes ``<figures>/results/<name>.json``: this notebook's entries and run facts."""
        from rlcv_lib import results as results_lib  # it imports this module

        out = self.figures / "results" / f"{self.name}.json"
        out.parent.mkdir(parents=True, exist_ok=True)
        fragment = {
            "notebook": self.name, "preset": self.preset, "seed": self.seed,
            "commit": git_commit(), "seconds": round(time.time() - self.started, 1),
            "machine": results_lib.machine_description(),
            "date": results_lib.utc_now(),
            "config_hash": self.config.hash(), "figures": sorted(set(self.written)),
            "entries": self.entries,
        }
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(fragment, indent=1, sort_keys=True) + "\n")
        os.replace(tmp, out)
        return out


def _check(name: str, value: Any, kind: type | tuple[type, ...], what: str) -> None:
    if not isinstance(value, kind) or (kind is int and isinstance(value, bool)):
        raise ParameterError(f"{name}: expected {what}, got {value!r}")


def _check_creatable(param: str, path: Path) -> None:
    """Raises ParameterError unless ``path`` is a directory or can be made one (its nearest
    existing ancestor is a writable directory)."""
    if path.exists() and not path.is_dir():
        raise ParameterError(f"{param}: {str(path)!r} exists and is not a directory")
    ancestor = path
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise ParameterError(f"{param}: cannot create {str(path)!r}: {str(ancestor)!r} is a "
                             f"file, not a directory")
    if not os.access(ancestor, os.W_OK | os.X_OK):
        raise ParameterError(f"{param}: cannot create {str(path)!r}: {str(ancestor)!r} is not "
                             f"writable")


def setup(name: str, *, preset: str = "cpu", seed: int = 0, workdir: str = "",
          figures_dir: str = "", overrides: Mapping[str, Any] | None = None,
          sections: tuple[str, ...] | None = None) -> Context:
    """Validates a notebook's parameters and resolves its config and output dirs.

    Raises :class:`ParameterError` whose message starts with the bad parameter's name
    (``preset``, ``seed``, ``workdir``, ``figures_dir`` or ``overrides``).
    """
    _check("preset", preset, str, "a preset name")
    if preset not in config_lib.PRESETS:
        raise ParameterError(f"preset: unknown preset {preset!r}; "
                             f"choose one of {list(config_lib.PRESETS)}")
    _check("seed", seed, int, "a non-negative int")
    if seed < 0:
        raise ParameterError(f"seed: expected a non-negative int, got {seed!r}")
    _check("workdir", workdir, (str, os.PathLike), "a path (\"\" for runs/<preset>)")
    _check("figures_dir", figures_dir, (str, os.PathLike), "a path (\"\" for the default)")
    overrides = {} if overrides is None else overrides
    _check("overrides", overrides, dict, "a dict of config overrides")
    if "run.seed" in overrides or "seed" in overrides:
        raise ParameterError("overrides: set the seed with the `seed` parameter, not overrides")
    spec = tasks.for_notebook(name)  # a task's notebook resolves its config for that task
    try:
        cfg = config_lib.get_config(preset, {**overrides, "run.seed": seed}, sections=sections,
                                    task=None if spec is None else spec.name)
        config_lib.check_consistent(cfg)
    except config_lib.ConfigError as e:
        raise ParameterError(f"overrides: {e}") from None
    root = repo_root()
    work = Path(workdir) if str(workdir) else root / "runs" / preset
    if str(figures_dir):
        figures = Path(figures_dir)
    else:
        figures = root / "figures" if preset == "cpu" else work / "figures"
    for param, path in (("workdir", work), ("figures_dir", figures)):
        _check_creatable(param, path)  # both checked before either is made
    for param, path in (("workdir", work), ("figures_dir", figures)):
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ParameterError(f"{param}: cannot create {str(path)!r} ({e})") from None
    return Context(name=name, config=cfg, workdir=work.resolve(), figures=figures.resolve())


def assert_finite(entries: list[Mapping[str, Any]]) -> None:
    """Raises if any recorded number is NaN or infinite (used by the output checks)."""
    for e in entries:
        for k in ("value", "mle", "tuned"):
            v = e.get(k)
            if v is not None and not math.isfinite(v):
                raise ValueError(f"{e['task']}/{e['metric']}: {k} is {v}")
