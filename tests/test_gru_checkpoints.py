"""A GRU stage's GRU-only checkpoint works everywhere: predict, the Python Predictor, export, evaluate.

One tiny run: a random tiny CNN saved as ``runs/cnn_student/best.safetensors`` and a GRU teacher
trained for a few steps on its feature cache (synthetic Aff-Wild2), referring to the CNN by a
relative path, as the README's quick start does. Every consumer finds the CNN the same way
(training config, then relative to the run when moved, ``--cnn`` to override) or says clearly what
is missing; the stage's ``cnn_gru.safetensors`` predicts the same numbers as GRU + CNN loaded apart.
"""

from __future__ import annotations

import os
import shutil
import warnings
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from mtaffect.checkpoint import (
    CNN_GRU_CHECKPOINT,
    find_cnn_checkpoint,
    join_checkpoints,
    load_checkpoint,
    load_model,
    read_metadata,
    save_checkpoint,
)
from mtaffect.cli import main
from mtaffect.errors import ExistingRunError, InputFormatError, UserError
from mtaffect.models import Preprocessing
from mtaffect.predict.predictor import Predictor
from mtaffect.predict.runtime import FaceModel
from mtaffect.runtime import file_sha256
from mtaffect.testing import tiny_checkpoint

STAGE = [
    "model.cnn.backbone=resnet_tiny",
    "model.gru.hidden=8",
    "data.image_size=32",
    "train.epochs=1",
    "train.max_steps_per_epoch=2",
    "train.batch_per_task=4",
    "train.progress=false",
    "train.tensorboard=false",
    "train.device=cpu",
]
CNN_REL = "runs/cnn_student/best.safetensors"
CNN_STUDENT = {"preprocessing": Preprocessing(size=32), "stage": "cnn_student"}  # tiny_checkpoint metadata
CLOSE = {"rtol": 1e-5, "atol": 1e-6}  # same weights, same batch: only the order of loading differs


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> dict[str, Path]:
    """``proj/runs/{cnn_student,gru_teacher}`` trained from ``proj`` with relative paths."""
    from mtaffect.config import load_config
    from mtaffect.data.faces import build_face_cache
    from mtaffect.data.index import build_index, write_index
    from mtaffect.data.synthetic import write_databases
    from mtaffect.train.stages import run_stage

    proj = tmp_path_factory.mktemp("proj")
    write_databases(proj / "db", preset="tiny", seed=0)
    index, meta = build_index({"affwild2": proj / "db" / "affwild2"})
    meta = build_face_cache(index, meta, proj / "faces", size=32, workers=1, progress=False)
    write_index(index, meta, proj / "index.parquet")
    tiny_checkpoint(proj / CNN_REL, "cnn", 0, **CNN_STUDENT)
    cwd = Path.cwd()
    os.chdir(proj)  # train as the README does: from the project folder, with relative paths
    try:
        config = load_config(
            "gru_teacher", [*STAGE, "data.index=index.parquet", f"model.cnn_checkpoint={CNN_REL}"]
        )
        result = run_stage(config, "runs/gru_teacher")
    finally:
        os.chdir(cwd)
    crops = np.random.default_rng(0).integers(0, 256, (12, 32, 32, 3), dtype=np.uint8)
    folder = proj / "cropped" / "clip"
    folder.mkdir(parents=True)
    for k, crop in enumerate(crops, start=1):
        cv2.imwrite(str(folder / f"{k:05d}.png"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))
    return {
        "proj": proj,
        "cnn": proj / CNN_REL,
        "gru": proj / result.checkpoint,
        "joined": proj / "runs" / "gru_teacher" / CNN_GRU_CHECKPOINT,
        "index": proj / "index.parquet",
        "cropped": proj / "cropped",
    }


def _crops(run) -> np.ndarray:
    files = sorted((run["cropped"] / "clip").iterdir())
    return np.stack([cv2.cvtColor(cv2.imread(str(f)), cv2.COLOR_BGR2RGB) for f in files])


def _predict(path: Path, run, **kwargs) -> pd.DataFrame:
    predictor = Predictor.from_checkpoint(path, backend="torch", **kwargs)
    assert predictor.temporal
    return predictor.predict_crops(_crops(run))


def _numbers(df: pd.DataFrame) -> np.ndarray:
    return df[["valence", "arousal", *[c for c in df.columns if c.startswith("p_")]]].to_numpy(float)


def _moved(run, tmp_path: Path, **recorded) -> Path:
    """The run as copied to another machine: the recorded CNN path no longer exists."""
    runs = tmp_path / "elsewhere" / "runs"
    shutil.copytree(run["proj"] / "runs" / "cnn_student", runs / "cnn_student")
    model, meta = load_checkpoint(run["gru"])
    old = "/nonexistent/old/proj/" + CNN_REL
    train = {**meta["train"], "model": {**meta["train"]["model"], "cnn_checkpoint": old}}
    cnn = {**meta["cnn"], "checkpoint": old, **recorded}
    keep = {k: v for k, v in meta.items() if k not in ("format", "kind", "model", "train", "cnn")}
    save_checkpoint(runs / "gru_teacher" / "best.safetensors", model, **keep, train=train, cnn=cnn)
    return runs / "gru_teacher" / "best.safetensors"


# ------------------------------------------------------------------ the stage's own files


def test_gru_stage_records_its_cnn_and_writes_a_joined_checkpoint(run):
    meta = read_metadata(run["gru"])
    assert meta["kind"] == "gru"
    assert meta["train"]["model"]["cnn_checkpoint"] == CNN_REL  # as typed
    assert meta["cnn"] == {"checkpoint": str(run["cnn"].resolve()), "sha256": file_sha256(run["cnn"])}
    joined, joined_meta = load_checkpoint(run["joined"])
    assert joined_meta["kind"] == "cnn_gru" and joined_meta["epoch"] == meta["epoch"]
    assert joined_meta["preprocessing"].size == 32  # the CNN's, not a default
    cnn, _ = load_checkpoint(run["cnn"])
    gru, _ = load_checkpoint(run["gru"])
    for key, value in cnn.state_dict().items():
        torch.testing.assert_close(joined.cnn.state_dict()[key], value, rtol=0, atol=0)
    for key, value in gru.state_dict().items():
        torch.testing.assert_close(joined.gru.state_dict()[key], value, rtol=0, atol=0)


def test_joined_file_predicts_what_gru_and_cnn_loaded_apart_predict(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not where training ran: the relative config path must not matter
    apart = _predict(run["gru"], run)
    together = _predict(run["joined"], run)
    assert len(apart) == 12 and apart["valence"].notna().all()
    np.testing.assert_allclose(_numbers(apart), _numbers(together), **CLOSE)


# ------------------------------------------------------------------ finding the CNN


def test_cnn_is_found_from_the_training_config(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert find_cnn_checkpoint(run["gru"]).resolve() == run["cnn"].resolve()
    model, meta = load_model(run["gru"])
    assert model.kind == "cnn_gru" and meta["kind"] == "cnn_gru"
    assert meta["joined"]["cnn"] and meta["preprocessing"].size == 32


def test_cnn_is_found_relative_to_a_moved_run(run, tmp_path, monkeypatch):
    moved = _moved(run, tmp_path)
    monkeypatch.chdir(tmp_path)
    assert find_cnn_checkpoint(moved) == moved.parent.parent / "cnn_student" / "best.safetensors"
    np.testing.assert_allclose(
        _numbers(_predict(moved, run)), _numbers(_predict(run["joined"], run)), **CLOSE
    )


def test_a_different_cnn_at_the_recorded_place_is_refused(run, tmp_path):
    moved = _moved(run, tmp_path)
    retrained = moved.parent.parent / "cnn_student" / "best.safetensors"
    tiny_checkpoint(retrained, "cnn", 5, **CNN_STUDENT)  # retrained in place
    with pytest.raises(InputFormatError, match="sha256 differs"):
        find_cnn_checkpoint(moved)


def test_missing_cnn_says_what_is_missing_and_how_to_fix_it(run, tmp_path, capsys):
    moved = _moved(run, tmp_path)
    shutil.rmtree(moved.parent.parent / "cnn_student")
    with pytest.raises(InputFormatError) as err:
        Predictor.from_checkpoint(moved, backend="torch")
    message = str(err.value)
    assert str(moved) in message and "/nonexistent/old/proj/" + CNN_REL in message
    assert "--cnn" in message and "mtaffect join" in message and CNN_GRU_CHECKPOINT in message
    out = tmp_path / "preds"
    args = ["predict", str(run["cropped"]), "--cropped", "--checkpoint", str(moved), "--out", str(out)]
    assert main([*args, "--backend", "torch", "--quiet"]) == 2
    assert "--cnn" in capsys.readouterr().err


def test_cnn_option_overrides_and_warns_about_another_cnn(run, tmp_path):
    moved = _moved(run, tmp_path)
    shutil.rmtree(moved.parent.parent / "cnn_student")
    copy = shutil.copy(run["cnn"], tmp_path / "my_cnn.safetensors")
    np.testing.assert_allclose(
        _numbers(_predict(moved, run, cnn=copy)), _numbers(_predict(run["joined"], run)), **CLOSE
    )
    other = tiny_checkpoint(tmp_path / "other.safetensors", "cnn", 3, **CNN_STUDENT)
    with pytest.warns(UserWarning, match="not the CNN"):
        load_model(moved, cnn=other)
    with pytest.raises(InputFormatError, match="not a CNN"):
        load_model(moved, cnn=run["joined"])
    with pytest.raises(UserError, match="GRU-only"):
        load_model(run["cnn"], cnn=copy)


def test_an_in_memory_gru_without_its_cnn_is_refused():
    from mtaffect.models import GRUConfig, TemporalModel

    with pytest.raises(UserError, match="needs its CNN"):
        FaceModel(TemporalModel(GRUConfig(hidden=8)), {"kind": "gru"}, backend="torch")


# ------------------------------------------------------------------ the commands


def test_cli_predict_on_the_gru_checkpoint_with_and_without_cnn(run, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tables = {}
    for name, extra in (
        ("config", ["--checkpoint", str(run["gru"])]),
        ("cnn", ["--checkpoint", str(run["gru"]), "--cnn", str(run["cnn"])]),
        ("joined", ["--checkpoint", str(run["joined"])]),
    ):
        out = tmp_path / name
        args = ["predict", str(run["cropped"]), "--cropped", *extra, "--out", str(out)]
        assert main([*args, "--backend", "torch", "--quiet", "--no-plots", "--no-overlay"]) == 0
        tables[name] = pd.read_parquet(out / "clip" / "predictions.parquet")
    assert len(tables["config"]) == 12
    for name in ("cnn", "joined"):
        np.testing.assert_allclose(_numbers(tables["config"]), _numbers(tables[name]), **CLOSE)


def test_cli_export_of_a_gru_checkpoint(run, tmp_path, capsys):
    pytest.importorskip("onnxruntime")
    from mtaffect.export import read_onnx_metadata

    out = tmp_path / "gru.onnx"
    assert main(["export", str(run["gru"]), "--out", str(out), "--seq-len", "8", "--check"]) == 0
    assert "ok" in capsys.readouterr().out
    assert read_onnx_metadata(out)["kind"] == "cnn_gru"
    assert read_onnx_metadata(out)["preprocessing"]["size"] == 32
    moved = _moved(run, tmp_path)
    shutil.rmtree(moved.parent.parent / "cnn_student")
    args = ["export", str(moved), "--out", str(tmp_path / "m.onnx"), "--seq-len", "8"]
    assert main(args) == 2
    assert "--cnn" in capsys.readouterr().err
    assert main([*args, "--cnn", str(run["cnn"])]) == 0


def test_evaluate_finds_the_cnn_of_a_moved_run_like_predict(run, tmp_path, capsys):
    from mtaffect.evaluate import evaluate_checkpoint

    moved = _moved(run, tmp_path)
    common = dict(device="cpu", progress=False, features=tmp_path / "features")
    apart = evaluate_checkpoint(moved, run["index"], **common)
    together = evaluate_checkpoint(run["joined"], run["index"], **common)
    assert apart.kind == "gru" and together.kind == "cnn_gru"
    for key, value in together.metrics.items():
        assert apart.metrics[key] == pytest.approx(value, rel=1e-5, abs=1e-6), key
    shutil.rmtree(moved.parent.parent / "cnn_student")
    args = ["evaluate", str(moved), "--index", str(run["index"]), "--device", "cpu", "--no-progress"]
    assert main(args) == 2
    assert "--cnn" in capsys.readouterr().err
    assert main([*args, "--cnn", str(run["cnn"]), "--features", str(tmp_path / "features")]) == 0


def test_cli_join(run, tmp_path, capsys):
    out = tmp_path / "joined.safetensors"
    assert main(["join", str(run["cnn"]), str(run["gru"]), "--out", str(out)]) == 0
    assert "kind=cnn_gru" in capsys.readouterr().out
    ours, meta = load_checkpoint(out)
    stage, _ = load_checkpoint(run["joined"])
    for key, value in stage.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, rtol=0, atol=0)
    assert meta["sources"]["cnn"]["sha256"] == file_sha256(run["cnn"])
    assert meta["sources"]["gru"]["sha256"] == file_sha256(run["gru"])
    # never over an existing file unless asked; only a CNN and a GRU-only checkpoint join
    assert main(["join", str(run["cnn"]), str(run["gru"]), "--out", str(out)]) == 2
    assert "--overwrite" in capsys.readouterr().err
    assert main(["join", str(run["cnn"]), str(run["gru"]), "--out", str(out), "--overwrite"]) == 0
    with pytest.raises(ExistingRunError):
        join_checkpoints(run["cnn"], run["gru"], out)
    assert main(["join", str(run["cnn"]), str(run["joined"]), "--out", str(tmp_path / "x")]) == 2
    assert "GRU-only" in capsys.readouterr().err
    assert main(["join", str(run["gru"]), str(run["gru"]), "--out", str(tmp_path / "y")]) == 2
    assert "not a CNN" in capsys.readouterr().err
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the right CNN: no warning
        join_checkpoints(run["cnn"], run["gru"], tmp_path / "z.safetensors")
