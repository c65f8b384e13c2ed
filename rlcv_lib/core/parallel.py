"""Data parallelism with one code path for 1 and many devices (and hosts).

A 1-D mesh with axis ``"data"`` spans all devices. Batches are sharded along their leading
axis; model and optimizer state are replicated. Jitted step functions need no change: given
sharded inputs and replicated parameters, XLA partitions the computation and inserts the
gradient all-reduce itself. On one device every function here is a cheap no-op placement.

Multi-host: call :func:`maybe_initialize_distributed` first thing in each process; each process
then builds only its share of every batch (:func:`process_slice`), and :func:`shard_batch`
assembles the global array from the per-process pieces.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np
from flax import nnx
from jax.sharding import Mesh, NamedSharding, PartitionSpec

DATA = "data"


def maybe_initialize_distributed() -> bool:
    """Calls ``jax.distributed.initialize`` when the environment asks for a multi-process run.

    It asks when ``JAX_COORDINATOR_ADDRESS`` (``host:port`` of process 0) is set, with
    ``JAX_NUM_PROCESSES`` and ``JAX_PROCESS_ID`` (passed on here: this JAX does not read them
    itself), or when ``RLCV_DISTRIBUTED=1`` (for clusters whose launcher JAX auto-detects:
    SLURM, Cloud TPU, Open MPI). CPU processes exchange gradients through gloo. Must run before
    anything touches the devices. Returns whether it initialised.
    """
    address = os.environ.get("JAX_COORDINATOR_ADDRESS")
    if not (address or os.environ.get("RLCV_DISTRIBUTED") == "1"):
        return False
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # accelerators: their own
    if address:
        missing = [v for v in ("JAX_NUM_PROCESSES", "JAX_PROCESS_ID") if v not in os.environ]
        if missing:
            raise ValueError(f"JAX_COORDINATOR_ADDRESS={address} is set but {missing} are not")
        jax.distributed.initialize(coordinator_address=address,
                                   num_processes=int(os.environ["JAX_NUM_PROCESSES"]),
                                   process_id=int(os.environ["JAX_PROCESS_ID"]))
    else:
        jax.distributed.initialize()
    return True


def make_mesh(devices: Sequence[jax.Device] | None = None) -> Mesh:
    """A 1-D ``("data",)`` mesh over ``devices`` (default: all devices of all processes)."""
    devices = list(jax.devices() if devices is None else devices)
    if not devices:
        raise ValueError("make_mesh needs at least one device")
    return Mesh(np.array(devices), (DATA,))


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading axis split over ``data``; other axes whole."""
    return NamedSharding(mesh, PartitionSpec(DATA))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def process_slice(global_batch_size: int) -> slice:
    """The examples ``[start, stop)`` of a global batch that this process must build."""
    n = jax.process_count()
    if global_batch_size % n:
        raise ValueError(f"global batch size {global_batch_size} is not divisible by the "
                         f"{n} processes")
    per = global_batch_size // n
    return slice(jax.process_index() * per, (jax.process_index() + 1) * per)


def shard_batch(batch: Any, mesh: Mesh) -> Any:
    """Places each array leaf of this process's ``batch`` as a slice of a global array sharded
    on its leading axis. Non-array leaves (e.g. caption strings for a host-side reward) stay
    as they are.

    Every array's leading dimension times the number of processes must be divisible by the
    number of devices in ``mesh``.
    """
    sharding = batch_sharding(mesh)
    local_devices = mesh.size // jax.process_count()

    def place(path, x):
        if (not isinstance(x, (np.ndarray, jax.Array)) or np.ndim(x) == 0
                or np.dtype(x.dtype).kind not in "biuf"):  # strings etc. stay on the host
            return x
        if x.shape[0] % local_devices:
            raise ValueError(
                f"batch leaf {jax.tree_util.keystr(path)} has leading dimension {x.shape[0]}, "
                f"not divisible by the {local_devices} local devices of the mesh")
        return jax.make_array_from_process_local_data(sharding, np.asarray(x))

    return jax.tree_util.tree_map_with_path(place, batch)


def replicate(obj: nnx.Object, mesh: Mesh) -> None:
    """Puts every array of an NNX module or optimizer on all devices of ``mesh``, in place."""
    state = nnx.state(obj)
    nnx.update(obj, jax.device_put(state, replicated(mesh)))
