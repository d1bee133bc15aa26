"""Run the numbered notebooks headless with papermill into reports/ (ipynb + HTML) and write reports/index.html.

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
    return f"CPU {cpu}, {torch.get_num_threads()} threads"


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
        run.finding = extract_finding(nb)
        _to_html(nb, out_dir / f"{run.name}.html")
    return run


def write_index(runs: list[NotebookRun], profile: str, seed: int, out_dir: Path) -> Path:
    rows = []
    for r in runs:
        link = f'<a href="{html.escape(r.name)}.html">{html.escape(r.name)}</a>'
        status = "ok" if r.status == "ok" else f'<b class="failed">failed</b><br><small>{html.escape(r.error)}</small>'
        finding = html.escape(r.finding).replace("\n", "<br>")
        rows.append(f"<tr><td>{link}</td><td>{status}</td><td>{r.seconds / 60:.1f} min</td><td>{finding}</td></tr>")
    page = f"""<!doctype html><html><head><meta charset="utf-8"><title>ocrlib reports</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto}}td,th{{border-bottom:1px solid #ccc;padding:.4em;vertical-align:top}}
table{{border-collapse:collapse}}.failed{{color:#b00}}</style></head><body>
<h1>ocrlib — analyses</h1>
<p>Generated {dt.datetime.now().strftime('%Y-%m-%d %H:%M')} · profile <b>{html.escape(profile)}</b> · seed {seed} ·
device {html.escape(device_description())} · {sum(r.status == 'ok' for r in runs)}/{len(runs)} notebooks ran.</p>
<table><tr><th>notebook</th><th>status</th><th>run time</th><th>finding</th></tr>
{''.join(rows)}
</table></body></html>"""
    path = out_dir / "index.html"
    path.write_text(page, encoding="utf-8")
    (out_dir / "index.json").write_text(json.dumps(
        {"profile": profile, "seed": seed, "device": device_description(),
         "runs": [{**asdict(r), "notebook": str(r.notebook)} for r in runs]}, indent=2))
    return path


def run_reports(profile: str = "quick", seed: int = 0, only: list[str] | None = None,
                notebooks_dir: Path = NOTEBOOKS_DIR, out_dir: Path = REPORTS_DIR,
                progress: bool = True) -> list[NotebookRun]:
    out_dir.mkdir(parents=True, exist_ok=True)
    runs = planned_runs(notebooks_dir, only)
    if not runs:
        raise FileNotFoundError(f"{notebooks_dir}: no numbered notebooks to run")
    kept = _earlier_runs(out_dir, profile, {r.name for r in runs}) if only else []
    for i, run in enumerate(runs, 1):
        label = f"[{i}/{len(runs)}] {run.name}"
        run_one(run, profile, seed, out_dir, progress=label if progress else None)
        print(f"{label}: {run.status} in {run.seconds:.0f} s {run.error}".rstrip(), file=sys.stderr, flush=True)
        # The index is current after every notebook; with --only it keeps the other notebooks' earlier runs.
        write_index(sorted(kept + runs[:i], key=lambda r: r.name), profile, seed, out_dir)
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
    runs = run_reports(args.profile, args.seed, args.only)
    failed = [r for r in runs if r.status != "ok"]
    print(f"reports written to {REPORTS_DIR}/index.html")
    for r in failed:
        print(f"FAILED {r.name}: {r.error}", file=sys.stderr)
    return 1 if failed else 0
