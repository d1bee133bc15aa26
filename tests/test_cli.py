"""`ocrlib` / `python -m ocrlib`: every command has help; bad input ends with one line naming the file and exit status 2."""
import subprocess
import sys
from pathlib import Path

import pytest

from ocrlib.cli import COMMANDS, build_parser, main, prog_name
from ocrlib.paths import PROJECT_ROOT


def test_the_module_entry_point_lists_every_command():
    out = subprocess.run([sys.executable, "-m", "ocrlib", "--help"], capture_output=True, text=True,
                         cwd=PROJECT_ROOT, check=True).stdout
    assert all(name in out for name in COMMANDS)
    assert out.startswith("usage: python -m ocrlib ")


def test_the_console_script_names_itself_and_prints_its_version():
    from importlib.metadata import version

    script = Path(sys.executable).parent / "ocrlib"
    if not script.exists():
        pytest.skip(f"no console script beside {sys.executable} (ocrlib is not pip-installed here)")
    done = subprocess.run([str(script), "--version"], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == f"ocrlib {version('ocrlib')}"
    usage = subprocess.run([str(script), "--help"], capture_output=True, text=True, check=True).stdout
    assert usage.startswith("usage: ocrlib ")


def test_prog_follows_how_it_was_invoked():
    assert prog_name("/x/.venv/bin/ocrlib") == "ocrlib" and prog_name("/x/Scripts/ocrlib.exe") == "ocrlib"
    assert prog_name("/x/ocrlib/__main__.py") == "python -m ocrlib"


def test_report_without_the_notebooks_extra_says_what_to_install(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "nbformat", None)  # as if not installed
    monkeypatch.delitem(sys.modules, "ocrlib.reports", raising=False)
    assert main(["report", "--only", "none"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nbformat" in err and "pip install 'ocrlib[notebooks]'" in err


@pytest.mark.parametrize("command", sorted(COMMANDS))
def test_every_command_has_help(command, capsys):
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


def test_a_missing_checkpoint_is_one_line_and_exit_2(tmp_path, capsys):
    missing = tmp_path / "nope.pt"
    assert main(["eval", "--checkpoint", str(missing), "--data", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and str(missing) in err


def test_a_config_with_an_unknown_key_is_refused_with_exit_2(tmp_path, capsys):
    config = tmp_path / "bad.yaml"
    config.write_text("model:\n  name: satrn\n  hiden: 12\n")
    assert main(["train", "--config", str(config), "--run-dir", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err.strip()
    assert str(config) in err and "hiden" in err
    assert not (tmp_path / "run").exists(), "nothing is written for a refused config"


@pytest.mark.parametrize("command", ["eval --data d", "predict image.png"])
def test_eval_and_predict_take_the_decoding_flags(command, capsys):
    def parse(*flags):
        return build_parser().parse_args([*command.split(), "--checkpoint", "c.pt", *flags])

    unset = parse()
    assert (unset.beam, unset.brackets, unset.length_penalty) == (None, None, None)  # None: the checkpoint's
    given = parse("--beam", "4", "--brackets", "--length-penalty", "0.7")
    assert (given.beam, given.brackets, given.length_penalty) == (4, True, 0.7)
    assert parse("--no-brackets").brackets is False
    with pytest.raises(SystemExit) as exit_info:
        parse("--length-penalty", "long")
    assert exit_info.value.code == 2 and "--length-penalty" in capsys.readouterr().err


def test_eval_reads_an_inkml_folder_skipping_and_counting_bad_files(tmp_path, monkeypatch, capsys):
    import ocrlib.data.build
    from helpers import write_ink
    from ocrlib.pretrained import WEIGHTS

    if not WEIGHTS.is_file():
        pytest.skip("no shipped model")
    monkeypatch.setattr(ocrlib.data.build, "DATA_DIR", tmp_path / "data")  # the rendered cache
    folder = tmp_path / "ink"
    write_ink(folder, "a.inkml")
    write_ink(folder, "b.inkml", t0="10 20, nan 21")
    write_ink(folder, "c.inkml", truth="")
    assert main(["eval", "--data", str(folder)]) == 0
    out, err = capsys.readouterr()
    assert "2 of 3 InkML files skipped: trace 0: NaN or infinite point (1), no truth annotation (1)" in err
    assert "| ink | 1 |" in out  # one expression evaluated
    cached = list((tmp_path / "data" / "cache").iterdir())
    assert main(["eval", "--data", str(folder)]) == 0 and list((tmp_path / "data" / "cache").iterdir()) == cached
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["eval", "--data", str(empty)]) == 2
    assert capsys.readouterr().err.strip().endswith(f"{empty}: neither gt.txt nor *.inkml files here")
