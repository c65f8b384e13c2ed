"""The paper's claims beside ours: one row per claim, with a verdict computed by a written rule.

Each :class:`Claim` names what the paper states, the committed seed runs that measure our
counterpart (``figures/seeds/<dir>/seed<N>.json``, written by ``python -m rlcv_lib seeds``; the
seeds are those its ``summary.json`` lists), the measure computed per seed (a gain, a ratio or a
relative gain of a tuned row over its MLE row on the test split), the design doc's target for it
and the intended-use judge that must not contradict it. :class:`CorrelationClaim` reads a number
that one notebook run recorded (``figures/results.json``), e.g. the reward–metric correlation
during tuning.

The verdict rule (docs/design.md §8.6):

* **in kind**: at least two seeds, the measure moves in the paper's direction, and its mean is
  more than two seed standard deviations away from no change;
* **in size**: in kind, the mean meets the design doc's target, and the judge's condition holds
  (e.g. grounded caption precision not lower than MLE's).

A claim whose seed runs are missing says which command makes them instead of a verdict.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

KINDS = ("gain", "ratio", "relative")
"""How a measure compares a row with its base row per seed: ``gain`` = (row − base) · scale,
``ratio`` = row / base, ``relative`` = (row − base) / base."""

NO_CHANGE = {"gain": 0.0, "ratio": 1.0, "relative": 0.0}
"""The value of each kind of measure when tuning changed nothing."""


@dataclasses.dataclass(frozen=True)
class Measure:
    """One number per seed: ``metric`` of test row ``row`` compared with row ``base`` (default:
    the seed file's ``gain_over``, its MLE row)."""

    row: str
    metric: str
    kind: str = "gain"
    scale: float = 1.0
    base: str | None = None
    unit: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Measure.kind {self.kind!r}: choose one of {KINDS}")

    def of(self, result: Mapping[str, Any]) -> float:
        """The measure of one seed's result (a ``seed<N>.json`` document)."""
        test = result["test"]
        base_row = self.base or result.get("gain_over") or next(iter(test))
        for name in (self.row, base_row):
            if name not in test or self.metric not in test[name]:
                raise KeyError(f"seed {result.get('seed')}: no test row {name!r} with "
                               f"{self.metric!r} (rows: {sorted(test)})")
        row, base = float(test[self.row][self.metric]), float(test[base_row][self.metric])
        if self.kind == "gain":
            return (row - base) * self.scale
        if self.kind == "ratio":
            return row / base
        return (row - base) / base

    def describe(self) -> str:
        what = {"gain": "gain", "ratio": "ratio", "relative": "relative gain"}[self.kind]
        return f"{what} of {self.metric} ({self.row})"


@dataclasses.dataclass(frozen=True)
class Judge:
    """The intended-use condition beside a claim: ``measure``'s seed mean ≥ ``at_least`` (or
    ≤ ``at_most``)."""

    measure: Measure
    at_least: float | None = None
    at_most: float | None = None
    says: str = ""

    def holds(self, mean: float) -> bool:
        if self.at_least is not None and not mean >= self.at_least:
            return False
        return self.at_most is None or mean <= self.at_most


@dataclasses.dataclass(frozen=True)
class Claim:
    """A claim of the paper and the seed runs that measure ours."""

    name: str
    statement: str
    paper: str
    task: str
    seeds_dir: str
    measure: Measure
    direction: int = 1
    target: float | None = None
    judge: Judge | None = None
    notebook: str = ""
    figure: str = ""
    command: str = ""

    def evaluate(self, figures: Path) -> dict[str, Any]:
        results = seed_results(figures / "seeds" / self.seeds_dir)
        row = self._row()
        if len(results) < 2:
            return {**row, "verdict": f"needs seed runs: {self.command}"}
        values = [self.measure.of(r) for r in results]
        spread = spread_of(values)
        kind = in_kind(spread, NO_CHANGE[self.measure.kind], self.direction)
        judge = None
        if self.judge is not None:
            judge = spread_of([self.judge.measure.of(r) for r in results])
        size = kind and in_size(spread["mean"], self.target, self.direction) and (
            judge is None or self.judge.holds(judge["mean"]))
        return {**row, "seeds": [r["seed"] for r in results], "ours": spread, "judge": judge,
                "in_kind": kind, "in_size": size if self.target is not None else None,
                "verdict": verdict(kind, size, self.target is not None)}

    def _row(self) -> dict[str, Any]:
        return {"claim": self.name, "statement": self.statement, "paper": self.paper,
                "task": self.task, "measure": self.measure.describe(), "unit": self.measure.unit,
                "target": self.target, "direction": self.direction,
                "judge_says": self.judge.says if self.judge else "", "notebook": self.notebook,
                "figure": self.figure, "source": f"figures/seeds/{self.seeds_dir}"}


@dataclasses.dataclass(frozen=True)
class CorrelationClaim:
    """A claim about the correlation of reward and metric during tuning, read from the numbers
    one notebook run recorded: in kind when the correlation over evaluations is at least
    ``min_r`` and that of their increments between evaluations is positive (both curves trend
    with training, so the first alone comes almost for free)."""

    name: str
    statement: str
    paper: str
    task: str
    r_metric: str
    increment_metric: str
    min_r: float = 0.8
    notebook: str = ""
    figure: str = ""

    def evaluate(self, entries: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        found = {e["metric"]: e.get("value") for e in entries if e.get("task") == self.task}
        row = {"claim": self.name, "statement": self.statement, "paper": self.paper,
               "task": self.task, "measure": "Pearson r of validation reward and metric over "
               "evaluations (increments' r)", "unit": "", "target": None, "direction": 1,
               "judge_says": "", "notebook": self.notebook, "figure": self.figure,
               "source": "figures/results.json (one notebook run)"}
        r, dr = found.get(self.r_metric), found.get(self.increment_metric)
        if r is None or dr is None:
            return {**row, "verdict": f"needs the {self.notebook} notebook's run"}
        kind = r >= self.min_r and dr > 0
        return {**row, "ours": {"r": r, "increment_r": dr}, "in_kind": kind, "in_size": None,
                "verdict": verdict(kind, False, False)}


def seed_results(directory: Path) -> list[dict[str, Any]]:
    """The seed files its ``summary.json`` lists (the committed spread), by seed; [] if none."""
    summary = directory / "summary.json"
    if not summary.exists():
        return []
    seeds = json.loads(summary.read_text())["seeds"]
    missing = [s for s in seeds if not (directory / f"seed{s}.json").exists()]
    if missing:
        raise FileNotFoundError(f"{summary} lists seeds {missing} without their seed<N>.json")
    return [json.loads((directory / f"seed{s}.json").read_text()) for s in sorted(seeds)]


def spread_of(values: Sequence[float]) -> dict[str, float]:
    """``{n, mean, std, min, max}`` over seeds, ``std`` with ``ddof=1`` (as ``seeds`` writes)."""
    from rlcv_lib.core.evaluate import seed_spread  # noqa: PLC0415 - imports jax

    return seed_spread(values)


def in_kind(spread: Mapping[str, float], no_change: float, direction: int) -> bool:
    """At least two seeds, the mean on the paper's side of no change, more than two seed
    standard deviations from it."""
    if spread["n"] < 2 or math.isnan(spread["std"]):
        return False
    shift = (spread["mean"] - no_change) * direction
    return shift > 0 and shift > 2 * spread["std"]


def in_size(mean: float, target: float | None, direction: int) -> bool:
    """The mean meets the target (in the paper's direction)."""
    return target is not None and (mean - target) * direction >= 0


def verdict(kind: bool, size: bool, has_target: bool) -> str:
    if not kind:
        return "not in kind"
    if not has_target:
        return "in kind"
    return "in kind and in size" if size else "in kind, not in size"


def _seeds(task: str) -> str:
    return f"python -m rlcv_lib seeds {task} cpu --seeds 1 2 --out figures/seeds/{task}"


# The paper's claims (its Figure 1, Figure 6, the captioning comparison and the Discussion's
# warning) and the design doc's targets (docs/design.md §8.6).
CLAIMS: tuple[Claim | CorrelationClaim, ...] = (
    Claim("Figure 1a", "detection: reward tuning raises mAP, with much higher recall",
          "mAP 39 → 54 (+15)", "detection", "detection",
          Measure("tuned", "mAP", scale=100, unit="points"), target=10.0,
          judge=Judge(Measure("tuned", "recall50", scale=100), at_least=0.0,
                      says="recall@0.5 up"),
          notebook="03_detection", figure="detection_tuning_curve.png",
          command=_seeds("detection")),
    Claim("Figure 1b", "panoptic: reward tuning raises PQ and removes incoherent predictions, "
          "especially small ones", "PQ 43.1 → 46.1 (+3.0)", "panoptic", "panoptic",
          Measure("tuned, greedy", "PQ", unit="points"), target=2.0,
          judge=Judge(Measure("tuned, greedy", "incoherent_small"), at_most=0.0,
                      says="fewer incoherent small segments per image"),
          notebook="06_panoptic", figure="panoptic_segment_sizes.png",
          command=_seeds("panoptic")),
    Claim("Figure 1c", "colorization: reward tuning raises colourfulness (colour diversity and "
          "saturation)", "colourfulness 0.41 → 1.79 (×4.4)", "colorization", "colorization",
          Measure("guarded, T=1", "colourfulness", kind="ratio", unit="×"), target=2.0,
          # -1 dB: colorization.select_luma_drop's default, the bound its tuning selects by
          judge=Judge(Measure("guarded, T=1", "luma_psnr"), at_least=-1.0,
                      says="luma PSNR within 1 dB of MLE's"),
          notebook="05_colorization", figure="colorization_before_after.png",
          command=_seeds("colorization")),
    Claim("Captioning", "captioning: tuning on CIDEr raises CIDEr", "a gain (the paper's table "
          "values are not available offline)", "captioning", "captioning",
          Measure("LOO, greedy", "CIDEr-D", kind="relative", unit="relative"), target=0.10,
          judge=Judge(Measure("LOO, greedy", "precision"), at_least=0.0,
                      says="grounded object precision not lower than MLE's"),
          notebook="04_captioning", figure="captioning_tuning_curves.png",
          command="python -m rlcv_lib seeds captioning cpu --seeds 0 1 2 "
                  "captioning.grounded_run_weight=0 captioning.mle_as_long=false "
                  "--out figures/seeds/captioning"),
    CorrelationClaim("Figure 6a", "detection: validation reward and mAP rise together during "
                     "tuning", "curves that correlate well", "detection", "reward_map_pearson_r",
                     "reward_map_increment_pearson_r", notebook="03_detection",
                     figure="detection_tuning_curve.png"),
    CorrelationClaim("Figure 6b", "panoptic: validation reward and PQ rise together during "
                     "tuning", "curves that correlate well", "panoptic", "reward_pq_pearson_r",
                     "reward_pq_increment_pearson_r", notebook="06_panoptic",
                     figure="panoptic_tuning_curve.png"),
    Claim("Discussion", "reward hacking is a real risk: detection's reward lets duplicate "
          "boxes grow", "a warning, no number", "detection", "detection",
          Measure("tuned", "duplicates_per_image", unit="per image"),
          notebook="03_detection", figure="detection_before_after.png",
          command=_seeds("detection")),
    Claim("Discussion", "reward hacking is a real risk: colourfulness alone, tuned to the end, "
          "costs luminance fidelity", "a warning, no number", "colorization", "colorization",
          Measure("tuned, last update, T=1", "luma_psnr", unit="dB"), direction=-1,
          notebook="05_colorization", figure="colorization_before_after.png",
          command=_seeds("colorization")),
)


def evaluate_all(figures: Path, entries: Sequence[Mapping[str, Any]],
                 claims: Sequence[Claim | CorrelationClaim] = CLAIMS) -> list[dict[str, Any]]:
    """One row per claim: ours beside the paper's, with its verdict."""
    return [c.evaluate(entries) if isinstance(c, CorrelationClaim) else c.evaluate(figures)
            for c in claims]


def _value(mean: float, std: float | None, unit: str) -> str:
    """``+9.64 ± 0.34 points``, ``×1.64 ± 0.01``, ``+38.4% ± 1.5%`` (no ``±`` without ``std``)."""
    if unit == "relative":
        return f"{100 * mean:+.1f}%" + ("" if std is None else f" ± {100 * std:.1f}%")
    if unit == "×":
        return f"×{mean:.2f}" + ("" if std is None else f" ± {std:.3f}")
    text = f"{mean:+.3g}" + ("" if std is None else f" ± {std:.2g}")
    return f"{text} {unit}" if unit else text


def _ours(row: Mapping[str, Any]) -> str:
    ours = row.get("ours")
    if ours is None:
        return ""
    if "r" in ours:
        return f"r = {ours['r']:.3f}, increments' r = {ours['increment_r']:.3f} (seed 0)"
    seeds = ", ".join(str(s) for s in row["seeds"])
    return f"{_value(ours['mean'], ours['std'], row['unit'])} (seeds {seeds})"


def _judge(row: Mapping[str, Any]) -> str:
    j = row.get("judge")
    if j is None:
        return row["judge_says"]
    return f"{row['judge_says']}: {_value(j['mean'], j['std'], '')}"


def to_markdown(rows: Sequence[Mapping[str, Any]]) -> list[str]:
    """The claims table as markdown lines."""
    lines = ["## The paper's claims beside ours", "",
             "One row per claim; ours on the scenes world, cpu preset, test split, from the "
             "committed seed runs (mean ± seed standard deviation). Verdict rule "
             "(`rlcv_lib/claims.py`, docs/design.md §8.6): *in kind* = two or more seeds, the "
             "paper's direction and a mean more than two seed standard deviations from no "
             "change; *in size* = in kind, the design doc's target met and the judge's "
             "condition holding.", "",
             "| claim | the paper | ours | measure | target | judge | verdict | notebook | "
             "figure |", "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        target = "" if r["target"] is None else _value(r["target"], None, r["unit"])
        cells = [r["claim"], f"{r['statement']}: {r['paper']}", _ours(r), r["measure"], target,
                 _judge(r), r["verdict"], r["notebook"], r["figure"]]
        lines.append("| " + " | ".join(cells) + " |")
    return lines
