"""Presets: one mechanism, typed fields, errors that name what is wrong."""

import dataclasses
import types

import pytest

from rlcv_lib import config


def test_every_preset_resolves_every_section():
    for preset in config.PRESETS:
        cfg = config.get_config(preset)
        assert cfg.preset == preset
        assert set(cfg.sections) == set(config.all_sections())
        for name, section in cfg.sections.items():
            assert dataclasses.is_dataclass(section), name
            assert section.__dataclass_params__.frozen, f"section {name} must be frozen"


def test_every_section_field_is_documented():
    """Each field has a docstring line under it in its dataclass source (the preset docs)."""
    import inspect

    for name in config.all_sections():
        cls, _ = config._section(name)
        source = inspect.getsource(cls)
        for field in dataclasses.fields(cls):
            lines = source.splitlines()
            idx = next(i for i, ln in enumerate(lines) if ln.strip().startswith(f"{field.name}:"))
            nxt = lines[idx + 1].strip()
            assert nxt.startswith('"""'), f"{name}.{field.name} has no docstring under it"


def test_overrides_dotted_and_bare():
    cfg = config.get_config("cpu", {"run.seed": 3, "run.eval_examples": "64",
                                    "from_scratch": "true"})
    assert cfg.run.seed == 3
    assert cfg.run.eval_examples == 64  # coerced to the field's type
    assert cfg.run.from_scratch is True  # a bare name that only one section has
    assert config.get_config("cpu").run.seed == 0  # presets are not mutated


def test_unknown_preset_section_field_are_named():
    with pytest.raises(config.ConfigError, match="'cpux'"):
        config.get_config("cpux")
    with pytest.raises(config.ConfigError, match="'nosection'"):
        config.get_config("cpu", {"nosection.x": 1})
    with pytest.raises(config.ConfigError, match="'run.nofield'"):
        config.get_config("cpu", {"run.nofield": 1})
    with pytest.raises(config.ConfigError, match="'nofield'"):
        config.get_config("cpu", {"nofield": 1})


def test_wrong_types_are_refused():
    with pytest.raises(config.ConfigError, match="run.seed must be an int"):
        config.get_config("cpu", {"run.seed": 1.5})
    with pytest.raises(config.ConfigError, match="run.progress must be a bool"):
        config.get_config("cpu", {"run.progress": "maybe"})
    with pytest.raises(config.ConfigError, match="run.eval_examples must be int"):
        config.get_config("cpu", {"run.eval_examples": "many"})


def test_ambiguous_bare_name_is_refused():
    with pytest.raises(config.ConfigError, match="'eval_examples' is ambiguous"):
        config.get_config("cpu", {"eval_examples": 8})  # in `run` and `toy`


def test_hash_changes_with_any_field_and_is_stable():
    a = config.get_config("cpu")
    assert a.hash() == config.get_config("cpu").hash()
    assert a.hash() != config.get_config("cpu", {"run.seed": 1}).hash()
    assert a.hash() != config.get_config("smoke").hash()
    assert a.hash("world-v1") != a.hash("world-v2")
    assert a.hash(sections=("run",)) == config.get_config("cpu").hash(sections=("run",))


def test_describe_lists_every_field():
    text = config.describe(config.get_config("smoke"))
    assert "preset: smoke" in text and "eval_examples = 16" in text


def test_replace_swaps_whole_sections_and_names_unknown_ones():
    cfg = config.get_config("smoke")
    train = dataclasses.replace(cfg.train, lr=0.5)
    out = cfg.replace(train=train)
    assert out.train.lr == 0.5 and cfg.train.lr != 0.5 and out.world == cfg.world
    with pytest.raises(config.ConfigError, match="trian"):
        cfg.replace(trian=train)


def test_sections_are_the_core_ones_and_one_per_task():
    from rlcv_lib import tasks

    assert list(config.all_sections()) == [*config.CORE_SECTIONS, *tasks.NAMES]


def test_a_config_resolved_for_a_task_takes_its_own_shared_presets():
    det = config.get_config("cpu", task="detection")
    assert det.task == "detection" and config.get_config("cpu").task is None
    assert det.tune != config.get_config("cpu").tune  # detection brings its own `tune` values
    assert config.get_config("cpu", task="captioning").tune == config.get_config("cpu").tune
    assert config.get_config("cpu", {"tune.lr": 3e-5}, task="detection").tune.lr == 3e-5
    with pytest.raises(config.ConfigError, match="unknown task 'nope'"):
        config.get_config("cpu", task="nope")


def test_override_coerces_and_keeps_the_rest():
    cfg = config.get_config("smoke")
    scst = cfg.override({"rl.baseline": "greedy", "tune.lr": "0.5"})
    assert scst.rl.baseline == "greedy" and scst.tune.lr == 0.5 and cfg.rl.baseline == "loo"
    assert scst.train == cfg.train and scst.rl.num_samples == cfg.rl.num_samples
    with pytest.raises(config.ConfigError, match="unknown config field 'rl.nope'"):
        cfg.override({"rl.nope": 1})


def test_tuning_fields_stay_out_of_the_mle_hash():
    cfg = config.get_config("cpu", task="detection")
    knobs = cfg.override({"detection.val_size": 3, "detection.conf_lr_mult": 2.0})
    sections = ("model", "world", "train", "detection")
    assert knobs.hash(sections=sections) != cfg.hash(sections=sections)
    assert knobs.hash(sections=sections, mle_only=True) == cfg.hash(sections=sections,
                                                                      mle_only=True)
    other = cfg.override({"detection.num_slots": 9})
    assert other.hash(sections=sections, mle_only=True) != cfg.hash(sections=sections,
                                                                      mle_only=True)
    assert "val_size" not in config.mle_fields(cfg.detection)
    assert "num_slots" in config.mle_fields(cfg.detection)


def test_hashed_is_what_the_hash_covers_and_differing_fields_names_them():
    cfg = config.get_config("cpu", task="detection")
    other = cfg.override({"model.dec_depth": 3, "detection.num_slots": 9})
    sections = ("model", "detection")
    for c in (cfg, other):
        assert config.hash_of(c.hashed(sections=sections, mle_only=True)) == c.hash(
            sections=sections, mle_only=True)
    diff = config.differing_fields(cfg.hashed(sections=sections),
                                   other.hashed(sections=sections))
    assert diff == ["detection.num_slots: 6 -> 9", "model.dec_depth: 2 -> 3"]
    assert config.differing_fields({"a": {"x": 1}}, {"b": {"x": 1}}) == [
        "a.x: 1 -> '<absent>'", "b.x: '<absent>' -> 1"]


def test_check_consistent_names_both_fields():
    cfg = config.get_config("smoke", {"world.image_size": 48}, task="captioning")
    with pytest.raises(config.ConfigError,
                       match=r"model.image_size=32 contradicts world.image_size=48"):
        config.check_consistent(cfg)
    config.check_consistent(cfg.override({"model.image_size": 48}))
    config.check_consistent(config.get_config("smoke", {"world.image_size": 48}))  # no task
    config.check_consistent(config.get_config("smoke", task="toy"))  # the toy has no world


def test_an_added_field_at_its_default_keeps_the_hashes_made_before_it():
    @dataclasses.dataclass(frozen=True)
    class Before:
        size: int = 3

    @dataclasses.dataclass(frozen=True)
    class After:
        size: int = 3
        vivid: bool = config.added_field(False)

    def cfg(section):
        return config.Config("cpu", types.MappingProxyType({"world": section}))

    assert cfg(After()).hash() == cfg(Before()).hash()
    assert cfg(After()).hash(mle_only=True) == cfg(Before()).hash(mle_only=True)
    assert cfg(After(vivid=True)).hash() != cfg(Before()).hash()
    assert config.hashed_fields(After(vivid=True)) == {"size": 3, "vivid": True}
