"""`mtaffect demo`: the whole chain on the tiny synthetic preset; the full demo's bar as a slow test."""

from __future__ import annotations

import json
import shutil

import pandas as pd
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

    # Table 3's chain alone (what the slow test runs): four runs, and the very GRU and CNN students
    # of the whole demo, to the bit (every run is seeded on its own)
    lines.clear()
    chain_dir = tmp_path / "t3"  # the same databases and face cache, resumed into: only the runs are new
    for name in ("data", "faces"):
        shutil.copytree(out / name, chain_dir / name)
    shutil.copy(out / "index.parquet", chain_dir / "index.parquet")
    chain = run_demo(
        chain_dir, resume=True, preset="tiny", overrides=FAST, video_frames=40, tables=(3,), log=lines.append
    )
    trained = [line.split("] ", 1)[1].split(":")[0] for line in lines if ": training (" in line]
    assert trained == ["cnn_teacher_t123", "cnn_student_eq10", "gru_teacher", "gru_student"]
    assert "Table 3" in chain.ablations and "Table 1" not in chain.ablations
    for name in ("gru_student", "cnn_student"):
        pd.testing.assert_frame_equal(chain.evaluation[name], result.evaluation[name])
    assert json.loads((chain_dir / "summary.json").read_text())["tables"] == [3]


def test_demo_tables_option_keeps_overrides_apart():
    from mtaffect.cli import build_parser

    args = build_parser("demo").parse_args(["--tables", "3", "train.epochs=2"])
    assert args.tables == [3] and args.overrides == ["train.epochs=2"]
    assert build_parser("demo").parse_args(["--tables", "1,3"]).tables == [1, 3]
    for bad in ("4", "x"):
        with pytest.raises(SystemExit):
            build_parser("demo").parse_args(["--tables", bad])


def test_demo_refuses_to_overwrite_without_asking(tmp_path):
    from mtaffect.errors import ExistingRunError

    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "file").write_text("keep me")
    with pytest.raises(ExistingRunError):
        run_demo(tmp_path / "x", preset="tiny", overrides=FAST)


@pytest.mark.slow
def test_full_demo_meets_its_bar(tmp_path):
    """`make demo`'s learning check: its preset, recipe and seed, Table 3's chain only. Its GRU student is
    the one `make demo` prints (the test above checks the identity); the two ablation-only runs of
    Tables 1-2 would double-check nothing the tiny demo does not, at a third of the demo's time."""
    result = run_demo(tmp_path / "demo", tables=(3,), overrides=["train.progress=false"])
    gru = result.evaluation["gru_student"].set_index("database").loc["affwild2"]
    assert gru["expr_score"] >= THRESHOLD and gru["ccc_mean"] >= THRESHOLD
    assert result.passed
