"""The benchmark scripts: their recording logic, and the cheap ones end to end at tiny sizes.

No timing is asserted: only that rows carry the right reference, ratio and target, and that
the scripts' own agreement checks pass. The JAX-heavy scripts (sampler cells, training grid,
``bench_gpu.py --quick``) take about a minute each on 2 cores and are left to ``make bench``.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "benchmarks"
sys.path.insert(0, str(BENCH))

import bench_gpu  # noqa: E402
import bench_sampler  # noqa: E402
from record import Suite  # noqa: E402


def _run(script: str, *args: str) -> str:
    out = subprocess.run([sys.executable, str(BENCH / script), *args], capture_output=True,
                         text=True, timeout=120, cwd=BENCH.parent)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout


def test_table_has_note_column_and_marks_unmet_targets():
    suite = Suite("x", "title")
    suite.add("fast", 2.0, "s", reference="slow", ratio=3.0, target=">= 5x", met=False,
              note="n1")
    suite.add("plain", 1.0, "tokens/s")
    table = suite.table()
    assert "| fast | 2 | s | slow | 3 | >= 5x | **no** | n1 |" in table
    assert "| plain | 1 | tokens/s |  |  |  |  |  |" in table


def _cell(cache, length, seqs, tok_s, **kw):
    return dict(cache=cache, L=length, seqs=seqs, unroll=1, tok_s=tok_s, seq_s=tok_s / length,
                compile_s=1.0, call_s=seqs * length / tok_s, params=1e6, devices="cpu",
                agree=None if cache else 1.0, temp_mb=1.0, **kw)


def test_sampler_rows_get_ratios_and_the_design_targets():
    class Args:
        preset, vocab, repeats = "cpu", 100, 2

    rows = [_cell(True, 60, 16, 6000.0), _cell(False, 60, 16, 600.0),
            _cell(True, 108, 16, 4000.0), _cell(False, 108, 16, 1000.0),
            _cell(True, 108, 256, 12000.0), _cell(True, 36, 256, 12000.0),
            dict(cache=False, L=600, seqs=4, unroll=1, timeout=150.0)]
    suite = Suite("sampler", "t")
    bench_sampler.record_cells(suite, rows, Args)
    by = {m.name: m for m in suite.rows}
    short = by["KV cache L=60 seqs=16"]
    assert short.ratio == pytest.approx(10.0) and short.target is None  # < 100 tokens
    long = by["KV cache L=108 seqs=16"]
    assert long.ratio == pytest.approx(4.0) and long.met is False  # >= 5x at 100+ tokens
    big = by["KV cache L=36 seqs=256"]  # the cpu detection sequence
    assert big.ratio is None and big.met is True  # >= 10k tokens/s
    assert by["KV cache L=108 seqs=256"].target is None
    assert by["recompute L=60 seqs=16"].ratio is None
    assert any("over the 150 s limit" in n for n in suite.notes)


def test_gpu_bandwidth_defaults_by_device_and_cli_override():
    class Args:
        bandwidth_gbs = 0.0

    assert bench_gpu.bandwidth(Args, "NVIDIA H200")[0] == 4800.0
    assert bench_gpu.bandwidth(Args, "NVIDIA H100 80GB HBM3")[0] == 3350.0
    Args.bandwidth_gbs = 1000.0
    assert bench_gpu.bandwidth(Args, "NVIDIA H200") == (1000.0, "--bandwidth-gbs")


def test_gpu_script_skips_full_sizes_without_a_gpu():
    assert "no GPU" in _run("bench_gpu.py", "--no-save")


def test_detection_reward_script_checks_agreement_then_records():
    out = _run("bench_detection_reward.py", "--batch", "2", "--samples", "2", "--repeats", "1",
               "--no-save")
    assert "## detection_reward" in out and "| ours (paper_compat), cpu" in out


def test_cider_script_checks_agreement_then_records():
    out = _run("bench_cider.py", "--train-images", "40", "--sizes", "2x2", "--repeat", "1",
               "--no-save")
    assert "| ours cold 2x2 |" in out and ">= 10x pycocoevalcap" in out


def test_panoptic_reward_script_checks_agreement_then_records():
    out = _run("bench_panoptic_reward.py", "--images", "2", "--samples", "2", "--upscale", "2",
               "--repeats", "1", "--no-save")
    assert "equal to panopticapi" in out and "| ours, JAX float32 (jit, batched), cpu" in out
    assert "the same maps at 128²" in out


def test_colorization_reward_script_checks_agreement_then_records():
    out = _run("bench_colorization_reward.py", "--images", "2", "--samples", "2", "--size", "64",
               "--repeats", "1", "--no-save")
    assert "JAX float32 equals NumPy float64" in out and "| JAX float32 (jit), 64² B=2×2" in out
