"""The loader of big_vision's released UViM checkpoints (rlcv_lib/tasks/uvim/released.py).

Two kinds of check: at paper size, on abstract trees (``jax.eval_shape``, nothing allocated),
every expected released name maps onto every parameter of our models with the right shape; on a
narrow tree with real random values, our models after loading compute what the released
modules compute. The released forward passes below are written here from big_vision's module
code (``models/proj/uvim/vit.py``, ``vtt.py``, ``models/vit.py``: Flax's LayerNorm, multi-head
attention, GELU MLP, the patch layouts of the UViM tasks), in plain ``jax.numpy`` over the
released names, as the test's reference.
"""

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlcv_lib.models import MODEL_SIZES
from rlcv_lib.models.encdec import EncoderDecoder
from rlcv_lib.models.vqvae import VQVAE, VQVAE_SIZES, VQVAEConfig
from rlcv_lib.tasks.uvim import released

PANOPTIC_TARGETS = (("semantics", 134), ("instances", 100))


# ---------------------------------------------------------------------------------------------
# The released computation, written from big_vision's modules.


def ln(r, name, x):  # flax.linen.LayerNorm, epsilon 1e-6
    m = x.mean(-1, keepdims=True)
    v = ((x - m) ** 2).mean(-1, keepdims=True)
    return (x - m) / jnp.sqrt(v + 1e-6) * r[f"{name}/scale"] + r[f"{name}/bias"]


def dense(r, name, x):
    return x @ r[f"{name}/kernel"] + r.get(f"{name}/bias", 0.0)


def mha(r, name, xq, xkv, causal=False):  # MultiHeadDotProductAttention, kernels [D,H,K]
    def proj(n, x):
        return jnp.einsum("btd,dhk->bthk", x, r[f"{name}/{n}/kernel"]) + r.get(
            f"{name}/{n}/bias", 0.0)

    q, k, v = proj("query", xq), proj("key", xkv), proj("value", xkv)
    s = jnp.einsum("bqhk,bshk->bhqs", q, k) / np.sqrt(q.shape[-1])
    if causal:
        s = jnp.where(jnp.tril(jnp.ones(s.shape[-2:], bool)), s, -1e10)
    o = jnp.einsum("bhqs,bshk->bqhk", jax.nn.softmax(s, -1), v)
    return jnp.einsum("bqhk,hkd->bqd", o, r[f"{name}/out/kernel"]) + r.get(f"{name}/out/bias",
                                                                           0.0)


def mlp(r, name, x):  # vit.MlpBlock
    return dense(r, f"{name}/Dense_1", jax.nn.gelu(dense(r, f"{name}/Dense_0", x)))


def vit_encoder(r, prefix, x, depth):  # vit.Encoder of Encoder1DBlocks
    for i in range(depth):
        b = f"{prefix}/encoderblock_{i}"
        y = ln(r, f"{b}/LayerNorm_0", x)
        x = x + mha(r, f"{b}/MultiHeadDotProductAttention_0", y, y)
        x = x + mlp(r, f"{b}/MlpBlock_0", ln(r, f"{b}/LayerNorm_1", x))
    return ln(r, f"{prefix}/encoder_norm", x)


def to_patches(x, p):  # "b (hn hp) (wn wp) c -> b (hn wn) c (hp wp)": the UViM tasks' layout
    b, h, w, c = x.shape
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(b, (h // p) * (w // p), c, p * p)


def from_patches(x, p, g):  # the inverse
    b, _, c, _ = x.shape
    x = x.reshape(b, g, g, c, p, p).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(b, g * p, g * p, c)


def patch_conv(r, name, x, p):  # nn.Conv with kernel = strides = p, VALID
    b, h, w, c = x.shape
    x = x.reshape(b, h // p, p, w // p, p, c).transpose(0, 1, 3, 2, 4, 5)
    x = x.reshape(b, (h // p) * (w // p), p, p, c)
    return jnp.einsum("btijc,ijcd->btd", x, r[f"{name}/kernel"]) + r[f"{name}/bias"]


def resize(x, src, dst):
    b, _, d = x.shape
    return jax.image.resize(x.reshape(b, src, src, d), (b, dst, dst, d), "linear").reshape(
        b, dst * dst, d)


def stage1_reference(r, cfg, names, targets, ctx):
    """(codes [B,L], outputs {our target name: [B,H,W,C]}) of big_vision's UViM vit.Model."""
    p, g, l = cfg.patch_size, cfg.grid, cfg.code_grid
    x = sum(jnp.einsum("btcp,cpd->btd", to_patches(targets[t], p),
                       r[f"params/embedding_{names.get(t, t)}/kernel"])
            + r[f"params/embedding_{names.get(t, t)}/bias"] for t, _ in cfg.targets)
    x = x + patch_conv(r, "params/ctx_enc_embedding", ctx, p)
    x = vit_encoder(r, "params/encoder", x + r["params/pos_embedding_encoder"], cfg.enc_depth)
    z = jax.nn.standardize(dense(r, "params/encoder_head", resize(x, g, l)), axis=-1)
    e = r["state/dictionary"] / r["state/counts"][:, None]
    e = e / jnp.linalg.norm(e, axis=-1, keepdims=True)
    dist = jnp.sum(z * z, -1, keepdims=True) - 2 * z @ e.T + jnp.sum(e * e, -1)
    idx = jnp.argmin(dist, -1)
    y = resize(dense(r, "params/decoder_stem", e[idx]), l, g)
    y = y + patch_conv(r, "params/ctx_dec_embedding", ctx, p)
    y = vit_encoder(r, "params/decoder", y + r["params/pos_embedding_decoder"], cfg.dec_depth)
    out = {t: from_patches(jnp.einsum("btd,dcp->btcp", y, r[f"params/head_{names.get(t, t)}/"
                                                            "kernel"])
                           + r[f"params/head_{names.get(t, t)}/bias"], p, g)
           for t, _ in cfg.targets}
    return idx, out


def stage2_reference(r, cfg, images, tokens):
    """Teacher-forced logits of big_vision's UViM vtt.Model (images on [−1, 1])."""
    x = patch_conv(r, "params/EmbedPatches", images, cfg.patch_size)
    enc = vit_encoder(r, "params/encoder", x + r["params/pos_embedding_encoder"], cfg.enc_depth)
    y = jnp.pad(tokens, ((0, 0), (1, 0)))[:, :-1]  # shift_right with 0
    y = r["params/decoder/EmbedTargets/embedding"][y]
    y = y + r["params/pos_embedding_decoder"][:, :tokens.shape[1]]
    for i in range(cfg.dec_depth):
        b = f"params/decoder/EncDecBlock{i}"
        h = ln(r, f"{b}/LayerNorm1", y)
        y = y + mha(r, f"{b}/SelfAttn", h, h, causal=True)
        y = y + mha(r, f"{b}/CrossAttn", ln(r, f"{b}/LayerNorm2", y), enc)
        y = y + mlp(r, f"{b}/MLP", ln(r, f"{b}/LayerNorm3", y))
    return dense(r, "params/decoder/LogitsDense", ln(r, "params/decoder/LayerNorm", y))


# ---------------------------------------------------------------------------------------------
# Fixtures.


def random_tree(names, seed=0):
    """Real values for every expected name: LayerNorm scales near 1, counts positive."""
    rng = np.random.default_rng(seed)
    tree = {}
    for n, shape in names.items():
        if n.endswith("/scale"):
            a = 1 + 0.1 * rng.standard_normal(shape)
        elif n == "state/counts":
            a = rng.uniform(0.5, 2.0, shape)
        else:
            a = 0.3 * rng.standard_normal(shape)
        tree[n] = jnp.asarray(a, jnp.float32)
    return tree


NARROW_VQ = VQVAEConfig(image_size=16, patch_size=4, width=16, enc_depth=1, dec_depth=2,
                        heads=2, mlp=32, code_grid=2, codebook_size=8, codeword_dim=8,
                        targets=(("semantics", 5), ("instances", 4)))
NARROW_VTT = dataclasses.replace(MODEL_SIZES["tiny"], image_size=16, patch_size=4,
                                 enc_width=16, enc_depth=2, enc_heads=2, enc_mlp=32,
                                 dec_width=16, dec_depth=2, dec_heads=2, dec_mlp=32,
                                 vocab_size=9, max_len=4)


def shapes_of(model):
    return {p: tuple(a.shape) for p, a in released.model_paths(model).items()}


# ---------------------------------------------------------------------------------------------
# Paper size, abstract.


@pytest.mark.parametrize("targets,names", [((("rgb", 3),), released.COLOR_TARGETS),
                                           (PANOPTIC_TARGETS, None)],
                         ids=["colorization", "panoptic"])
def test_stage1_names_map_onto_the_paper_size_model(targets, names):
    cfg = dataclasses.replace(VQVAE_SIZES["uvim_color"], targets=targets)
    model = nnx.eval_shape(lambda: VQVAE(cfg, rngs=nnx.Rngs(0)))
    expected = released.stage1_names(cfg, names)
    assert expected["params/embedding_" + ("color" if names else "semantics") + "/kernel"] == (
        targets[0][1], 256, 768)
    assert expected["state/dictionary"] == (4096, 768)
    rules = released.stage1_rules(cfg, names)
    report = released.plan(rules, expected, shapes_of(model), expected)
    assert report.ok and not report.zeroed and len(report.loaded) == len(shapes_of(model))
    abstract = {n: jax.ShapeDtypeStruct(s, jnp.float32) for n, s in expected.items()}
    converted = jax.eval_shape(lambda r: released.convert(rules, r), abstract)
    assert {p: tuple(a.shape) for p, a in converted.items()} == shapes_of(model)


def test_stage2_names_map_onto_the_paper_size_model():
    cfg = MODEL_SIZES["vit_l16_pan256"].resolve(4096 + 1, 256)
    model = nnx.eval_shape(lambda: EncoderDecoder(cfg, rngs=nnx.Rngs(0)))
    expected = released.stage2_names(cfg)
    assert expected["params/decoder/EmbedTargets/embedding"] == (4097, 1024)
    assert expected["params/decoder/EncDecBlock23/SelfAttn/query/kernel"] == (1024, 16, 64)
    assert "params/decoder/EncDecBlock0/SelfAttn/query/bias" not in expected  # use_bias=False
    rules = released.stage2_rules(cfg)
    report = released.plan(rules, expected, shapes_of(model), expected)
    assert report.ok
    # the decoder's attention biases: 4 per attention, 2 attentions per block
    assert len(report.zeroed) == 24 * 2 * 4
    assert len(report.loaded) + len(report.zeroed) == len(shapes_of(model))
    abstract = {n: jax.ShapeDtypeStruct(s, jnp.float32) for n, s in expected.items()}
    converted = jax.eval_shape(lambda r: released.convert(rules, r), abstract)
    assert {p: tuple(a.shape) for p, a in converted.items()} == shapes_of(model)


# ---------------------------------------------------------------------------------------------
# Narrow, real values: our modules compute what the released ones do.


@pytest.mark.parametrize("cfg,names", [(NARROW_VQ, None),
                                       (dataclasses.replace(NARROW_VQ, targets=(("rgb", 3),)),
                                        released.COLOR_TARGETS)], ids=["panoptic", "colour"])
def test_loaded_stage1_computes_the_released_forward(cfg, names):
    r = random_tree(released.stage1_names(cfg, names))
    model = VQVAE(cfg, rngs=nnx.Rngs(1))
    report = released.load_stage1(model, r, names)
    assert report.ok and len(report.loaded) == len(shapes_of(model))
    rng = np.random.default_rng(2)
    s = cfg.image_size
    targets = {t: jnp.asarray(rng.standard_normal((3, s, s, c)), jnp.float32)
               for t, c in cfg.targets}
    ctx = jnp.asarray(rng.uniform(-1, 1, (3, s, s, 3)), jnp.float32)
    want_idx, want_out = stage1_reference(r, cfg, names or {}, targets, ctx)
    _, idx = model.quantize(model.encode(targets, ctx))
    np.testing.assert_array_equal(np.asarray(idx), np.asarray(want_idx))
    out = model.decode_codes(idx, ctx)
    for t, _ in cfg.targets:
        np.testing.assert_allclose(np.asarray(out[t]), np.asarray(want_out[t]), rtol=1e-4,
                                   atol=1e-4)


def test_loaded_stage2_computes_the_released_logits_from_images_on_0_1():
    r = random_tree(released.stage2_names(NARROW_VTT), seed=3)
    model = EncoderDecoder(NARROW_VTT, rngs=nnx.Rngs(1))
    report = released.load_stage2(model, r)
    assert report.ok and len(report.zeroed) == 2 * 2 * 4
    rng = np.random.default_rng(4)
    images = jnp.asarray(rng.uniform(0, 1, (2, 16, 16, 3)), jnp.float32)
    tokens = jnp.asarray(rng.integers(1, 9, (2, 4)), jnp.int32)
    want = stage2_reference(r, NARROW_VTT, images * 2 - 1, tokens)
    np.testing.assert_allclose(np.asarray(model(images, tokens)), np.asarray(want), rtol=1e-4,
                               atol=1e-4)


def test_a_file_of_bare_names_and_a_nested_tree_load_alike(tmp_path):
    r = random_tree(released.stage2_names(NARROW_VTT), seed=5)
    bare = {n.removeprefix("params/"): np.asarray(a) for n, a in r.items()}
    np.savez(tmp_path / "stage2.npz", **bare)
    read = released.read_npz(str(tmp_path / "stage2.npz"))
    assert set(read) == set(bare)
    nested: dict = {}
    for n, a in r.items():
        node = nested
        *parents, leaf = n.split("/")
        for k in parents:
            node = node.setdefault(k, {})
        node[leaf] = a
    a, b = (EncoderDecoder(NARROW_VTT, rngs=nnx.Rngs(i)) for i in (1, 2))
    assert released.load_stage2(a, read).ok and released.load_stage2(b, nested).ok
    for x, y in zip(jax.tree.leaves(nnx.state(a)), jax.tree.leaves(nnx.state(b)), strict=True):
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


# ---------------------------------------------------------------------------------------------
# What a mismatching file or config gets told.


def test_missing_and_unused_names_are_reported_with_their_shapes():
    names = released.stage1_names(NARROW_VQ)
    r = random_tree(names)
    del r["params/decoder/encoderblock_1/MlpBlock_0/Dense_0/kernel"]
    r["params/bottleneck_downsample"] = jnp.zeros((16, 4))
    model = VQVAE(NARROW_VQ, rngs=nnx.Rngs(0))
    before = np.asarray(model.enc_pos[...])
    with pytest.raises(ValueError) as err:
        released.load_stage1(model, r)
    msg = str(err.value)
    assert "missing params/decoder/encoderblock_1/MlpBlock_0/Dense_0/kernel [16, 32]" in msg
    assert "unused  params/bottleneck_downsample [16, 4]" in msg
    np.testing.assert_array_equal(np.asarray(model.enc_pos[...]), before)  # nothing written
    report = released.load_stage1(model, r, strict=False)
    assert [n for n, _ in report.missing] == [
        "params/decoder/encoderblock_1/MlpBlock_0/Dense_0/kernel"]
    assert "decoder/1/mlp/fc1/kernel" not in report.loaded
    np.testing.assert_allclose(np.asarray(model.enc_pos[...]),
                               np.asarray(r["params/pos_embedding_encoder"][0]))


def test_a_converted_array_of_the_wrong_shape_names_the_path():
    r = random_tree(released.stage1_names(NARROW_VQ))
    r["state/dictionary"] = jnp.zeros((9, 8))
    with pytest.raises(ValueError, match=r"sums \[9, 8\] vs \[8, 8\]"):
        released.load_stage1(VQVAE(NARROW_VQ, rngs=nnx.Rngs(0)), r)


@pytest.mark.parametrize("field,value,needs", [
    ("dec_depth", 1, "model.dec_depth=1 must equal model.enc_depth=2"),
    ("stem", "conv", "model.stem must be 'patch'"),
    ("enc_pos", "sincos", "model.enc_pos must be 'learned'")])
def test_a_stage2_config_the_release_cannot_fill_is_refused(field, value, needs):
    with pytest.raises(ValueError, match=needs):
        released.stage2_rules(dataclasses.replace(NARROW_VTT, **{field: value}))


def test_stage1_without_both_contexts_is_refused():
    with pytest.raises(ValueError, match="encoder_context and vqvae.decoder_context"):
        released.stage1_rules(dataclasses.replace(NARROW_VQ, decoder_context=False))
