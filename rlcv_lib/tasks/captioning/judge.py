"""The grounded caption judge: what a caption says about the scene, checked against its truth.

CIDEr-D measures agreement with the references' wording; a captioner can raise it by writing
the references' most common template whatever the image shows. This judge reads a caption
the way :mod:`rlcv_lib.data.captions` writes one and checks each claim against the scene the
image was drawn from (in the spirit of CHAIR's object-hallucination rate, Rohrbach et al.
2018):

* **Parsing** (:func:`parse`): after :func:`rlcv_lib.tasks.captioning.task.normalize`, a *noun
  phrase* is an optional determiner (a number word ``no`` .. ``twenty``: an exact count;
  ``a``/``an`` or none: "at least one"), any size and colour words, and a shape noun or a
  synonym (``disc`` is a circle, ``hollow square`` a frame; the longest noun wins) or a generic
  noun (``shape``, ``thing`` ..: any shape). A *relation* is ``A [is] left of B`` (and every
  phrasing of :data:`rlcv_lib.data.captions.RELATIONS`) or ``left of B there is A``, with A and
  B noun phrases. Any other word ends a phrase and is otherwise ignored, so any string parses
  (empty, garbage, very long); a relation whose A or B is missing is not judged.
* **Scoring** (:func:`judge`) against the scene's things (:class:`rlcv_lib.data.captions
  .Mention`: shape, colour, size bucket, box): a phrase *matches* the things with its
  attributes (unspecified ones match all).

  - object **precision**: of the phrases that claim at least one object (all but ``no ..``),
    the share that match some thing (a hallucinated object is a phrase that matches none);
  - object **recall**: the share of the scene's things *named*, i.e. assigned to a phrase that
    states their shape class (a maximum one-to-one assignment; a phrase with count n takes up
    to n things, an ``a`` phrase one; a generic noun names no shape and recalls nothing);
  - **count accuracy**: of the phrases with a number word (``no`` included), the share whose
    count equals the number of matching things;
  - **relation accuracy**: of the judged relations, the share for which some thing matching A
    and another matching B stand in the relation (:func:`rlcv_lib.data.captions.holds`).

  Settings ("on the grass") and stuff words are not judged.
* **Aggregates** (:func:`aggregate`): each rate pooled over all the claims of a set of
  captions (micro-averages), F1 of the pooled precision and recall. Every reference caption of
  the scenes world scores precision, count and relation accuracy 1 (a test checks it on the
  whole test split); the references' recall is the ceiling a one-caption-per-image model can
  expect, since a single reference rarely names every thing.
* **Truth** (:func:`scene_truth`): the scenes world is procedural, so each image's things are
  regenerated from its ``image_id`` (split and index) and checked against the example's
  references. Real datasets carry no such truth; the judge is the scenes world's.
* **Per-caption F1** (:func:`caption_f1`): precision 1 without claims, recall 1 for an empty
  scene; the optional grounded reward (``captioning.grounded_weight``) adds it to CIDEr-D.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

from rlcv_lib.data import captions as captions_lib
from rlcv_lib.data import palette
from rlcv_lib.tasks.captioning import task as cap

NOUNS: tuple[tuple[tuple[str, ...], str | None], ...] = tuple(sorted(
    [(tuple(form.split()), shape) for shape, pairs in captions_lib.SHAPE_NOUNS.items()
     for pair in pairs for form in pair]
    + [(tuple(form.split()), None) for pair in captions_lib.GENERIC_NOUNS for form in pair],
    key=lambda nf: -len(nf[0])))
"""(words, shape class or None for a generic noun) of every noun form, longest first."""
SIZES: dict[str, str] = {w: size for size, words in captions_lib.SIZE_WORDS.items()
                         for w in words}
COLOURS = frozenset(palette.COLOR_NAMES)
COUNTS: dict[str, int] = {w: i for i, w in enumerate(captions_lib.NUMBER_WORDS)}
RELATIONS: tuple[tuple[tuple[str, ...], str], ...] = tuple(sorted(
    [(tuple(p.split()), r) for r, phrases in captions_lib.RELATIONS.items() for p in phrases],
    key=lambda pr: -len(pr[0])))
"""(words, relation) of every relation phrasing, longest first."""
RATES = ("precision", "recall", "F1", "count accuracy", "relation accuracy")
"""The judge's rates (:func:`aggregate`), in table order."""
TALLIES = ("objects claimed", "objects found", "things", "things named", "counts",
           "counts right", "relations", "relations right")
"""What :func:`judge` counts per caption."""


class Phrase(NamedTuple):
    """A noun phrase: words ``[start, end)`` of the caption."""

    start: int
    end: int
    count: int | None
    """The stated exact count; None for "at least one" (``a``/``an`` or no determiner)."""
    size: str | None
    colour: str | None
    shape: str | None
    """The shape class; None for a generic noun."""


class Relation(NamedTuple):
    relation: str
    """A key of :data:`rlcv_lib.data.captions.RELATIONS`: ``a <relation> b``."""
    a: Phrase
    b: Phrase


class Parsed(NamedTuple):
    words: tuple[str, ...]
    phrases: tuple[Phrase, ...]
    relations: tuple[Relation, ...]


def _noun_at(words: Sequence[str], j: int) -> tuple[int, str | None] | None:
    for form, shape in NOUNS:
        if tuple(words[j:j + len(form)]) == form:
            return j + len(form), shape
    return None


def _phrase_at(words: Sequence[str], i: int) -> Phrase | None:
    """The noun phrase starting at word ``i``, or None."""
    count, j = None, i
    if words[i] in COUNTS:
        count, j = COUNTS[words[i]], i + 1
    elif words[i] in ("a", "an"):
        j = i + 1
    size = colour = None
    while j < len(words) and (words[j] in SIZES or words[j] in COLOURS):
        if words[j] in SIZES:
            size = SIZES[words[j]]
        else:
            colour = words[j]
        j += 1
    noun = _noun_at(words, j)
    if noun is None:
        return None
    return Phrase(i, noun[0], count, size, colour, noun[1])


def _relation_at(words: Sequence[str], i: int) -> tuple[int, str] | None:
    for form, relation in RELATIONS:
        if tuple(words[i:i + len(form)]) == form:
            return i + len(form), relation
    return None


def parse(caption: str) -> Parsed:
    """The noun phrases and relations of ``caption`` (module docstring); never raises."""
    words = tuple(cap.normalize(caption))
    phrases: list[Phrase] = []
    spans: list[tuple[int, int, str]] = []  # relation phrasings (start, end, relation)
    i = 0
    while i < len(words):
        phrase = _phrase_at(words, i)
        if phrase is not None:
            phrases.append(phrase)
            i = phrase.end
            continue
        rel = _relation_at(words, i)
        if rel is not None:
            spans.append((i, *rel))
            i = rel[0]
            continue
        i += 1
    by_start = {p.start: p for p in phrases}
    by_end = {p.end: p for p in phrases}
    relations = []
    for start, end, relation in spans:
        b = by_start.get(end)
        a = by_end.get(start - 1 if start and words[start - 1] == "is" else start)
        if a is None and b is not None and words[b.end:b.end + 2] == ("there", "is"):
            a = by_start.get(b.end + 2)  # "left of B there is A"
        if a is not None and b is not None:
            relations.append(Relation(relation, a, b))
    return Parsed(words, tuple(phrases), tuple(relations))


def matches(phrase: Phrase, things: Sequence[captions_lib.Mention]) -> list[int]:
    """Indices of the ``things`` with the phrase's stated attributes."""
    return [k for k, t in enumerate(things)
            if (phrase.shape is None or t.shape == phrase.shape)
            and (phrase.colour is None or t.color == phrase.colour)
            and (phrase.size is None or t.size == phrase.size)]


def _max_assignment(slots: Sequence[Sequence[int]], num_things: int) -> int:
    """Size of a maximum matching of slots (each a list of admissible things) to things, each
    thing used once (augmenting paths; a handful of slots and things per caption)."""
    owner = [-1] * num_things

    def augment(s: int, seen: list[bool]) -> bool:
        for t in slots[s]:
            if not seen[t]:
                seen[t] = True
                if owner[t] < 0 or augment(owner[t], seen):
                    owner[t] = s
                    return True
        return False

    return sum(augment(s, [False] * num_things) for s in range(len(slots)))


def judge(caption: str, things: Sequence[captions_lib.Mention]) -> dict[str, int]:
    """:data:`TALLIES` of ``caption`` against the scene's ``things``."""
    parsed = parse(caption)
    things = list(things)
    found = [matches(p, things) for p in parsed.phrases]
    claimed = [k for k, p in enumerate(parsed.phrases) if p.count != 0]
    counted = [k for k, p in enumerate(parsed.phrases) if p.count is not None]
    slots = [found[k] for k in claimed if parsed.phrases[k].shape is not None
             for _ in range(parsed.phrases[k].count or 1)]
    relations_right = sum(
        any(captions_lib.holds(r.relation, things[x], things[y])
            for x in matches(r.a, things) for y in matches(r.b, things) if x != y)
        for r in parsed.relations)
    return {"objects claimed": len(claimed),
            "objects found": sum(bool(found[k]) for k in claimed),
            "things": len(things), "things named": _max_assignment(slots, len(things)),
            "counts": len(counted),
            "counts right": sum(len(found[k]) == parsed.phrases[k].count for k in counted),
            "relations": len(parsed.relations), "relations right": int(relations_right)}


def _ratio(num: float, den: float) -> float:
    return num / den if den else float("nan")


def _f1(p: float, r: float) -> float:
    return 2 * p * r / (p + r) if p + r > 0 else 0.0


def rates(tallies: Mapping[str, float]) -> dict[str, float]:
    """:data:`RATES` of (summed) :data:`TALLIES`; NaN where a rate has no claims (F1: where
    there are no things; captions that claim nothing have F1 0)."""
    p = _ratio(tallies["objects found"], tallies["objects claimed"])
    r = _ratio(tallies["things named"], tallies["things"])
    # no claims name nothing (recall 0): F1 0, not undefined; NaN only for a scene-less split
    f1 = float("nan") if np.isnan(r) else (0.0 if np.isnan(p) else _f1(p, r))
    return {"precision": p, "recall": r, "F1": f1,
            "count accuracy": _ratio(tallies["counts right"], tallies["counts"]),
            "relation accuracy": _ratio(tallies["relations right"], tallies["relations"])}


def aggregate(captions: Sequence[str], truths: Sequence[Sequence[captions_lib.Mention]]
              ) -> dict[str, float]:
    """:data:`RATES` pooled over ``captions`` (one per scene of ``truths``), plus the claims
    per caption behind them (``objects claimed/caption``, ``counts/caption``,
    ``relations/caption``)."""
    if len(captions) != len(truths):
        raise ValueError(f"{len(captions)} captions for {len(truths)} scenes")
    if not captions:
        raise ValueError("aggregate needs at least one caption")
    total = dict.fromkeys(TALLIES, 0)
    for c, t in zip(captions, truths, strict=True):
        for k, v in judge(c, t).items():
            total[k] += v
    n = len(captions)
    return rates(total) | {f"{k}/caption": total[k] / n
                           for k in ("objects claimed", "counts", "relations")}


def caption_f1(caption: str, things: Sequence[captions_lib.Mention]) -> float:
    """One caption's object F1 (precision 1 without object claims, recall 1 for a scene
    without things): the grounded reward's term."""
    t = judge(caption, things)
    p = t["objects found"] / t["objects claimed"] if t["objects claimed"] else 1.0
    r = t["things named"] / t["things"] if t["things"] else 1.0
    return _f1(p, r)


def caption_f1s(captions: Sequence[str], truths: Sequence[Sequence[captions_lib.Mention]]
                ) -> np.ndarray:
    """float64 [B]: :func:`caption_f1` of each caption against its scene."""
    if len(captions) != len(truths):
        raise ValueError(f"{len(captions)} captions for {len(truths)} scenes")
    return np.array([caption_f1(c, t) for c, t in zip(captions, truths, strict=True)])


def describe_truth(things: Sequence[captions_lib.Mention]) -> str:
    """The scene's things as ``"colour shape"`` words, e.g. ``"red circle, blue square"``."""
    return ", ".join(f"{t.color} {t.shape}" for t in things) or "nothing"


# ---------------------------------------------------------------------------------------------
# Truth


def scene_truth(world: Any, image_id: int, captions: Sequence[str] | None = None
                ) -> list[captions_lib.Mention]:
    """The things of the scenes-world image ``image_id`` (regenerated from its split and
    index, :func:`rlcv_lib.data.scenes.image_id`); with ``captions``, checks they are the
    regenerated scene's references (else the world config is not the one the image came
    from)."""
    from rlcv_lib.data import scenes

    split_code, index = divmod(int(image_id), 10 ** 8)
    split = {v: k for k, v in scenes.SPLITS.items()}.get(split_code)
    if split is None:
        raise ValueError(f"image_id {image_id} is not a scenes-world id (split code "
                         f"{split_code} not in {dict(scenes.SPLITS)})")
    scene = scenes.generate(world, split, index)
    if captions is not None and [str(c) for c in captions] != list(scene.captions):
        raise ValueError(f"image {image_id}: its captions are not those the world config "
                         "generates; the judge needs the config the data came from")
    n = scene.panoptic.shape[0]
    return [captions_lib.Mention(t.name, t.color, scenes.size_bucket(t.area, n, n), t.bbox,
                                 t.ground) for t in scene.things]


def split_truth(world: Any, examples: Sequence[Mapping[str, Any]]
                ) -> list[list[captions_lib.Mention]]:
    """:func:`scene_truth` of every example (checked against its captions)."""
    return [scene_truth(world, ex["image_id"], ex["captions"]) for ex in examples]


def judge_split(captions: Sequence[str], truths: Sequence[Sequence[captions_lib.Mention]]
                ) -> dict[str, float]:
    """The judge's columns of a results-table row: :func:`aggregate` in percent."""
    return {k: 100 * v if k in RATES else v for k, v in aggregate(captions, truths).items()}
