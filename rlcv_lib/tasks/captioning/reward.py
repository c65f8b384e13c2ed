"""CIDEr-D (Vedantam et al. 2015), vectorised over a whole batch of candidates.

The quantity is exactly pycocoevalcap's ``Cider`` (its ``CiderScorer`` *is* CIDEr-D). For a
candidate ``c`` of an image with references ``r_1..r_M``::

    g_n(s)   = tf(s, ngram) * (log_num_images - log(max(1, df(ngram))))   n-grams of order n
    sim_n    = sum_ngram min(g_n(c), g_n(r)) * g_n(r) / (|g_n(c)| |g_n(r)|)   (clipped cosine;
               not divided when a norm is 0)
               * exp(-(len(c) - len(r))^2 / (2 sigma^2))                     (sigma = 6)
    CIDEr-D  = 10 * mean_{n=1..4} (1/M) sum_r sim_n(c, r)

Two details of pycocoevalcap that this follows to the letter: a sentence's "length" is its
number of *bigrams* (``max(0, words - 1)``), and an n-gram absent from ``df`` gets ``df = 0``,
i.e. the largest idf. Words are whitespace-separated tokens (pycocoevalcap's ``str.split``).

Document frequencies (``df``: in how many images' reference sets an n-gram occurs) and
``log_num_images`` come from one of two places:

* **fixed** (:meth:`CiderD.from_references`): from the training references, once, as SCST
  implementations do for the reward (a per-batch df changes the reward);
* **corpus** (:class:`CiderD` with ``df=None``): from the references passed to each call, with
  ``log_num_images = log(#reference sets)``: pycocoevalcap's ``Cider().compute_score`` when
  each candidate has its own reference set.

How it is vectorised: words become integer ids (a dictionary fixed at construction; words
first seen in a call get temporary ids), each n-gram of up to four ids is packed exactly into
one int64 (15 bits per word, no hashing collisions), and the whole batch is scored with
``np.unique`` / ``np.searchsorted`` / ``np.bincount`` over flat (sentence, n-gram) entries:
the references' weights are laid out as one row per distinct (image, n-gram) with a column
per reference, so each candidate n-gram meets all M references of its image in one lookup,
and no Python loop runs over n-grams, candidates or references.

:class:`ReferenceCider` is pycocoevalcap's own scorer with injected fixed frequencies: the
judge the tests and the benchmark compare against.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any, NamedTuple

import numpy as np

BITS = 15
"""Bits per word in a packed n-gram key (4 words: 60 bits of an int64)."""
MAX_WORDS = 2 ** BITS - 1
"""Distinct words one call may see (dictionary plus the call's new words)."""

Sentence = str | Sequence[str] | np.ndarray


def key_order(keys: np.ndarray) -> np.ndarray:
    """int64 [...]: the n-gram order (number of words) of packed keys."""
    keys = np.asarray(keys, np.int64)
    mask = (1 << BITS) - 1
    return sum(((keys >> (BITS * i)) & mask) != 0 for i in range(64 // BITS)).astype(np.int64)


def bigram_length(lengths: np.ndarray, n: int = 4) -> np.ndarray:
    """pycocoevalcap's sentence length: its number of bigrams (0 when n < 2)."""
    lengths = np.asarray(lengths, np.int64)
    return np.maximum(lengths - 1, 0) if n >= 2 else np.zeros_like(lengths)


def ngrams(ids: np.ndarray, lengths: np.ndarray, n: int = 4) -> tuple[np.ndarray, np.ndarray]:
    """Every n-gram occurrence (orders 1..n, not yet counted) of ``ids`` int [S,L] (row s
    valid up to ``lengths[s]``): sentence int64 [E] and packed key int64 [E]. The key of
    ``(w_1..w_k)`` is ``sum_i (w_i + 1) << (BITS * (i - 1))``: exact, and it reveals the order
    (a k-gram has exactly k non-zero digits, see :func:`key_order`)."""
    ids = np.asarray(ids, np.int64)
    lengths = np.asarray(lengths, np.int64)
    if ids.ndim != 2 or lengths.shape != ids.shape[:1]:
        raise ValueError(f"ids must be [S,L] and lengths [S]; got {ids.shape}, {lengths.shape}")
    if ids.size and (ids.min(initial=0) < 0 or ids.max(initial=0) >= MAX_WORDS):
        raise ValueError(f"word ids must lie in [0, {MAX_WORDS}); got {ids.min()}..{ids.max()}")
    if n > 64 // BITS:
        raise ValueError(f"n={n} n-grams do not fit an int64 key at {BITS} bits per word")
    s, length = ids.shape
    digits = ids + 1  # [S,L]
    pos = np.arange(length)
    sents, keys = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)]
    key = np.zeros((s, length), np.int64)
    for k in range(1, min(n, length) + 1):
        width = length - k + 1
        key = key[:, :width] | (digits[:, k - 1:k - 1 + width] << (BITS * (k - 1)))  # [S,W]
        valid = pos[None, :width] + k <= lengths[:, None]  # [S,W]
        sents.append(np.nonzero(valid)[0])
        keys.append(key[valid])
    return np.concatenate(sents), np.concatenate(keys)


def reference_sets(references: Any, num_images: int | None = None) -> list[list[Any]]:
    """``references`` [I][M_i] (lists, tuples or a [I,M] array; ragged allowed) as lists.
    Raises ValueError naming the image whose set is one string (not a list of captions) or
    empty, or when there are not ``num_images`` sets."""
    if isinstance(references, (str, bytes)):
        raise ValueError("references must hold one list of captions per image, got one string")
    out = []
    for i, refs in enumerate(references):
        if isinstance(refs, (str, bytes)):
            raise ValueError(f"references of image {i} are one string {refs!r}; give a list of "
                             f"captions")
        refs = list(refs.tolist() if isinstance(refs, np.ndarray) else refs)
        if not refs:
            raise ValueError(f"image {i} has no reference captions")
        out.append(refs)
    if num_images is not None and len(out) != num_images:
        raise ValueError(f"{len(out)} reference sets for {num_images} images")
    return out


class Encoded(NamedTuple):
    """Sentences as padded word ids."""

    ids: np.ndarray  # int64 [S,L], 0-padded
    lengths: np.ndarray  # int64 [S]


def _words(sentence: Sentence) -> list[str]:
    return sentence.split() if isinstance(sentence, str) else list(sentence)


def encode(sentences: Sequence[Sentence], words: Mapping[str, int],
           extra: dict[str, int] | None = None) -> Encoded:
    """Word ids of ``sentences``: strings (split on whitespace), word lists, or int arrays
    of ids already taken from ``words`` (passed through). Words missing from
    ``words`` get ids ``len(words) + i`` recorded in ``extra`` (shared across calls that must
    agree, e.g. a call's candidates and references)."""
    extra = {} if extra is None else extra
    base = len(words)
    rows = []
    for s in sentences:
        if isinstance(s, np.ndarray):  # already word ids
            rows.append(s.tolist())
            continue
        row = []
        for w in _words(s):
            i = words.get(w)
            if i is None:
                i = extra.setdefault(w, base + len(extra))
            row.append(i)
        rows.append(row)
    if base + len(extra) > MAX_WORDS:
        raise ValueError(f"{base + len(extra)} distinct words exceed MAX_WORDS={MAX_WORDS}")
    lengths = np.array([len(r) for r in rows], np.int64)
    ids = np.zeros((len(rows), int(lengths.max(initial=0))), np.int64)
    for i, r in enumerate(rows):
        ids[i, :len(r)] = r
    return Encoded(ids, lengths)


@dataclasses.dataclass(frozen=True)
class DocumentFrequency:
    """``df`` of every n-gram of a reference corpus, as sorted packed keys."""

    keys: np.ndarray
    """int64 [K], sorted packed n-gram keys."""
    counts: np.ndarray
    """float64 [K], the number of images whose reference set contains the n-gram."""
    log_num_images: float
    """pycocoevalcap's ``ref_len``: log of the number of images (reference sets)."""

    def lookup(self, keys: np.ndarray) -> np.ndarray:
        """float64 [...]: df of packed ``keys`` (0 for n-grams the corpus never contains)."""
        keys = np.asarray(keys, np.int64)
        if not len(self.keys):
            return np.zeros(keys.shape)
        pos = np.minimum(np.searchsorted(self.keys, keys), len(self.keys) - 1)
        return np.where(self.keys[pos] == keys, self.counts[pos], 0.0)


def _distinct(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an int64 array (a sort and a mask: faster than np.unique's
    hash path on millions of keys)."""
    x = np.sort(x)
    return x[np.concatenate([[True], x[1:] != x[:-1]])] if len(x) else x


def document_frequency(refs: Encoded, ref_image: np.ndarray, num_images: int, n: int = 4
                       ) -> DocumentFrequency:
    """df over reference sets: ``refs`` are reference sentences (word ids) and ``ref_image``
    int [R] the reference set (image) of each."""
    if num_images <= 0:
        raise ValueError(f"document frequencies need at least one image, got {num_images}")
    sent, key = ngrams(refs.ids, refs.lengths, n)
    uniq, inv = np.unique(key, return_inverse=True)
    size = max(len(uniq), 1)
    pairs = _distinct(np.asarray(ref_image, np.int64)[sent] * size + inv)  # (image, n-gram)
    counts = np.bincount(pairs % size, minlength=len(uniq)).astype(np.float64)
    return DocumentFrequency(uniq, counts, float(np.log(float(num_images))))


def _sum_by(index: np.ndarray, weights: np.ndarray, size: int) -> np.ndarray:
    return np.bincount(index, weights=weights, minlength=size)[:size]


def cider_d_ids(cand: Encoded, refs: Encoded, ref_image: np.ndarray, cand_image: np.ndarray,
                df: DocumentFrequency | None = None, n: int = 4, sigma: float = 6.0
                ) -> np.ndarray:
    """CIDEr-D float64 [C] of each candidate (word ids) against the references of its image.

    Args:
      cand, refs: candidate sentences [C] and reference sentences [R] as word ids.
      ref_image: int [R], the image (reference set) of each reference, values 0..I-1 in
        non-decreasing order, every image with at least one reference.
      cand_image: int [C], the image each candidate describes.
      df: fixed document frequencies, or None: corpus mode (df and log(I) from ``refs``).
    """
    ref_image = np.asarray(ref_image, np.int64)
    cand_image = np.asarray(cand_image, np.int64)
    c_count, r_count = len(cand.lengths), len(refs.lengths)
    if ref_image.shape != (r_count,) or cand_image.shape != (c_count,):
        raise ValueError(f"ref_image {ref_image.shape} / cand_image {cand_image.shape} must "
                         f"be [{r_count}] / [{c_count}]")
    if np.any(np.diff(ref_image) < 0):
        raise ValueError("references must be grouped by image (ref_image non-decreasing)")
    num_images = int(ref_image.max(initial=-1)) + 1
    refs_per_image = np.bincount(ref_image, minlength=num_images)  # [I]
    if r_count and (ref_image[0] < 0 or (refs_per_image == 0).any()):
        raise ValueError("ref_image must number the images 0..I-1, each with a reference; got "
                         f"images without references: {np.flatnonzero(refs_per_image == 0)[:5]}")
    if c_count and (cand_image.min() < 0 or cand_image.max() >= num_images):
        raise ValueError("every candidate's image needs at least one reference "
                         f"(cand_image {cand_image.min()}..{cand_image.max()}, "
                         f"{num_images} images with references)")

    # 1. n-grams of all sentences (candidates 0..C-1, references C..C+R-1), counted per
    # sentence, with compact n-gram ids g over this call (two sorts in all)
    h_sent, h_key = ngrams(cand.ids, cand.lengths, n)
    r_sent, r_key = ngrams(refs.ids, refs.lengths, n)
    uniq, g = np.unique(np.concatenate([h_key, r_key]), return_inverse=True)
    size = max(len(uniq), 1)
    pair, tf = np.unique(np.concatenate([h_sent, r_sent + c_count]) * size + g,
                         return_counts=True)
    sent, g = np.divmod(pair, size)
    order = key_order(uniq)[g]  # [E] 1..n
    if df is None:
        img = ref_image[sent[sent >= c_count] - c_count]
        per_image = _distinct(img * size + g[sent >= c_count])  # (image, n-gram) pairs
        counts = np.bincount(per_image % size, minlength=len(uniq)).astype(np.float64)
        idf = np.log(float(num_images)) - np.log(np.maximum(1.0, counts))  # [G]
    else:
        idf = df.log_num_images - np.log(np.maximum(1.0, df.lookup(uniq)))  # [G]
    vec = tf * idf[g]  # [E] tf-idf weight of each (sentence, n-gram)
    norm = np.sqrt(_sum_by(sent * n + order - 1, vec ** 2, (c_count + r_count) * n))
    norm = norm.reshape(-1, n)  # [C+R, n]
    is_h = sent < c_count

    # 2. references laid out per image: slot m of image i is its m-th reference
    m_max = int(refs_per_image.max(initial=1))
    first_ref = np.cumsum(refs_per_image) - refs_per_image  # [I]
    slot = np.arange(r_count) - first_ref[ref_image]  # [R]
    norm_r = np.zeros((num_images, m_max, n))
    norm_r[ref_image, slot] = norm[c_count:]
    len_r = np.zeros((num_images, m_max))
    len_r[ref_image, slot] = bigram_length(refs.lengths, n)
    # one row per distinct (image, n-gram) of the references: the weight in each slot
    r_s = sent[~is_h] - c_count
    rows, row = np.unique(ref_image[r_s] * size + g[~is_h], return_inverse=True)
    table = np.zeros((max(len(rows), 1), m_max))
    table[row, slot[r_s]] = vec[~is_h]

    # 3. clipped products of each candidate n-gram with the same n-gram in every reference
    c_s, v_h = sent[is_h], vec[is_h]
    query = cand_image[c_s] * size + g[is_h]
    pos = np.minimum(np.searchsorted(rows, query), max(len(rows) - 1, 0))
    found = (rows[pos] == query) if len(rows) else np.zeros(len(query), bool)
    v_r = table[pos] * found[:, None]  # [Eh, M]
    prod = np.minimum(v_h[:, None], v_r) * v_r  # [Eh, M]
    index = (c_s * n + order[is_h] - 1)[:, None] * m_max + np.arange(m_max)
    val = _sum_by(index.ravel(), prod.ravel(), c_count * n * m_max).reshape(c_count, n, m_max)

    # 4. cosine (not divided when a norm is 0), length penalty, mean over n and references
    denom = norm[:c_count, :, None] * norm_r[cand_image].transpose(0, 2, 1)  # [C, n, M]
    val = np.where(denom != 0, val / np.where(denom != 0, denom, 1.0), val)
    delta = bigram_length(cand.lengths, n)[:, None] - len_r[cand_image]  # [C, M]
    val = val * (np.e ** (-(delta ** 2) / (2 * sigma ** 2)))[:, None, :]
    # empty reference slots hold zeros: summing over M adds nothing for them
    return val.sum(-1).mean(-1) / refs_per_image[cand_image] * 10.0


class CiderD:
    """CIDEr-D scorer over strings or word lists; see the module docstring.

    ``CiderD()`` is corpus mode; :meth:`from_references` fixes ``df`` from a training corpus.
    """

    def __init__(self, words: Sequence[str] = (), df: DocumentFrequency | None = None,
                 n: int = 4, sigma: float = 6.0):
        self.words: dict[str, int] = {}
        self.register(words)
        self.df, self.n, self.sigma = df, n, sigma

    @classmethod
    def from_references(cls, references: Sequence[Sequence[Sentence]], n: int = 4,
                        sigma: float = 6.0) -> CiderD:
        """Fixed ``df`` and ``log(#images)`` from ``references`` [I][M] (training refs)."""
        if not len(references):
            raise ValueError("from_references needs at least one image's references")
        flat = [s for refs in references for s in refs]
        words = sorted({w for s in flat for w in _words(s)})
        scorer = cls(words, None, n, sigma)
        enc = encode(flat, scorer.words)
        ref_image = np.repeat(np.arange(len(references)), [len(r) for r in references])
        scorer.df = document_frequency(enc, ref_image, len(references), n)
        return scorer

    def register(self, words: Sequence[str]) -> np.ndarray:
        """Adds ``words`` to the dictionary (ids are stable); returns their ids."""
        for w in words:
            self.words.setdefault(w, len(self.words))
        if len(self.words) > MAX_WORDS:
            raise ValueError(f"{len(self.words)} words exceed MAX_WORDS={MAX_WORDS}")
        return np.array([self.words[w] for w in words], np.int64)

    def score_ids(self, cand: Encoded, refs: Encoded, ref_image: np.ndarray,
                  cand_image: np.ndarray) -> np.ndarray:
        """CIDEr-D float64 [C] of encoded sentences (ids from :attr:`words` or
        :func:`encode` with it); see :func:`cider_d_ids`."""
        return cider_d_ids(cand, refs, ref_image, cand_image, self.df, self.n, self.sigma)

    def score(self, candidates: Sequence[Sentence], references: Sequence[Sequence[Sentence]],
              cand_image: Sequence[int] | None = None) -> np.ndarray:
        """CIDEr-D float64 [C] of ``candidates`` against ``references`` [I][M]: candidate i
        describes image ``cand_image[i]`` (default: image i, so C = I)."""
        cand_image = np.arange(len(candidates)) if cand_image is None else np.asarray(cand_image)
        if cand_image.shape != (len(candidates),):
            raise ValueError(f"cand_image {cand_image.shape} for {len(candidates)} candidates")
        extra: dict[str, int] = {}
        references = reference_sets(references)
        flat = [s for refs in references for s in refs]
        ref_image = np.repeat(np.arange(len(references)), [len(r) for r in references])
        return self.score_ids(encode(candidates, self.words, extra),
                              encode(flat, self.words, extra), ref_image, cand_image)


class ReferenceCider:
    """The judge: pycocoevalcap's own ``CiderScorer``, optionally under fixed document
    frequencies computed by pycocoevalcap itself from a training corpus.

    pycocoevalcap computes ``df`` and ``ref_len = log(#images)`` from the references it is
    given; here a subclass replaces exactly those two (``compute_doc_freq`` and the
    ``ref_len`` assignment in ``compute_cider``) and drops the assertion that no n-gram occurs
    in more images than are being scored (false under training-set frequencies). All scoring
    arithmetic is pycocoevalcap's.
    """

    def __init__(self, train_references: Sequence[Sequence[str]] | None = None):
        from pycocoevalcap.cider.cider_scorer import CiderScorer

        self._base = CiderScorer
        self.df = self.log_num_images = None
        if train_references is not None:
            corpus = CiderScorer()
            for refs in train_references:
                corpus.cook_append(None, list(refs))
            corpus.compute_doc_freq()
            self.df = corpus.document_frequency
            self.log_num_images = float(np.log(float(len(corpus.crefs))))

    def score(self, candidates: Sequence[str], references: Sequence[Sequence[str]]
              ) -> np.ndarray:
        """float64 [C]: candidate i against ``references[i]`` (pycocoevalcap's code)."""
        scorer = self._scorer()
        for cand, refs in zip(candidates, references, strict=True):
            scorer += (cand, list(refs))
        return np.asarray(scorer.compute_score()[1], np.float64)

    def _scorer(self):
        if self.df is None:
            return self._base(n=4, sigma=6.0)
        df, log_num_images = self.df, self.log_num_images

        class Fixed(self._base):
            @property
            def ref_len(self):
                return log_num_images

            @ref_len.setter
            def ref_len(self, value):  # compute_cider's log(#images): ignored
                pass

            def compute_doc_freq(self):
                self.document_frequency = df  # a defaultdict(float): unseen n-grams get 0

            def compute_score(self, option=None, verbose=0):
                self.compute_doc_freq()
                score = self.compute_cider()
                return np.mean(np.array(score)), np.array(score)

        return Fixed(n=4, sigma=6.0)
