"""UViM stage II: the code generator that every UViM task tunes (docs/design.md §10.2).

Stage II is the package's encoder-decoder (``cfg.model``) emitting the code sequence of a frozen
stage I model from the task's input image; the stage I decoder turns any code sequence plus the
context image back into the task's output (a colour image, a panoptic map). Tokens::

    token = code + 1  (1..K)     0 = pad, never allowed: every sequence is L = vqvae.num_codes
                                  codes long (no EOS), so any sampled sequence decodes

A stage II batch holds the model's input, the stage I batch it was made from and the target
tokens::

    {"image":   float [B,H,W,3]  the stage II input (colorization: the grey image on [0, 1]),
     "context": float [B,H,W,3]  stage I's context image (what its decoder sees beside codes),
     <target>:  float [B,H,W,C]  stage I's targets (the truth the judges read),
     <kept>:                     further stage I entries the task keeps (``Stage2Task.keep``),
     "tokens":  int32 [B,L]      codes + 1 of the targets (training batches)}

**Codes of the training split** (:func:`split_codes`): stage I's encoder in evaluation mode (no
code dropout) over every image of the split, computed once and cached on disk under
``cache_dir/uvim_codes/`` by a digest of the stage I weights and of the split's arrays, so a
re-shipped stage I or another world never reuses them.

A task plugs in with a :class:`Stage2Task` (its stage I task and frozen model, its input, its
reward on decoded outputs, its judges) and :func:`make_recipe`, the pretraining
:class:`~rlcv_lib.core.pretrain.Recipe` that the shared pretraining, shipping, wrong-image
control and command line run like any MLE recipe.
"""

from __future__ import annotations

import dataclasses
import hashlib
import os
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlcv_lib.core import evaluate as ev
from rlcv_lib.core.pretrain import Recipe
from rlcv_lib.data import pipeline
from rlcv_lib.models.vqvae import VQVAE
from rlcv_lib.tasks.uvim import stage1

PAD = 0
"""The pad token (never emitted: every position holds a code)."""

Outputs = dict[str, np.ndarray]


def tokens_of(codes: np.ndarray) -> np.ndarray:
    """int32 tokens of stage I codes (code + 1)."""
    return (np.asarray(codes) + 1).astype(np.int32)


def codes_of(tokens: np.ndarray, codebook_size: int) -> np.ndarray:
    """int32 codes of any token array: token − 1, the pad token and ids beyond the codebook
    clipped into it (so a malformed sequence still decodes)."""
    return np.clip(np.asarray(tokens) - 1, 0, codebook_size - 1).astype(np.int32)


def state_digest(model: nnx.Module) -> str:
    """sha256 (16 hex) of every array of ``model``'s state, in tree order: the identity of a
    stage I model that its codes are cached under."""
    h = hashlib.sha256()
    for path, leaf in sorted(jax.tree_util.tree_leaves_with_path(nnx.state(model)),
                             key=lambda kv: jax.tree_util.keystr(kv[0])):
        a = np.asarray(leaf)
        h.update(jax.tree_util.keystr(path).encode())
        h.update(str(a.dtype).encode() + str(a.shape).encode())
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def source_digest(source: Any) -> str | None:
    """sha256 (16 hex) of a split's images and ids when it holds them as arrays (the in-memory
    scenes splits); None for another source (its codes are then cached in memory only)."""
    arrays = getattr(source, "arrays", None)
    if not isinstance(arrays, Mapping) or "image" not in arrays or "image_id" not in arrays:
        return None
    h = hashlib.sha256()
    for name in ("image_id", "image"):
        a = np.ascontiguousarray(arrays[name])
        h.update(name.encode() + str(a.dtype).encode() + str(a.shape).encode())
        h.update(memoryview(a.reshape(-1).view(np.uint8)))
    return h.hexdigest()[:16]


@dataclasses.dataclass(frozen=True, eq=False)
class Stage2Task:
    """A UViM task's stage II: the Task protocol (docs/design.md §7.1) over stage I codes.

    Hashable by identity (``eq=False``): ``allowed`` becomes part of a static jit argument."""

    name: str
    stage1: stage1.Stage1Task
    """Stage I of the task: its config, and how a scenes batch becomes a stage I batch."""
    frozen: VQVAE
    """The frozen stage I model (the reward's and the detokenizer's state; never trained)."""
    input_image: Callable[[Mapping[str, np.ndarray]], np.ndarray]
    """A scenes batch -> the stage II input float [B,H,W,3] (colorization: its grey image)."""
    score: Callable[[Outputs, Mapping[str, np.ndarray]], np.ndarray]
    """``(decoded outputs with a leading [B], stage II batch) -> float [B]``: the reward of
    each decoded output (the batch holds its context and targets)."""
    judge: Callable[[Outputs, Mapping[str, np.ndarray]], dict[str, float]]
    """``(decoded outputs [B], stage II batch) -> {name: value}``: the task's metrics of a set
    of predictions (the evaluator's, beside the reward)."""
    keep: tuple[str, ...] = ()
    """Further entries of the stage I batch that the stage II batch carries for the score and
    the judges (panoptic: the ground-truth tables)."""
    cache_dir: str | None = None
    """Where the codes of the training split are cached (None: in memory only)."""
    chunk: int = 256
    """Images per stage I call when coding a split or decoding samples."""
    _codes: dict = dataclasses.field(default_factory=dict, repr=False)
    pad_id: int = dataclasses.field(default=PAD, init=False)
    eos_id: int | None = dataclasses.field(default=None, init=False)

    @property
    def codebook_size(self) -> int:
        return self.stage1.vqvae.codebook_size

    @property
    def vocab_size(self) -> int:
        return self.codebook_size + 1

    @property
    def max_len(self) -> int:
        return self.stage1.vqvae.num_codes

    # --- tokens -----------------------------------------------------------------------------

    def allowed(self, position: jax.Array, prev_token: jax.Array) -> jax.Array:
        """Every code token at every position; never the pad: bool [..., V]."""
        shape = jnp.broadcast_shapes(jnp.shape(position), jnp.shape(prev_token))
        return jnp.broadcast_to(jnp.arange(self.vocab_size) != PAD, (*shape, self.vocab_size))

    def tokenize(self, example: Mapping[str, Any]) -> np.ndarray:
        """int32 [L]: the tokens of ``example["codes"]`` (stage I's codes of the example)."""
        codes = np.asarray(example["codes"])
        if codes.shape != (self.max_len,):
            raise ValueError(f"codes must be [{self.max_len}], got {codes.shape}")
        return tokens_of(codes)

    def detokenize(self, tokens: np.ndarray) -> np.ndarray:
        """int32 codes [..., L] of tokens (any sequence: see :func:`codes_of`); decoding them
        into an output needs the context image (:meth:`decode`)."""
        return codes_of(tokens, self.codebook_size)

    # --- batches ----------------------------------------------------------------------------

    def batch(self, scenes_batch: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
        """A collated scenes batch -> the stage II batch without tokens (module docstring)."""
        s1 = self.stage1.make_batch(scenes_batch)
        targets = {n: s1[n] for n, _ in self.stage1.vqvae.targets}
        return {"image": np.asarray(self.input_image(scenes_batch), np.float32),
                "context": s1["image"], **targets, **{k: s1[k] for k in self.keep}}

    def codes(self, batch: Mapping[str, np.ndarray]) -> np.ndarray:
        """int32 [B,L]: stage I's codes of a stage II batch's targets (evaluation mode)."""
        out = []
        for s in ev.chunks(len(batch["context"]), self.chunk):
            targets = {n: jnp.asarray(batch[n][s], jnp.float32)
                       for n, _ in self.stage1.vqvae.targets}
            out.append(np.asarray(stage1.encode_codes(
                self.frozen, targets, jnp.asarray(batch["context"][s], jnp.float32))))
        return np.concatenate(out).astype(np.int32)

    def split_codes(self, source: Any, *, progress: bool = False) -> np.ndarray:
        """int32 [len(source), L]: stage I's codes of every example of ``source`` (module
        docstring: computed once per stage I model and split, cached)."""
        digest = source_digest(source)
        key = (state_digest(self.frozen), digest if digest else id(source))
        if key in self._codes:
            return self._codes[key]
        path = None
        if self.cache_dir and digest:
            path = os.path.join(self.cache_dir, "uvim_codes", f"{self.name}_{key[0]}_{digest}.npy")
        if path and os.path.exists(path):
            codes = np.load(path)
        else:
            loader = pipeline.Loader(source, self.chunk, shuffle=False)
            parts = loader.epoch()
            if progress:
                from tqdm.auto import tqdm

                parts = tqdm(parts, total=-(-len(source) // self.chunk),
                             desc=f"{self.name} stage I codes", leave=False)
            codes = np.concatenate([self.codes(self.batch(b))[b["mask"]] for b in parts])
            if path:
                os.makedirs(os.path.dirname(path), exist_ok=True)
                tmp = f"{path}.{os.getpid()}.tmp.npy"
                np.save(tmp, codes)
                os.replace(tmp, path)
        self._codes[key] = codes
        return codes

    # --- outputs and reward -----------------------------------------------------------------

    def decode(self, tokens: np.ndarray, context: np.ndarray, frozen: VQVAE | None = None
               ) -> Outputs:
        """Stage I's outputs {target: float [..., H, W, C]} of tokens [B, L] or [B, N, L]
        given each image's ``context`` [B,H,W,3] (repeated over the N samples)."""
        frozen = self.frozen if frozen is None else frozen
        tokens = np.asarray(tokens)
        lead = tokens.shape[:-1]
        flat = self.detokenize(tokens).reshape(-1, self.max_len)
        ctx = np.asarray(context, np.float32)
        if tokens.ndim == 3:
            ctx = np.repeat(ctx, tokens.shape[1], axis=0)
        if len(ctx) != len(flat):
            raise ValueError(f"{len(flat)} code sequences but {len(ctx)} context images")
        parts = [stage1.decode_codes(frozen, jnp.asarray(flat[s]), jnp.asarray(ctx[s]))
                 for s in ev.chunks(len(flat), self.chunk)]
        return {n: np.concatenate([np.asarray(p[n]) for p in parts]).reshape(
            *lead, *parts[0][n].shape[1:]) for n in parts[0]}

    def reward(self, samples: np.ndarray, batch: Mapping[str, np.ndarray], frozen: Any = None
               ) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """float [B,N]: the task's :attr:`score` of each sample decoded by the frozen stage I
        model with its image's context."""
        samples = np.asarray(samples)
        if samples.ndim != 3:
            raise ValueError(f"samples must be [B,N,L], got {samples.shape}")
        b, n = samples.shape[:2]
        outputs = self.decode(samples, batch["context"], frozen)
        flat = {k: v.reshape(b * n, *v.shape[2:]) for k, v in outputs.items()}
        rep = {k: np.repeat(np.asarray(v), n, axis=0) for k, v in batch.items()
               if k != "tokens" and np.ndim(v) and len(v) == b}
        return np.asarray(self.score(flat, rep), np.float64).reshape(b, n), {}


def frozen_stage1(recipe: Recipe, cfg: Any, cache_dir: str | None = None,
                  model: Any = None) -> Any:
    """The frozen stage I model of a task's stage II: ``model`` if given, else the shipped stage
    I of ``cfg``'s preset (trained here first where none is shipped), even under
    ``run.from_scratch`` (which retrains the tuned stage II, not stage I). Raises ValueError
    when ``cfg.model`` and ``cfg.world`` differ in image size."""
    if cfg.model.image_size != cfg.world.image_size:
        raise ValueError(f"model.image_size={cfg.model.image_size} differs from "
                         f"world.image_size={cfg.world.image_size}")
    if model is not None:
        return model
    from rlcv_lib.core import shipped

    return shipped.load_or_pretrain(recipe, cfg.override({"run.from_scratch": False}), None,
                                    stage="stage1", cache_dir=cache_dir, progress=False).model


# ---------------------------------------------------------------------------------------------
# Stage II as a pretraining recipe.


def make_batch_fn(task: Stage2Task, loader: pipeline.Loader, seed: int):
    """``step -> stage II batch with tokens``, a pure function of (seed, step): the loader's
    scenes of that step and their cached codes."""
    codes = task.split_codes(loader.source, progress=False)

    def batch_fn(step: int) -> dict[str, np.ndarray]:
        b = loader.batch(step)
        return {**task.batch(b), "tokens": tokens_of(codes[b["index"]])}

    return batch_fn


def truth_tokens(task: Stage2Task, scenes_batch: Mapping[str, np.ndarray]) -> np.ndarray:
    """int32 [B,L]: stage I's codes (+ 1) of a scenes batch: stage II's MLE targets."""
    return tokens_of(task.codes(task.batch(scenes_batch)))


def evaluate_predictions(task: Stage2Task, tokens: np.ndarray, batch: Mapping[str, np.ndarray]
                         ) -> dict[str, float]:
    """The task's judges and mean reward of decoded ``tokens`` [B,L] on a stage II batch."""
    outputs = task.decode(tokens, batch["context"])
    return {"reward": float(np.mean(task.score(outputs, batch))), **task.judge(outputs, batch)}


def make_evaluator(task: Stage2Task, val: ev.Split, seed: int = 0):
    """``fn(model, step) -> metrics`` on the validation scenes: the judges and reward of greedy
    decoding (``<metric>``) and of one sample per image at temperature 1 drawn with a fixed key
    (``<metric>_sampled``: near-zero temperature gave UViM's released colorizer grey images,
    big_vision issue #19), the greedy codes' agreement with stage I's (``code_accuracy``) and
    the teacher-forced NLL of stage I's codes (``nll_code``, nats per token)."""
    batch = task.batch(val.batch)
    truth = tokens_of(task.codes(batch))
    key = jax.random.key(ev.seed_for(seed, "eval"))

    def evaluate(model, step: int = 0) -> dict[str, float]:
        greedy = ev.decode(model, task, batch["image"])
        sampled = ev.sample(model, task, batch["image"], 1, key)[:, 0]
        out = evaluate_predictions(task, greedy, batch)
        out |= {f"{k}_sampled": v for k, v in evaluate_predictions(task, sampled, batch).items()}
        nll = ev.masked_nll(model, task, batch["image"], truth, {"code": np.ones_like(truth,
                                                                                    bool)})
        return out | {"code_accuracy": float(np.mean(greedy == truth)), "nll_code": nll["code"]}

    return evaluate


def make_recipe(name: str, make_task: Callable[[Any, str | None], Stage2Task]) -> Recipe:
    """The stage II pretraining recipe of task ``name``: the encoder-decoder of ``cfg.model``
    for the task's code vocabulary (its encoder from the shared scenes encoder when
    ``model.encoder_init`` says so), the MLE step and the ``train`` section, batches of cached
    codes, :func:`make_evaluator` and the wrong-image control on the code tokens (one kind,
    ``code``; the model's input, not the scenes image, is what is rolled)."""
    return Recipe(
        name=name, make_task=make_task, make_batch_fn=make_batch_fn,
        make_evaluator=lambda task, val: make_evaluator(task, val),
        truth_tokens=truth_tokens,
        token_masks=lambda task, tokens: {"code": np.ones(np.shape(tokens), bool)},
        input_images=lambda task, scenes_batch: task.batch(scenes_batch)["image"])
