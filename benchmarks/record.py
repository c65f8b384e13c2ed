"""Shared recording for the benchmark scripts: one table per suite on stdout, and the record.

Each ``bench_*.py`` builds a :class:`Suite`, adds measurements (a value with its unit, and where
it compares implementations of the same quantity, the reference it was measured against in the
same run and the ratio), prints it, and saves it. Saving merges the suite into
``benchmarks/results.json`` (name, value, unit, reference, ratio, target, machine, date,
commit) and rewrites ``benchmarks/RESULTS.md`` from all suites recorded there.

    suite = Suite("data", "Scene generation and input pipeline vs what MLE consumes")
    suite.add("generate scenes", 464.0, "images/s", reference="MLE need 96 images/s",
              ratio=4.8, target=">= 1x MLE need", met=True)
    suite.finish()   # prints the table, saves unless --no-save
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import sys
import time
from pathlib import Path
from typing import Any

from rlcv_lib.notebook import git_commit
from rlcv_lib.results import machine_description

HERE = Path(__file__).resolve().parent
RESULTS_JSON = HERE / "results.json"
RESULTS_MD = HERE / "RESULTS.md"


def best_of(fn, repeats: int) -> tuple[float, object]:
    """(the fastest of ``repeats`` calls of ``fn`` in seconds, the last output)."""
    best, out = float("inf"), None
    for _ in range(repeats):
        t0 = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t0)
    return best, out


@dataclasses.dataclass
class Measurement:
    name: str
    value: float
    unit: str
    reference: str | None = None
    """What the ratio compares against (measured in the same run), e.g. 'pycocoevalcap'."""
    ratio: float | None = None
    target: str | None = None
    """The docs/design.md §6 target this row checks, in words, e.g. '>= 10x pycocoevalcap'."""
    met: bool | None = None
    note: str = ""


@dataclasses.dataclass
class Suite:
    name: str
    title: str
    rows: list[Measurement] = dataclasses.field(default_factory=list)
    notes: list[str] = dataclasses.field(default_factory=list)

    def add(self, name: str, value: float, unit: str, **kw: Any) -> Measurement:
        m = Measurement(name, float(value), unit, **kw)
        self.rows.append(m)
        return m

    def table(self) -> str:
        lines = [f"## {self.name}: {self.title}", "",
                 "| measurement | value | unit | reference | ratio | target | met | note |",
                 "|---|---:|---|---|---:|---|---|---|"]
        for m in self.rows:
            ratio = "" if m.ratio is None else f"{m.ratio:.3g}"
            met = "" if m.met is None else ("yes" if m.met else "**no**")
            lines.append(f"| {m.name} | {m.value:.4g} | {m.unit} | {m.reference or ''} | "
                         f"{ratio} | {m.target or ''} | {met} | {m.note} |")
        lines += [""] + [f"- {n}" for n in self.notes]
        return "\n".join(lines).rstrip() + "\n"

    def finish(self, save: bool | None = None) -> None:
        """Prints the table; saves it unless ``--no-save`` is on the command line."""
        print(self.table(), flush=True)
        if save is None:
            save = "--no-save" not in sys.argv
        if save:
            save_suite(self)


def _load() -> dict[str, Any]:
    if RESULTS_JSON.exists():
        return json.loads(RESULTS_JSON.read_text())
    return {"suites": {}}


def save_suite(suite: Suite) -> None:
    doc = _load()
    doc["suites"][suite.name] = {
        "title": suite.title, "machine": machine_description(), "commit": git_commit(),
        "date": dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "notes": suite.notes, "measurements": [dataclasses.asdict(m) for m in suite.rows],
    }
    RESULTS_JSON.write_text(json.dumps(doc, indent=1, sort_keys=True) + "\n")
    RESULTS_MD.write_text(to_markdown(doc))


def to_markdown(doc: dict[str, Any]) -> str:
    out = ["# Benchmark results", "",
           "Written by `make bench` (each `benchmarks/bench_*.py` merges its suite into "
           "`results.json`). Ratios compare implementations of the same quantity measured in "
           "the same run; outputs are checked to agree before timing.", ""]
    for name in sorted(doc["suites"]):
        s = doc["suites"][name]
        suite = Suite(name, s["title"], [Measurement(**m) for m in s["measurements"]],
                      s.get("notes", []))
        out.append(suite.table())
        out.append(f"_{s['machine']}; commit `{s['commit']}`; {s['date']}._\n")
    return "\n".join(out)
