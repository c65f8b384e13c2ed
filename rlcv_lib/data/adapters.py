"""Real datasets (and the scenes TFDS copy) mapped to the example dict of docs/design.md §3.2.

Supported: ``coco/2017`` (detection), ``coco/2017_panoptic``, ``coco_captions`` and
``imagenet2012`` (colorization), plus ``scenes`` records of :mod:`rlcv_lib.data.tfds_scenes`,
which share the COCO feature names. A record may come from disk (``as_data_source``:
``Sequence`` features are dicts of *lists*, ``Text`` is *bytes*) or from
``tfds.testing.mock_data`` (arrays and str); :func:`from_tfds` accepts both.

What needs TensorFlow:

* reading a prepared ``array_record`` copy (``tfds.data_source`` / ``as_data_source``): no;
  the COCO builders need one workaround for that (:func:`coco_without_tensorflow`);
* ``tfds.load`` / ``as_dataset`` (tf.data), preparing the real COCO or ImageNet datasets from
  their downloads, and reading ``tfrecord`` copies: yes. Prepare them once where TF is
  installed, with ``file_format="array_record"``, then read them here without it.

Mapping: boxes keep TFDS's normalised ``(ymin, xmin, ymax, xmax)``; ``labels`` are the
TFDS ``ClassLabel`` indices (0..79 on COCO); crowd boxes are dropped. Panoptic ``category_id``
is the panoptic ``ClassLabel`` index + 1, things first (COCO: the first 80 of 133). Datasets
without a task's targets get empty ones of the same type (no boxes, a void panoptic map, five
empty captions), so every adapter yields the same keys, dtypes and ranks.
"""

from __future__ import annotations

import functools
import types
import warnings
from typing import Any

import numpy as np

DATASETS: dict[str, dict[str, Any]] = {
    "coco/2017": {"num_things": 80},
    "coco/2017_panoptic": {"num_things": 80},
    "coco_captions": {"num_things": 80},
    "imagenet2012": {"num_things": 0},
    "scenes": {"num_things": None},  # from the builder's ClassLabel names
}
"""Dataset names the adapters know."""

TESTED_TFDS = ("4.9.",)
"""TFDS versions whose COCO builder :func:`coco_without_tensorflow` was checked against."""


def check_dataset(name: str) -> None:
    if name not in DATASETS:
        raise ValueError(f"unknown dataset name {name!r}; choose one of {list(DATASETS)}")


@functools.cache
def coco_without_tensorflow() -> bool:
    """The one workaround for TFDS's COCO builders without TensorFlow.

    ``tensorflow_datasets/object_detection/coco.py`` declares ``'image/id': tf.int64`` in its
    ``_info``; without TensorFlow that attribute access fails and the builder (also
    ``coco_captions``, which subclasses it) cannot even describe its features. We give the
    module a stand-in ``tf`` whose ``int64`` is ``np.int64`` (what TFDS maps it to anyway).
    Returns whether it patched; does nothing when TensorFlow is importable.
    """
    try:
        import tensorflow  # noqa: F401

        return False
    except ImportError:
        pass
    from rlcv_lib.data.offline import tfds_offline

    tfds = tfds_offline()
    from tensorflow_datasets.object_detection import coco

    if not tfds.__version__.startswith(TESTED_TFDS):
        warnings.warn(f"coco_without_tensorflow was tested with TFDS {TESTED_TFDS}, not "
                      f"{tfds.__version__}; check that coco.py still only needs tf.int64",
                      stacklevel=2)
    coco.tf = types.SimpleNamespace(int64=np.int64)
    return True


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, np.ndarray):
        return _text(value.item())
    return str(value)


def _seq(record: dict[str, Any], key: str) -> dict[str, list]:
    """A Sequence feature as a dict of equally long lists (mock data draws each field's
    length independently: keep the first ``min`` entries)."""
    seq = record.get(key) or {}
    fields = {k: list(v) for k, v in seq.items()}
    n = min((len(v) for v in fields.values()), default=0)
    return {k: v[:n] for k, v in fields.items()}


def _rgb_to_ids(rgb: np.ndarray) -> np.ndarray:
    rgb = np.asarray(rgb, np.int64)
    return (rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]).astype(np.int32)


def from_tfds(record: dict[str, Any], dataset: str, *, index: int = 0,
              num_things: int | None = None) -> dict[str, Any]:
    """One TFDS record of ``dataset`` -> the example dict.

    ``index`` is the image id for datasets without one (ImageNet); ``num_things`` (panoptic
    labels below it are things) defaults to the dataset's (80 on COCO); scenes records need it.
    """
    check_dataset(dataset)
    image = np.asarray(record["image"], np.uint8)
    if image.ndim == 2:
        image = np.repeat(image[..., None], 3, -1)
    if image.shape[-1] == 1:
        image = np.repeat(image, 3, -1)
    h, w = image.shape[:2]
    image_id = int(np.asarray(record["image/id"])) if "image/id" in record else int(index)

    obj = _seq(record, "objects")
    keep = [not bool(c) for c in obj.get("is_crowd", [])]
    boxes = np.array([b for b, k in zip(obj.get("bbox", []), keep, strict=True) if k],
                     np.float32).reshape(-1, 4)
    labels = np.array([lab for lab, k in zip(obj.get("label", []), keep, strict=True) if k],
                      np.int32)

    panoptic = np.zeros((h, w), np.int32)
    segments = []
    if "panoptic_image" in record:
        things = DATASETS[dataset]["num_things"] if num_things is None else num_things
        if things is None:
            raise ValueError(f"from_tfds({dataset!r}) needs num_things for panoptic records")
        pan = _seq(record, "panoptic_objects")
        ids = _rgb_to_ids(record["panoptic_image"])
        if ids.shape != (h, w):  # never on real data; mock data draws the two sizes apart
            ys = (np.arange(h) * ids.shape[0]) // h
            xs = (np.arange(w) * ids.shape[1]) // w
            ids = ids[ys[:, None], xs[None, :]]
        for sid, lab, area, box, crowd in zip(pan["id"], pan["label"], pan["area"], pan["bbox"],
                                              pan["is_crowd"], strict=True):
            y0, x0, y1, x1 = (float(v) for v in box)
            thing = int(lab) < things
            segments.append({
                "id": int(sid), "category_id": int(lab) + 1, "is_thing": thing,
                "isthing": int(thing), "iscrowd": int(bool(crowd)), "area": int(area),
                "bbox": [round(x0 * w), round(y0 * h), round((x1 - x0) * w),
                         round((y1 - y0) * h)]})
        known = np.array([s["id"] for s in segments], np.int64)
        panoptic = np.where(np.isin(ids, known), ids, 0).astype(np.int32)

    captions = [""] * 5
    if "captions" in record:
        texts = [_text(t) for t in _seq(record, "captions").get("text", [])]
        if texts:
            captions = [texts[k % len(texts)] for k in range(5)]

    return {"image": image, "image_id": image_id, "boxes": boxes, "labels": labels,
            "panoptic": panoptic, "segments": segments, "captions": captions}


class TfdsSource:
    """Random access to a prepared TFDS dataset split as example dicts (no TensorFlow).

    ``dataset`` is one of :data:`DATASETS` except ``scenes`` (use
    :func:`rlcv_lib.data.tfds_scenes.data_source` for that, or :func:`scenes_source`).
    """

    def __init__(self, dataset: str, split: str, data_dir: str | None = None):
        check_dataset(dataset)
        if dataset == "scenes":
            raise ValueError("use adapters.scenes_source(world, split, data_dir) for scenes")
        from rlcv_lib.data.offline import tfds_offline

        tfds = tfds_offline()
        if dataset.startswith("coco"):
            coco_without_tensorflow()
        self.dataset = dataset
        self.records = tfds.data_source(dataset, split=split, data_dir=data_dir,
                                        download=False, try_gcs=False)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return from_tfds(self.records[index], self.dataset, index=index)


class ScenesTfdsSource:
    """The scenes world read back from its TFDS copy (prepared on first use)."""

    def __init__(self, world: Any, split: str, data_dir: str):
        from rlcv_lib.data import tfds_scenes

        self.records = tfds_scenes.data_source(world, split, data_dir)
        self.num_things = len(world.thing_classes)

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> dict[str, Any]:
        return from_tfds(self.records[index], "scenes", index=index, num_things=self.num_things)


def scenes_source(world: Any, split: str, data_dir: str) -> ScenesTfdsSource:
    return ScenesTfdsSource(world, split, data_dir)
