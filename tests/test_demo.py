"""`mtaffect demo`: the whole chain on the tiny synthetic preset; the full demo's bar as a slow test."""

from __future__ import annotations

import json

import pytest

from mtaffect.demo import THRESHOLD, run_demo

FAST = ["train.epochs=1", "train.max_steps_per_epoch=2", "train.batch_per_task=4", "train.progress=false"]


def test_reduced_demo_runs_the_whole_chain(tmp_path):
    out = tmp_path / "demo"
    lines: list[str] = []
    result = run_demo(out, preset="tiny", overrides=FAST, video_frames=40, log=lines.append)
    for name in (
        "index.parquet",
        "final.safetensors",
        "summary.json",
        "runs/ablations.md",
        "evaluation/gru_student/scores.csv",
        "evaluation/cnn_student/confusion.png",
        "video/predictions.csv",
    ):
        assert (out / name).exists(), name
    assert "Table 1" in result.ablations and "Table 3" in result.ablations
    assert "affwild2" in set(result.evaluation["gru_student"]["database"])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["video"]["frames"] == 40 and set(summary["seconds"]) >= {"total"}
    # a second call resumes: every run is finished, nothing is trained again
    lines.clear()
    run_demo(out, resume=True, preset="tiny", overrides=FAST, video_frames=40, log=lines.append)
    assert sum("finished earlier, skipped" in line for line in lines) == 6


def test_demo_refuses_to_overwrite_without_asking(tmp_path):
    from mtaffect.errors import ExistingRunError

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("keep me")
    with pytest.raises(ExistingRunError):
        run_demo(tmp_path / "x", preset="tiny", overrides=FAST)


@pytest.mark.slow
def test_full_demo_meets_its_bar(tmp_path):
    result = run_demo(tmp_path / "demo", overrides=["train.progress=false"])
    gru = result.evaluation["gru_student"].set_index("database").loc["affwild2"]
    assert gru["expr_score"] >= THRESHOLD and gru["ccc_mean"] >= THRESHOLD
    assert result.passed
