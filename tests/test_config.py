"""ocrlib.config: typed sections, YAML files, presets, overrides, the one validator and its error format."""
from __future__ import annotations

import dataclasses
import re

import pytest
import yaml

from ocrlib.config import (DataConfig, DecodingConfig, RunConfig, TrainingConfig, load_config, make_section,
                           presets_of)
from ocrlib.errors import BadInput
from ocrlib.models import MODELS
from ocrlib.paths import CONFIGS_DIR
from ocrlib.profiles import PROFILES


def test_presets_and_overrides():
    default = load_config("satrn")
    assert set(default.to_dict()) == {"model", "data", "training", "decoding"} and default.name == "satrn"
    smoke = load_config("satrn", preset="smoke", overrides=["training.lr=3e-4", "data.width=null"])
    assert smoke.model.hidden == 32 and smoke.training.lr == 3e-4 and smoke.data.width is None
    assert smoke.model.decoder_layers == 1 and default.model.decoder_layers == 2
    as_dict = load_config("satrn", preset="smoke", overrides={"training.lr": 3e-4, "data.width": None})
    assert as_dict == smoke


@pytest.mark.parametrize("text, problem", [
    ("model: {name: satrn, hiddn: 8}\n", "unknown key 'model.hiddn'"),
    ("model: {name: satrn}\ntraining: {lrate: 0.1}\n", "unknown key 'training.lrate'"),
    ("model: {name: satrn, hidden: wide}\n", "'model.hidden' = 'wide' does not match int"),
    ("model: {name: satrn}\ndecoding: {beam: 2.5}\n", "'decoding.beam' = 2.5 does not match int"),
    ("model: {name: satrn}\ntraining: {optimizer: sgd}\n", "'training.optimizer' = 'sgd' does not match one of adam"),
    ("model: {name: satrn}\ntraining: {amp: 1}\n", "'training.amp' = 1 does not match bool"),
    ("model: {name: satrn}\ntraining: {betas: [0.9]}\n", "'training.betas' = [0.9] does not match"),
        ("model: {name: nope}\n", "model.name 'nope' is not a known model"),
    ("model: {name: satrn}\nextras: {}\n", "unknown section(s) extras"),
    ("model: [satrn\n", "invalid YAML"),
])
def test_bad_files_are_refused_naming_file_and_key(tmp_path, text, problem):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(BadInput) as err:
        load_config(path)
    assert str(err.value).startswith(str(path)) and problem in str(err.value)


def test_bad_overrides_and_presets_are_refused(tmp_path):
    with pytest.raises(BadInput, match="--set training.lrr=1: unknown key 'training.lrr'"):
        load_config("attention", overrides=["training.lrr=1"])
    with pytest.raises(BadInput, match="'model.cell' = 3"):
        load_config("attention", overrides=["model.cell=3"])
    with pytest.raises(BadInput, match="unknown preset 'tiny'; known: smoke, quick, full"):
        load_config("attention", preset="tiny")
    path = tmp_path / "bad_preset.yaml"
    path.write_text("model: {name: satrn}\npresets: {smoke: {model: {hidden: x}}}\n")
    with pytest.raises(BadInput, match=r"bad_preset.yaml: presets.smoke: 'model.hidden' = 'x'"):
        load_config(path, preset="smoke")


def test_keys_of_the_dataclasses_are_accepted_even_when_the_yaml_leaves_them_out(tmp_path):
    overrides = ["training.optimizer=adam", "data.synth_n=50", "training.betas=[0.9, 0.98]"]
    config = load_config("satrn", overrides=overrides)
    assert config.training.optimizer == "adam" and config.data.synth_n == 50 and config.training.betas == (0.9, 0.98)
    path = tmp_path / "lean.yaml"
    path.write_text("model: {name: attention, cell: gru}\n")
    assert load_config(path, overrides=["model.embed_dim=8"]).model.embed_dim == 8
    with pytest.raises(BadInput, match="'data.synth_n' = 'many'"):
        load_config("satrn", overrides=["data.synth_n=many"])


def test_user_yaml_merges_over_model_defaults(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: {name: attention, cell: gru}\ntraining: {lr: 0.01}\n")
    config = load_config(path, preset="smoke")
    assert config.model.cell == "gru" and config.model.hidden == 32 and config.training.lr == 0.01


def test_validator_coerces_yaml_lists_into_the_hinted_tuples():
    config = load_config("aster", overrides=["model.strides=[[2, 2], [2, 1], [2, 1], [2, 1], [2, 1]]"])
    assert config.model.strides == ((2, 2), (2, 1), (2, 1), (2, 1), (2, 1))
    assert config.model.rectified_size == (48, 256) and isinstance(config.model.channels, tuple)
    with pytest.raises(BadInput, match=r"'model.strides' = \[\[2\]\] does not match"):
        load_config("aster", overrides=["model.strides=[[2]]"])
    assert make_section(TrainingConfig, {"lr": 1}).lr == 1.0  # an int where a float is hinted
    with pytest.raises(BadInput, match="x.yaml: 'training.seed' = True does not match int"):
        make_section(TrainingConfig, {"seed": True}, "x.yaml", "training.")


def test_to_dict_and_from_dict_round_trip_through_yaml():
    for name in MODELS:
        for preset in [None, *presets_of(name)]:
            config = load_config(name, preset)
            text = yaml.safe_dump(config.to_dict())  # plain values only: safe_dump refuses tuples
            assert RunConfig.from_dict(yaml.safe_load(text)) == config


def test_gpu_preset_is_shared_and_scales_the_models_own_rate(tmp_path):
    """One `gpu` preset for every model: 4x the batch at sqrt(4) = 2x the peak rate of whatever config it lands on."""
    for name in MODELS:
        base, gpu = load_config(name), load_config(name, "gpu")
        assert gpu.training.batch_size == 128 and gpu.training.budget_min == 15.0, name
        assert gpu.training.lr == pytest.approx(base.training.lr * (128 / base.training.batch_size) ** 0.5), name
    assert load_config("srn", "gpu").training.lr == pytest.approx(1e-3)  # SRN's base rate is 5e-4
    mine = tmp_path / "mine.yaml"
    mine.write_text("model: {name: satrn}\ntraining: {lr: 4.0e-4, batch_size: 8}\n")
    assert load_config(mine, "gpu").training.lr == pytest.approx(4e-4 * 4)  # the user's rate, 16x the batch
    assert load_config(mine, "gpu", ["training.lr=1e-3"]).training.lr == 1e-3  # --set still wins
    custom = tmp_path / "custom.yaml"
    custom.write_text("model: {name: satrn}\npresets:\n  gpu: {training: {batch_size: 64}}\n")
    assert load_config(custom, "gpu").training.batch_size == 64  # a YAML's own preset of that name wins


def test_replace_validates_like_set():
    config = load_config("satrn", "smoke")
    assert config.replace({"training.seed": 3}).training.seed == 3 and config.training.seed == 0
    with pytest.raises(BadInput, match=r"training.sed=3: unknown key 'training.sed'"):
        config.replace({"training.sed": 3})


def test_every_yaml_key_is_a_field_of_a_section():
    """What a YAML holds is what the dataclasses declare (validated on load), so no YAML key is left unread;
    and the defaults live in one place, the dataclasses."""
    for path in sorted(CONFIGS_DIR.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        config = load_config(path)
        for section in ("data", "training", "decoding"):
            for key in raw.get(section) or {}:
                assert key in {f.name for f in dataclasses.fields(getattr(config, section))}, (path.name, key)
        assert set(raw) <= {"model", "data", "training", "decoding", "presets"}


def test_every_profile_names_a_preset_of_every_model():
    for profile in PROFILES.values():
        for name in MODELS:
            assert profile.preset in presets_of(name), (profile.name, name)


def test_one_error_format_file_then_problem(tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("model: {name: satrn}\ndata: {height: tall}\n")
    with pytest.raises(BadInput) as err:
        load_config(path)
    assert re.fullmatch(rf"{re.escape(str(path))}: 'data.height' = 'tall' does not match int", str(err.value))


def test_section_defaults_are_documented_with_a_comment():
    import inspect

    for cls in (DataConfig, TrainingConfig, DecodingConfig):
        source = inspect.getsource(cls)
        for f in dataclasses.fields(cls):
            line = next(l for l in source.splitlines() if l.strip().startswith(f"{f.name}:"))
            assert "#" in line, f"{cls.__name__}.{f.name} has no comment"
