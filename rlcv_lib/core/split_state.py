"""NNX objects as a flat list of arrays, for loops that call a jitted update many times.

``nnx.jit`` walks the object graph of its Module/Optimizer arguments on every call: on the cpu
preset's detector and its Adafactor optimizer (674 state arrays) that costs ~45 ms per call,
more than a whole MLE step on a GPU (``benchmarks/bench_train.py --suite train``). Passing the
``nnx.State`` pytree to ``jax.jit`` instead still costs ~10 ms to rebuild the returned
``State``, and a static ``GraphDef`` argument is hashed on every call. This module splits the
objects once into a ``Structure`` (graph definition and tree definition, both static) and a flat
list of leaves; the jitted function closes over the structure, so a call flattens only a list::

    structure, leaves = split((model, optimizer))
    update = jit_over_leaves(lambda m, o, x: ..., returns_state=True)(structure)
    leaves, out = update(leaves, x)            # same computation as on the live objects
    write_back((model, optimizer), structure, leaves)

``jit_over_leaves(..., donate=True)`` donates the input leaves to the update (the training
loop's pure step, :mod:`rlcv_lib.core.steps`).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from flax import nnx


class Structure(NamedTuple):
    """What a flat leaf list needs to become the objects again (hashable, static)."""

    graphdef: Any
    treedef: Any


def split(objects: Any) -> tuple[Structure, list[jax.Array]]:
    """``(structure, leaves)`` of ``objects`` (a Module, an Optimizer or a tuple of them)."""
    graphdef, state = nnx.split(objects)
    leaves, treedef = jax.tree.flatten(state)
    return Structure(graphdef, treedef), leaves


def merge(structure: Structure, leaves: list[jax.Array]) -> Any:
    """New objects from ``leaves`` (inside a jitted function: traced, costs nothing per call)."""
    return nnx.merge(structure.graphdef, jax.tree.unflatten(structure.treedef, leaves))


def write_back(objects: Any, structure: Structure, leaves: list[jax.Array]) -> None:
    """Updates the live ``objects`` in place with ``leaves``."""
    nnx.update(objects, jax.tree.unflatten(structure.treedef, leaves))


def jit_over_leaves(fn: Callable[..., Any], *, returns_state: bool, donate: bool = False
                    ) -> Callable[[Structure], Callable[..., Any]]:
    """``structure -> jitted(leaves, *args)`` running ``fn(*objects, *args)`` on the merged
    objects (a tuple is unpacked into ``fn``'s leading arguments). With ``returns_state`` it
    returns ``(new_leaves, fn's output)``, the objects' state after ``fn`` mutated them; with
    ``donate`` the input ``leaves`` are donated to it (their buffers become the new state's; the
    caller must not read them afterwards). One compilation per structure (cached), shared by
    every call with that structure."""

    @functools.lru_cache(maxsize=16)
    def for_structure(structure: Structure) -> Callable[..., Any]:
        def over_leaves(leaves, *args):
            objects = merge(structure, leaves)
            as_args = objects if isinstance(objects, tuple) else (objects,)
            out = fn(*as_args, *args)
            if returns_state:
                return jax.tree.leaves(nnx.state(objects)), out
            return out

        return jax.jit(over_leaves, donate_argnums=(0,) if donate else ())

    return for_structure
