"""Run configuration: typed sections, YAML loading, presets, `--set` overrides and one validator.

    config = load_config("satrn", preset="quick", overrides=["training.lr=3e-4"])  # or {"training.lr": 3e-4}
    config.model.hidden, config.data.height, config.training.lr, config.decoding.beam
    config.to_dict()                         # plain nested dict: config.yaml, checkpoints, run hashes
    RunConfig.from_dict(d, where="ckpt.pt")  # and back, validated

A config file (ocrlib/configs/<model>.yaml, or a user YAML that names `model: name:`) has the sections
`model:` (name + the fields of the model's config dataclass, e.g. SATRNConfig), `data:`, `training:`,
`decoding:`, and `presets:`, named partial configs (smoke, quick, full, competition, paper...) merged
over the defaults; SHARED_PRESETS (gpu) are offered to every model, derived from its settings (a YAML's own
preset of that name wins). Two words for two things: a *preset* is such a named partial config; a *profile*
(ocrlib.profiles) is the size of a report run: how much data, and which preset it trains.

Layers, each one validated before it is merged: the dataclass defaults <- the model's YAML <- a user
YAML <- the preset <- overrides. Every error is one line, `BadInput("<file>", "<where>: '<key>' <problem>")`.
"""
from __future__ import annotations

import copy
import dataclasses
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any, Literal

import yaml

from ocrlib.errors import BadInput
from ocrlib.models import MODELS, model_class  # the registry only: it imports no model module
from ocrlib.paths import CONFIGS_DIR

SECTIONS = ("model", "data", "training", "decoding")


# --------------------------------------------------------------------------- the typed sections
# Field types that model configs share (YAML lists are read into these tuples).
Ints = tuple[int, ...]  # e.g. stage widths
Size = tuple[int, int]  # (height, width)
Strides = tuple[tuple[int, int], ...]  # per stage (h, w)
Cell = Literal["lstm", "gru"]  # recurrent decoder cell

@dataclass
class ModelConfig:
    """Fields every recogniser has; each model's config dataclass (SATRNConfig, ...) extends it."""
    max_len: int = 150  # longest target in tokens, eos included (parallel models: number of output positions)
    in_channels: int = 1  # grayscale input


@dataclass
class DataConfig:
    train: str | tuple[str, ...] | None = None  # competition-layout folder(s) to train on; several are one set
    val: str | None = None  # ... and to validate on (formulas never seen in training)
    vocab: str | None = None  # tokens.txt; None = built from the training labels
    source: Literal["synth"] = "synth"  # without train/val: a small set rendered from the formula generator
    synth_n: int = 1000  # formulas generated for that set
    synth_seed: int = 0  # generator and render seed of that set
    renderer: Literal["mathtext", "tex", "ink", "screen"] = "mathtext"  # how that set is drawn
    val_fraction: float = 0.1  # share of its formulas (by formula hash) held out for validation
    height: int = 128  # model input height in pixels
    width: int | None = 128  # model input width; None = keep the aspect ratio (padded batches)
    max_width: int = 1024  # keep-aspect cap: wider images are squeezed to this width
    augment: Literal["none", "light", "competition", "heavy"] = "none"  # ocrlib.data.augment preset
    vertical_fix: bool = False  # rotate width/height < 0.75 by 90° (sideways photos); off by validation (docs/results.md)
    channels: int = 1  # image channels handed to the model (grayscale repeated)


@dataclass
class TrainingConfig:
    seed: int = 0  # data order, augmentation and initialisation
    max_steps: int = 1000  # optimiser steps (each over grad_accum micro-batches); with a budget, a cap
    budget_min: float | None = None  # wall-clock minutes over all sessions, setup included; None = steps only
    batch_size: int = 16  # per process
    grad_accum: int = 1  # micro-batches per optimiser step
    optimizer: Literal["adam", "adamw", "adadelta", "adamp"] = "adamw"  # Adadelta: the team's ASTER baseline
    lr: float = 3e-4  # peak learning rate
    weight_decay: float = 0.0  # decoupled for adamw / adamp, L2 for adam
    betas: tuple[float, float] = (0.9, 0.999)  # Adam-family momentum terms
    lr_schedule: Literal["constant", "cosine", "onecycle", "step"] = "cosine"  # ocrlib.optim.get_lr, over progress
    warmup_steps: int = 0  # linear warm-up (constant and cosine schedules)
    min_lr: float = 0.0  # cosine floor
    lr_step_size: int = 1000  # step schedule: multiply by lr_gamma every lr_step_size steps
    lr_gamma: float = 0.5  # ... by this factor
    grad_clip: float = 1.0  # max gradient norm after accumulation; 0 = off
    label_smoothing: float = 0.0  # cross-entropy target smoothing
    bracket_penalty: float = 0.0  # weight of ocrlib.losses.bracket_penalty; 0 = off
    tf_schedule: Literal["constant", "step", "linear"] = "linear"  # teacher forcing over training
    tf_ratio_start: float = 1.0  # linear: from tf_ratio_start to tf_ratio_end; constant: tf_ratio_start
    tf_ratio_end: float = 1.0  # parallel models (SRN, CSTR) have no decoder input: no effect
    tf_values: tuple[float, ...] = (0.5, 0.4, 0.3)  # step schedule, over equal parts of training (the team's)
    log_every: int = 10  # steps between metrics.jsonl lines
    eval_every: int = 200  # steps between validations (0: only at the end)
    checkpoint_every: int = 200  # steps between checkpoint.pt writes (and always at the end)
    val_samples: int = 500  # validation images used during training (0: all)
    amp: bool = True  # mixed precision on CUDA (bf16 when supported, else fp16); never on CPU
    num_workers: int = 0  # DataLoader workers
    device: str = "auto"  # auto | cpu | cuda | cuda:1 ...
    find_unused_parameters: bool = False  # DDP: for models with branches unused in some steps
    init_from: str | None = None  # fine-tune: start from this checkpoint's weights and vocabulary ("pretrained" = the shipped model)


@dataclass
class DecodingConfig:
    """How `eval`, `predict` and the notebooks decode by default (a command-line flag wins)."""
    beam: int = 1  # 1 = greedy
    length_penalty: float = 1.0  # beam ranking: sum log p / length ** length_penalty
    brackets: bool = False  # bracket-balance constraint (ocrlib.decoding.BracketConstraint)


@dataclass
class RunConfig:
    name: str  # registered model name (ocrlib.models.MODELS)
    model: ModelConfig  # that model's config dataclass
    data: DataConfig = field(default_factory=DataConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    decoding: DecodingConfig = field(default_factory=DecodingConfig)

    def to_dict(self) -> dict:
        """Plain values only (lists, not tuples): what config.yaml and checkpoints hold."""
        sections = {s: plain(dataclasses.asdict(getattr(self, s))) for s in SECTIONS}
        sections["model"] = {"name": self.name, **sections["model"]}
        return sections

    @classmethod
    def from_dict(cls, data: dict, where: str | Path = "config") -> RunConfig:
        """A to_dict() result (e.g. a checkpoint's) back into typed sections, validated."""
        return _build(data, where)

    def replace(self, overrides: dict[str, Any] | list[str], where: str | Path = "overrides") -> RunConfig:
        """A copy with `a.b=value` overrides applied and validated (what notebooks use instead of setting
        fields by hand)."""
        return _build(_merge_layers(self.to_dict(), _override_layers(overrides), where), where)


def plain(value):
    """Tuples -> lists, paths -> strings, recursively: JSON/YAML-safe values."""
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, PurePath):
        return str(value)
    return value


# --------------------------------------------------------------------------- the one validator
class _Mismatch(Exception):
    """A value that does not fit a type hint; the message says what was expected."""


def _describe(hint) -> str:
    if typing.get_origin(hint) is Literal:
        return "one of " + ", ".join(map(str, typing.get_args(hint)))
    return str(hint).replace("typing.", "").replace("NoneType", "None") if not isinstance(hint, type) else hint.__name__


def _coerce(value, hint):
    """`value` checked against a type hint (int | None, tuple[int, ...], Literal[...], ...); YAML lists become
    tuples where the hint says tuple. Raises _Mismatch."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin in (typing.Union, types.UnionType):
        for option in args:
            try:
                return _coerce(value, option)
            except _Mismatch:
                pass
        raise _Mismatch(_describe(hint))
    if origin is Literal:
        if value in args and not isinstance(value, bool):
            return value
        raise _Mismatch(_describe(hint))
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise _Mismatch(_describe(hint))
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if args and len(args) != len(value):
            raise _Mismatch(f"{_describe(hint)} ({len(args)} values)")
        return tuple(_coerce(v, a) for v, a in zip(value, args)) if args else tuple(value)
    if hint is type(None):
        if value is None:
            return None
        raise _Mismatch("None")
    if hint is float and isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if hint in (int, str, bool) and isinstance(value, hint) and not (hint is int and isinstance(value, bool)):
        return value
    raise _Mismatch(_describe(hint))


def make_section(cls: type, values: dict, where: str | Path = "config", prefix: str = ""):
    """Instantiate a section dataclass from a mapping: unknown keys and values of the wrong type are BadInput
    naming `where` and the key. Checks come from dataclasses.fields + typing.get_type_hints."""
    if not isinstance(values, dict):
        raise BadInput(where, f"'{prefix.rstrip('.')}' must be a mapping")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in dataclasses.fields(cls)]
    kwargs = {}
    for key, value in values.items():
        if key not in hints or key not in names:
            raise BadInput(where, f"unknown key '{prefix}{key}'; known: {', '.join(names)}")
        try:
            kwargs[key] = _coerce(value, hints[key])
        except _Mismatch as expected:
            raise BadInput(where, f"'{prefix}{key}' = {value!r} does not match {expected}") from None
    return cls(**kwargs)


# --------------------------------------------------------------------------- YAML files, presets, overrides
def _read_yaml(path: Path) -> dict:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        raise BadInput(path, "invalid YAML: " + " ".join(str(err).split())) from None
    if not isinstance(data, dict):
        raise BadInput(path, "expected a mapping with sections " + ", ".join(SECTIONS))
    unknown = sorted(set(data) - set(SECTIONS) - {"presets"})
    if unknown:
        raise BadInput(path, f"unknown section(s) {', '.join(unknown)}; expected {', '.join(SECTIONS)}, presets")
    return data


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


def parse_override(item: str) -> tuple[str, Any]:
    """'a.b=value' -> ('a.b', value), the value read as YAML ('3e-4' as a number, 'null' as None)."""
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
    return key.strip(), value


def _nested(key: str, value) -> dict:
    for part in reversed(key.split(".")):
        value = {part: value}
    return value


def _override_layers(overrides: dict[str, Any] | list[str] | None) -> list[tuple[str, dict]]:
    if isinstance(overrides, dict):
        return [(f"{key}={value!r}", _nested(key, value)) for key, value in overrides.items()]
    return [(f"--set {item}", _nested(*parse_override(item))) for item in overrides or []]


def _deep_merge(base: dict, update: dict) -> dict:
    merged = copy.deepcopy(base)
    for key, value in update.items():
        both_dicts = isinstance(value, dict) and isinstance(merged.get(key), dict)
        merged[key] = _deep_merge(merged[key], value) if both_dicts else copy.deepcopy(value)
    return merged


def _merge_layers(config: dict, layers: list[tuple[str, dict]], path) -> dict:
    """Merge each (where, partial) layer over `config`, validating the result after each so an error names the
    layer that brought the bad key."""
    for where, update in layers:
        if not isinstance(update, dict) or set(update) - set(SECTIONS):
            unknown = sorted(set(update) - set(SECTIONS)) if isinstance(update, dict) else update
            raise BadInput(path, f"{where}: unknown section(s) {unknown}; expected {', '.join(SECTIONS)}")
        merged = _deep_merge(config, update)
        try:
            _build(merged, path)
        except BadInput as err:
            raise BadInput(path, f"{where}: {err.problem}" if where else err.problem) from None
        config = merged
    return config


def _build(data: dict, where) -> RunConfig:
    unknown = sorted(set(data) - set(SECTIONS))
    if unknown:
        raise BadInput(where, f"unknown section(s) {', '.join(unknown)}; expected {', '.join(SECTIONS)}")
    model = dict(data.get("model") or {})
    name = model.pop("name", None)
    if name not in MODELS:
        raise BadInput(where, f"model.name {name!r} is not a known model ({', '.join(sorted(MODELS))})")
    return RunConfig(name, make_section(model_class(name).Config, model, where, "model."),
                     make_section(DataConfig, data.get("data") or {}, where, "data."),
                     make_section(TrainingConfig, data.get("training") or {}, where, "training."),
                     make_section(DecodingConfig, data.get("decoding") or {}, where, "decoding."))


# --------------------------------------------------------------------------- presets shared by all models
GPU_BATCH = 128


def gpu_preset(config: dict) -> dict:
    """15 minutes on one GPU under bf16 autocast (training.amp): batch GPU_BATCH at the model's peak learning rate
    scaled by the square root of the batch ratio (Adam; 4x the batch of 32 = 2x the rate), competition
    augmentation, 8 loader workers. `config` is the merged config below the preset, so a user YAML's rate scales too."""
    training = config.get("training") or {}
    batch = training.get("batch_size", TrainingConfig.batch_size)
    lr = float(training.get("lr", TrainingConfig.lr))
    return {"data": {"augment": "competition"},
            "training": {"batch_size": GPU_BATCH, "lr": lr * (GPU_BATCH / batch) ** 0.5, "max_steps": 20000,
                         "budget_min": 15.0, "eval_every": 250, "num_workers": 8}}


SHARED_PRESETS = {"gpu": gpu_preset}


def presets_of(name_or_path: str | Path) -> list[str]:
    """The preset names a config file (and its model's YAML) offers, the shared ones included."""
    raw = _read_yaml(config_path(name_or_path))
    name = (raw.get("model") or {}).get("name")
    defaults = _read_yaml(config_path(name)) if isinstance(name, str) else {}
    return list({**(defaults.get("presets") or {}), **(raw.get("presets") or {}), **dict.fromkeys(SHARED_PRESETS)})


def load_config(name_or_path: str | Path, preset: str | None = None,
                overrides: dict[str, Any] | list[str] | None = None) -> RunConfig:
    """Dataclass defaults <- the model's YAML <- a user YAML (when a path) <- preset <- overrides.

    overrides: ["training.lr=3e-4", ...] (as `--set`) or {"training.lr": 3e-4, ...}.
    """
    path = config_path(name_or_path)
    raw = _read_yaml(path)
    name = (raw.get("model") or {}).get("name")
    if name not in MODELS:
        raise BadInput(path, f"model.name {name!r} is not a known model ({', '.join(sorted(MODELS))})")
    defaults_path = config_path(name)
    defaults = raw if defaults_path.resolve() == path.resolve() else _read_yaml(defaults_path)
    presets = dict(defaults.get("presets") or {})
    config = {s: defaults[s] for s in SECTIONS if s in defaults}
    _build(config, defaults_path)  # the model's own YAML must be valid on its own
    if raw is not defaults:
        config = _merge_layers(config, [("", {s: raw[s] for s in SECTIONS if s in raw})], path)
        presets.update(raw.get("presets") or {})
    layers = []
    if preset is not None:
        if preset not in presets and preset in SHARED_PRESETS:
            presets[preset] = SHARED_PRESETS[preset](config)  # derived from everything below it
        if preset not in presets:
            raise BadInput(path, f"unknown preset {preset!r}; known: {', '.join(presets_of(name_or_path))}")
        layers.append((f"presets.{preset}", presets[preset]))
    layers += _override_layers(overrides)
    return _build(_merge_layers(config, layers, path), path)
