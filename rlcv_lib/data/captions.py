"""Caption grammar of the scenes world: five true, varied captions per image.

Captions are lower-case words without punctuation (pycocoevalcap's PTB tokenizer leaves them
unchanged). They talk only about annotated things and stuff (the minimum-visible-size rule of
:mod:`rlcv_lib.data.scenes`). Their semantics, which the property tests check:

* a number word (``no``, ``one`` .. ``twenty``) followed by optional size / colour words and a
  shape noun is an *exact* count of the annotated things with those attributes;
  ``"a"``/``"an"`` + the same is an *existential* claim (at least one);
* ``A left of B`` (also ``to the left of``, ``right of``, ``above``, ``below``, ``beneath``)
  holds when some thing matching A lies entirely left of (above) some thing matching B: their
  pixel boxes do not overlap along that axis;
* a stuff word (``sky``, ``lawn``, ``beach`` ..) names a stuff region present in the image;
* a setting (``on the grass``, ``in the sky``, ``over a lake`` ..) in a caption about things
  says where they stand: the stuff under the box centre (``Mention.ground``) of every thing a
  counted phrase counts, and of some thing an ``a``/``an`` phrase can mean;
* size words use the COCO buckets of the visible area (``small``/``little``/``tiny`` = small,
  ``large``/``big`` = large).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple

import numpy as np

SHAPE_NOUNS: dict[str, tuple[tuple[str, str], ...]] = {
    "circle": (("circle", "circles"), ("disc", "discs")),
    "ring": (("ring", "rings"), ("hoop", "hoops"), ("donut", "donuts")),
    "square": (("square", "squares"), ("block", "blocks")),
    "frame": (("frame", "frames"), ("hollow square", "hollow squares"),
              ("square outline", "square outlines")),
    "triangle": (("triangle", "triangles"),),
    "diamond": (("diamond", "diamonds"), ("rhombus", "rhombuses")),
    "star": (("star", "stars"),),
    "cross": (("cross", "crosses"), ("plus sign", "plus signs")),
}
"""Shape class -> (singular, plural) synonyms."""
GENERIC_NOUNS: tuple[tuple[str, str], ...] = (
    ("shape", "shapes"), ("object", "objects"), ("thing", "things"), ("item", "items"))
"""Nouns that match any thing."""
SIZE_WORDS: dict[str, tuple[str, ...]] = {"small": ("small", "little", "tiny"),
                                          "large": ("large", "big")}
NUMBER_WORDS: tuple[str, ...] = (
    "no", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten",
    "eleven", "twelve", "thirteen", "fourteen", "fifteen", "sixteen", "seventeen", "eighteen",
    "nineteen", "twenty")
"""Exact counts 0..20 (larger counts are never stated exactly)."""
STUFF_NOUNS: dict[str, tuple[str, ...]] = {
    "sky": ("the sky",), "wall": ("a wall", "a brick wall"), "water": ("the water", "a lake"),
    "grass": ("the grass", "a lawn", "a meadow"), "sand": ("the sand", "a beach")}
STUFF_SETTINGS: dict[str, tuple[str, ...]] = {
    "sky": ("against the sky", "in the sky"),
    "wall": ("in front of a wall", "against a brick wall"),
    "water": ("on the water", "over a lake"),
    "grass": ("on the grass", "on a lawn", "in a meadow"),
    "sand": ("on the sand", "on a beach")}
STUFF_KEYWORDS: dict[str, str] = {
    "sky": "sky", "wall": "wall", "water": "water", "lake": "water", "grass": "grass",
    "lawn": "grass", "meadow": "grass", "sand": "sand", "beach": "sand"}
"""Word -> the stuff class whose presence it claims."""
RELATIONS: dict[str, tuple[str, ...]] = {
    "left": ("left of", "to the left of"), "right": ("right of", "to the right of"),
    "above": ("above",), "below": ("below", "beneath")}


class Mention(NamedTuple):
    """What captions may say about one annotated thing."""

    shape: str
    color: str
    size: str  # small | medium | large (COCO buckets of the visible area)
    bbox: tuple[int, int, int, int]  # inclusive pixel box (y0, x0, y1, x1)
    ground: str = ""  # the stuff under the box centre


def holds(relation: str, a: Mention, b: Mention) -> bool:
    """Whether ``a <relation> b`` is true (boxes disjoint along the relation's axis)."""
    if relation == "left":
        return a.bbox[3] < b.bbox[1]
    if relation == "right":
        return a.bbox[1] > b.bbox[3]
    if relation == "above":
        return a.bbox[2] < b.bbox[0]
    if relation == "below":
        return a.bbox[0] > b.bbox[2]
    raise ValueError(f"unknown relation {relation!r}; choose from {list(RELATIONS)}")


def _pick(rng: np.random.Generator, options: Sequence):
    return options[int(rng.integers(len(options)))]


def _article(word: str) -> str:
    return "an" if word[0] in "aeiou" else "a"


def _noun(rng, shape: str | None, plural: bool) -> str:
    pair = _pick(rng, SHAPE_NOUNS[shape] if shape else GENERIC_NOUNS)
    return pair[1] if plural else pair[0]


def _count_phrase(rng, n: int, shape: str | None, color: str | None = None,
                  size: str | None = None) -> str:
    words = [NUMBER_WORDS[n]]
    if size:
        words.append(_pick(rng, SIZE_WORDS[size]))
    if color:
        words.append(color)
    words.append(_noun(rng, shape, plural=n != 1))
    return " ".join(words)


def _a_phrase(rng, m: Mention, p_color: float = 0.85, p_size: float = 0.5) -> str:
    words = []
    if m.size in SIZE_WORDS and rng.uniform() < p_size:
        words.append(_pick(rng, SIZE_WORDS[m.size]))
    if rng.uniform() < p_color:
        words.append(m.color)
    words.append(_noun(rng, m.shape, plural=False))
    return f"{_article(words[0])} {' '.join(words)}"


def _join(parts: Sequence[str]) -> str:
    return parts[0] if len(parts) == 1 else " ".join(parts[:-1]) + " and " + parts[-1]


def _setting(rng, stuff: Sequence[str], about: Sequence[Mention] | None = None) -> str:
    """A setting phrase true of every thing in ``about`` (any present stuff if None);
    "" when those things stand on different stuff."""
    options = [s for s in stuff if about is None or all(t.ground == s for t in about)]
    return _pick(rng, STUFF_SETTINGS[_pick(rng, options)]) if options else ""


def _stuff_list(rng, stuff: Sequence[str]) -> str:
    order = list(stuff)
    rng.shuffle(order)
    return _join([_pick(rng, STUFF_NOUNS[s]) for s in order])


def _with_setting(rng, text: str, stuff: Sequence[str], about: Sequence[Mention],
                  p: float = 0.5) -> str:
    if stuff and rng.uniform() < p:
        return f"{text} {_setting(rng, stuff, about)}"
    return text


# ----------------------------------------------------------------- caption kinds


def _total(rng, things: list[Mention], stuff: Sequence[str]) -> str | None:
    n = len(things)
    if n > 20:
        return None
    gen = _noun(rng, None, plural=n != 1)
    num = NUMBER_WORDS[n]
    setting = _setting(rng, stuff, things)
    forms = [f"{num} {gen} {setting}", f"there {'is' if n == 1 else 'are'} {num} {gen} {setting}",
             f"a picture of {num} {gen} {setting}"]
    if stuff:
        forms.append(f"a scene of {_stuff_list(rng, stuff)} with {num} {gen}")
    if n >= 8:
        forms.append(f"a crowded scene with {num} {gen}")
    return _pick(rng, forms).strip()


def _inventory(rng, things: list[Mention], stuff: Sequence[str]) -> str | None:
    shapes, counts = np.unique([t.shape for t in things], return_counts=True)
    if not len(shapes):
        return None
    k = int(rng.integers(1, min(3, len(shapes)) + 1))
    pick = rng.choice(len(shapes), size=k, replace=False)
    parts = [_count_phrase(rng, int(counts[i]), str(shapes[i])) for i in pick]
    text = _join(parts)
    if rng.uniform() < 0.3:
        text = f"there {'is' if counts[pick[0]] == 1 else 'are'} {text}"
    about = [t for t in things if t.shape in {str(shapes[i]) for i in pick}]
    return _with_setting(rng, text, stuff, about, 0.3)


def _colour_counts(rng, things: list[Mention], stuff: Sequence[str]) -> str | None:
    keys = sorted({(t.color, t.shape) for t in things})
    if not keys:
        return None
    k = int(rng.integers(1, min(2, len(keys)) + 1))
    pick = rng.choice(len(keys), size=k, replace=False)
    parts = []
    for i in pick:
        color, shape = keys[i]
        n = sum(t.color == color and t.shape == shape for t in things)
        parts.append(_count_phrase(rng, n, shape, color))
    about = [t for t in things if (t.color, t.shape) in {keys[i] for i in pick}]
    return _with_setting(rng, _join(parts), stuff, about, 0.4)


def _relation(rng, things: list[Mention], stuff: Sequence[str]) -> str | None:
    pairs = [(i, j, r) for i in range(len(things)) for j in range(len(things)) if i != j
             for r in RELATIONS if holds(r, things[i], things[j])]
    if not pairs:
        return None
    i, j, r = pairs[int(rng.integers(len(pairs)))]
    a, b = _a_phrase(rng, things[i], p_size=0.3), _a_phrase(rng, things[j], p_size=0.3)
    rel = _pick(rng, RELATIONS[r])
    form = int(rng.integers(3))
    if form == 0:
        return f"{a} {rel} {b}"
    if form == 1:
        return f"{a} is {rel} {b}"
    return f"{rel} {b} there is {a}"


def _sizes(rng, things: list[Mention], stuff: Sequence[str]) -> str | None:
    sized = [t for t in things if t.size in SIZE_WORDS]
    if not sized:
        return None
    k = min(len(sized), int(rng.integers(1, 3)))
    pick = rng.choice(len(sized), size=k, replace=False)
    return _with_setting(rng, _join([_a_phrase(rng, sized[i], 0.9, 1.0) for i in pick]),
                         stuff, [sized[i] for i in pick], 0.3)


def _scene(rng, things: list[Mention], stuff: Sequence[str]) -> str | None:
    if not things or not stuff:
        return None
    k = min(len(things), int(rng.integers(1, 3)))
    pick = rng.choice(len(things), size=k, replace=False)
    objects = _join([_a_phrase(rng, things[i]) for i in pick])
    setting = _setting(rng, stuff, [things[i] for i in pick])
    if setting and rng.uniform() < 0.5:
        return f"{objects} {setting}"
    return f"{objects} with {_stuff_list(rng, stuff)} in the background"


def _empty(rng, things: list[Mention], stuff: Sequence[str]) -> str | None:
    if things:
        return None
    gen = _noun(rng, None, plural=True)
    if not stuff:
        return _pick(rng, [f"no {gen}", f"an empty picture with no {gen}"])
    forms = [f"no {gen} {_setting(rng, stuff)}", f"an empty scene with {_stuff_list(rng, stuff)}",
             f"nothing but {_stuff_list(rng, stuff)}", f"a view of {_stuff_list(rng, stuff)}",
             f"there are no {gen} {_setting(rng, stuff)}",
             f"{_stuff_list(rng, stuff)} and no {gen}"]
    return _pick(rng, forms)


_KINDS = (_total, _inventory, _colour_counts, _relation, _sizes, _scene)


def describe(things: Sequence[Mention], stuff: Sequence[str], rng: np.random.Generator,
             num: int = 5) -> list[str]:
    """``num`` distinct true captions (fewer distinct ones only if the scene allows no more)."""
    things = list(things)
    out: list[str] = []
    kinds = [_empty] if not things else list(_KINDS)
    for _ in range(12):  # rounds: each kind once per round, in a random order
        order = rng.permutation(len(kinds))
        for k in order:
            text = kinds[k](rng, things, stuff)
            text = " ".join(text.split()) if text else ""
            if text and text not in out:
                out.append(text)
            if len(out) == num:
                return out
    while len(out) < num:  # a scene with too little to say: repeat (still true)
        out.append(out[len(out) % max(1, len(out))] if out else "an empty picture")
    return out
