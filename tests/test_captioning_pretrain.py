"""Captioning MLE glue: batches, the evaluator, the wrong-image control (smoke preset)."""

import numpy as np
import pytest

from rlcv_lib.config import get_config
from rlcv_lib.core import evaluate as ev
from rlcv_lib.core import pretrain as mle
from rlcv_lib.data import pipeline, sources
from rlcv_lib.tasks.captioning import pretrain as cx
from rlcv_lib.tasks.captioning import task as cap


@pytest.fixture(scope="module")
def cfg():
    return get_config("smoke", overrides={"train.num_steps": 4, "train.eval_every": 2,
                                          "train.log_every": 2, "train.ckpt_every": 2})


@pytest.fixture(scope="module")
def task(cfg):
    return cx.make_task(cfg)


@pytest.fixture(scope="module")
def run(cfg, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("cap") / "mle"
    return mle.pretrain(cx.RECIPE, cfg, workdir, eval_examples=16, progress=False), workdir


def _loader(cfg, batch=8):
    src = sources.open_source("scenes", "train", world=cfg.world, size=32)
    return pipeline.Loader(src, batch, seed=3, max_boxes=cfg.world.max_objects)


def test_batches_are_pure_in_seed_and_step_and_hold_one_reference_each(cfg, task):
    fn = cx.make_batch_fn(task, _loader(cfg), seed=3)
    a, b = fn(2), fn(2)
    assert set(a) == {"image", "tokens", "captions", "image_id"}
    np.testing.assert_array_equal(a["tokens"], b["tokens"])
    assert a["tokens"].shape == (8, task.max_len) and a["tokens"].dtype == np.int32
    ks = cx.caption_choice(3, 2, 8)
    for tokens, refs, k in zip(a["tokens"], a["captions"], ks, strict=True):
        assert task.detokenize(tokens) == " ".join(cap.normalize(refs[k])[:task.max_len - 1])


def test_caption_choice_varies_with_step_and_seed():
    picks = {cx.caption_choice(0, s, 16).tobytes() for s in range(6)}
    assert len(picks) == 6
    assert not np.array_equal(cx.caption_choice(0, 1, 16), cx.caption_choice(1, 1, 16))
    all_k = np.concatenate([cx.caption_choice(0, s, 16) for s in range(20)])
    assert set(all_k.tolist()) == set(range(5))


def test_word_class_masks_on_a_hand_built_caption(task):
    words = "two red circles left of a blue square".split()
    missing = [w for w in words if w not in task.vocab.ids]
    assert not missing, missing
    t = task.tokenize({"captions": [" ".join(words)]})[None]
    m = cx.word_class_masks(task, t)
    got = {k: int(v.sum()) for k, v in m.items()}
    assert got == {"colour": 2, "count": 1, "shape": 2, "relation": 1, "other": 2, "eos": 1}
    assert m["colour"][0, 1] and m["shape"][0, 2] and m["relation"][0, 3] and m["eos"][0, 8]
    assert not any(v[0, 9:].any() for v in m.values())  # PAD belongs to no class


def test_pretrain_records_a_validation_curve_and_resumes(cfg, run):
    result, workdir = run
    evals = result.history.records("eval")
    assert [r["step"] for r in evals] == [0, 2, 4]
    for r in evals:
        assert r["reward"] >= 0 and r["CIDEr-D"] >= 0 and 0 <= r["BLEU-4"] <= 1
        assert 1 <= r["words"] <= cfg.captioning.max_len - 1
        assert all(np.isfinite(r[f"nll_{k}"]) and r[f"nll_{k}"] > 0
                   for k in ("colour", "count", "shape", "other", "eos"))
    assert evals[-1]["nll_other"] < evals[0]["nll_other"]  # four steps of MLE already help
    again = mle.pretrain(cx.RECIPE, cfg, workdir, eval_examples=16, progress=False)
    assert len(again.history.records("train")) == len(result.history.records("train"))


def test_evaluator_scores_the_greedy_captions(task, run):
    result, _ = run
    examples = [{"captions": list(c)} for c in result.val.batch["captions"][:6]]
    batch = {k: result.val.batch[k][:6] for k in ("image", "captions")}
    m = cx.make_evaluator(task, ev.Split("validation", examples, batch))(result.model)
    tokens = ev.decode(result.model, task, batch["image"], chunk=4)
    want = task.evaluate([task.detokenize(t) for t in tokens], examples)
    assert m["CIDEr-D"] == pytest.approx(want["CIDEr-D"])
    assert m["reward"] == pytest.approx(float(task.reward(tokens[:, None], batch)[0].mean()))


def test_wrong_image_control(task, run):
    result, _ = run
    batch = {k: result.val.batch[k][:8] for k in ("image", "captions")}
    control = ev.wrong_image_control(cx.RECIPE, result.model, task, batch)
    for k in cx.WORD_CLASSES:
        assert control["gap"][k] == pytest.approx(control["wrong"][k] - control["true"][k],
                                                  nan_ok=True)
    assert control["gap"]["other"] != 0.0  # the model's outputs depend on the image
    same = dict(batch, image=np.repeat(batch["image"][:1], 8, axis=0))
    control = ev.wrong_image_control(cx.RECIPE, result.model, task, same)
    assert all(abs(v) < 1e-5 for v in control["gap"].values() if np.isfinite(v))
    with pytest.raises(ValueError, match=">= 2 images"):
        ev.wrong_image_control(cx.RECIPE, result.model, task, {k: v[:1] for k, v in batch.items()})


def test_class_nll_is_the_mean_teacher_forced_nll(task, run):
    from rlcv_lib.core import sampling

    result, _ = run
    images = result.val.batch["image"][:4]
    tokens = cx.truth_tokens(task, {"captions": result.val.batch["captions"][:4]})
    lp = np.asarray(sampling.teacher_forced_jit(
        result.model, images, tokens[:, None], sampling.DecodeSpec.for_task(task)).logprobs)[:, 0]
    got = ev.masked_nll(result.model, task, images, tokens, cx.word_class_masks(task, tokens),
                        chunk=3)
    assert got["eos"] == pytest.approx(-lp[tokens == cap.EOS].mean(), rel=1e-5)


def test_restore_model_gives_the_trained_model(cfg, task, run):
    result, workdir = run
    model, _, step = mle.restore_model(cx.RECIPE, cfg, workdir)
    assert step == 4
    images = result.val.batch["image"][:4]
    tokens = cx.truth_tokens(task, {"captions": result.val.batch["captions"][:4]})
    masks = cx.word_class_masks(task, tokens)
    assert (ev.masked_nll(model, task, images, tokens, masks)
            == ev.masked_nll(result.model, task, images, tokens, masks))
