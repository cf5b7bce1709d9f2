"""Cross-site writes, pending uploads and the loopback token (issue 19, item 1), through the API.

The browser side (a page on a second local origin trying the same requests in Chromium) is in
tests/test_serve_browser.py, beside the server it reuses.
"""

from __future__ import annotations

import asyncio
import json
import os
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

pytest.importorskip("starlette")
pytest.importorskip("httpx2")

from starlette.applications import Starlette  # noqa: E402
from starlette.routing import WebSocketRoute  # noqa: E402
from starlette.testclient import TestClient  # noqa: E402
from starlette.websockets import WebSocket, WebSocketDisconnect  # noqa: E402

from mtaffect.cli import main  # noqa: E402
from mtaffect.serve.app import create_app  # noqa: E402
from mtaffect.serve.guard import Guard, check_origin  # noqa: E402
from mtaffect.serve.synthetic import write_synthetic_result  # noqa: E402

OWN = "http://127.0.0.1:8765"
EVIL = {"origin": "http://evil.example", "content-type": "text/plain"}
PAGE = {"origin": OWN, "sec-fetch-site": "same-origin", "x-mtaffect-page": "1"}


@pytest.fixture(scope="module")
def jpeg() -> bytes:
    """A small photo that decodes (the upload check decodes every file)."""
    ok, data = cv2.imencode(".jpg", np.full((32, 32, 3), 128, np.uint8))
    assert ok
    return data.tobytes()


def _client(root: Path, **kw) -> TestClient:
    # a checkpoint name is all a job needs to be queued; with no worker it never loads
    cks = {"tiny.safetensors": root.parent / "tiny.safetensors"}
    return TestClient(create_app(root, checkpoints=cks, workers=0, **kw), base_url=OWN)


def _waiting(root: Path) -> list[str]:
    folder = root / ".uploads"
    return sorted(p.name for p in folder.iterdir()) if folder.is_dir() else []


@pytest.mark.parametrize(
    ("headers", "refused"),
    [
        ({}, None),  # curl, Python: no browser sent it
        ({"origin": OWN}, None),
        ({"origin": OWN + "/", "sec-fetch-site": "same-origin"}, None),
        ({"origin": "HTTP://127.0.0.1:8765"}, None),  # origins compare case-insensitively
        ({"sec-fetch-site": "none"}, None),  # the user's own navigation
        ({"origin": "http://evil.example"}, "Origin http://evil.example is not this server's"),
        ({"origin": "http://127.0.0.1:9999"}, "is not this server's"),  # another local port
        ({"origin": "https://127.0.0.1:8765"}, "is not this server's"),
        ({"origin": "null"}, "Origin: null"),
        ({"sec-fetch-site": "cross-site"}, "Sec-Fetch-Site: cross-site"),
        ({"origin": OWN, "sec-fetch-site": "same-site"}, "Sec-Fetch-Site: same-site"),
        ({"sec-fetch-site": "surprise"}, "Sec-Fetch-Site: surprise"),
    ],
)
def test_check_origin(headers: dict, refused: str | None) -> None:
    reason = check_origin(headers, {OWN})
    assert reason is None if refused is None else refused in reason, reason


def test_the_issues_cross_site_requests_are_refused(tmp_path, jpeg) -> None:
    root = tmp_path / "results"
    write_synthetic_result(root / "run", seconds=1)
    with _client(root) as c:
        for extra in ({}, {"origin": "null"}, {"origin": None, "sec-fetch-site": "cross-site"},
                      {"origin": "http://127.0.0.1:9999", "sec-fetch-site": "same-site"}):
            headers = {k: v for k, v in {**EVIL, **extra}.items() if v is not None}
            r = c.post("/api/uploads?name=x.jpg", content=jpeg, headers=headers)
            assert r.status_code == 403 and "cross-site request refused" in r.json()["error"], headers
            assert "\n" not in r.json()["error"]
        assert _waiting(root) == []  # nothing written, nothing decoded
        # a program (no Origin, no Sec-Fetch-Site) still uploads; a foreign page cannot start its job
        up = c.post("/api/uploads?name=x.jpg", content=jpeg).json()["upload"]
        body = json.dumps({"uploads": [up]})  # sent as text/plain: a "simple" request, no preflight
        r = c.post("/api/jobs", content=body, headers=EVIL)
        assert r.status_code == 403 and "evil.example" in r.json()["error"]
        assert c.get("/api/jobs").json()["jobs"] == [] and _waiting(root) == [up]
        # the other writes: refused before the route (not 404 / 405)
        assert c.post("/api/jobs/nope/cancel", headers=EVIL).status_code == 403
        assert c.request("DELETE", "/api/runs?run=run", headers=EVIL).status_code == 403
        assert c.put("/api/jobs", content=body, headers=EVIL).status_code == 403
        assert (root / "run" / "report.json").is_file()
        # the page's own write needs its header too; with it, it works
        r = c.post("/api/jobs", content=body, headers={**PAGE, "content-type": "text/plain"})
        assert r.status_code == 200, r.text
        # reads stay open (the browser keeps their answers from foreign pages), and no CORS grant:
        # a preflight for the page's header gets no Access-Control-Allow-* header
        r = c.get("/api/jobs", headers=EVIL)
        assert r.status_code == 200 and len(r.json()["jobs"]) == 1
        asks = {"origin": "http://evil.example", "access-control-request-method": "POST",
                "access-control-request-headers": "x-mtaffect-page"}
        pre = c.options("/api/jobs", headers=asks)
        assert not [h for h in pre.headers if h.lower().startswith("access-control-allow")]
        assert not [h for h in r.headers if h.lower().startswith("access-control-allow")]
        # no other site's page may embed an answer either (it would learn which results exist)
        for answer in (r, pre, c.get("/static/app.js"), c.post("/api/jobs", headers=EVIL)):
            assert answer.headers["cross-origin-resource-policy"] == "same-origin"


def test_the_page_header_and_the_allowed_origins(tmp_path, jpeg) -> None:
    root = tmp_path / "results"
    with _client(root) as c:
        no_page = {"origin": OWN, "sec-fetch-site": "same-origin"}
        r = c.post("/api/uploads?name=x.jpg", content=jpeg, headers=no_page)
        assert r.status_code == 403 and "X-Mtaffect-Page" in r.json()["error"]
        assert c.post("/api/uploads?name=x.jpg", content=jpeg, headers=PAGE).status_code == 200
        # the origin is the one the browser addressed: localhost, or a forwarded port (ssh -L)
        for host in ("localhost:8765", "127.0.0.1:9000", "[::1]:8765"):
            headers = {**PAGE, "host": host, "origin": f"http://{host}"}
            assert c.post("/api/uploads?name=x.jpg", content=jpeg, headers=headers).status_code == 200, host
            crossed = {**headers, "origin": OWN if host != "127.0.0.1:8765" else "http://localhost:8765"}
            assert c.post("/api/uploads?name=x.jpg", content=jpeg, headers=crossed).status_code == 403, host
        assert len(_waiting(root)) == 4


def test_a_refusal_reads_no_body() -> None:
    reached: list[str] = []

    async def app(scope, receive, send) -> None:  # noqa: ANN001
        reached.append("app")

    async def receive() -> dict:
        reached.append("receive")
        raise AssertionError("the body was read")

    sent: list[dict] = []

    async def send(message: dict) -> None:
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/api/uploads", "query_string": b"name=x.jpg",
             "scheme": "http", "headers": [(b"host", b"127.0.0.1:8765"), (b"origin", b"http://evil.example"),
                                           (b"content-length", b"999999999")]}
    asyncio.run(Guard(app, token=None, loopback=True)(scope, receive, send))
    assert reached == [] and sent[0]["status"] == 403


def test_a_websocket_handshake_meets_the_same_check() -> None:
    async def echo(ws: WebSocket) -> None:
        await ws.accept()
        await ws.send_text(await ws.receive_text())
        await ws.close()

    url = "ws://127.0.0.1:8765/ws"
    app = Guard(Starlette(routes=[WebSocketRoute("/ws", echo)]), token=None, loopback=True)
    with TestClient(app, base_url=OWN) as c:
        with c.websocket_connect(url, headers={"origin": OWN}) as ws:  # the page's own
            ws.send_text("hi")
            assert ws.receive_text() == "hi"
        for bad in ({"origin": "http://evil.example"}, {"origin": "null"}, {"sec-fetch-site": "cross-site"}):
            with pytest.raises(WebSocketDisconnect) as err, c.websocket_connect(url, headers=bad):
                pass
            assert err.value.code == 1008 and "cross-site" in err.value.reason


def test_pending_uploads_are_capped_in_number_and_bytes(tmp_path, jpeg) -> None:
    root = tmp_path / "results"
    with _client(root, max_pending=2, max_pending_mb=4 * len(jpeg) / 2**20) as c:
        ids = [c.post("/api/uploads?name=x.jpg", content=jpeg).json()["upload"] for _ in range(2)]
        r = c.post("/api/uploads?name=third.jpg", content=jpeg)
        assert r.status_code == 429 and r.json()["error"].startswith("third.jpg: 2 uploads already wait")
        assert _waiting(root) == sorted(ids)
        c.post("/api/jobs", json={"uploads": [ids[0]]}).raise_for_status()  # a started upload frees its place
        # bytes: refused before the body when the announced size does not fit...
        r = c.post("/api/uploads?name=big.jpg", content=jpeg * 4)  # 1 + 4 photos > 4
        assert r.status_code == 429 and "over the cap" in r.json()["error"]
        # ...and cut while streaming when no size is announced
        r = c.post("/api/uploads?name=big.jpg", content=iter([jpeg] * 4))
        assert "content-length" not in r.request.headers and r.status_code == 429
        assert r.json()["error"].startswith("big.jpg: uploads waiting")
        assert _waiting(root) == [ids[1]]
        assert c.post("/api/uploads?name=y.jpg", content=jpeg).status_code == 200


def test_unused_uploads_expire_while_running_and_at_start_up(tmp_path, jpeg) -> None:
    root = tmp_path / "results"
    (root / ".uploads" / "abc123.part").mkdir(parents=True)  # a server killed mid-upload
    (root / ".uploads" / "abc123.part" / "x.mp4").write_bytes(b"half")
    for name, age in (("old1", 7200), ("new1", 0)):
        (root / ".uploads" / name).mkdir()
        (root / ".uploads" / name / "x.jpg").write_bytes(jpeg)
        os.utime(root / ".uploads" / name, (time.time() - age,) * 2)
    with _client(root, max_pending=2) as c:
        assert _waiting(root) == ["new1"]  # the half-written and the stale one went at start-up
        assert c.post("/api/uploads?name=x.jpg", content=jpeg).status_code == 200
        assert c.post("/api/uploads?name=x.jpg", content=jpeg).status_code == 429  # new1 counts
    with _client(root, upload_ttl_s=0.2) as c:  # a running server sweeps on its own
        end = time.monotonic() + 5
        while _waiting(root) and time.monotonic() < end:
            time.sleep(0.05)
        assert _waiting(root) == []
        r = c.post("/api/jobs", json={"uploads": ["new1"]})
        assert r.status_code == 404 and "upload the file again" in r.json()["error"]


def test_a_double_start_gets_409_while_the_first_job_is_made(tmp_path, jpeg) -> None:
    # a double-clicked Start: the second request came while the first moved the files (it got
    # them too and one of the two failed with FileNotFoundError, a 500)
    root = tmp_path / "results"
    with _client(root) as c:
        uid = c.post("/api/uploads?name=x.jpg", content=jpeg).json()["upload"]
        jobs, submit = c.app.state.jobs, c.app.state.jobs.submit
        entered, release, first = threading.Event(), threading.Event(), []

        def held(files, checkpoint):  # the first submit waits in the thread pool until released
            if not entered.is_set():
                entered.set()
                assert release.wait(5)
            return submit(files, checkpoint)

        jobs.submit = held
        t = threading.Thread(target=lambda: first.append(c.post("/api/jobs", json={"uploads": [uid]})))
        t.start()
        assert entered.wait(5)
        second = c.post("/api/jobs", json={"uploads": [uid, uid]})
        release.set()
        t.join(10)
        assert second.status_code == 409 and "already being started" in second.json()["error"]
        assert first[0].status_code == 200
        assert [j["inputs"] for j in c.get("/api/jobs").json()["jobs"]] == [["x.jpg"]]
        assert _waiting(root) == [] and (root / first[0].json()["run"] / ".media" / "x.jpg").is_file()
        again = c.post("/api/jobs", json={"uploads": [uid]})  # used: gone
        assert again.status_code == 404 and "upload the file again" in again.json()["error"]


def test_the_sweep_skips_a_claimed_upload_and_a_failed_job_gives_it_back(tmp_path, jpeg, monkeypatch) -> None:
    from mtaffect.serve import jobs as jobs_module

    root = tmp_path / "results"
    with _client(root) as c:
        uid = c.post("/api/uploads?name=x.jpg", content=jpeg).json()["upload"]
        pending = c.app.state.pending
        files = pending.claim(uid)
        pending.ttl_s = -1.0  # every waiting upload is stale now
        assert pending.sweep() == [] and [f.name for f in files] == ["x.jpg"] and files[0].is_file()
        pending.unclaim(uid)  # waits again, and the sweep may take it once more...
        pending.ttl_s = 3600.0
        # ...a job that fails half-made (its files moved) leaves no run folder and its upload waiting
        monkeypatch.setattr(jobs_module, "_frame_total", lambda path: 1 / 0)
        with pytest.raises(ZeroDivisionError):
            c.post("/api/jobs", json={"uploads": [uid]})
        assert sorted(p.name for p in root.iterdir()) == [".jobs", ".uploads"]  # no half-made run
        assert list((root / ".jobs").iterdir()) == []
        assert _waiting(root) == [uid] and (root / ".uploads" / uid / "x.jpg").read_bytes() == jpeg
        monkeypatch.undo()
        assert c.post("/api/jobs", json={"uploads": [uid]}).status_code == 200
        assert _waiting(root) == [] and pending.count == 0


def test_an_upload_folder_that_cannot_be_made_frees_its_place(tmp_path) -> None:
    from mtaffect.serve.uploads import PendingUploads, UploadError

    (tmp_path / ".uploads").write_text("a file where the folder should be")
    pending = PendingUploads(tmp_path, max_count=1, max_bytes=10**6)
    with pytest.raises(UploadError, match=r"could not make the upload folder .*\.uploads.*\.part") as err:
        pending.begin(100)
    assert err.value.status == 500 and (pending.count, pending.bytes) == (0, 0)
    (tmp_path / ".uploads").unlink()  # the disk is fixed: the next upload is not refused with 429
    assert pending.begin(100)[1].is_dir() and pending.count == 1


def test_token_on_loopback_with_the_flag(tmp_path, monkeypatch, capsys) -> None:
    import mtaffect.serve.server as server

    write_synthetic_result(tmp_path / "out", seconds=1)
    apps = []
    monkeypatch.setattr(server, "serve", lambda app, sock: apps.append(app))
    assert main(["view", str(tmp_path / "out"), "--port", "0", "--token"]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith("mtaffect view: "))
    assert line.startswith("mtaffect view: http://127.0.0.1:") and "?token=" in line
    token = line.rsplit("?token=", 1)[1]
    with TestClient(apps[0], base_url=OWN) as c:
        assert c.get("/api/results").status_code == 401  # another user of the machine, without it
        assert c.get(f"/api/results?token={token}").status_code == 200
    assert main(["view", str(tmp_path / "out"), "--port", "0"]) == 0
    assert "?token=" not in capsys.readouterr().out
    # serve takes the flag too, and its pending-upload caps
    (tmp_path / "tiny.safetensors").write_bytes(b"never loaded: no job runs")
    args = ["serve", "--checkpoint", str(tmp_path / "tiny.safetensors"), "--results", str(tmp_path / "r"),
            "--port", "0", "--token", "--max-pending", "3", "--max-pending-mb", "5"]
    assert main(args) == 0
    assert "?token=" in capsys.readouterr().out
    pending = apps[-1].state.pending
    assert (pending.max_count, pending.max_bytes) == (3, 5 * 2**20)
    apps[-1].state.jobs.stop()
