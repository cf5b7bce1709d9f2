"""Fault injection for the web app's jobs (issue 12): the server is SIGKILLed in the middle of a job,
started again, the job shows as interrupted and is resumed; its result must equal an uninterrupted
``mtaffect predict`` of the same input with the same checkpoint and settings."""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

pytest.importorskip("starlette")

from mtaffect.cli import main  # noqa: E402
from mtaffect.testing import assert_close32, tiny_checkpoint  # noqa: E402

SETTINGS = ["--backend", "torch", "--no-plots", "--no-overlay"]


def _start(args: list[str]) -> tuple[subprocess.Popen, str]:
    """``mtaffect serve ARGS`` on a free port; returns the process and its address."""
    exe = Path(sys.executable).parent / "mtaffect"
    proc = subprocess.Popen([str(exe), "serve", *args, "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("mtaffect serve: "):
            return proc, line.split()[-1].rstrip("/")
    raise AssertionError("mtaffect serve did not start:\n" + "".join(seen))


def _call(url: str, path: str, body: bytes | dict | None = None) -> dict:
    data = json.dumps(body).encode() if isinstance(body, dict) else body
    request = urllib.request.Request(url + path, data=data, method="POST" if data is not None else "GET")
    with urllib.request.urlopen(request, timeout=30) as response:
        return json.loads(response.read())


def _job(url: str, job_id: str) -> dict:
    return next(j for j in _call(url, "/api/jobs")["jobs"] if j["id"] == job_id)


def _wait(url: str, job_id: str, done, seconds: float = 120) -> dict:
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        job = _job(url, job_id)
        if done(job):
            return job
        time.sleep(0.05)
    raise AssertionError(f"job {job_id} still {job['status']} after {seconds} s")


@pytest.mark.media
def test_a_job_killed_with_its_server_resumes_to_the_uninterrupted_result(tmp_path, media_dir):
    checkpoint = tiny_checkpoint(tmp_path / "tiny.safetensors")
    video = media_dir / "WolfgangLanger_Pexels.mp4"  # 472 frames: long enough to be killed mid-way
    args = ["--checkpoint", str(checkpoint), "--results", str(tmp_path / "results"), *SETTINGS]
    proc, url = _start(args)
    try:
        upload = _call(url, "/api/uploads?name=clip.mp4", video.read_bytes())
        created = _call(url, "/api/jobs", {"uploads": [upload["upload"]], "checkpoint": checkpoint.name})
        _wait(url, created["job"], lambda j: j["status"] == "running" and 0.05 < j["progress"] < 0.9)
    finally:
        proc.kill()  # SIGKILL: no clean-up of any kind
        proc.wait(10)
    proc, url = _start(args)
    try:
        assert _job(url, created["job"])["status"] == "interrupted"
        _call(url, f"/api/jobs/{created['job']}/resume", {})
        job = _wait(url, created["job"], lambda j: j["status"] not in ("queued", "running"))
        assert job["status"] == "done", job
    finally:
        proc.terminate()
        proc.wait(10)
    folder = tmp_path / "results" / created["run"] / "clip"
    assert (folder / "done.json").is_file() and not list(folder.rglob("*.tmp"))
    got = pd.read_csv(folder / "predictions.csv")

    reference = tmp_path / "reference"
    assert main(["predict", str(video), "--checkpoint", str(checkpoint), "--out", str(reference), "--quiet",
                 *SETTINGS]) == 0
    want = pd.read_csv(reference / "WolfgangLanger_Pexels" / "predictions.csv")
    assert list(got.columns) == list(want.columns) and len(got) == len(want)
    numeric = [c for c in want.columns if c != "input" and pd.api.types.is_numeric_dtype(want[c])]
    assert_close32(got[numeric].to_numpy(float), want[numeric].to_numpy(float))
    others = [c for c in want.columns if c not in numeric and c != "input"]
    pd.testing.assert_frame_equal(got[others], want[others])
