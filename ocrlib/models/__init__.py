"""Model registry and YAML configs.

    MODELS                      name -> "module:Class" (imported on first use, so one missing or
                                broken model file does not break the others)
    create_model(name, vocab_size, **overrides)   overrides: max_len, pad_id, sos_id, eos_id, config fields
    load_config(name_or_path, profile=None, overrides=None) -> {"model", "data", "training", "decoding"}
    parameter_table(vocab_size) -> DataFrame; cli_models(args) prints it as markdown

Config format (ocrlib/configs/<name>.yaml): sections `model:` (name, max_len, then the fields of the
model's config dataclass), `data:`, `training:`, `decoding:`, and `profiles:` mapping a profile name
(smoke, quick, full, competition...) to partial sections merged over the defaults. A profile, a
user YAML (which names `model: name:`) or a `--set a.b=value` override may only set known keys:
those of the model's YAML, of its config dataclass (model:) and of the trainer's defaults
(ocrlib.train DATA_DEFAULTS / TRAINING_DEFAULTS), with a value of the same type as the default
(int accepted for float; null accepted anywhere, meaning "unset"); model fields are checked
against the dataclass annotations. Errors are BadInput naming the file and the key.
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
from pathlib import Path

import pandas as pd
import yaml

from ocrlib.errors import BadInput
from ocrlib.paths import CONFIGS_DIR

MODELS = {
    "satrn": "ocrlib.models.satrn:SATRN",
    "aster": "ocrlib.models.aster:ASTER",
    "attention": "ocrlib.models.attention:AttentionOCR",
    "srn": "ocrlib.models.srn:SRN",
    "cstr": "ocrlib.models.cstr:CSTR",
}
DEFAULT_MAX_LEN = 150  # longest target in tokens, eos included, when a config does not say
SECTIONS = ("model", "data", "training", "decoding")
COMPETITION_VOCAB = 245  # vocabulary size of the 2021 competition's tokens.txt


def model_class(name: str):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    module, cls = MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create_model(name: str, vocab_size: int, **overrides):
    """Build a registered model; overrides = max_len / pad_id / sos_id / eos_id / config fields."""
    max_len = overrides.pop("max_len", DEFAULT_MAX_LEN)
    return model_class(name)(vocab_size, max_len, **overrides)


# --------------------------------------------------------------------------- YAML configs


def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise BadInput(path, "invalid YAML: " + " ".join(str(err).split())) from None
    if not isinstance(data, dict):
        raise BadInput(path, "expected a mapping with sections " + ", ".join(SECTIONS))
    unknown = sorted(set(data) - set(SECTIONS) - {"profiles"})
    if unknown:
        raise BadInput(path, f"unknown section(s) {', '.join(unknown)}; expected {', '.join(SECTIONS)}, profiles")
    return data


def _same_type(value, default) -> bool:
    if value is None or default is None:
        return True
    if isinstance(default, bool) or isinstance(value, bool):
        return isinstance(value, bool) and isinstance(default, bool)
    if isinstance(default, float):
        return isinstance(value, (int, float))
    if isinstance(default, (list, tuple)):
        return isinstance(value, (list, tuple))
    return isinstance(value, type(default))


def _validate(update: dict, schema: dict, path: Path, where: str) -> None:
    """Every key of `update` must be in `schema`, with a value of the same type (recursively)."""
    for key, value in update.items():
        name = f"{where}.{key}" if where else key
        if key not in schema:
            raise BadInput(path, f"unknown key {name!r}; known: {', '.join(map(str, schema))}")
        if isinstance(schema[key], dict):
            if not isinstance(value, dict):
                raise BadInput(path, f"{name!r} must be a mapping")
            _validate(value, schema[key], path, name)
        elif not _same_type(value, schema[key]):
            raise BadInput(path, f"{name!r} = {value!r} has type {type(value).__name__}, "
                                 f"expected {type(schema[key]).__name__}")


def _deep_merge(base: dict, update: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        both_dicts = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _deep_merge(merged[key], value) if both_dicts else copy.deepcopy(value)
    return merged


def _trainer_defaults() -> dict:
    """data/training keys the trainer knows (with its defaults), so a YAML or --set may use them even
    where the model's YAML leaves them to the trainer's defaults."""
    from ocrlib.train import DATA_DEFAULTS, TRAINING_DEFAULTS

    return {"data": DATA_DEFAULTS, "training": TRAINING_DEFAULTS}


def _type_allows(value, annotation: str) -> bool:
    """Check a value against a dataclass annotation string such as 'int | None' or 'tuple'."""
    kinds = {"int": (int,), "float": (int, float), "bool": (bool,), "str": (str,), "tuple": (list, tuple),
             "list": (list, tuple), "None": (type(None),)}
    allowed = [kinds.get(part.strip()) for part in str(annotation).split("|")]
    if any(a is None for a in allowed):
        return True  # an annotation we do not model: leave it to the dataclass
    if isinstance(value, bool):
        return any(bool in a for a in allowed)
    return any(isinstance(value, a) for a in allowed)


def _model_fields(name: str) -> dict[str, str]:
    """Keys of a `model:` section and their annotations: name, max_len, the config dataclass fields."""
    fields = {"name": "str", "max_len": "int"}
    fields.update((f.name, f.type) for f in dataclasses.fields(model_class(name).Config))
    return fields


def _check_model_section(section: dict, path: Path) -> None:
    name = section.get("name")
    if name not in MODELS:
        raise BadInput(path, f"model.name {name!r} is not a known model ({', '.join(sorted(MODELS))})")
    fields = _model_fields(name)
    for key, value in section.items():
        if key not in fields:
            raise BadInput(path, f"unknown key 'model.{key}' for {name}; known: {', '.join(fields)}")
        if not _type_allows(value, fields[key]):
            raise BadInput(path, f"'model.{key}' = {value!r} does not match type {fields[key]}")


def _parse_override(item: str) -> tuple[list[str], object]:
    if "=" not in item:
        raise BadInput(f"--set {item}", "expected KEY=VALUE, e.g. training.lr=3e-4")
    key, text = item.split("=", 1)
    try:
        value = yaml.safe_load(text) if text.strip() else None
    except yaml.YAMLError:
        raise BadInput(f"--set {item}", "the value is not valid YAML") from None
    if isinstance(value, str):  # YAML 1.1 reads '3e-4' as a string
        try:
            value = float(value)
        except ValueError:
            pass  # a genuine string value
    return key.strip().split("."), value


def _override(item: str) -> dict:
    """'a.b=value' -> {"a": {"b": value}}."""
    keys, value = _parse_override(item)
    for key in reversed(keys):
        value = {key: value}
    return value


def config_path(name_or_path: str | Path) -> Path:
    """A model name's own YAML, or an existing YAML file."""
    candidate = Path(name_or_path)
    if candidate.suffix in (".yaml", ".yml") or candidate.is_file():
        if not candidate.is_file():
            raise BadInput(candidate, "no such config file")
        return candidate
    if str(name_or_path) not in MODELS:
        raise BadInput(str(name_or_path), f"not a config file nor a known model ({', '.join(sorted(MODELS))})")
    path = CONFIGS_DIR / f"{name_or_path}.yaml"
    if not path.is_file():
        raise BadInput(path, f"model {name_or_path!r} has no config file yet")
    return path


def load_config(name_or_path: str | Path, profile: str | None = None, overrides: list[str] | None = None) -> dict:
    """Defaults of the model's YAML <- user YAML (if a path) <- profile <- `a.b=value` overrides."""
    path = config_path(name_or_path)
    raw = _read_yaml(path)
    name = (raw.get("model") or {}).get("name")
    if name not in MODELS:
        raise BadInput(path, f"model.name {name!r} is not a known model ({', '.join(sorted(MODELS))})")
    defaults_path = config_path(name)
    defaults = raw if defaults_path.resolve() == path.resolve() else _read_yaml(defaults_path)
    config = {section: defaults.get(section) or {} for section in SECTIONS}
    trainer = _trainer_defaults()
    schema = {section: {**trainer.get(section, {}), **config[section]} for section in SECTIONS}
    schema["model"] = {**dict.fromkeys(_model_fields(name)), **config["model"]}  # types: _check_model_section
    profiles = dict(defaults.get("profiles") or {})
    layers = []  # (where the values come from, the partial config)
    if raw is not defaults:
        layers.append(("", {s: raw[s] for s in SECTIONS if s in raw}))
        profiles.update(raw.get("profiles") or {})
    if profile is not None:
        if profile not in profiles:
            raise BadInput(path, f"unknown profile {profile!r}; known: {', '.join(profiles) or 'none'}")
        layers.append((f"profiles.{profile}", profiles[profile]))
    layers += [(f"--set {item}", _override(item)) for item in overrides or []]
    for where, update in layers:
        try:
            _validate(update, schema, path, "")
        except BadInput as err:
            raise BadInput(path, f"{where}: {err.problem}" if where else err.problem) from None
        config = _deep_merge(config, update)
    _check_model_section(config["model"], path)
    return config


def model_from_config(config: dict, vocab_size: int, **ids):
    """create_model from a load_config() dict; ids: pad_id / sos_id / eos_id of the vocabulary."""
    fields = {k: v for k, v in config["model"].items() if k != "name"}
    return create_model(config["model"]["name"], vocab_size, **fields, **ids)


# --------------------------------------------------------------------------- parameter table


def parameter_table(vocab_size: int = COMPETITION_VOCAB) -> pd.DataFrame:
    """One row per registered model and config profile: parameter count and input size."""
    rows = []
    for name in MODELS:
        try:
            profiles = [None, *(_read_yaml(config_path(name)).get("profiles") or {})]
        except BadInput as err:
            rows.append(dict(model=name, profile="default", params=None, params_M=None, input=None, note=str(err)))
            continue
        for profile in profiles:
            row = dict(model=name, profile=profile or "default", params=None, params_M=None, input=None, note="")
            try:
                config = load_config(name, profile)
                params = model_from_config(config, vocab_size).num_parameters()
            except (BadInput, ImportError, ValueError) as err:
                row["note"] = f"{type(err).__name__}: {err}"
            else:
                data = config["data"]
                row.update(params=params, params_M=round(params / 1e6, 2),
                           input=f"{data.get('height')}x{data.get('width') or 'keep-aspect'}")
            rows.append(row)
    frame = pd.DataFrame(rows)
    frame["params"] = frame["params"].astype("Int64")  # missing models stay <NA>, counts stay integers
    return frame


def markdown_table(frame: pd.DataFrame) -> str:
    """A GitHub markdown table (pandas' to_markdown needs tabulate, which we do not ship)."""
    cells = [[("" if pd.isna(v) else str(v)) for v in row] for row in frame.itertuples(index=False)]
    lines = ["| " + " | ".join(map(str, frame.columns)) + " |", "|" + "---|" * len(frame.columns)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def cli_models(args) -> int:
    print(f"Parameters at vocabulary size {COMPETITION_VOCAB}:\n")
    print(markdown_table(parameter_table(COMPETITION_VOCAB)))
    return 0
