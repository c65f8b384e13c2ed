"""Panoptic's stage II (tasks/panoptic/pretrain.py): the PQ reward of decoded codes, the
judges, and the stage II batch keeping the ground truth, with an untrained stage I."""

import numpy as np
import pytest
from flax import nnx
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlcv_lib import config
from rlcv_lib.core import evaluate as ev
from rlcv_lib.models.vqvae import VQVAE
from rlcv_lib.tasks.panoptic import pretrain as pp
from rlcv_lib.tasks.panoptic import reward
from rlcv_lib.tasks.panoptic import task as pt
from rlcv_lib.tasks.uvim import stage2

CFG = config.get_config("smoke", task="panoptic")


@pytest.fixture(scope="module")
def task():
    return pp.make_task(CFG, stage1_model=VQVAE(CFG.vqvae, rngs=nnx.Rngs(0)))


@pytest.fixture(scope="module")
def val():
    return ev.load_split(CFG, "validation", 8)


def test_the_batch_is_the_colour_image_and_keeps_the_ground_truth(task, val):
    batch = task.batch(val.batch)
    assert set(batch) == {"image", "context", "semantics", "instances", *pp.GROUND_TRUTH}
    np.testing.assert_allclose(batch["image"], val.batch["image"])
    np.testing.assert_allclose(batch["context"], val.batch["image"] * 2 - 1)


def test_the_truths_own_logits_score_pq_one(task, val):
    batch = task.batch(val.batch)
    perfect = {"semantics": batch["semantics"], "instances": batch["instances"]}
    np.testing.assert_allclose(pp.score(perfect, batch), 1.0)
    m = pp.judge(perfect, batch)
    assert m["pq"] == pytest.approx(1.0) and m["segments"] == pytest.approx(m["gt_segments"])


def test_reward_is_the_per_image_pq_of_each_decoded_sample(task, val):
    batch = task.batch(val.batch)
    rng = np.random.default_rng(0)
    samples = rng.integers(0, task.vocab_size + 5, (len(batch["image"]), 2, task.max_len))
    rewards, _ = task.reward(samples, batch)  # out-of-range ids and pads decode too
    assert rewards.shape == (len(batch["image"]), 2)
    assert np.all((rewards >= 0) & (rewards <= 1))
    one = task.decode(samples[3, 1][None], batch["context"][3:3 + 1])
    pred_map, pred_cat = pt.decode_panoptic(one["semantics"], one["instances"])
    want = reward.pq_reward(pred_map, pred_cat, *(batch[k][3:4] for k in pp.GROUND_TRUTH),
                            batch["semantics"].shape[-1] - 1)
    np.testing.assert_allclose(rewards[3, 1], want[0])


def test_detokenize_of_tokenize_is_stage1s_reconstruction(task, val):
    batch = task.batch(val.batch)
    tokens = stage2.truth_tokens(task, val.batch)
    decoded = task.decode(tokens, batch["context"])
    forward = stage2.stage1.reconstruct(task.frozen, {k: batch[k] for k in ("semantics",
                                                                             "instances")},
                                        batch["context"])
    for k in ("semantics", "instances"):
        np.testing.assert_array_equal(decoded[k], np.asarray(forward[k]))


@settings(max_examples=15, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data())
def test_any_code_sequence_decodes_to_valid_segments_with_a_defined_reward(task, val, data):
    batch = task.batch(val.batch)
    b, length = 2, task.max_len
    codes = st.lists(st.integers(0, task.vocab_size - 1), min_size=b * length,
                     max_size=b * length)
    tokens = np.asarray(data.draw(codes), np.int32).reshape(b, length)
    sub = {k: v[:b] for k, v in batch.items()}
    pred_map, pred_cat = pp.segments(task.decode(tokens, sub["context"]))
    c = batch["semantics"].shape[-1] - 1
    reward.check_inputs(pred_map, pred_cat, *(sub[k] for k in pp.GROUND_TRUTH), c)  # valid
    got = pp.score(task.decode(tokens, sub["context"]), sub)
    assert got.shape == (b,) and np.all(np.isfinite(got)) and np.all((got >= 0) & (got <= 1))
