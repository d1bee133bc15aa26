"""Data sources: competition-layout folders (gt.txt), LaTeX formula lists, CROHME InkML.

Readers never crash on one bad line: read_gt skips it and reports (where, reason).
A whole file that cannot be used raises ocrlib.errors.BadInput ("path: problem").
"""
from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath, PureWindowsPath
from typing import Iterator

import numpy as np

from ocrlib.errors import BadInput
from ocrlib.tokens import Vocab

# ---------------------------------------------------------------- competition layout


@dataclass
class Sample:
    image: Path
    tokens: list[str]
    source: str = "printed"  # printed / handwritten, or the renderer's name


def _decode_lines(path: Path) -> Iterator[tuple[int, str | None]]:
    """(line number, text) with CRLF and a BOM tolerated; text is None for a line that is not UTF-8."""
    for n, raw in enumerate(path.read_bytes().split(b"\n"), 1):
        try:
            text = raw.decode("utf-8")
        except UnicodeDecodeError:
            yield n, None
            continue
        yield n, text.rstrip("\r").replace("\ufeff", "")


def _line_problem(name: str, has_tab: bool, tokens: list[str], first_line: dict[str, int],
                  images: Path) -> str | None:
    """Why a gt.txt line is skipped, or None when it is a usable sample."""
    if not has_tab:
        return "missing tab"
    if not name:
        return "empty image name"
    if not tokens:
        return "empty label"
    if name in first_line:
        return f"duplicate image (first on line {first_line[name]})"
    return _image_problem(name, images)


def _image_problem(name: str, images: Path) -> str | None:
    """Why an image name from gt.txt is refused, or None when it names a file inside `images` (resolved)."""
    if PurePosixPath(name).is_absolute() or PureWindowsPath(name).is_absolute() or PureWindowsPath(name).drive:
        return "absolute image path refused"
    target = (images / name).resolve()  # follows symlinks too
    if not target.is_relative_to(images):
        return "image path escapes the images folder"
    if not target.is_file():
        return "image file missing"
    return None


def read_gt(folder: str | Path) -> tuple[list[Sample], list[tuple[str, str]]]:
    """Samples of a competition-layout folder and the problems met: (where, reason) per skipped line.

    folder/gt.txt: `image<TAB>space-separated tokens` (image relative to folder/images/);
    folder/source.txt (optional): `image<TAB>source`; folder/tokens.txt (optional): the vocabulary —
    tokens missing from it are reported as one ("tokens.txt", ...) problem, the lines are kept.
    """
    folder = Path(folder)
    gt = folder / "gt.txt"
    if not gt.is_file():
        raise BadInput(folder, "no gt.txt (not a competition-layout folder)")
    images = folder / "images"
    resolved_images = images.resolve()
    problems: list[tuple[str, str]] = []
    sources = _read_sources(folder / "source.txt", problems)
    samples: list[Sample] = []
    first_line: dict[str, int] = {}
    for n, line in _decode_lines(gt):
        where = f"gt.txt:{n}"
        if line is None:
            problems.append((where, "not UTF-8"))
            continue
        if not line.strip():
            continue
        name, tab, label = line.partition("\t")
        name, tokens = name.strip(), label.split()
        reason = _line_problem(name, bool(tab), tokens, first_line, resolved_images)
        if reason:
            problems.append((where, reason))
            continue
        first_line[name] = n
        samples.append(Sample(images / name, tokens, sources.get(name, "printed")))
    if (folder / "tokens.txt").is_file():
        vocab = Vocab.load(folder / "tokens.txt")
        unknown = sorted({t for s in samples for t in s.tokens if t not in vocab})
        if unknown:
            problems.append(("tokens.txt", f"{len(unknown)} tokens of gt.txt missing: {' '.join(unknown[:20])}"))
    return samples, problems


def _read_sources(path: Path, problems: list[tuple[str, str]]) -> dict[str, str]:
    sources: dict[str, str] = {}
    if not path.is_file():
        return sources
    for n, line in _decode_lines(path):
        if line is None or (line.strip() and "\t" not in line):
            problems.append((f"source.txt:{n}", "not UTF-8" if line is None else "missing tab"))
        elif line.strip():
            name, _, source = line.partition("\t")
            sources[name.strip()] = source.strip() or "printed"
    return sources


def read_formula_list(path: str | Path) -> list[str]:
    """One LaTeX formula a line (BOM and CRLF tolerated); blank lines skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BadInput(path, "no such file") from None
    except UnicodeDecodeError as err:
        raise BadInput(path, f"not UTF-8 (byte {err.start})") from None
    return [line.strip() for line in text.splitlines() if line.strip()]


# ---------------------------------------------------------------- InkML (W3C, CROHME flavour)


@dataclass
class InkExpression:
    path: Path
    strokes: list[np.ndarray]  # each (N, 2) float32: x, y
    truth: str | None  # LaTeX without the $...$
    writer: str | None
    source: str  # parent folder name (HAMEX, KAIST, ...)
    trace_groups: list[tuple[str, list[int]]] = field(default_factory=list)  # (symbol label, stroke indices)


_XML_ID = "{http://www.w3.org/XML/1998/namespace}id"


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]  # works with and without the InkML namespace


def _parse_xml(path: Path) -> ET.Element:
    data = path.read_bytes()
    if not data.strip():
        raise BadInput(path, "empty file")
    try:
        return ET.fromstring(data)
    except ET.ParseError as err:
        try:
            data.decode("utf-8")
        except UnicodeDecodeError:
            # a few CROHME files hold Latin-1 bytes (e.g. a middle dot) in an undeclared UTF-8 document
            text = re.sub(r"^\s*<\?xml[^>]*\?>", "", data.decode("latin-1"))
            try:
                return ET.fromstring(text)
            except ET.ParseError as err2:
                raise BadInput(path, f"malformed XML: {err2}") from None
        raise BadInput(path, f"malformed XML: {err}") from None


def _channels(root: ET.Element) -> tuple[int, int]:
    """Columns of X and Y from <traceFormat> (default: the first two)."""
    names = [c.get("name", "") for c in root.iter() if _local(c.tag) == "channel"]
    if "X" in names and "Y" in names:
        return names.index("X"), names.index("Y")
    return 0, 1


def _points(path: Path, trace_id: str, text: str, cols: tuple[int, int]) -> np.ndarray:
    pts = [p for p in text.split(",") if p.strip()]
    if not pts:
        raise BadInput(path, f"trace {trace_id}: no points")
    width = len(pts[0].split())
    try:
        values = np.array(" ".join(pts).split(), dtype=np.float64)
    except ValueError:
        raise BadInput(path, f"trace {trace_id}: non-numeric point") from None
    if width < 2 or values.size != width * len(pts):
        raise BadInput(path, f"trace {trace_id}: points must all have the same 2+ channels")
    if not np.isfinite(values).all():
        raise BadInput(path, f"trace {trace_id}: NaN or infinite point")
    if max(cols) >= width:
        cols = (0, 1)
    return values.reshape(len(pts), width)[:, cols].astype(np.float32)  # (N, 2)


def read_inkml(path: str | Path, require_truth: bool = True) -> InkExpression:
    """One InkML expression. BadInput for malformed XML, no traces, bad points, and (by default) no truth."""
    path = Path(path)
    root = _parse_xml(path)
    cols = _channels(root)
    annotations = {a.get("type"): (a.text or "").strip() for a in root if _local(a.tag) == "annotation"}
    truth = annotations.get("truth")
    if truth is not None:
        truth = truth[1:-1].strip() if len(truth) > 1 and truth[0] == truth[-1] == "$" else truth
    if not truth:
        if require_truth:
            raise BadInput(path, "no truth annotation")
        truth = None
    index: dict[str, int] = {}
    strokes: list[np.ndarray] = []
    for trace in root.iter():
        if _local(trace.tag) == "trace":
            tid = trace.get("id", str(len(strokes)))
            index[tid] = len(strokes)
            strokes.append(_points(path, tid, trace.text or "", cols))
    if not strokes:
        raise BadInput(path, "no traces")
    groups = []
    for group in root.iter():
        if _local(group.tag) != "traceGroup":
            continue
        refs = [v.get("traceDataRef") for v in group if _local(v.tag) == "traceView"]
        if not refs:
            continue  # the outer "Segmentation" group holds groups, not traces
        missing = [r for r in refs if r not in index]
        if missing:
            gid = group.get(_XML_ID) or group.get("id")
            raise BadInput(path, f"traceGroup {gid} refers to missing trace {missing[0]}")
        label = next(((a.text or "").strip() for a in group
                      if _local(a.tag) == "annotation" and a.get("type") == "truth"), "")
        groups.append((label, [index[r] for r in refs]))
    return InkExpression(path, strokes, truth, annotations.get("writer") or None, path.parent.name, groups)


def iter_inkml(folder: str | Path, require_truth: bool = True) -> Iterator[InkExpression | BadInput]:
    """Every *.inkml under folder (sorted); a file that cannot be read is yielded as its BadInput."""
    for path in sorted(Path(folder).rglob("*.inkml")):
        try:
            yield read_inkml(path, require_truth)
        except BadInput as err:
            yield err
        except OSError as err:
            yield BadInput(path, f"cannot read: {err.strerror or err}")
