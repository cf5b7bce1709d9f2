"""``mtaffect info``: what a checkpoint is, as text and as JSON (trained CNN, GRU-only needing its CNN)."""

from __future__ import annotations

import json

import pytest

from mtaffect.checkpoint import save_checkpoint
from mtaffect.cli import main
from mtaffect.models import CNNConfig, GRUConfig, MultitaskCNN, Preprocessing, TemporalModel
from mtaffect.runtime import file_sha256

# converted files (the authors' model from a zip): tests/test_convert.py, next to their fake weights


def _info(capsys, path, *flags) -> str:
    assert main(["info", str(path), *flags]) == 0
    return capsys.readouterr().out


def test_info_of_trained_checkpoints_and_of_a_gru_that_needs_its_cnn(tmp_path, capsys):
    cnn_path = tmp_path / "runs" / "cnn_student" / "best.safetensors"
    train = {
        "stage": {"name": "cnn_student", "teacher": "runs/cnn_teacher/best.safetensors"},
        "data": {"index": "index.parquet", "use_task_sets": ["EXPR", "VA", "EXPR_VA"]},
        "model": {"init_from": "ferplus.safetensors"},
    }
    save_checkpoint(
        cnn_path,
        MultitaskCNN(CNNConfig(backbone="resnet_tiny")),
        preprocessing=Preprocessing(size=48, eval_resize=1.25),
        stage="cnn_student",
        train=train,
        metrics={"expr_score": 0.5, "ccc_valence": 0.25, "ccc_arousal": 0.125, "abaw_sum": 0.875},
        epoch=3,
    )
    text = _info(capsys, cnn_path)
    assert "kind: cnn: CNN: one prediction per face crop" in text
    assert "input: 48x48 px" in text and "stage: cnn_student (epoch 3)" in text
    assert "evaluation: resize x1.25, centre 48x48 crop" in text  # what evaluate and predict will apply
    assert "validation: expr_score 0.500, ccc_valence 0.250, ccc_arousal 0.125, abaw_sum 0.875" in text
    assert (
        "training data: frame index index.parquet; task sets EXPR, VA, EXPR_VA; distilled from "
        "runs/cnn_teacher/best.safetensors; initialised from ferplus.safetensors" in text
    )
    assert "licence: trained with mtaffect" in text and "source: mtaffect train cnn_student" in text

    gru_path = tmp_path / "runs" / "gru_student" / "best.safetensors"
    gru_train = {
        "stage": {"name": "gru_student"},
        "data": {"index": "index.parquet", "sequences": {}},
        "model": {"cnn_checkpoint": "runs/cnn_student/best.safetensors"},
    }
    record = {"checkpoint": "/gone/runs/cnn_student/best.safetensors", "sha256": file_sha256(cnn_path)}
    save_checkpoint(
        gru_path, TemporalModel(GRUConfig(hidden=8)), stage="gru_student", train=gru_train, cnn=record
    )
    text = _info(capsys, gru_path)
    assert "kind: gru: GRU only" in text and "backbone: - (in the separate CNN checkpoint)" in text
    assert "training data: frame index index.parquet; 32-frame windows of affwild2 videos" in text
    assert f"needs CNN: /gone/runs/cnn_student/best.safetensors: found at {cnn_path}" in text
    info = json.loads(_info(capsys, gru_path, "--json"))
    assert info["needs_cnn"]["found"] == str(cnn_path) and info["needs_cnn"]["sha256"] == record["sha256"]
    cnn_path.unlink()
    info = json.loads(_info(capsys, gru_path, "--json"))
    assert info["needs_cnn"]["found"] is None and "--cnn" in info["needs_cnn"]["problem"]
    assert "NOT FOUND" in _info(capsys, gru_path)


def test_info_of_a_file_that_is_not_a_checkpoint(tmp_path, capsys):
    bad = tmp_path / "x.safetensors"
    bad.write_bytes(b"not a checkpoint")
    assert main(["info", str(bad)]) == 2
    assert "x.safetensors" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["info"])
