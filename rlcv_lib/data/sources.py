"""One entry point from a dataset name to a random-access source of example dicts.

``"scenes"`` is the in-memory world (NumPy only: what the GPU image uses); ``"scenes_tfds"``
reads the same world through its TFDS builder; the real datasets go through
:mod:`rlcv_lib.data.adapters` (prepared ``array_record`` copies, no TensorFlow).
"""

from __future__ import annotations

from typing import Any

from rlcv_lib.data import memory, scenes

REAL = ("coco/2017", "coco/2017_panoptic", "coco_captions", "imagenet2012")
NAMES = ("scenes", "scenes_tfds", *REAL)


def open_source(name: str, split: str, *, world: scenes.WorldConfig | None = None,
                cache_dir: str | None = None, data_dir: str | None = None,
                size: int | None = None, lazy: bool = False, workers: int = 1) -> Any:
    """A source (``len``, ``[i]`` -> example dict) of ``split`` of dataset ``name``.

    Args:
      name: one of :data:`NAMES`.
      world: the scenes world (``scenes`` and ``scenes_tfds``).
      cache_dir: where in-memory scenes splits are cached as ``.npy`` (None: memory only).
      data_dir: TFDS data dir (``scenes_tfds`` prepares there; real datasets read from it).
      size: only the first ``size`` scenes (``scenes``).
      lazy: generate each scene on access instead of materialising the split.
    """
    if name not in NAMES:
        raise ValueError(f"unknown dataset name {name!r}; choose one of {list(NAMES)}")
    if name in ("scenes", "scenes_tfds"):
        if world is None:
            raise ValueError(f"dataset {name!r} needs world= (a WorldConfig)")
        scenes.check_split(split)
        if name == "scenes_tfds":
            if data_dir is None:
                raise ValueError("dataset 'scenes_tfds' needs data_dir= (where to prepare it)")
            from rlcv_lib.data import adapters

            return adapters.scenes_source(world, split, data_dir)
        if lazy:
            return memory.SceneSource(world, split, size)
        return memory.load_split(world, split, cache_dir=cache_dir, size=size, workers=workers)
    from rlcv_lib.data import adapters

    return adapters.TfdsSource(name, split, data_dir)
