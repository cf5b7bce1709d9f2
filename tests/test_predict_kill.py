"""Fault injection: ``mtaffect predict`` killed (SIGKILL) at seeded random points, then ``--resume``.

Each kill lands at a random moment of the work itself (after the output folder appears: the image
table, the video's table, plots, overlay, report and markers). After the kill no folder may hold a
partial ``predictions.csv``; the rerun with ``--resume`` must give what an uninterrupted run gives:
the same tables, the same files, the same report entries. ``make test`` runs 2 kills
(about 8 s each); ``MTAFFECT_KILLS=N`` runs N (``make fuzz``, docs/reliability.md), and with
``MTAFFECT_KILL_REPORT=FILE`` the tally is added to that file's rows (``command: predict``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mtaffect.cli import main
from mtaffect.predict.runner import MARKER
from mtaffect.testing import FLOAT32_ATOL, FLOAT32_RTOL, tiny_checkpoint

KILLS = int(os.environ.get("MTAFFECT_KILLS", "2"))
TIMING = ("seconds", "frames_per_second")
TALLY: Counter = Counter()


@pytest.fixture(scope="module", autouse=True)
def _report():
    """Add this module's tally to ``MTAFFECT_KILL_REPORT`` (rows of other commands are kept)."""
    yield
    target = os.environ.get("MTAFFECT_KILL_REPORT")
    if target:
        path = Path(target)
        rows = json.loads(path.read_text()) if path.is_file() else []
        rows = [r for r in rows if r["command"] != "predict"]
        rows += [{"command": "predict", "outcome": o, "count": n} for o, n in sorted(TALLY.items())]
        path.write_text(json.dumps(rows, indent=1))


@pytest.fixture(scope="module")
def setup(tmp_path_factory, media_dir) -> dict:
    folder = tmp_path_factory.mktemp("kill")
    tiny_checkpoint(folder / "cnn.safetensors", "cnn")
    args = [str(media_dir / "single_face.mp4"), str(media_dir / "single_face.jpg")]
    args += ["--checkpoint", str(folder / "cnn.safetensors"), "--quiet", "--backend", "torch"]
    ref = folder / "reference"
    t0 = time.perf_counter()
    assert main(["predict", *args, "--out", str(ref)]) == 0
    return {"args": args, "reference": ref, "work": time.perf_counter() - t0, "folder": folder}


def _files(root: Path) -> set[str]:
    return {str(p.relative_to(root)) for p in root.rglob("*") if p.is_file()}


def _entries(root: Path) -> dict[str, dict]:
    report = json.loads((root / "report.json").read_text())
    return {e["input"]: {k: v for k, v in e.items() if k not in TIMING} for e in report["inputs"]}


def _state(out: Path) -> str:
    """Where the kill landed: finished folders, and what the unfinished ones held."""
    parts = []
    for folder in sorted(p for p in out.iterdir() if p.is_dir()) if out.is_dir() else []:
        files = sorted(_files(folder))
        parts.append(f"{folder.name}: " + ("finished" if MARKER in files else ",".join(files) or "empty"))
    return "; ".join(parts) or "nothing written yet"


def _same_table(a: pd.DataFrame, b: pd.DataFrame) -> None:
    pd.testing.assert_frame_equal(a, b, check_exact=False, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)


def _kill_during_work(args: list[str], out: Path, delay: float) -> bool:
    """Start ``mtaffect predict`` in a subprocess; SIGKILL it ``delay`` s after ``out`` appears.

    Returns whether the kill found it running (False: it had finished before)."""
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "mtaffect", "predict", *args, "--out", str(out)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 120
        while not out.exists() and proc.poll() is None and time.monotonic() < deadline:
            time.sleep(0.01)
        started = time.monotonic()
        while proc.poll() is None and time.monotonic() - started < delay:
            time.sleep(0.005)
        killed = proc.poll() is None
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    return killed


@pytest.mark.parametrize("seed", range(KILLS))
def test_kill_then_resume_equals_an_uninterrupted_run(setup, tmp_path, seed) -> None:
    ref, args = setup["reference"], setup["args"]
    out = tmp_path / "out"
    delay = float(np.random.default_rng(seed).uniform(0.0, setup["work"]))
    killed = _kill_during_work(args, out, delay)
    TALLY["killed" if killed else "finished_before_the_kill"] += 1
    print(f"kill {seed}: {delay:.2f} s into the work: {_state(out)}")  # the campaign's log (-s)
    # whatever the moment: a table under its final name is a whole table
    for csv in out.rglob("predictions.csv"):
        _same_table(pd.read_csv(csv), pd.read_csv(ref / csv.relative_to(out)))
    for folder in (p for p in out.iterdir() if p.is_dir()):
        if (folder / MARKER).is_file():  # finished: every file of the reference is there
            assert _files(folder) == _files(ref / folder.name)
    assert main(["predict", *args, "--out", str(out), "--resume"]) == 0
    assert _files(out) == _files(ref)  # no .tmp, no partial CSV, nothing missing
    for table in ref.rglob("predictions.parquet"):
        _same_table(pd.read_parquet(out / table.relative_to(ref)), pd.read_parquet(table))
        _same_table(
            pd.read_csv(out / table.relative_to(ref).with_suffix(".csv")),
            pd.read_csv(table.with_suffix(".csv")),
        )
    assert _entries(out) == _entries(ref)
    TALLY["rerun_matched"] += 1
