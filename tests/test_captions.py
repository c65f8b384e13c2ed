"""Captions: five varied, lower-case, unpunctuated captions whose claims are true of the scene.

The checker below parses captions independently of the generator's templates: every counted
noun phrase (number word + size/colour words + shape noun) must be an exact count, every
"a"/"an" noun phrase must exist, every relation must hold for some pair, and every stuff word
must name a region present in the scene.
"""

import dataclasses

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from rlcv_lib.data import captions as cap
from rlcv_lib.data import palette, scenes

CPU = scenes.CROWDED_64  # many things of six classes: captions make many kinds of claims
ALL = dataclasses.replace(CPU, image_size=80, max_objects=16, thing_classes=scenes.THING_CLASSES)

NOUNS = sorted(
    [(tuple(w.split()), shape) for shape, pairs in cap.SHAPE_NOUNS.items()
     for pair in pairs for w in pair]
    + [(tuple(w.split()), None) for pair in cap.GENERIC_NOUNS for w in pair],
    key=lambda x: -len(x[0]))
SIZES = {w: size for size, words in cap.SIZE_WORDS.items() for w in words}
REL = sorted([(tuple(p.split()), r) for r, ps in cap.RELATIONS.items() for p in ps],
             key=lambda x: -len(x[0]))


def parse_np(words, i):
    """Noun phrase at i: (determiner, size, colour, shape, end) or None."""
    if i >= len(words) or words[i] not in cap.NUMBER_WORDS + ("a", "an"):
        return None
    det, j, size, colour = words[i], i + 1, None, None
    while j < len(words) and (words[j] in SIZES or words[j] in palette.COLOR_NAMES):
        if words[j] in SIZES:
            size = SIZES[words[j]]
        else:
            colour = words[j]
        j += 1
    for noun, shape in NOUNS:
        if tuple(words[j:j + len(noun)]) == noun:
            return det, size, colour, shape, j + len(noun), noun
    return None


def matches(things, size, colour, shape):
    return [t for t in things if (shape is None or t.shape == shape)
            and (colour is None or t.color == colour) and (size is None or t.size == size)]


def check(text, things, stuff):
    """Asserts every claim of ``text``; returns how many claims were checked."""
    words = text.split()
    assert text == text.lower() and all(w.isalpha() for w in words), text
    claims = 0
    for w in words:
        if w in cap.STUFF_KEYWORDS:
            assert cap.STUFF_KEYWORDS[w] in stuff, (text, stuff)
            claims += 1
    nps = {}
    for i in range(len(words)):
        np_ = parse_np(words, i)
        if np_ is None:
            continue
        det, size, colour, shape, end, noun = np_
        found = matches(things, size, colour, shape)
        if det in ("a", "an"):
            assert found, (text, np_)
            assert det == ("an" if words[i + 1][0] in "aeiou" else "a"), text
        else:
            n = cap.NUMBER_WORDS.index(det)
            assert len(found) == n, (text, np_, things)
            plural = any(noun == tuple(p[1].split()) for ps in
                         [cap.SHAPE_NOUNS.get(shape, cap.GENERIC_NOUNS)] for p in ps)
            assert plural == (n != 1), text
        nps[i] = np_
        claims += 1
    settings = [(tuple(p.split()), s) for s, ps in cap.STUFF_SETTINGS.items() for p in ps]
    for k in range(len(words)):
        for phrase, where in settings:
            if tuple(words[k:k + len(phrase)]) != phrase:
                continue
            for det, size, colour, shape, _, _ in nps.values():
                found = matches(things, size, colour, shape)
                if det in ("a", "an"):
                    assert any(t.ground == where for t in found), (text, where)
                elif found:
                    assert all(t.ground == where for t in found), (text, where)
                claims += 1
    ends = {np_[4]: i for i, np_ in nps.items()}
    k = 0
    while k < len(words):
        found_rel = [(p, r) for p, r in REL if tuple(words[k:k + len(p)]) == p]
        k += 1
        for phrase, rel in found_rel[:1]:  # longest match ("to the left of" over "left of")
            k += len(phrase) - 1
            k0 = k - len(phrase)
            b = nps.get(k)
            if k0 == 0:  # "left of <B> there is <A>"
                assert b is not None and words[b[4]:b[4] + 2] == ["there", "is"], text
                a = nps[b[4] + 2]
            else:
                a_start = ends.get(k0 - 1 if words[k0 - 1] == "is" else k0)
                assert a_start is not None and b is not None, text
                a = nps[a_start]
            pairs = [(x, y) for x in matches(things, *a[1:4]) for y in matches(things, *b[1:4])
                     if cap.holds(rel, x, y)]
            assert pairs, (text, rel, a, b)
            claims += 1
    return claims


def mentions(sc):
    n = sc.panoptic.shape[0]
    return [cap.Mention(t.name, t.color, scenes.size_bucket(t.area, n, n), t.bbox, t.ground)
            for t in sc.things]


@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(world=st.sampled_from([CPU, ALL, scenes.WORLD_PRESETS["smoke"]]),
       index=st.integers(0, 10 ** 6), split=st.sampled_from(list(scenes.SPLITS)))
def test_every_caption_claim_is_true(world, index, split):
    sc = scenes.generate(world, split, index)
    stuff = {s.name for s in sc.stuff}
    assert len(sc.captions) == 5
    for text in sc.captions:
        check(text, mentions(sc), stuff)


def test_captions_are_varied_and_make_many_claims():
    claims, vocab, kinds, distinct = 0, set(), set(), []
    for i in range(150):
        sc = scenes.generate(CPU, "validation", i)
        distinct.append(len(set(sc.captions)))
        for text in sc.captions:
            claims += check(text, mentions(sc), {s.name for s in sc.stuff})
            vocab.update(text.split())
            kinds.update(w for w in ("left", "right", "above", "below", "beneath", "there",
                                     "crowded", "background", "big", "small") if w in text.split())
    assert claims > 150 * 5  # the checker is not vacuous
    assert np.mean(distinct) == 5
    assert len(vocab) > 80
    assert kinds == {"left", "right", "above", "below", "beneath", "there", "crowded",
                     "background", "big", "small"}


def test_checker_rejects_false_captions():
    sc = next(s for s in (scenes.generate(CPU, "train", i) for i in range(50))
              if len({t.name for t in s.things}) >= 2 and len(s.things) >= 3)
    ms, stuff = mentions(sc), {s.name for s in sc.stuff}
    n = len(ms)
    wrong_count = f"{cap.NUMBER_WORDS[n + 1]} shapes"
    absent = next(c for c in palette.COLOR_NAMES if c not in {m.color for m in ms})
    missing_stuff = next(s for s in scenes.STUFF_CLASSES if s not in stuff)
    for bad in (wrong_count, f"a {absent} {cap.SHAPE_NOUNS[ms[0].shape][0][0]}",
                f"one {cap.STUFF_SETTINGS[missing_stuff][0]}".replace("one ", "a shape ")):
        try:
            check(bad, ms, stuff)
        except AssertionError:
            continue
        raise AssertionError(f"checker accepted a false caption: {bad!r}")


def test_empty_scene_captions():
    rng = np.random.default_rng(0)
    caps = cap.describe([], ["sky", "grass"], rng)
    assert len(set(caps)) == 5
    for text in caps:
        check(text, [], {"sky", "grass"})
