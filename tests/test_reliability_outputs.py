"""Issue 12, items 7 and 8: outputs that cannot be written, cache settings, killed saves, odd sizes."""

from __future__ import annotations

import errno
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).parent / "fixtures" / "datasets"))
import native_examples  # noqa: E402

from mtaffect.cli import main  # noqa: E402
from mtaffect.errors import OutputError, UserError  # noqa: E402


def _expw_index(tmp_path: Path) -> Path:
    from mtaffect.data.index import build_index, write_index

    root = native_examples.expw(tmp_path / "expw")
    index, meta = build_index({"expw": root})
    write_index(index, meta, tmp_path / "index.parquet")
    return tmp_path / "index.parquet"


def _refuse_writes_under(monkeypatch, folder: Path, code: int = errno.EROFS) -> None:
    """Make ``folder`` behave as a read-only (or full) disk for mtaffect's writers."""
    real = tempfile.mkstemp

    def mkstemp(*args, dir=None, **kwargs):  # noqa: A002 - tempfile's signature
        if dir is not None and str(Path(dir).resolve()).startswith(str(folder.resolve())):
            raise OSError(code, os.strerror(code), str(dir))
        return real(*args, dir=dir, **kwargs)

    monkeypatch.setattr(tempfile, "mkstemp", mkstemp)


def _one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert "Traceback" not in err and len(err.splitlines()) == 1, err
    return err


def test_index_on_a_read_only_destination_fails_before_reading(tmp_path, monkeypatch, capsys):
    import mtaffect.data.index as index_mod

    root = native_examples.expw(tmp_path / "expw")
    out = tmp_path / "ro" / "index.parquet"
    _refuse_writes_under(monkeypatch, tmp_path / "ro")
    monkeypatch.setattr(index_mod, "build_index", lambda *a, **k: pytest.fail("databases read first"))
    assert main(["index", "--expw", str(root), "--out", str(out)]) == 1
    line = _one_error_line(capsys)
    assert str(out) in line and "read-only" in line


def test_a_full_disk_at_the_rename_is_one_line_naming_the_file(tmp_path, monkeypatch, capsys):
    import mtaffect.io as io_mod

    root = native_examples.expw(tmp_path / "expw")
    out = tmp_path / "index.parquet"

    def replace(src, dst):
        raise OSError(errno.ENOSPC, "No space left on device", str(src))

    monkeypatch.setattr(io_mod.os, "replace", replace)
    assert main(["index", "--expw", str(root), "--out", str(out)]) == 1
    line = _one_error_line(capsys)
    assert f"cannot write {out}" in line and "disk is full" in line
    assert not out.exists() and not list(tmp_path.glob(".index.parquet.*.tmp"))


def test_cache_with_a_read_only_index_fails_before_building(tmp_path, monkeypatch, capsys):
    import mtaffect.data.faces as faces

    index = _expw_index(tmp_path / "ro")
    _refuse_writes_under(monkeypatch, tmp_path / "ro")
    monkeypatch.setattr(faces, "build_face_cache", lambda *a, **k: pytest.fail("cache built first"))
    assert main(["cache", "--index", str(index), "--out", str(tmp_path / "c"), "--workers", "1"]) == 1
    assert str(index) in _one_error_line(capsys)


def test_torch_save_failure_in_train_names_the_file(tmp_path, monkeypatch, capsys):
    import torch

    import mtaffect.cli.train as cli_train
    from mtaffect.train.state import save_state

    def save(*args, **kwargs):
        raise RuntimeError("[enforce fail at inline_container.cc:626] . unexpected pos 2496 vs 2392")

    monkeypatch.setattr(torch, "save", save)
    state = tmp_path / "run" / "last_state.pt"
    monkeypatch.setattr(cli_train, "run", lambda args: save_state(state, epoch=1))
    assert main(["train", "cnn_teacher", "--out", str(tmp_path / "run")]) == 1
    line = _one_error_line(capsys)
    assert f"cannot write {state}" in line and not list(state.parent.glob("*.tmp"))
    with pytest.raises(OutputError):
        save_state(state, epoch=1)


def test_any_command_turns_an_os_error_on_output_into_one_line(tmp_path, monkeypatch, capsys):
    import mtaffect.cli.predict as cli_predict

    def run(args):
        raise OSError(errno.EROFS, "Read-only file system", str(tmp_path / "out" / "plots"))

    monkeypatch.setattr(cli_predict, "run", run)
    assert main(["predict", "x.mp4", "--checkpoint", "c.safetensors", "--out", str(tmp_path / "out")]) == 1
    assert f"{tmp_path / 'out' / 'plots'}: Read-only file system" in _one_error_line(capsys)


def test_train_resume_removes_the_tmp_of_a_killed_save(tmp_path, monkeypatch, capsys):
    import mtaffect.train.stages as stages

    run_dir = tmp_path / "run"
    run_dir.mkdir()
    leftover = run_dir / ".last_state.pt.k3j2_x.tmp"
    leftover.write_bytes(b"\0" * 1000)
    (run_dir / "metrics.csv").write_text("epoch\n1\n")

    def run_stage(*args, **kwargs):
        raise UserError("stopped here")

    monkeypatch.setattr(stages, "run_stage", run_stage)
    assert main(["train", "cnn_teacher", "--out", str(run_dir), "--resume"]) == 2
    assert not leftover.exists() and (run_dir / "metrics.csv").exists()


def test_cache_rerun_with_another_quality_never_keeps_old_shards(tmp_path, capsys):
    index = _expw_index(tmp_path)
    base = ["cache", "--index", str(index), "--out", str(tmp_path / "c"), "--workers", "1", "--size", "32"]
    assert main([*base, "--quality", "90"]) == 0
    shard = tmp_path / "c" / "jpeg32" / "shard-00000.bin"
    first = shard.read_bytes()
    capsys.readouterr()
    assert main([*base, "--quality", "20"]) == 2
    assert "quality 90 (now 20)" in _one_error_line(capsys) and shard.read_bytes() == first
    assert main([*base, "--quality", "20", "--overwrite"]) == 0
    assert shard.read_bytes() != first and len(shard.read_bytes()) < len(first)
    assert main([*base, "--quality", "20"]) == 0  # same settings: resumes, keeps the shards


def test_a_batch_larger_than_a_task_set_is_a_user_error():
    from support import make_data

    with pytest.raises(UserError, match="smaller than one batch of 50"):
        make_data(batch_per_task=50)


def test_a_huge_photo_is_refused_from_its_header(tmp_path):
    import struct
    import time
    import zlib

    import pandas as pd

    from mtaffect.data.faces import build_face_cache
    from mtaffect.data.faces.crops import decode_image

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    # a 20000×20000 PNG header with a tiny (truncated) body: decoding it would need 1.2 GB
    header = struct.pack(">IIBBBBB", 20000, 20000, 8, 2, 0, 0, 0)
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", zlib.compress(b"\0" * 1000))
    (tmp_path / "huge.png").write_bytes(png)
    # one boxed face in it, as a user database's index row: the face cache opens the file, reads the
    # header and records the refusal without decoding
    index = pd.DataFrame({"database": ["photos"], "image": ["huge.png"], "landmarks": [None],
                          "face_id": pd.array([pd.NA], "Int64"), "box_x0": [0.0], "box_y0": [0.0],
                          "box_x1": [200.0], "box_y1": [200.0]})
    start = time.perf_counter()
    meta = build_face_cache(index, {"roots": {"photos": str(tmp_path)}}, tmp_path / "cache", size=32,
                            workers=1, progress=False)
    assert meta["face_cache"]["skipped"] == {"photos": {"image_too_large": 1}}
    assert decode_image(png) is None and time.perf_counter() - start < 1.0
    assert decode_image(np.frombuffer(native_examples.image_bytes(64, 48), np.uint8)).shape == (48, 64, 3)
