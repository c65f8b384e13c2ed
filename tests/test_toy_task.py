"""The toy sorting task: tokens, rule, reward and metric."""

import jax.numpy as jnp
import numpy as np
import pytest

from rlcv_lib.core.task import check_task
from rlcv_lib.tasks.toy.task import EOS, PAD, SortTask


@pytest.fixture(scope="module")
def task():
    return SortTask()


def test_is_a_task(task):
    check_task(task)
    assert (task.vocab_size, task.max_len) == (12, 5)


def test_tokenize_detokenize_roundtrip(task):
    ex = {"values": np.array([7, 2, 9])}
    toks = task.tokenize(ex)
    np.testing.assert_array_equal(toks, [4, 9, 11, EOS, PAD])
    assert task.detokenize(toks) == [2, 7, 9]
    assert task.detokenize(np.array([EOS, 3, 4, 5, 6])) == []  # malformed: empty, no error


def test_batch_is_a_pure_function_of_seed_and_step(task):
    a, b, c = task.batch(0, 3, 4), task.batch(0, 3, 4), task.batch(0, 4, 4)
    np.testing.assert_array_equal(a["image"], b["image"])
    assert not np.array_equal(a["tokens"], c["tokens"])
    assert a["image"].shape == (4, 32, 32, 3) and a["image"].dtype == np.float32
    # the image encodes the values: band i's red channel is value/9
    for img, vals in zip(a["image"], a["values"], strict=True):
        for i, v in enumerate(vals[vals >= 0]):
            assert img[i * 8, 0, 0] == pytest.approx(round(255 * v / 9) / 255)


def test_every_target_is_allowed(task):
    batch = task.batch(1, 0, 64)
    toks = batch["tokens"]
    for row in toks:
        for t, tok in enumerate(row[:np.flatnonzero(row == EOS)[0] + 1]):
            assert bool(task.allowed(jnp.int32(t), jnp.int32(-1))[tok])
    assert not bool(task.allowed(jnp.int32(0), jnp.int32(-1))[EOS])  # at least one number
    assert task.allowed(jnp.int32(4), jnp.int32(3)).tolist() == [False, True] + [False] * 10


def test_reward_and_evaluate(task):
    batch = {"tokens": np.array([[4, 9, EOS, PAD, PAD]])}
    samples = np.array([[[4, 9, EOS, PAD, PAD], [4, 8, EOS, PAD, PAD], [9, 4, 5, EOS, PAD]]])
    r, aux = task.reward(samples, batch, None)
    np.testing.assert_allclose(r, [[1.0, 0.8, 0.2]])
    assert aux["exact_match"] == pytest.approx(1 / 3)
    m = task.evaluate([[2, 7], [2]], [{"values": np.array([7, 2])}, {"values": np.array([1, 3])}])
    assert m == {"exact_match": 0.5, "count_error": 0.5}
