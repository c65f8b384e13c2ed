"""In-memory scenes splits (NumPy only, no TFDS): packed arrays, cached on disk.

A split is packed into flat arrays (:class:`ArrayDataset`): fixed-size fields stacked on a
leading ``[N]`` axis, variable-length ones (boxes, segments) concatenated with offsets. It is
cached as a directory of ``.npy`` files, keyed by world version + config hash + split, written
into a temporary directory and renamed into place (two processes building the same split both
succeed and never leave a half-written cache). Loading memory-maps the arrays.

:class:`SceneSource` is the lazy alternative: it generates each example on access.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np

from rlcv_lib.data import scenes

_SEG_FIELDS = ("seg_id", "seg_category", "seg_isthing", "seg_area", "seg_bbox")


class SceneSource:
    """Random access to one split, generating each example on demand (no cache)."""

    def __init__(self, cfg: scenes.WorldConfig, split: str, size: int | None = None):
        self.cfg, self.split = cfg, split
        self.size = scenes.split_size(cfg, split) if size is None else int(size)

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.split} ({self.size})")
        return scenes.example(self.cfg, self.split, int(index))


class ArrayDataset:
    """A split as packed arrays; ``ds[i]`` rebuilds the example dict of docs/design.md §3.2."""

    def __init__(self, arrays: dict[str, np.ndarray]):
        self.arrays = arrays
        self.size = len(arrays["image_id"])

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, index: int) -> dict[str, Any]:
        a = self.arrays
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range ({self.size})")
        b0, b1 = a["box_offsets"][index], a["box_offsets"][index + 1]
        s0, s1 = a["seg_offsets"][index], a["seg_offsets"][index + 1]
        segments = []
        for k in range(s0, s1):
            thing = bool(a["seg_isthing"][k])
            segments.append({"id": int(a["seg_id"][k]), "category_id": int(a["seg_category"][k]),
                             "is_thing": thing, "isthing": int(thing), "iscrowd": 0,
                             "area": int(a["seg_area"][k]),
                             "bbox": [int(v) for v in a["seg_bbox"][k]]})
        return {"image": np.asarray(a["image"][index]),
                "image_id": int(a["image_id"][index]),
                "boxes": np.asarray(a["boxes"][b0:b1], np.float32),
                "labels": np.asarray(a["labels"][b0:b1], np.int32),
                "panoptic": np.asarray(a["panoptic"][index], np.int32),
                "segments": segments,
                "captions": [str(c) for c in a["captions"][index]]}


def pack(examples: Sequence[dict[str, Any]]) -> ArrayDataset:
    """Packs example dicts (equal image sizes, five captions each) into an ArrayDataset."""
    if not examples:
        raise ValueError("pack needs at least one example")
    n_seg = [len(e["segments"]) for e in examples]
    max_id = max((s["id"] for e in examples for s in e["segments"]), default=0)
    pan_dtype = np.uint8 if max_id < 256 else (np.uint16 if max_id < 65536 else np.int32)
    segs = [s for e in examples for s in e["segments"]]
    arrays = {
        "image": np.stack([e["image"] for e in examples]).astype(np.uint8),
        "image_id": np.array([e["image_id"] for e in examples], np.int64),
        "panoptic": np.stack([e["panoptic"] for e in examples]).astype(pan_dtype),
        "boxes": np.concatenate([e["boxes"].reshape(-1, 4) for e in examples]).astype(np.float32),
        "labels": np.concatenate([e["labels"] for e in examples]).astype(np.int32),
        "box_offsets": np.cumsum([0] + [len(e["labels"]) for e in examples]).astype(np.int64),
        "seg_offsets": np.cumsum([0] + n_seg).astype(np.int64),
        "seg_id": np.array([s["id"] for s in segs], np.int32),
        "seg_category": np.array([s["category_id"] for s in segs], np.int32),
        "seg_isthing": np.array([s["isthing"] for s in segs], np.bool_),
        "seg_area": np.array([s["area"] for s in segs], np.int64),
        "seg_bbox": np.array([s["bbox"] for s in segs], np.int32).reshape(-1, 4),
        "captions": np.array([list(e["captions"]) for e in examples], dtype=np.str_),
    }
    return ArrayDataset(arrays)


def concat(parts: Sequence[ArrayDataset]) -> ArrayDataset:
    """Concatenates packed datasets (offsets shifted)."""
    if not parts:
        raise ValueError("concat needs at least one dataset")
    out = {}
    for name in parts[0].arrays:
        arrays = [np.asarray(p.arrays[name]) for p in parts]
        if name.endswith("_offsets"):
            shifted, base = [arrays[0]], arrays[0][-1]
            for a in arrays[1:]:
                shifted.append(a[1:] + base)
                base = base + a[-1]
            out[name] = np.concatenate(shifted)
        elif name == "panoptic":
            dtype = max((a.dtype for a in arrays), key=lambda d: d.itemsize)
            out[name] = np.concatenate([a.astype(dtype) for a in arrays])
        elif name == "captions":
            out[name] = np.concatenate(arrays).astype(np.str_)
        else:
            out[name] = np.concatenate(arrays)
    return ArrayDataset(out)


def _generate_range(args: tuple[scenes.WorldConfig, str, int, int]) -> ArrayDataset:
    cfg, split, start, stop = args
    return pack([scenes.example(cfg, split, i) for i in range(start, stop)])


def generate_split(cfg: scenes.WorldConfig, split: str, size: int, workers: int = 1,
                   progress: bool = False) -> ArrayDataset:
    """Generates and packs scenes ``0..size-1`` of ``split``, in ``workers`` processes."""
    if workers <= 1 or size < 256:
        indices: Any = range(size)
        if progress:
            from tqdm.auto import tqdm

            indices = tqdm(indices, desc=f"scenes {split}", leave=False)
        return pack([scenes.example(cfg, split, i) for i in indices])
    import multiprocessing

    chunk = max(64, -(-size // (workers * 8)))
    jobs = [(cfg, split, a, min(size, a + chunk)) for a in range(0, size, chunk)]
    with multiprocessing.get_context("spawn").Pool(workers) as pool:
        parts = pool.map(_generate_range, jobs)
    return concat(parts)


def cache_key(cfg: scenes.WorldConfig, split: str, size: int) -> str:
    return f"scenes_v{scenes.WORLD_VERSION}_{scenes.config_hash(cfg)}_{split}_{size}"


def save(ds: ArrayDataset, path: str, meta: dict[str, Any] | None = None) -> None:
    """Writes ``ds`` as ``path/<field>.npy`` atomically (temp dir + rename)."""
    parent = os.path.dirname(os.path.abspath(path))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".tmp-", dir=parent)
    try:
        for name, arr in ds.arrays.items():
            np.save(os.path.join(tmp, f"{name}.npy"), arr)
        with open(os.path.join(tmp, "meta.json"), "w") as f:
            json.dump(meta or {}, f)
        try:
            os.rename(tmp, path)
        except OSError:  # another process won the race: its copy is complete and identical
            if not os.path.exists(os.path.join(path, "meta.json")):
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load(path: str, mmap: bool = True) -> ArrayDataset:
    with open(os.path.join(path, "meta.json")):
        pass  # meta.json is written last into the temp dir: its presence marks completeness
    names = [f[:-4] for f in os.listdir(path) if f.endswith(".npy")]
    mode = "r" if mmap else None
    return ArrayDataset({n: np.load(os.path.join(path, f"{n}.npy"), mmap_mode=mode)
                         for n in names})


_MEMO: dict[str, ArrayDataset] = {}
_MEMO_LOCK = threading.Lock()


def load_split(cfg: scenes.WorldConfig, split: str, cache_dir: str | None = None,
               size: int | None = None, progress: bool = False,
               workers: int = 1) -> ArrayDataset:
    """A whole split (or its first ``size`` images) as an ArrayDataset.

    Memoised in this process; with ``cache_dir`` also cached on disk under
    ``cache_dir/<world version>_<config hash>_<split>_<size>`` and memory-mapped from there.
    ``workers`` > 1 generates in that many spawned processes (the cpu train split of 50k
    images takes about 100 s in one process).
    """
    n = scenes.split_size(cfg, split) if size is None else int(size)
    if n <= 0:
        raise ValueError(f"split {split!r} of this world has no images (size {n})")
    key = cache_key(cfg, split, n)
    with _MEMO_LOCK:
        if key in _MEMO:
            return _MEMO[key]
    path = os.path.join(cache_dir, key) if cache_dir else None
    if path and os.path.exists(os.path.join(path, "meta.json")):
        ds = load(path)
    else:
        ds = generate_split(cfg, split, n, workers, progress)
        if path:
            save(ds, path, {"world_version": scenes.WORLD_VERSION, "split": split, "size": n,
                            "config": scenes.config_hash(cfg)})
            ds = load(path)
    with _MEMO_LOCK:
        _MEMO[key] = ds
    return ds
