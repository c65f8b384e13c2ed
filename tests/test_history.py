"""Metric history: JSONL round trip, truncation on resume, torn last lines, columns."""

import json
import math

import numpy as np
import pytest

from rlcv_lib.core.history import History, read


def test_round_trip_with_numpy_and_nonfinite_values(tmp_path):
    path = tmp_path / "h.jsonl"
    h = History(path)
    h.append({"kind": "train", "step": 1, "loss": np.float32(0.5), "n": np.int64(3)})
    h.append({"kind": "train", "step": 2, "loss": float("nan"), "lengths": np.array([1, 2])})
    h.append({"kind": "eval", "step": 2, "val": float("inf")})
    recs = read(path)
    assert recs[0] == {"kind": "train", "step": 1, "loss": 0.5, "n": 3}
    assert math.isnan(recs[1]["loss"]) and recs[1]["lengths"] == [1, 2]
    assert recs[2]["val"] == math.inf
    assert [r["step"] for r in History(path).records("train")] == [1, 2]  # reopened
    steps, values = h.column("loss", kind="train")
    assert steps.tolist() == [1, 2] and values[0] == 0.5 and np.isnan(values[1])


def test_truncate_drops_later_records_on_disk(tmp_path):
    path = tmp_path / "h.jsonl"
    h = History(path)
    for step in range(1, 6):
        h.append({"kind": "train", "step": step})
    assert h.truncate(after_step=3) == 2
    assert [r["step"] for r in read(path)] == [1, 2, 3]
    h.append({"kind": "train", "step": 4, "x": 1})
    assert [r["step"] for r in read(path)] == [1, 2, 3, 4]


def test_torn_last_line_is_dropped_and_repaired(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text(json.dumps({"step": 1}) + "\n" + '{"step": 2, "lo')
    h = History(path)
    assert len(h) == 1
    h.append({"step": 2})
    assert [r["step"] for r in read(path)] == [1, 2]


def test_corrupt_middle_line_is_an_error(tmp_path):
    path = tmp_path / "h.jsonl"
    path.write_text('{"step": 1}\nnot json\n{"step": 3}\n')
    with pytest.raises(ValueError, match=r"h.jsonl:2: not a JSON record"):
        read(path)


def test_in_memory_history_and_missing_step():
    h = History()
    h.append({"step": 0, "a": 1})
    assert h.records() == [{"step": 0, "a": 1}]
    with pytest.raises(ValueError, match="needs a 'step'"):
        h.append({"a": 1})
