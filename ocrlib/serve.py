"""`python -m ocrlib serve`: formulas read from images over HTTP (FastAPI + uvicorn), and a paste-a-screenshot page.

    POST /predict        one image: a multipart `file`, or the image bytes as the body (image/*, octet-stream)
    POST /predict/batch  several images: multipart `files`
    GET  /health  /models  /docs (OpenAPI)  /render.png?latex=  /samples/<i>.png  /  (the page)

An answer: {latex, tokens, confidence (per token), score, complete, alternatives (other beams), renders (does the
LaTeX typeset with mathtext), ms, batch, model}; `?attention=true` adds each token's attention map, `?beam=K`
overrides the beam width. Concurrent requests are micro-batched: the first waiting request opens a short window
(`window_ms`) in which others join its batch, up to `max_batch`, so throughput grows with load. A full queue
answers 503 with Retry-After; a request that waits longer than `timeout_s` gets 504. A bad upload gets a 4xx
with a one-line reason and never stops the server. The server keeps no state between requests, so replicas
behind any HTTP load balancer answer alike.
"""
from __future__ import annotations

import asyncio
import json
import os
import secrets
import sys
import time
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from fastapi import Depends, FastAPI, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, Response
from fastapi.staticfiles import StaticFiles

from ocrlib.data.dataset import BadImage, gray_from_bytes, png_bytes
from ocrlib.data.katex import KATEX_VERSION, VENDOR_DIR
from ocrlib.data.render_mathtext import error_line, render_mathtext
from ocrlib.errors import BadInput
from ocrlib.reader import DEMO_FORMULAS as SAMPLES
from ocrlib.reader import FormulaReader, Reading

PAGE = Path(__file__).with_name("serve_page.html")
SETTINGS_ENV = "OCRLIB_SERVE_SETTINGS"  # how `serve --workers N` hands the settings to each worker process
TOKEN_ENV = "OCRLIB_SERVE_TOKEN"
ACCEPTED_TYPES = ("multipart/form-data", "application/octet-stream")  # and image/*


@dataclass
class ServeSettings:
    checkpoint: str | None = None  # None: the shipped pretrained model
    beam: int | None = None  # None: the checkpoint's decoding.beam
    max_batch: int = 16  # most images decoded together
    window_ms: float = 10.0  # how long the first waiting request waits for others to join its batch
    queue_size: int = 64  # waiting images beyond this are refused with 503
    timeout_s: float = 30.0  # a request not answered within this gets 504
    max_upload_mb: float = 10.0  # larger uploads get 413
    token: str | None = None  # when set, /predict, /predict/batch and /models need `Authorization: Bearer <token>`
    runtime: str = "torch"  # torch | onnx (onnxruntime)
    onnx_folder: str | None = None  # the `ocrlib export --onnx` folder of the onnx runtime


class Busy(Exception):
    """The queue is full."""


class MicroBatcher:
    """Collects concurrent images into batches for `read(images, beam) -> readings`, run off the event loop."""

    def __init__(self, read, max_batch: int, window_s: float, queue_size: int):
        self.read, self.max_batch, self.window_s = read, max_batch, window_s
        self.queue: asyncio.Queue = asyncio.Queue(maxsize=queue_size)
        self.batches = self.images = 0  # decoded so far (their mean size is on /health)
        self.task: asyncio.Task | None = None

    def start(self) -> None:
        self.task = asyncio.get_running_loop().create_task(self._run())

    async def stop(self) -> None:
        if self.task:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)

    async def submit(self, gray: np.ndarray, beam: int | None) -> tuple[Reading, int]:
        """The reading of one image and the size of the batch it was decoded in; Busy when the queue is full."""
        future = asyncio.get_running_loop().create_future()
        try:
            self.queue.put_nowait((gray, beam, future))
        except asyncio.QueueFull:
            raise Busy from None
        return await future

    async def _collect(self) -> list[tuple]:
        batch = [await self.queue.get()]
        deadline = asyncio.get_running_loop().time() + self.window_s
        while len(batch) < self.max_batch:
            left = deadline - asyncio.get_running_loop().time()
            try:
                batch.append(self.queue.get_nowait() if left <= 0 else await asyncio.wait_for(self.queue.get(), left))
            except (asyncio.QueueEmpty, asyncio.TimeoutError):
                break
        return [item for item in batch if not item[2].done()]  # a request that timed out is not decoded

    async def _run(self) -> None:
        while True:
            batch = await self._collect()
            for beam in {item[1] for item in batch}:  # one decode per beam width asked for
                group = [item for item in batch if item[1] == beam]
                self.batches, self.images = self.batches + 1, self.images + len(group)
                try:
                    readings = await asyncio.to_thread(self.read, [gray for gray, _, _ in group], beam)
                except Exception as err:  # a failed batch fails its requests, never the loop
                    readings = [err] * len(group)
                for (_, _, future), reading in zip(group, readings):
                    if future.done():
                        continue
                    if isinstance(reading, Exception):
                        future.set_exception(reading)
                    else:
                        future.set_result((reading, len(group)))


def typesets(latex: str) -> bool:
    """Whether matplotlib's mathtext can typeset `latex` (a cheap check that the answer is well-formed)."""
    try:
        return render_mathtext(latex, dpi=40) is not None
    except Exception:  # mathtext raises ValueError, ParseFatalException...
        return False


async def read_limited(stream, limit: int) -> bytes:
    """The bytes of an async chunk stream, or 413 as soon as they pass `limit`."""
    data = bytearray()
    async for chunk in stream:
        data += chunk
        if len(data) > limit:
            raise HTTPException(413, f"upload larger than {limit / 2**20:g} MB")
    return bytes(data)


async def _file_chunks(upload):
    while chunk := await upload.read(2**16):
        yield chunk


def create_app(reader: FormulaReader, settings: ServeSettings) -> FastAPI:
    """The HTTP app around one reader; `uvicorn.run(create_app(...))` serves it."""
    limit = int(settings.max_upload_mb * 2**20)
    batcher = MicroBatcher(reader.read, settings.max_batch, settings.window_ms / 1000, settings.queue_size)
    samples = [png_bytes(render_mathtext(latex, dpi=200)) for latex in SAMPLES]  # the page's "pick a sample"
    katex = _katex_folder()

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        batcher.start()
        yield
        await batcher.stop()

    app = FastAPI(title="ocrlib", summary="Math formula images to LaTeX", lifespan=lifespan)
    app.state.batcher = batcher

    def authorised(request: Request) -> None:
        if settings.token is None:
            return
        given = request.headers.get("authorization", "")
        if not secrets.compare_digest(given.encode(), f"Bearer {settings.token}".encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})

    async def answer(gray: np.ndarray, beam: int | None, attention: bool, started: float) -> dict:
        try:
            reading, batch = await asyncio.wait_for(batcher.submit(gray, beam), settings.timeout_s)
        except Busy:
            raise HTTPException(503, "busy: the queue is full, retry shortly", headers={"Retry-After": "1"}) from None
        except asyncio.TimeoutError:
            raise HTTPException(504, f"not answered within {settings.timeout_s:g} s") from None
        renders = await asyncio.to_thread(typesets, reading.latex)  # mathtext off the event loop
        return {**reading.as_dict(attention), "renders": renders,
                "ms": round(1000 * (time.perf_counter() - started), 1), "batch": batch,
                "model": reader.config.name}

    def decoded(data: bytes, name: str) -> np.ndarray:
        try:
            return gray_from_bytes(data, name)
        except BadImage as err:
            raise HTTPException(400 if err.reason == "empty file" else 422, str(err)) from None

    def checked_beam(beam: int | None) -> int | None:
        if beam is not None and not 1 <= beam <= 16:
            raise HTTPException(422, f"beam must be between 1 and 16, got {beam}")
        return beam if beam is not None else settings.beam

    def check_length(request: Request) -> str:
        """The content type, after refusing what is too large (by its header) or of the wrong kind."""
        length = request.headers.get("content-length")
        if length and length.isdigit() and int(length) > limit + 2**16:  # multipart framing on top of the file
            raise HTTPException(413, f"upload larger than {settings.max_upload_mb:g} MB")
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if not (kind.startswith("image/") or kind in ACCEPTED_TYPES):
            raise HTTPException(415, f"content type {kind or 'missing'}: send an image (image/*, octet-stream) "
                                     "or a multipart form with `file`")
        return kind

    @app.post("/predict", dependencies=[Depends(authorised)])
    async def predict(request: Request, beam: int | None = Query(None), attention: bool = Query(False)) -> dict:
        """Read one image: a multipart `file`, or the image bytes as the request body."""
        started, beam = time.perf_counter(), checked_beam(beam)
        if check_length(request) == "multipart/form-data":
            form = await request.form()
            upload = form.get("file")
            if upload is None or isinstance(upload, str):
                raise HTTPException(400, "the multipart form has no `file` part")
            name, data = upload.filename or "file", await read_limited(_file_chunks(upload), limit)
        else:
            name, data = "body", await read_limited(request.stream(), limit)
        return await answer(decoded(data, name), beam, attention, started)

    @app.post("/predict/batch", dependencies=[Depends(authorised)])
    async def predict_batch(request: Request, beam: int | None = Query(None)) -> dict:
        """Read several images (multipart `files`); a bad one gets its own error, the others their readings."""
        started, beam = time.perf_counter(), checked_beam(beam)
        if check_length(request) != "multipart/form-data":
            raise HTTPException(415, "send a multipart form with one or more `files`")
        uploads = [u for u in (await request.form()).getlist("files") if not isinstance(u, str)]
        if not uploads:
            raise HTTPException(400, "the multipart form has no `files` part")

        async def one(upload) -> dict:
            name = upload.filename or "file"
            try:
                return {"file": name, **await answer(decoded(await read_limited(_file_chunks(upload), limit), name),
                                                     beam, False, started)}
            except HTTPException as err:
                if err.status_code in (503, 504):
                    raise
                return {"file": name, "error": err.detail, "status": err.status_code}
        results = await asyncio.gather(*(one(u) for u in uploads))
        if all("error" in r for r in results):
            raise HTTPException(422, "; ".join(r["error"] for r in results)[:500])
        return {"results": results}

    @app.get("/health")
    def health() -> dict:
        return {"status": "ok", "model": reader.config.name, "queued": batcher.queue.qsize(),
                "batches": batcher.batches,
                "mean_batch": round(batcher.images / batcher.batches, 2) if batcher.batches else None,
                "auth": settings.token is not None, "katex": katex is not None}

    @app.get("/models", dependencies=[Depends(authorised)])
    def models() -> list[dict]:
        return [reader.describe()]

    @app.get("/render.png")
    def render(latex: str = Query(..., max_length=2000)) -> Response:
        """The LaTeX typeset by mathtext (the page's fallback where KaTeX is not available)."""
        try:
            gray = render_mathtext(latex, dpi=200)
        except Exception as err:
            raise HTTPException(422, f"mathtext cannot typeset it: {error_line(err)}") from None
        if gray is None:
            raise HTTPException(422, "nothing to typeset")
        return Response(png_bytes(gray), media_type="image/png")

    @app.get("/samples")
    def sample_list() -> list[dict]:
        return [{"latex": latex, "url": f"samples/{i}.png"} for i, latex in enumerate(SAMPLES)]

    @app.get("/samples/{index}.png")
    def sample(index: int) -> Response:
        if not 0 <= index < len(samples):
            raise HTTPException(404, f"no sample {index} (0-{len(samples) - 1})")
        return Response(samples[index], media_type="image/png")

    @app.get("/", response_class=HTMLResponse)
    def page() -> FileResponse:
        return FileResponse(PAGE, media_type="text/html")

    if katex is not None:
        app.mount("/katex", StaticFiles(directory=katex), name="katex")
    return app


def _katex_folder() -> Path | None:
    """The vendored KaTeX (data/vendor, fetched by the screen renderer), or None: the page then shows PNGs."""
    folder = VENDOR_DIR / f"katex-{KATEX_VERSION}"
    return folder if (folder / "katex.min.js").is_file() else None


def app_from_env() -> FastAPI:
    """The app of one uvicorn worker process: settings from OCRLIB_SERVE_SETTINGS (set by `cli_serve`)."""
    settings = ServeSettings(**json.loads(os.environ.get(SETTINGS_ENV, "{}")))
    reader = FormulaReader(settings.checkpoint, beam=settings.beam, runtime=settings.runtime,
                           onnx_folder=settings.onnx_folder)
    return create_app(reader, settings)


def cli_serve(args) -> int:
    """`ocrlib serve [--checkpoint C] [--host 127.0.0.1] [--port 8000] [--beam K] [--workers N] [--token T]`."""
    import torch
    import uvicorn

    token = args.token or os.environ.get(TOKEN_ENV) or None
    settings = ServeSettings(checkpoint=args.checkpoint, beam=args.beam, max_batch=args.max_batch,
                             window_ms=args.window_ms, queue_size=args.queue_size, timeout_s=args.timeout,
                             max_upload_mb=args.max_upload_mb, token=token, runtime=args.runtime, onnx_folder=args.onnx)
    if args.beam is not None and not 1 <= args.beam <= 16:
        raise BadInput("--beam", f"must be between 1 and 16, got {args.beam}")
    # a bad checkpoint fails here, in one line, before any worker starts; the onnx runtime exports once for all
    reader = FormulaReader(settings.checkpoint, runtime=args.runtime, onnx_folder=args.onnx)
    if args.runtime == "onnx" and args.onnx is None:
        settings.onnx_folder = str(reader.model.folder)
    if args.host not in ("127.0.0.1", "localhost", "::1") and token is None:
        print(f"warning: serving on {args.host} without a token (set --token or {TOKEN_ENV})", file=sys.stderr)
    os.environ[SETTINGS_ENV] = json.dumps(asdict(settings))
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.workers)))
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    print(f"serving {settings.checkpoint or 'the shipped pretrained model'} on http://{args.host}:{args.port}/ "
          f"({args.workers} worker{'s' * (args.workers > 1)})", file=sys.stderr)
    uvicorn.run("ocrlib.serve:app_from_env", factory=True, host=args.host, port=args.port, workers=args.workers,
                log_level="warning")
    return 0
