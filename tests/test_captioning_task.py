"""Captioning task: tokenizer, allowed-token rule, CIDEr-D reward against pycocoevalcap."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from rlcv_lib import config
from rlcv_lib.core import sampling
from rlcv_lib.core.task import check_task
from rlcv_lib.data import memory, scenes
from rlcv_lib.models import MODEL_PRESETS, build_model
from rlcv_lib.tasks.captioning.reward import ReferenceCider
from rlcv_lib.tasks.captioning.task import (
    CAPTIONING_PRESETS,
    EOS,
    EOS_WORD,
    FIRST_WORD,
    PAD,
    UNK,
    UNK_WORD,
    CaptioningConfig,
    CaptioningTask,
    Vocabulary,
    java_available,
    normalize,
)

WORLD = scenes.WORLD_PRESETS["cpu"]


@pytest.fixture(scope="module")
def data():
    train = np.asarray(memory.generate_split(WORLD, "train", 300).arrays["captions"]).tolist()
    val = memory.generate_split(WORLD, "validation", 16)
    return train, val


@pytest.fixture(scope="module")
def task(data):
    return CaptioningTask.from_references(data[0], CaptioningConfig())


def sampled_like(task, val, rng, b=8, n=6):
    """[B,N,L] token samples built from validation captions (of the image or another), with
    malformed rows: no EOS, PAD before EOS, UNK, only EOS."""
    out = np.zeros((b, n, task.max_len), np.int32)
    for i in range(b):
        for k in range(n):
            out[i, k] = task.tokenize(val[int(rng.integers(len(val)))] if k % 3 else val[i], k)
    out[0, 1] = rng.integers(FIRST_WORD, task.vocab_size, task.max_len)  # no EOS
    out[1, 2, 1] = PAD  # PAD before EOS (skipped, like detokenize)
    out[2, 3, :3] = [UNK, FIRST_WORD + 4, UNK]
    out[3, 4, 0] = EOS  # empty caption
    return out


def test_normalize():
    assert normalize("The dog's ball, and 'quoted' words!") == [
        "the", "dog's", "ball", "and", "quoted", "words"]
    assert normalize("  Two   RED circles.\n") == ["two", "red", "circles"]
    assert normalize("-- ...") == []


def test_scenes_captions_are_already_normal(data):
    train, _ = data
    caps = [c for r in train for c in r]
    assert all(" ".join(normalize(c)) == c for c in caps)


def test_vocabulary_is_deterministic_and_documented(data, task):
    train, _ = data
    caps = [c for r in train for c in r]
    again = Vocabulary.build(reversed(caps))
    assert again.words == task.vocab.words == tuple(sorted(task.vocab.words))
    assert (PAD, EOS, UNK, FIRST_WORD) == (0, 1, 2, 3)
    assert task.vocab_size == 3 + len({w for c in caps for w in c.split()})
    check_task(task)
    rare = Vocabulary.build(["a b b", "b c"], min_count=2)
    assert rare.words == ("b",)


def test_tokenizer_round_trip(data, task):
    _, val = data
    for i in range(len(val)):
        ex = val[i]
        for k, cap in enumerate(ex["captions"]):
            tok = task.tokenize(ex, k)
            assert tok.dtype == np.int32 and tok.shape == (task.max_len,)
            w = len(cap.split())
            assert (tok[:w] >= FIRST_WORD).all() and tok[w] == EOS and (tok[w + 1:] == PAD).all()
            assert task.detokenize(tok) == cap
        np.testing.assert_array_equal(task.tokenize_all(ex)[2], task.tokenize(ex, 2))
        np.testing.assert_array_equal(task.tokenize({**ex, "caption_index": 3}),
                                      task.tokenize(ex, 3))


def test_unknown_words_and_truncation(task):
    tok = task.vocab.encode("a zebra giraffe above Two circles", task.max_len)
    text = task.detokenize(tok)
    assert text == f"a {UNK_WORD} {UNK_WORD} above two circles"
    assert (tok == UNK).sum() == 2
    long = task.vocab.encode(" ".join(["circle"] * 40), task.max_len)
    assert (long[:-1] >= FIRST_WORD).all() and long[-1] == EOS
    with pytest.raises(ValueError, match="no words"):
        task.vocab.encode("...", task.max_len)
    # malformed sequences decode without raising
    assert task.detokenize(np.array([PAD, FIRST_WORD, 10 ** 6, -3, EOS, FIRST_WORD])) == "a"


def test_allowed_rule(task):
    length, v = task.max_len, task.vocab_size
    pos = jnp.arange(length)[None, :]  # [1,L]
    for prev_kind in (-1, FIRST_WORD + 5, UNK, EOS, PAD):
        prev = jnp.full((3, length), prev_kind)
        m = np.asarray(task.allowed(pos, prev))  # [3,L,V]
        assert m.shape == (3, length, v)
        assert m.any(-1).all()  # never empty
        if prev_kind in (EOS, PAD):
            assert (m[..., PAD]).all() and m.sum(-1).max() == 1
            continue
        assert not m[..., PAD].any()
        assert not m[:, 0, EOS].any() and m[:, 0, UNK:].all()  # a word first
        assert m[:, 1:-1, UNK:].all() and m[:, 1:-1, EOS].all()
        assert m[:, -1, EOS].all() and m[:, -1].sum(-1).max() == 1  # EOS last
    # the sampler's scalar-position call broadcasts too
    assert task.allowed(jnp.int32(2), jnp.array([EOS, 7])).shape == (2, v)


def test_targets_are_allowed_everywhere(data, task):
    _, val = data
    tokens = np.stack([task.tokenize(val[i], k) for i in range(len(val)) for k in range(5)])
    prev = np.concatenate([np.full((len(tokens), 1), -1), tokens[:, :-1]], 1)
    m = np.asarray(task.allowed(jnp.arange(task.max_len)[None], jnp.asarray(prev)))
    assert np.take_along_axis(m, tokens[..., None], -1).all()


def test_sampler_output_obeys_the_grammar(task):
    model = build_model(MODEL_PRESETS["smoke"], task, seed=0)
    spec = sampling.DecodeSpec.for_task(task, num_samples=16)
    images = jnp.zeros((4, 32, 32, 3))
    sampled = sampling.sample_jit(model, images, jax.random.key(0), spec)
    out = np.asarray(sampled.tokens)
    # the rule in the sampler's call style (scalar position) and the teacher-forced one
    # ([1,L] positions) give the same log-probs
    forced = sampling.teacher_forced_jit(model, images, sampled.tokens, spec)
    np.testing.assert_allclose(forced.logprobs, sampled.logprobs, atol=2e-5)
    assert out.shape == (4, 16, task.max_len)
    assert (out[..., 0] >= UNK).all()
    is_eos = out == EOS
    assert (is_eos.sum(-1) == 1).all()  # every row ends, exactly once
    after = np.cumsum(is_eos, -1) - is_eos > 0
    assert (out[after] == PAD).all() and (out[~after] != PAD).all()
    r, _ = task.reward(out, {"captions": [["a red circle"] * 5] * 4}, None)
    assert r.shape == (4, 16) and np.isfinite(r).all()


@pytest.mark.parametrize("score_eos", [True, False])
def test_reward_matches_pycocoevalcap(data, score_eos):
    train, val = data
    task = CaptioningTask.from_references(train, CaptioningConfig(score_eos=score_eos))
    samples = sampled_like(task, val, np.random.default_rng(score_eos))
    b, n, _ = samples.shape
    batch = {"captions": np.asarray(val.arrays["captions"][:b])}
    rewards, aux = task.reward(samples, batch, None)
    assert rewards.dtype == np.float32 and rewards.shape == (b, n)
    tail = f" {EOS_WORD}" if score_eos else ""
    judge = ReferenceCider([[c + tail for c in r] for r in train])
    cands = [(task.detokenize(s) + (tail if (s == EOS).any() else "")).strip()
             for s in samples.reshape(b * n, -1)]
    refs = [[c + tail for c in batch["captions"][i // n]] for i in range(b * n)]
    np.testing.assert_allclose(rewards.ravel(), judge.score(cands, refs), rtol=0, atol=1e-6)
    words = np.mean([len(task.detokenize(s).split()) for s in samples.reshape(b * n, -1)])
    assert aux["caption_words"] == pytest.approx(words)
    assert rewards[0, 0] > 1.0 and rewards[3, 4] == 0.0  # own caption; empty caption


def test_reward_batch_equals_one_by_one(data, task):
    _, val = data
    samples = sampled_like(task, val, np.random.default_rng(5))
    caps = np.asarray(val.arrays["captions"][:len(samples)])
    together, _ = task.reward(samples, {"captions": caps}, None)
    for i in range(samples.shape[0]):
        for k in range(samples.shape[1]):
            alone, _ = task.reward(samples[i:i + 1, k:k + 1], {"captions": caps[i:i + 1]}, None)
            assert alone[0, 0] == together[i, k]


def test_reward_rejects_bad_batches(task):
    samples = np.full((2, 3, task.max_len), PAD, np.int32)
    with pytest.raises(KeyError, match="captions"):
        task.reward(samples, {}, None)
    with pytest.raises(ValueError, match="reference sets"):
        task.reward(samples, {"captions": [["a b"] * 5]}, None)
    with pytest.raises(ValueError, match=r"\[B,N,L\]"):
        task.reward(samples[0], {"captions": [["a b"] * 5] * 2}, None)
    with pytest.raises(ValueError, match="image 1 has no reference captions"):
        task.reward(samples, {"captions": [["a b"], []]}, None)
    with pytest.raises(ValueError, match="references of image 0 are one string"):
        task.reward(samples, {"captions": ["a b", ["a b"]]}, None)


def test_reward_takes_ragged_references(data, task):
    """Images with different numbers of references: the same scores as each image alone."""
    _, val = data
    samples = sampled_like(task, val, np.random.default_rng(6), b=4, n=5)
    caps = [list(val.arrays["captions"][i][:k]) for i, k in zip(range(4), (5, 2, 1, 3),
                                                                  strict=True)]
    together, _ = task.reward(samples, {"captions": caps}, None)
    for i in range(4):
        alone, _ = task.reward(samples[i:i + 1], {"captions": caps[i:i + 1]}, None)
        np.testing.assert_array_equal(alone[0], together[i])


def test_grounded_reward_adds_the_judge_f1_of_each_caption(data, task):
    from rlcv_lib.tasks.captioning import judge

    _, val = data
    samples = sampled_like(task, val, np.random.default_rng(7))
    batch = {"captions": np.asarray(val.arrays["captions"][:len(samples)]),
             "image_id": np.asarray(val.arrays["image_id"][:len(samples)])}
    plain, _ = task.reward(samples, batch)
    grounded = task.with_config(grounded_weight=0.5)
    grounded.world = WORLD
    scores, aux = grounded.reward(samples, batch)
    truths = [judge.scene_truth(WORLD, i) for i in batch["image_id"]]
    f1 = np.array([[judge.caption_f1(task.detokenize(t), truths[i]) for t in row]
                   for i, row in enumerate(samples)], np.float32)
    np.testing.assert_allclose(scores, plain + 0.5 * f1, rtol=1e-6)
    assert aux["grounded_f1"] == pytest.approx(f1.mean()) and 0 < f1.mean() < 1
    assert task.cfg.grounded_weight == 0  # with_config copies
    with pytest.raises(KeyError, match="image_id"):
        grounded.reward(samples, {"captions": batch["captions"]})
    with pytest.raises(ValueError, match="for_world"):
        task.with_config(grounded_weight=0.5).reward(samples, batch)
    with pytest.raises(ValueError, match="vocabulary or the scorer"):
        task.with_config(max_len=8)
    with pytest.raises(config.ConfigError, match="grounded_weight"):
        CaptioningConfig(grounded_weight=-1.0)


def test_evaluate_without_java(data, task):
    from pycocoevalcap.cider.cider import Cider

    _, val = data
    cfg = CaptioningConfig(java_metrics=False)
    t = CaptioningTask(task.vocab, task.scorer, cfg)
    examples = [val[i] for i in range(len(val))]
    preds = [ex["captions"][0] for ex in examples[1:]] + [""]
    preds[0] = examples[0]["captions"][0]  # one perfect prediction
    m = t.evaluate(preds, examples)
    assert set(m) == {"CIDEr-D", "BLEU-4", "ROUGE-L", "empty"}
    gts = {i: ex["captions"] for i, ex in enumerate(examples)}
    assert m["CIDEr-D"] == pytest.approx(
        Cider().compute_score(gts, {i: [p] for i, p in enumerate(preds)})[0], abs=1e-12)
    assert m["empty"] == pytest.approx(1 / len(preds))
    refs_as_preds = t.evaluate([ex["captions"][1] for ex in examples], examples)
    assert refs_as_preds["BLEU-4"] > m["BLEU-4"] and refs_as_preds["ROUGE-L"] == 1.0
    with pytest.raises(ValueError, match="predictions"):
        t.evaluate(preds[:-1], examples)


@pytest.mark.skipif(not java_available(), reason="PTB tokenizer and METEOR need Java")
def test_evaluate_with_java(data, task):
    _, val = data
    examples = [val[i] for i in range(4)]
    m = task.evaluate([ex["captions"][2] for ex in examples], examples)
    assert set(m) == {"CIDEr-D", "BLEU-4", "ROUGE-L", "METEOR", "empty"}
    assert 0 < m["METEOR"] <= 1


def test_config_and_world_construction():
    cfg = config.get_config("smoke")
    assert cfg.captioning == CAPTIONING_PRESETS["smoke"]
    t = CaptioningTask.for_world(scenes.WORLD_PRESETS["smoke"], cfg.captioning)
    assert t.scorer.df.log_num_images == pytest.approx(np.log(256))
    with pytest.raises(ValueError, match="max_len"):
        CaptioningTask(t.vocab, t.scorer, CaptioningConfig(max_len=1))


def test_draw(data, task):
    import matplotlib.pyplot as plt

    _, val = data
    fig, ax = plt.subplots()
    task.draw(val[0], "a red circle", ax=ax)
    assert "pred: a red circle" in ax.get_title()
    plt.close(fig)
