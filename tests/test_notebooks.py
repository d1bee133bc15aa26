"""Notebooks: stored stripped, run headless with papermill (PROFILE=smoke), failures reported in the index."""
import json

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

from ocrlib.paths import NOTEBOOKS_DIR
from ocrlib.errors import BadInput
from ocrlib.reports import parse_params, planned_runs, run_reports

NOTEBOOKS = sorted(NOTEBOOKS_DIR.glob("[0-9][0-9]_*.ipynb"))


def test_there_are_numbered_notebooks():
    names = [p.stem for p in NOTEBOOKS]
    assert {"00_data", "01_eda", "02_augmentation"} <= set(names)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_notebook_is_stored_without_outputs_and_has_a_parameters_cell(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not c.outputs and c.execution_count is None for c in code), "strip outputs before committing"
    assert any("parameters" in c.metadata.get("tags", []) for c in code)
    assert any("findings" in c.metadata.get("tags", []) for c in nb.cells), "end with a cell tagged `findings`"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.stem)
def test_papermill_reads_every_parameter_with_its_help(path):
    """`papermill --help-notebook` and the parameter check read each `name = value  # help` line; a second `=` in
    the help makes papermill skip the line with a warning."""
    import ast

    import papermill as pm

    cell = next(c for c in nbformat.read(path, as_version=4).cells if "parameters" in c.metadata.get("tags", []))
    assigned = {t.id for node in ast.parse(cell.source).body if isinstance(node, ast.Assign) for t in node.targets}
    found = pm.inspect_notebook(str(path))
    assert set(found) == assigned
    assert all(p["help"] for p in found.values()), "give each parameter a comment"


def _tiny_notebook(path, body, intro="", summary=""):
    cells = [new_markdown_cell(intro)] if intro else []
    cells += [new_code_cell("profile = 'smoke'\nseed = 0", metadata={"tags": ["parameters"]}),
              new_code_cell(body, metadata={"tags": ["findings"]})]
    cells += [new_code_cell(summary, metadata={"tags": ["summary"]})] if summary else []
    nb = new_notebook(cells=cells + [new_markdown_cell("end")])
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)


@pytest.mark.slow  # papermill starts a kernel per notebook
def test_a_failing_notebook_is_reported_and_the_others_still_run(tmp_path, capsys):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _tiny_notebook(nbs / "00_fine.ipynb", "print('all good', profile)")
    _tiny_notebook(nbs / "01_broken.ipynb", "raise RuntimeError('boom in cell')")
    _tiny_notebook(nbs / "02_after.ipynb", "print('still ran')")
    out = tmp_path / "reports"
    runs = run_reports("smoke", 0, notebooks_dir=nbs, out_dir=out)
    assert [(r.name, r.status) for r in runs] == [("00_fine", "ok"), ("01_broken", "failed"), ("02_after", "ok")]
    stdout, stderr = capsys.readouterr()  # progress (a bar of cells, then the status) on stderr, nothing on stdout
    assert stdout == "" and "[2/3] 01_broken: failed in" in stderr and "[3/3] 02_after: 100%" in stderr
    assert "RuntimeError" in runs[1].error and "boom in cell" in runs[1].error
    assert runs[0].finding == "all good smoke" and runs[2].finding == "still ran"
    index = (out / "index.html").read_text()
    assert "01_broken" in index and "failed" in index and "02_after.html" in index
    assert {p.name for p in out.glob("*.html")} == {"00_fine.html", "01_broken.html", "02_after.html", "index.html",
                                                    "history.html"}
    assert json.loads((out / "index.json").read_text())["profile"] == "smoke"

    # Re-running one notebook keeps the others' rows in the index.
    rerun = run_reports("smoke", 0, only=["02"], notebooks_dir=nbs, out_dir=out)
    assert [r.name for r in rerun] == ["02_after"]
    index = json.loads((out / "index.json").read_text())
    assert [(r["name"], r["status"]) for r in index["runs"]] == [("00_fine", "ok"), ("01_broken", "failed"),
                                                                   ("02_after", "ok")]


def test_report_parameters_are_read_as_yaml_and_bad_ones_named():
    assert parse_params(["checkpoints={satrn: pretrained, aster: runs/a/best.pt}", "beams=[1, 3]", "limit=50"]) == {
        "checkpoints": {"satrn": "pretrained", "aster": "runs/a/best.pt"}, "beams": [1, 3], "limit": 50}
    with pytest.raises(BadInput, match="expected KEY=VALUE"):
        parse_params(["limit"])
    with pytest.raises(BadInput, match="not YAML"):
        parse_params(["beams=[1, 3"])


def test_an_unknown_report_parameter_is_refused_before_anything_runs(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _tiny_notebook(nbs / "00_fine.ipynb", "print(profile)")
    with pytest.raises(BadInput, match="00_fine.ipynb: no parameter 'limt'"):
        run_reports("smoke", 0, notebooks_dir=nbs, out_dir=tmp_path / "reports", params={"limt": 3})
    assert not (tmp_path / "reports").exists()


@pytest.mark.slow  # papermill starts a kernel
def test_a_tagged_report_run_takes_dict_parameters_and_sits_beside_the_plain_one(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _tiny_notebook(nbs / "31_x.ipynb", "print(sorted(seed.items()))")
    _tiny_notebook(nbs / "00_plain.ipynb", "print('plain')")
    out = tmp_path / "reports"
    run_reports("smoke", 0, only=["00"], notebooks_dir=nbs, out_dir=out)
    runs = run_reports("smoke", 0, only=["31"], notebooks_dir=nbs, out_dir=out, params={"seed": {"b": 2, "a": 1}},
                       tag="60min")
    assert [(r.name, r.status, r.finding) for r in runs] == [("31_x_60min", "ok", "[('a', 1), ('b', 2)]")]
    assert (out / "31_x_60min.html").exists() and not (out / "history.jsonl").exists()
    run_reports("smoke", 0, notebooks_dir=nbs, out_dir=out, params={"seed": 3}, tag="s3")  # every notebook, tagged
    index = json.loads((out / "index.json").read_text())
    assert [r["name"] for r in index["runs"]] == ["00_plain", "00_plain_s3", "31_x_60min", "31_x_s3"]
    assert not (out / "history.jsonl").exists()  # tagged runs are no meeting


def test_matrix_metadata_expands_into_one_run_per_value(tmp_path):
    path = tmp_path / "10_train.ipynb"
    _tiny_notebook(path, "pass")
    nb = nbformat.read(path, as_version=4)
    nb.metadata["ocrlib"] = {"matrix": {"model": ["satrn", "cstr"]}}
    nbformat.write(nb, path)
    runs = planned_runs(tmp_path)
    assert [(r.name, r.parameters) for r in runs] == [("10_train_satrn", {"model": "satrn"}),
                                                       ("10_train_cstr", {"model": "cstr"})]


@pytest.mark.slow  # every notebook through papermill (minutes)
def test_every_notebook_runs_end_to_end_with_the_smoke_profile(tmp_path):
    runs = run_reports("smoke", 0, out_dir=tmp_path)
    failed = {r.name: r.error for r in runs if r.status != "ok"}
    assert failed == {}
    assert all(r.finding for r in runs), "every notebook states its findings"


@pytest.mark.slow  # papermill starts a kernel per notebook
def test_the_index_reads_as_meeting_notes_and_each_full_run_joins_the_history(tmp_path):
    nbs = tmp_path / "notebooks"
    nbs.mkdir()
    _tiny_notebook(nbs / "10_model.ipynb", "from IPython.display import Markdown\nMarkdown('SA **0.42** on <i>TeX</i>')",
                   intro="# 10 · A model\n\nThe method.\n\n**Question.** How well does it *read*?",
                   summary="import json\nprint(json.dumps({'model': 'satrn', 'val SA': 0.4242, 'steps': 12}))")
    out = tmp_path / "reports"
    runs = run_reports("smoke", 0, notebooks_dir=nbs, out_dir=out)
    assert runs[0].question == "**10 · A model.** **Question.** How well does it *read*?"
    assert runs[0].summary == {"model": "satrn", "val SA": 0.4242, "steps": 12}
    index = (out / "index.html").read_text()
    assert "<strong>0.42</strong>" in index and "**" not in index  # markdown rendered, not shown
    assert "&lt;i&gt;TeX&lt;/i&gt;" in index  # raw HTML in a finding is escaped
    assert "<em>read</em>" in index and "<td>0.424</td>" in index and "<td>satrn</td>" in index
    run_reports("smoke", 0, notebooks_dir=nbs, out_dir=out)
    run_reports("smoke", 0, only=["10"], notebooks_dir=nbs, out_dir=out)  # a partial run is no meeting
    history = [json.loads(line) for line in (out / "history.jsonl").read_text().splitlines()]
    assert len(history) == 2 and history[0]["runs"][0]["summary"]["val SA"] == 0.4242
    assert (out / "history.html").read_text().count("<section>") == 2
