"""Panoptic task so far (tasks/panoptic/task.py): canonical instance ids, one-hot stage I targets
and their decoding into segments scored by the per-image PQ, and stage I pretraining through the
shared recipe, shipping and loading."""

import dataclasses

import numpy as np
import pytest

from rlcv_lib import config
from rlcv_lib.core import shipped
from rlcv_lib.data import pipeline, scenes
from rlcv_lib.tasks.panoptic import reward
from rlcv_lib.tasks.panoptic import task as pt


def _batch(pan, seg_id, seg_category):
    pan = np.asarray(pan, np.int32)[None]
    return {"image": np.full(pan.shape + (3,), 0.5, np.float32), "panoptic": pan,
            "seg_id": np.asarray([seg_id], np.int32),
            "seg_category": np.asarray([seg_category], np.int32)}


@pytest.fixture(scope="module")
def smoke():
    cfg = config.get_config("smoke", task="panoptic")
    batch = pipeline.collate([scenes.example(cfg.world, "validation", i) for i in range(12)])
    c = len(scenes.categories(cfg.world))
    return cfg, c, pt.stage1_batch(batch, c, cfg.panoptic.max_instances)


def test_canonical_order_is_raster_order_of_the_centres_of_mass():
    seg = np.array([[0, 3, 3, 0],
                    [2, 2, 0, 1],
                    [2, 2, 0, 1],
                    [4, 0, 0, 1]])
    # centres (row, col): 1 (2, 3), 2 (1.5, 0.5), 3 (0, 1.5), 4 (3, 0); segment 5 has no pixel
    np.testing.assert_array_equal(pt.canonical_order(seg[None], 5)[0], [3, 2, 1, 4, 0])
    # equal centres: row first, then column; a tie keeps the segment order
    ring = np.array([[1, 1, 1], [1, 2, 1], [1, 1, 1]])
    np.testing.assert_array_equal(pt.canonical_order(ring[None], 2)[0], [1, 2])


def test_targets_are_one_hot_with_void_kept_void():
    pan = [[0, 7, 7], [5, 5, 9], [5, 5, 9]]  # id 9 is in no segment info: void
    s = pt.stage1_batch(_batch(pan, [5, 7, 0], [2, 4, 0]), num_categories=4, max_instances=3)
    assert s["semantics"].shape == (1, 3, 3, 5) and s["instances"].shape == (1, 3, 3, 4)
    for name in ("semantics", "instances"):
        np.testing.assert_array_equal(s[name].sum(-1), 1.0)
    void = np.array([[1, 0, 0], [0, 0, 1], [0, 0, 1]], bool)
    np.testing.assert_array_equal(s["semantics"][0, ..., 0] == 1, void)
    np.testing.assert_array_equal(s["instances"][0, ..., 0] == 1, void)
    np.testing.assert_array_equal(np.argmax(s["semantics"][0], -1),
                                  [[0, 4, 4], [2, 2, 0], [2, 2, 0]])
    # segment 7 (centre row 0) comes before segment 5 (centre row 1.5)
    np.testing.assert_array_equal(np.argmax(s["instances"][0], -1),
                                  [[0, 1, 1], [2, 2, 0], [2, 2, 0]])
    np.testing.assert_array_equal(s["gt_area"][0], [4, 2, 0])
    np.testing.assert_allclose(s["image"], 0.0)  # 0.5 on [0, 1] is 0 on [−1, 1]


def test_segments_beyond_max_instances_are_void_in_the_instance_target_only():
    pan = np.repeat(np.arange(1, 5)[:, None], 2, 1)  # four horizontal stripes
    s = pt.stage1_batch(_batch(pan, [1, 2, 3, 4], [1, 1, 2, 2]), num_categories=2,
                        max_instances=2)
    np.testing.assert_array_equal(np.argmax(s["instances"][0], -1)[:, 0], [1, 2, 0, 0])
    np.testing.assert_array_equal(np.argmax(s["semantics"][0], -1)[:, 0], [1, 1, 2, 2])
    # the oracle loses the overflow: two of four segments found, against the full truth
    m, c = pt.decode_panoptic(s["semantics"], s["instances"])
    np.testing.assert_array_equal(m[0, :, 0], [1, 2, 0, 0])
    metrics = pt.stage1_metrics({"semantics": s["semantics"], "instances": s["instances"]}, s)
    # category 1: two TPs (PQ 1); category 2: two FNs (PQ 0)
    assert metrics["pq"] == pytest.approx(0.5) and metrics["semantic_accuracy"] == 1.0


def test_decode_takes_the_summed_semantic_logits_per_instance_and_voids_void_classes():
    sem = np.zeros((1, 1, 4, 3))
    sem[0, 0, :, 1] = [5, 5, 0, 0]
    sem[0, 0, :, 2] = [0, 0, 3, 4]  # pixel 3 alone would say class 2, its segment says 1
    sem[0, 0, 2, 1] = 9
    inst = np.zeros((1, 1, 4, 4))
    inst[0, 0, [0, 1, 2, 3], [1, 2, 2, 3]] = 1  # ids 1, 2, 2, 3
    sem[0, 0, 3, 0] = 10  # segment 3's class is void
    m, c = pt.decode_panoptic(sem, inst)
    np.testing.assert_array_equal(m, [[[1, 2, 2, 0]]])
    np.testing.assert_array_equal(c, [[1, 1, 0]])


def test_decoding_the_targets_reproduces_the_ground_truth_of_real_scenes(smoke):
    cfg, c, s = smoke
    m, cat = pt.decode_panoptic(s["semantics"], s["instances"])
    pq = reward.per_image_pq(m, cat, s["gt_map"], s["gt_category"], s["gt_crowd"],
                             s["gt_area"], c)
    np.testing.assert_array_equal(pq, 1.0)
    reward.check_inputs(m, cat, s["gt_map"], s["gt_category"], s["gt_crowd"], s["gt_area"], c)
    # and segment by segment: each decoded segment is one ground-truth segment, same category
    for i in range(m.shape[0]):
        for k in np.unique(m[i])[1:]:
            g = np.unique(s["gt_map"][i][m[i] == k])
            assert len(g) == 1 and g[0] > 0
            assert cat[i, k - 1] == s["gt_category"][i, g[0] - 1]
            np.testing.assert_array_equal(m[i] == k, s["gt_map"][i] == g[0])
    assert s["semantics"].shape[-1] == c + 1 == 14


def test_stage1_metrics_of_perfect_and_empty_outputs(smoke):
    _, _, s = smoke
    perfect = pt.stage1_metrics({"semantics": s["semantics"] * 3, "instances": s["instances"]}, s)
    assert perfect == {"pq": 1.0, "semantic_accuracy": 1.0}
    flat = {"semantics": np.zeros_like(s["semantics"]), "instances": np.zeros_like(s["instances"])}
    empty = pt.stage1_metrics(flat, s)  # all void: every ground truth missed
    assert empty["pq"] == 0.0 and empty["semantic_accuracy"] == 0.0


def _max_instances(name):
    return pt.PANOPTIC_PRESETS[name].max_instances


def test_presets_hold_every_segment_of_their_world():
    for name in ("smoke", "cpu", "gpu"):
        w = scenes.WORLD_PRESETS[name]
        assert _max_instances(name) >= w.max_objects + w.max_stuff_regions
        assert pt.VQVAE_PANOPTIC_PRESETS[name].targets == (
            ("semantics", len(scenes.categories(w)) + 1), ("instances", _max_instances(name) + 1))
    # the paper preset: UViM's release, 133 COCO categories + void and 100 instance channels
    assert pt.VQVAE_PANOPTIC_PRESETS["paper"].targets == (("semantics", 134), ("instances", 100))


def test_coco_categories_are_80_things_then_53_stuff_numbered_as_the_adapter_does():
    cats = pt.categories(scenes.WORLD_PRESETS["paper"], pt.PANOPTIC_PRESETS["paper"])
    assert [c["id"] for c in cats] == list(range(1, 134))
    assert [c["isthing"] for c in cats] == [1] * 80 + [0] * 53
    assert pt.categories(scenes.WORLD_PRESETS["cpu"], pt.PANOPTIC_PRESETS["cpu"]) == \
        scenes.categories(scenes.WORLD_PRESETS["cpu"])
    with pytest.raises(config.ConfigError, match="categories must be 'world' or 'coco'"):
        pt.PanopticConfig(categories="ade20k")


def test_coco_panoptic_through_the_adapter_gives_the_released_stage1_targets():
    """TFDS coco/2017_panoptic mock records -> the adapter -> collate -> stage I batch with the
    release's channels; crowd segments reach the ground truth."""
    tfds = pytest.importorskip("tensorflow_datasets")
    from rlcv_lib.data import adapters

    adapters.coco_without_tensorflow()
    with tfds.testing.mock_data(num_examples=4):
        source = adapters.TfdsSource("coco/2017_panoptic", "train")
        examples = [source[i] for i in range(4)]
    for ex in examples:  # mock data draws at random: at most 99 segments, one crowd
        ex["segments"] = ex["segments"][:99]
        for seg in ex["segments"]:
            seg["iscrowd"] = int(ex is examples[0] and seg is ex["segments"][0])
    batch = pipeline.collate(examples, image_size=32)
    paper = pt.PANOPTIC_PRESETS["paper"]
    s1 = pt.stage1_batch(batch, 133, paper.max_instances)
    assert s1["semantics"].shape == (4, 32, 32, 134) and s1["instances"].shape == (4, 32, 32, 100)
    assert s1["image"].min() >= -1 and s1["image"].max() <= 1
    assert batch["seg_iscrowd"][0, 0] and not batch["seg_iscrowd"][1:].any()
    first = batch["seg_id"][0, 0]
    assert s1["gt_crowd"][0, 0] == bool(np.any(batch["panoptic"][0] == first))


def test_bad_inputs_name_the_problem():
    good = _batch([[1, 2]], [1, 2], [1, 2])
    with pytest.raises(KeyError, match="seg_category"):
        pt.stage1_batch({k: v for k, v in good.items() if k != "seg_category"}, 2, 2)
    with pytest.raises(ValueError, match="category 2 > num_categories=1"):
        pt.stage1_batch(good, 1, 2)
    with pytest.raises(ValueError, match="max_instances must be ≥ 1"):
        pt.stage1_batch(good, 2, 0)
    with pytest.raises(ValueError, match=r"\[B,H,W,3\]"):
        pt.stage1_batch(good | {"image": good["image"][..., :1]}, 2, 2)
    with pytest.raises(ValueError, match="differ in size"):
        pt.stage1_batch(good | {"image": np.zeros((1, 2, 2, 3))}, 2, 2)
    with pytest.raises(ValueError, match="of one B,H,W"):
        pt.decode_panoptic(np.zeros((1, 2, 2, 3)), np.zeros((1, 2, 3, 3)))
    cfg = config.get_config("smoke", task="panoptic")
    with pytest.raises(ValueError, match="vqvae.targets="):
        pt.make_stage1_task(cfg.replace(vqvae=dataclasses.replace(cfg.vqvae,
                                                                  targets=(("rgb", 3),))))
    fewer = cfg.replace(panoptic=pt.PanopticConfig(max_instances=4))
    with pytest.raises(ValueError, match="max_instances=4"):
        pt.make_stage1_task(fewer)
    with pytest.raises(ValueError, match="differs from world.image_size"):
        pt.make_stage1_task(cfg.replace(vqvae=dataclasses.replace(cfg.vqvae, image_size=64)))


def test_stage1_pretrains_ships_and_loads_through_the_shared_recipe(smoke_stage_round_trip):
    """The generic pretraining runs the VQ-VAE on the two one-hot targets with cross-entropy;
    its evaluation reports the oracle PQ with and without codes; the shipped stage loads back
    into an equal model through the manifest match."""
    _, run, manifest, loaded = smoke_stage_round_trip(pt.STAGE1_RECIPE, "panoptic", "stage1")
    evals = run.history.records("eval")
    assert [e["step"] for e in evals] == [0, 4, 8]
    assert {"loss", "loss_without_codes", "pq", "pq_without_codes", "semantic_accuracy",
            "semantic_accuracy_without_codes", "codebook_used"} <= set(evals[-1])
    assert all(0.0 <= e["pq"] <= 1.0 and np.isfinite(e["loss"]) for e in evals)
    assert evals[-1]["loss"] < evals[0]["loss"]
    assert manifest["stage"] == "stage1" and manifest["wrong_image_control"] is None
    assert set(manifest["config"]) == {"world", "vqvae", "stage1", "panoptic"}
    assert loaded.source == "shipped"
    np.testing.assert_array_equal(loaded.model.sums[...], run.model.sums[...])
    np.testing.assert_array_equal(loaded.model.encoder_head.kernel[...],
                                  run.model.encoder_head.kernel[...])
    assert shipped.shipped_path("panoptic", "cpu", stage="stage1").name == "panoptic-stage1-cpu"
    assert shipped.shipped_path("panoptic", "cpu").name == "panoptic-stage2-cpu"
