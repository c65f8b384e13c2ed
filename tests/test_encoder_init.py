"""model.encoder_init: a task's MLE starts from the shipped scenes encoder."""

import numpy as np
import pytest
from flax import nnx

from rlcv_lib.config import ConfigError, get_config
from rlcv_lib.core import checkpoint, encoder_init, pretrain, shipped
from rlcv_lib.models import build_model
from rlcv_lib.tasks.detection.pretrain import RECIPE as DETECTION
from rlcv_lib.tasks.scenes_encoder.task import RECIPE as ENCODER


def _leaves(module):
    return [np.asarray(v.value) for _, v in nnx.state(module, nnx.Param).flat_state()]


@pytest.fixture(scope="module")
def encoder(tmp_path_factory):
    """A smoke scenes encoder trained 8 steps and shipped: (path, its model)."""
    root = tmp_path_factory.mktemp("enc")
    cfg = get_config("smoke", task="scenes_encoder")
    run = pretrain.pretrain(ENCODER, cfg, root / "run", eval_examples=8, train_size=16,
                            progress=False)
    path = shipped.ship_run(ENCODER, cfg, root / "run", out=root / "scenes_encoder-smoke")
    return path, run.model


def test_the_encoder_weights_are_copied_and_the_decoder_is_untouched(encoder):
    path, trained = encoder
    cfg = get_config("smoke", {"model.encoder_init": str(path)}, task="detection")
    task = DETECTION.make_task(cfg, None)
    model = build_model(cfg.model, task, seed=0)
    fresh = nnx.clone(model)
    info = encoder_init.initialise(model, cfg)
    for a, b in zip(_leaves(model.encoder), _leaves(trained.encoder), strict=True):
        np.testing.assert_array_equal(a, b)
    for a, b in zip(_leaves(model.decoder), _leaves(fresh.decoder), strict=True):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(_leaves(fresh.encoder)[0], _leaves(model.encoder)[0])
    assert info["manifest_hash"] == shipped.manifest_hash(path) and info["steps"] > 0


def test_mle_starts_from_it_and_the_shipped_manifest_says_so(encoder, tmp_path):
    path, _ = encoder
    cfg = get_config("smoke", {"model.encoder_init": str(path), "train.num_steps": 1,
                               "train.eval_every": 1, "train.ckpt_every": 1}, task="detection")
    pretrain.pretrain(DETECTION, cfg, tmp_path / "run", eval_examples=8, train_size=8,
                      progress=False)
    out = shipped.ship_run(DETECTION, cfg, tmp_path / "run", out=tmp_path / "det")
    manifest = checkpoint.read_manifest(out)
    assert manifest["encoder_init"]["manifest_hash"] == shipped.manifest_hash(path)
    assert manifest["config"]["model"]["encoder_init"] == str(path)
    plain = get_config("smoke", task="detection")
    assert "encoder_init" not in plain.hashed(sections=("model",))["model"]  # old hashes kept
    loaded = shipped.load_or_pretrain(DETECTION, cfg, None, path=out)
    assert loaded.encoder_start.startswith(f"the scenes encoder {path}")
    assert shipped.load_or_pretrain(DETECTION, plain, tmp_path / "plain", path=tmp_path / "none",
                                    eval_examples=8, train_size=8, progress=False
                                    ).encoder_start.startswith("random weights")


def test_a_run_keeps_the_encoder_it_started_from_when_the_encoder_is_reshipped(encoder,
                                                                               tmp_path):
    path, trained = encoder
    source = tmp_path / "encoder"
    checkpoint.save_shipped(source, trained, checkpoint.read_manifest(path))
    cfg = get_config("smoke", {"model.encoder_init": str(source), "train.num_steps": 1,
                               "train.eval_every": 1, "train.ckpt_every": 1}, task="detection")
    pretrain.pretrain(DETECTION, cfg, tmp_path / "run", eval_examples=8, train_size=8,
                      progress=False)
    first = shipped.manifest_hash(source)
    manifest = {**checkpoint.read_manifest(path), "steps": 99}  # the encoder is re-shipped
    checkpoint.save_shipped(source, trained, manifest)
    assert shipped.manifest_hash(source) != first
    resumed = pretrain.pretrain(DETECTION, cfg, tmp_path / "run", eval_examples=8,
                                train_size=8, progress=False)  # resumes at its last step
    assert resumed.encoder_start["manifest_hash"] == first
    out = shipped.ship_run(DETECTION, cfg, tmp_path / "run", out=tmp_path / "det")
    assert checkpoint.read_manifest(out)["encoder_init"]["manifest_hash"] == first
    fresh = pretrain.pretrain(DETECTION, cfg, tmp_path / "run2", eval_examples=8,
                              train_size=8, progress=False)
    assert fresh.encoder_start["manifest_hash"] == shipped.manifest_hash(source)


def test_another_architecture_is_refused_naming_the_fields(encoder):
    path, _ = encoder
    cfg = get_config("smoke", {"model.encoder_init": str(path), "model.enc_depth": 2},
                     task="detection")
    model = build_model(cfg.model, DETECTION.make_task(cfg, None), seed=0)
    with pytest.raises(ConfigError, match=r"model.enc_depth: encoder 1, this model 2"):
        encoder_init.initialise(model, cfg)
    cfg = get_config("smoke", {"model.encoder_init": str(path), "model.stem": "conv",
                               "model.stem_depth": 2}, task="detection")
    with pytest.raises(ConfigError, match=r"model.stem: encoder 'patch', this model 'conv'; "
                                          r"model.stem_depth: encoder 1, this model 2"):
        encoder_init.read(cfg)


def test_a_missing_encoder_says_how_to_make_it(tmp_path):
    cfg = get_config("smoke", {"model.encoder_init": str(tmp_path / "none")}, task="detection")
    with pytest.raises(FileNotFoundError, match="pretrain scenes_encoder smoke"):
        encoder_init.read(cfg)
    cfg = get_config("smoke", {"model.encoder_init": "shipped"}, task="detection")
    assert encoder_init.encoder_path(cfg) == shipped.ROOT / "scenes_encoder-smoke"
