"""The four stages end to end through ``run_stage`` / ``mtaffect train`` on the synthetic databases.

A few steps each with a tiny backbone at 32 px: the CNN teacher, the CNN student (eq. 10) from it,
the GRU teacher on the feature cache of the CNN student, and the GRU student. Also: the run folder is
never overwritten, ``--resume`` continues it, and the best checkpoint carries the resolved config.
"""

from __future__ import annotations

import json

import pytest

from mtaffect.checkpoint import load_checkpoint, read_metadata
from mtaffect.cli import main
from mtaffect.config import load_config
from mtaffect.errors import ExistingRunError
from mtaffect.train.stages import BEST_CHECKPOINT, run_stage

SMALL = [
    "model.cnn.backbone=resnet_tiny",
    "model.gru.hidden=8",
    "data.image_size=32",
    "train.epochs=2",
    "train.max_steps_per_epoch=2",
    "train.batch_per_task=8",
    "train.progress=false",
    "train.tensorboard=false",
    "train.device=cpu",
    "optim.lr=1e-3",
]


@pytest.fixture(scope="module")
def index_path(tmp_path_factory):
    from mtaffect.data.faces import build_face_cache
    from mtaffect.data.index import build_index, write_index
    from mtaffect.data.synthetic import write_databases

    root = tmp_path_factory.mktemp("synthetic")
    write_databases(root / "db", preset="tiny", seed=0)
    roots = {name: root / "db" / name for name in ("affwild2", "affectnet", "expw", "afew_va")}
    index, meta = build_index(roots)
    meta = build_face_cache(index, meta, root / "cache", size=48, workers=1, progress=False)
    path = root / "index.parquet"
    write_index(index, meta, path)
    return path


@pytest.fixture(scope="module")
def cnn_runs(index_path, tmp_path_factory):
    out = tmp_path_factory.mktemp("runs")
    base = [f"data.index={index_path}", *SMALL]
    teacher = run_stage(load_config("cnn_teacher", base), out / "cnn_teacher")
    student = run_stage(
        load_config("cnn_student", [*base, f"stage.teacher={teacher.checkpoint}"]), out / "cnn_student"
    )
    return out, base, teacher, student


def test_cnn_teacher_and_student_write_best_checkpoints(cnn_runs):
    out, _, teacher, student = cnn_runs
    for result, name in ((teacher, "cnn_teacher"), (student, "cnn_student")):
        assert result.checkpoint == out / name / BEST_CHECKPOINT and result.checkpoint.exists()
        meta = read_metadata(result.checkpoint)
        assert meta["stage"] == name and meta["kind"] == "cnn"
        assert (
            meta["train"]["stage"]["name"] == name
            and meta["train"]["model"]["cnn"]["backbone"] == "resnet_tiny"
        )
        assert {"expr_score", "ccc_valence", "ccc_arousal", "abaw_sum"} <= set(meta["metrics"])
        assert meta["preprocessing"]["size"] == 32
        model, _ = load_checkpoint(result.checkpoint)
        assert model.config.backbone == "resnet_tiny"
        assert result.fit.epochs_run == 2
        assert (out / name / "metrics.csv").exists() and (out / name / "config.yaml").exists()
    assert read_metadata(student.checkpoint)["train"]["stage"]["teacher"] == str(teacher.checkpoint)


def test_gru_teacher_and_student_on_the_feature_cache(cnn_runs):
    out, base, _, cnn_student = cnn_runs
    gru = [*base, f"model.cnn_checkpoint={cnn_student.checkpoint}", f"data.features={out / 'features'}"]
    teacher = run_stage(load_config("gru_teacher", gru), out / "gru_teacher")
    student = run_stage(
        load_config("gru_student", [*gru, f"stage.teacher={teacher.checkpoint}"]), out / "gru_student"
    )
    caches = [p for p in (out / "features").iterdir() if p.is_dir()]
    assert len(caches) == 1  # built once by the teacher, reused by the student
    for result in (teacher, student):
        meta = read_metadata(result.checkpoint)
        assert meta["kind"] == "gru" and {"abaw_sum"} <= set(meta["metrics"])


def test_run_folder_is_protected_and_resume_continues(cnn_runs, capsys):
    out, base, _, _ = cnn_runs
    with pytest.raises(ExistingRunError):
        run_stage(load_config("cnn_teacher", base), out / "cnn_teacher")
    # resuming a finished 2-epoch run with epochs=3 trains exactly one more epoch
    code = main(
        ["train", "cnn_teacher", *base, "train.epochs=3", "--out", str(out / "cnn_teacher"), "--resume"]
    )
    assert code == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["epochs_run"] == 3
    # resuming with a different recipe is refused
    code = main(
        ["train", "cnn_teacher", *base, "train.seed=7", "--out", str(out / "cnn_teacher"), "--resume"]
    )
    assert code == 2
    assert "train.seed" in capsys.readouterr().err


def test_cli_reports_bad_config_keys(capsys, tmp_path):
    assert main(["train", "cnn_teacher", "train.epoch=3", "--out", str(tmp_path / "x")]) == 2
    assert "did you mean epochs" in capsys.readouterr().err
    assert (
        main(
            ["train", "cnn_student", "--print-config"]
            if False
            else ["train", "cnn_student", "train.seed=3", "--out", str(tmp_path / "y"), "--print-config"]
        )
        == 0
    )
    assert "seed: 3" in capsys.readouterr().out
