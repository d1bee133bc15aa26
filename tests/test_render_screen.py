"""Screen captures: KaTeX in headless Chromium (one browser start for the whole file), and KaTeX vendoring."""
import argparse
import base64
import hashlib
import io
import json
import tarfile
import urllib.error

import numpy as np
import pytest

from ocrlib.data import katex, render_screen
from ocrlib.data.render import available_renderer, cli_render
from ocrlib.errors import BadInput

FORMULAS = ["x^2+1", r"\frac{a}{b}", r"\frac{a}"]  # the last one KaTeX refuses


@pytest.fixture(scope="module")
def rendered():
    """FORMULAS at indices 0-2, and the first formula again at index 0, in one browser."""
    usable, note = available_renderer("screen")
    if usable is None:
        pytest.skip(note)  # what is missing (Chromium, chromedriver, selenium, KaTeX offline) and how to install it
    return render_screen.render_batch([*enumerate(FORMULAS), (0, FORMULAS[0])], seed=7)


def test_formulas_become_anti_aliased_screen_sized_images_and_refusals_have_reasons(rendered):
    good, refused = rendered[:2], rendered[2]
    assert refused.image is None and refused.error.startswith("KaTeX: ") and r"\frac{a}" in refused.error
    for result in good:
        image = result.image
        assert result.error is None and image.dtype == np.uint8 and image.ndim == 2
        assert 15 <= image.shape[0] <= 120, "16-24 px text at device scale 1"
        assert len(np.unique(image)) > 2, "anti-aliased, not binary"
        assert image.min() < 80 and np.median(image) > 200, "dark ink on white"
        assert (image[0] > 200).all() and (image[:, -1] > 200).all(), "a white margin around the ink"


def test_size_and_mode_follow_seed_and_index(rendered):
    size, display, _ = render_screen.draw_style(7, 0)
    assert rendered[0].style == f"katex-{size}px-{'display' if display else 'inline'}"
    assert rendered[3].image.tobytes() == rendered[0].image.tobytes(), "same (seed, index): the same image"
    sizes = {render_screen.draw_style(seed, 0)[0] for seed in range(50)}
    assert sizes <= set(range(16, 25)) and len(sizes) > 4


def test_without_a_browser_screen_is_unavailable_with_no_stand_in(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(render_screen, "CHROMIUM", "/nonexistent/chromium")
    usable, note = available_renderer("screen")
    assert usable is None and "chromium" in note and "make setup" in note
    args = argparse.Namespace(corpus="synth", renderer="screen", out=str(tmp_path / "out"), n=3, workers=1, seed=0,
                              split=None)
    assert cli_render(args) == 1, "the command line refuses rather than render mathtext as 'screen'"
    assert "error: renderer 'screen' needs /nonexistent/chromium" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()


def _npm_tarball(files: dict[str, bytes]) -> bytes:
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def _integrity(data: bytes) -> str:
    return "sha512-" + base64.b64encode(hashlib.sha512(data).digest()).decode()


def _registry(monkeypatch, tarball: bytes, integrity: str) -> None:
    """The registry, without the network: version metadata, then the tarball."""
    metadata = json.dumps({"dist": {"tarball": "https://example.invalid/katex-0.0.1.tgz", "integrity": integrity}})
    monkeypatch.setattr(katex, "_download", lambda url: tarball if url.endswith(".tgz") else metadata.encode())


def test_vendoring_keeps_the_script_style_and_fonts_once(tmp_path, monkeypatch):
    tarball = _npm_tarball({"package/dist/katex.min.js": b"js", "package/dist/katex.min.css": b"css",
                            "package/dist/fonts/KaTeX_Main-Regular.woff2": b"font", "package/README.md": b"",
                            "package/dist/../../escape.txt": b"outside"})
    _registry(monkeypatch, tarball, _integrity(tarball))
    folder = katex.vendor_katex("0.0.1", tmp_path)
    kept = sorted(str(path.relative_to(folder)) for path in folder.rglob("*") if path.is_file())
    assert kept == ["fonts/KaTeX_Main-Regular.woff2", "katex.min.css", "katex.min.js"]
    assert sorted(path.name for path in tmp_path.iterdir()) == ["katex-0.0.1"], "no staging folder left"
    assert not (tmp_path.parent / "escape.txt").exists(), "no path outside the folder"
    monkeypatch.setattr(katex, "_download", None)  # cached: a second call downloads nothing
    assert katex.vendor_katex("0.0.1", tmp_path) == folder


def test_vendoring_refuses_a_tarball_that_does_not_match_its_hash(tmp_path, monkeypatch):
    tarball, wrong = b"not the katex tarball", _integrity(b"katex")
    katex.check_integrity(tarball, _integrity(tarball), "katex.tgz")
    with pytest.raises(BadInput, match="sha512 mismatch"):
        katex.check_integrity(tarball, wrong, "katex.tgz")
    _registry(monkeypatch, tarball, wrong)
    with pytest.raises(BadInput, match="sha512 mismatch"):
        katex.vendor_katex("0.0.1", tmp_path)
    assert list(tmp_path.iterdir()) == [], "nothing is kept of a refused download"


def test_vendoring_offline_is_one_line_unless_cached(tmp_path, monkeypatch):
    def offline(url, timeout):
        raise urllib.error.URLError("Temporary failure in name resolution")

    monkeypatch.setattr(katex.urllib.request, "urlopen", offline)
    with pytest.raises(BadInput, match="offline") as err:
        katex.vendor_katex("0.0.1", tmp_path)
    assert "\n" not in str(err.value) and "name resolution" in str(err.value)
    (tmp_path / "katex-0.0.1").mkdir()  # a cached copy: offline is fine
    assert katex.vendor_katex("0.0.1", tmp_path) == tmp_path / "katex-0.0.1"
