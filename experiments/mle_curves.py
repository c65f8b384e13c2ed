"""MLE validation curves side by side, at equal updates and at equal seconds.

Each ``NAME=HISTORY[+SECONDS]`` is a pretraining ``history.jsonl`` (a run's workdir or a
shipped checkpoint's); ``+SECONDS`` adds a cost paid before the run (e.g. the scenes encoder's
pretraining, counted once). Prints two Markdown tables of the ``--metrics`` of the
evaluation records: one row per run and ``--steps`` value (the evaluation at that update), and
one row per run and ``--seconds`` value (the last evaluation its clock, plus the added cost,
had reached by then). The clocks are the runs' own ``time`` fields: wall seconds of the machine
each ran on, under whatever load it had (say so beside the numbers).

    python experiments/mle_curves.py \\
        encoder=checkpoints/detection-cpu/history.jsonl+1247 \\
        random=figures/encoder_comparison/detection_random_init_history.jsonl \\
        --metrics mAP recall50 boxes_per_image nll_class \\
        --steps 500 1000 2000 3000 32000 --seconds 1000 2631 3878

Results: notes/scenes_encoder.md.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def evaluations(path: Path) -> list[dict]:
    """The evaluation records of a history file, one per step (the last written), by step."""
    by_step = {}
    for line in path.read_text().splitlines():
        rec = json.loads(line)
        if rec.get("kind") == "eval":
            by_step[rec["step"]] = rec
    return [by_step[s] for s in sorted(by_step)]


def parse_run(spec: str) -> tuple[str, list[dict], float]:
    name, _, rest = spec.partition("=")
    path, _, extra = rest.partition("+")
    if not name or not path:
        raise SystemExit(f"expected NAME=HISTORY[+SECONDS], got {spec!r}")
    return name, evaluations(Path(path)), float(extra or 0.0)


def fmt(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else str(value)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="+", help="NAME=HISTORY[+SECONDS]")
    parser.add_argument("--metrics", nargs="+", default=["mAP"])
    parser.add_argument("--steps", nargs="*", type=int, default=[])
    parser.add_argument("--seconds", nargs="*", type=float, default=[])
    args = parser.parse_args()
    runs = [parse_run(s) for s in args.runs]
    head = ["run", "update", "own s", "counted s", *args.metrics]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    for name, evals, extra in runs:
        for rec in (r for r in evals if r["step"] in args.steps):
            print("| " + " | ".join([name, str(rec["step"]), f"{rec['time']:.0f}",
                                     f"{rec['time'] + extra:.0f}",
                                     *(fmt(rec.get(m, "")) for m in args.metrics)]) + " |")
    if args.seconds:
        head = ["run", "budget s", "reached update", "counted s", *args.metrics]
        print("\n| " + " | ".join(head) + " |\n|" + "---|" * len(head))
        for budget in args.seconds:
            for name, evals, extra in runs:
                reached = [r for r in evals if r["time"] + extra <= budget]
                cells = [name, f"{budget:.0f}", "none", "", *([""] * len(args.metrics))]
                if reached:
                    rec = reached[-1]
                    cells[2:] = [str(rec["step"]), f"{rec['time'] + extra:.0f}",
                                 *(fmt(rec.get(m, "")) for m in args.metrics)]
                print("| " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
