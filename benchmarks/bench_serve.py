"""The web app on a one-hour result: time to first chart, and the page's frame rate while playing.

    python benchmarks/bench_serve.py                  # 1 hour at 30 fps (108,000 frames, 2 people)
    python benchmarks/bench_serve.py --seconds 600 --keep /tmp/serve_bench

Writes a synthetic result in the ``predict --out`` layout (``mtaffect.serve.synthetic``) with a
matching 1-hour 320×180 H.264 video (a moving bar), starts ``mtaffect view`` on it in a separate
process, and drives Debian's headless chromium with playwright:

* time to first chart: from navigation start to the first uPlot chart drawn with data
  (``window.mtaffect.firstChartMs``), cold (the server reads the table for the first time) and
  warm (median of 5 reloads), plus the ``/api/series`` answer itself (bytes, milliseconds);
* frame rate while playing: ``requestAnimationFrame`` callbacks per second over 10 s of playback
  (each one moves the chart cursors, boxes, circumplex and values), with the video's own
  presented/dropped frame counts, at full zoom-out and zoomed in to 30 s.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from fractions import Fraction
from pathlib import Path

import av
import numpy as np

from mtaffect.serve.synthetic import write_synthetic_result


def write_video(path: Path, seconds: float, fps: int = 30, size: tuple[int, int] = (320, 180)) -> None:
    """A plain H.264 video the browser plays: a bar moving across a grey frame."""
    w, h = size
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps, 1))
        stream.width, stream.height, stream.pix_fmt = w, h, "yuv420p"
        stream.options = {"preset": "ultrafast", "g": str(2 * fps)}
        base = np.full((h, w, 3), 96, np.uint8)
        for i in range(int(seconds * fps)):
            img = base.copy()
            x = (i * 2) % w
            img[:, x : x + 8] = 230
            for packet in stream.encode(av.VideoFrame.from_ndarray(img, format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)


def measure(url: str, rid: str, screenshot: Path | None) -> dict:
    from playwright.sync_api import sync_playwright

    view = f"{url}#/view?id={rid}"
    res: dict = {}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=shutil.which("chromium") or "/usr/bin/chromium")
        page = browser.new_page(viewport={"width": 1280, "height": 900})

        def first_chart() -> float:
            page.goto("about:blank")
            page.goto(view)
            page.wait_for_selector("body[data-chart=ready]", timeout=120_000)
            return float(page.evaluate("window.mtaffect.firstChartMs"))

        res["first_chart_cold_ms"] = round(first_chart(), 1)
        warm = [first_chart() for _ in range(5)]
        res["first_chart_warm_ms"] = round(statistics.median(warm), 1)
        t = time.perf_counter()
        with urllib.request.urlopen(f"{url}api/series?id={rid}&points=1200") as r:
            body = r.read()
        res["series_ms"] = round(1000 * (time.perf_counter() - t), 1)
        res["series_bytes"] = len(body)
        res["series_points"] = len(json.loads(body)["time"])
        page.wait_for_function("document.getElementById('video').readyState >= 2", timeout=60_000)

        def fps(label: str) -> None:
            page.evaluate("document.getElementById('video').play()")
            page.wait_for_timeout(1000)
            probe = ("(q => [window.mtaffect.rafCount, performance.now(), q.totalVideoFrames,"
                     " q.droppedVideoFrames])(document.getElementById('video').getVideoPlaybackQuality())")
            a = page.evaluate(probe)
            page.wait_for_timeout(10_000)
            b = page.evaluate(probe)
            page.evaluate("document.getElementById('video').pause()")
            secs = (b[1] - a[1]) / 1000
            res[f"raf_per_s_{label}"] = round((b[0] - a[0]) / secs, 1)
            res[f"video_frames_per_s_{label}"] = round((b[2] - a[2]) / secs, 1)
            res[f"dropped_{label}"] = b[3] - a[3]

        page.evaluate("document.getElementById('video').currentTime = 1200")
        fps("full_hour")
        if screenshot is not None:
            page.screenshot(path=str(screenshot), full_page=True)
        page.evaluate("loadSeries(1200, 1230)")
        page.wait_for_function("window.mtaffect.state.view.series.level === 0")
        page.evaluate("document.getElementById('video').currentTime = 1200")
        fps("zoom_30s")
        res["chromium"] = browser.version
        browser.close()
    return res


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3600.0)
    ap.add_argument("--keep", help="write the result here and keep it (default: a temporary folder)")
    ap.add_argument("--screenshot", help="save a screenshot of the page while playing (PNG)")
    args = ap.parse_args()
    root = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="serve_bench_"))
    run = root / "hour"
    t = time.perf_counter()
    if not (run / "long" / "done.json").is_file():
        write_synthetic_result(run, seconds=args.seconds, fps=30)
        write_video(run / ".media" / "long.mp4", args.seconds)
    prep = time.perf_counter() - t
    exe = Path(sys.executable).parent / "mtaffect"
    proc = subprocess.Popen([str(exe), "view", str(root), "--port", "0"], stdout=subprocess.PIPE, text=True)
    try:
        line = ""
        while not line.startswith("mtaffect view: "):
            line = proc.stdout.readline()
            if not line:
                raise SystemExit("mtaffect view did not start")
        url = line.split()[-1]
        res = measure(url, "hour/long", Path(args.screenshot) if args.screenshot else None)
    finally:
        proc.terminate()
        proc.wait(10)
        if not args.keep:
            shutil.rmtree(root, ignore_errors=True)
    res = {"frames": int(args.seconds * 30), "prepare_s": round(prep, 1), **res}
    print(json.dumps(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
