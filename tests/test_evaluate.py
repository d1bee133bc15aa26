"""evaluate(): bookkeeping against a model with known answers; decoding options; eval and predict commands."""
import dataclasses
import json

import pytest
import torch
from torch import nn

from ocrlib import evaluate as evaluate_module
from ocrlib.checkpoints import read_checkpoint, save_checkpoint
from ocrlib.cli import build_parser
from ocrlib.config import DecodingConfig, load_config
from ocrlib.data.dataset import FormulaDataset
from ocrlib.decoding import BracketConstraint, DecodeResult
from ocrlib.errors import BadInput
from ocrlib.evaluate import cli_eval, decoding_with, evaluate
from ocrlib.reader import cli_predict
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
        return DecodeResult(tokens=tokens, scores=torch.zeros(len(rows)), attention=None,
                            token_log_probs=torch.zeros(tokens.shape))


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


def eval_args(checkpoint, folder, *flags):
    """`eval` arguments as the command line parses them."""
    return build_parser().parse_args(["eval", "--checkpoint", str(checkpoint), "--data", str(folder), *flags])


def predict_args(checkpoint, inputs, fmt="tsv"):
    return build_parser().parse_args(["predict", "--checkpoint", str(checkpoint[0]), "--beam", "1",
                                      "--format", fmt, *map(str, inputs)])


def test_cli_predict_goes_on_past_a_bad_image(checkpoint, folder, tmp_path, capsys):
    bad = tmp_path / "broken.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    good = sorted((folder / "images").glob("*.png"))[:2]
    assert cli_predict(predict_args(checkpoint, [good[0], bad, good[1]])) == 1
    out, err = capsys.readouterr()
    lines = out.splitlines()
    assert [line.split("\t")[0] for line in lines] == [str(good[0]), str(good[1])]
    assert err.strip().count("\n") == 0 and err.startswith(f"error: {bad}: ")
    assert cli_predict(predict_args(checkpoint, [bad])) == 2


def test_cli_eval_prints_tables_and_writes_json(checkpoint, folder, tmp_path, capsys):
    out = tmp_path / "results.json"
    assert cli_eval(eval_args(checkpoint[0], folder, "--beam", "1", "--out", str(out), "--batch-size", "4")) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("| data | n | formulas | SA | SA_formulas | WER |") and "by renderer:" in printed
    assert "by length_bucket:\n\n| length_bucket | n | formulas | SA | SA_formulas |" in printed
    payload = json.loads(out.read_text())
    assert payload["results"]["n"] == 8 and set(payload["breakdowns"]["renderer"]) == {"tex", "mathtext", "all"}
    distinct = len({line.split("\t")[1] for line in (folder / "gt.txt").read_text().splitlines()})
    assert payload["results"]["formulas"] == distinct == payload["breakdowns"]["length_bucket"]["all"]["formulas"]
    assert "SA_formulas" in payload["results"] and "SA_formulas" in payload["breakdowns"]["length_bucket"]["1-10"]
    assert payload["ms_per_image"] > 0 and payload["batch_size"] == 4 and "ms per image at batch 4" in printed


def test_cli_eval_limit_takes_the_first_samples(checkpoint, folder, tmp_path):
    out = tmp_path / "results.json"
    assert cli_eval(eval_args(checkpoint[0], folder, "--beam", "1", "--out", str(out), "--limit", "3")) == 0
    payload = json.loads(out.read_text())
    assert payload["results"]["n"] == 3 and payload["limit"] == 3


def test_evaluate_progress_goes_to_stderr(folder, vocab, capsys):
    dataset = FormulaDataset(folder, vocab, height=32, width=96)
    results, _ = evaluate(LookupModel(dataset, vocab, {}), dataset, vocab, batch_size=3, progress=True)
    out, err = capsys.readouterr()
    assert results.correct == 8 and out == "" and "evaluate:" in err and "batch" in err


def test_cli_predict_jsonl_lines_parse(checkpoint, folder, capsys):
    from ocrlib.tokens import join

    good = sorted((folder / "images").glob("*.png"))[:2]
    assert cli_predict(predict_args(checkpoint, good, "jsonl")) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [r["path"] for r in records] == [str(p) for p in good]
    assert all(set(r) == {"path", "latex", "tokens", "confidence", "score", "complete",
                                "alternatives"} for r in records)
    for r in records:
        assert r["latex"] == join(r["tokens"]) and r["alternatives"] == []  # --beam 1: no other hypotheses
        assert len(r["confidence"]) == len(r["tokens"]) + r["complete"]  # the eos's own, when it ended
        assert all(0 < p <= 1 for p in r["confidence"])


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


@pytest.fixture(scope="module")
def run_config():
    """A config whose decoding differs from every default, so a flag that is ignored shows."""
    config = load_config("satrn", preset="smoke")
    return dataclasses.replace(config, decoding=DecodingConfig(beam=3, length_penalty=0.6, brackets=True))


def test_decoding_with_takes_each_flag_given_and_the_config_otherwise(run_config):
    assert decoding_with(run_config) == DecodingConfig(beam=3, length_penalty=0.6, brackets=True)
    assert decoding_with(run_config, beam=1) == DecodingConfig(beam=1, length_penalty=0.6, brackets=True)
    assert decoding_with(run_config, brackets=False) == DecodingConfig(beam=3, length_penalty=0.6, brackets=False)
    assert decoding_with(run_config, length_penalty=0.0) == DecodingConfig(beam=3, length_penalty=0.0, brackets=True)
    assert decoding_with(run_config, 5, False, 1.5) == DecodingConfig(beam=5, length_penalty=1.5, brackets=False)


@pytest.mark.parametrize("flags, named", [({"beam": 0}, "--beam"), ({"length_penalty": -0.1}, "--length-penalty"),
                                          ({"length_penalty": float("nan")}, "--length-penalty")])
def test_decoding_with_refuses_bad_flags_in_one_line(run_config, flags, named):
    with pytest.raises(BadInput) as err:
        decoding_with(run_config, **flags)
    assert str(err.value).startswith(f"{named}: must be at least ") and "\n" not in str(err.value)


@pytest.fixture
def decoded_with(monkeypatch):
    """The keyword arguments that evaluate() hands to Recognizer.decode, one dict per call of decode_options."""
    seen, real = [], evaluate_module.decode_options

    def spy(decoding, vocab):
        seen.append(real(decoding, vocab))
        return seen[-1]

    monkeypatch.setattr(evaluate_module, "decode_options", spy)
    return seen


def test_eval_bracket_and_length_penalty_flags_reach_the_decoder(checkpoint, folder, tmp_path, decoded_with, capsys):
    state = read_checkpoint(checkpoint[0])
    state["config"]["decoding"]["brackets"] = True
    brackets_on = tmp_path / "brackets.pt"
    save_checkpoint(state, brackets_on)
    out = tmp_path / "results.json"
    for path, flags, expected in [(checkpoint[0], ["--brackets"], True), (brackets_on, [], True),
                                  (brackets_on, ["--no-brackets"], False)]:
        assert cli_eval(eval_args(path, folder, *flags, "--length-penalty", "0.5", "--out", str(out))) == 0
        assert isinstance(decoded_with[-1]["constraints"], BracketConstraint) is expected
        assert decoded_with[-1]["length_penalty"] == 0.5
        assert json.loads(out.read_text())["decoding"] == {"beam": 1, "length_penalty": 0.5, "brackets": expected}
    assert len(decoded_with) == 3
    capsys.readouterr()
