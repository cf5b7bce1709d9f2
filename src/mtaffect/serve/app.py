"""The web app (Starlette): a JSON API over the results root and the job queue, and the page.

Routes (every id is a path relative to the results root, checked by ``results.safe_child``):

==========================  ================================================================
``GET /``                    the page (``static/index.html``); ``/static/*``, ``/vendor/*``
``GET /api/info``            checkpoints, upload cap, whether jobs and charts are available
``POST /api/uploads?name=``  the raw file as body → ``{"upload": id, "name", "kind"}`` or 4xx
``GET|POST /api/jobs``       list / create (``{"uploads": [...], "checkpoint": name}``)
``POST /api/jobs/{id}/cancel|resume``
``GET /api/results?q=``      every result under the root; ``DELETE /api/runs?run=`` deletes a run
``GET /api/meta?id=``        one result: kind, inputs, tracks, time span, downloads
``GET /api/series?id=&t0=&t1=&points=``   the charts' data, downsampled per zoom level
``GET /api/times?id=``       every frame's time (float64, little-endian) for frame-accurate seeks
``GET /api/frames?id=&t0=&t1=``  raw face rows (boxes, values) of a short window
``GET /api/image?id=&input=``    the faces of one photo of an ``images`` result
``GET /api/summary?id=[&input=]`` per person: expression shares, mean and spread of valence/arousal
``GET /api/media?id=&input=``    the original video or photo (only from the root or ``--media``)
``GET /files/{id}/{name}``   a result's CSV, Parquet, plots, overlay video
==========================  ================================================================

Every request first meets ``guard.Guard`` (Host on loopback, cross-site writes refused, token).
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
from pathlib import Path

import numpy as np
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles

from mtaffect.serve import results as R
from mtaffect.serve.guard import Guard
from mtaffect.serve.uploads import UPLOAD_TTL_S, PendingUploads, UploadError, check_media, kind_of, safe_name

__all__ = ["create_app", "STATIC", "VENDOR", "vendor_ready"]

STATIC = Path(__file__).parent / "static"
VENDOR = STATIC / "vendor"
VENDOR_FILES = ("uPlot.iife.min.js", "uPlot.min.css")


def vendor_ready() -> bool:
    return all((VENDOR / f).is_file() for f in VENDOR_FILES)


def _err(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    root: str | Path,
    *,
    checkpoints: dict[str, Path] | None = None,
    default_checkpoint: str | None = None,
    token: str | None = None,
    loopback: bool = True,
    workers: int = 1,
    predictor_options: dict | None = None,
    max_upload_mb: float = 2048,
    media_roots: list[str | Path] | None = None,
    plots: bool = True,
    overlay: bool = True,
    max_pending: int = 200,
    max_pending_mb: float = 8192,
    upload_ttl_s: float = UPLOAD_TTL_S,
) -> Starlette:
    """The app over ``root``; with ``checkpoints`` (name → file) it also runs prediction jobs.

    ``max_pending`` / ``max_pending_mb``: how many uploads, and how many MB in all, may wait for
    Start; ``upload_ttl_s``: after how long an unused upload is removed (docs/serve.md).
    """
    root = Path(root).resolve()
    root.mkdir(parents=True, exist_ok=True)
    store = R.ResultStore(root, media_roots)
    pending = PendingUploads(root, max_count=max_pending, max_bytes=int(max_pending_mb * 2**20),
                             ttl_s=upload_ttl_s)
    if checkpoints:  # imported only here: `mtaffect view` never loads torch
        from mtaffect.serve.jobs import JobManager
    jobs = (
        JobManager(root, checkpoints, workers=workers, predictor_options=predictor_options, plots=plots,
                   overlay=overlay)
        if checkpoints
        else None
    )
    cap = int(max_upload_mb * 1024 * 1024)
    default_checkpoint = default_checkpoint or (sorted(checkpoints)[0] if checkpoints else None)

    def index(request: Request) -> Response:
        return FileResponse(STATIC / "index.html", headers={"Cache-Control": "no-store"})

    def info(request: Request) -> Response:
        return JSONResponse(
            {
                "root": str(root),
                "jobs": jobs is not None,
                "checkpoints": sorted(checkpoints or {}),
                "default_checkpoint": default_checkpoint,
                "max_upload_mb": max_upload_mb,
                "charts": vendor_ready(),
            }
        )

    async def upload(request: Request) -> Response:
        if jobs is None:
            return _err(403, "this server only shows results (mtaffect view); uploads need mtaffect serve")
        raw = request.query_params.get("name", "")
        name = safe_name(raw)
        try:
            kind_of(name)
            length = request.headers.get("content-length") or "0"
            if not length.isdigit():
                raise UploadError(400, f"{raw}: bad Content-Length {length!r}")
            size = int(length)
            if size > cap:
                raise UploadError(413, f"{raw}: {size / 2**20:.0f} MB is over the upload cap of "
                                       f"{max_upload_mb:g} MB")
        except UploadError as err:
            return _err(err.status, str(err))
        try:
            uid, folder = pending.begin(size)  # refused before the body when too many wait
        except UploadError as err:
            return _err(err.status, f"{raw}: {err}")
        path = folder / name
        written = 0
        try:
            with open(path, "wb") as fh:
                async for chunk in request.stream():
                    written += len(chunk)
                    if written > cap:
                        raise UploadError(413, f"{raw}: over the upload cap of {max_upload_mb:g} MB")
                    try:
                        pending.grow(uid, written)
                    except UploadError as err:
                        raise UploadError(err.status, f"{raw}: {err}") from None
                    fh.write(chunk)
            if written == 0:
                raise UploadError(400, f"{raw}: the file is empty")
            kind = await run_in_threadpool(check_media, path, raw)
            pending.commit(uid, written)
        except UploadError as err:
            pending.discard(uid)
            return _err(err.status, str(err))
        except BaseException:
            pending.discard(uid)  # the client went away: nothing half-written stays
            raise
        return JSONResponse({"upload": uid, "name": name, "kind": kind, "bytes": written})

    def list_jobs(request: Request) -> Response:
        return JSONResponse({"jobs": jobs.list() if jobs else []})

    async def create_job(request: Request) -> Response:
        if jobs is None:
            return _err(403, "this server only shows results (mtaffect view)")
        try:
            body = await request.json()
            ids = list(dict.fromkeys(str(u) for u in body.get("uploads", [])))  # each once, in order
            checkpoint = str(body.get("checkpoint") or default_checkpoint or "")
        except (ValueError, AttributeError):
            return _err(400, "expected JSON {\"uploads\": [...], \"checkpoint\": name}")
        if bad := [uid for uid in ids if not uid.isalnum()]:
            return _err(400, f"bad upload id {bad[0]!r}")
        # claimed: neither the sweep nor a second Start with the same ids can take the files now
        claimed: list[str] = []
        files: list[Path] = []
        try:
            for uid in ids:
                files.extend(pending.claim(uid))
                claimed.append(uid)
        except UploadError as err:
            for uid in claimed:
                pending.unclaim(uid)
            return _err(err.status, str(err))

        def start() -> object:
            # in the worker thread as a whole: a request cancelled while it runs leaves no claim behind
            try:
                job = jobs.submit(files, checkpoint)
            except BaseException:
                for uid in claimed:
                    pending.unclaim(uid)  # the job was not made: the uploads wait for Start again
                raise
            for uid in claimed:
                pending.discard(uid)  # its files moved into the job's folder
            return job

        try:
            job = await run_in_threadpool(start)
        except ValueError as err:
            return _err(400, str(err))
        return JSONResponse({"job": job.id, "run": job.run})

    def job_action(request: Request) -> Response:
        if jobs is None:
            return _err(403, "no jobs on a view-only server")
        action = request.path_params["action"]
        try:
            job = (jobs.cancel if action == "cancel" else jobs.resume)(request.path_params["job"])
        except KeyError:
            return _err(404, f"no job {request.path_params['job']}")
        except ValueError as err:
            return _err(409, str(err))
        return JSONResponse({"job": job.id, "status": job.status})

    def list_results(request: Request) -> Response:
        return JSONResponse({"results": store.results(request.query_params.get("q", ""))})

    def delete_run(request: Request) -> Response:
        rid = request.query_params.get("run", "")
        try:
            folder = store.run_folder(rid)
            if jobs is not None:
                jobs.forget_run(store.rel(folder))
        except R.NotFound:
            return _err(404, f"no run {rid!r} under the results root")
        except ValueError as err:
            return _err(409, str(err))
        shutil.rmtree(folder)
        return JSONResponse({"deleted": rid})

    def with_result(fn):  # noqa: ANN001, ANN202 - decorator for the result endpoints
        def endpoint(request: Request) -> Response:
            rid = request.query_params.get("id", "")
            try:
                return fn(request, rid)
            except R.NotFound:
                return _err(404, f"no result {rid!r} under the results root")
            except (ValueError, IndexError) as err:
                return _err(400, f"{rid}: {err}")

        return endpoint

    def _float(request: Request, key: str) -> float | None:
        v = request.query_params.get(key)
        return None if v in (None, "") else float(v)

    @with_result
    def meta(request: Request, rid: str) -> Response:
        return JSONResponse(store.meta(rid))

    @with_result
    def series(request: Request, rid: str) -> Response:
        loaded = store.load(rid)
        points = int(request.query_params.get("points", 2000))
        return JSONResponse(R.bucket_series(loaded, _float(request, "t0"), _float(request, "t1"), points))

    @with_result
    def times(request: Request, rid: str) -> Response:
        data = np.ascontiguousarray(store.load(rid).times, dtype="<f8").tobytes()
        return Response(data, media_type="application/octet-stream")

    @with_result
    def frames(request: Request, rid: str) -> Response:
        t0, t1 = _float(request, "t0") or 0.0, _float(request, "t1") or 0.0
        return JSONResponse({"rows": R.frame_rows(store.load(rid), t0, t1)})

    @with_result
    def image(request: Request, rid: str) -> Response:
        index = int(request.query_params.get("input", 0))
        return JSONResponse({"rows": R.image_rows(store.load(rid), index)})

    @with_result
    def summary(request: Request, rid: str) -> Response:
        raw = request.query_params.get("input")
        return JSONResponse({"people": R.summary(store.load(rid), None if raw is None else int(raw))})

    @with_result
    def media(request: Request, rid: str) -> Response:
        path = store.media(rid, int(request.query_params.get("input", 0)))
        if path is None:
            return _err(404, f"{rid}: the original file is not under the results root or a --media folder")
        return FileResponse(path)

    def files(request: Request) -> Response:
        rel = request.path_params["path"]
        rid, _, name = rel.rpartition("/")
        try:
            if name not in R.DOWNLOADS:
                raise R.NotFound(rel)
            path = store.folder(rid) / name
        except R.NotFound:
            return _err(404, f"no file {rel!r} under the results root")
        if not path.is_file():
            return _err(404, f"{rel}: not written (yet)")
        return FileResponse(path, filename=f"{Path(rid).name}_{name}" if name.startswith("pred") else None)

    routes = [
        Route("/", index),
        Route("/favicon.ico", lambda request: Response(status_code=204)),
        Route("/api/info", info),
        Route("/api/uploads", upload, methods=["POST"]),
        Route("/api/jobs", list_jobs, methods=["GET"]),
        Route("/api/jobs", create_job, methods=["POST"]),
        Route("/api/jobs/{job:str}/{action:str}", job_action, methods=["POST"]),
        Route("/api/results", list_results),
        Route("/api/runs", delete_run, methods=["DELETE"]),
        Route("/api/meta", meta),
        Route("/api/series", series),
        Route("/api/times", times),
        Route("/api/frames", frames),
        Route("/api/image", image),
        Route("/api/summary", summary),
        Route("/api/media", media),
        Route("/files/{path:path}", files),
        Mount("/static", StaticFiles(directory=STATIC, check_dir=False), name="static"),
    ]

    async def sweep_uploads() -> None:
        # a long-running server removes unused uploads too, not only at start-up
        while True:
            await asyncio.sleep(min(300.0, max(0.05, upload_ttl_s / 4)))
            await run_in_threadpool(pending.sweep)

    @contextlib.asynccontextmanager
    async def lifespan(app: Starlette):  # noqa: ANN202
        sweeper = asyncio.create_task(sweep_uploads()) if jobs is not None else None
        yield
        if sweeper is not None:
            sweeper.cancel()
        if jobs is not None:
            jobs.stop()

    app = Starlette(routes=routes, lifespan=lifespan)
    app.state.store, app.state.jobs, app.state.pending = store, jobs, pending
    app.add_middleware(Guard, token=token, loopback=loopback)
    return app

