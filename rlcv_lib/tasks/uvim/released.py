"""big_vision's released UViM checkpoints onto this package's modules (docs/design.md §10.4).

The UViM release (big_vision's UViM README) publishes, per task, a stage I file
(``panoptic_stageI_params.npz``, ``color_stageI_params.npz``) and a stage II file
(``panoptic_stageII_params.npz``, ``color_stageII_params.npz``): npz archives whose entries are
'/'-joined Flax parameter names (stage I: ``params/...`` and the codebook under ``state/...``).
They are not available offline, so **the names and shapes here are inferred from big_vision's
module code** (``models/proj/uvim/vit.py`` for stage I, ``models/proj/uvim/vtt.py`` for stage
II, ``models/vit.py`` for their encoder blocks), not read from the files:
:func:`stage1_names` and :func:`stage2_names` state what a file is expected to hold.

Loading is a pure conversion (:func:`convert`) from the released arrays to this package's
parameter paths, then :func:`load` writes them into a model and returns a :class:`Report`: every
released name it used, every expected name the file lacks and every name of the file nothing
read, each with its shape. What the conversion relies on:

* **Patch layouts.** The release feeds stage I a target as ``[B, patches, C, p·p]`` (channel
  before pixel); this package patchifies to ``[B, patches, p·p·C]`` (pixel-major), so its
  ``embedding_<target>`` kernels ``[C, p², D]`` and ``head_<target>`` kernels ``[D, C, p²]``
  are transposed on the way in.
* **Attention.** Flax's multi-head kernels ``[D, H, K]`` (query/key/value) and ``[H, K, D]``
  (out) flatten to this package's ``[D, H·K]`` and ``[H·K, D]`` with heads major, as
  :class:`~rlcv_lib.models.layers.Attention` splits them. Stage II's decoder attention has no
  bias in the release (``use_bias=False``); those biases here are set to zero.
* **Stage II's start.** The release shifts the tokens right with the pad token 0, so position 0
  reads the embedding of token 0: the decoder's learnt ``start`` vector is that row. The token
  layout is the same (``token = code + 1``, vocabulary K + 1, :mod:`~rlcv_lib.tasks.uvim.stage2`).
* **Input range.** The released stage II reads images on [−1, 1]; this package's stage II reads
  them on [0, 1]. The affine map is folded into the patch embedding (kernel × 2, bias − the
  kernel's sum), exactly, since the patch convolution has no padding. Stage I's context is on
  [−1, 1] in both.
* **Sizes.** Stage II's encoder and decoder share depth, width, heads and MLP in the release
  (one ``num_layers``), and its encoder has a plain patch stem and learnt positions: a config
  that differs is refused naming the field.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import nnx

from rlcv_lib.models.config import ModelConfig
from rlcv_lib.models.vqvae import VQVAEConfig

Convert = Callable[[Mapping[str, Any]], Any]
"""Released arrays (by name) -> one array of this package's model."""


@dataclasses.dataclass(frozen=True)
class Rule:
    """How one parameter of this package's model is made: from the released ``names``
    (``fn`` of the arrays), or zeros when ``names`` is empty (no released counterpart)."""

    names: tuple[str, ...]
    fn: Convert


@dataclasses.dataclass(frozen=True)
class Report:
    """What a load used and what it could not match; names with their shapes."""

    loaded: tuple[str, ...]
    """Model paths filled from the file."""
    zeroed: tuple[str, ...]
    """Model paths without a released counterpart, set to zero (stage II's decoder biases)."""
    missing: tuple[tuple[str, tuple[int, ...]], ...]
    """Released names the mapping expected (shape as expected) and the file lacks."""
    unused: tuple[tuple[str, tuple[int, ...]], ...]
    """Names of the file that nothing read."""

    @property
    def ok(self) -> bool:
        return not self.missing and not self.unused

    def summary(self) -> str:
        lines = [f"loaded {len(self.loaded)} arrays, zeroed {len(self.zeroed)}, missing "
                 f"{len(self.missing)}, unused {len(self.unused)}"]
        lines += [f"  missing {n} {list(s)}" for n, s in self.missing]
        lines += [f"  unused  {n} {list(s)}" for n, s in self.unused]
        return "\n".join(lines)


# ---------------------------------------------------------------------------------------------
# Reading a file.


def flatten(tree: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    """A nested dict of arrays -> ``{"a/b/c": array}`` (flat dicts pass through)."""
    flat = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, Mapping):
            flat.update(flatten(value, name + "/"))
        else:
            flat[name] = value
    return flat


def read_npz(path: str) -> dict[str, np.ndarray]:
    """The arrays of a big_vision ``.npz`` checkpoint by their '/'-joined names."""
    with np.load(path, allow_pickle=False) as f:
        return {name: f[name] for name in f.files}


def _params_prefixed(released: Mapping[str, Any]) -> dict[str, Any]:
    """Names with a ``params/`` (or ``state/``) root; a file of bare parameter names (as
    ``big_vision.utils.load_params`` may return) gets ``params/`` put in front."""
    flat = flatten(released)
    if any(n.startswith(("params/", "state/")) for n in flat):
        return flat
    return {f"params/{n}": v for n, v in flat.items()}


# ---------------------------------------------------------------------------------------------
# The shared pieces of the mapping.


def _take(name: str, f: Callable[[Any], Any] = lambda a: a) -> Rule:
    return Rule((name,), lambda r: f(r[name]))


def _zeros(shape: tuple[int, ...]) -> Rule:
    return Rule((), lambda r: jnp.zeros(shape, jnp.float32))


def _dense(ours: str, theirs: str, *, bias: bool = True) -> dict[str, Rule]:
    out = {f"{ours}/kernel": _take(f"{theirs}/kernel")}
    if bias:
        out[f"{ours}/bias"] = _take(f"{theirs}/bias")
    return out


def _layer_norm(ours: str, theirs: str) -> dict[str, Rule]:
    return {f"{ours}/scale": _take(f"{theirs}/scale"), f"{ours}/bias": _take(f"{theirs}/bias")}


def _attention(ours: str, theirs: str, width: int, *, bias: bool) -> dict[str, Rule]:
    """q/k/v kernels [D,H,K] -> [D,H·K], biases [H,K] -> [H·K]; out [H,K,D] -> [H·K,D]."""
    out = {}
    for mine, name in (("q", "query"), ("k", "key"), ("v", "value")):
        out[f"{ours}/{mine}/kernel"] = _take(f"{theirs}/{name}/kernel",
                                            lambda a: a.reshape(a.shape[0], -1))
        out[f"{ours}/{mine}/bias"] = (_take(f"{theirs}/{name}/bias", lambda a: a.reshape(-1))
                                     if bias else _zeros((width,)))
    out[f"{ours}/o/kernel"] = _take(f"{theirs}/out/kernel", lambda a: a.reshape(-1, a.shape[-1]))
    out[f"{ours}/o/bias"] = _take(f"{theirs}/out/bias") if bias else _zeros((width,))
    return out


def _mlp(ours: str, theirs: str) -> dict[str, Rule]:
    return {**_dense(f"{ours}/fc1", f"{theirs}/Dense_0"),
            **_dense(f"{ours}/fc2", f"{theirs}/Dense_1")}


def _vit_block(ours: str, theirs: str, width: int) -> dict[str, Rule]:
    """big_vision's ``Encoder1DBlock`` (``models/vit.py``) -> :class:`EncoderBlock`."""
    return {**_layer_norm(f"{ours}/ln1", f"{theirs}/LayerNorm_0"),
            **_attention(f"{ours}/attn", f"{theirs}/MultiHeadDotProductAttention_0", width,
                         bias=True),
            **_layer_norm(f"{ours}/ln2", f"{theirs}/LayerNorm_1"),
            **_mlp(f"{ours}/mlp", f"{theirs}/MlpBlock_0")}


def _vit_encoder(ours_blocks: str, ours_ln: str, theirs: str, depth: int, width: int
                 ) -> dict[str, Rule]:
    rules = _layer_norm(ours_ln, f"{theirs}/encoder_norm")
    for i in range(depth):
        rules.update(_vit_block(f"{ours_blocks}/{i}", f"{theirs}/encoderblock_{i}", width))
    return rules


def _positions(name: str) -> Rule:
    return _take(name, lambda a: a.reshape(a.shape[-2], a.shape[-1]))  # [1,T,D] -> [T,D]


# ---------------------------------------------------------------------------------------------
# Stage I.

COLOR_TARGETS = {"rgb": "color"}
"""This package's target names -> the release's, for colorization (panoptic's are the same)."""


def stage1_rules(cfg: VQVAEConfig, target_names: Mapping[str, str] | None = None
                 ) -> dict[str, Rule]:
    """``{model path: Rule}`` for :class:`~rlcv_lib.models.vqvae.VQVAE` of ``cfg`` from the
    released stage I (``models/proj/uvim/vit.py`` with ``bottleneck_resize=True`` and both
    contexts, as the released configs set)."""
    if not (cfg.encoder_context and cfg.decoder_context):
        raise ValueError("the released stage I sees the image in encoder and decoder: "
                         "vqvae.encoder_context and vqvae.decoder_context must be True")
    names = dict(target_names or {})
    d = cfg.width
    rules: dict[str, Rule] = {}
    for target, _ in cfg.targets:
        theirs = names.get(target, target)
        # [C,p²,D] (channel-major patches) -> [p²·C, D] (pixel-major, this package's patchify)
        rules[f"embed/{target}/kernel"] = _take(
            f"params/embedding_{theirs}/kernel", lambda a: a.transpose(1, 0, 2).reshape(-1, d))
        rules[f"embed/{target}/bias"] = _take(f"params/embedding_{theirs}/bias")
        # [D,C,p²] -> [D, p²·C]; bias [C,p²] -> [p²·C]
        rules[f"heads/{target}/kernel"] = _take(
            f"params/head_{theirs}/kernel", lambda a: a.transpose(0, 2, 1).reshape(d, -1))
        rules[f"heads/{target}/bias"] = _take(f"params/head_{theirs}/bias",
                                              lambda a: a.T.reshape(-1))
    rules.update(_dense("enc_context", "params/ctx_enc_embedding"))
    rules.update(_dense("dec_context", "params/ctx_dec_embedding"))
    rules["enc_pos"] = _positions("params/pos_embedding_encoder")
    rules["dec_pos"] = _positions("params/pos_embedding_decoder")
    rules.update(_vit_encoder("encoder", "enc_ln", "params/encoder", cfg.enc_depth, d))
    rules.update(_vit_encoder("decoder", "dec_ln", "params/decoder", cfg.dec_depth, d))
    rules.update(_dense("encoder_head", "params/encoder_head"))
    rules.update(_dense("decoder_stem", "params/decoder_stem"))
    rules["sums"] = _take("state/dictionary")
    rules["counts"] = _take("state/counts")
    return rules


def _vit_block_names(prefix: str, d: int, heads: int, mlp: int, *, bias: bool = True,
                     lns: tuple[str, ...] = ("LayerNorm_0", "LayerNorm_1"),
                     attns: tuple[str, ...] = ("MultiHeadDotProductAttention_0",),
                     mlp_name: str = "MlpBlock_0") -> dict[str, tuple[int, ...]]:
    k = d // heads
    out: dict[str, tuple[int, ...]] = {}
    for ln in lns:
        out |= {f"{prefix}/{ln}/scale": (d,), f"{prefix}/{ln}/bias": (d,)}
    for attn in attns:
        for name in ("query", "key", "value"):
            out[f"{prefix}/{attn}/{name}/kernel"] = (d, heads, k)
            if bias:
                out[f"{prefix}/{attn}/{name}/bias"] = (heads, k)
        out[f"{prefix}/{attn}/out/kernel"] = (heads, k, d)
        if bias:
            out[f"{prefix}/{attn}/out/bias"] = (d,)
    out |= {f"{prefix}/{mlp_name}/Dense_0/kernel": (d, mlp), f"{prefix}/{mlp_name}/Dense_0/bias":
            (mlp,), f"{prefix}/{mlp_name}/Dense_1/kernel": (mlp, d),
            f"{prefix}/{mlp_name}/Dense_1/bias": (d,)}
    return out


def stage1_names(cfg: VQVAEConfig, target_names: Mapping[str, str] | None = None
                 ) -> dict[str, tuple[int, ...]]:
    """The names and shapes a released stage I file of ``cfg``'s sizes is expected to hold
    (inferred from big_vision's module code; module docstring)."""
    names = dict(target_names or {})
    p, d, g = cfg.patch_size, cfg.width, cfg.grid
    out: dict[str, tuple[int, ...]] = {}
    for target, c in cfg.targets:
        theirs = names.get(target, target)
        out[f"params/embedding_{theirs}/kernel"] = (c, p * p, d)
        out[f"params/embedding_{theirs}/bias"] = (d,)
        out[f"params/head_{theirs}/kernel"] = (d, c, p * p)
        out[f"params/head_{theirs}/bias"] = (c, p * p)
    for ctx in ("ctx_enc_embedding", "ctx_dec_embedding"):
        out[f"params/{ctx}/kernel"] = (p, p, 3, d)
        out[f"params/{ctx}/bias"] = (d,)
    for part, depth in (("encoder", cfg.enc_depth), ("decoder", cfg.dec_depth)):
        out[f"params/pos_embedding_{part}"] = (1, g * g, d)
        out[f"params/{part}/encoder_norm/scale"] = (d,)
        out[f"params/{part}/encoder_norm/bias"] = (d,)
        for i in range(depth):
            out |= _vit_block_names(f"params/{part}/encoderblock_{i}", d, cfg.heads, cfg.mlp)
    out |= {"params/encoder_head/kernel": (d, cfg.codeword_dim),
            "params/encoder_head/bias": (cfg.codeword_dim,),
            "params/decoder_stem/kernel": (cfg.codeword_dim, d), "params/decoder_stem/bias": (d,),
            "state/dictionary": (cfg.codebook_size, cfg.codeword_dim),
            "state/counts": (cfg.codebook_size,)}
    return out


# ---------------------------------------------------------------------------------------------
# Stage II.


def check_stage2_config(cfg: ModelConfig) -> None:
    """Raises ValueError naming the first field in which ``cfg`` cannot hold a released stage
    II (``models/proj/uvim/vtt.py``: one size for encoder and decoder, a patch stem, learnt
    positions)."""
    for mine, theirs in (("dec_depth", "enc_depth"), ("dec_width", "enc_width"),
                         ("dec_heads", "enc_heads"), ("dec_mlp", "enc_mlp")):
        if getattr(cfg, mine) != getattr(cfg, theirs):
            raise ValueError(f"the released stage II shares one size between encoder and "
                             f"decoder: model.{mine}={getattr(cfg, mine)} must equal "
                             f"model.{theirs}={getattr(cfg, theirs)}")
    if cfg.stem != "patch":
        raise ValueError(f"the released stage II has a patch stem: model.stem must be 'patch', "
                         f"got {cfg.stem!r}")
    if cfg.enc_pos != "learned":
        raise ValueError(f"the released stage II learns its positions: model.enc_pos must be "
                         f"'learned', got {cfg.enc_pos!r}")


def stage2_rules(cfg: ModelConfig, *, input_range: tuple[float, float] = (0.0, 1.0)
                 ) -> dict[str, Rule]:
    """``{model path: Rule}`` for :class:`~rlcv_lib.models.encdec.EncoderDecoder` of ``cfg``
    (resolved: vocabulary K + 1, L tokens) from the released stage II. ``input_range``: the
    range of this package's input images; the release's [−1, 1] is folded into the patch
    embedding (module docstring)."""
    check_stage2_config(cfg)
    lo, hi = input_range
    scale, shift = 2.0 / (hi - lo), -1.0 - 2.0 * lo / (hi - lo)  # x' = scale·x + shift
    d = cfg.enc_width
    rules: dict[str, Rule] = {
        "encoder/stem/kernel": _take("params/EmbedPatches/kernel", lambda w: w * scale),
        "encoder/stem/bias": Rule(("params/EmbedPatches/kernel", "params/EmbedPatches/bias"),
                                  lambda r: r["params/EmbedPatches/bias"] + shift * jnp.sum(
                                      r["params/EmbedPatches/kernel"], axis=(0, 1, 2))),
        "encoder/pos": _positions("params/pos_embedding_encoder"),
        **_vit_encoder("encoder/blocks", "encoder/ln", "params/encoder", cfg.enc_depth, d),
        "decoder/embed/embedding": _take("params/decoder/EmbedTargets/embedding"),
        "decoder/start": _take("params/decoder/EmbedTargets/embedding", lambda e: e[0]),
        "decoder/pos": _positions("params/pos_embedding_decoder"),
        **_layer_norm("decoder/ln", "params/decoder/LayerNorm"),
        **_dense("decoder/head", "params/decoder/LogitsDense"),
    }
    for i in range(cfg.dec_depth):
        ours, theirs = f"decoder/blocks/{i}", f"params/decoder/EncDecBlock{i}"
        rules |= {**_layer_norm(f"{ours}/ln1", f"{theirs}/LayerNorm1"),
                  **_attention(f"{ours}/self_attn", f"{theirs}/SelfAttn", d, bias=False),
                  **_layer_norm(f"{ours}/ln2", f"{theirs}/LayerNorm2"),
                  **_attention(f"{ours}/cross_attn", f"{theirs}/CrossAttn", d, bias=False),
                  **_layer_norm(f"{ours}/ln3", f"{theirs}/LayerNorm3"),
                  **_mlp(f"{ours}/mlp", f"{theirs}/MLP")}
    return rules


def stage2_names(cfg: ModelConfig) -> dict[str, tuple[int, ...]]:
    """The names and shapes a released stage II file of ``cfg``'s sizes is expected to hold
    (inferred from big_vision's module code; module docstring)."""
    check_stage2_config(cfg)
    d, p, g = cfg.enc_width, cfg.patch_size, cfg.image_size // cfg.patch_size
    out = {"params/EmbedPatches/kernel": (p, p, 3, d), "params/EmbedPatches/bias": (d,),
           "params/pos_embedding_encoder": (1, g * g, d),
           "params/pos_embedding_decoder": (1, cfg.max_len, d),
           "params/encoder/encoder_norm/scale": (d,), "params/encoder/encoder_norm/bias": (d,),
           "params/decoder/EmbedTargets/embedding": (cfg.vocab_size, d),
           "params/decoder/LayerNorm/scale": (d,), "params/decoder/LayerNorm/bias": (d,),
           "params/decoder/LogitsDense/kernel": (d, cfg.vocab_size),
           "params/decoder/LogitsDense/bias": (cfg.vocab_size,)}
    for i in range(cfg.enc_depth):
        out |= _vit_block_names(f"params/encoder/encoderblock_{i}", d, cfg.enc_heads,
                                cfg.enc_mlp)
    for i in range(cfg.dec_depth):
        out |= _vit_block_names(f"params/decoder/EncDecBlock{i}", d, cfg.dec_heads, cfg.dec_mlp,
                                bias=False, lns=("LayerNorm1", "LayerNorm2", "LayerNorm3"),
                                attns=("SelfAttn", "CrossAttn"), mlp_name="MLP")
    return out


# ---------------------------------------------------------------------------------------------
# Converting and loading.


def _path(keys) -> str:
    """A state leaf's key path -> ``"a/0/b"`` (the variables' value attribute left out)."""
    parts = []
    for k in keys:
        if isinstance(k, jax.tree_util.GetAttrKey):
            continue  # ``.value`` of an nnx variable
        parts.append(str(getattr(k, "key", getattr(k, "idx", k))))
    return "/".join(parts)


def model_paths(model: nnx.Module) -> dict[str, Any]:
    """``{"a/0/b": leaf}`` of every array of ``model``'s state (abstract or real)."""
    return {_path(path): leaf
            for path, leaf in jax.tree_util.tree_leaves_with_path(nnx.state(model))}


def convert(rules: Mapping[str, Rule], released: Mapping[str, Any]) -> dict[str, Any]:
    """``{model path: array}`` for every rule whose released names are all present (pure:
    ``jax.eval_shape`` runs it on shapes)."""
    return {path: rule.fn(released) for path, rule in rules.items()
            if all(n in released for n in rule.names)}


def plan(rules: Mapping[str, Rule], released_shapes: Mapping[str, tuple[int, ...]],
         model_shapes: Mapping[str, tuple[int, ...]],
         expected: Mapping[str, tuple[int, ...]]) -> Report:
    """The :class:`Report` of loading a file of ``released_shapes`` into a model of
    ``model_shapes`` (path -> shape) by ``rules``; ``expected`` (name -> shape) gives the
    shape of a name the file lacks. Raises ValueError if a model path has no rule or a rule
    names no model path (a mapping that does not fit the model's config)."""
    unruled = sorted(set(model_shapes) - set(rules))
    stray = sorted(set(rules) - set(model_shapes))
    if unruled or stray:
        raise ValueError(f"the released mapping does not fit this model: model paths without "
                         f"a rule {unruled[:8]}, rules for no model path {stray[:8]}")
    used = {n for r in rules.values() for n in r.names}
    missing = sorted(n for n in used if n not in released_shapes)
    loaded = sorted(p for p, r in rules.items()
                    if r.names and all(n in released_shapes for n in r.names))
    return Report(loaded=tuple(loaded), zeroed=tuple(sorted(p for p, r in rules.items()
                                                            if not r.names)),
                  missing=tuple((n, tuple(expected.get(n, ()))) for n in missing),
                  unused=tuple((n, tuple(released_shapes[n]))
                               for n in sorted(set(released_shapes) - used)))


def load(model: nnx.Module, rules: Mapping[str, Rule], released: Mapping[str, Any],
         expected: Mapping[str, tuple[int, ...]], *, strict: bool = True) -> Report:
    """Writes the released arrays into ``model`` (in place) by ``rules`` and returns the
    :class:`Report`. ``strict``: a file with missing or unused names raises ValueError with
    the report, before anything is written. Every converted array must have its model
    parameter's shape (ValueError naming both); it is cast to the parameter's dtype."""
    released = _params_prefixed(released)
    state = nnx.state(model)
    current = model_paths(model)
    report = plan(rules, {n: np.shape(a) for n, a in released.items()},
                  {p: np.shape(a) for p, a in current.items()}, expected)
    if strict and not report.ok:
        raise ValueError("the released checkpoint does not match this model:\n"
                         + report.summary())
    arrays = convert(rules, released)
    bad = [(p, np.shape(a), np.shape(current[p])) for p, a in arrays.items()
           if np.shape(a) != np.shape(current[p])]
    if bad:
        raise ValueError("released arrays of the wrong shape (path, converted, model): "
                         + "; ".join(f"{p} {list(a)} vs {list(m)}" for p, a, m in bad[:8]))

    def replace(path, leaf):
        key = _path(path)
        return jnp.asarray(arrays[key], leaf.dtype) if key in arrays else leaf

    nnx.update(model, jax.tree_util.tree_map_with_path(replace, state))
    return report


def load_stage1(model: nnx.Module, released: Mapping[str, Any],
                target_names: Mapping[str, str] | None = None, *, strict: bool = True
                ) -> Report:
    """A released stage I file's arrays (:func:`read_npz`) into ``model`` (a VQVAE); panoptic's
    target names are the release's, colorization passes :data:`COLOR_TARGETS`."""
    cfg = model.cfg
    return load(model, stage1_rules(cfg, target_names), released,
                stage1_names(cfg, target_names), strict=strict)


def load_stage2(model: nnx.Module, released: Mapping[str, Any], *,
                input_range: tuple[float, float] = (0.0, 1.0), strict: bool = True) -> Report:
    """A released stage II file's arrays into ``model`` (an EncoderDecoder of the task's
    resolved config)."""
    cfg = model.cfg
    return load(model, stage2_rules(cfg, input_range=input_range), released,
                stage2_names(cfg), strict=strict)
