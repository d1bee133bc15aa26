"""Screen captures: formulas typeset by KaTeX in headless Chromium, as users paste them from web pages.

Web pages set math at 16-24 px and are often seen at device scale 1, so a short formula is about 40 px
tall and anti-aliased, unlike the renders of print. One browser per batch opens a local page with the
vendored KaTeX (ocrlib.data.katex); each formula is typeset into one element at a font size and mode
(inline or display) drawn from (seed, index), captured with an element screenshot and cropped to its ink
plus a few pixels of white. A formula KaTeX refuses is recorded with KaTeX's message, as TeX failures are.

Debian's `chromium` and `chromium-driver` are used as installed (tools that download a browser of their
own cannot work offline); selenium drives them.
"""
from __future__ import annotations

import importlib.util
import shutil
import subprocess
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np

from ocrlib.data.katex import vendor_katex
from ocrlib.data.render_mathtext import Rendered, crop_to_ink, item_rng
from ocrlib.errors import BadInput

CHROMIUM = "/usr/bin/chromium"
CHROMEDRIVER = "/usr/bin/chromedriver"
INSTALL_HINT = "install them with `make setup` (apt-get install chromium chromium-driver; pip install -e '.[screens]')"
SIZES_PX = (16, 24)  # CSS font size range, drawn per formula (inclusive)
PADDING_PX = 12  # white around the element while it is captured: KaTeX's ink can overhang its box
WINDOW_PX = (4000, 2000)  # wide enough to capture long formulas whole (an element screenshot stops at the window)
SCRIPT_TIMEOUT_S = 10

_PAGE = """<!DOCTYPE html>
<html><head><meta charset="utf-8">
<link rel="stylesheet" href="{css}"><script src="{js}"></script>
<style>
  body {{ margin: 0; background: #fff; color: #000; }}
  #formula {{ display: inline-block; white-space: nowrap; padding: {padding}px; background: #fff; }}
  #formula .katex-display {{ margin: 0; }}  /* display mode's 1em above and below is page layout, not the formula */
</style></head>
<body><div id="formula"></div></body></html>
"""
# every KaTeX font loaded up front, so that no formula is captured while its font is still on its way
_LOAD_FONTS = """const done = arguments[arguments.length - 1];
Promise.all([...document.fonts].map(font => font.load())).then(() => done(null), err => done(String(err)));"""
# typeset one formula; returns null or the reason KaTeX refuses it, with the formula up to where it stopped.
# \overparen: arcs, as the exam corpus writes them (yhmath); KaTeX lacks it, so it is defined as the TeX renderer does
_RENDER = r"""const [latex, size, display] = arguments;
const el = document.getElementById('formula');
el.style.fontSize = size + 'px';
try {
  katex.render(latex, el, {displayMode: display, throwOnError: true,
                           macros: {'\\overparen': '\\overset{\\frown}{#1}'}});
} catch (err) {
  el.textContent = '';
  if (err.rawMessage === undefined) return String(err);
  const end = err.position === undefined ? latex.length : err.position + (err.length ?? 0);
  return 'KaTeX: ' + err.rawMessage + ' (at: ' + latex.slice(0, end).slice(-60) + ')';
}
return el.getBoundingClientRect().right > window.innerWidth ? 'wider than the browser window' : null;"""


class ScreenUnavailable(RuntimeError):
    """Chromium, its driver, selenium or KaTeX is missing, or Chromium does not start."""


def check_screen() -> Path:
    """The vendored KaTeX folder (downloaded on first use); ScreenUnavailable when something is missing."""
    missing = [path for path in (CHROMIUM, CHROMEDRIVER) if shutil.which(path) is None]
    if importlib.util.find_spec("selenium") is None:
        missing.append("selenium")
    if missing:
        raise ScreenUnavailable(f"renderer 'screen' needs {' and '.join(missing)}: {INSTALL_HINT}")
    try:
        return vendor_katex()
    except BadInput as err:
        raise ScreenUnavailable(f"renderer 'screen' needs KaTeX: {err}") from None


def draw_style(seed: int, index: int) -> tuple[int, bool, int]:
    """(font size in px, display mode, margin in px) of item `index`."""
    rng = item_rng(seed, index)
    return int(rng.integers(SIZES_PX[0], SIZES_PX[1] + 1)), bool(rng.random() < 0.5), int(rng.integers(2, 9))


def _first_line(err) -> str:
    """Selenium's messages run over many lines (a stack trace of the driver); the first says what failed."""
    return ((err.msg or "").strip() or type(err).__name__).splitlines()[0][:200]


@contextmanager
def chromium(window: tuple[int, int] = WINDOW_PX) -> Iterator:
    """A headless Chromium (Debian's chromium + chromium-driver) at device scale 1; quit on exit."""
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--force-device-scale-factor=1",
                     "--window-size={},{}".format(*window)):
        options.add_argument(argument)
    try:  # Debian's launcher script chatters on stderr; the driver's log is of no use here either
        driver = webdriver.Chrome(service=Service(CHROMEDRIVER, log_output=subprocess.DEVNULL), options=options)
    except WebDriverException as err:  # e.g. a driver of another version than the browser
        raise ScreenUnavailable(f"Chromium did not start: {_first_line(err)}") from None
    try:
        yield driver
    finally:
        driver.quit()


@contextmanager
def _browser(katex: Path) -> Iterator:
    """A headless Chromium showing the KaTeX page, fonts loaded."""
    with tempfile.TemporaryDirectory(prefix="ocrlib-screen-") as tmp, chromium() as driver:
        page = Path(tmp) / "page.html"
        page.write_text(_PAGE.format(css=(katex / "katex.min.css").as_uri(), js=(katex / "katex.min.js").as_uri(),
                                     padding=PADDING_PX))
        driver.set_script_timeout(SCRIPT_TIMEOUT_S)
        driver.get(page.as_uri())
        failed = driver.execute_async_script(_LOAD_FONTS)
        if failed:
            raise ScreenUnavailable(f"KaTeX fonts did not load in Chromium: {failed}")
        yield driver


def render_batch(items: list[tuple[int, str]], seed: int) -> list[Rendered]:
    """Render (index, latex) items in one browser; size, mode and margin per item from (seed, index)."""
    from selenium.common.exceptions import WebDriverException

    results = []
    with _browser(check_screen()) as driver:
        element = driver.find_element("id", "formula")
        for index, latex in items:
            size, display, margin = draw_style(seed, index)
            result = Rendered(index, latex, f"katex-{size}px-{'display' if display else 'inline'}")
            try:
                result.error = driver.execute_script(_RENDER, latex, size, display)
                if result.error is None:
                    png = np.frombuffer(element.screenshot_as_png, np.uint8)
                    result.image = crop_to_ink(cv2.imdecode(png, cv2.IMREAD_GRAYSCALE), margin)
            except WebDriverException as err:  # a timeout or a crashed browser: this formula fails, the rest go on
                result.error = f"browser: {_first_line(err)}"
            results.append(result.checked())
    return results
