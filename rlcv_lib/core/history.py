"""Metric history: one JSON record per line, appended as training runs.

A record is a flat dict with at least ``step`` (completed training steps) and ``kind``
(``"train"`` for log intervals, ``"eval"`` for evaluations), e.g.::

    {"kind": "train", "step": 100, "time": 12.3, "loss": 0.41, "reward_mean": 0.2, ...}
    {"kind": "eval", "step": 100, "time": 14.0, "val_map": 31.5, "kl": 0.02}

These files are the data of the reward-vs-metric curves. A resumed run first drops the
records written after its checkpoint (:meth:`History.truncate`), so an interrupted and resumed
run leaves the same history as an uninterrupted one, apart from the timings and the one log
interval that the interruption cut (its steps are split over two records, or, for a killed
run, the steps after the checkpoint appear only once, from the resumed run).
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np


def _plain(value: Any) -> Any:
    """NumPy/JAX scalars and 0-d arrays -> Python numbers; other values unchanged."""
    if isinstance(value, (bool, int, float, str)) or value is None:
        return value
    arr = np.asarray(value)
    if arr.ndim == 0:
        return arr.item()
    return arr.tolist()


class History:
    """An append-only list of metric records, mirrored to a JSONL file when ``path`` is set.

    Non-finite floats are written as the JSON extensions ``NaN``/``Infinity`` (which
    :func:`read` parses back), so a diverging run stays visible in its history.
    """

    def __init__(self, path: str | os.PathLike | None = None):
        self.path = None if path is None else Path(path)
        self._records: list[dict[str, Any]] = read(self.path) if self.path else []
        if self.path is not None and self.path.exists():
            text = self.path.read_text()
            if text and not text.endswith("\n"):  # torn last write of a killed run
                self._rewrite()

    def _rewrite(self) -> None:
        tmp = self.path.with_suffix(self.path.suffix + ".tmp")
        tmp.write_text("".join(json.dumps(r) + "\n" for r in self._records))
        tmp.replace(self.path)

    def append(self, record: Mapping[str, Any]) -> dict[str, Any]:
        if "step" not in record:
            raise ValueError(f"a history record needs a 'step'; got keys {sorted(record)}")
        rec = {k: _plain(v) for k, v in record.items()}
        self._records.append(rec)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with open(self.path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        return rec

    def truncate(self, after_step: int) -> int:
        """Drops records with ``step > after_step`` (in memory and on disk); returns how many."""
        keep = [r for r in self._records if r["step"] <= after_step]
        dropped = len(self._records) - len(keep)
        self._records = keep
        if dropped and self.path is not None:
            self._rewrite()
        return dropped

    def records(self, kind: str | None = None) -> list[dict[str, Any]]:
        return [dict(r) for r in self._records if kind is None or r.get("kind") == kind]

    def column(self, key: str, kind: str | None = None) -> tuple[np.ndarray, np.ndarray]:
        """(steps, values) of the records that have ``key``: the input of a curve plot."""
        rows = [(r["step"], r[key]) for r in self.records(kind) if key in r]
        steps = np.array([s for s, _ in rows], dtype=np.int64)
        values = np.array([math.nan if v is None else v for _, v in rows], dtype=np.float64)
        return steps, values

    def __len__(self) -> int:
        return len(self._records)

    def __iter__(self) -> Iterable[dict[str, Any]]:
        return iter(self.records())


def read(path: str | os.PathLike) -> list[dict[str, Any]]:
    """All records of a history file (an empty list if it does not exist yet)."""
    path = Path(path)
    if not path.exists():
        return []
    out = []
    lines = path.read_text().splitlines()
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError as e:
            if lineno == len(lines):  # a write torn by a killed process: drop it
                break
            raise ValueError(f"{path}:{lineno}: not a JSON record ({e}): {line[:80]!r}") from None
    return out
