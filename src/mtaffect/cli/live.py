"""``mtaffect live SOURCE --checkpoint CKPT --out DIR``: a stream, camera or file analysed as it happens.

SOURCE: a stream URL PyAV reads (``tcp://``, ``udp://``, ``rtsp://``, ``http://`` MJPEG), a capture
device (``/dev/video0``) or a file (``--realtime`` plays it at its own frame rate). The session is
recorded into ``DIR`` as ``mtaffect predict`` writes its results: ``DIR/report.json`` and
``DIR/<name>/`` (the processed frames as ``video.mp4``, ``predictions.csv``/``.parquet`` with the
GRU-refined values, plots, ``overlay.mp4``, ``done.json`` last). See docs/predict.md, "Live".
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

EXAMPLES = """examples:
  mtaffect live rtsp://192.168.1.20:554/stream --checkpoint gru_student.safetensors --out live/ --reconnect
  mtaffect live tcp://127.0.0.1:5000 --checkpoint cnn.safetensors --out live/ --duration 60
  mtaffect live /dev/video0 --checkpoint gru_student.safetensors --out lab_session/
  mtaffect live interview.mp4 --realtime --checkpoint gru_student.safetensors --out demo/
"""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.epilog = EXAMPLES
    parser.add_argument("source", metavar="SOURCE", help="stream URL, /dev/videoN or a video file")
    parser.add_argument("--checkpoint", required=True, help="a cnn or cnn_gru .safetensors checkpoint")
    parser.add_argument("--out", required=True, help="output folder (refused if it holds files)")
    parser.add_argument("--overwrite", action="store_true", help="empty --out first")
    parser.add_argument("--duration", type=float, default=None, metavar="S", help="stop after S seconds")
    parser.add_argument("--realtime", action="store_true", help="play a file at its own frame rate")
    parser.add_argument(
        "--reconnect", action="store_true", help="when the stream ends or fails, retry with backoff"
    )
    parser.add_argument("--open-timeout", type=float, default=10.0, metavar="S", help="open timeout (10)")
    parser.add_argument(
        "--read-timeout", type=float, default=5.0, metavar="S", help="a stall longer than S is an error (5)"
    )
    parser.add_argument("--detector", default="mtcnn", choices=("mtcnn", "haar"), help="face detector")
    parser.add_argument("--detect-every", type=int, default=5, metavar="N", help="full detection every N (5)")
    parser.add_argument("--max-faces", type=int, default=None, help="at most this many people")
    parser.add_argument("--backend", default="auto", choices=("auto", "torch", "onnx"), help="model runtime")
    parser.add_argument("--device", default="cpu", help="torch device (cpu, cuda)")
    parser.add_argument("--threads", type=int, default=None, help="CPU threads for the model")
    parser.add_argument("--no-plots", action="store_true", help="skip the PNG plots")
    parser.add_argument("--no-overlay", action="store_true", help="skip the overlay video")
    parser.add_argument("--quiet", action="store_true", help="no status line")


def _name(source: str) -> str:
    if "://" not in source:
        return Path(source).stem or "live"
    return "".join(c if c.isalnum() else "_" for c in source).strip("_") or "live"


class _Status:
    """One refreshed line on stderr, at most twice a second."""

    def __init__(self, enabled: bool) -> None:
        self.enabled, self.last, self.t0, self.n0 = enabled, 0.0, time.monotonic(), 0

    def __call__(self, result, stats) -> None:
        now = time.monotonic()
        if not self.enabled or now - self.last < 0.5:
            return
        fps = (stats.processed - self.n0) / max(now - self.t0, 1e-9)
        self.last, self.t0, self.n0 = now, now, stats.processed
        face = max(result.faces, key=lambda f: f.probabilities.max(), default=None)
        what = f"{face.expression} V {face.valence:+.2f} A {face.arousal:+.2f}" if face else "no face"
        lat = stats.latencies[-1] * 1000 if stats.latencies else 0.0
        line = (f"{len(result.faces)} people | {what} | {fps:.1f} fps | latency {lat:.0f} ms | "
                f"dropped {stats.dropped}")
        print(f"\r{line}\x1b[K", end="", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> int:
    import signal

    from mtaffect.predict.threads import prediction_threads

    prediction_threads()  # before torch loads OpenMP
    # Ctrl-C (SIGINT) must stop the session cleanly even when this process was started with SIGINT
    # ignored (a parent that ignores it, e.g. a test runner's worker or `cmd &` in a script): Python
    # then installs no KeyboardInterrupt handler of its own, and the stream would run to its end.
    signal.signal(signal.SIGINT, signal.default_int_handler)

    from mtaffect.io import prepare_output_dir, write_json
    from mtaffect.predict.live import LiveSession
    from mtaffect.predict.live_source import fixed_mmap_threshold, open_frames, run_stream
    from mtaffect.predict.predictor import Predictor

    fixed_mmap_threshold()  # flat memory over a long session (see its docstring)
    out = prepare_output_dir(args.out, overwrite=args.overwrite)
    predictor = Predictor.from_checkpoint(
        args.checkpoint, backend=args.backend, device=args.device, threads=args.threads,
        detector=args.detector, detect_every=args.detect_every, max_faces=args.max_faces,
    )
    name = _name(args.source)
    session = LiveSession(predictor, args.source, keep_refined=0)  # the recording keeps them
    folder = session.start_recording(out / name)
    status = _Status(not args.quiet)

    def source():
        return open_frames(args.source, realtime=args.realtime, open_timeout=args.open_timeout,
                           read_timeout=args.read_timeout)

    stats = run_stream(session, source, duration=args.duration, reconnect=args.reconnect, on_result=status)
    if status.enabled:
        print(file=sys.stderr)
    early = args.duration is not None and stats.ended in ("end of stream", "error")
    error = stats.error or (
        f"{args.source}: the stream ended after {stats.seconds:.1f} s" if early else None
    )
    if error:
        print(f"mtaffect live: {error}; finalising {folder}", file=sys.stderr)
    session.stop_recording(error=error, plots=not args.no_plots, overlay=not args.no_overlay)
    entry = dict(session.last_entry or {})
    entry.update(
        dropped=stats.dropped, received=stats.received, reconnects=stats.reconnects, ended=stats.ended,
        latency_p50=stats.latency(0.5), latency_p95=stats.latency(0.95),
        frames_per_second=stats.processed / stats.seconds if stats.seconds > 0 else None,
    )
    write_json(out / "report.json", {"backend": predictor.model.backend, "inputs": [entry]})
    p50 = entry["latency_p50"]
    lat = f", latency p50 {p50 * 1000:.0f} ms" if p50 is not None else ""
    print(f"{args.source}: {stats.processed} frames processed, {stats.dropped} dropped{lat} "
          f"({stats.ended}) -> {folder}")
    return 1 if error else 0
