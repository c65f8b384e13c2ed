"""COCO export: the reference libraries load it and score a perfect prediction perfectly."""

import contextlib
import copy
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from rlcv_lib.data import coco_export, scenes

CPU = scenes.CROWDED_64  # up to 12 things of six classes: every size bucket occurs


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    examples = [scenes.example(CPU, "validation", i) for i in range(24)]
    out = str(tmp_path_factory.mktemp("coco"))
    paths = coco_export.export_split(examples, scenes.categories(CPU), out, "validation",
                                     with_images=True)
    return examples, paths


def quiet(fn, *args):
    with contextlib.redirect_stdout(io.StringIO()):
        return fn(*args)


def test_rgb_encoding_round_trips():
    ids = np.array([[0, 1, 255], [256, 70000, 256 ** 3 - 1]])
    np.testing.assert_array_equal(coco_export.rgb_decode(coco_export.rgb_encode(ids)), ids)
    with pytest.raises(ValueError, match="segment ids must be in"):
        coco_export.rgb_encode(np.array([[-1]]))


@pytest.mark.parametrize("iou_type", ["bbox", "segm"])
def test_pycocotools_gives_ap_one_on_a_perfect_prediction(exported, iou_type):
    from pycocotools.coco import COCO
    from pycocotools.cocoeval import COCOeval

    examples, paths = exported
    gt = quiet(COCO, paths["instances"])
    assert len(gt.getImgIds()) == len(examples)
    assert len(gt.getAnnIds()) == sum(len(e["labels"]) for e in examples) > 50
    n = CPU.image_size
    dets = coco_export.detections_json(
        [e["image_id"] for e in examples], [e["boxes"] for e in examples],
        [e["labels"] for e in examples], [np.ones(len(e["labels"])) for e in examples],
        [(n, n)] * len(examples))
    if iou_type == "segm":
        anns = gt.loadAnns(gt.getAnnIds())
        for d, a in zip(dets, anns, strict=True):
            d["segmentation"] = a["segmentation"]
    dt = quiet(gt.loadRes, dets)
    ev = COCOeval(gt, dt, iou_type)
    ev.params.areaRng = scenes.coco_area_ranges(n, n)
    quiet(ev.evaluate)
    quiet(ev.accumulate)
    quiet(ev.summarize)
    ap, ap50, ap75, ap_s, ap_m, ap_l = ev.stats[:6]
    assert ap == pytest.approx(1.0) and ap50 == pytest.approx(1.0)
    assert ap_s == pytest.approx(1.0) and ap_m == pytest.approx(1.0)
    assert ap_l == pytest.approx(1.0)
    # and a wrong prediction is not perfect
    for d in dets[::2]:
        d["category_id"] = d["category_id"] % len(CPU.thing_classes) + 1
    ev = COCOeval(gt, quiet(gt.loadRes, dets), iou_type)
    quiet(ev.evaluate)
    quiet(ev.accumulate)
    quiet(ev.summarize)
    assert ev.stats[0] < 0.9


def test_boxes_match_masks_in_pycocotools(exported):
    from pycocotools import mask as mask_utils
    from pycocotools.coco import COCO

    _, paths = exported
    gt = quiet(COCO, paths["instances"])
    for ann in gt.loadAnns(gt.getAnnIds()):
        np.testing.assert_allclose(mask_utils.toBbox(ann["segmentation"]), ann["bbox"], atol=1e-4)
        assert mask_utils.area(ann["segmentation"]) == ann["area"]


def test_panopticapi_gives_pq_one_on_a_perfect_prediction(exported, tmp_path):
    from panopticapi.evaluation import pq_compute_single_core

    examples, paths = exported
    with open(paths["panoptic"]) as f:
        gt_json = json.load(f)
    pred = coco_export.write_panoptic(
        [e["image_id"] for e in examples], [e["panoptic"] for e in examples],
        [e["segments"] for e in examples], scenes.categories(CPU), str(tmp_path / "pred"))
    assert examples[0]["segments"][0]["area"] > 0  # caller's infos untouched
    cats = {c["id"]: c for c in gt_json["categories"]}
    pairs = list(zip(copy.deepcopy(gt_json["annotations"]), pred["annotations"], strict=True))
    stat = quiet(pq_compute_single_core, 0, pairs, paths["panoptic_dir"], str(tmp_path / "pred"),
                 cats)
    for isthing in (None, True, False):
        res, _ = stat.pq_average(cats, isthing=isthing)
        assert res["pq"] == pytest.approx(1.0) and res["n"] > 0
    # a prediction with two segments swapped is not perfect
    bad = copy.deepcopy(pred["annotations"])
    for ann in bad:
        infos = ann["segments_info"]
        infos[0]["category_id"], infos[-1]["category_id"] = (infos[-1]["category_id"],
                                                              infos[0]["category_id"])
    pairs = list(zip(copy.deepcopy(gt_json["annotations"]), bad, strict=True))
    stat = quiet(pq_compute_single_core, 0, pairs, paths["panoptic_dir"], str(tmp_path / "pred"),
                 cats)
    assert stat.pq_average(cats, isthing=None)[0]["pq"] < 0.95


def test_panoptic_pngs_decode_to_the_maps(exported):
    examples, paths = exported
    for ex in examples[:5]:
        png = Image.open(os.path.join(paths["panoptic_dir"], f"{ex['image_id']:012d}.png"))
        np.testing.assert_array_equal(coco_export.rgb_decode(np.array(png)), ex["panoptic"])
        img = Image.open(os.path.join(paths["images_dir"], f"{ex['image_id']:012d}.png"))
        np.testing.assert_array_equal(np.array(img), ex["image"])


def test_pycocoevalcap_scores_the_references(exported):
    from pycocoevalcap.bleu.bleu import Bleu
    from pycocoevalcap.cider.cider import Cider
    from pycocotools.coco import COCO

    examples, paths = exported
    coco = quiet(COCO, paths["captions"])
    refs = {i: [a["caption"] for a in coco.imgToAnns[i]] for i in coco.getImgIds()}
    assert all(len(r) == 5 for r in refs.values())
    gts = {i: r[1:] for i, r in refs.items()}
    res = {i: r[:1] for i, r in refs.items()}
    cider, per_image = Cider().compute_score(gts, res)
    bleu, _ = quiet(Bleu(4).compute_score, gts, res)
    assert 0 < cider and len(per_image) == len(examples)
    assert 0 < bleu[0] <= 1
    # a caption of another image scores lower than the image's own reference
    ids = list(res)
    shifted = {i: res[ids[(k + 1) % len(ids)]] for k, i in enumerate(ids)}
    assert Cider().compute_score(gts, shifted)[0] < cider
