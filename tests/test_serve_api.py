"""The web app's API through Starlette's test client: uploads, jobs, results, series, safety."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx2")

from starlette.testclient import TestClient  # noqa: E402

from mtaffect.cli import main  # noqa: E402
from mtaffect.labels import EXPRESSIONS  # noqa: E402
from mtaffect.serve.app import create_app  # noqa: E402
from mtaffect.serve.jobs import JobCancelled, JobManager, TrackedPredictor  # noqa: E402
from mtaffect.serve.results import load_result  # noqa: E402
from mtaffect.serve.synthetic import write_synthetic_result  # noqa: E402
from mtaffect.testing import tiny_checkpoint  # noqa: E402

OPTIONS = {"backend": "torch"}


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_gru.safetensors")


def _client(root: Path, checkpoint: Path | None = None, **kw) -> TestClient:
    cks = {checkpoint.name: checkpoint} if checkpoint else None
    app = create_app(root, checkpoints=cks, predictor_options=OPTIONS, **kw)
    return TestClient(app, base_url="http://127.0.0.1:8765")


def _upload(client: TestClient, path: Path, name: str | None = None):
    return client.post(f"/api/uploads?name={name or path.name}", content=path.read_bytes())


def _wait(client: TestClient, job: str, timeout: float = 90.0) -> dict:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        j = next(j for j in client.get("/api/jobs").json()["jobs"] if j["id"] == job)
        if j["status"] not in ("queued", "running"):
            return j
        time.sleep(0.2)
    raise AssertionError(f"job {job} did not finish in {timeout} s")


def test_job_end_to_end_in_predict_layout(checkpoint, media_dir, tmp_path) -> None:
    root = tmp_path / "results"
    with _client(root, checkpoint, plots=False) as c:
        ups = [_upload(c, media_dir / n).json()["upload"] for n in ("single_face.mp4", "multi_face.jpg")]
        job = c.post("/api/jobs", json={"uploads": ups}).json()
        assert _wait(c, job["job"])["status"] == "done"
        run = root / job["run"]
        # the documented predict --out layout, written by the CLI's runner
        report = json.loads((run / "report.json").read_text())
        assert {e["output"] for e in report["inputs"]} == {"single_face", "images"}
        for out in ("single_face", "images"):
            assert (run / out / "predictions.parquet").is_file() and (run / out / "done.json").is_file()
        assert (run / "single_face" / "overlay.mp4").stat().st_size > 0
        assert not list((root / ".uploads").iterdir())  # uploads moved into the job's folder
        jobs = c.get("/api/jobs").json()["jobs"]
        assert jobs[0]["frames_done"] == jobs[0]["frames_total"] == 73  # 72 frames + 1 photo

        results = c.get("/api/results").json()["results"]
        assert sorted(r["id"] for r in results) == [f"{job['run']}/images", f"{job['run']}/single_face"]
        assert [r["output"] for r in c.get("/api/results?q=IMAGES").json()["results"]] == ["images"]
        rid = f"{job['run']}/single_face"
        meta = c.get(f"/api/meta?id={rid}").json()
        table = pd.read_parquet(run / "single_face" / "predictions.parquet")
        assert meta["kind"] == "video" and meta["frames"] == 72 and meta["tracks"] == [0]
        assert meta["playable"] == [True] and meta["complete"] and "predictions.csv" in meta["downloads"]
        times = np.frombuffer(c.get(f"/api/times?id={rid}").content, "<f8")
        np.testing.assert_array_equal(times, table.groupby("frame")["time"].first().to_numpy(float))
        # raw rows of a window: exactly the table's rows
        rows = c.get(f"/api/frames?id={rid}&t0=0.5&t1=1.0").json()["rows"]
        sel = table[(table["time"] >= 0.5) & (table["time"] <= 1.0)]
        assert [r["frame"] for r in rows] == sel["frame"].tolist()
        assert rows[0]["valence"] == pytest.approx(float(sel["valence"].iloc[0]), abs=1e-4)
        people = c.get(f"/api/summary?id={rid}").json()["people"]
        assert people[0]["frames"] == 72 and sum(people[0]["share"]) == pytest.approx(1.0)
        assert people[0]["valence_mean"] == pytest.approx(float(table["valence"].mean()), abs=1e-4)
        csv = (run / "single_face" / "predictions.csv").read_bytes()
        assert c.get(f"/files/{rid}/predictions.csv").content == csv
        assert c.get(f"/api/media?id={rid}").content == (media_dir / "single_face.mp4").read_bytes()
        # the photo: one row per face, the image served back
        img = f"{job['run']}/images"
        faces = c.get(f"/api/image?id={img}&input=0").json()["rows"]
        photo = pd.read_parquet(run / "images" / "predictions.parquet")
        assert len(faces) == int(photo["face_found"].sum()) > 1
        assert c.get(f"/api/media?id={img}&input=0").content == (media_dir / "multi_face.jpg").read_bytes()
        # delete a run: gone from the disk and the lists
        assert c.request("DELETE", f"/api/runs?run={job['run']}").status_code == 200
        assert not run.exists() and c.get("/api/results").json()["results"] == []
        assert c.get("/api/jobs").json()["jobs"] == []


def test_uploads_are_checked_capped_and_kept_inside_the_root(checkpoint, media_dir, tmp_path) -> None:
    root = tmp_path / "results"
    (tmp_path / "broken.mp4").write_bytes((media_dir / "single_face.mp4").read_bytes()[:3000])
    (tmp_path / "junk.jpg").write_bytes(b"not an image")
    with _client(root, checkpoint, max_upload_mb=0.1) as c:
        r = _upload(c, tmp_path / "broken.mp4")
        assert r.status_code == 400 and r.json()["error"].startswith("broken.mp4: not a readable video")
        r = _upload(c, tmp_path / "junk.jpg")
        assert r.status_code == 400 and r.json()["error"].startswith("junk.jpg: not a readable image")
        r = _upload(c, media_dir / "OpenFace_Test.csv")
        assert r.status_code == 415 and "not a video or image" in r.json()["error"]
        r = _upload(c, media_dir / "single_face.mp4")  # 208 kB > 0.1 MB
        assert r.status_code == 413 and "upload cap" in r.json()["error"]
        assert c.post("/api/uploads?name=x.jpg", content=b"").status_code == 400
        # a hostile name lands inside the root under a plain name; the server keeps serving
        r = _upload(c, media_dir / "single_face.jpg", name="../../../evil.jpg")
        assert r.status_code == 200, r.text
        saved = list(root.rglob("evil.jpg"))
        assert len(saved) == 1 and saved[0].is_relative_to(root)
        assert not (tmp_path / "evil.jpg").exists() and not (root.parent.parent / "evil.jpg").exists()
        assert [p.name for p in (root / ".uploads").iterdir()] == [r.json()["upload"]]  # refused ones removed
        assert c.post("/api/jobs", json={"uploads": ["../x"]}).status_code == 400
        body = {"uploads": [r.json()["upload"]], "checkpoint": "/etc/passwd"}
        assert c.post("/api/jobs", json=body).status_code == 400


def test_no_request_path_leaves_the_root(tmp_path) -> None:
    root = tmp_path / "results"
    write_synthetic_result(root / "run", seconds=2)
    (tmp_path / "secret.mp4").write_bytes(b"secret")
    (root / "run" / "long" / "link").symlink_to(tmp_path)
    with _client(root) as c:
        assert c.get("/api/meta?id=run/long").status_code == 200
        for rid in ("../results/run/long", "/etc", "run/../../results/run/long", "run/long/link", ".", ""):
            assert c.get(f"/api/meta?id={rid}").status_code == 404, rid
        for path in ("/files/run/long/../../../secret.mp4", "/files/run/long/link/secret.mp4",
                     "/files/run/long/report.json", "/files/%2e%2e/secret.mp4"):
            assert c.get(path).status_code == 404, path
        assert c.get("/api/media?id=run/long").status_code == 404  # its input is not under the root
        assert c.request("DELETE", "/api/runs?run=..").status_code == 404
        assert c.request("DELETE", "/api/runs?run=run/long").status_code == 404
        assert (root / "run" / "long" / "predictions.csv").is_file()
        assert c.post("/api/uploads?name=a.mp4", content=b"x").status_code == 403  # view-only: no uploads


def test_series_are_downsampled_per_zoom_level(tmp_path) -> None:
    folder = write_synthetic_result(tmp_path / "run", seconds=200, fps=30, jitter=0.3)
    table = pd.read_parquet(folder / "predictions.parquet")
    loaded = load_result(folder)
    with _client(tmp_path) as c:
        full = c.get("/api/series?id=run/long&points=500").json()
        n = 6000
        assert full["bucket"] == 16 and len(full["time"]) == n // 16 <= 500  # 2**4 frames per point
        t0 = table[table["track_id"] == 0].set_index("frame")
        for b in (0, 100, 374):  # a bucket's value is the mean of its frames where the person has a face
            frames = [f for f in range(16 * b, 16 * b + 16) if f in t0.index]
            want = t0.loc[frames, "valence"].astype(float).mean()
            assert full["tracks"]["0"]["valence"][b] == pytest.approx(want, abs=1e-4)
            probs = t0.loc[frames, list(EXPRESSIONS)].astype(float).mean().to_numpy()
            assert full["tracks"]["0"]["expression"][b] == int(np.argmax(probs))
        gap = int(0.42 * n) // 16  # person 0 absent from 40 % to 45 %: gaps, not zeros
        assert full["tracks"]["0"]["valence"][gap] is None and full["tracks"]["0"]["expression"][gap] is None
        assert full["tracks"]["1"]["arousal"][10] is None  # person 1 only in the second half
        # zoomed in: one point per frame, the table's own times and values (variable frame rate)
        zoom = c.get("/api/series?id=run/long&t0=150&t1=160&points=2000").json()
        assert zoom["level"] == 0
        times = loaded.times
        i0 = int(np.searchsorted(times, 150)) - 1
        assert zoom["time"][:3] == pytest.approx(times[i0 : i0 + 3], abs=1e-4)
        assert zoom["time"][-1] >= 160 and len(zoom["time"]) < 320
        v = table[(table["track_id"] == 1) & (table["frame"] == i0)]["valence"].iloc[0]
        assert zoom["tracks"]["1"]["valence"][0] == pytest.approx(float(v), abs=1e-4)
        mid = c.get("/api/series?id=run/long&t0=0&t1=100&points=500").json()
        assert mid["level"] == 3 and mid["first"] == 0  # half the span: one level down


def test_restart_marks_running_jobs_interrupted_and_resume_finishes_them(checkpoint, media_dir, tmp_path):
    root = tmp_path / "results"
    (root / "r1" / ".media").mkdir(parents=True)
    shutil.copy(media_dir / "single_face.jpg", root / "r1" / ".media" / "single_face.jpg")
    (root / ".jobs").mkdir()
    state = {"id": "ab12", "run": "r1", "inputs": ["single_face.jpg"], "checkpoint": checkpoint.name,
             "status": "running", "created": 1.0}
    (root / ".jobs" / "ab12.json").write_text(json.dumps(state))
    cks = {checkpoint.name: checkpoint}
    jm = JobManager(root, cks, predictor_options=OPTIONS, plots=False, overlay=False)
    try:
        assert jm.get("ab12").status == "interrupted"
        assert json.loads((root / ".jobs" / "ab12.json").read_text())["status"] == "interrupted"
        jm.resume("ab12")
        end = time.monotonic() + 60
        while jm.get("ab12").status in ("queued", "running") and time.monotonic() < end:
            time.sleep(0.1)
        assert jm.get("ab12").status == "done"
        assert (root / "r1" / "images" / "done.json").is_file()
        with pytest.raises(ValueError, match="only interrupted, cancelled, error"):
            jm.resume("ab12")
    finally:
        jm.stop()


def test_cancel_a_queued_and_a_running_job(checkpoint, media_dir, tmp_path) -> None:
    root = tmp_path / "results"
    jm = JobManager(root, {checkpoint.name: checkpoint}, workers=0, predictor_options=OPTIONS)
    up = root / ".uploads" / "u1"
    up.mkdir(parents=True)
    shutil.copy(media_dir / "single_face.jpg", up)
    job = jm.submit([up / "single_face.jpg"], checkpoint.name)
    assert jm.cancel(job.id).status == "cancelled"
    assert jm.resume(job.id).status == "queued"
    # a running video stops at the next chunk; its folder is left unfinished (no marker)
    predictor = TrackedPredictor.from_checkpoint(checkpoint, **OPTIONS)
    seen: list[int] = []
    predictor.cancel_event = __import__("threading").Event()

    def progress(name: str, frames: int) -> None:
        seen.append(frames)
        predictor.cancel_event.set()

    predictor.on_progress = progress
    from mtaffect.predict.runner import predict_inputs

    with pytest.raises(JobCancelled):
        predict_inputs(predictor, [str(media_dir / "single_face.mp4")], tmp_path / "out", plots=False,
                       overlay=False, progress=False)
    assert len(seen) == 1 and 0 < seen[0] < 72
    assert not (tmp_path / "out" / "single_face" / "done.json").exists()


def test_token_off_loopback_and_host_check_on_loopback(tmp_path) -> None:
    write_synthetic_result(tmp_path / "run", seconds=1)
    app = create_app(tmp_path, token="s3cret", loopback=False)
    with TestClient(app, base_url="http://192.168.1.5:8765") as c:
        assert c.get("/api/results").status_code == 401
        assert c.get("/api/results", headers={"x-mtaffect-token": "wrong"}).status_code == 401
        assert c.get("/api/results", headers={"x-mtaffect-token": "s3cret"}).status_code == 200
        r = c.get("/?token=s3cret")
        assert r.status_code == 200 and "mtaffect_token=s3cret" in r.headers["set-cookie"]
        assert c.get("/api/results").status_code == 200  # the cookie from now on
    with TestClient(create_app(tmp_path), base_url="http://evil.example:8765") as c:
        assert c.get("/api/results").status_code == 403  # DNS rebinding onto 127.0.0.1
    with TestClient(create_app(tmp_path), base_url="http://localhost:8765") as c:
        assert c.get("/api/results").status_code == 200


def test_cli_view_serves_a_predict_folder_and_serve_needs_a_checkpoint(tmp_path, capsys) -> None:
    write_synthetic_result(tmp_path / "out", seconds=1)
    assert main(["serve", "--results", str(tmp_path / "r")]) == 2
    assert "give --checkpoint FILE or --models DIR" in capsys.readouterr().err
    assert main(["view", str(tmp_path / "missing")]) == 2
    exe = Path(sys.executable).parent / "mtaffect"
    proc = subprocess.Popen([str(exe), "view", str(tmp_path / "out"), "--port", "0"], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    try:
        lines = [proc.stdout.readline(), proc.stdout.readline()]
        url = lines[1].split()[-1]
        assert lines[1].startswith("mtaffect view: http://127.0.0.1:"), lines
        with urllib.request.urlopen(url + "api/results") as r:
            assert [x["id"] for x in json.load(r)["results"]] == ["long"]
        with urllib.request.urlopen(url + "api/info") as r:
            assert json.load(r)["jobs"] is False
    finally:
        proc.terminate()
        proc.wait(10)


def test_checkpoint_menu_and_queued_runs_are_not_deleted(checkpoint, media_dir, tmp_path) -> None:
    from mtaffect.cli.serve import checkpoints_of
    from mtaffect.errors import UserError

    models = tmp_path / "models"
    models.mkdir()
    for name in ("b.safetensors", "a.safetensors"):
        shutil.copy(checkpoint, models / name)
    assert checkpoints_of(None, str(models)) == (
        {n: (models / n).resolve() for n in ("a.safetensors", "b.safetensors")},
        "a.safetensors",
    )
    found, default = checkpoints_of(str(checkpoint), str(models))
    assert default == checkpoint.name and len(found) == 3
    with pytest.raises(UserError, match="no such checkpoint"):
        checkpoints_of(str(tmp_path / "missing.safetensors"), None)
    # no worker: the job stays queued, and its run folder cannot be deleted under it
    with _client(tmp_path / "results", checkpoint, workers=0) as c:
        assert c.get("/api/info").json()["checkpoints"] == [checkpoint.name]
        up = _upload(c, media_dir / "single_face.jpg").json()["upload"]
        job = c.post("/api/jobs", json={"uploads": [up], "checkpoint": checkpoint.name}).json()
        (tmp_path / "results" / job["run"] / "report.json").write_text("{}")
        r = c.request("DELETE", f"/api/runs?run={job['run']}")
        assert r.status_code == 409 and "cancel it first" in r.json()["error"]
        assert c.post(f"/api/jobs/{job['job']}/cancel").json()["status"] == "cancelled"
        assert c.request("DELETE", f"/api/runs?run={job['run']}").status_code == 200
        assert c.post("/api/jobs/nope/cancel").status_code == 404


def test_without_the_vendored_charts_the_api_still_works(tmp_path, monkeypatch) -> None:
    import mtaffect.serve.app as app_module

    write_synthetic_result(tmp_path / "run", seconds=1)
    monkeypatch.setattr(app_module, "VENDOR", tmp_path / "no_vendor")
    with _client(tmp_path) as c:
        assert c.get("/api/info").json()["charts"] is False  # the page shows how to get uPlot
        assert c.get("/api/series?id=run/long&points=100").json()["bucket"] == 1
        assert "Run `make setup`" in c.get("/static/app.js").text


def test_a_running_result_is_read_from_its_partial_csv(tmp_path) -> None:
    import os

    folder = write_synthetic_result(tmp_path / "run", seconds=4)
    data = (folder / "predictions.csv").read_bytes()
    lines = data.splitlines(keepends=True)
    running = tmp_path / "run" / "live"
    running.mkdir()
    # the writer is mid-way through row 51: the half line is not read
    (running / "predictions.partial.csv").write_bytes(b"".join(lines[:51]) + lines[51][:25])
    stale = tmp_path / ".uploads" / "old"
    stale.mkdir(parents=True)
    os.utime(stale, (time.time() - 2 * 86400,) * 2)
    (tmp_path / ".uploads" / "new").mkdir()
    with _client(tmp_path) as c:
        status = {r["output"]: r["status"] for r in c.get("/api/results").json()["results"]}
        assert status == {"long": "ok", "live": "running"}
        meta = c.get("/api/meta?id=run/live").json()
        full = pd.read_csv(folder / "predictions.csv")
        assert not meta["complete"] and meta["frames"] == full["frame"].iloc[49] + 1
        rows = c.get("/api/frames?id=run/live&t0=0&t1=100").json()["rows"]
        assert len(rows) == int(full.iloc[:50]["face_found"].sum())
        # a malformed cookie is no token, not a crash; checked but abandoned uploads go after an hour
    assert not stale.exists() and (tmp_path / ".uploads" / "new").is_dir()
    with TestClient(create_app(tmp_path, token="t", loopback=False), base_url="http://10.0.0.2") as c:
        assert c.get("/api/results", headers={"cookie": 'a"b=\x7f; ;;='}).status_code == 401
