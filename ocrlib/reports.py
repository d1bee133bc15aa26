"""Run the numbered notebooks headless with papermill into reports/ (ipynb + HTML) and write reports/index.html:
meeting notes, dated, with what each notebook asked and found (its `findings` cell, markdown rendered), and a
table across models from the cells tagged `summary` (one JSON object each). Every complete `make reports` run
appends its summary to reports/history.jsonl, shown as reports/history.html: what changed since the last meeting.

A notebook may ask to be run once per value of a parameter through its metadata, e.g.
`"ocrlib": {"matrix": {"model": ["satrn", "aster"]}}` runs it once per model as `10_train_satrn`.
A failing notebook is marked failed in the index (with where it failed); the others still run, and
`run_reports` reports the failure through its return value (the CLI exits non-zero).
Progress (a bar of cells per notebook, then its status) goes to stderr; stdout only gets the final result.
"""
from __future__ import annotations

import datetime as dt
import html
import json
import platform
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import nbformat
import yaml

from ocrlib.errors import BadInput
from ocrlib.paths import NOTEBOOKS_DIR, REPORTS_DIR


@dataclass
class NotebookRun:
    name: str                 # output name, e.g. 10_train_satrn
    notebook: Path            # source notebook
    parameters: dict = field(default_factory=dict)
    status: str = "pending"   # ok | failed
    seconds: float = 0.0
    error: str = ""           # one line: cell and exception, when failed
    finding: str = ""         # the text of the cell tagged `findings`
    question: str = ""        # the notebook's title and question (its first markdown cell)
    summary: dict = field(default_factory=dict)  # the JSON printed by the cell tagged `summary`, if any


def device_description() -> str:
    import torch

    if torch.cuda.is_available():
        return f"GPU {torch.cuda.get_device_name(0)}"
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    threads = torch.get_num_threads()
    return f"CPU {cpu}, {threads} thread{'' if threads == 1 else 's'}"


def planned_runs(notebooks_dir: Path = NOTEBOOKS_DIR, only: list[str] | None = None) -> list[NotebookRun]:
    """Every numbered notebook (NN_name.ipynb), expanded by its metadata matrix, filtered by name prefixes."""
    runs = []
    for path in sorted(notebooks_dir.glob("[0-9][0-9]_*.ipynb")):
        matrix = nbformat.read(path, as_version=4).metadata.get("ocrlib", {}).get("matrix", {})
        if not matrix:
            runs.append(NotebookRun(path.stem, path))
        for key, values in matrix.items():  # one parameter per matrix is all the notebooks need
            runs += [NotebookRun(f"{path.stem}_{v}", path, {key: v}) for v in values]
    if only:
        runs = [r for r in runs if any(r.name.startswith(p) for p in only)]
    return runs


def extract_finding(nb) -> str:
    """Text of the cell tagged `findings`: its rendered output (markdown/plain/stream) or its markdown source."""
    for cell in nb.cells:
        if "findings" not in cell.get("metadata", {}).get("tags", []):
            continue
        if cell.cell_type == "markdown":
            return cell.source.strip()
        texts = []
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            texts.append(data.get("text/markdown") or data.get("text/plain") or out.get("text", ""))
        return "\n".join(t if isinstance(t, str) else "".join(t) for t in texts).strip()
    return ""


def extract_question(nb) -> str:
    """The first markdown cell's title and its question paragraph (the one naming the question or the team's note;
    else the first paragraph after the title), as markdown."""
    cell = next((c for c in nb.cells if c.cell_type == "markdown"), None)
    if cell is None:
        return ""
    paragraphs = [p.strip() for p in cell.source.strip().split("\n\n") if p.strip()]
    title = paragraphs[0].lstrip("# ").strip() if paragraphs and paragraphs[0].startswith("#") else ""
    rest = paragraphs[1:] if title else paragraphs
    asked = next((p for p in rest if p.startswith(("**Question", "**The team"))), rest[0] if rest else "")
    return f"**{title}.** {asked}" if title else asked


def extract_summary(nb) -> dict:
    """The JSON object printed by the cell tagged `summary` ({} when there is none or it is not JSON)."""
    for cell in nb.cells:
        if "summary" in cell.get("metadata", {}).get("tags", []):
            text = "".join(out.get("text", "") for out in cell.get("outputs", []) if out.get("output_type") == "stream")
            try:
                found = json.loads(text)
            except ValueError:
                return {}
            return found if isinstance(found, dict) else {}
    return {}


def markdown_html(text: str) -> str:
    """Markdown (findings, questions) as HTML; raw HTML in it is escaped."""
    import mistune

    return mistune.create_markdown(escape=True, plugins=["table"])(text)


def _to_html(nb, path: Path) -> None:
    from nbconvert import HTMLExporter

    exporter = HTMLExporter(template_name="lab", embed_images=True)
    body, _ = exporter.from_notebook_node(nb)
    path.write_text(body, encoding="utf-8")


def run_one(run: NotebookRun, profile: str, seed: int, out_dir: Path, progress: str | None = None) -> NotebookRun:
    """Execute one notebook into out_dir (ipynb + HTML); `progress`: label of a tqdm bar of cells on stderr."""
    import papermill as pm

    out_ipynb = out_dir / f"{run.name}.ipynb"
    params = {"profile": profile, "seed": seed, **run.parameters}
    start = time.perf_counter()
    try:
        pm.execute_notebook(str(run.notebook), str(out_ipynb), parameters=params,
                            progress_bar={"desc": progress, "file": sys.stderr, "leave": True} if progress else False,
                            stderr_file=sys.stderr if progress else None,  # cells' progress lines (training)
                            cwd=str(run.notebook.parent), report_mode=False)
        run.status = "ok"
    except pm.PapermillExecutionError as err:
        run.status = "failed"
        run.error = f"cell {err.exec_count}: {err.ename}: {err.evalue}".splitlines()[0][:300]
    except Exception as err:  # a kernel that died or a notebook that could not start: record and go on
        run.status = "failed"
        run.error = f"{type(err).__name__}: {err}".splitlines()[0][:300]
    run.seconds = time.perf_counter() - start
    if out_ipynb.exists():
        nb = nbformat.read(out_ipynb, as_version=4)
        run.finding, run.question, run.summary = extract_finding(nb), extract_question(nb), extract_summary(nb)
        _to_html(nb, out_dir / f"{run.name}.html")
    return run


SUMMARY_COLUMNS = ("model", "parameters (M)", "budget (min)", "steps", "device", "val SA", "test SA", "TeX SA",
                   "TeX SA >20 tokens", "ms per image")
_STYLE = """body{font-family:sans-serif;max-width:1100px;margin:2em auto;line-height:1.4}
td,th{border-bottom:1px solid #ccc;padding:.35em .5em;vertical-align:top;text-align:left}table{border-collapse:collapse}
.failed{color:#b00}section{border-top:2px solid #ddd;margin-top:1.5em}.meta{color:#555;font-size:.9em}"""


def summary_table(runs: list[NotebookRun]) -> str:
    """An HTML table of the runs' summaries (one row per notebook that has one), in SUMMARY_COLUMNS order."""
    rows = [r for r in runs if r.summary]
    if not rows:
        return "<p>No notebook printed a summary this time.</p>"
    head = "".join(f"<th>{html.escape(c)}</th>" for c in ("notebook", *SUMMARY_COLUMNS))
    body = "".join("<tr><td>" + html.escape(r.name) + "</td>" + "".join(
        f"<td>{html.escape(_fmt(r.summary.get(c, '')))}</td>" for c in SUMMARY_COLUMNS) + "</tr>" for r in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _fmt(value) -> str:
    return f"{value:.3f}" if isinstance(value, float) else str(value)


def write_index(runs: list[NotebookRun], profile: str, seed: int, out_dir: Path) -> Path:
    """reports/index.html (meeting notes) and index.json."""
    when = dt.datetime.now().strftime("%Y-%m-%d %H:%M")
    sections = []
    for r in runs:
        status = "ok" if r.status == "ok" else f'<b class="failed">failed</b>: {html.escape(r.error)}'
        sections.append(
            f'<section><h3><a href="{html.escape(r.name)}.html">{html.escape(r.name)}</a></h3>'
            f'<p class="meta">{status} · {r.seconds / 60:.1f} min</p>'
            f"<h4>Asked</h4>{markdown_html(r.question) if r.question else '<p>(no question)</p>'}"
            f"<h4>Found</h4>{markdown_html(r.finding) if r.finding else '<p>(no finding)</p>'}</section>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ocrlib reports {when}</title>
<style>{_STYLE}</style></head><body>
<h1>ocrlib — meeting notes, {when}</h1>
<p class="meta">profile <b>{html.escape(profile)}</b> · seed {seed} · device {html.escape(device_description())} ·
{sum(r.status == 'ok' for r in runs)}/{len(runs)} notebooks ran in {sum(r.seconds for r in runs) / 60:.0f} min ·
<a href="history.html">earlier meetings</a></p>
<h2>Models at a glance</h2>{summary_table(runs)}
<h2>Notebooks: what was asked, what was found</h2>{''.join(sections)}
</body></html>"""
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    (out_dir / "index.json").write_text(json.dumps(
        {"profile": profile, "seed": seed, "device": device_description(), "written": when,
         "runs": [{**asdict(r), "notebook": str(r.notebook)} for r in runs]}, indent=2))
    return path


def append_history(runs: list[NotebookRun], profile: str, seed: int, out_dir: Path) -> Path:
    """Add this meeting to reports/history.jsonl and render reports/history.html, newest first."""
    record = {"written": dt.datetime.now().strftime("%Y-%m-%d %H:%M"), "profile": profile, "seed": seed,
              "device": device_description(), "minutes": round(sum(r.seconds for r in runs) / 60, 1),
              "runs": [{"name": r.name, "status": r.status, "summary": r.summary,
                        "finding": r.finding.split("\n")[0][:400]} for r in runs]}
    log = out_dir / "history.jsonl"
    with log.open("a", encoding="utf-8") as f:
        f.write(json.dumps(record) + "\n")
    meetings = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines() if line.strip()]
    parts = []
    for m in reversed(meetings):
        runs_m = [NotebookRun(r["name"], Path(r["name"]), status=r["status"], summary=r["summary"]) for r in m["runs"]]
        failed = [r["name"] for r in m["runs"] if r["status"] != "ok"]
        parts.append(f"<section><h2>{html.escape(m['written'])} · profile {html.escape(m['profile'])} · seed "
                     f"{m['seed']}</h2><p class=\"meta\">{html.escape(m['device'])} · {m['minutes']} min · "
                     f"{len(m['runs']) - len(failed)}/{len(m['runs'])} ok"
                     f"{' · failed: ' + html.escape(', '.join(failed)) if failed else ''}</p>{summary_table(runs_m)}"
                     "</section>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ocrlib: earlier meetings</title>
<style>{_STYLE}</style></head><body><h1>ocrlib — every meeting, newest first</h1>
<p><a href="index.html">the latest notes</a></p>{''.join(parts)}</body></html>"""
    path = out_dir / "history.html"
    path.write_text(page, encoding="utf-8")
    return path


def parse_params(items: list[str]) -> dict:
    """`KEY=VALUE` strings -> {key: value}, each value read as YAML (so lists and dicts pass, unlike papermill's -p)."""
    params = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise BadInput(f"--param {item!r}", "expected KEY=VALUE")
        try:
            params[key.strip()] = yaml.safe_load(text)
        except yaml.YAMLError as err:
            raise BadInput(f"--param {item!r}", f"the value is not YAML ({str(err).splitlines()[0]})") from None
    return params


def _check_params(runs: list[NotebookRun], params: dict) -> None:
    """Every given parameter exists in every notebook that will run (papermill would inject it silently)."""
    import papermill as pm

    for path in dict.fromkeys(r.notebook for r in runs):
        known = pm.inspect_notebook(str(path))
        unknown = [k for k in params if k not in known]
        if unknown:
            raise BadInput(path.name, f"no parameter {', '.join(map(repr, unknown))} (it has: {', '.join(known)})")


def run_reports(profile: str = "quick", seed: int = 0, only: list[str] | None = None,
                notebooks_dir: Path = NOTEBOOKS_DIR, out_dir: Path = REPORTS_DIR,
                progress: bool = True, params: dict | None = None, tag: str | None = None) -> list[NotebookRun]:
    """Run the numbered notebooks (those whose names start with one of `only`), `params` on top of each one's,
    written as <name>_<tag> when a tag is given (a run with other parameters beside the plain one)."""
    runs = planned_runs(notebooks_dir, only)
    if not runs:
        raise FileNotFoundError(f"{notebooks_dir}: no numbered notebooks to run")
    if params:
        _check_params(runs, params)
    for run in runs:
        run.parameters.update(params or {})
        if tag:
            run.name += f"_{tag}"
    partial = bool(only or tag)  # not every plain notebook: keep the index's other runs, and no history entry
    out_dir.mkdir(parents=True, exist_ok=True)
    for i, run in enumerate(runs, 1):
        label = f"[{i}/{len(runs)}] {run.name}"
        run_one(run, profile, seed, out_dir, progress=label if progress else None)
        print(f"{label}: {run.status} in {run.seconds:.0f} s {run.error}".rstrip(), file=sys.stderr, flush=True)
        # The index is current after every notebook; with --only it keeps the other notebooks' runs, read again
        # now so that a `report --only` running beside this one keeps its notebooks too.
        kept = _earlier_runs(out_dir, profile, {r.name for r in runs}) if partial else []
        write_index(sorted(kept + runs[:i], key=lambda r: r.name), profile, seed, out_dir)
    if not partial:  # a complete meeting goes into the history
        append_history(runs, profile, seed, out_dir)
    return runs


def _earlier_runs(out_dir: Path, profile: str, replaced: set[str]) -> list[NotebookRun]:
    """Runs listed in an existing index of the same profile, except those about to run again."""
    path = out_dir / "index.json"
    if not path.exists():
        return []
    index = json.loads(path.read_text())
    if index.get("profile") != profile:
        return []
    return [NotebookRun(**{**r, "notebook": Path(r["notebook"])}) for r in index["runs"] if r["name"] not in replaced]


def cli_report(args) -> int:
    runs = run_reports(args.profile, args.seed, args.only, params=parse_params(args.param), tag=args.tag)
    failed = [r for r in runs if r.status != "ok"]
    print(f"reports written to {REPORTS_DIR}/index.html")
    for r in failed:
        print(f"FAILED {r.name}: {r.error}", file=sys.stderr)
    return 1 if failed else 0
