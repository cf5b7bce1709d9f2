"""Prediction over a corpus split across ranks: two gloo processes run ``mtaffect predict`` as
``torchrun`` would start them (RANK, WORLD_SIZE, MASTER_ADDR/PORT), each doing its share of the
inputs; rank 0 merges one report equal to a single process's, and ``--resume`` finishes only what
a cut-short run left undone."""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch
import torch.multiprocessing as mp

from mtaffect.cli import main
from mtaffect.predict.runner import MARKER, Unit, _locator
from mtaffect.predict.shard import balance, merge_entries
from mtaffect.testing import FLOAT32_ATOL, FLOAT32_RTOL, tiny_checkpoint
from support import free_port

TIMING = ("seconds", "frames_per_second")


def _worker(rank: int, world: int, port: int, argv: list[str], codes: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), RANK=str(rank),
                      WORLD_SIZE=str(world), LOCAL_RANK=str(rank), LOCAL_WORLD_SIZE=str(world))
    code = main(argv)
    Path(codes, f"rank{rank}.code").write_text(str(code))


def _sharded(argv: list[str], folder: Path) -> list[int]:
    """Run ``mtaffect ARGV`` on 2 gloo ranks; their exit codes."""
    codes = folder / "codes"
    codes.mkdir(exist_ok=True)
    # fork: the children start with torch and the model code already imported (spawn re-imports
    # them, seconds per process on a busy machine); the parent ran torch on one thread only
    mp.start_processes(_worker, args=(2, free_port(), argv, str(codes)), nprocs=2, start_method="fork")
    return [int((codes / f"rank{r}.code").read_text()) for r in range(2)]


def _entries(path: Path) -> list[dict]:
    return [{k: v for k, v in e.items() if k not in TIMING} for e in json.loads(path.read_text())["inputs"]]


def _same_table(a: Path, b: Path) -> None:
    left, right = (pd.read_csv(p / "predictions.csv") for p in (a, b))
    pd.testing.assert_frame_equal(left, right, rtol=FLOAT32_RTOL, atol=FLOAT32_ATOL)


@pytest.fixture(scope="module")
def corpus(tmp_path_factory, media_dir) -> dict:
    folder = tmp_path_factory.mktemp("corpus")
    tiny_checkpoint(folder / "cnn.safetensors", "cnn")
    (folder / "notes.txt").write_text("not media")  # skipped before any work, listed first
    (folder / "broken.mp4").write_bytes(b"\x00" * 64)  # an error entry, no folder
    # a second video of the same name: every rank must agree that it is "single_face_2"
    (folder / "copy").mkdir()
    shutil.copy(media_dir / "single_face.mp4", folder / "copy" / "single_face.mp4")
    inputs = [str(media_dir / n) for n in ("single_face.mp4", "single_face.jpg", "multi_face.jpg")]
    inputs += [str(folder / n) for n in ("copy/single_face.mp4", "notes.txt", "broken.mp4")]
    options = ["--checkpoint", str(folder / "cnn.safetensors"), "--backend", "torch", "--quiet",
               "--no-overlay", "--no-plots"]
    ref = folder / "single"
    assert main(["predict", *inputs, *options, "--out", str(ref)]) == 1  # broken.mp4 and notes.txt
    return {"argv": ["predict", *inputs, *options], "reference": ref, "folder": folder}


def test_two_ranks_split_the_inputs_and_merge_one_report(corpus) -> None:
    ref, folder = corpus["reference"], corpus["folder"]
    out = folder / "sharded"
    assert _sharded([*corpus["argv"], "--out", str(out)], folder) == [1, 1]  # both see the bad inputs

    assert _entries(out / "report.json") == _entries(ref / "report.json")  # same entries, same order
    outputs = {e["output"] for e in _entries(ref / "report.json") if e.get("output")}
    assert outputs == {"images", "single_face", "single_face_2"}
    for name in outputs:
        _same_table(out / name, ref / name)
        assert (out / name / MARKER).is_file()
    assert not (out / "broken").exists()

    # every input was done by exactly one rank, and both ranks had work
    done = [{e["input"] for e in _entries(out / f"report.rank{r}.json")} for r in (0, 1)]
    assert done[0] and done[1] and not done[0] & done[1]
    assert done[0] | done[1] == {e["input"] for e in _entries(ref / "report.json")}

    # a run cut short on rank 1 (its last folder unfinished, no merged report yet): --resume redoes
    # only that folder and leaves every finished one as it was
    rank1 = json.loads((out / "report.rank1.json").read_text())["inputs"]
    cut = next(e["output"] for e in reversed(rank1) if e.get("output"))
    (out / cut / MARKER).unlink()
    (out / "report.json").unlink()
    kept = {p: p.stat().st_mtime_ns for p in out.glob(f"*/{MARKER}")}
    assert _sharded([*corpus["argv"], "--out", str(out), "--resume"], folder) == [1, 1]
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert (out / cut / MARKER).is_file()
    _same_table(out / cut, ref / cut)
    assert _entries(out / "report.json") == _entries(ref / "report.json")

    # one process resuming what two ranks wrote: nothing left to do, the same report
    kept = {p: p.stat().st_mtime_ns for p in out.glob(f"*/{MARKER}")}
    assert main([*corpus["argv"], "--out", str(out), "--resume"]) == 1
    assert {p: p.stat().st_mtime_ns for p in kept} == kept
    assert _entries(out / "report.json") == _entries(ref / "report.json")


def test_cropped_tracks_are_split_across_ranks(corpus) -> None:
    folder = corpus["folder"]
    crops = folder / "cropped_aligned"
    rng = np.random.default_rng(0)
    for track, n in (("v1", 6), ("v2", 3), ("v3", 4)):
        (crops / track).mkdir(parents=True)
        for k in range(1, n + 1):
            noise = rng.integers(0, 255, (64, 64, 3), dtype=np.uint8)
            cv2.imwrite(str(crops / track / f"{k:05d}.jpg"), noise)
    (crops / "v2" / "00004.jpg").write_bytes(b"not a jpeg")  # an error entry inside a track
    argv = ["predict", str(crops), "--cropped", *corpus["argv"][corpus["argv"].index("--checkpoint"):]]
    ref, out = folder / "crops_single", folder / "crops_sharded"
    assert main([*argv, "--out", str(ref)]) == 1
    assert _sharded([*argv, "--out", str(out)], folder) == [1, 1]
    assert _entries(out / "report.json") == _entries(ref / "report.json")
    for track in ("v1", "v2", "v3"):
        _same_table(out / track, ref / track)
    done = [{e["input"] for e in _entries(out / f"report.rank{r}.json")} for r in (0, 1)]
    assert done[0] == {str(crops / "v1")}  # 6 crops, the largest, alone on rank 0
    assert done[1] == {str(crops / t) for t in ("v2", "v3")} | {str(crops / "v2" / "00004.jpg")}


def test_balance_gives_the_largest_first_to_the_least_loaded_rank() -> None:
    assert balance([5, 4, 3, 3], 2) == [0, 1, 1, 0]
    assert balance([1, 1, 1], 1) == [0, 0, 0]
    assert balance([], 3) == []
    owner = balance([10, 1, 1, 1, 1, 1, 1, 1, 1, 1, 1], 2)  # one big video vs ten photos
    assert owner[0] == 0 and owner[1:] == [1] * 10


def test_merge_puts_entries_in_single_process_order() -> None:
    units = [Unit("images", "images", ["a.jpg", "b.jpg"], 2), Unit("clip", "video", ["clip.mp4"], 9),
             Unit("t1", "crops", ["crops/t1"], 1)]
    rank0 = [{"input": "clip.mp4", "output": "clip"}, {"input": "x.txt", "status": "skipped"}]
    rank1 = [{"input": "b.jpg", "status": "error"}, {"input": "crops/t1/00002.jpg", "status": "error"},
             {"input": "images", "output": "images"}, {"input": "crops/t1", "output": "t1"}]
    merged = [e["input"] for e in merge_entries([rank0, rank1], _locator(units))]
    assert merged == ["x.txt", "b.jpg", "images", "clip.mp4", "crops/t1/00002.jpg", "crops/t1"]


def test_more_processes_than_gpus_is_refused_by_name(monkeypatch) -> None:
    from mtaffect.errors import UserError
    from mtaffect.runtime import resolve_device  # torchrun's device, for predict and train

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    resolve_device("auto", 0)
    resolve_device("cpu", 3)  # CPU processes need no GPU
    with pytest.raises(UserError, match="process 1 of this machine has no GPU.*--nproc_per_node 1"):
        resolve_device("auto", 1)


def test_units_are_weighed_by_frames_from_the_video_headers(media_dir, tmp_path) -> None:
    from mtaffect.predict.runner import plan

    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 64)
    names = ("single_face.mp4", "single_face.jpg", "multi_face.jpg", "no_face.mp4")
    units, skipped = plan([*(str(media_dir / n) for n in names), str(tmp_path / "broken.mp4")])
    assert [(u.name, u.frames) for u in units] == [("images", 2), ("single_face", 72), ("no_face", 98),
                                                   ("broken", 1)]  # no_face's header says 98 (95 decode)
    assert not skipped
    assert [u.frames for u in plan([str(media_dir / "single_face.mp4")], weigh=False)[0]] == [0]
