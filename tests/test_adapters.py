"""Real-dataset adapters: the same keys, dtypes and ranks as the scenes, on TFDS mock data
(arrays) and on records in the on-disk layout (lists, bytes)."""

import numpy as np
import pytest

from rlcv_lib.data import adapters, scenes

tfds = pytest.importorskip("tensorflow_datasets")

SPLITS = {"coco/2017": "train", "coco/2017_panoptic": "train", "coco_captions": "val",
          "imagenet2012": "train"}


def assert_like_scenes(ex):
    ref = scenes.example(scenes.WORLD_PRESETS["smoke"], "train", 1)
    assert set(ex) == set(ref)
    for key in ("image", "boxes", "labels", "panoptic"):
        assert ex[key].dtype == ref[key].dtype and ex[key].ndim == ref[key].ndim, key
    h, w = ex["image"].shape[:2]
    assert ex["image"].shape == (h, w, 3) and ex["panoptic"].shape == (h, w)
    assert ex["boxes"].shape == (len(ex["labels"]), 4)
    assert isinstance(ex["image_id"], int)
    assert len(ex["captions"]) == 5 and all(isinstance(c, str) for c in ex["captions"])
    for seg in ex["segments"]:
        assert set(seg) == set(ref["segments"][0])


@pytest.mark.parametrize("dataset", sorted(SPLITS))
def test_mock_data_gives_the_scenes_layout(dataset):
    adapters.coco_without_tensorflow()
    with tfds.testing.mock_data(num_examples=3):
        source = adapters.TfdsSource(dataset, SPLITS[dataset])
        assert len(source) == 3
        examples = [source[i] for i in range(3)]
    for ex in examples:
        assert_like_scenes(ex)
    if dataset in ("coco/2017", "coco_captions"):
        assert any(len(ex["labels"]) for ex in examples)
    if dataset == "coco/2017_panoptic":
        assert any(ex["segments"] for ex in examples)
    if dataset == "coco_captions":
        assert all(ex["captions"][0] for ex in examples)


def disk_record():
    """A coco_captions + panoptic record as as_data_source returns it from disk."""
    ids = np.zeros((4, 6), np.int64)
    ids[0:2, 0:3] = 7
    ids[2:4, :] = 300
    rgb = np.stack([ids % 256, ids // 256 % 256, ids // 65536], -1).astype(np.uint8)
    return {
        "image": np.full((4, 6, 3), 9, np.uint8), "image/filename": b"000000000042.jpg",
        "image/id": 42,
        "objects": {"area": [6, 100], "bbox": [np.array([0, 0, .5, .5], np.float32),
                                               np.array([0, 0, 1, 1], np.float32)],
                    "id": [1, 2], "is_crowd": [False, True], "label": [np.int64(3), 5]},
        "panoptic_image": rgb, "panoptic_image/filename": b"000000000042.png",
        "panoptic_objects": {"area": [6, 12], "bbox": [np.array([0, 0, .5, .5], np.float32),
                                                      np.array([.5, 0, 1, 1], np.float32)],
                             "id": [7, 300], "is_crowd": [False, False], "label": [3, 90]},
        "captions": {"id": [1, 2, 3, 4, 5, 6],
                     "text": [b"a cat", b"two dogs", b"c", b"d", b"e", b"f"]},
    }


def test_on_disk_layout_lists_and_bytes():
    ex = adapters.from_tfds(disk_record(), "coco_captions")
    assert_like_scenes(ex)
    assert ex["image_id"] == 42
    np.testing.assert_array_equal(ex["boxes"], [[0, 0, .5, .5]])  # the crowd box is dropped
    np.testing.assert_array_equal(ex["labels"], [3])
    assert ex["captions"] == ["a cat", "two dogs", "c", "d", "e"]
    pan = adapters.from_tfds(disk_record(), "coco/2017_panoptic")
    assert [s["id"] for s in pan["segments"]] == [7, 300]
    assert [s["isthing"] for s in pan["segments"]] == [1, 0]  # label 90 >= 80 things: stuff
    assert [s["category_id"] for s in pan["segments"]] == [4, 91]
    assert pan["segments"][0]["bbox"] == [0, 0, 3, 2]  # pixel x, y, w, h
    np.testing.assert_array_equal(np.unique(pan["panoptic"]), [0, 7, 300])


def test_imagenet_record_gets_empty_targets_and_index_as_id():
    rec = {"image": np.zeros((5, 7, 3), np.uint8), "label": 3, "file_name": b"n0_1.JPEG"}
    ex = adapters.from_tfds(rec, "imagenet2012", index=11)
    assert_like_scenes(ex)
    assert ex["image_id"] == 11 and len(ex["labels"]) == 0 and ex["segments"] == []
    assert (ex["panoptic"] == 0).all() and ex["captions"] == [""] * 5


def test_unknown_dataset_name_says_what_is_wrong():
    with pytest.raises(ValueError, match="unknown dataset name 'coco/2014'"):
        adapters.from_tfds(disk_record(), "coco/2014")
    with pytest.raises(ValueError, match="unknown dataset name 'cifar10'"):
        adapters.TfdsSource("cifar10", "train")
    with pytest.raises(ValueError, match="needs num_things"):
        adapters.from_tfds(disk_record(), "scenes")
