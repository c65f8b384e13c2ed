"""Data: the scenes world, its TFDS builder, real-dataset adapters and the input pipeline.

* :mod:`~rlcv_lib.data.scenes`: the generator, ``WorldConfig`` and ``WORLD_PRESETS``
  (with :mod:`~rlcv_lib.data.palette` and the caption grammar :mod:`~rlcv_lib.data.captions`);
* :mod:`~rlcv_lib.data.memory`: packed in-memory splits with an atomic ``.npy`` disk cache;
* :mod:`~rlcv_lib.data.sources`: ``open_source(name, split, ...)`` for every dataset name;
* :mod:`~rlcv_lib.data.pipeline`: deterministic batches, process/device split, prefetch;
* :mod:`~rlcv_lib.data.coco_export`: COCO instances / panoptic / captions files;
* :mod:`~rlcv_lib.data.tfds_scenes`, :mod:`~rlcv_lib.data.adapters`,
  :mod:`~rlcv_lib.data.offline`: TFDS (builder, real datasets, no network);
* :mod:`~rlcv_lib.data.stats`, :mod:`~rlcv_lib.data.draw`: statistics and figures.

Importing this package imports NumPy only; TFDS, pycocotools, PIL and matplotlib are imported
lazily by the modules that need them (the GPU image has no TFDS).
"""
