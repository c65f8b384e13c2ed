"""The grounded caption judge: parsing, scoring against the scene, and the references' scores."""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rlcv_lib.data import captions as captions_lib
from rlcv_lib.data import scenes
from rlcv_lib.tasks.captioning import judge as jd

CPU = scenes.WORLD_PRESETS["cpu"]
ALL = dataclasses.replace(scenes.CROWDED_64, image_size=80, max_objects=16,
                          thing_classes=scenes.THING_CLASSES)


def thing(shape, colour, box, size="medium"):
    return captions_lib.Mention(shape, colour, size, box)


# two red circles side by side at the top, a blue square below them on the left
SCENE = [thing("circle", "red", (0, 0, 9, 9)), thing("circle", "red", (0, 20, 9, 29), "small"),
         thing("square", "blue", (30, 0, 45, 15), "large")]


def test_parse_noun_phrases_with_synonyms_counts_and_generic_nouns():
    p = jd.parse("two red discs and a big blue block and three shapes")
    assert [(x.count, x.size, x.colour, x.shape) for x in p.phrases] == [
        (2, None, "red", "circle"), (None, "large", "blue", "square"), (3, None, None, None)]
    # the longest noun wins: a hollow square and a square outline are frames
    assert [x.shape for x in jd.parse("a hollow square and one square outline").phrases] == [
        "frame", "frame"]
    assert jd.parse("no shapes").phrases[0].count == 0
    assert jd.parse("twenty stars").phrases[0].count == 20
    # no determiner: at least one
    assert jd.parse("red triangles").phrases[0][2:] == (None, None, "red", "triangle")


def test_parse_relations_both_ways_and_every_phrasing():
    for text in ("a red circle left of a blue square", "a red circle is to the left of a blue "
                 "square", "left of a blue square there is a red circle"):
        (r,) = jd.parse(text).relations
        assert r.relation == "left" and r.a.colour == "red" and r.b.shape == "square", text
    (r,) = jd.parse("a blue square beneath a red circle").relations
    assert (r.relation, r.a.shape, r.b.shape) == ("below", "square", "circle")
    # a relation without both phrases is not judged
    assert jd.parse("a red circle left of").relations == ()
    assert jd.parse("left of a blue square").relations == ()


@given(st.text(max_size=300))
@settings(max_examples=200, deadline=None)
def test_any_string_parses_and_judges(text):
    t = jd.judge(text, SCENE)
    assert 0 <= t["objects found"] <= t["objects claimed"]
    assert 0 <= t["things named"] <= t["things"] == 3
    assert 0 <= t["counts right"] <= t["counts"] and 0 <= t["relations right"] <= t["relations"]
    assert 0 <= jd.caption_f1(text, SCENE) <= 1


def test_unknown_words_empty_and_very_long_captions():
    assert jd.judge("", SCENE) == jd.judge("zebra <unk> qux", SCENE) == {
        "objects claimed": 0, "objects found": 0, "things": 3, "things named": 0, "counts": 0,
        "counts right": 0, "relations": 0, "relations right": 0}
    long = " ".join(["one blue square"] * 2000)
    t = jd.judge(long, SCENE)
    assert t["objects claimed"] == t["objects found"] == t["counts right"] == 2000
    assert t["things named"] == 1
    # unknown words end a phrase: "red xyz circle" is no red circle, but "circle" still is one
    assert [p.colour for p in jd.parse("red xyz circle").phrases] == [None]


def test_scores_against_the_scene():
    t = jd.judge("two red circles and one blue square", SCENE)
    assert t == {"objects claimed": 2, "objects found": 2, "things": 3, "things named": 3,
                 "counts": 2, "counts right": 2, "relations": 0, "relations right": 0}
    # wrong count, right objects
    t = jd.judge("three red circles", SCENE)
    assert (t["counts"], t["counts right"], t["things named"]) == (1, 0, 2)
    # a size word restricts the match: one small red circle
    assert jd.judge("one small red circle", SCENE)["counts right"] == 1
    # "no" claims absence: right for triangles, wrong for squares, never an object claim
    t = jd.judge("no triangles and no squares", SCENE)
    assert (t["objects claimed"], t["counts"], t["counts right"]) == (0, 2, 1)
    # relations: true, false, and between the same two (distinct) things
    assert jd.judge("a blue square below a red circle", SCENE)["relations right"] == 1
    assert jd.judge("a blue square above a red circle", SCENE)["relations right"] == 0
    assert jd.judge("a red circle left of a red circle", SCENE)["relations right"] == 1
    assert jd.judge("a blue square left of a blue square", SCENE)["relations right"] == 0


def test_a_missing_object_lowers_precision():
    right = jd.judge("a red circle and a blue square", SCENE)
    wrong = jd.judge("a red circle and a blue square and a green star", SCENE)
    assert jd.rates(right)["precision"] == 1 and jd.rates(wrong)["precision"] == pytest.approx(
        2 / 3)
    # hallucinating by attribute: a blue circle does not exist, a circle does
    assert jd.judge("a blue circle", SCENE)["objects found"] == 0
    assert jd.judge("a circle", SCENE)["objects found"] == 1


def test_recall_names_each_thing_once_by_its_shape():
    # an "a" phrase names one thing, a count phrase up to its count, generic nouns none
    assert jd.judge("a red circle", SCENE)["things named"] == 1
    assert jd.judge("a red circle and a red circle", SCENE)["things named"] == 2
    assert jd.judge("three shapes", SCENE)["things named"] == 0
    # the template a blind captioner writes names at most two things, whatever the scene
    assert jd.judge("one white triangle and one white triangle", SCENE)["things named"] == 0


@pytest.mark.parametrize("world", [CPU, ALL], ids=["cpu", "all-classes"])
def test_shorter_captions_never_raise_recall(world):
    """Dropping any of a caption's " and "-joined parts never names more things."""
    for i in range(60):
        sc = scenes.generate(world, "validation", i)
        truth = jd.scene_truth(world, sc.image_id)
        for text in sc.captions:
            parts = text.split(" and ")
            full = jd.judge(text, truth)["things named"]
            for k in range(len(parts)):
                shorter = " and ".join(parts[:k] + parts[k + 1:])
                assert jd.judge(shorter, truth)["things named"] <= full, (text, shorter)


def _references_judged(world, split, num):
    captions, truths = [], []
    for i in range(num):
        sc = scenes.generate(world, split, i)
        truth = jd.scene_truth(world, sc.image_id, sc.captions)
        captions += sc.captions
        truths += [truth] * len(sc.captions)
    return jd.aggregate(captions, truths)


def test_references_are_judged_correct_on_the_whole_cpu_test_split():
    m = _references_judged(CPU, "test", CPU.test_size)
    assert m["precision"] == m["count accuracy"] == m["relation accuracy"] == 1
    assert m["objects claimed/caption"] > 1 and m["counts/caption"] > 0.5
    assert m["relations/caption"] > 0.1
    assert 0.2 < m["recall"] < 1  # the ceiling: one reference rarely names every thing


def test_references_are_judged_correct_in_a_world_of_every_shape():
    m = _references_judged(ALL, "train", 300)
    assert m["precision"] == m["count accuracy"] == m["relation accuracy"] == 1


def test_scene_truth_checks_the_world_and_the_id():
    sc = scenes.generate(CPU, "validation", 3)
    truth = jd.scene_truth(CPU, sc.image_id, sc.captions)
    assert [t.shape for t in truth] == [t.name for t in sc.things]
    with pytest.raises(ValueError, match="world config"):
        jd.scene_truth(dataclasses.replace(CPU, world_seed=CPU.world_seed + 1), sc.image_id,
                       sc.captions)
    with pytest.raises(ValueError, match="not a scenes-world id"):
        jd.scene_truth(CPU, 9 * 10 ** 8)


def test_aggregate_pools_claims_and_caption_f1():
    m = jd.aggregate(["a red circle", "a green star"], [SCENE, SCENE])
    assert m["precision"] == 0.5 and m["recall"] == pytest.approx(1 / 6)
    assert m["F1"] == pytest.approx(2 * 0.5 * (1 / 6) / (0.5 + 1 / 6))
    assert np.isnan(m["count accuracy"]) and np.isnan(m["relation accuracy"])
    silent = jd.aggregate(["", "zebra"], [SCENE, SCENE])
    assert np.isnan(silent["precision"]) and silent["recall"] == silent["F1"] == 0
    with pytest.raises(ValueError, match="2 captions for 1 scenes"):
        jd.aggregate(["a", "b"], [SCENE])
    assert jd.caption_f1("", []) == 1.0 and jd.caption_f1("a red circle", []) == 0.0
    assert jd.caption_f1("", SCENE) == 0.0
    assert jd.caption_f1("two red circles and a blue square", SCENE) == 1.0
