"""Load check of ``facekit serve``: many clients uploading LFW photos at once over loopback.

A real server (``facekit serve`` in a subprocess, the shipped model, the Surrey model from the data folder) on a free
port of 127.0.0.1; ``--clients`` threads, each with its own ``gradio_client.Client`` (its own session), all start
together and upload ``--photos`` LFW DevTest photos each, one after another, through the page's API (``/analyze``:
the same event the page runs, the whole chain including the 3-D avatar). Distinct photos, so nothing comes from the
result cache. Reported: every request's latency (submit to answer, queueing included), p50/p95/max, how many were
answered with results, with a plain message (no face) or not at all (an exception: a failure), throughput, and the
peak memory (RSS summed over the server's process tree, sampled every 0.1 s). When the clients close, their sessions
end and the server deletes their uploads: the count left is reported too. Bounded: at most clients x photos
requests, one run, loopback only.

    python benchmarks/serve.py [--clients 20] [--photos 5] [--concurrency 1] [--no-write]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np
from facekit_serve.offline import offline_environment
from facekit_serve.testing import running_server
from results import machine, publish

from facekit.evaluate import lfw_devtest
from facekit.recipe import DataSection


def tree_rss(pid: int) -> int:
    """Resident memory of process ``pid`` and all its descendants, in bytes (0 once it is gone)."""
    import psutil

    try:
        root = psutil.Process(pid)
        processes = [root, *root.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for process in processes:
        try:
            total += process.memory_info().rss
        except psutil.NoSuchProcess:
            continue
    return total


class MemorySampler(threading.Thread):
    """Samples :func:`tree_rss` of ``pid`` every ``every`` seconds until stopped; keeps the peak."""

    def __init__(self, pid: int, every: float = 0.1) -> None:
        super().__init__(daemon=True)
        self.pid, self.every = pid, every
        self.peak = 0
        self.stopped = threading.Event()

    def run(self) -> None:
        while not self.stopped.is_set():
            self.peak = max(self.peak, tree_rss(self.pid))
            self.stopped.wait(self.every)


def run_client(url: str, photos: list[Path], start: threading.Barrier, rows: list[dict[str, Any]], out: Path) -> None:
    """One visitor: its own session, its photos one after another; a row per request."""
    from gradio_client import Client, handle_file

    client = Client(url, verbose=False, download_files=str(out), analytics_enabled=False)
    start.wait()
    try:
        for photo in photos:
            began = time.perf_counter()
            row: dict[str, Any] = {"photo": photo.name}
            try:
                answer = client.predict(handle_file(str(photo)), api_name="/analyze")
            except Exception as error:  # noqa: BLE001 - any exception is a failed request, counted and reported
                row.update(outcome="failed", reason=f"{type(error).__name__}: {error}"[:200])
            else:
                status = str(answer[1]) if isinstance(answer, list | tuple) and len(answer) > 1 else str(answer)
                row["outcome"] = "message" if 'class="error"' in status else "result"
                row["reason"] = status[:200]
                files = [v for v in answer if isinstance(v, str) and v.startswith(str(out)) and Path(v).is_file()]
                row["avatar"] = any(file.endswith(".glb") for file in files)
            row["seconds"] = time.perf_counter() - began
            rows.append(row)
    finally:
        client.close()  # ends the session: the server deletes this visitor's uploads


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clients", type=int, default=20, help="simultaneous clients (sessions)")
    parser.add_argument("--photos", type=int, default=5, help="photos each client uploads, one after another")
    parser.add_argument("--concurrency", type=int, default=1, help="the server's --concurrency")
    parser.add_argument("--no-write", action="store_true", help="do not rewrite RESULTS.md")
    args = parser.parse_args()
    offline_environment()
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    root = DataSection().resolved_root()
    sfm = root / "sfm" / "sfm_shape_3448.bin"
    photos = [photo.path for photo in lfw_devtest(root, args.clients * args.photos)]
    if len(photos) < args.clients * args.photos:
        raise SystemExit(f"only {len(photos)} LFW DevTest photos under {root}")
    queue = args.clients * 2
    with tempfile.TemporaryDirectory(prefix="facekit-serve-bench-") as temporary:
        folder = Path(temporary)
        began = time.perf_counter()
        arguments = ["--sfm", str(sfm), "--concurrency", str(args.concurrency), "--max-queue", str(queue)]
        with running_server(folder, arguments, stop_seconds=60) as server:
            startup = time.perf_counter() - began
            pid, url = server.process.pid, server.url
            sampler = MemorySampler(pid)
            sampler.start()
            time.sleep(1.0)
            idle = tree_rss(pid)
            rows: list[dict[str, Any]] = []
            barrier = threading.Barrier(args.clients)
            threads = []
            for index in range(args.clients):
                mine = photos[index * args.photos : (index + 1) * args.photos]
                out = folder / "downloads" / str(index)
                out.mkdir(parents=True)
                thread = threading.Thread(target=run_client, args=(url, mine, barrier, rows, out), daemon=True)
                threads.append(thread)
            began = time.perf_counter()
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join(timeout=3600)
            wall = time.perf_counter() - began
            # The clients closed their sessions: give the server the heartbeat interval to notice, then look.
            deadline = time.monotonic() + 40
            uploads = [folder.glob(f"facekit-serve-*/gradio/*/{photo.name}") for photo in photos]
            left = sum(1 for found in uploads for _ in found)
            while left and time.monotonic() < deadline:
                time.sleep(1.0)
                left = sum(1 for photo in photos for _ in folder.glob(f"facekit-serve-*/gradio/*/{photo.name}"))
            after = tree_rss(pid)
            sampler.stopped.set()
            sampler.join()
            alive = server.process.poll() is None
        code = server.process.returncode  # stopped as an operator would: SIGTERM
    if not rows:
        raise SystemExit("no request was answered")
    seconds = np.array([row["seconds"] for row in rows])
    avatars = sum(bool(row.get("avatar")) for row in rows)
    outcomes = {kind: sum(row["outcome"] == kind for row in rows) for kind in ("result", "message", "failed")}
    unanswered = args.clients * args.photos - len(rows)
    messages = sorted({row["reason"] for row in rows if row["outcome"] != "result"})
    mib = 1024 * 1024
    lines = [
        f"## `facekit serve` under load (`python benchmarks/serve.py --clients {args.clients} --photos {args.photos}`)",
        "",
        f"Machine: {machine()}; OMP_NUM_THREADS={os.environ.get('OMP_NUM_THREADS', 'unset')}. A real server "
        f"(shipped model, Surrey model, `--concurrency {args.concurrency} --max-queue {queue}`) on 127.0.0.1; "
        f"{args.clients} gradio_client sessions start together and each uploads {args.photos} distinct LFW DevTest "
        "photos one after another through `/analyze` (the whole chain: detection, normalized face, adjust, "
        "attributes, 3-D avatar with GLB/OBJ export). Latency is submit to answer, queueing included.",
        "",
        "| requests | answered with results (GLB received) | with a message | failed | unanswered | wall "
        "| throughput |",
        "|---|---|---|---|---|---|---|",
        f"| {args.clients * args.photos} | {outcomes['result']} ({avatars}) | {outcomes['message']} | "
        f"{outcomes['failed']} | {unanswered} | {wall:.0f} s | {len(rows) / wall:.2f} photos/s |",
        "",
        "| latency p50 | p95 | max | min | server start (models + warm-up) | RSS idle | RSS peak | RSS after |",
        "|---|---|---|---|---|---|---|---|",
        f"| {np.percentile(seconds, 50):.1f} s | {np.percentile(seconds, 95):.1f} s | {seconds.max():.1f} s | "
        f"{seconds.min():.1f} s | {startup:.0f} s | {idle / mib:.0f} MiB | {sampler.peak / mib:.0f} MiB | "
        f"{after / mib:.0f} MiB |",
        "",
        f"Server alive after the load: {'yes' if alive else 'NO'}; stopped by SIGTERM with exit code {code}. "
        f"Uploads left on the server after the clients closed their sessions: {left} of {len(photos)}.",
    ]
    if messages:
        lines += ["", "Messages: " + "; ".join(messages[:5])]
    publish("serve", lines, write=not args.no_write)


if __name__ == "__main__":
    main()
