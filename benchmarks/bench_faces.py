"""Face cache benchmark: build rate (crops/s) and FaceReader read rate (img/s per core).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.bench_faces --data /tmp/bench_faces

Generates the synthetic "demo" databases under --data (once), indexes them, then measures:
* building the cache (AffectNet landmark squares, ExpW boxes, AFEW-VA eye-level alignment), JPEG and
  raw formats, 1 and 2 worker processes — wall time per build and CPU seconds per crop (all processes);
* FaceReader.read of random batches of 64 rows at 112 px, 1 thread: from the JPEG cache, from the
  raw (memory-mapped uint8) cache and from Aff-Wild2's released JPEG files read directly.
Wall figures come from ``time_quiet`` (repetitions with foreign CPU load are discarded when
possible); CPU figures are this process tree's CPU time, less sensitive to a busy machine.
"""

from __future__ import annotations

import argparse
import os
import shutil
import time
from pathlib import Path

import cv2
import numpy as np

from benchmarks._timing import time_quiet

DATABASES = ("affwild2", "affectnet", "expw", "afew_va")


def _cpu() -> float:
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/bench_faces"))
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each cache build")
    args = parser.parse_args()
    cv2.setNumThreads(1)
    from mtaffect.data.faces import FaceReader, build_face_cache
    from mtaffect.data.index import build_index
    from mtaffect.data.synthetic import write_databases

    db = args.data / "db"
    if not db.exists():
        t0 = time.perf_counter()
        write_databases(db, preset=args.preset, seed=0)
        print(f"generated {args.preset} databases in {time.perf_counter() - t0:.1f} s")
    index, meta = build_index({d: db / d for d in DATABASES})
    n_faces = int((index["database"] != "affwild2").sum())
    print(f"index: {len(index)} rows, {n_faces} rows to crop into the cache")
    rows_out = []
    metas = {}
    for fmt in ("jpeg", "raw"):
        for workers in (1, 2):
            cache = args.data / f"cache-{fmt}-{workers}"
            state = {}

            def build(cache=cache, fmt=fmt, workers=workers, state=state):
                shutil.rmtree(cache, ignore_errors=True)
                c0 = _cpu()
                state["meta"] = build_face_cache(index, meta, cache, size=112, workers=workers, fmt=fmt,
                                                 shard_size=1024, progress=False)
                state.setdefault("cpu", []).append(_cpu() - c0)

            timing = time_quiet(build, reps=args.reps, warmup=0)
            entries = state["meta"]["face_cache"]["entries"]
            folder = Path(state["meta"]["face_cache"]["path"])
            disk = sum(p.stat().st_size for p in folder.iterdir())
            cpu = float(np.median(state["cpu"]))
            metas[fmt] = state["meta"]
            rows_out.append((f"build {fmt}, {workers} worker(s)", f"{timing.rate(entries):,.0f} crops/s",
                             f"{entries / cpu:,.0f} crops/CPU-s", f"{timing.kept}/{timing.total} quiet; "
                             f"{entries} faces, {disk / entries / 1024:.1f} KiB/face on disk"))
    rng = np.random.default_rng(0)
    affwild2_rows = np.flatnonzero((index["database"] == "affwild2").to_numpy())
    sources = (("cache jpeg", metas["jpeg"], None), ("cache raw (memmap)", metas["raw"], None),
               ("Aff-Wild2 JPEG files, direct", metas["jpeg"], affwild2_rows))
    for label, meta_x, pool in sources:
        reader = FaceReader(index, meta_x, 112)
        candidates = pool if pool is not None else np.flatnonzero(
            reader.valid & (index["database"] != "affwild2").to_numpy())
        state = {"cpu": 0.0, "n": 0}

        def read(reader=reader, candidates=candidates, state=state):
            c0 = _cpu()
            reader.read(rng.choice(candidates, 64, replace=False))
            state["cpu"] += _cpu() - c0
            state["n"] += 64

        timing = time_quiet(read, reps=7, min_seconds=0.5)
        per_cpu = state["n"] / state["cpu"] if state["cpu"] > 0 else float("nan")
        rows_out.append((f"FaceReader.read, batch 64, {label}", f"{timing.rate(64):,.0f} img/s",
                         f"{per_cpu:,.0f} img/CPU-s", f"{timing.kept}/{timing.total} quiet"))
    load = os.getloadavg()
    print(f"\nload average during the run: {load[0]:.1f} {load[1]:.1f} {load[2]:.1f}")
    print("| what | wall (median) | per CPU second | notes |\n|---|---|---|---|")
    for row in rows_out:
        print("| " + " | ".join(row) + " |")


if __name__ == "__main__":
    main()
