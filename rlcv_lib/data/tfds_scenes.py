"""The scenes world as a TFDS dataset, with the feature names of the COCO datasets.

One record carries the features of ``coco/2017`` (``image``, ``image/filename``, ``image/id``,
``objects``), of ``coco/2017_panoptic`` (``panoptic_image`` RGB-encoded segment ids,
``panoptic_image/filename``, ``panoptic_objects``) and of ``coco_captions`` (``captions``), so
:func:`rlcv_lib.data.adapters.from_tfds` reads it like the real datasets. Images are handed
to TFDS as PNG bytes (encoding a NumPy array would need TensorFlow); the dataset is written as
``array_record`` and read back with ``as_data_source`` (no TensorFlow).

:func:`prepare` builds a world on first use into ``data_dir`` under a file lock, so two
processes preparing at once wait for each other; TFDS itself writes into a temporary
directory and renames it into place. Config names carry the world's config hash and the
dataset version is the world version, so a changed world never reuses a stale copy.
"""

from __future__ import annotations

import contextlib
import dataclasses
import fcntl
import io
import os
from typing import Any

import numpy as np

from rlcv_lib.data import coco_export, scenes
from rlcv_lib.data.offline import tfds_offline

tfds = tfds_offline()

RESOLUTIONS = (32, 64, 96, 128, 256)
"""Sizes with a named builder config ``res<size>`` (the cpu world at that resolution)."""


def _png(array: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(array).save(buf, format="PNG")
    return buf.getvalue()


class ScenesConfig(tfds.core.BuilderConfig):
    """A builder config wrapping one :class:`WorldConfig`."""

    def __init__(self, *, world: scenes.WorldConfig, label: str):
        super().__init__(name=f"{label}_{scenes.config_hash(world)[:10]}",
                         description=f"scenes world {label}: {dataclasses.asdict(world)}")
        self.world = world


def builder_config(world: scenes.WorldConfig, label: str = "custom") -> ScenesConfig:
    return ScenesConfig(world=world, label=label)


class Scenes(tfds.core.GeneratorBasedBuilder):
    """The procedural scenes world (detection, panoptic, captions, colour images)."""

    VERSION = tfds.core.Version(f"{scenes.WORLD_VERSION}.0.0")
    RELEASE_NOTES = {f"{scenes.WORLD_VERSION}.0.0": f"scenes world v{scenes.WORLD_VERSION}"}
    BUILDER_CONFIGS = (
        [builder_config(w, p) for p, w in scenes.WORLD_PRESETS.items()]
        + [builder_config(dataclasses.replace(scenes.WORLD_PRESETS["cpu"], image_size=s),
                          f"res{s}") for s in RESOLUTIONS]
    )

    def _info(self) -> Any:
        world = self.builder_config.world
        things = list(world.thing_classes)
        box_features = {"id": np.int64, "area": np.int64, "bbox": tfds.features.BBoxFeature(),
                        "is_crowd": np.bool_}
        return self.dataset_info_from_configs(
            description="Procedural scenes with COCO-style detection, panoptic and captions.",
            features=tfds.features.FeaturesDict({
                "image": tfds.features.Image(encoding_format="png"),
                "image/filename": tfds.features.Text(),
                "image/id": np.int64,
                "objects": tfds.features.Sequence(
                    {**box_features, "label": tfds.features.ClassLabel(names=things)}),
                "panoptic_image": tfds.features.Image(encoding_format="png"),
                "panoptic_image/filename": tfds.features.Text(),
                "panoptic_objects": tfds.features.Sequence(
                    {**box_features, "label": tfds.features.ClassLabel(
                        names=things + list(world.stuff_classes))}),
                "captions": tfds.features.Sequence({"id": np.int64, "text": np.str_}),
            }),
            disable_shuffling=True,  # record i of a split is scene i
        )

    def _split_generators(self, dl_manager: Any) -> dict[str, Any]:
        world = self.builder_config.world
        return {split: self._generate_examples(split) for split in scenes.SPLITS
                if scenes.split_size(world, split) > 0}

    def _generate_examples(self, split: str):
        world = self.builder_config.world
        for index in range(scenes.split_size(world, split)):
            ex = scenes.example(world, split, index)
            yield index, to_record(ex)


def to_record(ex: dict[str, Any]) -> dict[str, Any]:
    """An example dict -> a record in the COCO feature layout (images as PNG bytes)."""
    iid = int(ex["image_id"])
    name = f"{iid:012d}.png"
    boxes = np.asarray(ex["boxes"], np.float32).reshape(-1, 4)
    things = [s for s in ex["segments"] if s["isthing"]]
    h, w = ex["panoptic"].shape
    objects = [{"id": int(s["id"]), "area": int(s["area"]), "bbox": boxes[k],
                "is_crowd": False, "label": int(lab)}
               for k, (s, lab) in enumerate(zip(things, ex["labels"], strict=True))]
    pan_objects = []
    for s in ex["segments"]:
        x, y, bw, bh = s["bbox"]
        box = np.array([y / h, x / w, (y + bh) / h, (x + bw) / w], np.float32)
        pan_objects.append({"id": int(s["id"]), "area": int(s["area"]), "bbox": box,
                            "is_crowd": bool(s.get("iscrowd", 0)),
                            "label": int(s["category_id"]) - 1})
    return {
        "image": _png(ex["image"]), "image/filename": name, "image/id": iid,
        "objects": objects,
        "panoptic_image": _png(coco_export.rgb_encode(ex["panoptic"])),
        "panoptic_image/filename": name,
        "panoptic_objects": pan_objects,
        "captions": [{"id": iid * 10 + k, "text": t} for k, t in enumerate(ex["captions"])],
    }


@contextlib.contextmanager
def _lock(path: str):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def prepare(world: scenes.WorldConfig, data_dir: str, label: str = "custom") -> Any:
    """The prepared builder of ``world`` in ``data_dir`` (built on first use, under a lock)."""
    config = next((c for c in Scenes.BUILDER_CONFIGS if c.world == world), None)
    config = config or builder_config(world, label)
    data_dir = os.path.abspath(data_dir)
    with _lock(os.path.join(data_dir, f".scenes-{config.name}.lock")):
        builder = Scenes(config=config, data_dir=data_dir, file_format="array_record")
        if not builder.is_prepared():
            builder.download_and_prepare(
                download_config=tfds.download.DownloadConfig(try_download_gcs=False))
            builder = Scenes(config=config, data_dir=data_dir, file_format="array_record")
    return builder


def data_source(world: scenes.WorldConfig, split: str, data_dir: str) -> Any:
    """Random-access records of one split (``as_data_source``, no TensorFlow)."""
    scenes.check_split(split)
    return prepare(world, data_dir).as_data_source(split=split)
