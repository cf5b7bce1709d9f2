"""A PyAV writer process for tests/test_live.py: ``python live_writer.py PORT VIDEO SECONDS [STALL]`` serves
VIDEO, looped at 30 fps, on ``tcp://127.0.0.1:PORT?listen=1`` as MPEG-TS (libx264 ultrafast,
zerolatency), as a camera or another program would stream it."""

from __future__ import annotations

import sys
import time

import av


def _writer(port: int, video: str, seconds: float, stall: float = 0.0) -> None:
    """Serve ``video`` (looped, at its frame rate) on ``tcp://127.0.0.1:port?listen=1`` as MPEG-TS for
    ``seconds``; then, with ``stall`` > 0, keep the connection open without sending for ``stall`` s."""
    out = av.open(f"tcp://127.0.0.1:{port}?listen=1", "w", format="mpegts", timeout=20)
    stream = out.add_stream("libx264", rate=30)
    stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
    stream.options = {"preset": "ultrafast", "tune": "zerolatency"}
    start, n = time.monotonic(), 0
    while time.monotonic() - start < seconds:
        with av.open(video) as src:
            for frame in src.decode(video=0):
                wait = start + n / 30 - time.monotonic()
                if wait > 0:
                    time.sleep(wait)
                img = av.VideoFrame.from_ndarray(frame.to_ndarray(format="rgb24"), format="rgb24")
                img.pts = n
                out.mux(stream.encode(img.reformat(format="yuv420p")))
                n += 1
                if time.monotonic() - start >= seconds:
                    break
    if stall > 0:
        time.sleep(stall)  # a stalled sender: connected, silent
    out.mux(stream.encode(None))
    out.close()


if __name__ == "__main__":
    stall = float(sys.argv[4]) if len(sys.argv) > 4 else 0.0
    _writer(int(sys.argv[1]), sys.argv[2], float(sys.argv[3]), stall)
