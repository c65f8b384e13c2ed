"""Input pipeline: deterministic batches from any random-access source of example dicts.

Data order is a pure function of ``(seed, step)``: the examples of global step ``s`` are
positions ``s*G .. s*G+G-1`` of an endless stream that walks epoch ``e`` in the order
``permutation(seed, e)`` (``G`` = global batch). A resumed run therefore sees exactly the
batches it would have seen. With several processes each builds only its slice of the global
batch (``process_index``/``process_count``); :func:`split_devices` reshapes a batch for
per-device use. :class:`Prefetcher` builds the next batches in a background thread.

A batch (``collate``) holds, for ``B`` examples and images resized to ``S``×``S``:

* ``image`` float32 [B,S,S,3] in ``value_range`` (uint8 if ``value_range`` is None);
* ``image_id`` int64 [B], ``index`` int64 [B] (position in the source), ``mask`` bool [B]
  (False on padding rows of a final evaluation batch);
* ``boxes`` float32 [B,M,4] (normalised, zero-padded), ``labels`` int32 [B,M] (-1 padded),
  ``num_boxes`` int32 [B];
* ``panoptic`` int32 [B,S,S] (nearest-neighbour resized) and its segments as ``seg_id``,
  ``seg_category``, ``seg_isthing``, ``seg_iscrowd``, ``seg_area`` [B,Q] (zero-padded; areas at
  the source size; the scenes have no crowd, COCO does);
* ``captions`` object [B,5] of str.

Resizing is to a square (normalised boxes are unchanged by it); real datasets with other
aspect ratios are stretched.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Sequence
from typing import Any, Protocol

import numpy as np


class Source(Protocol):
    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> dict[str, Any]: ...


def epoch_permutation(seed: int, epoch: int, n: int) -> np.ndarray:
    """The order of epoch ``epoch`` over ``n`` examples (a pure function of its arguments)."""
    return np.random.default_rng([int(seed), int(epoch), 0x5CE7E5]).permutation(n)


def step_indices(step: int, global_batch: int, n: int, seed: int,
                 shuffle: bool = True) -> np.ndarray:
    """Source indices int64 [global_batch] of global step ``step``."""
    if step < 0:
        raise ValueError(f"step must be >= 0, got {step}")
    if n <= 0:
        raise ValueError(f"the source is empty (size {n})")
    pos = step * global_batch + np.arange(global_batch, dtype=np.int64)
    epoch, within = pos // n, pos % n
    if not shuffle:
        return within
    out = np.empty(global_batch, np.int64)
    for e in np.unique(epoch):
        sel = epoch == e
        out[sel] = epoch_permutation(seed, int(e), n)[within[sel]]
    return out


def _resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Bilinear resize of uint8 [H, W, 3] to [size, size, 3] (PIL, else NumPy)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    try:
        from PIL import Image
    except ImportError:  # the GPU image may lack PIL
        return _resize_bilinear_numpy(image, size)
    return np.asarray(Image.fromarray(image).resize((size, size), Image.BILINEAR))


def _resize_bilinear_numpy(image: np.ndarray, size: int) -> np.ndarray:
    h, w = image.shape[:2]
    ys = np.clip((np.arange(size) + 0.5) * h / size - 0.5, 0, h - 1)
    xs = np.clip((np.arange(size) + 0.5) * w / size - 0.5, 0, w - 1)
    y0, x0 = ys.astype(int), xs.astype(int)
    y1, x1 = np.minimum(y0 + 1, h - 1), np.minimum(x0 + 1, w - 1)
    fy, fx = (ys - y0)[:, None, None], (xs - x0)[None, :, None]
    im = image.astype(np.float32)
    top = im[y0][:, x0] * (1 - fx) + im[y0][:, x1] * fx
    bottom = im[y1][:, x0] * (1 - fx) + im[y1][:, x1] * fx
    return np.round(top * (1 - fy) + bottom * fy).clip(0, 255).astype(np.uint8)


def _resize_nearest(ids: np.ndarray, size: int) -> np.ndarray:
    h, w = ids.shape
    if h == size and w == size:
        return ids
    ys = ((np.arange(size) + 0.5) * h / size).astype(np.int64)
    xs = ((np.arange(size) + 0.5) * w / size).astype(np.int64)
    return ids[ys[:, None], xs[None, :]]


def collate(examples: Sequence[dict[str, Any]], *, image_size: int | None = None,
            value_range: tuple[float, float] | None = (0.0, 1.0), max_boxes: int | None = None,
            max_segments: int | None = None, indices: Sequence[int] | None = None,
            mask: Sequence[bool] | None = None) -> dict[str, np.ndarray]:
    """Stacks example dicts into one batch (see the module docstring)."""
    if not examples:
        raise ValueError("collate needs at least one example")
    size = image_size or examples[0]["image"].shape[0]
    b = len(examples)
    m = max_boxes if max_boxes is not None else max(1, max(len(e["labels"]) for e in examples))
    q = max_segments if max_segments is not None else max(
        1, max(len(e["segments"]) for e in examples))
    images = np.stack([_resize_image(np.asarray(e["image"], np.uint8), size) for e in examples])
    if value_range is not None:
        lo, hi = value_range
        images = images.astype(np.float32) * np.float32((hi - lo) / 255.0) + np.float32(lo)
    boxes = np.zeros((b, m, 4), np.float32)
    labels = np.full((b, m), -1, np.int32)
    num_boxes = np.zeros(b, np.int32)
    segs = {k: np.zeros((b, q), np.int32) for k in ("seg_id", "seg_category", "seg_area")}
    segs["seg_isthing"] = np.zeros((b, q), np.bool_)
    segs["seg_iscrowd"] = np.zeros((b, q), np.bool_)
    for i, e in enumerate(examples):
        k = len(e["labels"])
        if k > m:
            raise ValueError(f"example {e['image_id']} has {k} boxes > max_boxes={m}")
        boxes[i, :k], labels[i, :k], num_boxes[i] = e["boxes"], e["labels"], k
        if len(e["segments"]) > q:
            raise ValueError(f"example {e['image_id']} has {len(e['segments'])} segments > "
                             f"max_segments={q}")
        for j, s in enumerate(e["segments"]):
            segs["seg_id"][i, j], segs["seg_category"][i, j] = s["id"], s["category_id"]
            segs["seg_area"][i, j], segs["seg_isthing"][i, j] = s["area"], bool(s["isthing"])
            segs["seg_iscrowd"][i, j] = bool(s.get("iscrowd", 0))
    captions = np.empty((b, 5), object)
    for i, e in enumerate(examples):
        caps = list(e["captions"])[:5]
        captions[i] = caps + [""] * (5 - len(caps))
    return {
        "image": images,
        "image_id": np.array([e["image_id"] for e in examples], np.int64),
        "index": np.asarray(indices if indices is not None else np.arange(b), np.int64),
        "mask": np.asarray(mask if mask is not None else np.ones(b), np.bool_),
        "boxes": boxes, "labels": labels, "num_boxes": num_boxes,
        "panoptic": np.stack([_resize_nearest(np.asarray(e["panoptic"], np.int32), size)
                              for e in examples]),
        **segs,
        "captions": captions,
    }


class Loader:
    """Batches of a source: ``loader.batch(step)`` is a pure function of (seed, step)."""

    def __init__(self, source: Source, global_batch: int, *, seed: int = 0, shuffle: bool = True,
                 process_index: int = 0, process_count: int = 1, image_size: int | None = None,
                 patch_size: int | None = None,
                 value_range: tuple[float, float] | None = (0.0, 1.0),
                 max_boxes: int | None = None, max_segments: int | None = None,
                 transform: Callable[[dict[str, Any]], dict[str, Any]] | None = None):
        if global_batch <= 0:
            raise ValueError(f"global_batch must be > 0, got {global_batch}")
        if process_count <= 0 or not 0 <= process_index < process_count:
            raise ValueError(f"process_index {process_index} is not in [0, {process_count})")
        if global_batch % process_count:
            raise ValueError(f"global batch {global_batch} is not divisible by "
                             f"{process_count} processes")
        if image_size is not None and image_size <= 0:
            raise ValueError(f"image_size must be > 0, got {image_size}")
        if patch_size is not None:
            size = image_size or source[0]["image"].shape[0]
            if patch_size <= 0 or size % patch_size:
                raise ValueError(f"image size {size} is not divisible by the patch size "
                                 f"{patch_size}")
        self.source, self.global_batch = source, global_batch
        self.seed, self.shuffle = seed, shuffle
        self.local_batch = global_batch // process_count
        self.offset = process_index * self.local_batch
        self.kw = {"image_size": image_size, "value_range": value_range,
                   "max_boxes": max_boxes, "max_segments": max_segments}
        self.transform = transform

    def __len__(self) -> int:
        return len(self.source)

    def indices(self, step: int) -> np.ndarray:
        """This process's source indices of global step ``step``."""
        idx = step_indices(step, self.global_batch, len(self.source), self.seed, self.shuffle)
        return idx[self.offset:self.offset + self.local_batch]

    def batch(self, step: int) -> dict[str, np.ndarray]:
        idx = self.indices(step)
        return self._collate(idx, np.ones(len(idx), bool))

    def _collate(self, idx: np.ndarray, mask: np.ndarray) -> dict[str, np.ndarray]:
        examples = [self.source[int(i)] for i in idx]
        if self.transform is not None:
            examples = [self.transform(e) for e in examples]
        return collate(examples, indices=idx, mask=mask, **self.kw)

    def epoch(self) -> Any:
        """One ordered pass over the source (evaluation): this process's rows of each global
        batch; the last batch is padded by repeating index 0 with ``mask`` False."""
        n = len(self.source)
        for start in range(0, n, self.global_batch):
            glob = np.arange(start, start + self.global_batch)
            mine = glob[self.offset:self.offset + self.local_batch]
            valid = mine < n
            yield self._collate(np.where(valid, mine, 0), valid)


class Prefetcher:
    """``batch_fn(step)`` that builds the next ``depth`` steps in a background thread.

    Calls in increasing step order are served from the queue; any other step is built
    directly (so results never depend on timing). Use as ``train.fit(..., batch_fn=p)`` and
    ``p.close()`` when done (or ``with Prefetcher(...) as p``).
    """

    def __init__(self, batch_fn: Callable[[int], Any], start_step: int = 0, depth: int = 2):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self.batch_fn, self.depth = batch_fn, depth
        self._start(start_step)

    def _start(self, step: int) -> None:
        self.next = step
        self.queue: queue.Queue = queue.Queue(maxsize=self.depth)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, args=(step, self.queue, self.stop),
                                       daemon=True)
        self.thread.start()

    def _run(self, step: int, q: queue.Queue, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                item = (step, self.batch_fn(step), None)
            except Exception as e:  # handed to the consumer, raised there
                item = (step, None, e)
            while not stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return
            step += 1

    def __call__(self, step: int) -> Any:
        if step != self.next:  # a jump (resume, evaluation): restart the thread after it
            self.close()
            batch = self.batch_fn(step)
            self._start(step + 1)
            return batch
        got, batch, err = self.queue.get()
        if err is not None:
            self.next = -1  # the thread has stopped: the next call restarts it
            raise err
        assert got == step, (got, step)
        self.next += 1
        return batch

    def close(self) -> None:
        self.stop.set()
        self.thread.join(timeout=5)

    def __enter__(self) -> Prefetcher:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __del__(self) -> None:
        self.stop.set()


def split_devices(batch: dict[str, np.ndarray], num_devices: int) -> dict[str, np.ndarray]:
    """Reshapes every array ``[B, ...]`` to ``[num_devices, B / num_devices, ...]``."""
    out = {}
    for k, v in batch.items():
        b = v.shape[0]
        if b % num_devices:
            raise ValueError(f"batch of {b} does not split over {num_devices} devices ({k})")
        out[k] = v.reshape(num_devices, b // num_devices, *v.shape[1:])
    return out
