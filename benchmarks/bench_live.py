"""Live analysis on a local TCP stream: sustained fps, dropped-frame share, latency, memory over time.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.bench_live [--minutes 1] [--kind cnn]
        [--video PATH] [--no-record] [--json out.json]

A writer process (this file with ``--writer``) streams ``--video`` (default
``WolfgangLanger_Pexels.mp4``, 640×360), looped at 30 fps, as MPEG-TS (libx264 ultrafast,
zerolatency) on ``tcp://127.0.0.1:PORT?listen=1``, as a camera or another program would. This
process runs what ``mtaffect live`` runs (:func:`mtaffect.predict.live_source.run_stream` into a
recording :class:`mtaffect.predict.live.LiveSession`, default Predictor settings) with a
random-weight ResNet-50 checkpoint (bench_predict's; timing does not depend on the weights).

Figures: processed frames/s; the dropped share (frames decoded but overwritten before the loop
took them, of all decoded); capture-to-result latency p50/p95 (from the moment the frame was
decoded to the moment ``push`` returned its CNN values: the sender's encode and the loopback
transport, about 70 ms here per issue 18, are not in it); this process's RSS every 10 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

ROOT = Path(__file__).resolve().parents[1]


def writer(port: int, video: str, seconds: float) -> None:
    """Stream ``video`` looped at 30 fps for ``seconds`` on ``tcp://127.0.0.1:port?listen=1``."""
    import av

    out = av.open(f"tcp://127.0.0.1:{port}?listen=1", "w", format="mpegts", timeout=30)
    stream = None
    start, n = time.monotonic(), 0
    try:
        while time.monotonic() - start < seconds:
            with av.open(video) as src:
                for frame in src.decode(video=0):
                    if stream is None:
                        stream = out.add_stream("libx264", rate=30)
                        stream.width, stream.height, stream.pix_fmt = frame.width, frame.height, "yuv420p"
                        stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
                    wait = start + n / 30 - time.monotonic()
                    if wait > 0:
                        time.sleep(wait)
                    rgb = frame.to_ndarray(format="rgb24")
                    img = av.VideoFrame.from_ndarray(rgb, format="rgb24").reformat(format="yuv420p")
                    img.pts = n
                    out.mux(stream.encode(img))
                    n += 1
                    if time.monotonic() - start >= seconds:
                        break
        out.mux(stream.encode(None))
        out.close()
    except (OSError, av.error.FFmpegError):
        pass  # the reader hung up first (the benchmark kills this process when it is done anyway)


def rss_mb() -> float:
    """This process's resident memory (MB), from /proc."""
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1e6


def main(argv: list[str] | None = None) -> dict:
    fmt = argparse.RawDescriptionHelpFormatter
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=fmt)
    parser.add_argument("--video", default=str(ROOT / ".cache" / "media" / "WolfgangLanger_Pexels.mp4"))
    parser.add_argument("--minutes", type=float, default=1.0)
    parser.add_argument("--kind", default="cnn", choices=("cnn", "cnn_gru"))
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--no-record", action="store_true", help="no recording (the model lanes only)")
    parser.add_argument(
        "--dynamic-mmap", action="store_true", help="leave glibc's mmap threshold dynamic (RSS grows)"
    )
    parser.add_argument("--json", default=None, help="write the results here")
    parser.add_argument("--writer", nargs=2, metavar=("PORT", "SECONDS"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.writer:
        writer(int(args.writer[0]), args.video, float(args.writer[1]))
        return {}

    import socket

    from benchmarks.bench_predict import make_checkpoints
    from mtaffect.predict.live import LiveSession
    from mtaffect.predict.live_source import fixed_mmap_threshold, open_frames, run_stream
    from mtaffect.predict.predictor import Predictor
    from mtaffect.predict.threads import prediction_threads

    prediction_threads()
    if not args.dynamic_mmap:
        fixed_mmap_threshold()  # as mtaffect live does
    tmp = Path(tempfile.mkdtemp(prefix="bench_live_"))
    ckpt = make_checkpoints(Path(tempfile.gettempdir()) / "mtaffect_bench_predict")[args.kind]
    predictor = Predictor.from_checkpoint(ckpt, backend=args.backend)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    seconds = args.minutes * 60
    proc = subprocess.Popen(
        [sys.executable, "-m", "benchmarks.bench_live", "--video", args.video, "--writer", str(port),
         str(seconds + 30)],
        cwd=ROOT,
    )
    time.sleep(1.0)
    session = LiveSession(predictor, "bench", keep_refined=0)  # as mtaffect live
    if not args.no_record:
        session.start_recording(tmp / "rec")
    memory: list[tuple[float, float]] = [(0.0, rss_mb())]
    t0 = time.monotonic()

    def on_result(result, stats) -> None:
        now = time.monotonic() - t0
        if now - memory[-1][0] >= 10:
            memory.append((round(now, 1), round(rss_mb(), 1)))
            print(f"{now:6.0f} s: {stats.processed / now:.1f} fps, dropped {stats.dropped}/{stats.received}, "
                  f"p95 {stats.latency(0.95) * 1000:.0f} ms, RSS {memory[-1][1]:.0f} MB", file=sys.stderr)

    try:
        stats = run_stream(
            session, lambda: open_frames(f"tcp://127.0.0.1:{port}", read_timeout=10),
            duration=seconds, on_result=on_result,
        )
        t_stop = time.monotonic()
        if not args.no_record:
            session.stop_recording(plots=False, overlay=False)
        finalise = time.monotonic() - t_stop
    finally:
        proc.kill()
        proc.wait()
    result = {
        "video": Path(args.video).name,
        "kind": args.kind,
        "backend": predictor.model.backend,
        "record": not args.no_record,
        "cores": os.cpu_count(),
        "seconds": round(stats.seconds, 1),
        "processed": stats.processed,
        "received": stats.received,
        "fps": round(stats.processed / stats.seconds, 2),
        "source_fps": round(stats.received / stats.seconds, 2),
        "dropped_share": round(stats.dropped / max(stats.received, 1), 3),
        "latency_p50_ms": round(stats.latency(0.5) * 1000, 1),
        "latency_p95_ms": round(stats.latency(0.95) * 1000, 1),
        "latency_max_ms": round(max(stats.latencies) * 1000, 1),
        "error": stats.error,
        "ended": stats.ended,
        "finalise_s": round(finalise, 1),
        "rss_mb": memory,
    }
    print(json.dumps(result, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
