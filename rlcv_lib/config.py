"""Presets: named, typed, documented configurations (DESIGN §4).

A resolved configuration is a frozen :class:`Config` made of *sections*, one per part of the
package (``run``, ``world``, ``model``, ``train``, tasks, ...). Each section is a frozen
dataclass owned by the module that uses it, together with a table of its values per preset::

    # in rlcv_lib/data/scenes.py
    @dataclasses.dataclass(frozen=True)
    class WorldConfig:
        image_size: int = 64
        ...
    WORLD_PRESETS = {"smoke": WorldConfig(image_size=32), "cpu": WorldConfig(), ...}

and registered here in :data:`SECTIONS` by its import path. Sections are imported lazily, so a
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
    """Retrain MLE models instead of starting from the shipped checkpoints (DESIGN §4)."""


RUN_PRESETS: dict[str, RunConfig] = {
    "smoke": RunConfig(eval_examples=16),
    "cpu": RunConfig(eval_examples=1024),
    "gpu": RunConfig(eval_examples=5000),
    "paper": RunConfig(eval_examples=5000),
}

# section name -> (module, dataclass name, presets table name). Sections are imported lazily.
SECTIONS: dict[str, tuple[str, str, str]] = {
    "run": ("rlcv_lib.config", "RunConfig", "RUN_PRESETS"),
    "model": ("rlcv_lib.models", "ModelConfig", "MODEL_PRESETS"),
    "rl": ("rlcv_lib.reinforce", "RLConfig", "RL_PRESETS"),
    "world": ("rlcv_lib.data.scenes", "WorldConfig", "WORLD_PRESETS"),
    "train": ("rlcv_lib.train", "TrainConfig", "TRAIN_PRESETS"),  # MLE pretraining
    "tune": ("rlcv_lib.train", "TrainConfig", "TUNE_PRESETS"),  # reward tuning
    "detection": ("rlcv_lib.tasks.detection", "DetectionConfig", "DETECTION_PRESETS"),
    "captioning": ("rlcv_lib.tasks.captioning", "CaptioningConfig", "CAPTIONING_PRESETS"),
    "toy": ("rlcv_lib.toy_experiment", "ToyConfig", "TOY_PRESETS"),
}


class ConfigError(ValueError):
    """A preset, section or field that does not exist, or a value of the wrong type."""


@dataclasses.dataclass(frozen=True)
class Config:
    """A resolved configuration: ``preset`` plus one frozen dataclass per section."""

    preset: str
    sections: types.MappingProxyType

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

    def to_dict(self) -> dict[str, Any]:
        return {"preset": self.preset,
                **{k: dataclasses.asdict(v) for k, v in sorted(self.sections.items())}}

    def hash(self, *extra: Any, sections: tuple[str, ...] | None = None) -> str:
        """Short stable hash of (some) sections plus ``extra`` values, for cache keys."""
        d = self.to_dict()
        if sections is not None:
            d = {k: d[k] for k in sections}
        blob = json.dumps([d, list(extra)], sort_keys=True, default=str)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _section(name: str) -> tuple[type, Mapping[str, Any]]:
    module_name, cls_name, table_name = SECTIONS[name]
    module = importlib.import_module(module_name)
    return getattr(module, cls_name), getattr(module, table_name)


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
               sections: tuple[str, ...] | None = None) -> Config:
    """Resolves a preset, with optional overrides, into a frozen :class:`Config`.

    Args:
      preset: one of :data:`PRESETS`.
      overrides: ``{"model.num_layers": 2, "seed": 1}``; dotted or unambiguous bare names.
      sections: the sections to resolve (default: all registered ones).
    """
    if preset not in PRESETS:
        raise ConfigError(f"unknown preset {preset!r}; choose one of {list(PRESETS)}")
    names = tuple(SECTIONS) if sections is None else sections
    for name in names:
        if name not in SECTIONS:
            raise ConfigError(f"unknown config section {name!r}; sections: {sorted(SECTIONS)}")
    resolved: dict[str, Any] = {}
    for name in names:
        cls, table = _section(name)
        if preset not in table:
            raise ConfigError(f"section {name!r} has no values for preset {preset!r}")
        resolved[name] = table[preset]
    changes: dict[str, dict[str, Any]] = {}
    for key, value in (overrides or {}).items():
        section, field = _split_key(key, resolved)
        f = next(f for f in dataclasses.fields(resolved[section]) if f.name == field)
        changes.setdefault(section, {})[field] = _coerce(type(resolved[section]), f, value, key)
    for section, kv in changes.items():
        resolved[section] = dataclasses.replace(resolved[section], **kv)
    return Config(preset=preset, sections=types.MappingProxyType(resolved))


def describe(cfg: Config) -> str:
    """A readable listing of a resolved config (what a notebook prints at the top)."""
    lines = [f"preset: {cfg.preset}"]
    for name, section in sorted(cfg.sections.items()):
        lines.append(f"[{name}]")
        lines += [f"  {k} = {v!r}" for k, v in dataclasses.asdict(section).items()]
    return "\n".join(lines)
