"""The detection task: tokens, grammar, decoding, scores, policy mask, confidence loss, metric."""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcv_lib import config
from rlcv_lib.core import reinforce
from rlcv_lib.core.task import check_task
from rlcv_lib.data import pipeline, scenes
from rlcv_lib.tasks.detection.task import (
    CONF_HIGH,
    CONF_LOW,
    COORD_OFFSET,
    DETECTION_PRESETS,
    PAD,
    DetectionConfig,
    DetectionTask,
    class_counts,
    scenes_class_counts,
)

WORLD = scenes.CROWDED_64  # up to 12 things: every slot and size bucket gets used
PIXEL_GRID = DetectionConfig(max_level=64, num_slots=18)  # 65 levels on WORLD's pixel edges


@pytest.fixture(scope="module")
def task():
    return DetectionTask.for_world(PIXEL_GRID, WORLD)


@pytest.fixture(scope="module")
def examples():
    return [scenes.example(WORLD, "validation", i) for i in range(24)]


def prev_of(tokens):
    tokens = np.asarray(tokens)
    return np.concatenate([np.full(tokens.shape[:-1] + (1,), -1), tokens[..., :-1]], -1)


def grammar_walk(task, rng, rows, p_pad=0.15):
    """Random sequences [rows, L] drawn uniformly from the allowed set at each position, with
    PAD chosen at a slot's first token with probability ``p_pad`` when allowed."""
    out = np.zeros((rows, task.max_len), np.int64)
    prev = np.full(rows, -1)
    for t in range(task.max_len):
        allowed = np.asarray(task.allowed(jnp.int32(t), jnp.asarray(prev)))
        for r in range(rows):
            ids = np.flatnonzero(allowed[r])
            if t % 6 == 0 and allowed[r, PAD] and len(ids) > 1:
                out[r, t] = PAD if rng.random() < p_pad else rng.choice(ids[ids != PAD])
            else:
                out[r, t] = rng.choice(ids)
        prev = out[:, t]
    return out


# --- layout and config -------------------------------------------------------------------------


def test_is_a_task_with_the_documented_layout(task):
    check_task(task)
    c = len(WORLD.thing_classes)
    assert task.vocab_size == 3 + 65 + c and task.max_len == 6 * 18
    assert task.class_offset == COORD_OFFSET + 65 and task.eos_id is None
    assert (PAD, CONF_LOW, CONF_HIGH, COORD_OFFSET) == (0, 1, 2, 3)


def test_presets_register_and_fit_their_worlds():
    for preset in config.PRESETS:
        cfg = config.get_config(preset, sections=("world", "detection"))
        det, world = cfg.detection, cfg.world
        assert 1.5 * world.max_objects <= det.num_slots <= 2 * world.max_objects or \
            preset == "paper"
        if preset != "paper":  # bins on the pixel grid (cpu: 2-px bins)
            assert world.image_size % det.max_level == 0 and det.max_level >= 32
    paper = DETECTION_PRESETS["paper"]
    assert (paper.max_level, 6 * paper.num_slots) == (1000, 600)
    with pytest.raises(config.ConfigError, match="correct_thr=0.33"):
        DetectionConfig(correct_thr=0.33)
    with pytest.raises(config.ConfigError, match="num_slots must be >= 1, got 0"):
        DetectionConfig(num_slots=0)


def test_class_counts():
    np.testing.assert_array_equal(class_counts([np.array([0, 2, 2]), np.array([], int)], 3),
                                  [1, 0, 2])
    with pytest.raises(ValueError, match=r"labels \[3\]"):
        class_counts([np.array([3])], 3)
    small = scenes_class_counts(scenes.WORLD_PRESETS["smoke"], num_examples=20)
    ref = sum(np.bincount(scenes.example(scenes.WORLD_PRESETS["smoke"], "train", i)["labels"],
                          minlength=len(small)) for i in range(20))
    np.testing.assert_array_equal(small, ref)


# --- tokenizer ---------------------------------------------------------------------------------


def sorted_rows(boxes, labels):
    a = np.concatenate([np.asarray(boxes, np.float64), np.asarray(labels)[:, None]], 1)
    return a[np.lexsort(a.T[::-1])]


def test_tokenize_detokenize_roundtrip_on_the_pixel_grid(task, examples):
    rng = np.random.default_rng(0)
    for ex in examples:
        toks = task.tokenize(ex, rng)
        assert toks.dtype == np.int32 and toks.shape == (task.max_len,)
        pred = task.detokenize(toks)
        np.testing.assert_array_equal(sorted_rows(pred["boxes"], pred["labels"]),
                                      sorted_rows(ex["boxes"], ex["labels"]))  # lossless
        np.testing.assert_array_equal(pred["scores"], 1.0)  # GT confidence is "high"
        k = len(ex["labels"])
        assert (toks.reshape(-1, 6)[:k, 5] == CONF_HIGH).all()
        assert (toks.reshape(-1, 6)[k:] == PAD).all()


def test_roundtrip_within_quantisation_on_a_coarse_grid(examples):
    coarse = DetectionTask(DetectionConfig(max_level=20, num_slots=18), WORLD.thing_classes)
    for ex in examples:
        pred = coarse.detokenize(coarse.tokenize(ex))  # annotation order
        np.testing.assert_array_equal(pred["labels"], ex["labels"])
        np.testing.assert_allclose(pred["boxes"], ex["boxes"], atol=1 / 20 + 1e-6)
        assert (pred["boxes"][:, 2:] > pred["boxes"][:, :2]).all()  # no box collapsed


def test_random_order_is_a_permutation_and_slots_cap(task, examples):
    ex = max(examples, key=lambda e: len(e["labels"]))
    assert len(ex["labels"]) >= 5
    orders = {tuple(task.tokenize(ex, np.random.default_rng(s))) for s in range(6)}
    assert len(orders) > 1
    np.testing.assert_array_equal(task.tokenize(ex), task.tokenize(ex))
    small = DetectionTask(DetectionConfig(num_slots=2), WORLD.thing_classes)
    pred = small.detokenize(small.tokenize(ex))
    np.testing.assert_array_equal(pred["labels"], ex["labels"][:2])
    with pytest.raises(ValueError, match=r"labels \[9\]"):
        task.tokenize({"boxes": np.zeros((1, 4)), "labels": np.array([9])})


# --- grammar -----------------------------------------------------------------------------------


def test_allowed_sets_per_token_kind(task):
    v = np.arange(task.vocab_size)
    coords = (v >= COORD_OFFSET) & (v < task.class_offset)
    classes = v >= task.class_offset
    confs = (v == CONF_LOW) | (v == CONF_HIGH)
    present = COORD_OFFSET + 5  # some coordinate as the previous token
    expect = {0: coords | (v == PAD), 1: coords, 2: coords, 3: coords, 4: classes, 5: confs}
    for pos, want in expect.items():
        prev = -1 if pos == 0 else present
        for p in (pos, pos + 6 * 7):
            prv = CONF_HIGH if (p % 6 == 0 and p > 0) else prev
            got = np.asarray(task.allowed(jnp.int32(p), jnp.int32(prv)))
            np.testing.assert_array_equal(got, want, err_msg=f"position {p}")


def test_pad_at_a_slots_first_token_forces_the_slot_and_the_tail(task):
    pad_only = np.arange(task.vocab_size) == PAD
    for p in range(1, 6):
        np.testing.assert_array_equal(np.asarray(task.allowed(jnp.int32(p), jnp.int32(PAD))),
                                      pad_only)
    # the next slot's first token after an absent slot: PAD only (trailing_absent) ...
    np.testing.assert_array_equal(np.asarray(task.allowed(jnp.int32(6), jnp.int32(PAD))),
                                  pad_only)
    # ... or coordinates ∪ PAD without it
    free = DetectionTask(DetectionConfig(trailing_absent=False), WORLD.thing_classes)
    got = np.asarray(free.allowed(jnp.int32(6), jnp.int32(PAD)))
    assert got[PAD] and got[COORD_OFFSET] and got.sum() == 66


def test_every_target_is_allowed_and_shapes_broadcast(task, examples):
    toks = np.stack([task.tokenize(ex, np.random.default_rng(1)) for ex in examples])  # [R,L]
    mask = np.asarray(jax.jit(task.allowed)(jnp.arange(task.max_len)[None],
                                            jnp.asarray(prev_of(toks))))
    assert mask.shape == toks.shape + (task.vocab_size,)
    assert np.take_along_axis(mask, toks[..., None], -1).all()
    assert mask.any(-1).all()  # never an empty set


def test_grammar_walks_decode_to_what_the_first_token_decided(task):
    rng = np.random.default_rng(2)
    seqs = grammar_walk(task, rng, 32)
    slots = seqs.reshape(32, -1, 6)
    absent = slots[..., 0] == PAD
    assert absent.any() and (~absent).any()
    assert (slots[absent] == PAD).all()  # an absent slot is six PADs
    after = np.cumsum(absent, -1) > 0
    assert (absent == after).all()  # absent slots only at the end
    dec = task.decode(seqs)
    nonempty = ((slots[..., 2] > slots[..., 0]) & (slots[..., 3] > slots[..., 1]))
    np.testing.assert_array_equal(dec.present, ~absent & nonempty)


# --- decoding never raises -------------------------------------------------------------------


def test_malformed_slots_are_dropped(task):
    c0, k0 = COORD_OFFSET, task.class_offset
    good = [c0 + 1, c0 + 1, c0 + 9, c0 + 9, k0 + 2, CONF_HIGH]
    cases = {
        "inverted": [c0 + 9, c0 + 1, c0 + 1, c0 + 9, k0, CONF_LOW],
        "empty": [c0 + 4, c0 + 1, c0 + 4, c0 + 9, k0, CONF_LOW],
        "pad inside": [c0 + 1, c0 + 1, PAD, c0 + 9, k0, CONF_LOW],
        "class at a coordinate": [c0 + 1, k0, c0 + 9, c0 + 9, k0, CONF_LOW],
        "coordinate as class": [c0 + 1, c0 + 1, c0 + 9, c0 + 9, c0, CONF_LOW],
        "pad confidence": [c0 + 1, c0 + 1, c0 + 9, c0 + 9, k0, PAD],
        "out of vocabulary": [c0 + 1, c0 + 1, c0 + 9, 10 ** 6, k0, CONF_LOW],
        "negative": [c0 + 1, -5, c0 + 9, c0 + 9, k0, CONF_LOW],
    }
    for name, bad in cases.items():
        pred = task.detokenize(np.array(good + bad + good[:4]))  # + a partial slot
        assert pred["labels"].tolist() == [2], name
        assert pred["slots"].tolist() == [0], name
        np.testing.assert_allclose(pred["boxes"][0], np.array([1, 1, 9, 9]) / 64)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.integers(-2 ** 40, 2 ** 40) | st.integers(-3, 80), max_size=130))
def test_any_token_sequence_decodes(tokens):
    task = DetectionTask(PIXEL_GRID, WORLD.thing_classes)
    pred = task.detokenize(np.array(tokens, np.int64))
    b = pred["boxes"]
    assert b.shape == (len(pred["labels"]), 4) and len(pred["scores"]) == len(b)
    assert ((b >= 0) & (b <= 1)).all() and (b[:, 2:] > b[:, :2]).all()
    assert ((pred["labels"] >= 0) & (pred["labels"] < 6)).all()
    samples = np.resize(np.array(tokens or [0], np.int64), (1, 2, task.max_len))
    batch = {"boxes": np.array([[[0.1, 0.1, 0.5, 0.5]]]), "labels": np.array([[1]])}
    r, aux = task.reward(samples, batch)
    assert np.isfinite(r).all() and aux["match_iou"].shape == (1, 2, 18)


# --- scores, policy mask, confidence loss -----------------------------------------------------


def test_box_scores_rules(task):
    toks = task.tokenize({"boxes": np.array([[0.1, 0.1, 0.5, 0.5], [0.2, 0.2, 0.4, 0.6]]),
                          "labels": np.array([1, 3])})
    lsm = np.full((task.max_len, task.vocab_size), -np.inf)
    lsm[:, PAD] = 0.0
    lsm[5, [CONF_LOW, CONF_HIGH]] = np.log([0.2, 0.6])  # unnormalised on purpose
    lsm[11, [CONF_LOW, CONF_HIGH]] = np.log([0.5, 0.5])
    lsm[4, task.class_offset + 1] = np.log(0.7)
    lsm[10, task.class_offset + 3] = np.log(0.4)
    np.testing.assert_allclose(task.box_scores(lsm, toks)[:2], [0.75, 0.5])
    np.testing.assert_allclose(task.box_scores(lsm, toks, "class")[:2], [0.7, 0.4])
    np.testing.assert_allclose(task.box_scores(lsm, toks, "class_x_confidence")[:2],
                               [0.75 * 0.7, 0.5 * 0.4])
    pred = task.detokenize(toks, lsm, "class")
    np.testing.assert_allclose(pred["scores"], [0.7, 0.4], rtol=1e-6)
    assert task.box_scores(lsm[None], toks[None], "class_x_confidence").shape == (1, 18)
    with pytest.raises(ValueError, match="rule='x'"):
        task.box_scores(lsm, toks, "x")


def reinforce_grad(task, seqs, adv):
    """d pg_loss / d logits [B,N,L,V] for free logits, under the task's mask and policy mask."""
    b, n, length = seqs.shape
    logits = jnp.asarray(np.random.default_rng(0).normal(size=(b, n, length, task.vocab_size)),
                         jnp.float32)
    allowed = task.allowed(jnp.arange(length)[None, None], jnp.asarray(prev_of(seqs)))
    mask = task.policy_mask(jnp.asarray(seqs))

    def loss(z):
        lsm = jax.nn.log_softmax(jnp.where(allowed, z, -jnp.inf), -1)
        lp = jnp.take_along_axis(lsm, jnp.asarray(seqs)[..., None], -1)[..., 0]
        return reinforce.pg_loss(lp, mask, adv, jnp.ones_like(adv))

    return np.asarray(jax.grad(loss)(logits))


def test_presence_decision_gets_reward_gradient_confidence_does_not():
    seqs = grammar_walk(DetectionTask(PIXEL_GRID, WORLD.thing_classes),
                        np.random.default_rng(3), 4, p_pad=0.1).reshape(2, 2, -1)
    adv = jnp.array([[1.0, -1.0], [0.5, -0.5]])
    for compat in (False, True):
        task = DetectionTask(DetectionConfig(paper_compat=compat), WORLD.thing_classes)
        g = np.abs(reinforce_grad(task, seqs, adv)).sum(-1)  # [B,N,L]
        first = seqs[..., 0::6]
        emitting = first != PAD
        # the first PAD slot is a real choice (coordinates were allowed): it gets gradient too
        choice = np.concatenate([np.ones_like(first[..., :1], bool), first[..., :-1] != PAD], -1)
        assert (g[..., 0::6][choice] > 0).all()
        conf_g = g[..., 5::6][emitting]
        assert emitting.sum() > 4
        assert (conf_g > 0).all() if compat else (conf_g == 0).all()
        assert (g[..., 4::6][emitting] > 0).all()  # classes always get it


def test_confidence_loss_targets_and_gradient(task):
    seqs = np.zeros((1, 2, task.max_len), np.int32)
    seqs[0, :, :6] = [3, 3, 9, 9, task.class_offset, CONF_HIGH]
    seqs[0, 1, 6:12] = [3, 3, 8, 8, task.class_offset, CONF_LOW]
    iou = np.zeros((1, 2, 18), np.float32)
    iou[0, 0, 0], iou[0, 1, :2] = 0.8, [0.6, 0.3]
    rng = np.random.default_rng(4)
    logits = jnp.asarray(rng.normal(size=seqs.shape + (task.vocab_size,)), jnp.float32)
    allowed = task.allowed(jnp.arange(task.max_len)[None, None], jnp.asarray(prev_of(seqs)))

    def loss(z):
        lsm = jax.nn.log_softmax(jnp.where(allowed, z, -jnp.inf), -1)
        return task.aux_loss(lsm, jnp.asarray(seqs), {"match_iou": jnp.asarray(iou)})

    val, grad = jax.value_and_grad(loss)(logits)
    lsm = np.asarray(jax.nn.log_softmax(jnp.where(allowed, logits, -jnp.inf), -1))
    want = 0.0
    for n, s, u in ((0, 0, 0.8), (1, 0, 0.6), (1, 1, 0.3)):
        pos = 6 * s + 5
        want -= (1 - u) * lsm[0, n, pos, CONF_LOW] + u * lsm[0, n, pos, CONF_HIGH]
    assert float(val) == pytest.approx(0.3 * want / (2 * 18), rel=1e-5)  # absent slots add 0
    grad = np.asarray(grad)
    assert np.isfinite(grad).all()
    assert np.abs(grad[0, 0, 5]).sum() > 0 and np.abs(grad[0, 0, 11]).sum() == 0


# --- metric and drawing ------------------------------------------------------------------------


def test_evaluate_perfect_predictions_give_map_one(task, examples):
    preds = [{"boxes": ex["boxes"], "labels": ex["labels"],
              "scores": np.ones(len(ex["labels"]))} for ex in examples]
    m = task.evaluate(preds, examples)
    assert m["mAP"] == pytest.approx(1.0) and m["AR@100"] == pytest.approx(1.0)
    assert m["AP_small"] == pytest.approx(1.0) and m["recall50"] == pytest.approx(1.0)
    assert m["boxes_per_image"] == m["gt_per_image"] > 3
    # through the tokens, and with a degraded set (half the boxes dropped)
    decoded = [task.detokenize(task.tokenize(ex)) for ex in examples]
    assert task.evaluate(decoded, examples)["mAP"] == pytest.approx(1.0)
    half = [{k: v[::2] for k, v in p.items()} for p in preds]
    assert 0.2 < task.evaluate(half, examples)["AR@100"] < 0.8
    empty = [{"boxes": np.zeros((0, 4)), "labels": np.zeros(0, int), "scores": np.zeros(0)}
             for _ in examples]
    assert task.evaluate(empty, examples)["mAP"] == 0.0


@pytest.mark.parametrize("field,index,value", [
    ("boxes", (0, 3), np.nan), ("boxes", (1, 0), np.inf), ("scores", (1,), np.nan)])
def test_evaluate_refuses_non_finite_predictions_naming_the_image(task, examples, field, index,
                                                                  value):
    """pycocotools takes a NaN-height box for a match: one such box on a ground truth alone
    scores mAP 1. The evaluator refuses it, naming the image and the box."""
    preds = [{"boxes": np.asarray(ex["boxes"], np.float32).copy(), "labels": ex["labels"],
              "scores": np.ones(len(ex["labels"]), np.float32)} for ex in examples]
    preds[2][field][index] = value
    with pytest.raises(ValueError, match=rf"image {examples[2]['image_id']}: {field} hold "
                                         rf"non-finite values at box\(es\) \[{index[0]}\]"):
        task.evaluate(preds, examples)
    preds[2] = {"boxes": np.zeros((2, 4)), "labels": np.zeros(3, int), "scores": np.ones(2)}
    with pytest.raises(ValueError, match=f"image {examples[2]['image_id']}: boxes"):
        task.evaluate(preds, examples)


def test_ragged_ground_truth_in_the_batch(task, examples):
    """The reward takes per-image lists of ground truth as it takes the padded arrays."""
    tokens = np.stack([task.tokenize(ex) for ex in examples[:3]])[:, None]  # [3,1,L]
    lists = {"boxes": [ex["boxes"] for ex in examples[:3]],
             "labels": [ex["labels"] for ex in examples[:3]]}
    padded = pipeline.collate(examples[:3])  # [3,M,4] / [3,M], -1 padded
    r_lists, aux_lists = task.reward(tokens, lists)
    r_padded, aux_padded = task.reward(tokens, padded)
    np.testing.assert_array_equal(r_lists, r_padded)
    assert aux_lists["recall50"] == aux_padded["recall50"] == 1.0


def test_draw(task, examples):
    import matplotlib.pyplot as plt

    ex = examples[0]
    fig, ax = plt.subplots()
    task.draw(ex, task.detokenize(task.tokenize(ex)), ax=ax)
    assert len(ax.patches) == 2 * len(ex["labels"])
    k = len(ex["labels"])
    assert ax.get_title() == f"{k} predicted / {k} true"
    scores = np.linspace(0.1, 0.9, k)  # the title counts every box, drawn or not
    _, ax = plt.subplots()
    task.draw(ex, {"boxes": ex["boxes"], "labels": ex["labels"], "scores": scores}, ax=ax,
              min_score=0.5)
    drawn = int((scores >= 0.5).sum())
    assert ax.get_title() == f"{k} predicted ({drawn} drawn) / {k} true"
    assert len(ax.patches) == k + drawn
    plt.close("all")


# --- the shared core runs the task ---------------------------------------------------------------


def smoke_training_batch():
    """(world, task, examples, batch): the smoke world's detection task and its first four
    training scenes collated (images in [0,1], boxes and -1-padded labels)."""
    world = scenes.WORLD_PRESETS["smoke"]
    task = DetectionTask.for_world(DETECTION_PRESETS["smoke"], world,
                                   scenes_class_counts(world, num_examples=64))
    exs = [scenes.example(world, "train", i) for i in range(4)]
    return world, task, exs, dict(pipeline.collate(exs))


def test_core_steps_run_on_the_detection_task():
    """MLE targets obey the mask; sampled sequences obey the grammar, and their log-probs equal
    the teacher-forced ones; the RL step's confidence loss is the task's, on the same samples."""
    import dataclasses

    import optax
    from flax import nnx

    from rlcv_lib.core import sampling, steps
    from rlcv_lib.core.reinforce import RLConfig
    from rlcv_lib.models import MODEL_SIZES, build_model

    world, task, exs, batch = smoke_training_batch()
    batch["tokens"] = np.stack([task.tokenize(e, np.random.default_rng(i))
                                for i, e in enumerate(exs)])
    cfg = dataclasses.replace(MODEL_SIZES["tiny"], image_size=world.image_size)
    model = build_model(cfg, task, seed=0)
    opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
    mle = steps.make_mle_step(task, cfg)(model, opt, batch)
    assert int(mle["target_disallowed"]) == 0 and np.isfinite(float(mle["loss"]))

    rl_cfg = RLConfig(num_samples=3)
    key = jax.random.key(0)
    out = steps.make_sample_fn(task, rl_cfg)(model, jnp.asarray(batch["image"]), key)
    toks = np.asarray(out.tokens)
    slots = toks.reshape(4, 3, -1, 6)
    absent = slots[..., 0] == PAD
    assert (slots[absent] == PAD).all() and (absent == (np.cumsum(absent, -1) > 0)).all()
    assert ((slots[~absent][:, 5] == CONF_LOW) | (slots[~absent][:, 5] == CONF_HIGH)).all()
    spec = steps.rl_spec(task, rl_cfg)
    tf = sampling.teacher_forced_jit(model, jnp.asarray(batch["image"]), out.tokens, spec)
    np.testing.assert_allclose(np.asarray(tf.logprobs), np.asarray(out.logprobs), atol=2e-5)
    _, aux = task.reward(toks, batch)
    expected = task.aux_loss(tf.log_softmax, out.tokens, {"match_iou": aux["match_iou"]})
    metrics = steps.make_rl_step(task, rl_cfg)(model, opt, batch, key)
    assert float(metrics["aux_loss"]) == pytest.approx(float(expected), rel=1e-4)
    assert np.isfinite(float(metrics["loss"])) and "recall50" in metrics


@pytest.mark.parametrize("paper_compat,conf_target", [(False, "iou"), (True, "iou"),
                                                      (False, "matched")])
def test_device_reward_equals_the_numpy_reward(task, examples, paper_compat, conf_target):
    """The jitted jax.numpy reward against its oracle, the NumPy reward: grammar walks near the
    truth (matches, duplicates, misses) and arbitrary tokens (malformed slots), in float32."""
    import dataclasses

    t = DetectionTask(dataclasses.replace(task.cfg, paper_compat=paper_compat,
                                          conf_target=conf_target),
                      task.class_names, np.arange(1, task.num_classes + 1))
    rng = np.random.default_rng(7)
    b, n = 6, 5
    truth = np.stack([t.tokenize(ex, np.random.default_rng(i))
                      for i, ex in enumerate(examples[:b])])  # [B,L]
    walk = grammar_walk(t, rng, b * n).reshape(b, n, -1)
    mixed = np.where(rng.random(walk.shape) < 0.3, walk, truth[:, None])  # near the truth
    arbitrary = rng.integers(0, t.vocab_size, walk.shape)
    collated = pipeline.collate(examples[:b])
    batch = {k: collated[k] for k in ("boxes", "labels")}
    fn = jax.jit(t.device_reward)
    for samples in (mixed, arbitrary, truth[:, None].repeat(n, 1)):
        want, want_aux = t.reward(samples, batch)
        got, got_aux = fn(jnp.asarray(samples, jnp.int32), batch)
        assert got.dtype == jnp.float32 and got.shape == (b, n)
        np.testing.assert_allclose(np.asarray(got), want, atol=1e-5)
        for k, v in want_aux.items():
            np.testing.assert_allclose(np.asarray(got_aux[k]), v, atol=1e-5, err_msg=k)
    assert want.min() > 0  # the truth itself matches


def test_the_rl_step_with_the_reward_on_the_device_makes_the_same_update():
    import optax
    from flax import nnx

    from rlcv_lib.core import steps
    from rlcv_lib.core.reinforce import RLConfig
    from rlcv_lib.models import MODEL_SIZES, build_model

    world, task, _, batch = smoke_training_batch()
    cfg = dataclasses.replace(MODEL_SIZES["tiny"], image_size=world.image_size)
    runs = {}
    for device in (False, True):
        model = build_model(cfg, task, seed=0)
        opt = nnx.Optimizer(model, optax.adam(1e-3), wrt=nnx.Param)
        step = steps.make_rl_step(task, RLConfig(num_samples=3, baseline="greedy",
                                                 device_reward=device))
        metrics = [step(model, opt, batch, jax.random.key(i)) for i in range(2)]
        runs[device] = (metrics, nnx.state(model, nnx.Param))
    for host, dev in zip(runs[False][0], runs[True][0], strict=True):
        assert set(host) == set(dev)
        for k in host:
            np.testing.assert_allclose(float(dev[k]), float(host[k]), rtol=1e-4, atol=1e-5,
                                       err_msg=k)
    for a, b in zip(jax.tree.leaves(runs[False][1]), jax.tree.leaves(runs[True][1]),
                    strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5)
    with pytest.raises(ValueError, match="has no device_reward"):
        from rlcv_lib.tasks.toy.task import SortTask

        steps.make_rl_step(SortTask(), RLConfig(device_reward=True))


def test_raster_order_sorts_by_ymin_then_xmin_and_ignores_the_rng(examples):
    raster = DetectionTask(DetectionConfig(box_order="raster"), WORLD.thing_classes)
    ex = max(examples, key=lambda e: len(e["labels"]))
    seqs = {tuple(raster.tokenize(ex, np.random.default_rng(s))) for s in range(4)}
    assert len(seqs) == 1
    slots = raster.decode(np.array(seqs.pop()))
    corners = slots.boxes[slots.present][:, :2]  # [K,2] (ymin, xmin)
    assert len(corners) == min(len(ex["labels"]), raster.cfg.num_slots)
    assert [tuple(c) for c in corners] == sorted(tuple(c) for c in corners)
    with pytest.raises(config.ConfigError, match="box_order"):
        DetectionConfig(box_order="area")
