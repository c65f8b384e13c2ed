"""The Task protocol (docs/design.md §7.1): what a task supplies to the shared core.

The trainer, sampler and REINFORCE loop know a task only through these members; everything
task-specific (tokens, grammar, reward, metric) lives in the task module.

Token conventions the core relies on:

* sequences are int32 [L] with ``L = max_len``; ``pad_id`` fills the tail after ``eos_id``
  (``eos_id = None`` for fixed-length outputs, e.g. detection slots or UViM codes);
* the decoder reads a learned start vector at position 0: the vocabulary needs no BOS;
* ``allowed(position, prev_token) -> bool[..., V]`` is part of the policy (MLE, sampling and
  the teacher-forced RL pass all apply it). It must be a pure ``jax.numpy`` function that
  broadcasts ``position`` against ``prev_token`` (``-1`` at position 0) and must leave at least
  one token allowed everywhere. Precomputed per-position masks are ``table[position]``.
* a task object must be hashable (the default identity hash: don't make it an ``eq=True``
  dataclass): ``task.allowed`` becomes part of a static jit argument.

Optional members the core uses when present: ``aux_loss`` and ``policy_mask`` (below), and
``device_reward(samples, batch, frozen) -> (rewards [B,N], aux)`` with ``device_reward_keys``
(the batch entries it reads): a pure ``jax.numpy`` form of ``reward`` for fixed-shape rewards,
jitted on the device when ``rl.device_reward`` is set (``reward`` stays its test oracle).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

import jax
import numpy as np

Batch = Mapping[str, Any]


@runtime_checkable
class Task(Protocol):
    """A task: tokenizer, allowed-token rule, reward, metric (and an optional frozen state)."""

    name: str
    vocab_size: int
    max_len: int
    pad_id: int
    eos_id: int | None
    frozen: Any
    """Frozen pytree the reward/detokenizer use (UViM's VQ-VAE), or None. Never trained: the
    steps pass it to jitted code as an argument that is not donated, never closed over (a
    closed-over array is baked into the compiled step)."""

    def tokenize(self, example: Mapping[str, Any]) -> np.ndarray:
        """The MLE target of one example: int32 [L]."""

    def allowed(self, position: jax.Array, prev_token: jax.Array) -> jax.Array:
        """Tokens allowed at ``position`` after ``prev_token``: bool [..., V]."""

    def detokenize(self, tokens: np.ndarray) -> Any:
        """One prediction (boxes, map, image, caption) from int32 [L]; never raises on a
        malformed sequence (it decodes to a valid, possibly empty, prediction)."""

    def reward(self, samples: np.ndarray, batch: Batch, frozen: Any
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Rewards float32 [B,N] of ``samples`` int32 [B,N,L] for the images of ``batch``,
        plus auxiliaries: 0-d entries are logged as metrics, array entries are passed to
        ``aux_loss``. Host-side (NumPy) or jnp; it runs between the jitted sampler and update."""

    def evaluate(self, predictions: list, examples: list) -> dict[str, float]:
        """The task's judge metric on decoded predictions (through the reference library)."""

    def draw(self, example: Mapping[str, Any], prediction: Any, ax=None) -> Any:
        """Matplotlib drawing of a prediction over its image."""


def aux_loss(task: Task, log_softmax: jax.Array, samples: jax.Array,
             aux: Mapping[str, jax.Array]) -> jax.Array | None:
    """The task's auxiliary loss, if it defines ``aux_loss(log_softmax [B,N,L,V], samples
    [B,N,L], aux) -> scalar`` (e.g. detection's confidence loss); else None."""
    fn = getattr(task, "aux_loss", None)
    return None if fn is None else fn(log_softmax, samples, aux)


def policy_mask(task: Task, samples: jax.Array) -> jax.Array | None:
    """Positions bool [B,N,L] that carry the REINFORCE term, if the task restricts them
    (``policy_mask(samples)``, e.g. detection without its confidence tokens); else None."""
    fn = getattr(task, "policy_mask", None)
    return None if fn is None else fn(samples)


def check_task(task: Any) -> None:
    """Raises TypeError/ValueError naming what a task object lacks or gets wrong."""
    missing = [m for m in ("name", "vocab_size", "max_len", "pad_id", "eos_id", "frozen",
                           "tokenize", "allowed", "detokenize", "reward")
               if not hasattr(task, m)]
    if missing:
        raise TypeError(f"{type(task).__name__} is not a Task: missing {missing}")
    for name in ("pad_id", "eos_id"):
        v = getattr(task, name)
        if v is not None and not 0 <= v < task.vocab_size:
            raise ValueError(f"{name}={v} outside the vocabulary [0, {task.vocab_size})")
