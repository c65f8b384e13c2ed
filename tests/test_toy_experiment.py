"""The toy experiment's plumbing: both phases run, histories and evaluations line up."""

import dataclasses

import numpy as np

from rlcv_lib.config import get_config
from rlcv_lib.tasks.toy import experiment as toy_experiment


def test_run_smoke_records_both_phases():
    toy = dataclasses.replace(get_config("smoke").toy, tune_steps=4, eval_every=2)
    result = toy_experiment.run(toy, seed=0, progress=False)
    mle_steps, mle_loss = result.mle_history.column("loss", kind="train")
    assert mle_steps[-1] == toy.mle_steps and np.isfinite(mle_loss).all()
    eval_steps, sampled = result.tune_history.column("sampled_reward", kind="eval")
    assert list(eval_steps) == [0, 2, 4]  # eval_at_start, every 2 updates, and the end
    assert sampled[0] == result.before["sampled_reward"]
    assert sampled[-1] == result.after["sampled_reward"]
    for metrics in (result.before, result.after):
        assert set(metrics) == {"greedy_reward", "greedy_exact", "sampled_reward"}
        assert all(0.0 <= v <= 1.0 for v in metrics.values())
    train_steps, reward = result.tune_history.column("reward_mean", kind="train")
    assert train_steps[-1] == toy.tune_steps and np.isfinite(reward).all()


def test_evaluator_scores_the_target_as_perfect():
    """The evaluator's reward is the task's: the true tokens score 1, a shifted copy less."""
    toy = get_config("smoke").toy
    task = toy_experiment.SortTask(max_numbers=toy.max_numbers, num_values=toy.num_values,
                                   image_size=32)
    _, heldout = toy_experiment.make_evaluator(task, toy, seed=0)
    target = heldout["tokens"][:, None]
    assert task.reward(target, heldout)[0].min() == 1.0
    shifted = np.roll(target, 1, axis=-1)
    assert task.reward(shifted, heldout)[0].mean() < 1.0
