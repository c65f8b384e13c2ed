"""The Task protocol: what a task must supply, and the optional hooks the core looks for."""

import jax.numpy as jnp
import pytest

from rlcv_lib.core import task as protocol
from rlcv_lib.tasks.toy.task import SortTask


def test_check_task_names_what_is_missing_or_wrong():
    protocol.check_task(SortTask())

    class Half:
        name, vocab_size, max_len, pad_id, eos_id, frozen = "half", 4, 3, 0, None, None

    with pytest.raises(TypeError, match=r"Half is not a Task: missing \['tokenize', 'allowed', "
                                        r"'detokenize', 'reward'\]"):
        protocol.check_task(Half())
    bad = SortTask()
    bad.eos_id = bad.vocab_size
    with pytest.raises(ValueError, match=f"eos_id={bad.vocab_size} outside the vocabulary"):
        protocol.check_task(bad)


def test_optional_hooks_are_used_only_when_a_task_defines_them():
    toy = SortTask()
    samples = jnp.zeros((1, 2, toy.max_len), jnp.int32)
    lsm = jnp.zeros((1, 2, toy.max_len, toy.vocab_size))
    assert protocol.aux_loss(toy, lsm, samples, {}) is None
    assert protocol.policy_mask(toy, samples) is None

    class WithHooks(SortTask):
        def aux_loss(self, log_softmax, samples, aux):
            return jnp.float32(aux["x"])

        def policy_mask(self, samples):
            return samples == 0

    hooked = WithHooks()
    assert float(protocol.aux_loss(hooked, lsm, samples, {"x": 2.0})) == 2.0
    assert bool(protocol.policy_mask(hooked, samples).all())
