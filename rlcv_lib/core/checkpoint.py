"""Checkpoints: training state for exact resume, a keyed MLE cache, shipped starting points.

Three things live here:

* :class:`Checkpointer`: Orbax ``CheckpointManager`` of (model state, optimizer state) per step,
  saved asynchronously; :meth:`Checkpointer.restore` writes a step back into live NNX objects,
  which with a step-indexed data order and RNG makes a resumed run exact.
* the MLE cache: :func:`cache_key` hashes the resolved config, the world version and the code
  version (``rlcv_lib.__version__`` plus a hash of the package's source files), so a cached
  MLE checkpoint is never reused across a change of any of them; :func:`cache_dir` names the
  directory and records the key's ingredients beside it.
* shipped checkpoints (``make pretrain``): model variables only plus a JSON manifest (config
  hash, world version, commit, steps, time, validation metrics); :func:`load_shipped` refuses
  one whose manifest does not match the current config.

Typed PRNG keys (``nnx.Rngs`` state) are stored as their raw key data and re-wrapped on load.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import subprocess
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import jax
import numpy as np
import orbax.checkpoint as ocp
from flax import nnx

import rlcv_lib
from rlcv_lib import config as config_lib
from rlcv_lib.config import Config

MANIFEST = "manifest.json"
CACHE_KEY_FILE = "cache_key.json"


class ManifestMismatchError(RuntimeError):
    """A cached or shipped checkpoint made for another config, world or code version."""


# --------------------------------------------------------------------------- pytrees <-> disk


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _to_disk(tree: Any) -> Any:
    """Pure-dict pytree with typed PRNG keys replaced by their uint32 key data."""
    return jax.tree.map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _from_disk(loaded: Any, like: Any) -> Any:
    """Inverse of :func:`_to_disk`, taking key implementations and placement from ``like``.

    Orbax returns arrays committed to a device; where the live array was not committed (a
    freshly initialised model), the restored one is made uncommitted too, since jit keys its
    compilation cache on commitment: otherwise a resumed run recompiles every step function.
    """
    def convert(x, ref):
        if not getattr(ref, "committed", True):
            x = jax.numpy.asarray(np.asarray(x))
        return jax.random.wrap_key_data(x, impl=jax.random.key_impl(ref)) if _is_key(ref) else x

    return jax.tree.map(convert, loaded, like)


def _abstract(tree: Any) -> Any:
    """Shapes, dtypes and shardings of ``_to_disk(tree)``: the restore target."""
    return jax.tree.map(ocp.utils.to_shape_dtype_struct, _to_disk(tree))


def _pure(obj: nnx.Object, *filters: Any) -> tuple[Any, Any]:
    state = nnx.state(obj, *filters) if filters else nnx.state(obj)
    return state, nnx.to_pure_dict(state)


def _write_back(obj: nnx.Object, state: Any, pure_like: Any, loaded: Any) -> None:
    nnx.replace_by_pure_dict(state, _from_disk(loaded, pure_like))
    nnx.update(obj, state)


# --------------------------------------------------------------------------- training state


class Checkpointer:
    """Orbax checkpoints of ``model`` (+ ``optimizer``) state in ``directory/<step>/``.

    Saves are asynchronous: :meth:`save` returns once the arrays are copied off the device;
    call :meth:`wait` (or :meth:`close`) before relying on the files.
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 2,
                 async_save: bool = True):
        self.directory = Path(directory).absolute()
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep, create=True, enable_async_checkpointing=async_save)
        self._manager = ocp.CheckpointManager(self.directory, options=options)

    def save(self, step: int, model: nnx.Module, optimizer: nnx.Optimizer | None = None) -> None:
        items = {"model": ocp.args.StandardSave(_to_disk(_pure(model)[1]))}
        if optimizer is not None:
            items["optimizer"] = ocp.args.StandardSave(_to_disk(_pure(optimizer)[1]))
        self._manager.save(step, args=ocp.args.Composite(**items), force=True)

    def restore(self, model: nnx.Module, optimizer: nnx.Optimizer | None = None,
                step: int | None = None) -> int:
        """Loads ``step`` (default: the latest) into ``model``/``optimizer``; returns the step.

        Arrays come back with the shardings of the live objects' arrays.
        """
        self.wait()
        if step is None:
            step = self.latest_step()
            if step is None:
                raise FileNotFoundError(f"no checkpoint in {self.directory}")
        if step not in self.all_steps():
            raise FileNotFoundError(
                f"no checkpoint for step {step} in {self.directory}; have {self.all_steps()}")
        objs = {"model": model, **({"optimizer": optimizer} if optimizer is not None else {})}
        live = {name: _pure(obj) for name, obj in objs.items()}
        args = ocp.args.Composite(**{name: ocp.args.StandardRestore(_abstract(pure))
                                     for name, (_, pure) in live.items()})
        try:
            restored = self._manager.restore(step, args=args)
        except (ValueError, KeyError) as e:
            raise ValueError(f"checkpoint {self.directory}/{step} does not fit this "
                             f"model/optimizer (different architecture or optimizer?): {e}") from e
        for name, obj in objs.items():
            state, pure = live[name]
            _write_back(obj, state, pure, restored[name])
        return step

    def latest_step(self) -> int | None:
        return self._manager.latest_step()

    def all_steps(self) -> list[int]:
        return sorted(self._manager.all_steps())

    def wait(self) -> None:
        self._manager.wait_until_finished()

    def close(self) -> None:
        self._manager.wait_until_finished()
        self._manager.close()

    def __enter__(self) -> Checkpointer:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def restore(directory: str | os.PathLike, model: nnx.Module,
            optimizer: nnx.Optimizer | None = None, step: int | None = None) -> int:
    """Loads checkpoint ``step`` (default latest) of ``directory`` into the live objects."""
    with Checkpointer(directory) as ckpt:
        return ckpt.restore(model, optimizer, step)


def all_finite(tree: Any) -> bool:
    """True when every floating leaf of ``tree`` is finite (one device reduction, one sync)."""
    leaves = [x for x in jax.tree.leaves(tree)
              if hasattr(x, "dtype") and jax.numpy.issubdtype(x.dtype, jax.numpy.inexact)]
    if not leaves:
        return True
    return bool(_all_finite(leaves))


@jax.jit
def _all_finite(leaves: list[jax.Array]) -> jax.Array:
    return jax.numpy.all(jax.numpy.stack([jax.numpy.isfinite(x).all() for x in leaves]))


# --------------------------------------------------------------------------- versions and keys


def source_hash(root: str | os.PathLike | None = None) -> str:
    """sha256 (16 hex) of every ``.py`` file under ``root`` (default: the ``rlcv_lib`` package),
    with their relative paths."""
    root = Path(root) if root is not None else Path(rlcv_lib.__file__).parent
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        h.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes() + b"\0")
    return h.hexdigest()[:16]


def code_version() -> str:
    """``"<rlcv_lib.__version__>+<source hash>"``: changes with any edit to the package."""
    return f"{getattr(rlcv_lib, '__version__', 'unversioned')}+{source_hash()}"


def git_commit(cwd: str | os.PathLike | None = None) -> str | None:
    """The current git commit of the package's checkout, or None outside a checkout."""
    cwd = cwd or Path(rlcv_lib.__file__).parent
    try:
        out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True,
                             text=True, timeout=10, check=True)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None


def cache_key_parts(cfg: Config, world_version: Any, *, sections: tuple[str, ...] | None = None,
                    code: str | None = None) -> dict[str, Any]:
    """What an MLE cache key hashes: the (chosen sections of the) config, world and code."""
    return {"config_hash": cfg.hash(sections=sections),
            "preset": cfg.preset,
            "sections": None if sections is None else list(sections),
            "world_version": world_version,
            "code_version": code if code is not None else code_version()}


def cache_key(cfg: Config, world_version: Any, *, sections: tuple[str, ...] | None = None,
              code: str | None = None) -> str:
    """16-hex key of (config sections, world version, code version) for cached checkpoints.

    ``sections`` restricts the config to what the cached thing depends on (e.g. the MLE
    checkpoint does not depend on the reward-tuning section); default: the whole config.
    """
    parts = cache_key_parts(cfg, world_version, sections=sections, code=code)
    blob = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def cache_dir(root: str | os.PathLike, name: str, cfg: Config, world_version: Any, *,
              sections: tuple[str, ...] | None = None) -> Path:
    """``root/<name>-<key>/``, created with a ``cache_key.json`` of the key's ingredients.

    Use it as the ``workdir`` of the MLE ``fit``: an identical config, world and code finds
    its finished checkpoint there (``fit`` restores it and trains zero steps); any change gives
    another directory. Raises :class:`ManifestMismatchError` if the recorded ingredients
    disagree with the key (a corrupted or hand-edited cache).
    """
    parts = cache_key_parts(cfg, world_version, sections=sections)
    key = cache_key(cfg, world_version, sections=sections, code=parts["code_version"])
    path = Path(root) / f"{name}-{key}"
    record = path / CACHE_KEY_FILE
    if record.exists():
        found = json.loads(record.read_text())
        if found != json.loads(json.dumps(parts, default=str)):
            raise ManifestMismatchError(
                f"cache directory {path} records {found}, which does not match its key "
                f"{parts}; delete {path} to rebuild it")
    else:
        path.mkdir(parents=True, exist_ok=True)
        record.write_text(json.dumps(parts, indent=1, sort_keys=True, default=str) + "\n")
    return path


# --------------------------------------------------------------------------- shipped checkpoints


def make_manifest(cfg: Config, world_version: Any, *, steps: int, train_seconds: float,
                  metrics: Mapping[str, Any], sections: tuple[str, ...] | None = None,
                  **extra: Any) -> dict[str, Any]:
    """The manifest of a shipped checkpoint (JSON-serialisable). Its config hash leaves out
    the tuning-only fields (:func:`rlcv_lib.config.tuning_field`): they do not change the
    model MLE produces."""
    return {"config_hash": cfg.hash(sections=sections, mle_only=True),
            "config": cfg.hashed(sections=sections, mle_only=True),
            "preset": cfg.preset,
            "sections": None if sections is None else list(sections),
            "world_version": world_version,
            "code_version": code_version(),
            "commit": git_commit(),
            "steps": int(steps),
            "train_seconds": float(train_seconds),
            "metrics": {k: float(np.asarray(v)) for k, v in metrics.items()},
            "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            **extra}


def _model_vars(model: nnx.Module) -> tuple[Any, Any]:
    return _pure(model, nnx.Not(nnx.RngState))  # parameters and statistics, not RNG streams


def save_shipped(path: str | os.PathLike, model: nnx.Module, manifest: Mapping[str, Any]) -> Path:
    """Writes ``path/variables`` (model variables, no optimizer, no RNG) and ``path/manifest.json``.

    Overwrites an existing shipped checkpoint at ``path``.
    """
    path = Path(path).absolute()
    path.mkdir(parents=True, exist_ok=True)
    with ocp.StandardCheckpointer() as ckptr:
        ckptr.save(path / "variables", _to_disk(_model_vars(model)[1]), force=True)
    (path / MANIFEST).write_text(json.dumps(dict(manifest), indent=1, sort_keys=True) + "\n")
    return path


def read_manifest(path: str | os.PathLike) -> dict[str, Any]:
    file = Path(path) / MANIFEST
    if not file.exists():
        raise FileNotFoundError(f"no {MANIFEST} in {path}: not a shipped checkpoint; "
                                f"regenerate it with `make pretrain`")
    return json.loads(file.read_text())


def check_manifest(manifest: Mapping[str, Any], cfg: Config, world_version: Any, *,
                   sections: tuple[str, ...] | None = None, where: str = "checkpoint") -> None:
    """Raises :class:`ManifestMismatchError` unless config hash and world version match. The
    message names the config fields that differ (from the manifest's ``config``: what its hash
    covers) and the ways out: a notebook's ``run.from_scratch`` override, or re-shipping."""
    current = cfg.hashed(sections=sections, mle_only=True)
    diffs = []
    if manifest.get("config_hash") != config_lib.hash_of(current):
        recorded = manifest.get("config")
        if recorded is not None and config_lib.hash_of(recorded) == manifest.get("config_hash"):
            fields = config_lib.differing_fields(recorded, current)
            diffs.append("config fields (checkpoint -> this config): " + "; ".join(fields))
        else:  # a manifest from before manifests recorded their config
            diffs.append(f"config hash: checkpoint has {manifest.get('config_hash')!r}, this "
                         f"config {config_lib.hash_of(current)!r}")
    if manifest.get("world_version") != world_version:
        diffs.append(f"world version: checkpoint has {manifest.get('world_version')!r}, the "
                     f"code {world_version!r}")
    if diffs:
        task, preset = manifest.get("task", "TASK"), manifest.get("preset", "PRESET")
        raise ManifestMismatchError(
            f"shipped {where} was made for another setup ({'; '.join(diffs)}). It is not the "
            f"model this config describes, so it is refused. To train this config by MLE in "
            f"the run's workdir instead, add \"run.from_scratch\": True to a notebook's "
            f"overrides (or FROM_SCRATCH=1 to `make reproduce`, which runs the presets "
            f"unchanged); to replace the shipped model, `python -m rlcv_lib pretrain {task} "
            f"{preset} key=value ...` then `python -m rlcv_lib ship {task} {preset} "
            f"key=value ...`.")


def load_shipped(path: str | os.PathLike, model: nnx.Module, cfg: Config, world_version: Any,
                 *, sections: tuple[str, ...] | None = None) -> dict[str, Any]:
    """Checks the manifest against (cfg, world_version), loads the variables into ``model``
    and returns the manifest."""
    path = Path(path).absolute()
    manifest = read_manifest(path)
    check_manifest(manifest, cfg, world_version, sections=sections, where=str(path))
    load_variables(path, model)
    return manifest


def load_variables(path: str | os.PathLike, model: nnx.Module) -> None:
    """Loads a shipped checkpoint's variables into ``model`` without checking its manifest
    (:func:`load_shipped` checks it first); a checkpoint of another architecture is refused
    (:class:`ManifestMismatchError`)."""
    path = Path(path).absolute()
    state, pure = _model_vars(model)
    with ocp.StandardCheckpointer() as ckptr:
        try:
            loaded = ckptr.restore(path / "variables", _abstract(pure))
        except (ValueError, KeyError) as e:
            raise ManifestMismatchError(
                f"shipped checkpoint {path} does not fit this model ({e}); regenerate it "
                f"with `make pretrain`") from e
    _write_back(model, state, pure, loaded)
