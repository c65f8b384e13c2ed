"""Starting a task's MLE from the shared scenes encoder (``model.encoder_init``,
docs/design.md §4.3).

The encoder is pretrained once (:mod:`rlcv_lib.tasks.scenes_encoder`) and shipped like any MLE
checkpoint (``checkpoints/scenes_encoder-<preset>``). :func:`initialise` copies its ``encoder``
weights into a freshly built encoder-decoder before MLE starts; the decoder keeps its random
initialisation and the pretraining heads are dropped. The encoder's manifest must record the
same encoder fields (:data:`ENCODER_FIELDS`) as the model it initialises: a mismatch is refused
naming the fields. What a model was initialised from is written into its run's workdir when
the run starts (:func:`start_run`) and copied from there into its shipped manifest, so a run
shipped after the encoder was re-shipped still names the encoder it started from.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from flax import nnx

from rlcv_lib.config import ConfigError
from rlcv_lib.core import checkpoint

ENCODER_FIELDS = ("image_size", "patch_size", "stem", "stem_depth", "stem_width", "enc_width",
                  "enc_depth", "enc_heads", "enc_mlp", "enc_pos")
"""The ``model`` fields that decide the encoder's architecture."""

ENCODER_TASK = "scenes_encoder"

RECORD = "encoder_init.json"
"""The file of a pretraining workdir that holds :func:`provenance` of the encoder it started
from."""


def configured(cfg: Any) -> bool:
    """Whether ``cfg`` has a ``model`` section whose ``encoder_init`` names an encoder."""
    return bool(getattr(cfg.sections.get("model"), "encoder_init", ""))


def encoder_path(cfg: Any) -> Path:
    """The checkpoint ``cfg.model.encoder_init`` names (``"shipped"``: the preset's)."""
    value = cfg.model.encoder_init
    if not value:
        raise ValueError("model.encoder_init is '' (random initialisation): no encoder to load")
    if value == "shipped":
        from rlcv_lib.core import shipped

        return shipped.shipped_path(ENCODER_TASK, cfg.preset)
    return Path(value)


def read(cfg: Any) -> tuple[Path, dict[str, Any]]:
    """(path, manifest) of the encoder ``cfg`` initialises from, checked against ``cfg.model``
    (ConfigError naming the differing fields; FileNotFoundError saying how to make it)."""
    path = encoder_path(cfg)
    if not (path / checkpoint.MANIFEST).exists():
        raise FileNotFoundError(
            f"model.encoder_init={cfg.model.encoder_init!r}: no shipped scenes encoder at "
            f"{path}. Make it with `python -m rlcv_lib pretrain {ENCODER_TASK} {cfg.preset}` "
            f"then `python -m rlcv_lib ship {ENCODER_TASK} {cfg.preset}`, or set "
            f"model.encoder_init='' to start from random weights")
    manifest = checkpoint.read_manifest(path)
    if manifest.get("task") != ENCODER_TASK:
        raise ConfigError(f"model.encoder_init: {path} holds a {manifest.get('task')!r} model, "
                          f"not a {ENCODER_TASK!r}")
    defaults = dataclasses.asdict(type(cfg.model)())  # a manifest omits added fields at default
    recorded = {**defaults, **manifest["config"]["model"]}
    diffs = [f"model.{f}: encoder {recorded[f]!r}, this model {getattr(cfg.model, f)!r}"
             for f in ENCODER_FIELDS if recorded[f] != getattr(cfg.model, f)]
    if diffs:
        raise ConfigError(f"model.encoder_init: the encoder at {path} has another architecture "
                          f"({'; '.join(diffs)})")
    return path, manifest


def initialise(model: nnx.Module, cfg: Any) -> dict[str, Any]:
    """Copies the encoder weights of ``cfg.model.encoder_init`` into ``model.encoder`` (an
    encoder-decoder of ``cfg.model``); returns :func:`provenance`."""
    from rlcv_lib.models.encdec import EncoderDecoder
    from rlcv_lib.tasks.scenes_encoder.task import ScenesEncoder, head_sizes

    if not isinstance(model, EncoderDecoder):
        raise ConfigError(f"model.encoder_init={cfg.model.encoder_init!r}: a "
                          f"{type(model).__name__} has no encoder to initialise")
    path, manifest = read(cfg)
    world = manifest["config"]["world"]
    sizes = head_sizes(len(world["thing_classes"]), len(world["stuff_classes"]))
    source = ScenesEncoder(cfg.model, sizes, rngs=nnx.Rngs(0))
    checkpoint.load_variables(path, source)
    nnx.update(model.encoder, nnx.state(source.encoder))
    return provenance(path, manifest)


def start_run(model: nnx.Module, cfg: Any, workdir: str | Path | None) -> dict[str, Any] | None:
    """Initialises ``model``'s encoder (when ``cfg`` names one) at the start of a pretraining
    run in ``workdir``; returns the run's :func:`provenance` (None without an encoder). A fresh
    run writes it to ``workdir/RECORD``; a resumed run (a checkpoint in ``workdir``, whose
    weights replace the encoder's) loads nothing and keeps the recorded one: that of the
    encoder it started from."""
    if not configured(cfg):
        return None
    ckpts = Path(workdir) / "checkpoints" if workdir is not None else None
    if ckpts is not None and ckpts.is_dir() and any(ckpts.iterdir()) and \
            (kept := recorded(workdir)):
        return kept
    start = initialise(model, cfg)
    return start if workdir is None else _record(workdir, start)


def recorded(workdir: str | Path) -> dict[str, Any] | None:
    """The provenance recorded in the pretraining workdir ``workdir`` (None if none is)."""
    record = Path(workdir) / RECORD
    return json.loads(record.read_text()) if record.exists() else None


def of_run(cfg: Any, workdir: str | Path) -> dict[str, Any] | None:
    """The encoder the pretraining run of ``cfg`` in ``workdir`` started from: as recorded at
    its start (a run older than the record: the encoder ``cfg`` names now; None: random)."""
    if not configured(cfg):
        return None
    return recorded(workdir) or provenance(encoder_path(cfg))


def _record(workdir: str | Path, start: dict[str, Any]) -> dict[str, Any]:
    Path(workdir).mkdir(parents=True, exist_ok=True)
    (Path(workdir) / RECORD).write_text(json.dumps(start, indent=1) + "\n")
    return start


def provenance(path: str | Path, manifest: dict[str, Any] | None = None) -> dict[str, Any]:
    """``{"path", "manifest_hash", "steps"}`` of the encoder checkpoint at ``path`` (relative
    to the repository when inside it; ``manifest`` its manifest when already read): what a
    shipped manifest records, as ``encoder_init``, of the encoder its model's MLE started
    from."""
    from rlcv_lib.core import shipped

    path = Path(path).absolute()
    manifest = checkpoint.read_manifest(path) if manifest is None else manifest
    where = path.relative_to(shipped.ROOT.parent) if path.is_relative_to(shipped.ROOT.parent) \
        else path
    return {"path": str(where), "manifest_hash": shipped.manifest_hash(path),
            "steps": manifest.get("steps")}
