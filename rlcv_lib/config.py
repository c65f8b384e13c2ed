"""Presets: named, typed, documented configurations (docs/design.md §4).

A resolved configuration is a frozen :class:`Config` made of *sections*, one per part of the
package (``run``, ``world``, ``model``, ``train``, tasks, ...). Each section is a frozen
dataclass owned by the module that uses it, together with a table of its values per preset::

    # in rlcv_lib/data/scenes.py
    @dataclasses.dataclass(frozen=True)
    class WorldConfig:
        image_size: int = 64
        ...
    WORLD_PRESETS = {"smoke": WorldConfig(image_size=32), "cpu": WorldConfig(), ...}

and registered here in :data:`CORE_SECTIONS` (a task's own section: in its spec, see
:mod:`rlcv_lib.tasks`) by its import path. Sections are imported lazily, so a
missing optional dependency of one section never breaks the others.

The four presets:

* ``smoke``: seconds per notebook; what ``make test`` runs. Checks plumbing, not results.
* ``cpu``: the default of ``make reproduce`` and of every notebook; on a 2-core CPU each
  notebook shows a real reward-tuning gain on the scenes world, about an hour in all.
* ``gpu``: larger scenes and models for one GPU, minutes per task.
* ``paper``: the paper's settings on the real datasets, for users with data and accelerators.

Overrides use dotted names (``"model.num_layers"``) or, when unambiguous, bare field names;
an unknown preset, section or field raises an error that names it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib
import json
import types
import typing
from collections.abc import Mapping
from typing import Any

PRESETS: tuple[str, ...] = ("smoke", "cpu", "gpu", "paper")


@dataclasses.dataclass(frozen=True)
class RunConfig:
    """Settings shared by every notebook of a run."""

    seed: int = 0
    """Seed of everything random in a run (data order, initialisation, sampling)."""
    eval_examples: int = 1024
    """Validation/test examples scored per evaluation (the paper's reward tables use 1024)."""
    progress: bool = True
    """Show tqdm progress bars on long work."""
    from_scratch: bool = False
    """Retrain MLE models instead of starting from the shipped checkpoints (docs/design.md §4.2)."""


RUN_PRESETS: dict[str, RunConfig] = {
    "smoke": RunConfig(eval_examples=16),
    "cpu": RunConfig(eval_examples=1024),
    "gpu": RunConfig(eval_examples=5000),
    "paper": RunConfig(eval_examples=5000),
}

# section name -> (module, dataclass name, presets table name). Sections are imported lazily.
# Each task adds its own section, named after it, from its spec (rlcv_lib.tasks).
CORE_SECTIONS: dict[str, tuple[str, str, str]] = {
    "run": ("rlcv_lib.config", "RunConfig", "RUN_PRESETS"),
    "model": ("rlcv_lib.models", "ModelConfig", "MODEL_PRESETS"),
    "rl": ("rlcv_lib.core.reinforce", "RLConfig", "RL_PRESETS"),
    "world": ("rlcv_lib.data.scenes", "WorldConfig", "WORLD_PRESETS"),
    "train": ("rlcv_lib.core.train", "TrainConfig", "TRAIN_PRESETS"),  # MLE pretraining
    "tune": ("rlcv_lib.core.train", "TrainConfig", "TUNE_PRESETS"),  # reward tuning
    "vqvae": ("rlcv_lib.models.vqvae", "VQVAEConfig", "VQVAE_PRESETS"),  # UViM stage I model
    "stage1": ("rlcv_lib.core.train", "TrainConfig", "STAGE1_PRESETS"),  # UViM stage I training
}


def all_sections() -> dict[str, tuple[str, str, str]]:
    """Every section: the core ones, then one per task of :data:`rlcv_lib.tasks.NAMES`."""
    from rlcv_lib import tasks

    out = dict(CORE_SECTIONS)
    for name in tasks.NAMES:
        module, cls, table = tasks.get(name).section.split(":")
        out[name] = (module, cls, table)
    return out


TUNING = "tuning"
"""Metadata key of a field that only reward tuning and evaluation read (:func:`tuning_field`)."""


def tuning_field(default: Any) -> Any:
    """A task config field read only by reward tuning and evaluation (a validation size, the
    metric that chooses the checkpoint, ...). MLE does not depend on it, so it is left out of
    the hash a shipped MLE checkpoint is matched by (``Config.hash(mle_only=True)``)."""
    return dataclasses.field(default=default, metadata={TUNING: True})


ADDED = "added"
"""Metadata key of a field added after checkpoints were shipped (:func:`added_field`)."""


def added_field(default: Any) -> Any:
    """A field added to a section after checkpoints and caches were made with it. At its
    default it is left out of every hash (:func:`hashed_fields`), so a config that leaves it
    there keeps the hashes, shipped checkpoints and cache keys made before the field existed;
    its default must therefore keep the old behaviour exactly."""
    return dataclasses.field(default=default, metadata={ADDED: True})


def hashed_fields(section: Any) -> dict[str, Any]:
    """``{field: value}`` of a section dataclass as hashes see it: every field but the
    :func:`added_field` ones left at their default."""
    values = dataclasses.asdict(section)
    return {f.name: values[f.name] for f in dataclasses.fields(section)
            if not (f.metadata.get(ADDED) and values[f.name] == f.default)}


def mle_fields(section: Any) -> dict[str, Any]:
    """The fields of a section dataclass that MLE depends on (all but its tuning fields), as
    hashes see them (:func:`hashed_fields`)."""
    tuning = {f.name for f in dataclasses.fields(section) if f.metadata.get(TUNING)}
    return {k: v for k, v in hashed_fields(section).items() if k not in tuning}


class ConfigError(ValueError):
    """A preset, section or field that does not exist, or a value of the wrong type."""


@dataclasses.dataclass(frozen=True)
class Config:
    """A resolved configuration: ``preset`` plus one frozen dataclass per section."""

    preset: str
    sections: types.MappingProxyType
    task: str | None = None
    """The task it was resolved for (:func:`get_config`'s ``task``), if any."""

    def __getattr__(self, name: str) -> Any:
        sections = object.__getattribute__(self, "sections")
        if name in sections:
            return sections[name]
        raise AttributeError(f"config has no section {name!r}; sections: {sorted(sections)}")

    def replace(self, **sections: Any) -> Config:
        """A copy with the named sections replaced, e.g. ``cfg.replace(train=new_train)``."""
        unknown = set(sections) - set(self.sections)
        if unknown:
            raise ConfigError(f"config has no section(s) {sorted(unknown)}")
        return dataclasses.replace(
            self, sections=types.MappingProxyType({**self.sections, **sections}))

    def override(self, overrides: Mapping[str, Any]) -> Config:
        """A copy with ``overrides`` applied (dotted or unambiguous bare names, checked and
        coerced against each field's type, as :func:`get_config` does)."""
        resolved = dict(self.sections)
        changes: dict[str, dict[str, Any]] = {}
        for key, value in overrides.items():
            section, field = _split_key(key, resolved)
            f = next(f for f in dataclasses.fields(resolved[section]) if f.name == field)
            changes.setdefault(section, {})[field] = _coerce(type(resolved[section]), f, value,
                                                             key)
        for section, kv in changes.items():
            resolved[section] = dataclasses.replace(resolved[section], **kv)
        return dataclasses.replace(self, sections=types.MappingProxyType(resolved))

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset,
                **{k: dataclasses.asdict(v) for k, v in sorted(self.sections.items())}}

    def hash(self, *extra: Any, sections: tuple[str, ...] | None = None,
             mle_only: bool = False) -> str:
        """Short stable hash of (some) sections plus ``extra`` values, for cache keys;
        ``mle_only`` leaves out the tuning fields (:func:`tuning_field`)."""
        return hash_of(self.hashed(sections=sections, mle_only=mle_only), *extra)

    def hashed(self, *, sections: tuple[str, ...] | None = None,
               mle_only: bool = False) -> dict[str, Any]:
        """What :meth:`hash` covers: ``{section: {field: value}}`` (JSON-able)."""
        fields = mle_fields if mle_only else hashed_fields
        d = {"preset": self.preset,
             **{k: fields(v) for k, v in sorted(self.sections.items())}}
        if sections is not None:
            d = {k: d[k] for k in sections}
        return json.loads(json.dumps(d, default=str))


def hash_of(hashed: Mapping[str, Any], *extra: Any) -> str:
    """The hash :meth:`Config.hash` gives for the dict :meth:`Config.hashed` returned."""
    blob = json.dumps([hashed, list(extra)], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def differing_fields(old: Mapping[str, Any], new: Mapping[str, Any]) -> list[str]:
    """``"section.field: old -> new"`` for each field two :meth:`Config.hashed` dicts disagree
    on (a section or field only one has shows ``<absent>``)."""
    out = []
    for section in sorted(set(old) | set(new)):
        a, b = old.get(section, {}), new.get(section, {})
        if not isinstance(a, Mapping) or not isinstance(b, Mapping):
            if a != b:
                out.append(f"{section}: {a!r} -> {b!r}")
            continue
        for field in sorted(set(a) | set(b)):
            va, vb = a.get(field, "<absent>"), b.get(field, "<absent>")
            if va != vb:
                out.append(f"{section}.{field}: {va!r} -> {vb!r}")
    return out


def _section(name: str, task: str | None = None) -> tuple[type, Mapping[str, Any]]:
    module_name, cls_name, table_name = all_sections()[name]
    cls = getattr(importlib.import_module(module_name), cls_name)
    table = getattr(importlib.import_module(module_name), table_name)
    if task is not None:
        from rlcv_lib import tasks

        own = tasks.get(task).shared_presets.get(name)
        if own is not None:
            table = tasks.resolve(own)
    return cls, table


def _coerce(cls: type, field: dataclasses.Field, value: Any, where: str) -> Any:
    """Checks (and mildly converts) an override against the field's annotated type."""
    hint = typing.get_type_hints(cls).get(field.name, Any)
    origin = typing.get_origin(hint)
    if hint is Any:
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("true", "false", "1", "0"):
            return value.lower() in ("true", "1")
        raise ConfigError(f"{where} must be a bool, got {value!r}")
    if hint in (int, float, str):
        if isinstance(value, bool) and hint is not str:
            raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}")
        try:
            out = hint(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{where} must be {hint.__name__}, got {value!r}") from None
        if hint is int and isinstance(value, float) and out != value:
            raise ConfigError(f"{where} must be an int, got {value!r}")
        return out
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where} must be a sequence, got {value!r}")
        return tuple(value)
    if origin is typing.Literal:
        if value not in typing.get_args(hint):
            raise ConfigError(f"{where} must be one of {typing.get_args(hint)}, got {value!r}")
        return value
    return value  # Optional/Union and other hints: taken as given


def _split_key(key: str, sections: Mapping[str, Any]) -> tuple[str, str]:
    if "." in key:
        section, field = key.split(".", 1)
        if section not in sections:
            raise ConfigError(f"unknown config section {section!r} in override {key!r}; "
                              f"sections: {sorted(sections)}")
        names = {f.name for f in dataclasses.fields(sections[section])}
        if field not in names:
            raise ConfigError(f"unknown config field {key!r}; {section} fields: {sorted(names)}")
        return section, field
    owners = [s for s, v in sections.items() if key in {f.name for f in dataclasses.fields(v)}]
    if not owners:
        raise ConfigError(f"unknown config field {key!r} (in no section of {sorted(sections)})")
    if len(owners) > 1:
        raise ConfigError(f"config field {key!r} is ambiguous: it is in sections {owners}; "
                          f"write e.g. {owners[0]}.{key}")
    return owners[0], key


def get_config(preset: str = "cpu", overrides: Mapping[str, Any] | None = None,
               sections: tuple[str, ...] | None = None, task: str | None = None) -> Config:
    """Resolves a preset, with optional overrides, into a frozen :class:`Config`.

    Args:
      preset: one of :data:`PRESETS`.
      overrides: ``{"model.num_layers": 2, "seed": 1}``; dotted or unambiguous bare names.
      sections: the sections to resolve (default: all registered ones).
      task: resolve for this task (a name of :data:`rlcv_lib.tasks.NAMES`): shared sections
        for which the task declares its own presets (e.g. ``tune``) take the task's values.
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
    known = all_sections()
    if task is not None:
        from rlcv_lib import tasks

        if task not in tasks.NAMES:
            raise ConfigError(f"unknown task {task!r}; choose one of {list(tasks.NAMES)}")
    names = tuple(known) if sections is None else sections
    for name in names:
        if name not in known:
            raise ConfigError(f"unknown config section {name!r}; sections: {sorted(known)}")
    resolved: dict[str, Any] = {}
    for name in names:
        cls, table = _section(name, task)
        if preset not in table:
            raise ConfigError(f"section {name!r} has no values for preset {preset!r}")
        resolved[name] = table[preset]
    return Config(preset=preset, sections=types.MappingProxyType(resolved),
                  task=task).override(overrides or {})


def field_value(cfg: Config, key: str) -> Any:
    """The value of ``"section.field"`` in ``cfg``."""
    section, field = key.split(".", 1)
    return getattr(cfg.sections[section], field)


def require(cfg: Config, ok: bool, first: str, second: str, why: str) -> None:
    """Raises ConfigError naming the fields ``first`` and ``second`` (dotted) and their values
    unless ``ok``; ``why`` says what ties them."""
    if not ok:
        raise ConfigError(
            f"{first}={field_value(cfg, first)!r} contradicts {second}="
            f"{field_value(cfg, second)!r}: {why}")


def require_same_image_size(cfg: Config) -> None:
    """The model reads the scenes world's images as they are generated: ``model.image_size``
    must equal ``world.image_size`` (override both together)."""
    why = ("the model reads the world's images at their size; override both, e.g. "
           "{'world.image_size': 48, 'model.image_size': 48}")
    if cfg.preset == "paper":
        why += (" (the paper preset's model sizes are the paper's, for its real datasets; the "
                "scenes world is at most 512 px)")
    require(cfg, cfg.model.image_size == cfg.world.image_size, "model.image_size",
            "world.image_size", why)


def check_consistent(cfg: Config) -> None:
    """Refuses a config whose fields contradict each other, before anything runs: the rules of
    the task it was resolved for (its spec's ``check``). Raises ConfigError naming both fields.
    The notebooks' first cell and the command line call it; abstract tracing of the paper's
    model sizes (whose images are real data, not the scenes world) does not."""
    if cfg.task is None:
        return
    from rlcv_lib import tasks

    spec = tasks.get(cfg.task)
    if spec.check is not None:
        tasks.resolve(spec.check)(cfg)


def describe(cfg: Config) -> str:
    """A readable listing of a resolved config (what a notebook prints at the top)."""
    lines = [f"preset: {cfg.preset}"]
    for name, section in sorted(cfg.sections.items()):
        lines.append(f"[{name}]")
        lines += [f"  {k} = {v!r}" for k, v in dataclasses.asdict(section).items()]
    return "\n".join(lines)
