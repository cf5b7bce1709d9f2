"""``mtaffect predict`` as one function: many inputs → one output folder, resumable.

Layout of ``out``::

    out/
      report.json                    per input: status, frames, faces, tracks, error, seconds per stage
      <video stem>/predictions.csv   (and .parquet) the per-frame table, see tables.py
      <video stem>/va.png, expressions.png, circumplex.png
      <video stem>/overlay.mp4       H.264 with boxes, labels, valence/arousal bars
      <video stem>/debug_crops/track<k>/NNNNN.jpg   with debug_crops=True: the model's input crops
      images/predictions.csv         all still images in one table
      <track>/predictions.csv        with cropped=True: one per cropped_aligned track folder
      <folder>/done.json             the finished marker, written last (see below)
      report.rank<r>.json            under torchrun: what rank r did (report.json merges them)

Every per-input folder is finished by ``done.json`` (:data:`MARKER`), written after its table,
plots, overlay and its ``report.json`` entry; nothing else marks an input as finished. While an
input runs, its rows stream to ``predictions.partial.csv`` and its other files are written under
temporary names, so a killed run never leaves a partial ``predictions.csv``. With ``resume`` a
folder with its marker is skipped and a folder without one is removed and done again (as are
stray ``.tmp`` files of the output folder). A bad input (unreadable, truncated, not media) is
reported in ``report.json`` and on stderr and leaves no folder; the others go on, and the rows of
a video that broke half-way are kept (``status: "partial"``, finished like any other).
"""

from __future__ import annotations

import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from mtaffect import distributed
from mtaffect.distributed import DistContext
from mtaffect.errors import InputFormatError, UserError
from mtaffect.io import prepare_output_dir, write_json
from mtaffect.predict.media import IMAGE_EXTENSIONS, MediaItem, expand_inputs
from mtaffect.predict.predictor import Predictor
from mtaffect.predict.shard import balance, merge_entries
from mtaffect.predict.tables import TableWriter
from mtaffect.predict.threads import prediction_threads

__all__ = ["predict_inputs", "plan", "Unit", "crop_folders", "MARKER", "is_finished"]

MARKER = "done.json"
"""The finished marker of a per-input output folder (written last, atomically)."""


def is_finished(folder: str | Path) -> bool:
    """True when ``folder`` (one input's output folder) was completed."""
    return (Path(folder) / MARKER).is_file()


def _restart(target: Path) -> None:
    """Remove what an unfinished (killed, failed) run of this input left behind."""
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()


def _finish(target: Path, entry: dict, record) -> None:
    """Record the input's report entry, then write its marker: the last file of the folder."""
    record(entry)
    files = sorted(str(p.relative_to(target)) for p in target.rglob("*") if p.is_file())
    write_json(target / MARKER, {"input": entry["input"], "status": entry["status"], "files": files})


def _unique_name(stem: str, used: set[str]) -> str:
    name, k = stem, 2
    while name in used or name == "images":
        name, k = f"{stem}_{k}", k + 1
    used.add(name)
    return name


def crop_folders(inputs: list[str | Path]) -> list[Path]:
    """Track folders of ``cropped_aligned``-style inputs: a folder holding ``NNNNN.jpg`` files is a
    track; a folder holding such folders (``cropped_aligned/`` itself) contributes each of them."""
    out: list[Path] = []
    for raw in inputs:
        path = Path(raw)
        if not path.is_dir():
            raise UserError(f"{path}: --cropped expects folders of face crops (cropped_aligned/<track>)")

        def is_track(p: Path) -> bool:
            return any(f.suffix.lower() in IMAGE_EXTENSIONS and f.stem.isdigit() for f in p.iterdir())

        if is_track(path):
            out.append(path)
        else:
            subs = sorted(p for p in path.iterdir() if p.is_dir() and is_track(p))
            if not subs:
                raise UserError(f"{path}: no NNNNN.jpg crops in it or in its sub-folders")
            out.extend(subs)
    return out


@dataclass
class Unit:
    """One share of the work, done whole by one rank: the output folder ``name`` and its inputs."""

    name: str
    kind: str  # "crops" (a cropped_aligned track), "images" (every still image), "video", "stream"
    paths: list[str]
    frames: int  # how many frames it holds, about: the weight used to balance ranks

    @property
    def label(self) -> str:
        """The ``input`` of the unit's own report entry."""
        return "images" if self.kind == "images" else self.paths[0]


def _frames(kind: str, paths: list[str]) -> int:
    """Frames to predict, the weight that balances ranks: a video's from its header (no decoding,
    about a millisecond per file), 1 per still image, 1 per crop of a track, 0 for a stream."""
    if kind == "images":
        return len(paths)
    if kind == "crops":
        return sum(1 for f in Path(paths[0]).iterdir() if f.suffix.lower() in IMAGE_EXTENSIONS)
    if kind != "video":
        return 0
    import av

    try:
        with av.open(paths[0]) as container:
            stream = container.streams.video[0]
            if stream.frames:
                return int(stream.frames)
            seconds = container.duration / av.time_base if container.duration else 0.0
            return max(1, int(seconds * float(stream.average_rate or 25)))
    except (av.error.FFmpegError, OSError, ValueError, IndexError, TypeError):
        return 1  # unreadable: reported as an error by whichever rank gets it


def plan(
    inputs: list[str | Path], cropped: bool = False, weigh: bool = True
) -> tuple[list[Unit], list[tuple[str, str]]]:
    """The units of work in the order a single process does them, and the inputs skipped at once;
    without ``weigh`` (one process: nothing to balance) their frames are not counted (0)."""
    used: set[str] = set()

    def frames(kind: str, paths: list[str]) -> int:
        return _frames(kind, paths) if weigh else 0

    skipped: list[tuple[str, str]] = []
    if cropped:
        tracks = [str(f) for f in crop_folders(inputs)]
        units = [Unit(_unique_name(Path(t).name, used), "crops", [t], frames("crops", [t])) for t in tracks]
        return units, skipped
    items = expand_inputs(inputs, skipped=skipped)
    images = [it.path for it in items if it.kind == "image"]
    units = [Unit("images", "images", images, len(images))] if images else []
    for item in (it for it in items if it.kind != "image"):
        name = _unique_name(Path(item.path).stem if item.kind == "video" else _stream_name(item), used)
        units.append(Unit(name, item.kind, [item.path], frames(item.kind, [item.path])))
    return units, skipped


def _locator(units: list[Unit]):
    """``entry → unit index``: -1 for skipped inputs, ``len(units)`` for inputs not in this run."""
    index: dict[str, int] = {}
    for i, unit in enumerate(units):
        index[unit.label] = i
        for p in unit.paths if unit.kind == "images" else ():
            index[p] = i

    def position(entry: dict) -> int:
        if entry.get("status") == "skipped":
            return -1
        i = index.get(entry["input"])
        if i is None:  # a bad crop of a cropped track is reported under its own path
            i = index.get(str(Path(entry["input"]).parent))
        return len(units) if i is None else i

    return position


def _old_entries(out: Path) -> list[dict]:
    """The entries of earlier runs: report.json and the per-rank reports of sharded runs, newest last."""
    files = [out / "report.json", *out.glob("report.rank*.json")]
    entries: dict[str, dict] = {}
    for path in sorted((p for p in files if p.is_file()), key=lambda p: p.stat().st_mtime):
        try:
            for e in json.loads(path.read_text())["inputs"]:
                entries.pop(e["input"], None)
                entries[e["input"]] = e
        except (ValueError, KeyError, TypeError, OSError):
            continue
    return list(entries.values())


def _start(inputs, out, cropped: bool, resume: bool, overwrite: bool, ranks: DistContext):
    """Rank 0 prepares the output folder and lists the work; every rank gets the same list."""
    failure, work = None, None
    if ranks.rank == 0:
        try:
            out = prepare_output_dir(out, overwrite=overwrite, resume=resume)
            if resume:
                for stray in out.glob(".*.tmp"):  # an atomic write (report.json) cut short by a kill
                    stray.unlink()
            work = plan(inputs, cropped, weigh=ranks.active)
        except (UserError, OSError) as err:
            if not ranks.active:
                raise
            failure = err  # raised on every rank, so that none waits for the others
    failure, work = distributed.broadcast((failure, work), ranks)
    if failure is not None:
        raise failure
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)  # the other nodes' copy when --out is not shared
    old = _old_entries(out) if resume else []
    distributed.gather(None, ranks)  # every rank has read the old reports before any rank writes its own
    return out, work[0], work[1], old


def predict_inputs(
    predictor: Predictor,
    inputs: list[str | Path],
    out: str | Path,
    *,
    cropped: bool = False,
    plots: bool = True,
    overlay: bool = True,
    debug_crops: bool = False,
    resume: bool = False,
    overwrite: bool = False,
    progress: bool = True,
    ranks: DistContext | None = None,
) -> dict:
    """Run ``predictor`` on every input, writing the layout above; returns the report dict.

    With ``ranks`` of a world > 1 (``torchrun``, process group joined), this process does only its
    share of the units (:func:`mtaffect.predict.shard.balance`), records it in
    ``report.rank<r>.json``, and every rank returns the merged report that rank 0 writes.

    Applies the prediction thread policy (:func:`mtaffect.predict.threads.prediction_threads`): on a
    machine with at most two cores, one torch thread for the whole process, and
    ``OMP_WAIT_POLICY=PASSIVE`` unless set.
    """
    prediction_threads()  # one torch thread on <= 2 cores, as `mtaffect predict` runs
    ranks = ranks or DistContext()
    out, units, skipped, old = _start(inputs, out, cropped, resume, overwrite, ranks)
    owner = balance([u.frames for u in units], ranks.world)
    position = _locator(units)

    def mine(entry: dict) -> bool:
        i = position(entry)
        return (owner[i] if 0 <= i < len(units) else 0) == ranks.rank

    report: dict = {"backend": predictor.model.backend, "inputs": []}
    report_path = out / (f"report.rank{ranks.rank}.json" if ranks.active else "report.json")
    # a finished entry whose folder lacks its marker is redone below; errors and skips are recorded
    # again when their input is retried
    report["inputs"] = [e for e in old if (not e.get("output") or is_finished(out / e["output"])) and mine(e)]

    def record(entry: dict) -> None:
        report["inputs"] = [e for e in report["inputs"] if e["input"] != entry["input"]] + [entry]
        write_json(report_path, report)
        if entry["status"] != "ok":
            print(
                f"mtaffect predict: {entry['input']}: {entry['status']}: {entry.get('error')}",
                file=sys.stderr,
            )

    for path, why in skipped if ranks.rank == 0 else ():
        record({"input": path, "status": "skipped", "error": why})
    for unit, rank in zip(units, owner):
        target = out / unit.name
        if rank != ranks.rank or (resume and is_finished(target)):
            continue
        _restart(target)
        if unit.kind == "crops":
            _crops(predictor, unit, target, plots, record)
        elif unit.kind == "images":
            _images(predictor, unit.paths, target, record)
        else:
            entry = _one_video(predictor, MediaItem(unit.kind, unit.paths[0]), target, unit.name, plots,
                               overlay, debug_crops, progress)
            if entry["status"] == "error":
                _restart(target)  # nothing usable: no empty folder, no header-only table
                record(entry)
            else:
                _finish(target, entry, record)
    if ranks.active:
        parts = distributed.gather(report["inputs"], ranks)  # also the barrier: every rank is done
        report = {"backend": report["backend"], "inputs": merge_entries(parts, position)}
        if ranks.rank == 0:
            write_json(out / "report.json", report)
    elif resume:
        # kept and redone entries in the order of an uninterrupted run (and the entries read from
        # the per-rank reports of a sharded run, even when nothing was left to do)
        report["inputs"] = merge_entries([report["inputs"]], position)
        write_json(report_path, report)
    return report


def _crops(predictor: Predictor, unit: Unit, target: Path, plots: bool, record) -> None:
    """One ``cropped_aligned`` track folder."""
    folder = Path(unit.paths[0])
    t0 = time.perf_counter()
    try:
        df = predictor.predict_crop_folder(folder)
    except InputFormatError as err:
        record({"input": str(folder), "status": "error", "error": str(err)})
        return
    for path, msg in df.attrs["skipped"]:
        record({"input": path, "status": "error", "error": msg})
    with TableWriter(target / "predictions") as writer:
        writer.write(df)
    if plots:
        _plots(df, target, folder.name)
    entry = {
        "input": str(folder),
        "status": "ok",
        "output": unit.name,
        "frames": len(df),
        "faces": len(df),
        "seconds": {"total": time.perf_counter() - t0},
    }
    _finish(target, entry, record)


def _images(predictor: Predictor, paths: list[str], target: Path, record) -> None:
    """All still images in one table; no folder when none of them could be read."""
    errors: list[tuple[str, str]] = []
    t0 = time.perf_counter()
    df = predictor.predict_images(paths, errors=errors)
    for path, msg in errors:
        record({"input": path, "status": "error", "error": msg})
    if len(errors) == len(paths):
        return  # each image has its own error entry
    with TableWriter(target / "predictions") as writer:
        writer.write(df)
    entry = {
        "input": "images",
        "status": "ok",
        "output": target.name,
        "images": len(paths) - len(errors),
        "errors": len(errors),  # each also listed as its own "error" entry
        "faces": int(df["face_found"].sum()),
        "seconds": {"total": time.perf_counter() - t0},
    }
    _finish(target, entry, record)


def _stream_name(item: MediaItem) -> str:
    return "".join(c if c.isalnum() else "_" for c in item.path).strip("_") or "stream"


def _plots(df: pd.DataFrame, target: Path, title: str) -> None:
    from mtaffect.predict.plots import plot_all

    plot_all(df, target, title)


def _one_video(predictor, item, target, name, plots, overlay, debug_crops, progress) -> dict:
    t0 = time.perf_counter()
    entry: dict = {"input": item.path, "output": name}
    try:
        run = predictor.iter_video(
            item.path, debug_crops=target / "debug_crops" if debug_crops else None, progress=progress
        )
        with TableWriter(target / "predictions") as writer:
            for chunk in run:
                writer.write(chunk)
    except InputFormatError as err:
        return {"input": item.path, "status": "error", "error": str(err)}
    except KeyboardInterrupt:
        print(f"interrupted: the rows so far are in {target / 'predictions.partial.csv'}", file=sys.stderr)
        raise
    rep = run.report
    seconds = dict(rep.seconds)
    seconds["predict"] = time.perf_counter() - t0
    # read back from disk: prediction itself never held the whole table
    df = pd.read_parquet(target / "predictions.parquet") if (plots or overlay) else None
    if df is not None and plots:
        t1 = time.perf_counter()
        _plots(df, target, name)
        seconds["plots"] = time.perf_counter() - t1
    if df is not None and overlay and item.kind == "video":
        from mtaffect.predict.overlay import write_overlay

        t1 = time.perf_counter()
        write_overlay(item.path, df, target / "overlay.mp4")
        seconds["overlay"] = time.perf_counter() - t1
    return {
        **entry,
        "status": "partial" if rep.error else "ok",
        "error": rep.error,
        "frames": rep.frames,
        "faces": rep.faces,
        "tracks": rep.tracks,
        "detector_calls": rep.detector_calls,
        "scene_cuts": rep.scene_cuts,
        "frames_per_second": rep.frames / seconds["predict"] if seconds["predict"] > 0 else None,
        "seconds": {k: round(v, 3) for k, v in seconds.items()},
    }
