"""The command line: ``python -m rlcv_lib pretrain|ship|tune|seeds TASK PRESET [key=value]``."""

import json
import subprocess
import sys

import pytest

from rlcv_lib import cli
from rlcv_lib.core import checkpoint


def _run(capsys, *argv):
    """(exit code, stdout, stderr) of the command line, in this process."""
    try:
        code = cli.main(list(argv))
    except SystemExit as e:
        code = e.code
    out = capsys.readouterr()
    return code, out.out, out.err


@pytest.mark.parametrize("argv", [["--help"], ["pretrain", "--help"], ["ship", "--help"],
                                  ["tune", "--help"], ["seeds", "--help"]])
def test_help_exits_zero_and_lists_the_choices(capsys, argv):
    code, out, _ = _run(capsys, *argv)
    assert code == 0 and "usage: python -m rlcv_lib" in out
    if argv == ["--help"]:
        assert all(c in out for c in ("pretrain", "ship", "tune", "seeds", "detection", "cpu"))


@pytest.mark.parametrize("argv,message", [
    (["tune", "nope", "cpu"], "unknown task 'nope'; choose one of ['toy', 'scenes_encoder', "
                              "'detection', 'captioning', 'colorization', 'panoptic']"),
    (["tune", "detection", "cpux"], "unknown preset 'cpux'"),
    (["tune", "detection", "cpu", "tune.nope=1"], "unknown config field 'tune.nope'"),
    (["tune", "detection", "cpu", "tune.lr=fast"], "tune.lr must be float, got 'fast'"),
    (["tune", "detection", "cpu", "tune.lr"], "override 'tune.lr' is not key=value"),
    (["tune", "detection", "cpu", "--seed", "1", "run.seed=2"], "give the seed once"),
    (["pretrain", "detection", "cpu", "--stage", "stage2"], "task 'detection' has no stage "
                                                            "'stage2'; its stages: ['mle']"),
    (["pretrain", "toy", "cpu"], "task 'toy' has no shipped checkpoints"),
    (["tune", "detection", "smoke", "world.image_size=48"], "model.image_size=32 contradicts "
                                                            "world.image_size=48"),
    (["tune", "toy", "cpu"], "task 'toy' has no tuning entry point; run its notebook "
                             "02_reward_tuning_toy"),
])
def test_errors_name_what_is_wrong(capsys, argv, message):
    code, out, err = _run(capsys, *argv)
    assert code == 2 and message in err and "Traceback" not in err and out == ""


def test_an_unknown_option_is_refused(capsys):
    code, _, err = _run(capsys, "tune", "detection", "cpu", "--sed", "1")
    assert code == 2 and "unrecognized arguments: --sed 1" in err


def test_ship_without_a_run_says_what_to_run_first(capsys, tmp_path):
    code, _, err = _run(capsys, "ship", "detection", "smoke", "--workdir", str(tmp_path))
    assert code == 2 and "python -m rlcv_lib pretrain detection smoke" in err


def test_pretrain_then_ship_a_given_step(capsys, tmp_path):
    work = tmp_path / "mle"
    code, out, _ = _run(capsys, "pretrain", "detection", "smoke", "train.num_steps=4",
                        "train.eval_every=2", "train.ckpt_every=2", "train.schedule=constant",
                        "run.progress=false", "--workdir", str(work))
    lines = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["step"] for r in lines if r.get("kind") == "eval"] == [0, 2, 4]
    assert set(lines[-1]["wrong_image_control"]) == {"true", "wrong", "gap"}
    code, out, _ = _run(capsys, "ship", "detection", "smoke", "train.num_steps=4",
                        "train.schedule=constant", "--workdir", str(work), "--at", "2",
                        "--out", str(tmp_path / "shipped"))
    manifest = checkpoint.read_manifest(tmp_path / "shipped")
    assert code == 0 and manifest["steps"] == 2 and manifest["task"] == "detection"
    assert json.loads(out)["shipped"] == str(tmp_path / "shipped")


def test_seeds_writes_each_seed_and_their_spread(capsys, tmp_path):
    code, out, _ = _run(capsys, "seeds", "detection", "smoke", "--seeds", "3", "4",
                        "tune.num_steps=1", "tune.eval_every=1", "train.num_steps=1",
                        "detection.val_size=4", "run.eval_examples=4", "run.progress=false",
                        "--workdir", str(tmp_path))
    assert code == 0
    per_seed = [json.loads((tmp_path / f"seed{s}.json").read_text()) for s in (3, 4)]
    assert [r["seed"] for r in per_seed] == [3, 4]
    assert all(r["config"]["detection"]["val_size"] == 4 for r in per_seed)
    assert all(r["config"]["tune"]["num_steps"] == 1 for r in per_seed)
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["seeds"] == [3, 4] and summary["gain_over"] == "MLE"
    maps = [r["test"]["tuned"]["mAP"] for r in per_seed]
    assert summary["rows"]["tuned"]["mAP"]["mean"] == pytest.approx(sum(maps) / 2)
    gains = [r["test"]["tuned"]["mAP"] - r["test"]["MLE"]["mAP"] for r in per_seed]
    assert summary["gains"]["tuned"]["mAP"]["max"] == pytest.approx(max(gains))
    rows = [json.loads(line) for line in out.splitlines()]
    assert [r["eval"]["step"] for r in rows if "eval" in r] == [0, 1, 0, 1]
    assert [r["row"] for r in rows if "row" in r] == list(per_seed[0]["test"]) * 2


def test_seeds_summary_on_hand_built_results():
    results = [{"seed": s, "test": {"MLE": {"mAP": 0.40, "n": 2}, "tuned": {"mAP": m, "n": 2}}}
               for s, m in ((0, 0.50), (1, 0.52), (2, 0.48))]
    out = cli.seeds_summary(results)
    assert out["rows"]["tuned"]["mAP"]["mean"] == pytest.approx(0.50)
    assert out["gains"]["tuned"]["mAP"]["mean"] == pytest.approx(0.10)
    assert out["gains"]["tuned"]["mAP"]["std"] == pytest.approx(0.02)
    assert "MLE" not in out["gains"]
    named = [{**r, "test": {"truth": {"mAP": 1.0}, **r["test"]}, "gain_over": "MLE"}
             for r in results]  # a reference row first: the gains are still over the MLE row
    out = cli.seeds_summary(named)
    assert out["gain_over"] == "MLE" and out["gains"]["tuned"]["mAP"]["mean"] == pytest.approx(0.1)
    assert out["gains"]["truth"]["mAP"]["mean"] == pytest.approx(0.6)


def test_gather_seeds_adds_earlier_seeds_of_the_same_experiment_only(tmp_path):
    def result(seed, lr=1e-4, task="detection"):
        return {"task": task, "preset": "smoke", "seed": seed, "start": None,
                "config": {"run": {"seed": seed, "progress": seed % 2 == 0}, "tune": {"lr": lr}}}

    (tmp_path / "seed0.json").write_text(json.dumps(result(0)))
    (tmp_path / "seed5.json").write_text(json.dumps(result(5, lr=3e-4)))  # another recipe
    (tmp_path / "seed6.json").write_text(json.dumps(result(6, task="captioning")))
    (tmp_path / "seed1.json").write_text(json.dumps(result(1, lr=9.0)))  # rerun below
    got = cli.gather_seeds(tmp_path, [result(2), result(1)])
    assert [r["seed"] for r in got] == [0, 1, 2]
    assert got[1]["config"]["tune"]["lr"] == 1e-4  # the run of now, not the older file


def test_python_dash_m_runs_the_command_line():
    done = subprocess.run([sys.executable, "-m", "rlcv_lib", "tune", "nope", "cpu"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 2 and "unknown task 'nope'" in done.stderr
