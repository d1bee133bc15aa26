"""`python -m ocrlib load` (`make load`): N concurrent clients against `ocrlib serve` on loopback.

Starts the server in its own process, then for each client count runs that many client threads for a fixed time,
each posting formula images back to back. Reports requests/s, latency percentiles, the batch sizes the server
reached, refusals (503) and the server's resident memory (RSS) over time; every request is accounted for: answered,
refused, or counted as an error with its reason (nothing is dropped silently). `--soak-min M` then keeps 8 clients
on it for M minutes and reports whether memory stays flat. Writes reports/load.json and reports/load.md.
"""
from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

from ocrlib.bench import memory_mb
from ocrlib.data.dataset import png_bytes
from ocrlib.data.render import render_one
from ocrlib.paths import REPORTS_DIR
from ocrlib.reader import DEMO_FORMULAS
from ocrlib.tables import markdown_table

STARTUP_S = 120
REQUEST_TIMEOUT_S = 60


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pngs() -> list[bytes]:
    return [png_bytes(render_one(latex, "mathtext", seed=0, index=i)) for i, latex in enumerate(DEMO_FORMULAS)]


def _post(url: str, body: bytes) -> tuple[int, dict]:
    request = urllib.request.Request(url, data=body, headers={"content-type": "image/png"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=REQUEST_TIMEOUT_S) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, {}


def run_level(url: str, pid: int, clients: int, seconds: float, images: list[bytes], rss_every_s: float = 1.0) -> dict:
    """`clients` threads posting for `seconds`; latencies, statuses, batch sizes, RSS samples."""
    latencies, statuses, batches, errors, rss = [], Counter(), Counter(), Counter(), []
    lock, stop = threading.Lock(), threading.Event()

    def client(offset: int) -> None:
        i = offset
        while not stop.is_set():
            started = time.perf_counter()
            try:
                status, body = _post(url, images[i % len(images)])
            except Exception as err:  # a connection refused or reset: counted, never ignored
                with lock:
                    errors[type(err).__name__] += 1
                continue
            with lock:
                statuses[status] += 1
                if status == 200:
                    latencies.append(time.perf_counter() - started)
                    batches[body["batch"]] += 1
            i += 1

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(clients)]
    started = time.perf_counter()
    for t in threads:
        t.start()
    while time.perf_counter() - started < seconds:
        rss.append((round(time.perf_counter() - started, 1), memory_mb("VmRSS", pid)))
        time.sleep(rss_every_s)
    stop.set()
    for t in threads:
        t.join(timeout=REQUEST_TIMEOUT_S + 5)
    elapsed = time.perf_counter() - started
    ms = np.array(latencies) * 1000
    answered = sum(statuses.values())
    return {"clients": clients, "seconds": round(elapsed, 1), "requests": answered + sum(errors.values()),
            "ok": statuses.get(200, 0), "refused_503": statuses.get(503, 0),
            "other_status": {str(k): v for k, v in statuses.items() if k not in (200, 503)},
            "errors": dict(errors), "requests_per_s": round(statuses.get(200, 0) / elapsed, 2),
            "p50_ms": _pct(ms, 50), "p95_ms": _pct(ms, 95), "p99_ms": _pct(ms, 99),
            "batch_sizes": {str(k): v for k, v in sorted(batches.items())},
            "mean_batch": round(sum(k * v for k, v in batches.items()) / max(sum(batches.values()), 1), 2),
            "rss_mb": {"start": rss[0][1], "end": rss[-1][1], "max": max(r for _, r in rss)} if rss else {},
            "rss_samples": rss}


def _pct(values: np.ndarray, q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if len(values) else None


def start_server(port: int, extra: list[str]) -> subprocess.Popen:
    command = [sys.executable, "-m", "ocrlib", "serve", "--port", str(port), *extra]
    server = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + STARTUP_S
    while time.time() < deadline:
        if server.poll() is not None:
            raise RuntimeError(f"the server exited: {server.stderr.read().strip().splitlines()[-1:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2):
                return server
        except OSError:
            time.sleep(0.5)
    server.kill()
    raise RuntimeError(f"the server did not answer within {STARTUP_S} s")


def cli_load(args) -> int:
    """`ocrlib load [--clients 1 8 32] [--seconds 30] [--soak-min 0] [--checkpoint C] [--out reports/load.json]`."""
    port = free_port()
    extra = ["--checkpoint", args.checkpoint] if args.checkpoint else []
    server = start_server(port, extra)
    url = f"http://127.0.0.1:{port}/predict"
    images = _pngs()
    try:
        for body in images[:2]:  # warm-up
            _post(url, body)
        levels = []
        for clients in args.clients:
            level = run_level(url, server.pid, clients, args.seconds, images)
            levels.append(level)
            print(f"{clients:3d} clients: {level['requests_per_s']} req/s, p50 {level['p50_ms']} ms, "
                  f"p99 {level['p99_ms']} ms, mean batch {level['mean_batch']}, 503s {level['refused_503']}, "
                  f"errors {sum(level['errors'].values())}, RSS {level['rss_mb'].get('max')} MiB", file=sys.stderr)
        soak = None
        if args.soak_min > 0:
            print(f"soak: 8 clients for {args.soak_min:g} min", file=sys.stderr)
            soak = run_level(url, server.pid, 8, args.soak_min * 60, images, rss_every_s=10.0)
    finally:
        server.terminate()
        server.wait(timeout=30)
    payload = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
               "server": f"ocrlib serve {' '.join(extra) or '(shipped model)'} (defaults: max batch 16, window 10 ms)",
               "levels": levels, "soak": soak}
    out = Path(args.out) if args.out else REPORTS_DIR / "load.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2) + "\n")
    rows = [{"clients": lv["clients"], "req/s": lv["requests_per_s"], "p50 ms": lv["p50_ms"], "p95 ms": lv["p95_ms"],
             "p99 ms": lv["p99_ms"], "mean batch": lv["mean_batch"], "ok": lv["ok"], "503": lv["refused_503"],
             "errors": sum(lv["errors"].values()) + sum(lv["other_status"].values()),
             "RSS max MiB": lv["rss_mb"].get("max")} for lv in levels + ([soak] if soak else [])]
    table = markdown_table(pd.DataFrame(rows))
    if soak:
        r = soak["rss_mb"]
        table += (f"\n\nSoak ({args.soak_min:g} min, 8 clients, last row): RSS {r['start']:.0f} MiB at the start, "
                  f"{r['end']:.0f} at the end, {r['max']:.0f} at most.")
    out.with_suffix(".md").write_text(f"# Load ({payload['date']}, {payload['cpus']} CPUs)\n\n{table}\n")
    print(table)
    return 0
