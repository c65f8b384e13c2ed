"""The scenes TFDS builder: COCO feature names, offline preparation, atomic concurrent builds,
and a lossless round trip through array_record read without TensorFlow."""

import dataclasses
import multiprocessing
import socket

import numpy as np
import pytest

from rlcv_lib.data import adapters, pipeline, scenes

pytest.importorskip("tensorflow_datasets")

WORLD = dataclasses.replace(scenes.WORLD_PRESETS["smoke"], train_size=12, validation_size=10,
                            test_size=6)


def _no_network(*args, **kwargs):
    raise OSError("network access is blocked in this test")


@pytest.fixture(scope="module")
def prepared(tmp_path_factory):
    """Prepares the world with every socket connection blocked (the default path offline)."""
    from rlcv_lib.data import tfds_scenes

    data_dir = str(tmp_path_factory.mktemp("tfds"))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(socket.socket, "connect", _no_network)
        mp.setattr(socket, "create_connection", _no_network)
        mp.setattr(socket, "getaddrinfo", _no_network)
        builder = tfds_scenes.prepare(WORLD, data_dir)
        source = adapters.scenes_source(WORLD, "validation", data_dir)
        batch = pipeline.Loader(source, 4, seed=0).batch(0)
    return data_dir, builder, source, batch


def test_default_path_works_offline(prepared):
    _, builder, source, batch = prepared
    assert builder.is_prepared()
    assert len(source) == WORLD.validation_size
    assert batch["image"].shape == (4, WORLD.image_size, WORLD.image_size, 3)


def test_round_trip_is_lossless(prepared):
    _, _, source, _ = prepared
    for i in range(len(source)):
        ex = source[i]
        want = scenes.example(WORLD, "validation", i)
        np.testing.assert_array_equal(ex["image"], want["image"])
        np.testing.assert_array_equal(ex["panoptic"], want["panoptic"])
        assert ex["segments"] == want["segments"]
        assert scenes.annotation_hash(ex) == scenes.annotation_hash(want)


def test_records_use_coco_feature_names_and_disk_layout(prepared):
    from rlcv_lib.data.offline import tfds_offline

    tfds = tfds_offline()
    _, builder, source, _ = prepared
    adapters.coco_without_tensorflow()
    ours = builder.info.features
    for name in ("coco/2017", "coco/2017_panoptic"):
        coco = tfds.builder(name, data_dir=str(prepared[0]) + "/coco").info.features
        for key in coco.keys():
            assert key in ours, (name, key)
            if key in ("objects", "panoptic_objects"):
                assert set(coco[key].feature.keys()) == set(ours[key].feature.keys())
    assert set(ours["captions"].feature.keys()) == {"id", "text"}
    record = source.records[0]
    assert isinstance(record["captions"]["text"], list)
    assert isinstance(record["captions"]["text"][0], bytes)
    assert isinstance(record["image/filename"], bytes)
    assert builder.info.version == f"{scenes.WORLD_VERSION}.0.0"
    assert scenes.config_hash(WORLD)[:10] in builder.builder_config.name


def test_named_configs_per_preset_and_resolution():
    from rlcv_lib.data import tfds_scenes

    names = [c.name for c in tfds_scenes.Scenes.BUILDER_CONFIGS]
    for label in ("smoke", "cpu", "gpu", "paper", "res32", "res64", "res128", "res256"):
        assert sum(n.startswith(f"{label}_") for n in names) == 1, label
    sizes = {c.name.split("_")[0]: c.world.image_size for c in tfds_scenes.Scenes.BUILDER_CONFIGS}
    assert sizes["res128"] == 128 and sizes["cpu"] == 64


def _prepare_and_read(data_dir):
    source = adapters.scenes_source(WORLD, "test", data_dir)
    return [scenes.annotation_hash(source[i]) for i in range(len(source))]


def test_concurrent_prepares_do_not_corrupt(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        results = pool.map(_prepare_and_read, [str(tmp_path)] * 2)
    want = [scenes.annotation_hash(scenes.example(WORLD, "test", i))
            for i in range(WORLD.test_size)]
    assert results == [want, want]
