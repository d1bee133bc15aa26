"""Checkpoint files: atomic writes, weights_only loading, clear errors, and the format version."""
import pytest
import torch

from ocrlib.checkpoints import FORMAT, load_checkpoint, read_checkpoint, save_checkpoint
from ocrlib.data.dataset import FormulaDataset
from ocrlib.errors import BadInput
from ocrlib.tokens import Vocab

from helpers import save_tiny_checkpoint, write_dataset


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("ckpt-data") / "val", 4, seed=3)


@pytest.fixture(scope="module")
def vocab(folder):
    return Vocab.build(s.tokens for s in FormulaDataset(folder, Vocab([]), height=32, width=96).samples)


@pytest.fixture(scope="module")
def checkpoint(folder, vocab, tmp_path_factory):
    return save_tiny_checkpoint(folder, vocab, tmp_path_factory.mktemp("ckpt") / "model.pt")


def test_atomic_checkpoint_survives_a_crash_mid_write(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint({"step": 1, "w": torch.ones(3)}, path)

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a zip")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint({"step": 2, "w": torch.zeros(3)}, path)
    monkeypatch.undo()
    state = read_checkpoint(path)
    assert state["step"] == 1 and torch.equal(state["w"], torch.ones(3))
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint.pt"]


def test_load_checkpoint_round_trip(checkpoint, folder, vocab):
    path, original = checkpoint
    model, loaded_vocab, config = load_checkpoint(path)
    assert loaded_vocab.tokens == vocab.tokens and config.name == "satrn" and not model.training
    images = FormulaDataset(folder, vocab, height=32, width=96)[0]["image"].unsqueeze(0)
    assert torch.equal(model.decode(images).tokens, original.decode(images).tokens)


class Payload:
    """Stands for any pickled object: unpickling it could run code."""


def test_checkpoint_with_pickled_object_is_refused(checkpoint, tmp_path):
    state = torch.load(checkpoint[0], weights_only=True)
    state["extra"] = Payload()
    torch.save(state, tmp_path / "evil.pt")
    with pytest.raises(BadInput, match="evil.pt: refused: .*pickled"):
        load_checkpoint(tmp_path / "evil.pt")


@pytest.mark.parametrize("content", [b"", b"not a checkpoint", "half"])
def test_corrupt_checkpoint_names_the_file(checkpoint, tmp_path, content):
    if content == "half":
        data = checkpoint[0].read_bytes()
        content = data[: len(data) // 2]
    (tmp_path / "bad.pt").write_bytes(content)
    with pytest.raises(BadInput, match=r"bad\.pt: corrupt"):
        load_checkpoint(tmp_path / "bad.pt")
    with pytest.raises(BadInput, match="no such checkpoint"):
        load_checkpoint(tmp_path / "missing.pt")


def test_format_1_files_load_and_an_unknown_format_is_refused_by_name(checkpoint, tmp_path):
    state = torch.load(checkpoint[0], weights_only=True)
    assert state["format"] == FORMAT
    del state["format"]  # written before the typed config: the same keys, no version
    torch.save(state, tmp_path / "v1.pt")
    assert load_checkpoint(tmp_path / "v1.pt")[2].name == "satrn"
    torch.save({**state, "format": 99}, tmp_path / "v99.pt")
    with pytest.raises(BadInput, match=r"v99\.pt: checkpoint format 99 is not one this ocrlib reads \(1, 2\)"):
        load_checkpoint(tmp_path / "v99.pt")


def test_a_config_with_unknown_keys_names_the_checkpoint(checkpoint, tmp_path):
    state = torch.load(checkpoint[0], weights_only=True)
    state["config"]["model"]["hidn"] = 3
    torch.save(state, tmp_path / "odd.pt")
    with pytest.raises(BadInput, match=r"odd\.pt: unknown key 'model.hidn'"):
        load_checkpoint(tmp_path / "odd.pt")


def test_export_writes_fp16_weights_that_load_and_decode_alike(checkpoint, folder, vocab, tmp_path, capsys):
    from ocrlib.cli import main

    path, original = checkpoint
    assert main(["export", "--checkpoint", str(path), "--out", str(tmp_path / "shipped.pt")]) == 0
    assert "MiB (fp16)" in capsys.readouterr().out
    state = read_checkpoint(tmp_path / "shipped.pt")
    assert "optimizer" not in state and "rng" not in state
    assert {v.dtype for v in state["model"].values() if v.is_floating_point()} == {torch.float16}
    model, _, _ = load_checkpoint(tmp_path / "shipped.pt")
    assert all(p.dtype == torch.float32 for p in model.parameters())  # cast back on load
    images = FormulaDataset(folder, vocab, height=32, width=96)[1]["image"].unsqueeze(0)
    assert torch.equal(model.decode(images).tokens, original.decode(images).tokens)
    assert (tmp_path / "shipped.pt").stat().st_size < 0.6 * path.stat().st_size


def test_without_checkpoint_predict_uses_the_shipped_model_or_says_there_is_none(checkpoint, folder, tmp_path,
                                                                                 monkeypatch, capsys):
    import ocrlib.pretrained
    from ocrlib.cli import main

    monkeypatch.setattr(ocrlib.pretrained, "WEIGHTS", tmp_path / "absent.pt")
    image = str(folder / "images" / "000.png")
    assert main(["predict", image]) == 2
    assert "no --checkpoint given and no shipped pretrained model" in capsys.readouterr().err
    monkeypatch.setattr(ocrlib.pretrained, "WEIGHTS", checkpoint[0])
    assert main(["predict", image]) == 0
    assert capsys.readouterr().out.startswith(image + "\t")
