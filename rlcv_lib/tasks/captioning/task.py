"""Image captioning: word tokens, the CIDEr-D reward, pycocoevalcap metrics.

**Text normalisation** (:func:`normalize`, the same for vocabulary, MLE targets, reward
references and, without Java, the judge): lower-case; every run of characters that is neither a
letter, a digit nor an apostrophe becomes a space; apostrophes at the ends of words are
dropped (``"The dog's ball."`` -> ``the dog's ball``); words are the whitespace-separated
pieces. The scenes captions are already in this form (the identity; a test checks it).

**Vocabulary** (:class:`Vocabulary`, built from the training references)::

    PAD = 0   fills the tail after EOS (never allowed before it)
    EOS = 1   ends a caption (always emitted: forced at the last position)
    UNK = 2   a word of fewer than ``min_count`` training occurrences, or never seen
    3..       the words, sorted alphabetically (deterministic, stable across split sizes)

No BOS: the decoder starts from a learned vector. A caption of ``w`` words tokenizes to
``w`` word ids, EOS, PAD..., truncated to ``max_len - 1`` words. Detokenizing joins the words
before the first EOS with single spaces (PAD skipped, UNK written ``<unk>``).

**Allowed tokens** (part of the policy; consistent with :mod:`rlcv_lib.core.sampling`): after EOS
or PAD only PAD; otherwise every word (UNK included) and EOS, except that position 0 takes a
word (no empty caption) and position ``max_len - 1`` takes EOS.

**Reward**: CIDEr-D (:mod:`rlcv_lib.tasks.captioning.reward`) of each sample against its image's
references (``batch["captions"]``, [B][M] strings, normalised as above), with document
frequencies and ``log(#images)`` fixed from the training references. With ``score_eos``
(the SCST convention) every reference, training reference and emitted EOS carries a final
word ``<eos>``, so "ends here" is scored like any other word. With
``captioning.grounded_weight`` > 0 (scenes world only) the reward adds that weight × the
caption's object F1 under the grounded judge (:mod:`rlcv_lib.tasks.captioning.judge`), read
against the scene of ``batch["image_id"]``.

**Judge** (:meth:`CaptioningTask.evaluate`): pycocoevalcap's CIDEr-D (corpus mode: df from
the evaluated split's references), BLEU-4 and ROUGE-L; with Java present (and
``java_metrics``), references and predictions go through pycocoevalcap's PTB tokenizer first
and METEOR is added. SPICE never runs (it downloads models). Scores are as pycocoevalcap
returns them (papers print CIDEr-D and BLEU ×100).

Usage::

    task = CaptioningTask.for_world(cfg.world, cfg.captioning, cache_dir=...)
    batch = {"image": images,                                    # float32 [B,H,W,3]
             "tokens": np.stack([task.tokenize(ex, k) ...]),     # MLE: caption k of each image
             "captions": [ex["captions"] for ex in examples]}    # RL: [B][5] reference strings
    rewards, aux = task.reward(samples, batch, None)             # float32 [B,N]
"""

from __future__ import annotations

import collections
import copy
import dataclasses
import re
import shutil
import textwrap
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rlcv_lib import models
from rlcv_lib.config import ConfigError, tuning_field
from rlcv_lib.core import train as train_lib
from rlcv_lib.tasks.captioning import reward as cider

PAD, EOS, UNK = 0, 1, 2
FIRST_WORD = 3
UNK_WORD, EOS_WORD = "<unk>", "<eos>"
"""How UNK is written in decoded captions, and the word an emitted EOS scores as."""

_NOT_WORD = re.compile(r"[^\w']+|_")
_REF_CACHE_SIZE = 1_000_000
"""Reference captions whose scorer ids the reward keeps (the cpu train split has 250k)."""


@dataclasses.dataclass(frozen=True)
class CaptioningConfig:
    """The captioning task: tokenizer, reward and metric settings."""

    max_len: int = 24
    """Tokens per caption, EOS included (longer captions are cut to max_len - 1 words)."""
    min_count: int = 1
    """Training occurrences a word needs to enter the vocabulary (rarer words become UNK)."""
    reference_images: int = 0
    """Training images whose references build the vocabulary and CIDEr-D df (0: all)."""
    score_eos: bool = True
    """Score EOS as a final word ``<eos>`` in the reward (SCST); the judge never does."""
    java_metrics: bool = True
    """With a ``java`` binary: PTB-tokenize before scoring and add METEOR to evaluate."""
    # Tuning and evaluation (docs/design.md §8); not part of what MLE produces, so not in a
    # shipped checkpoint's config hash.
    val_size: int = tuning_field(256)
    """Validation images scored at every tuning evaluation (the curve and the checkpoint
    choice); the test rows and the reward distribution use ``run.eval_examples``."""
    select_on: str = tuning_field("CIDEr-D")
    """The validation metric (greedy decoding, pycocoevalcap) that chooses the tuned
    checkpoint."""
    beam_size: int = tuning_field(4)
    """Beam width of the beam-search rows of the results table."""
    shown: int = tuning_field(6)
    """Test images shown with their captions before and after tuning."""
    grounded_weight: float = tuning_field(0.0)
    """Weight of the grounded term of the reward: CIDEr-D + ``grounded_weight`` × the caption's
    object F1 under the grounded judge (:func:`rlcv_lib.tasks.captioning.judge.caption_f1`;
    scenes world only). 0 (the default, the paper's reward): CIDEr-D alone."""
    grounded_run_weight: float = tuning_field(1.0)
    """``grounded_weight`` of the extra comparison run "LOO, grounded" of the main path
    (leave-one-out, reward CIDEr-D + this × F1); 0: no such run. Not chosen on any split: F1
    and CIDEr-D are both about 1 for a good caption, so 1 weighs them alike."""
    mle_as_long: bool = tuning_field(True)
    """Add the control "MLE as long": the MLE model trained on by MLE for as many seconds of
    updates as the leave-one-out tuning took (:func:`rlcv_lib.core.evaluate.continue_mle`)."""

    def __post_init__(self):
        for name in ("val_size", "beam_size", "shown", "max_len"):
            if getattr(self, name) < 1:
                raise ConfigError(f"invalid CaptioningConfig: {name} must be >= 1, got "
                                  f"{getattr(self, name)}")
        for name in ("grounded_weight", "grounded_run_weight"):
            if not getattr(self, name) >= 0:
                raise ConfigError(f"invalid CaptioningConfig: {name} must be >= 0, got "
                                  f"{getattr(self, name)}")


CAPTIONING_PRESETS: dict[str, CaptioningConfig] = {
    "smoke": CaptioningConfig(reference_images=256, java_metrics=False, val_size=8,
                              beam_size=2, shown=3),
    "cpu": CaptioningConfig(),
    "gpu": CaptioningConfig(max_len=32, val_size=1024),
    # Real COCO captions: Karpathy-style vocabulary (words seen at least 5 times).
    # Real COCO captions have no scene truth: no grounded run.
    "paper": CaptioningConfig(max_len=64, min_count=5, val_size=5000, grounded_run_weight=0.0),
}


TRAIN_PRESETS: dict[str, Any] = {
    **train_lib.TRAIN_PRESETS,
    "cpu": dataclasses.replace(train_lib.TRAIN_PRESETS["cpu"], num_steps=2500)}
"""Captioning's MLE ``train`` section per preset. cpu: 2,500 updates from the shared scenes
encoder, the shipped captioner's run (notes/scenes_encoder.md)."""


MODEL_PRESETS: dict[str, Any] = {
    **models.MODEL_PRESETS,
    "cpu": dataclasses.replace(models.MODEL_SIZES["cpu"], encoder_init="shipped"),
    "paper": models.MODEL_SIZES["vit_b16_cap128"]}
"""Captioning's ``model`` section per preset: the shared sizes; at ``cpu`` MLE starts from the
shipped scenes encoder (docs/design.md §4.3; notes/scenes_encoder.md: the captioner trained
from random weights did not read shapes); at ``paper`` the paper's captioner (ViT-B/16
encoder, 6-layer decoder, 512² images)."""


def normalize(text: str) -> list[str]:
    """Words of ``text``: lower-cased, punctuation removed (see the module docstring)."""
    text = _NOT_WORD.sub(" ", str(text).lower())
    if "'" not in text:
        return text.split()
    return [w for w in (w.strip("'") for w in text.split()) if w]


class Vocabulary:
    """Word <-> token id (PAD = 0, EOS = 1, UNK = 2, words from 3 in alphabetical order)."""

    def __init__(self, words: Sequence[str]):
        if len(set(words)) != len(words):
            raise ValueError("vocabulary words must be distinct")
        bad = [w for w in words if w in (UNK_WORD, EOS_WORD) or normalize(w) != [w]]
        if bad:
            raise ValueError(f"not normalised single words: {bad[:5]}")
        self.words = tuple(words)
        self.ids = {w: i + FIRST_WORD for i, w in enumerate(self.words)}

    @classmethod
    def build(cls, captions: Iterable[str], min_count: int = 1) -> Vocabulary:
        """The words of ``captions`` seen at least ``min_count`` times, sorted."""
        return cls.from_words((normalize(c) for c in captions), min_count)

    @classmethod
    def from_words(cls, captions: Iterable[Sequence[str]], min_count: int = 1) -> Vocabulary:
        """As :meth:`build`, from captions already normalised into words."""
        counts = collections.Counter(w for c in captions for w in c)
        return cls(sorted(w for w, k in counts.items() if k >= min_count))

    @property
    def size(self) -> int:
        return FIRST_WORD + len(self.words)

    def encode(self, text: str, max_len: int) -> np.ndarray:
        """int32 [max_len]: word ids (UNK for unknown), EOS, PAD...; at most max_len-1 words."""
        words = normalize(text)
        if not words:
            raise ValueError(f"caption {text!r} has no words")
        ids = [self.ids.get(w, UNK) for w in words[:max_len - 1]]
        out = np.full(max_len, PAD, np.int32)
        out[:len(ids)] = ids
        out[len(ids)] = EOS
        return out

    def decode(self, tokens: np.ndarray) -> str:
        """The words before the first EOS, PAD skipped, UNK as ``<unk>``, ids out of range
        skipped (never raises)."""
        out = []
        for t in np.asarray(tokens).reshape(-1).tolist():
            if t == EOS:
                break
            if t == UNK:
                out.append(UNK_WORD)
            elif FIRST_WORD <= t < self.size:
                out.append(self.words[t - FIRST_WORD])
        return " ".join(out)


def java_available() -> bool:
    return shutil.which("java") is not None


class CaptioningTask:
    """Captions as word tokens, rewarded by CIDEr-D under training-set frequencies."""

    name = "captioning"
    pad_id = PAD
    eos_id = EOS
    frozen = None

    def __init__(self, vocab: Vocabulary, scorer: cider.CiderD, cfg: CaptioningConfig):
        if cfg.max_len < 2:
            raise ValueError(f"max_len={cfg.max_len} must be at least 2 (a word and EOS)")
        if scorer.df is None:
            raise ValueError("the reward needs fixed document frequencies "
                             "(CiderD.from_references of the training captions)")
        self.vocab, self.scorer, self.cfg = vocab, scorer, cfg
        self.vocab_size, self.max_len = vocab.size, cfg.max_len
        # token id -> scorer word id (PAD never reaches the scorer)
        words = ["<pad>", EOS_WORD, UNK_WORD, *vocab.words]
        self._token_word = scorer.register(words)  # int64 [V]
        self._ref_cache: dict[str, np.ndarray | list[str]] = {}
        self.world: Any = None
        """The scenes world the references came from (:meth:`for_world`; None otherwise):
        the grounded reward's truth."""
        self._truth: dict[int, list] = {}  # image_id -> the scene's things (grounded reward)

    @classmethod
    def from_references(cls, references: Sequence[Sequence[str]],
                        cfg: CaptioningConfig = CaptioningConfig()) -> CaptioningTask:
        """Vocabulary and CIDEr-D df from training references [I][M] (strings)."""
        refs = [[normalize(c) for c in r] for r in references]  # [I][M] word lists
        vocab = Vocabulary.from_words((c for r in refs for c in r), cfg.min_count)
        if cfg.score_eos:
            refs = [[c + [EOS_WORD] for c in r] for r in refs]
        return cls(vocab, cider.CiderD.from_references(refs), cfg)

    @classmethod
    def for_world(cls, world: Any, cfg: CaptioningConfig = CaptioningConfig(),
                  cache_dir: str | None = None, workers: int = 1) -> CaptioningTask:
        """The task for a scenes world: references of its train split (the first
        ``cfg.reference_images`` images, or all)."""
        from rlcv_lib.data import memory

        size = cfg.reference_images or None
        ds = memory.load_split(world, "train", cache_dir=cache_dir, size=size, workers=workers)
        task = cls.from_references(np.asarray(ds.arrays["captions"]).tolist(), cfg)
        task.world = world
        return task

    def with_config(self, **changes: Any) -> CaptioningTask:
        """A shallow copy of the task (same vocabulary, scorer and caches) with
        ``cfg = dataclasses.replace(cfg, **changes)``; the token settings cannot change."""
        fixed = {"max_len", "min_count", "reference_images", "score_eos"} & set(changes)
        if fixed:
            raise ValueError(f"{sorted(fixed)} fix the vocabulary or the scorer: build a new "
                             "task instead")
        out = copy.copy(self)
        out.cfg = dataclasses.replace(self.cfg, **changes)
        return out

    # --- tokens -------------------------------------------------------------------------------
    def tokenize(self, example: Mapping[str, Any], index: int | None = None) -> np.ndarray:
        """int32 [L]: caption ``index`` (default ``example.get("caption_index", 0)``, modulo
        the number of captions) of ``example["captions"]``."""
        captions = example["captions"]
        if index is None:
            index = int(example.get("caption_index", 0))
        return self.vocab.encode(str(captions[index % len(captions)]), self.max_len)

    def tokenize_all(self, example: Mapping[str, Any]) -> np.ndarray:
        """int32 [M,L]: every caption of the example (pick one per step for MLE)."""
        return np.stack([self.vocab.encode(str(c), self.max_len) for c in example["captions"]])

    def allowed(self, position: jax.Array, prev_token: jax.Array) -> jax.Array:
        """bool [..., V]; see the module docstring."""
        token = jnp.arange(self.vocab_size)
        pos = jnp.asarray(position)[..., None]
        prev = jnp.asarray(prev_token)[..., None]
        ended = (prev == EOS) | (prev == PAD)
        is_word = token >= UNK
        open_ = ((token == EOS) & (pos > 0)) | (is_word & (pos < self.max_len - 1))
        return jnp.where(ended, token == PAD, open_)

    def detokenize(self, tokens: np.ndarray) -> str:
        return self.vocab.decode(tokens)

    # --- reward -------------------------------------------------------------------------------
    def sample_words(self, samples: np.ndarray) -> cider.Encoded:
        """Scorer word ids of samples [..., L] flattened to [S, L']: the tokens before the
        first EOS (PAD and out-of-range ids dropped, as in :meth:`detokenize`), plus
        ``<eos>`` when an EOS was emitted and ``score_eos`` is set."""
        tokens = np.asarray(samples).reshape(-1, np.shape(samples)[-1])  # [S,L]
        is_eos = tokens == EOS
        before = np.cumsum(is_eos, -1) == 0
        keep = before & (tokens >= UNK) & (tokens < self.vocab_size)
        order = np.argsort(~keep, axis=-1, kind="stable")  # kept tokens first, in order
        lengths = keep.sum(-1)
        words = self._token_word[np.clip(np.take_along_axis(tokens, order, -1), 0,
                                         self.vocab_size - 1)]
        if self.cfg.score_eos:  # one more column; <eos> after the words, counted if emitted
            words = np.concatenate([words, np.zeros((len(words), 1), np.int64)], -1)
            words[np.arange(len(words)), lengths] = self._token_word[EOS]
            lengths = lengths + is_eos.any(-1)
        return cider.Encoded(words, lengths.astype(np.int64))

    def reference_words(self, references: Sequence[Sequence[str]]) -> list[list[str]]:
        """Normalised references (plus ``<eos>`` with ``score_eos``), as the reward scores
        them."""
        tail = [EOS_WORD] if self.cfg.score_eos else []
        return [[" ".join(normalize(c) + tail) for c in refs] for refs in references]

    def _reference(self, caption: str) -> np.ndarray | list[str]:
        """A reference as the reward scores it: scorer word ids (cached per caption string)
        when every word is in the scorer's dictionary, else its words."""
        item = self._ref_cache.get(caption)
        if item is None:
            words = self.reference_words([[caption]])[0][0].split()
            ids = [self.scorer.words.get(w) for w in words]
            item = words if None in ids else np.array(ids, np.int64)
            if len(self._ref_cache) >= _REF_CACHE_SIZE:
                self._ref_cache.clear()
            self._ref_cache[caption] = item
        return item

    def reward(self, samples: np.ndarray, batch: Mapping[str, Any], frozen: Any = None
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """CIDEr-D float32 [B,N] of ``samples`` int [B,N,L] against ``batch["captions"]``
        (plus ``grounded_weight`` × the grounded judge's F1 against the scene of
        ``batch["image_id"]``, where the weight is set)."""
        samples = np.asarray(samples)
        if samples.ndim != 3:
            raise ValueError(f"samples must be [B,N,L], got shape {samples.shape}")
        b, n, _ = samples.shape
        if "captions" not in batch:
            raise KeyError("the captioning reward needs batch['captions'] ([B][M_i] strings)")
        references = cider.reference_sets(batch["captions"], b)
        flat = [self._reference(str(c)) for r in references for c in r]
        ref_image = np.repeat(np.arange(b), [len(r) for r in references])
        cand = self.sample_words(samples)
        scores = self.scorer.score_ids(cand, cider.encode(flat, self.scorer.words), ref_image,
                                       np.repeat(np.arange(b), n))
        words = cand.lengths - (self.cfg.score_eos & (samples == EOS).any(-1).reshape(-1))
        scores = scores.reshape(b, n).astype(np.float32)
        aux = {"caption_words": np.float32(words.mean())}
        if self.cfg.grounded_weight:
            f1 = self.grounded_f1(samples, batch)
            scores = scores + np.float32(self.cfg.grounded_weight) * f1
            aux["grounded_f1"] = np.float32(f1.mean())
        return scores, aux

    def grounded_f1(self, samples: np.ndarray, batch: Mapping[str, Any]) -> np.ndarray:
        """float32 [B,N]: the grounded judge's object F1 of each caption of ``samples``
        [B,N,L] against the scene of ``batch["image_id"]`` (regenerated once per image)."""
        from rlcv_lib.tasks.captioning import judge

        if self.world is None:
            raise ValueError("the grounded reward needs the scenes world's truth: build the "
                             "task with CaptioningTask.for_world (real captions have none), or "
                             "set captioning.grounded_weight=0")
        if "image_id" not in batch:
            raise KeyError("the grounded reward needs batch['image_id'] (int [B])")
        ids = np.asarray(batch["image_id"]).reshape(-1).tolist()
        if len(ids) != len(samples):
            raise ValueError(f"{len(ids)} image ids for {len(samples)} images of samples")
        for i in ids:
            if i not in self._truth:
                if len(self._truth) >= _REF_CACHE_SIZE:
                    self._truth.clear()
                self._truth[i] = judge.scene_truth(self.world, i)
        return np.array([[judge.caption_f1(self.detokenize(t), self._truth[i]) for t in row]
                         for i, row in zip(ids, samples, strict=True)], np.float32)

    # --- judge --------------------------------------------------------------------------------
    def evaluate(self, predictions: Sequence[str], examples: Sequence[Mapping[str, Any]]
                 ) -> dict[str, float]:
        """CIDEr-D, BLEU-4, ROUGE-L (and METEOR with Java) of ``predictions`` (str) against
        each example's ``captions``, via pycocoevalcap; ``empty``: share of empty
        predictions."""
        from pycocoevalcap.bleu.bleu import Bleu
        from pycocoevalcap.cider.cider import Cider
        from pycocoevalcap.rouge.rouge import Rouge

        if len(predictions) != len(examples):
            raise ValueError(f"{len(predictions)} predictions for {len(examples)} examples")
        if not predictions:
            raise ValueError("evaluate needs at least one prediction")
        gts_raw = {i: [str(c) for c in ex["captions"]] for i, ex in enumerate(examples)}
        res_raw = {i: [str(p)] for i, p in enumerate(predictions)}
        java = self.cfg.java_metrics and java_available()
        if java:
            from pycocoevalcap.tokenizer.ptbtokenizer import PTBTokenizer

            ptb = PTBTokenizer()
            gts = ptb.tokenize({i: [{"caption": c} for c in v] for i, v in gts_raw.items()})
            res = ptb.tokenize({i: [{"caption": c} for c in v] for i, v in res_raw.items()})
        else:
            gts = {i: [" ".join(normalize(c)) for c in v] for i, v in gts_raw.items()}
            res = {i: [" ".join(normalize(c)) for c in v] for i, v in res_raw.items()}
        out = {"CIDEr-D": float(Cider().compute_score(gts, res)[0]),
               "BLEU-4": float(Bleu(4).compute_score(gts, res, verbose=0)[0][3]),
               "ROUGE-L": _rouge(Rouge(), gts, res)}
        if java:
            from pycocoevalcap.meteor.meteor import Meteor

            out["METEOR"] = float(Meteor().compute_score(gts, res)[0])
        out["empty"] = float(np.mean([not res[i][0].split() for i in res]))
        return out

    def draw(self, example: Mapping[str, Any], prediction: str | None = None, ax=None):
        """The image, its first reference and (if given) the predicted caption."""
        import matplotlib.pyplot as plt

        ax = ax or plt.gca()
        ax.imshow(example["image"])
        lines = [f"ref: {example['captions'][0]}"]
        if prediction is not None:
            lines.append(f"pred: {prediction}")
        ax.set_title("\n".join(textwrap.fill(t, 40) for t in lines), fontsize=7)
        ax.axis("off")
        return ax


def _rouge(rouge: Any, gts: dict, res: dict) -> float:
    """pycocoevalcap's ROUGE-L; an empty prediction (which it divides by) scores 0."""
    ids = [i for i in res if res[i][0].split()]
    if not ids:
        return 0.0
    _, scores = rouge.compute_score({i: gts[i] for i in ids}, {i: res[i] for i in ids})
    return float(np.sum(scores) / len(res))
