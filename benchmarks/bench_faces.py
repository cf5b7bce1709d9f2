"""Face cache benchmark: build rate (crops/s) and FaceReader read rate (img/s per core).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python -m benchmarks.bench_faces --data /tmp/bench_faces

Generates the synthetic "demo" databases under --data (once), indexes them, then measures:
* building the cache (AffectNet landmark squares, ExpW boxes, AFEW-VA eye-level alignment), JPEG and
  raw formats, 1 and 2 worker processes — wall time per build and CPU seconds per crop (all processes);
* FaceReader.read of random batches of 64 rows at 112 px, 1 thread: from the JPEG cache, from the
  raw (memory-mapped uint8) cache and from Aff-Wild2's released JPEG files read directly.
With ``--probe`` it instead measures how learnable the synthetic signal is: a 4-layer CNN trained
for ``--probe-steps`` steps of 64 on 1 thread on 48 px crops of 80 synthetic tracks, evaluated on
20 others.

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


def probe(n_steps: int, size: int = 48) -> None:
    """Train a small CNN on synthetic crops; print the ABAW EXPR score and the CCC of V and A."""
    import torch
    from torch import nn

    from mtaffect.data.synthetic.affect import TrackLook, affect_sequence, render_crop
    from mtaffect.metrics import ccc, expr_score

    torch.set_num_threads(1)
    torch.manual_seed(0)

    def make(n_tracks: int, seed: int, step: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        rng = np.random.default_rng(seed)
        xs, es, vas = [], [], []
        for _ in range(n_tracks):
            look = TrackLook(rng, 112)
            expr, val, aro = affect_sequence(rng, 150)
            for t in range(0, 150, step):
                img, _ = render_crop(look, t, int(expr[t]), float(val[t]), float(aro[t]), rng)
                xs.append(cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA))
                es.append(expr[t])
                vas.append((val[t], aro[t]))
        x = torch.tensor(np.stack(xs)).permute(0, 3, 1, 2).float() / 255 - 0.5
        return x, torch.tensor(np.array(es)), torch.tensor(np.array(vas), dtype=torch.float32)

    x_tr, e_tr, va_tr = make(80, 0, 2)
    x_va, e_va, va_va = make(20, 1, 3)

    def block(i: int, o: int) -> nn.Module:
        return nn.Sequential(nn.Conv2d(i, o, 3, padding=1), nn.BatchNorm2d(o), nn.ReLU(), nn.MaxPool2d(2))

    net = nn.Sequential(block(3, 16), block(16, 32), block(32, 64), block(64, 64), nn.AdaptiveAvgPool2d(1),
                        nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 9))
    opt = torch.optim.Adam(net.parameters(), 2e-3)
    gen = np.random.default_rng(0)
    t0, c0 = time.perf_counter(), time.process_time()
    for _ in range(n_steps):
        idx = torch.as_tensor(gen.integers(0, len(x_tr), 64))
        dx, dy = (int(v) for v in gen.integers(-3, 4, 2))
        out = net(torch.roll(x_tr[idx], (dx, dy), (2, 3)))
        loss = nn.functional.cross_entropy(out[:, :7], e_tr[idx]) + 3 * nn.functional.mse_loss(
            torch.tanh(out[:, 7:]), va_tr[idx])
        opt.zero_grad()
        loss.backward()
        opt.step()
    seconds, cpu = time.perf_counter() - t0, time.process_time() - c0
    net.eval()
    with torch.no_grad():
        out = torch.cat([net(x_va[i : i + 256]) for i in range(0, len(x_va), 256)])
    score = expr_score(e_va.numpy(), out[:, :7].argmax(1).numpy())
    va = torch.tanh(out[:, 7:]).numpy()
    print(f"probe: {len(x_tr)} train / {len(x_va)} validation crops at {size} px, {n_steps} steps of 64 in "
          f"{seconds:.0f} s wall, {cpu:.0f} s CPU: EXPR score {score['score']:.3f} (F1 {score['f1']:.3f}, "
          f"accuracy {score['accuracy']:.3f}), CCC valence {ccc(va[:, 0], va_va[:, 0].numpy()):.3f}, "
          f"arousal {ccc(va[:, 1], va_va[:, 1].numpy()):.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=Path("/tmp/bench_faces"))
    parser.add_argument("--preset", default="demo")
    parser.add_argument("--reps", type=int, default=3, help="repetitions of each cache build")
    parser.add_argument("--probe", action="store_true", help="measure learnability instead (see above)")
    parser.add_argument("--probe-steps", type=int, default=800)
    args = parser.parse_args()
    cv2.setNumThreads(1)
    if args.probe:
        probe(args.probe_steps)
        return
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
