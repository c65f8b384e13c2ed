"""Checkpoints: exact round trip (RNG keys and optimizer state included), retention, refusal of
a different model, cache keys that move with config/world/code, shipped manifests."""

import dataclasses
import gc
import json
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

import rlcv_lib
from rlcv_lib import config as config_lib
from rlcv_lib.config import get_config
from rlcv_lib.core import checkpoint, optim
from rlcv_lib.core.train import TrainConfig

# A refused restore leaves an orbax coroutine that is garbage-collected (with a warning) later.
pytestmark = pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")

CFG = TrainConfig(lr=1e-2, warmup_steps=0, grad_accum_steps=2)


class Net(nnx.Module):
    def __init__(self, seed: int, width: int = 8):
        self.dense = nnx.Linear(3, width, rngs=nnx.Rngs(seed))
        self.rngs = nnx.Rngs(dropout=seed)  # typed PRNG key state


def pure(obj):
    return jax.tree.leaves(jax.tree.map(
        lambda x: jax.random.key_data(x) if checkpoint._is_key(x) else x,
        nnx.to_pure_dict(nnx.state(obj))))


def assert_same(a, b):
    for x, y in zip(pure(a), pure(b), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def trained(seed=0):
    net = Net(seed)
    opt = optim.make_optimizer(net, CFG)
    grads = jax.tree.map(jnp.ones_like, nnx.state(net, nnx.Param))
    opt.update(net, grads)  # MultiSteps mid-accumulation: a non-trivial optimizer state
    net.rngs.dropout()  # advance the RNG stream
    return net, opt


def test_round_trip_restores_everything(tmp_path):
    net, opt = trained()
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        ckpt.save(7, net, opt)
    other, other_opt = Net(1), optim.make_optimizer(Net(1), CFG)
    with pytest.raises(AssertionError):
        assert_same(net, other)
    assert checkpoint.restore(tmp_path, other, other_opt) == 7
    assert_same(net, other)
    assert_same(opt, other_opt)
    assert jax.dtypes.issubdtype(other.rngs.dropout.key.value.dtype, jax.dtypes.prng_key)


def test_restore_keeps_jit_caches_warm(tmp_path):
    """Restored arrays keep the live arrays' (un)commitment, so jitted steps do not retrace."""
    traces = []

    @nnx.jit
    def f(model):
        traces.append(1)
        return model.dense.kernel.sum()

    net, opt = trained()
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, net, opt)
    other = Net(1)
    f(other)
    checkpoint.restore(tmp_path, other)
    f(other)
    assert len(traces) == 1


def test_retention_and_missing_step(tmp_path):
    net, opt = trained()
    with checkpoint.Checkpointer(tmp_path, max_to_keep=2) as ckpt:
        for step in (1, 2, 3):
            ckpt.save(step, net, opt)
        ckpt.wait()
        assert ckpt.all_steps() == [2, 3] and ckpt.latest_step() == 3
        with pytest.raises(FileNotFoundError, match="no checkpoint for step 1"):
            ckpt.restore(net, opt, step=1)
    with pytest.raises(FileNotFoundError, match="no checkpoint in"):
        checkpoint.restore(tmp_path / "empty", net)


def test_restore_into_another_architecture_is_refused(tmp_path):
    net, _ = trained()
    with checkpoint.Checkpointer(tmp_path) as ckpt:
        ckpt.save(1, net)
    with pytest.raises(ValueError, match="does not fit this model"):
        checkpoint.restore(tmp_path, Net(0, width=5))
    gc.collect()  # here, not in a later test


def test_all_finite():
    assert checkpoint.all_finite({"a": jnp.ones(3), "b": jnp.arange(3)})
    assert not checkpoint.all_finite({"a": jnp.array([1.0, jnp.inf])})


# ------------------------------------------------------------------ cache keys and manifests

def _cfg(**overrides):
    return get_config("smoke", overrides, sections=("run", "train"))


def test_cache_key_moves_with_config_world_and_code():
    base = checkpoint.cache_key(_cfg(), 1, code="v1")
    assert base == checkpoint.cache_key(_cfg(), 1, code="v1")  # deterministic
    assert base != checkpoint.cache_key(_cfg(**{"train.lr": 0.5}), 1, code="v1")
    assert base != checkpoint.cache_key(_cfg(), 2, code="v1")
    assert base != checkpoint.cache_key(_cfg(), 1, code="v2")
    # Restricting to sections ignores changes elsewhere, but not inside them.
    only_train = checkpoint.cache_key(_cfg(), 1, sections=("train",), code="v1")
    assert only_train == checkpoint.cache_key(_cfg(seed=5), 1, sections=("train",), code="v1")
    assert only_train != checkpoint.cache_key(_cfg(**{"train.lr": 0.5}), 1,
                                              sections=("train",), code="v1")


def test_code_version_moves_with_any_source_edit(tmp_path):
    root = tmp_path / "pkg"
    shutil.copytree(rlcv_lib.__path__[0], root, ignore=shutil.ignore_patterns("__pycache__"))
    before = checkpoint.source_hash(root)
    assert before == checkpoint.source_hash(rlcv_lib.__path__[0])
    with open(root / "history.py", "a") as f:
        f.write("# an edit\n")
    assert checkpoint.source_hash(root) != before
    assert checkpoint.code_version().endswith("+" + before)
    key = checkpoint.cache_key(_cfg(), 1)  # default code version: the live package
    assert key == checkpoint.cache_key(_cfg(), 1, code=checkpoint.code_version())


def test_cache_dir_records_and_checks_its_key(tmp_path):
    d = checkpoint.cache_dir(tmp_path, "mle", _cfg(), 3, sections=("train",))
    assert d.name == "mle-" + checkpoint.cache_key(_cfg(), 3, sections=("train",))
    assert checkpoint.cache_dir(tmp_path, "mle", _cfg(), 3, sections=("train",)) == d
    assert checkpoint.cache_dir(tmp_path, "mle", _cfg(), 4, sections=("train",)) != d
    record = json.loads((d / checkpoint.CACHE_KEY_FILE).read_text())
    record["world_version"] = 99
    (d / checkpoint.CACHE_KEY_FILE).write_text(json.dumps(record))
    with pytest.raises(checkpoint.ManifestMismatchError, match="delete .* to rebuild it"):
        checkpoint.cache_dir(tmp_path, "mle", _cfg(), 3, sections=("train",))


def test_shipped_checkpoint_round_trip_and_refusal(tmp_path):
    net, _ = trained()
    cfg = _cfg()
    manifest = checkpoint.make_manifest(cfg, 1, steps=100, train_seconds=12.5,
                                        metrics={"val_loss": np.float32(0.25)},
                                        sections=("train",))
    path = checkpoint.save_shipped(tmp_path / "ship", net, manifest)
    assert json.loads((path / checkpoint.MANIFEST).read_text())["metrics"] == {"val_loss": 0.25}
    fresh = Net(5)
    got = checkpoint.load_shipped(path, fresh, cfg, 1, sections=("train",))
    assert got["steps"] == 100 and got["config_hash"] == cfg.hash(sections=("train",))
    np.testing.assert_array_equal(np.asarray(fresh.dense.kernel.value),
                                  np.asarray(net.dense.kernel.value))
    assert int(fresh.rngs.dropout.count.value) == 0  # RNG streams are not shipped
    changed = _cfg(**{"train.lr": 0.5, "train.warmup_steps": 7})
    with pytest.raises(checkpoint.ManifestMismatchError) as err:
        checkpoint.load_shipped(path, Net(5), changed, 1, sections=("train",))
    msg = str(err.value)  # the fields that differ, and the notebook's way out
    assert f"train.lr: {cfg.train.lr!r} -> 0.5" in msg and "train.warmup_steps" in msg, msg
    assert '"run.from_scratch": True' in msg and "python -m rlcv_lib pretrain" in msg, msg
    old = {k: v for k, v in manifest.items() if k != "config"}  # made before manifests had it
    old_path = checkpoint.save_shipped(tmp_path / "old", net, old)
    with pytest.raises(checkpoint.ManifestMismatchError, match=r"config hash: checkpoint has"):
        checkpoint.load_shipped(old_path, Net(5), changed, 1, sections=("train",))
    with pytest.raises(checkpoint.ManifestMismatchError, match="world version: checkpoint has 1"):
        checkpoint.load_shipped(path, Net(5), cfg, 2, sections=("train",))
    with pytest.raises(checkpoint.ManifestMismatchError, match="does not fit this model"):
        checkpoint.load_shipped(path, Net(5, width=4), cfg, 1, sections=("train",))
    gc.collect()
    with pytest.raises(FileNotFoundError, match="make pretrain"):
        checkpoint.read_manifest(tmp_path)


def test_manifest_fields():
    m = checkpoint.make_manifest(_cfg(), "w3", steps=5, train_seconds=1.0, metrics={})
    assert set(m) >= {"config_hash", "config", "world_version", "code_version", "commit",
                      "steps", "train_seconds", "metrics", "created", "preset"}
    assert config_lib.hash_of(m["config"]) == m["config_hash"]
    assert dataclasses.is_dataclass(TrainConfig) and json.dumps(m)
