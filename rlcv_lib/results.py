"""Gathers the notebooks' results fragments into ``results.json`` and ``RESULTS.md``.

Each notebook writes ``<figures>/results/<name>.json`` (:meth:`rlcv_lib.notebook.Context.finish`);
this module merges them into one machine-readable file (one entry per reported number: task,
metric, MLE value, tuned value, the paper's values, preset, seed, commit) and its table for people.
At the cpu preset both also hold the paper's claims beside ours, with their verdicts
(:mod:`rlcv_lib.claims`, from the committed seed runs under ``figures/seeds/``).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
from pathlib import Path
from typing import Any

from rlcv_lib import claims
from rlcv_lib.notebook import git_commit

CLAIMS_PRESET = "cpu"
"""The preset whose results sit beside the paper's claims: the committed seed runs
(``figures/seeds/``) are of the cpu preset."""


def cpu_model() -> str:
    """The CPU's model name and whether it has AVX-512, e.g. ``AMD EPYC, no AVX-512`` (from
    ``/proc/cpuinfo``; "" elsewhere).
    XLA compiles CPU code for the CPU it runs on, so floating-point results (and a REINFORCE
    trajectory built on them) can differ between CPU models at the same code and seed."""
    try:
        text = Path("/proc/cpuinfo").read_text()
    except OSError:
        return ""
    name = next((line.split(":", 1)[1].strip() for line in text.splitlines()
                 if line.startswith("model name")), "")
    flags = next((line.split(":", 1)[1].split() for line in text.splitlines()
                  if line.startswith("flags")), [])
    if not name:
        return ""
    return f"{name}, {'AVX-512' if any(f.startswith('avx512') for f in flags) else 'no AVX-512'}"


def machine_description() -> str:
    """E.g. ``Linux x86_64, 2 CPU cores (AMD EPYC, no AVX-512), 23.4 GiB, jax cpu``."""
    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
        mem_s = f", {mem:.1f} GiB"
    except (ValueError, OSError, AttributeError):
        mem_s = ""
    try:
        import jax  # noqa: PLC0415 - optional and slow to import

        backend = f", jax {jax.default_backend()}"
        if jax.default_backend() != "cpu":
            backend += f" ({jax.devices()[0].device_kind} x{jax.device_count()})"
    except ImportError:
        backend = ""
    model = cpu_model()
    cores = f"{os.cpu_count()} CPU cores" + (f" ({model})" if model else "")
    return f"{platform.system()} {platform.machine()}, {cores}{mem_s}{backend}"


def utc_now() -> str:
    """The time as results record it, e.g. ``2026-12-02 07:24 UTC``."""
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")


def load_fragments(figures: Path) -> list[dict[str, Any]]:
    paths = sorted((figures / "results").glob("*.json"))
    return [json.loads(p.read_text()) for p in paths]


def collect(figures: Path, order: list[str] | None = None,
            timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Builds the ``results.json`` document from the fragments under ``figures``.

    Args:
      order: notebook names in manifest order (fragments of other notebooks are dropped).
      timings: wall-clock seconds per notebook as measured by the runner (papermill included).
    """
    fragments = {f["notebook"]: f for f in load_fragments(figures)}
    names = order if order is not None else sorted(fragments)
    missing = [n for n in names if n not in fragments]
    if missing:
        raise FileNotFoundError(f"no results fragment for notebooks {missing} in {figures}")
    chosen = [fragments[n] for n in names]
    presets = sorted({f["preset"] for f in chosen})
    seeds = sorted({f["seed"] for f in chosen})
    entries = []
    for f in chosen:
        for e in f["entries"]:
            entries.append({**e, "preset": f["preset"], "seed": f["seed"], "commit": f["commit"]})
    return {
        "preset": presets[0] if len(presets) == 1 else presets,
        "seed": seeds[0] if len(seeds) == 1 else seeds,
        "commit": git_commit(),
        "machine": machine_description(),
        "date": utc_now(),
        "notebooks": [{"name": f["notebook"], "seconds": (timings or {}).get(f["notebook"],
                                                                             f["seconds"]),
                       "figures": f["figures"], "commit": f["commit"],
                       "machine": f.get("machine", ""), "date": f.get("date", "")}
                      for f in chosen],
        "entries": entries,
        "claims": (claims.evaluate_all(figures, entries) if presets == [CLAIMS_PRESET]
                   else []),
    }


def _fmt(v: Any) -> str:
    if v is None:
        return ""
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def to_markdown(doc: dict[str, Any]) -> str:
    commits = sorted({nb["commit"] for nb in doc["notebooks"]})
    lines = [
        "# Results",
        "",
        f"Preset `{doc['preset']}`, seed {doc['seed']}: each notebook's latest run, gathered "
        f"here at commit `{doc['commit']}` on {doc['date']}. The runs themselves come from "
        + (f"commit `{commits[0]}`" if len(commits) == 1 else
           f"{len(commits)} commits ({', '.join(f'`{c}`' for c in commits)})")
        + ": the table at the end gives each notebook's commit, machine and seconds "
        "(`make reproduce` runs them all; `python -m rlcv_lib.reproduce run --only NAME` one).",
        "Machine-readable: `results.json` beside this file. Paper values are the paper's own "
        "numbers on the real datasets; ours are on the scenes world unless the preset is `paper`.",
        "",
    ]
    if doc["preset"] == "smoke":
        lines += ["**Smoke preset: a plumbing check.** Tiny worlds, models and runs; the numbers "
                  "below say that every notebook runs end to end, not how well anything works, "
                  "and are not comparable with the paper's columns.", ""]
    lines += [
        "| task | metric | MLE | tuned | value | paper MLE | paper tuned | notebook | note |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for e in doc["entries"]:
        cells = [e["task"], e["metric"], *(_fmt(e.get(k)) for k in
                 ("mle", "tuned", "value", "paper_mle", "paper_tuned")), e["notebook"],
                 e.get("note", "")]
        lines.append("| " + " | ".join(cells) + " |")
    if doc.get("claims"):
        lines += ["", *claims.to_markdown(doc["claims"])]
    lines += ["", "| notebook | commit | machine | date | seconds | figures |",
              "|---|---|---|---|---|---|"]
    for nb in doc["notebooks"]:
        lines.append(f"| {nb['name']} | `{nb['commit']}` | {nb.get('machine', '')} | "
                     f"{nb.get('date', '')} | {nb['seconds']:.0f} | {', '.join(nb['figures'])} |")
    return "\n".join(lines) + "\n"


def write(figures: Path, order: list[str] | None = None,
          timings: dict[str, float] | None = None) -> dict[str, Any]:
    """Writes ``results.json`` and ``RESULTS.md`` into ``figures``; returns the document."""
    doc = collect(figures, order, timings)
    (figures / "results.json").write_text(json.dumps(doc, indent=1) + "\n")
    (figures / "RESULTS.md").write_text(to_markdown(doc))
    return doc
