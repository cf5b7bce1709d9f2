"""benchmarks/bench_gpu.py: its CPU dry run prints every figure; without CUDA the GPU run is skipped."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def test_the_cpu_dry_run_measures_every_figure(tmp_path, capsys):
    from benchmarks import bench_gpu

    out = tmp_path / "results.json"
    assert bench_gpu.main(["--device", "cpu", "--tiny", "--out", str(out)]) == 0
    results = json.loads(out.read_text())
    assert results["device"] == "cpu" and results["peak_tflop_s"] > 0
    for stage in ("cnn_teacher", "cnn_student"):
        figure = results[f"{stage}_compile_off"]
        assert figure["img_s"] > 0 and figure["gflop_per_step"] > 0, figure
        assert 0 < figure["fraction_of_peak"] < 1, figure
    # the student's step adds the frozen teacher's forwards: more FLOPs than the teacher's step
    flops = {s: results[f"{s}_compile_off"]["gflop_per_step"] for s in ("cnn_teacher", "cnn_student")}
    assert flops["cnn_student"] > flops["cnn_teacher"]
    for workers in (0, 1):
        cache = results[f"feature_cache_workers_{workers}"]
        assert cache["draws"] == 9 and cache["crops_s"] == pytest.approx(9 * cache["frames_s"], rel=0.01)
        assert results[f"evaluate_workers_{workers}"]["frames_s"] > 0
    assert "predict: skipped" in capsys.readouterr().out


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the machine-without-CUDA message")
def test_without_cuda_the_gpu_run_is_skipped_with_a_message(capsys):
    from benchmarks import bench_gpu

    assert bench_gpu.main([]) == 0
    assert "CUDA is not available here: the GPU figures are skipped" in capsys.readouterr().out
