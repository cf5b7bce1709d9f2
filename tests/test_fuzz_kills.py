"""Fault injection: ``mtaffect index``, ``cache``, ``train`` and ``submit`` killed (SIGKILL) at seeded
random points, then rerun; the result must equal an uninterrupted run's (issue 12).

Each command runs once uninterrupted (the reference, in-process, timed: ``work`` seconds), then
``KILLS`` times in a subprocess killed ``startup + u × work`` seconds after its start, u drawn
uniformly (seeded) from [-0.3, 1.1] and ``startup`` the measured time to start Python and import
mtaffect (a run that finishes first is redone with 0.6 × the delay, up to three times): the kills
land in the imports, the reading, the computing and the writing alike. After
each kill no output may be
half-written under its final name; the rerun (the same command, with ``--overwrite`` for index and
``--resume`` for train) must give the reference's outputs exactly: the same index, byte-identical
cache shards, bit-identical trained weights, byte-identical submission files, and no ``.tmp`` left.

``make test`` runs one kill each of index, cache and submit (about 8 s); training kills cost about
20 s each and run only in ``make fuzz`` (``MTAFFECT_KILLS=N`` kills per command).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "datasets"))
import native_examples  # noqa: E402

from mtaffect.data.index import read_index  # noqa: E402

_SET = os.environ.get("MTAFFECT_KILLS")
KILLS = int(_SET or "1")
TRAIN_KILLS = int(_SET or "0")
TALLY: Counter[tuple[str, str]] = Counter()
DATABASES = ("affwild2", "affectnet", "expw", "afew_va")
TRAIN = [
    "model.cnn.backbone=resnet_tiny", "data.image_size=48", "train.epochs=2", "train.max_steps_per_epoch=6",
    "train.batch_per_task=4", "train.threads=1", "train.device=cpu", "train.tensorboard=false",
    "train.save_every_steps=2", "train.patience=0",
]


def _mtaffect(args: list[str]) -> float:
    """Run ``mtaffect args`` in this process (the reference and the reruns); its wall time."""
    from mtaffect.cli import main

    start = time.perf_counter()
    assert main(args) == 0
    return time.perf_counter() - start


def _env() -> dict[str, str]:
    return {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONUNBUFFERED": "1"}


def _kill_after(args: list[str], delay: float, reset: Callable[[], None]) -> bool:
    """Run ``mtaffect args`` in a subprocess and SIGKILL it ``delay`` s after its start.

    A run that finishes before its kill is started again (outputs removed by ``reset``) with 0.6 ×
    the delay, up to three times; True if the last run was killed.
    """
    for _ in range(3):
        proc = subprocess.Popen([sys.executable, "-m", "mtaffect", *args], env=_env(),
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            proc.wait(timeout=delay)
        except subprocess.TimeoutExpired:
            proc.send_signal(signal.SIGKILL)
            proc.wait(timeout=60)
            return True
        reset()
        delay *= 0.6
    return False


def _delay(seed: int, work: float, startup: float) -> float:
    return max(0.0, startup + float(np.random.default_rng(seed).uniform(-0.3, 1.1)) * work)


def _startup(modules: str) -> float:
    start = time.perf_counter()
    subprocess.run([sys.executable, "-c", f"import {modules}"], env=_env(), check=True)
    return time.perf_counter() - start


def _no_tmp(folder: Path) -> None:
    left = [str(p) for p in folder.rglob("*.tmp")]
    assert not left, f"temporary files left: {left}"


@pytest.fixture(scope="module")
def work(tmp_path_factory) -> dict:
    """The native examples of every database (tests/fixtures/datasets), indexed and cached."""
    folder = tmp_path_factory.mktemp("kills")
    native_examples.affwild2_video59(folder / "db" / "affwild2")
    native_examples.affectnet_csv(folder / "db" / "affectnet")
    native_examples.expw(folder / "db" / "expw")
    native_examples.afew_va(folder / "db" / "afew_va")
    ref = folder / "ref"
    index_args = [f"--{name.replace('_', '-')}={folder / 'db' / name}" for name in DATABASES]
    t_index = _mtaffect(["index", *index_args, "--out", str(ref / "index.parquet")])
    shutil.copy(ref / "index.parquet", ref / "plain.parquet")
    cache_args = ["--size", "48", "--workers", "1", "--shard-size", "8"]
    index = str(ref / "index.parquet")
    t_cache = _mtaffect(["cache", "--index", index, "--out", str(ref / "cache"), *cache_args])
    startup = _startup("mtaffect.cli, mtaffect.data.index, mtaffect.data.faces, mtaffect.predict.submission")
    return {"folder": folder, "ref": ref, "startup": startup, "index": (index_args, t_index),
            "cache": (cache_args, t_cache)}


@pytest.fixture(scope="module", autouse=True)
def _report():
    yield
    target = os.environ.get("MTAFFECT_KILL_REPORT")
    if target:  # other files' rows (tests/test_predict_kill.py) are kept
        mine = {c for c, _ in TALLY}
        rows = json.loads(Path(target).read_text()) if Path(target).exists() else []
        rows = [r for r in rows if r["command"] not in mine]
        rows += [{"command": c, "outcome": o, "count": n} for (c, o), n in sorted(TALLY.items())]
        Path(target).write_text(json.dumps(rows, indent=1))


def _record(command: str, killed: bool) -> None:
    TALLY[(command, "killed" if killed else "finished_before_the_kill")] += 1


def _same_index(a: Path, b: Path) -> None:
    (da, ma), (db, mb) = read_index(a), read_index(b)
    pd.testing.assert_frame_equal(da.drop(columns="landmarks"), db.drop(columns="landmarks"))
    assert [None if x is None else list(x) for x in da["landmarks"]] == [
        None if x is None else list(x) for x in db["landmarks"]
    ]
    drop = ("face_cache",)
    assert {k: v for k, v in ma.items() if k not in drop} == {k: v for k, v in mb.items() if k not in drop}


@pytest.mark.parametrize("seed", range(KILLS))
def test_index_killed_then_rerun_equals_an_uninterrupted_run(work, tmp_path, seed):
    flags, seconds = work["index"]
    out = tmp_path / "index.parquet"
    args = ["index", *flags, "--out", str(out)]
    killed = _kill_after(args, _delay(seed, seconds, work["startup"]), lambda: out.unlink())
    if out.exists():  # atomic: a file under the final name is a whole index
        _same_index(out, work["ref"] / "plain.parquet")
    _mtaffect([*args, "--overwrite"])
    _same_index(out, work["ref"] / "plain.parquet")
    _no_tmp(tmp_path)
    _record("index", killed)
    TALLY[("index", "rerun_matched")] += 1


def _cache_files(folder: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(folder.glob("shard-*"))}


@pytest.mark.parametrize("seed", range(KILLS))
def test_cache_killed_then_rerun_equals_an_uninterrupted_run(work, tmp_path, seed):
    flags, seconds = work["cache"]
    shutil.copy(work["ref"] / "plain.parquet", tmp_path / "index.parquet")
    args = ["cache", "--index", str(tmp_path / "index.parquet"), "--out", str(tmp_path / "cache"), *flags]
    def reset() -> None:
        shutil.rmtree(tmp_path / "cache")
        shutil.copy(work["ref"] / "plain.parquet", tmp_path / "index.parquet")

    killed = _kill_after(args, _delay(100 + seed, seconds, work["startup"]), reset)
    _mtaffect(args)
    ref_cache, cache = work["ref"] / "cache" / "jpeg48", tmp_path / "cache" / "jpeg48"
    assert _cache_files(cache) == _cache_files(ref_cache)
    manifest = json.loads((cache / "cache.json").read_text())
    ref_manifest = json.loads((ref_cache / "cache.json").read_text())
    manifest.pop("path"), ref_manifest.pop("path")
    assert manifest == ref_manifest
    _same_index(tmp_path / "index.parquet", work["ref"] / "index.parquet")
    _no_tmp(tmp_path)
    _record("cache", killed)
    TALLY[("cache", "rerun_matched")] += 1


@pytest.fixture(scope="module")
def train_reference(work) -> dict:
    """The tiny synthetic databases (enough frames per task set), indexed, cached, trained once."""
    from mtaffect.data.synthetic import write_databases

    folder = work["folder"] / "train"
    write_databases(folder / "db", preset="tiny", seed=0)
    flags = [f"--{name.replace('_', '-')}={folder / 'db' / name}" for name in DATABASES]
    _mtaffect(["index", *flags, "--out", str(folder / "index.parquet")])
    index = str(folder / "index.parquet")
    _mtaffect(["cache", "--index", index, "--out", str(folder / "cache"), "--size", "48", "--workers", "1"])
    args = ["train", "cnn_teacher", f"data.index={index}", *TRAIN]
    seconds = _mtaffect([*args, "--out", str(folder / "run")])
    startup = _startup("torch, mtaffect.cli, mtaffect.train.stages")
    return {"args": args, "seconds": seconds, "startup": startup, "ref": folder / "run"}


def _weights(path: Path) -> dict[str, np.ndarray]:
    from safetensors.numpy import load_file

    return load_file(str(path))


@pytest.mark.skipif(TRAIN_KILLS == 0, reason="train kills (~20 s each) run in `make fuzz`; make test "
                    "checks resume bit-for-bit in tests/test_train.py")
@pytest.mark.parametrize("seed", range(max(1, TRAIN_KILLS)))
def test_train_killed_then_resumed_gives_the_same_weights(work, train_reference, tmp_path, seed):
    args = [*train_reference["args"], "--out", str(tmp_path / "run")]
    delay = _delay(200 + seed, train_reference["seconds"], train_reference["startup"])
    killed = _kill_after(args, delay, lambda: shutil.rmtree(tmp_path / "run"))
    _mtaffect([*args, "--resume"])
    ref_run, run = train_reference["ref"], tmp_path / "run"
    got, want = _weights(run / "best.safetensors"), _weights(ref_run / "best.safetensors")
    assert got.keys() == want.keys()
    for name in want:
        np.testing.assert_array_equal(got[name], want[name], err_msg=name)
    metrics = pd.read_csv(run / "metrics.csv").drop(columns="seconds")
    pd.testing.assert_frame_equal(metrics, pd.read_csv(ref_run / "metrics.csv").drop(columns="seconds"))
    _no_tmp(tmp_path)
    _record("train", killed)
    TALLY[("train", "rerun_matched")] += 1


@pytest.fixture(scope="module")
def submit_reference(work) -> dict:
    from support import prediction_table

    folder = work["folder"] / "submit"
    for k in range(12):
        preds = folder / "preds" / f"vid{k}"
        preds.mkdir(parents=True)
        table = prediction_table(f"vid{k}", list(range(0, 40, 3)), n_video=40, seed=k)
        table.to_parquet(preds / "predictions.parquet")
    (folder / "test.txt").write_text("\n".join(f"vid{k}" for k in range(12)) + "\n")
    args = ["submit", "--predictions", str(folder / "preds"), "--task", "va", "--test-list",
            str(folder / "test.txt")]
    seconds = _mtaffect([*args, "--out", str(folder / "sub")])
    return {"args": args, "seconds": seconds, "ref": folder / "sub"}


@pytest.mark.parametrize("seed", range(KILLS))
def test_submit_killed_then_rerun_equals_an_uninterrupted_run(work, submit_reference, tmp_path, seed):
    out, ref = tmp_path / "sub", submit_reference["ref"]
    args = [*submit_reference["args"], "--out", str(out)]
    delay = _delay(300 + seed, submit_reference["seconds"], work["startup"])
    killed = _kill_after(args, delay, lambda: shutil.rmtree(out))
    for path in out.rglob("*.txt") if out.exists() else []:  # atomic: every file there is whole
        assert path.read_bytes() == (ref / path.relative_to(out)).read_bytes()
    _mtaffect(args)
    files = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert files == {str(p.relative_to(ref)): p.read_bytes() for p in ref.rglob("*") if p.is_file()}
    _no_tmp(tmp_path)
    _record("submit", killed)
    TALLY[("submit", "rerun_matched")] += 1
