"""The one place that keeps TensorFlow Datasets off the network (docs/design.md §9).

TFDS may look for prepared datasets and their metadata on Google Cloud Storage
(``gs://tfds-data``), and probe for dataset info files and community registries. This machine
and the GPU image have no network, and a lookup that hangs or fails is worse than none, so
:func:`tfds_offline` (idempotent, called by every module that imports TFDS) disables:

* GCS dataset and metadata look-ups (``gcs_utils._is_gcs_disabled``; already the default in
  TFDS 4.9, set again in case a newer release flips it), and every helper that would list
  or fetch GCS paths (made to return "not there");
* ``try_gcs`` defaults, by passing ``try_gcs=False`` in our own builder construction.

Downloads are never needed: the scenes builder generates its data, and the real-dataset
adapters read datasets that were prepared beforehand (``download=False``).
"""

from __future__ import annotations

import functools
from typing import Any


@functools.cache
def tfds_offline() -> Any:
    """Imports TFDS with its network look-ups disabled; returns the ``tfds`` module."""
    import tensorflow_datasets as tfds
    from tensorflow_datasets.core.utils import gcs_utils

    gcs_utils._is_gcs_disabled = True

    def _none(*args: Any, **kwargs: Any) -> Any:
        return None

    def _false(*args: Any, **kwargs: Any) -> bool:
        return False

    for name, stub in (("gcs_dataset_info_files", _none), ("is_dataset_on_gcs", _false),
                       ("gcs_dataset_info_path", _none), ("gcs_listdir", _none)):
        if hasattr(gcs_utils, name):
            setattr(gcs_utils, name, stub)
    return tfds
