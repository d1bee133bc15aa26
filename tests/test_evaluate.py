"""evaluate(): bookkeeping against a model with known answers; decoding options; eval and predict commands."""
import argparse
import json

import pytest
import torch
from torch import nn

from ocrlib.data.dataset import FormulaDataset
from ocrlib.decoding import DecodeResult
from ocrlib.errors import BadInput
from ocrlib.evaluate import cli_eval, cli_predict, evaluate
from ocrlib.tokens import Vocab

from helpers import save_tiny_checkpoint, write_dataset


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return write_dataset(tmp_path_factory.mktemp("eval") / "val", 8, seed=3)


@pytest.fixture(scope="module")
def vocab(folder):
    dataset = FormulaDataset(folder, Vocab([]), height=32, width=96)
    return Vocab.build(s.tokens for s in dataset.samples)


class LookupModel(nn.Module):
    """Answers from a table image bytes -> token list: the truth, except for the images listed in `wrong`."""

    def __init__(self, dataset, vocab, wrong: dict[int, list[str]]):
        super().__init__()
        self.anchor = nn.Parameter(torch.zeros(1))  # evaluate() reads the device from the parameters
        self.answers = {}
        for i, sample in enumerate(dataset.samples):
            tokens = wrong.get(i, sample.tokens)
            self.answers[dataset[i]["image"].numpy().tobytes()] = vocab.encode(tokens) + [vocab.eos_id]

    def decode(self, images, max_len=None, **options):
        rows = [self.answers[image.numpy().tobytes()] for image in images]
        width = max(map(len, rows))
        tokens = torch.tensor([row + [0] * (width - len(row)) for row in rows])
        return DecodeResult(tokens=tokens, scores=torch.zeros(len(rows)), attention=None)


def test_evaluate_counts_against_known_answers(folder, vocab):
    dataset = FormulaDataset(folder, vocab, height=32, width=96)
    truth = [s.tokens for s in dataset.samples]
    wrong = {0: truth[0][:-1], 3: truth[3] + ["x", "x", "x"]}  # 1 edit; 3 edits
    results, frame = evaluate(LookupModel(dataset, vocab, wrong), dataset, vocab, batch_size=3)
    assert results.n == 8 and results.correct == 6 and results.within1 == 7 and results.within2 == 7
    row0 = frame.set_index("path").loc[str(dataset.samples[0].image)]
    assert row0["edit_distance"] == 1 and not row0["correct"] and row0["gt"] == " ".join(truth[0])
    assert row0["wer"] == pytest.approx(1 / len(truth[0]))
    assert row0["source"] == "tex:cm" and row0["renderer"] == "tex" and row0["aspect"] == pytest.approx(3.0)
    assert set(frame["renderer"]) == {"tex", "mathtext"} and frame.attrs["n_skipped"] == 0
    expected_wer = (1 / len(truth[0]) + 3 / (len(truth[3]) + 3)) / 8
    assert results.wer == pytest.approx(expected_wer)


@pytest.fixture(scope="module")
def checkpoint(folder, vocab, tmp_path_factory):
    return save_tiny_checkpoint(folder, vocab, tmp_path_factory.mktemp("ckpt") / "model.pt")


def test_cli_predict_goes_on_past_a_bad_image(checkpoint, folder, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    good = sorted((folder / "images").glob("*.png"))[:2]
    args = argparse.Namespace(checkpoint=str(checkpoint[0]), inputs=[str(good[0]), str(bad), str(good[1])], beam=1)
    assert cli_predict(args) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(good[0]), str(good[1])]
    assert err.strip().count("\n") == 0 and err.startswith(f"error: {bad}: ")
    assert cli_predict(argparse.Namespace(checkpoint=str(checkpoint[0]), inputs=[str(bad)], beam=1)) == 2


def test_cli_eval_prints_tables_and_writes_json(checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "results.json"
    args = argparse.Namespace(checkpoint=str(checkpoint[0]), data=str(folder), beam=1, out=str(out), limit=None,
                              batch_size=4)
    assert cli_eval(args) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| data | n | SA | WER |") and "by renderer:" in printed
    payload = json.loads(out.read_text())
    assert payload["results"]["n"] == 8 and set(payload["breakdowns"]["renderer"]) == {"tex", "mathtext", "all"}


def test_cli_eval_limit_takes_the_first_samples(checkpoint, folder, tmp_path):
    out = tmp_path / "results.json"
    args = argparse.Namespace(checkpoint=str(checkpoint[0]), data=str(folder), beam=1, out=str(out), limit=3,
                              batch_size=32)
    assert cli_eval(args) == 0
    payload = json.loads(out.read_text())
    assert payload["results"]["n"] == 3 and payload["limit"] == 3


def test_evaluate_progress_goes_to_stderr(folder, vocab, capsys):
    dataset = FormulaDataset(folder, vocab, height=32, width=96)
    results, _ = evaluate(LookupModel(dataset, vocab, {}), dataset, vocab, batch_size=3, progress=True)
    out, err = capsys.readouterr()
    assert results.correct == 8 and out == "" and "evaluate:" in err and "batch" in err


def predict_args(checkpoint, inputs, fmt):
    return argparse.Namespace(checkpoint=str(checkpoint[0]), inputs=[str(p) for p in inputs], beam=1, format=fmt)


def test_cli_predict_jsonl_lines_parse(checkpoint, folder, capsys):
    from ocrlib.tokens import join

    good = sorted((folder / "images").glob("*.png"))[:2]
    assert cli_predict(predict_args(checkpoint, good, "jsonl")) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in records] == [str(p) for p in good]
    assert all(set(r) == {"path", "latex", "tokens"} and r["latex"] == join(r["tokens"]) for r in records)


def test_a_file_name_with_a_tab_is_refused_in_tsv_and_fine_in_jsonl(checkpoint, folder, tmp_path, capsys):
    good = sorted((folder / "images").glob("*.png"))[0]
    tabbed = tmp_path / "a\tb.png"
    tabbed.write_bytes(good.read_bytes())
    assert cli_predict(predict_args(checkpoint, [good, tabbed], "tsv")) == 1
    out, err = capsys.readouterr()
    assert [line.split("\t")[0] for line in out.splitlines()] == [str(good)]
    assert len(err.strip().splitlines()) == 1 and "a\\tb.png" in err and "--format jsonl" in err
    assert cli_predict(predict_args(checkpoint, [tabbed], "tsv")) == 2
    capsys.readouterr()

    assert cli_predict(predict_args(checkpoint, [tabbed], "jsonl")) == 0
    out, err = capsys.readouterr()
    assert json.loads(out)["path"] == str(tabbed) and err == ""
