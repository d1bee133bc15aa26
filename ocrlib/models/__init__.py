"""The model registry: name -> recogniser class, imported on first use (a broken model file breaks only itself).

    create_model("satrn", vocab_size, max_len=20, hidden=64)   # fields of SATRNConfig as keywords
    model_from_config(config, vocab)                            # from an ocrlib.config.RunConfig

A sixth model is one file (a Recognizer subclass with a Config dataclass and `build`), one line here, and
one YAML in ocrlib/configs/. Configs: ocrlib.config; the parameter table: ocrlib.models.catalog.
"""
from __future__ import annotations

import importlib
from dataclasses import replace

MODELS = {
    "satrn": "ocrlib.models.satrn:SATRN",
    "aster": "ocrlib.models.aster:ASTER",
    "attention": "ocrlib.models.attention:AttentionOCR",
    "srn": "ocrlib.models.srn:SRN",
    "cstr": "ocrlib.models.cstr:CSTR",
}


def model_class(name: str):
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; known models: {', '.join(sorted(MODELS))}")
    module, cls = MODELS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def create_model(name: str, vocab_size: int, **fields):
    """A registered model; fields: its config dataclass fields (max_len, hidden, ...) and pad_id / sos_id / eos_id."""
    return model_class(name)(vocab_size, **fields)


def model_config(config):
    """The model section of an ocrlib.config.RunConfig with what it leaves to the data resolved: ASTER's TPS output
    keeps the aspect exactly when the inputs do (`rectify_keep_aspect: null`)."""
    if getattr(config.model, "rectify_keep_aspect", False) is None:
        return replace(config.model, rectify_keep_aspect=config.data.width is None)
    return config.model


def model_from_config(config, vocab):
    """The model of an ocrlib.config.RunConfig for a Vocab (its size and special ids)."""
    return model_class(config.name)(len(vocab), model_config(config), pad_id=vocab.pad_id, sos_id=vocab.sos_id,
                                    eos_id=vocab.eos_id)
