"""COCO-format export of example dicts, so the reference libraries evaluate them directly.

* ``instances_<split>.json``: COCO detection (pycocotools ``COCO``/``COCOeval``); boxes are pixel
  ``[x, y, w, h]`` (the example's normalised pixel-edge boxes times the image size), segments
  as RLE of the visible pixels (needs pycocotools; ``with_masks=False`` skips them).
* ``panoptic_<split>.json`` + ``panoptic_<split>/<image_id>.png``: COCO panoptic (panopticapi);
  segment ids are RGB-encoded as ``id = R + 256 G + 256² B``, 0 is void.
* ``captions_<split>.json``: COCO captions (pycocotools ``COCO`` + pycocoevalcap).

Predictions use the same writers: :func:`detections_json` and :func:`write_panoptic` (pass the
predicted maps and segments). Everything written is plain Python ints/floats (JSON-safe; the
segment infos are copied, never shared with the caller).
"""

from __future__ import annotations

import copy
import json
import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np


def rgb_encode(ids: np.ndarray) -> np.ndarray:
    """Segment ids int [H, W] -> uint8 RGB [H, W, 3] (COCO panoptic PNG encoding)."""
    ids = np.asarray(ids, np.int64)
    if ids.min(initial=0) < 0 or ids.max(initial=0) >= 256 ** 3:
        raise ValueError(f"segment ids must be in [0, 256**3), got [{ids.min()}, {ids.max()}]")
    return np.stack([ids % 256, ids // 256 % 256, ids // 256 ** 2], -1).astype(np.uint8)


def rgb_decode(rgb: np.ndarray) -> np.ndarray:
    """uint8 RGB [H, W, 3] -> int32 segment ids [H, W] (inverse of :func:`rgb_encode`)."""
    rgb = np.asarray(rgb, np.int64)
    return (rgb[..., 0] + 256 * rgb[..., 1] + 256 ** 2 * rgb[..., 2]).astype(np.int32)


def _image_entry(ex: dict[str, Any]) -> dict[str, Any]:
    h, w = ex["image"].shape[:2]
    return {"id": int(ex["image_id"]), "width": int(w), "height": int(h),
            "file_name": f"{int(ex['image_id']):012d}.png"}


def pixel_boxes(boxes: np.ndarray, height: int, width: int) -> np.ndarray:
    """Normalised (ymin, xmin, ymax, xmax) [K, 4] -> COCO pixel (x, y, w, h) [K, 4] float64."""
    b = np.asarray(boxes, np.float64).reshape(-1, 4)
    y0, x0, y1, x1 = b[:, 0] * height, b[:, 1] * width, b[:, 2] * height, b[:, 3] * width
    return np.stack([x0, y0, x1 - x0, y1 - y0], -1)


def instances_json(examples: Iterable[dict[str, Any]], categories: Sequence[dict[str, Any]],
                   with_masks: bool = True) -> dict[str, Any]:
    """COCO instances dict (things only) of ground-truth examples."""
    if with_masks:
        from pycocotools import mask as mask_utils
    images, annotations = [], []
    for ex in examples:
        images.append(_image_entry(ex))
        h, w = ex["image"].shape[:2]
        things = [s for s in ex["segments"] if s["isthing"]]
        if len(things) != len(ex["labels"]):
            raise ValueError(f"image {ex['image_id']}: {len(ex['labels'])} labels but "
                             f"{len(things)} thing segments")
        for seg, label, box in zip(things, ex["labels"], pixel_boxes(ex["boxes"], h, w),
                                   strict=True):
            if int(label) + 1 != seg["category_id"]:
                raise ValueError(f"image {ex['image_id']}: label {label} does not match "
                                 f"segment category {seg['category_id']}")
            ann = {"id": len(annotations) + 1, "image_id": int(ex["image_id"]),
                   "category_id": int(seg["category_id"]), "bbox": [float(v) for v in box],
                   "area": float(seg["area"]), "iscrowd": 0}
            if with_masks:
                m = np.asfortranarray((ex["panoptic"] == seg["id"]).astype(np.uint8))
                rle = mask_utils.encode(m)
                ann["segmentation"] = {"size": [int(v) for v in rle["size"]],
                                       "counts": rle["counts"].decode("ascii")}
            annotations.append(ann)
    cats = [{"id": int(c["id"]), "name": c["name"], "supercategory": c["supercategory"]}
            for c in categories if c["isthing"]]
    return {"images": images, "annotations": annotations, "categories": cats}


def detections_json(image_ids: Sequence[int], boxes: Sequence[np.ndarray],
                    labels: Sequence[np.ndarray], scores: Sequence[np.ndarray],
                    sizes: Sequence[tuple[int, int]]) -> list[dict[str, Any]]:
    """COCO results list from per-image normalised boxes [K,4], 0-based labels and scores."""
    out = []
    for iid, b, lab, sc, (h, w) in zip(image_ids, boxes, labels, scores, sizes, strict=True):
        for box, label, score in zip(pixel_boxes(b, h, w), np.asarray(lab), np.asarray(sc),
                                     strict=True):
            out.append({"image_id": int(iid), "category_id": int(label) + 1,
                        "bbox": [float(v) for v in box], "score": float(score)})
    return out


def captions_json(examples: Iterable[dict[str, Any]]) -> dict[str, Any]:
    """COCO captions dict: five annotations per image."""
    images, annotations = [], []
    for ex in examples:
        images.append(_image_entry(ex))
        for text in ex["captions"]:
            annotations.append({"id": len(annotations) + 1, "image_id": int(ex["image_id"]),
                                "caption": str(text)})
    return {"images": images, "annotations": annotations}


def write_panoptic(image_ids: Sequence[int], maps: Sequence[np.ndarray],
                   segments: Sequence[Sequence[dict[str, Any]]],
                   categories: Sequence[dict[str, Any]], png_dir: str) -> dict[str, Any]:
    """Writes RGB-encoded PNGs into ``png_dir``; returns the panoptic JSON dict."""
    from PIL import Image

    os.makedirs(png_dir, exist_ok=True)
    images, annotations = [], []
    for iid, pan, segs in zip(image_ids, maps, segments, strict=True):
        name = f"{int(iid):012d}.png"
        Image.fromarray(rgb_encode(pan)).save(os.path.join(png_dir, name))
        h, w = np.shape(pan)
        images.append({"id": int(iid), "width": int(w), "height": int(h), "file_name": name})
        infos = [{"id": int(s["id"]), "category_id": int(s["category_id"]),
                  "iscrowd": int(s.get("iscrowd", 0)), "area": int(s.get("area", 0)),
                  "bbox": [int(v) for v in s.get("bbox", [0, 0, 0, 0])]}
                 for s in copy.deepcopy(list(segs))]
        annotations.append({"image_id": int(iid), "file_name": name, "segments_info": infos})
    cats = [{"id": int(c["id"]), "name": c["name"], "supercategory": c["supercategory"],
             "isthing": int(c["isthing"]), "color": [int(v) for v in c["color"]]}
            for c in categories]
    return {"images": images, "annotations": annotations, "categories": cats}


def export_split(examples: Sequence[dict[str, Any]], categories: Sequence[dict[str, Any]],
                 out_dir: str, split: str, with_masks: bool = True,
                 with_images: bool = False) -> dict[str, str]:
    """Writes the three COCO files (and optionally the images) of ``examples``.

    Returns the paths: ``instances``, ``panoptic`` (JSON), ``panoptic_dir``, ``captions``
    (and ``images_dir`` with ``with_images``).
    """
    os.makedirs(out_dir, exist_ok=True)
    paths = {"instances": os.path.join(out_dir, f"instances_{split}.json"),
             "panoptic": os.path.join(out_dir, f"panoptic_{split}.json"),
             "panoptic_dir": os.path.join(out_dir, f"panoptic_{split}"),
             "captions": os.path.join(out_dir, f"captions_{split}.json")}
    _dump(instances_json(examples, categories, with_masks), paths["instances"])
    pan = write_panoptic([e["image_id"] for e in examples], [e["panoptic"] for e in examples],
                         [e["segments"] for e in examples], categories, paths["panoptic_dir"])
    _dump(pan, paths["panoptic"])
    _dump(captions_json(examples), paths["captions"])
    if with_images:
        from PIL import Image

        paths["images_dir"] = os.path.join(out_dir, split)
        os.makedirs(paths["images_dir"], exist_ok=True)
        for ex in examples:
            Image.fromarray(ex["image"]).save(
                os.path.join(paths["images_dir"], _image_entry(ex)["file_name"]))
    return paths


def _dump(obj: Any, path: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        json.dump(obj, f)
    os.replace(tmp, path)
