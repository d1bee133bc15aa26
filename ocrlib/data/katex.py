"""KaTeX for the screen renderer, vendored from the npm registry into data/vendor/katex-<version>/.

Fetched at build time and never committed: the tarball of a pinned version, checked against the sha512
`integrity` the registry publishes for it, and only the files a page needs are kept (script, style sheet,
fonts). The folder appears whole or not at all (extracted beside it, then renamed), so a download cut short
is never taken for a cached copy.
"""
from __future__ import annotations

import base64
import hashlib
import io
import json
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from pathlib import Path

from ocrlib.errors import BadInput
from ocrlib.paths import DATA_DIR

KATEX_VERSION = "0.16.47"  # the newest 0.16 on the registry when pinned
REGISTRY = "https://registry.npmjs.org/katex"
VENDOR_DIR = DATA_DIR / "vendor"
FILES = ("katex.min.js", "katex.min.css")  # kept from the tarball's package/dist/, with all of dist/fonts/
TIMEOUT_S = 60


def vendor_katex(version: str = KATEX_VERSION, root: Path = VENDOR_DIR) -> Path:
    """The folder holding katex.min.js, katex.min.css and fonts/ of `version`; downloaded on the first call.

    Raises BadInput (one line) when it is not cached and the registry cannot be reached, or when the
    tarball does not match the registry's integrity hash.
    """
    dest = Path(root) / f"katex-{version}"
    if dest.is_dir():
        return dest
    dist = json.loads(_download(f"{REGISTRY}/{version}"))["dist"]
    tarball = _download(dist["tarball"])
    check_integrity(tarball, dist["integrity"], dist["tarball"])
    dest.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        _extract(tarball, staging, dist["tarball"])
        staging.rename(dest)
    except OSError:
        if not dest.is_dir():  # another process renamed its complete copy first: that one is as good
            raise
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dest


def check_integrity(data: bytes, integrity: str, source: str) -> None:
    """BadInput unless `data` matches an npm integrity string ("sha512-<base64 digest>")."""
    algorithm, _, expected = integrity.partition("-")
    if algorithm != "sha512":
        raise BadInput(source, f"unsupported integrity {algorithm!r} (expected sha512)")
    actual = base64.b64encode(hashlib.sha512(data).digest()).decode()
    if actual != expected:
        raise BadInput(source, f"sha512 mismatch: the registry says {expected[:16]}..., "
                               f"the download is {actual[:16]}...")


def _download(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT_S) as response:
            return response.read()
    except (urllib.error.URLError, TimeoutError) as err:
        reason = getattr(err, "reason", err)
        raise BadInput(url, f"cannot download KaTeX (offline? it is fetched once, then cached in {VENDOR_DIR}): "
                            f"{reason}") from None


def _extract(tarball: bytes, dest: Path, source: str) -> None:
    """FILES and fonts/ of the tarball's package/dist/ into `dest` (the style sheet finds fonts/ beside it)."""
    with tarfile.open(fileobj=io.BytesIO(tarball), mode="r:gz") as tar:
        for member in tar.getmembers():
            name = member.name.removeprefix("package/dist/")
            if member.isfile() and ".." not in name.split("/") and (name in FILES or name.startswith("fonts/")):
                (dest / name).parent.mkdir(parents=True, exist_ok=True)
                (dest / name).write_bytes(tar.extractfile(member).read())
    missing = [name for name in (*FILES, "fonts") if not (dest / name).exists()]
    if missing:
        raise BadInput(source, f"the KaTeX tarball lacks {', '.join(missing)}")
