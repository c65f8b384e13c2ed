"""Input pipeline and in-memory splits: determinism, coverage, sharding, prefetch, caching."""

import dataclasses
import multiprocessing
import os

import numpy as np
import pytest

from rlcv_lib.data import memory, pipeline, scenes

WORLD = dataclasses.replace(scenes.WORLD_PRESETS["smoke"], validation_size=40, train_size=60)


@pytest.fixture(scope="module")
def val():
    return memory.load_split(WORLD, "validation")


def test_step_indices_are_a_pure_function_and_walk_epochs():
    a = pipeline.step_indices(7, 16, 100, seed=3)
    np.testing.assert_array_equal(a, pipeline.step_indices(7, 16, 100, seed=3))
    assert not np.array_equal(a, pipeline.step_indices(7, 16, 100, seed=4))
    # 25 steps of 16 over 100 examples = 4 epochs, each a permutation
    stream = np.concatenate([pipeline.step_indices(s, 16, 100, seed=3) for s in range(25)])
    for e in range(4):
        assert sorted(stream[e * 100:(e + 1) * 100]) == list(range(100))
    assert not np.array_equal(stream[:100], stream[100:200])
    np.testing.assert_array_equal(pipeline.step_indices(2, 4, 10, 0, shuffle=False),
                                  [8, 9, 0, 1])
    with pytest.raises(ValueError, match="step must be >= 0"):
        pipeline.step_indices(-1, 4, 10, 0)


def test_processes_split_the_global_batch(val):
    full = pipeline.Loader(val, 8, seed=1)
    parts = [pipeline.Loader(val, 8, seed=1, process_index=i, process_count=4) for i in range(4)]
    for step in (0, 5, 11):
        np.testing.assert_array_equal(np.concatenate([p.indices(step) for p in parts]),
                                      full.indices(step))
        batches = [p.batch(step) for p in parts]
        np.testing.assert_array_equal(np.concatenate([b["image"] for b in batches]),
                                      full.batch(step)["image"])
    with pytest.raises(ValueError, match="not divisible by 3 processes"):
        pipeline.Loader(val, 8, process_count=3)


def test_batch_layout_value_range_and_resize(val):
    loader = pipeline.Loader(val, 4, seed=0, value_range=(-1.0, 1.0), max_boxes=10,
                             max_segments=20)
    b = loader.batch(3)
    n = WORLD.image_size
    assert b["image"].shape == (4, n, n, 3) and b["image"].dtype == np.float32
    assert -1 <= b["image"].min() and b["image"].max() <= 1
    assert b["boxes"].shape == (4, 10, 4) and b["labels"].shape == (4, 10)
    assert b["panoptic"].shape == (4, n, n) and b["panoptic"].dtype == np.int32
    assert b["seg_id"].shape == (4, 20) and b["captions"].shape == (4, 5)
    for row, i in enumerate(b["index"]):
        ex = val[int(i)]
        k = len(ex["labels"])
        assert b["num_boxes"][row] == k
        np.testing.assert_array_equal(b["boxes"][row, :k], ex["boxes"])
        assert (b["labels"][row, k:] == -1).all() and (b["labels"][row, :k] == ex["labels"]).all()
        np.testing.assert_allclose(b["image"][row], ex["image"] / 127.5 - 1, atol=1e-6)
        assert list(b["captions"][row]) == ex["captions"]
    big = pipeline.Loader(val, 4, image_size=64, value_range=None).batch(3)
    assert big["image"].shape == (4, 64, 64, 3) and big["image"].dtype == np.uint8
    np.testing.assert_array_equal(big["panoptic"][:, ::2, ::2], b["panoptic"])
    m = big["boxes"].shape[1]  # boxes are normalised: resizing leaves them unchanged
    np.testing.assert_array_equal(big["boxes"], b["boxes"][:, :m])


def test_epoch_covers_every_example_once_with_padding(val):
    loader = pipeline.Loader(val, 16, shuffle=False)
    seen = []
    for b in loader.epoch():
        assert b["image"].shape[0] == 16
        seen += b["index"][b["mask"]].tolist()
    assert seen == list(range(len(val)))
    halves = [pipeline.Loader(val, 16, shuffle=False, process_index=i, process_count=2)
              for i in range(2)]
    seen = sorted(i for h in halves for b in h.epoch() for i in b["index"][b["mask"]])
    assert seen == list(range(len(val)))


def test_prefetcher_gives_the_same_batches_and_handles_jumps_and_errors(val):
    loader = pipeline.Loader(val, 4, seed=2)
    with pipeline.Prefetcher(loader.batch, start_step=5, depth=3) as p:
        for step in (5, 6, 7, 2, 3, 9):
            np.testing.assert_array_equal(p(step)["index"], loader.indices(step))

    def flaky(step):
        if step == 2:
            raise RuntimeError("bad step 2")
        return step

    with pipeline.Prefetcher(flaky) as p:
        assert p(0) == 0 and p(1) == 1
        with pytest.raises(RuntimeError, match="bad step 2"):
            p(2)
        assert p(3) == 3


def test_bad_settings_say_what_is_wrong(val):
    with pytest.raises(ValueError, match="image size 32 is not divisible by the patch size 6"):
        pipeline.Loader(val, 4, patch_size=6)
    pipeline.Loader(val, 4, patch_size=8)
    with pytest.raises(ValueError, match="global_batch must be > 0"):
        pipeline.Loader(val, 0)
    with pytest.raises(ValueError, match="split over 3 devices"):
        pipeline.split_devices(pipeline.Loader(val, 4).batch(0), 3)
    assert pipeline.split_devices(pipeline.Loader(val, 4).batch(0), 2)["image"].shape[:2] == (2, 2)


def test_packed_split_equals_generated_examples(val):
    assert len(val) == WORLD.validation_size
    for i in (0, 17, 39):
        assert scenes.annotation_hash(val[i]) == scenes.annotation_hash(
            scenes.example(WORLD, "validation", i))
    src = memory.SceneSource(WORLD, "validation")
    assert scenes.annotation_hash(src[5]) == scenes.annotation_hash(val[5])
    with pytest.raises(IndexError):
        src[len(src)]


def _build(cache_dir):
    ds = memory.load_split(WORLD, "train", cache_dir=cache_dir, size=24)
    return scenes.annotation_hash(ds[23])


def test_disk_cache_is_keyed_atomic_and_shared_by_concurrent_builders(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        hashes = pool.map(_build, [str(tmp_path)] * 2)
    want = scenes.annotation_hash(scenes.example(WORLD, "train", 23))
    assert hashes == [want, want]
    entries = os.listdir(tmp_path)
    assert entries == [memory.cache_key(WORLD, "train", 24)]  # no temp dirs left behind
    assert entries[0].startswith(f"scenes_v{scenes.WORLD_VERSION}_{scenes.config_hash(WORLD)}")
    loaded = memory.load(str(tmp_path / entries[0]))
    assert isinstance(loaded.arrays["image"], np.memmap)
    assert scenes.annotation_hash(loaded[23]) == want


def test_concat_and_parallel_generation_equal_serial():
    serial = memory.generate_split(WORLD, "train", 300)
    parallel = memory.generate_split(WORLD, "train", 300, workers=2)
    for name, arr in serial.arrays.items():
        np.testing.assert_array_equal(np.asarray(parallel.arrays[name]), np.asarray(arr), name)


def test_open_source_by_name():
    from rlcv_lib.data import sources

    src = sources.open_source("scenes", "validation", world=WORLD, size=8)
    lazy = sources.open_source("scenes", "validation", world=WORLD, lazy=True)
    assert len(src) == 8 and len(lazy) == WORLD.validation_size
    assert scenes.annotation_hash(src[3]) == scenes.annotation_hash(lazy[3])
    with pytest.raises(ValueError, match="unknown dataset name 'coco/2014'"):
        sources.open_source("coco/2014", "train")
    with pytest.raises(ValueError, match="needs world="):
        sources.open_source("scenes", "train")
    with pytest.raises(ValueError, match="unknown split 'valid'"):
        sources.open_source("scenes", "valid", world=WORLD)


def test_in_memory_path_needs_neither_tfds_nor_pil_nor_coco_tools():
    """The GPU image has jax but no TFDS, PIL, pycocotools or pycocoevalcap."""
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import sys
        class Block:
            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in ("tensorflow_datasets", "tensorflow", "PIL",
                                          "pycocotools", "pycocoevalcap", "matplotlib"):
                    raise ImportError("blocked " + name)
        sys.meta_path.insert(0, Block())
        import dataclasses
        from rlcv_lib.data import pipeline, scenes, sources
        w = dataclasses.replace(scenes.WORLD_PRESETS["smoke"], validation_size=16)
        src = sources.open_source("scenes", "validation", world=w)
        b = pipeline.Loader(src, 8, image_size=48, patch_size=8).batch(1)
        assert b["image"].shape == (8, 48, 48, 3), b["image"].shape
        assert not any(m.startswith(("tensorflow", "PIL")) for m in sys.modules)
        print("ok")
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr


def test_numpy_resize_matches_pil_closely():
    from PIL import Image

    img = scenes.example(WORLD, "train", 3)["image"]
    for size in (48, 64):
        ours = pipeline._resize_bilinear_numpy(img, size).astype(int)
        pil = np.asarray(Image.fromarray(img).resize((size, size), Image.BILINEAR)).astype(int)
        assert np.abs(ours - pil).mean() < 3
