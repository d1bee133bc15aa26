"""`ocrlib serve`: the HTTP API on the shipped model, its answers to bad requests, micro-batching, and the page in a
real browser (Debian chromium + chromium-driver; skipped without them)."""
import asyncio
import io
import os
import shutil
import threading
import time
from types import SimpleNamespace

import numpy as np
import pytest
from PIL import Image

pytest.importorskip("fastapi", reason="the serve extra is not installed (pip install -e '.[serve]')")
from fastapi.testclient import TestClient  # noqa: E402

from ocrlib.data.dataset import png_bytes  # noqa: E402
from ocrlib.data.render import render_one  # noqa: E402
from ocrlib.load import free_port  # noqa: E402
from ocrlib.pretrained import WEIGHTS  # noqa: E402
from ocrlib.reader import FormulaReader, Reading  # noqa: E402
from ocrlib.serve import SAMPLES, Busy, MicroBatcher, ServeSettings, create_app  # noqa: E402

needs_model = pytest.mark.skipif(not WEIGHTS.is_file(), reason="no shipped model in ocrlib/pretrained/")
FORMULA = r"f(x)=2x+1"  # read exactly by the shipped model (tests/test_pretrained.py, candidate 1)


@pytest.fixture(scope="module")
def reader():
    if not WEIGHTS.is_file():
        pytest.skip("no shipped model in ocrlib/pretrained/")
    return FormulaReader(beam=1)


@pytest.fixture(scope="module")
def formula_png():
    return png_bytes(render_one(FORMULA, "mathtext", seed=0, index=1))


@pytest.fixture(scope="module")
def client(reader):
    with TestClient(create_app(reader, ServeSettings(max_upload_mb=0.5))) as c:
        yield c


@needs_model
def test_predict_reads_a_multipart_file_and_raw_bytes_alike(client, formula_png):
    by_form = client.post("/predict", files={"file": ("f.png", formula_png, "image/png")})
    by_body = client.post("/predict", content=formula_png, headers={"content-type": "image/png"})
    assert by_form.status_code == by_body.status_code == 200
    answer = by_form.json()
    assert answer["latex"] == by_body.json()["latex"] == "f ( x ) = 2 x + 1"
    assert answer["renders"] is True and answer["complete"] is True and answer["model"] == "satrn"
    assert len(answer["confidence"]) == len(answer["tokens"]) + 1 and answer["batch"] >= 1 and answer["ms"] > 0
    assert "attention" not in answer


@needs_model
def test_beam_and_attention_on_request(client, formula_png):
    answer = client.post("/predict?beam=4&attention=true", files={"file": ("f.png", formula_png, "image/png")}).json()
    assert answer["latex"] == "f ( x ) = 2 x + 1" and 1 <= len(answer["alternatives"]) <= 3
    maps = np.array(answer["attention"])
    assert maps.shape[0] == len(answer["confidence"]) and np.allclose(maps.sum(axis=(1, 2)), 1, atol=1e-2)
    assert client.post("/predict?beam=99", content=formula_png, headers={"content-type": "image/png"}).status_code == 422


def bad_requests(formula_png: bytes) -> dict[str, tuple[dict, int, str]]:
    """name -> (request keyword arguments, expected status, a word of the expected reason)."""
    bomb = io.BytesIO()
    Image.new("1", (8000, 8000), 1).save(bomb, format="PNG")  # 64 M pixels in a few kB
    white = png_bytes(np.full((40, 120), 255, np.uint8))
    image = {"content-type": "image/png"}
    return {
        "empty body": ({"content": b"", "headers": image}, 400, "empty"),
        "not an image": ({"content": b"%PDF-1.7 not a picture", "headers": image}, 422, "not an image"),
        "truncated image": ({"content": formula_png[: len(formula_png) // 2], "headers": image}, 422, "truncated"),
        "decompression bomb": ({"content": bomb.getvalue(), "headers": image}, 422, "too many pixels"),
        "upload over the limit": ({"content": b"\x89PNG" + bytes(600_000), "headers": image}, 413, "larger than"),
        "wrong content type": ({"content": b"x = 1", "headers": {"content-type": "text/plain"}}, 415, "content type"),
        "1-pixel image": ({"content": png_bytes(np.zeros((1, 1), np.uint8)), "headers": image}, 422, "too small"),
        "all-white image": ({"content": white, "headers": image}, 422, "blank"),
        "form without file": ({"files": {"other": ("f.png", formula_png, "image/png")}}, 400, "no `file`"),
    }


@needs_model
def test_bad_requests_get_a_4xx_with_a_one_line_reason_and_the_server_goes_on(client, formula_png):
    for name, (request, status, word) in bad_requests(formula_png).items():
        response = client.post("/predict", **request)
        assert response.status_code == status, name
        reason = response.json()["detail"]
        assert word in reason and "\n" not in reason, (name, reason)
    assert client.get("/health").json()["status"] == "ok"
    assert client.post("/predict", content=formula_png, headers={"content-type": "image/png"}).status_code == 200


@needs_model
def test_batch_endpoint_reads_each_file_and_reports_the_bad_one(client, formula_png):
    files = [("files", ("a.png", formula_png, "image/png")), ("files", ("b.txt", b"not an image", "image/png")),
             ("files", ("c.png", formula_png, "image/png"))]
    results = client.post("/predict/batch", files=files).json()["results"]
    assert [r["file"] for r in results] == ["a.png", "b.txt", "c.png"]
    assert results[0]["latex"] == results[2]["latex"] == "f ( x ) = 2 x + 1"
    assert results[1]["status"] == 422 and "not an image" in results[1]["error"]
    only_bad = client.post("/predict/batch", files=[("files", ("b.txt", b"nope", "image/png"))])
    assert only_bad.status_code == 422


@needs_model
def test_a_token_guards_the_api_but_not_the_page(reader, formula_png):
    with TestClient(create_app(reader, ServeSettings(token="s3cret"))) as guarded:
        request = {"content": formula_png, "headers": {"content-type": "image/png"}}
        assert guarded.post("/predict", **request).status_code == 401
        wrong = {"content-type": "image/png", "authorization": "Bearer nope"}
        assert guarded.post("/predict", content=formula_png, headers=wrong).status_code == 401
        right = {"content-type": "image/png", "authorization": "Bearer s3cret"}
        assert guarded.post("/predict", content=formula_png, headers=right).status_code == 200
        assert guarded.get("/models").status_code == 401
        assert guarded.get("/").status_code == 200 and guarded.get("/health").json()["auth"] is True


@needs_model
def test_models_samples_render_and_openapi(client):
    assert client.get("/models").json()[0]["model"] == "satrn"
    samples = client.get("/samples").json()
    assert [s["latex"] for s in samples] == list(SAMPLES)
    assert client.get(f"/{samples[0]['url']}").headers["content-type"] == "image/png"
    assert client.get("/samples/99.png").status_code == 404
    assert client.get("/render.png", params={"latex": r"\frac{1}{2}"}).headers["content-type"] == "image/png"
    assert client.get("/render.png", params={"latex": r"\frac{1}{"}).status_code == 422
    assert "/predict" in client.get("/openapi.json").json()["paths"]


def fake_read(delay: float = 0.0, calls: list | None = None):
    def read(images, beam):
        if calls is not None:
            calls.append((len(images), beam))
        time.sleep(delay)
        return [Reading(latex=str(int(g[0, 0])), tokens=[], confidence=[], score=0.0, complete=True) for g in images]
    return read


def test_concurrent_requests_share_batches_and_each_gets_its_own_answer():
    calls = []

    async def scenario():
        batcher = MicroBatcher(fake_read(0.01, calls), max_batch=4, window_s=0.05, queue_size=64)
        batcher.start()
        images = [np.full((4, 4), i, np.uint8) for i in range(10)]
        answers = await asyncio.gather(*(batcher.submit(g, beam=1 if i < 8 else 3) for i, g in enumerate(images)))
        await batcher.stop()
        return answers

    answers = asyncio.run(scenario())
    assert [reading.latex for reading, _ in answers] == [str(i) for i in range(10)]
    assert max(size for size, _ in calls) == 4 and sum(size for size, _ in calls) == 10
    assert len(calls) < 10  # requests were batched, not decoded one by one
    assert {beam for _, beam in calls} == {1, 3} and all(size <= 2 for size, beam in calls if beam == 3)


def test_a_full_queue_refuses_at_once_and_a_failed_batch_fails_only_its_requests():
    async def scenario():
        batcher = MicroBatcher(fake_read(0.2), max_batch=1, window_s=0.0, queue_size=2)
        batcher.start()
        first = asyncio.ensure_future(batcher.submit(np.zeros((4, 4), np.uint8), None))
        await asyncio.sleep(0.05)  # the first is being decoded; two more fill the queue
        queued = [asyncio.ensure_future(batcher.submit(np.zeros((4, 4), np.uint8), None)) for _ in range(2)]
        await asyncio.sleep(0)
        with pytest.raises(Busy):
            await batcher.submit(np.zeros((4, 4), np.uint8), None)
        await asyncio.gather(first, *queued)

        def broken(images, beam):
            raise RuntimeError("decoder failed")
        batcher.read = broken
        with pytest.raises(RuntimeError, match="decoder failed"):
            await batcher.submit(np.zeros((4, 4), np.uint8), None)
        batcher.read = fake_read()
        reading, _ = await batcher.submit(np.full((4, 4), 7, np.uint8), None)
        await batcher.stop()
        return reading

    assert asyncio.run(scenario()).latex == "7"


def test_busy_and_slow_answers_are_503_with_retry_after_and_504():
    slow = SimpleNamespace(read=fake_read(0.5), config=SimpleNamespace(name="fake"))
    image = {"content": png_bytes(np.tile(np.arange(0, 250, 10, dtype=np.uint8), (8, 1))),
             "headers": {"content-type": "image/png"}}
    with TestClient(create_app(slow, ServeSettings(queue_size=1, max_batch=1, timeout_s=0.2))) as c:
        assert c.post("/predict", **image).status_code == 504
        results = []
        threads = [threading.Thread(target=lambda: results.append(c.post("/predict", **image))) for _ in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        statuses = sorted(r.status_code for r in results)
        assert 503 in statuses and set(statuses) <= {503, 504}
        assert all(r.headers["retry-after"] == "1" for r in results if r.status_code == 503)


@pytest.fixture(scope="module")
def live_server(reader):
    uvicorn = pytest.importorskip("uvicorn")
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(reader, ServeSettings()), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    for _ in range(200):
        if server.started:
            break
        time.sleep(0.05)
    yield f"http://127.0.0.1:{port}/"
    server.should_exit = True
    thread.join(timeout=10)


@needs_model
@pytest.mark.skipif(shutil.which("/usr/bin/chromium") is None or shutil.which("/usr/bin/chromedriver") is None,
                    reason="Chromium and chromedriver are not installed (make setup installs them with apt-get)")
def test_the_page_in_a_real_browser_reads_an_upload_and_a_paste(live_server, formula_png, tmp_path):
    pytest.importorskip("selenium", reason="selenium is not installed (pip install -e '.[screens]')")
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import WebDriverWait

    from ocrlib.data.render_screen import chromium

    upload = tmp_path / "formula.png"
    upload.write_bytes(formula_png)
    with chromium(window=(1200, 900)) as driver:
        driver.get(live_server)
        wait = WebDriverWait(driver, 30)
        wait.until(lambda d: len(d.find_elements(By.CSS_SELECTOR, "#samples img")) == len(SAMPLES))
        driver.find_element(By.ID, "file").send_keys(str(upload))
        wait.until(lambda d: d.find_element(By.ID, "latex").text == "f ( x ) = 2 x + 1")
        wait.until(lambda d: d.find_elements(By.CSS_SELECTOR, "#rendered .katex, #rendered img"))
        assert len(driver.find_elements(By.CSS_SELECTOR, "#tokens span")) == 9 + 1  # tokens and eos
        assert "typesets" in driver.find_element(By.ID, "status").text

        # a paste: a synthetic ClipboardEvent carrying the first sample image (headless has no real clipboard)
        driver.execute_script("""
            fetch('samples/0.png').then(r => r.blob()).then(blob => {
              const data = new DataTransfer();
              data.items.add(new File([blob], 'pasted.png', {type: 'image/png'}));
              document.dispatchEvent(new ClipboardEvent('paste', {clipboardData: data}));
            });""")
        wait.until(lambda d: d.find_element(By.ID, "latex").text == r"\frac { 1 } { 2 }")
        driver.find_elements(By.CSS_SELECTOR, "#tokens span")[0].click()  # its attention map is drawn
        drawn = driver.execute_script("""const c = document.getElementById('overlay');
            return c.getContext('2d').getImageData(0, 0, c.width, c.height).data.some(v => v > 0);""")
        assert drawn
        assert driver.find_element(By.ID, "error").text == ""


@needs_model
def test_load_runs_account_for_every_request(live_server):
    from ocrlib.load import _pngs, run_level

    level = run_level(live_server + "predict", os.getpid(), clients=3, seconds=3, images=_pngs()[:2])
    assert level["requests"] == level["ok"] + level["refused_503"] + sum(level["other_status"].values()) + \
        sum(level["errors"].values())
    assert level["ok"] > 0 and level["errors"] == {} and level["other_status"] == {}
    assert sum(level["batch_sizes"].values()) == level["ok"] and 1 <= level["mean_batch"] <= 3
    assert level["p50_ms"] <= level["p95_ms"] <= level["p99_ms"] and level["rss_mb"]["max"] > 0
