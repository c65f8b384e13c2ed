"""Every task's ``paper`` preset builds its model and traces its MLE and RL steps abstractly
(``jax.eval_shape``: no paper-size array is ever allocated, nothing is compiled)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx

from rlcv_lib import tasks
from rlcv_lib.config import get_config
from rlcv_lib.core import optim, sampling, split_state, steps
from rlcv_lib.models import build_model

B, N = 2, 2  # images, samples per image
UVIM = ("colorization", "panoptic")
TUNED = [n for n in tasks.NAMES if tasks.get(n).tune is not None]


def paper_config(name):
    """The paper preset of ``name``; for UViM its world takes the model's image size (the
    scenes world is not what the paper preset reads, but the UViM tasks check the two agree)."""
    cfg = get_config("paper", task=name)
    if name in UVIM:
        cfg = cfg.override({"world.image_size": cfg.vqvae.image_size})
    return cfg


def paper_task(name, cfg):
    """The task of the paper preset, built cheaply (class weights from uniform counts; the
    caption vocabulary from a few training scenes)."""
    if name == "detection":
        from rlcv_lib.tasks.detection.task import DetectionTask

        return DetectionTask.for_world(cfg.detection, cfg.world,
                                       np.ones(len(cfg.world.thing_classes)))
    if name == "captioning":
        from rlcv_lib.data import memory
        from rlcv_lib.tasks.captioning.task import CaptioningTask

        refs = memory.load_split(cfg.world, "train", size=8).arrays["captions"]
        return CaptioningTask.from_references(np.asarray(refs).tolist(), cfg.captioning)
    if name in UVIM:  # stage II over an abstract paper-size stage I (never allocated)
        import importlib

        from rlcv_lib.models.vqvae import VQVAE

        frozen = nnx.eval_shape(lambda: VQVAE(cfg.vqvae, rngs=nnx.Rngs(0)))
        return importlib.import_module(f"rlcv_lib.tasks.{name}.pretrain").make_task(
            cfg, stage1_model=frozen)
    raise AssertionError(f"no paper task builder for {name!r}")


def host_batch(name, task, cfg):
    """What the task's reward reads, for B images (not paper-size: targets only)."""
    if name == "detection":
        m = cfg.world.max_objects
        boxes = np.tile(np.array([0.1, 0.1, 0.5, 0.5]), (B, m, 1))
        return {"boxes": boxes, "labels": np.zeros((B, m), np.int64)}
    return {"captions": np.array([["a red circle"] * 5] * B)}


def uvim_rewards(task, cfg):
    """UViM's reward: stage I's decoding of B·N code sequences traced at paper size, then the
    task's score on decoded outputs of the paper's channels at 8 × 8 pixels (real values)."""
    s, length = cfg.vqvae.image_size, task.max_len
    graphdef, state = nnx.split(task.frozen)
    out = jax.eval_shape(lambda st, codes, ctx: nnx.merge(graphdef, st).decode_codes(codes, ctx),
                         state, jax.ShapeDtypeStruct((B * N, length), jnp.int32),
                         jax.ShapeDtypeStruct((B * N, s, s, 3), jnp.float32))
    assert {k: v.shape for k, v in out.items()} == {
        t: (B * N, s, s, c) for t, c in cfg.vqvae.targets}
    small = {t: np.zeros((B * N, 8, 8, c), np.float32) for t, c in cfg.vqvae.targets}
    batch = {"context": np.zeros((B * N, 8, 8, 3), np.float32), **small}
    if "semantics" in small:
        q = 4
        batch |= {"gt_map": np.ones((B * N, 8, 8), np.int32),
                  "gt_category": np.full((B * N, q), 133, np.int32),
                  "gt_crowd": np.zeros((B * N, q), bool),
                  "gt_area": np.full((B * N, q), 64.0)}
    rewards = np.asarray(task.score(small, batch), np.float32).reshape(B, N)
    assert np.all(np.isfinite(rewards))
    return rewards, {}


@pytest.mark.parametrize("name", TUNED)
def test_paper_preset_builds_and_traces_its_steps(name):
    cfg = paper_config(name)
    task = paper_task(name, cfg)
    model, opt = nnx.eval_shape(lambda: (lambda m: (m, optim.make_optimizer(m, cfg.train)))(
        build_model(cfg.model, task, seed=0)))
    assert (model.cfg.vocab_size, model.cfg.max_len) == (task.vocab_size, task.max_len)
    graphdef, state = nnx.split((model, opt))
    s, L = model.cfg.image_size, task.max_len
    images = jax.ShapeDtypeStruct((B, s, s, 3), jnp.float32)

    def mle(state, images, tokens):  # the pure step fit runs, traced
        m, o = nnx.merge(graphdef, state)
        pure = steps.make_mle_step(task).functional(m, o)
        new, metrics = pure.step(pure.state, {"image": images, "tokens": tokens}, None)
        return metrics["loss"], new

    loss, new = jax.eval_shape(mle, state, images, jax.ShapeDtypeStruct((B, L), jnp.int32))
    assert loss.shape == () and len(new) == len(jax.tree.leaves(state))

    rl_step = steps.make_rl_step(task, cfg.rl)
    spec = steps.rl_spec(task, cfg.rl)
    out = jax.eval_shape(lambda st, x: sampling.sample(nnx.merge(graphdef, st)[0], x,
                                                       jax.random.key(0), spec), state, images)
    assert out.tokens.shape == (B, cfg.rl.num_samples, L)
    # the reward runs on the host (NumPy): real values on small dummy samples give its shapes
    if name in UVIM:
        rewards, aux = uvim_rewards(task, cfg)
    else:
        dummy = np.full((B, N, L), task.pad_id, np.int32)
        rewards, aux = task.reward(dummy, host_batch(name, task, cfg), task.frozen)
    aux = {k: jax.ShapeDtypeStruct(np.shape(v), jnp.asarray(v).dtype) for k, v in aux.items()
           if np.ndim(v) > 0}

    def rl_update(state, images, tokens, lengths, rewards, logp, aux):
        structure, leaves = split_state.split(nnx.merge(graphdef, state))
        update = rl_step.update(structure)
        greedy = rewards[:, 0] if cfg.rl.baseline == "greedy" else None
        return update(leaves, images, tokens, lengths, rewards, greedy, aux, logp, None)

    new, metrics = jax.eval_shape(
        rl_update, state, images, jax.ShapeDtypeStruct((B, N, L), jnp.int32),
        jax.ShapeDtypeStruct((B, N), jnp.int32), jax.ShapeDtypeStruct(rewards.shape, jnp.float32),
        jax.ShapeDtypeStruct((B, N, L), jnp.float32), aux)
    assert metrics["loss"].shape == () and len(new) == len(jax.tree.leaves(state))


@pytest.mark.parametrize("name", UVIM)
def test_uvim_paper_presets_hold_the_released_checkpoints(name):
    """The paper presets' stage I and stage II have the shapes of big_vision's released files
    (rlcv_lib/tasks/uvim/released.py: every name maps, nothing is left over)."""
    from rlcv_lib.models.encdec import EncoderDecoder
    from rlcv_lib.tasks.uvim import released

    cfg = paper_config(name)
    names = released.COLOR_TARGETS if name == "colorization" else None
    assert cfg.vqvae.targets == {"colorization": (("rgb", 3),),
                                 "panoptic": (("semantics", 134), ("instances", 100))}[name]
    task = paper_task(name, cfg)
    assert (task.vocab_size, task.max_len) == (4096 + 1, 256)
    for rules, expected, model in (
            (released.stage1_rules(cfg.vqvae, names), released.stage1_names(cfg.vqvae, names),
             task.frozen),
            (released.stage2_rules(m := cfg.model.resolve(task.vocab_size, task.max_len)),
             released.stage2_names(m),
             nnx.eval_shape(lambda: EncoderDecoder(m, rngs=nnx.Rngs(0))))):
        shapes = {p: tuple(a.shape) for p, a in released.model_paths(model).items()}
        assert released.plan(rules, expected, shapes, expected).ok
