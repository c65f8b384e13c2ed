"""The claims table: measures per seed, the verdict rule, and the committed seed runs it reads."""

import json
from pathlib import Path

import pytest

from rlcv_lib import claims, notebook, results

FIGURES = Path(__file__).resolve().parents[1] / "figures"


def _result(seed, tuned, mle=50.0, judge=1.0):
    return {"seed": seed, "gain_over": "MLE",
            "test": {"MLE": {"m": mle, "j": 0.0}, "tuned": {"m": tuned, "j": judge}}}


def _write_seeds(directory, results_, listed=None):
    directory.mkdir(parents=True)
    for r in results_:
        (directory / f"seed{r['seed']}.json").write_text(json.dumps(r))
    seeds = listed if listed is not None else [r["seed"] for r in results_]
    (directory / "summary.json").write_text(json.dumps({"seeds": seeds}))


def _claim(**kw):
    args = dict(name="Fig", statement="s", paper="p", task="t", seeds_dir="t",
                measure=claims.Measure("tuned", "m"), target=2.0, command="make seeds")
    return claims.Claim(**{**args, **kw})


def test_measure_kinds_compare_a_row_with_its_base():
    r = _result(0, tuned=60.0, mle=40.0)
    assert claims.Measure("tuned", "m").of(r) == 20.0
    assert claims.Measure("tuned", "m", scale=100).of(r) == 2000.0
    assert claims.Measure("tuned", "m", kind="ratio").of(r) == 1.5
    assert claims.Measure("tuned", "m", kind="relative").of(r) == 0.5
    assert claims.Measure("MLE", "m", base="tuned").of(r) == -20.0
    with pytest.raises(KeyError, match="no test row 'absent'"):
        claims.Measure("absent", "m").of(r)
    with pytest.raises(ValueError, match="kind"):
        claims.Measure("tuned", "m", kind="log")


@pytest.mark.parametrize("values, direction, expected", [
    ([3.0, 3.2], 1, True),        # clear gain
    ([3.0, -2.0], 1, False),      # within two standard deviations of no change
    ([-3.0, -3.2], 1, False),     # the wrong direction
    ([-3.0, -3.2], -1, True),     # a drop the paper claims
    ([3.0], 1, False),            # one seed gives no spread
])
def test_in_kind_rule(values, direction, expected):
    assert claims.in_kind(claims.spread_of(values), 0.0, direction) is expected


def test_claim_verdicts_from_seed_files(tmp_path):
    _write_seeds(tmp_path / "seeds" / "t", [_result(1, 53.0), _result(2, 53.2)])
    row = _claim().evaluate(tmp_path)
    assert row["seeds"] == [1, 2] and row["ours"]["mean"] == pytest.approx(3.1)
    assert row["verdict"] == "in kind and in size"
    assert _claim(target=5.0).evaluate(tmp_path)["verdict"] == "in kind, not in size"
    assert _claim(target=None).evaluate(tmp_path)["verdict"] == "in kind"
    assert _claim(direction=-1).evaluate(tmp_path)["verdict"] == "not in kind"
    ratio = _claim(measure=claims.Measure("tuned", "m", kind="ratio"), target=1.05)
    assert ratio.evaluate(tmp_path)["verdict"] == "in kind and in size"


def test_a_contradicting_judge_denies_size_not_kind(tmp_path):
    _write_seeds(tmp_path / "seeds" / "t", [_result(1, 53.0, judge=-0.5),
                                            _result(2, 53.2, judge=-0.4)])
    judge = claims.Judge(claims.Measure("tuned", "j"), at_least=0.0, says="judge")
    row = _claim(judge=judge).evaluate(tmp_path)
    assert row["judge"]["mean"] == pytest.approx(-0.45)
    assert row["verdict"] == "in kind, not in size"
    upper = claims.Judge(claims.Measure("tuned", "j"), at_most=0.0, says="fewer")
    assert _claim(judge=upper).evaluate(tmp_path)["verdict"] == "in kind and in size"


def test_missing_seed_runs_name_their_command(tmp_path):
    assert _claim().evaluate(tmp_path)["verdict"] == "needs seed runs: make seeds"
    _write_seeds(tmp_path / "seeds" / "t", [_result(1, 53.0)], listed=[1, 2])
    with pytest.raises(FileNotFoundError, match=r"seeds \[2\]"):
        _claim().evaluate(tmp_path)


def test_correlation_claim_needs_both_correlations():
    c = claims.CorrelationClaim("Fig 6", "s", "p", "det", "r", "dr")
    entries = [{"task": "det", "metric": "r", "value": 0.95},
               {"task": "det", "metric": "dr", "value": 0.2}]
    assert c.evaluate(entries)["verdict"] == "in kind"
    entries[1]["value"] = -0.1  # trends alone do not make a correlation
    assert c.evaluate(entries)["verdict"] == "not in kind"
    assert c.evaluate(entries[:1])["verdict"].startswith("needs")


def test_every_claim_reads_the_committed_runs():
    """Each claim finds its rows and metrics in the committed seed runs and notebook results
    (a renamed row or a missing seed file fails here, not in a reader's table)."""
    entries = json.loads((FIGURES / "results.json").read_text())["entries"]
    rows = claims.evaluate_all(FIGURES, entries)
    assert len(rows) == len(claims.CLAIMS)
    for row in rows:
        assert not row["verdict"].startswith("needs"), row
        assert (FIGURES / row["figure"]).exists(), row["figure"]
    lines = claims.to_markdown(rows)
    assert sum(line.startswith("| Fig") for line in lines) == 5


def test_results_hold_the_claims_only_at_the_cpu_preset(tmp_path):
    ctx = notebook.setup("a_nb", preset="smoke", workdir=str(tmp_path / "w"),
                         figures_dir=str(tmp_path / "f"))
    ctx.record(task="w", metric="n", value=1)
    ctx.finish()
    doc = results.write(ctx.figures, order=["a_nb"])
    assert doc["claims"] == []
    assert "claims beside ours" not in (ctx.figures / "RESULTS.md").read_text()
    cpu = notebook.setup("a_nb", preset="cpu", workdir=str(tmp_path / "w2"),
                         figures_dir=str(tmp_path / "f2"))
    cpu.record(task="w", metric="n", value=1)
    cpu.finish()
    doc = results.write(cpu.figures, order=["a_nb"])
    assert len(doc["claims"]) == len(claims.CLAIMS)  # no seed runs there: each names its command
    assert all(r["verdict"].startswith("needs") for r in doc["claims"])
    assert "claims beside ours" in (cpu.figures / "RESULTS.md").read_text()
