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


# ---------------------------------------------------- benchmarks/gpu_summary.py (gpu_short_run3.sh)

def _row(measure, path, value, unit="frames/s", device="NVIDIA H200", settings="s"):
    return {"measure": measure, "path": path, "value": value, "unit": unit, "device": device,
            "settings": settings}


def test_the_summary_puts_today_and_new_side_by_side(tmp_path, capsys):
    from benchmarks import gpu_summary

    store = tmp_path / "store.json"
    store.write_text(json.dumps([_row("feature cache", "today", 943.0, settings="9 draws"),
                                 _row("feature cache", "new", 15400.0, settings="9 draws")]))
    compile_ = tmp_path / "compile.json"
    compile_.write_text(json.dumps([_row("cnn_teacher start-up", "today", 111.0, "s", settings="cold"),
                                    _row("cnn_teacher start-up", "new", 37.0, "s", settings="cold"),
                                    _row("eager start-up", "today", 2.2, "s", settings="cold")]))
    assert gpu_summary.main([str(store), str(compile_)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| measure | device | today | new | unit | new / today |"
    assert out[2] == "| feature cache | NVIDIA H200 | 943 | 15,400 | frames/s | 16.33× |"
    assert out[3] == "| cnn_teacher start-up | NVIDIA H200 | 111 | 37 | s | 0.33× |"
    assert out[4] == "| eager start-up | NVIDIA H200 | 2.2 | — | s | — |"  # one path only
    assert "* store.json: 9 draws" in out and "* compile.json: cold" in out


def test_the_summary_names_a_bad_file_and_still_prints_the_others(tmp_path, capsys):
    from benchmarks import gpu_summary

    good = tmp_path / "good.json"
    good.write_text(json.dumps([_row("evaluate", "today", 4976.0)]))
    broken = tmp_path / "broken.json"
    broken.write_text('[\n {"measure": "x",\n  oops}\n]')
    wrong = tmp_path / "wrong.json"
    wrong.write_text(json.dumps([_row("evaluate", "before", 1.0)]))
    assert gpu_summary.main([str(good), str(broken), str(wrong), str(tmp_path / "missing.json")]) == 1
    captured = capsys.readouterr()
    assert "| evaluate | NVIDIA H200 | 4,976 | — | frames/s | — |" in captured.out
    assert f"{broken}: line 3: not JSON" in captured.err
    assert f"{wrong}: row 1: path 'before' is neither 'today' nor 'new'" in captured.err
    assert f"{tmp_path / 'missing.json'}: cannot be read" in captured.err
    assert "3 of 4 files left out" in captured.err


def test_bench_compile_writes_the_row_contract_after_each_measurement(tmp_path, monkeypatch, capsys):
    # the measuring processes are replaced (inductor on CPU takes minutes): what is checked is the
    # order of the runs (eager, then empty cache = today, then the same cache again = new) and the rows
    from benchmarks import bench_compile, gpu_summary

    calls = []

    def fake_child(args, stage, mode, cache):
        calls.append((stage, mode, cache is not None and cache.name))
        if mode == "off":
            return {"startup_s": 1.5, "step_s": 0.25}
        warm = sum(1 for c in calls if c[1] == mode) == 2
        return {"startup_s": 9.0 if warm else 40.0, "first_step_s": 8.0 if warm else 39.0,
                "compiled": 0 if warm else 2, "loaded": 2 if warm else 0, "step_s": 0.1}

    monkeypatch.setattr(bench_compile, "_run_child", fake_child)
    out = tmp_path / "compile.json"
    argv = ["--device", "cpu", "--tiny", "--stages", "cnn_teacher", "--json", str(out)]
    assert bench_compile.main(argv) == 0
    folder = "cnn_teacher-reduce-overhead"
    assert calls == [("cnn_teacher", "off", False), ("cnn_teacher", "reduce-overhead", folder),
                     ("cnn_teacher", "reduce-overhead", folder)]
    rows = gpu_summary.read_rows(out)  # the contract gpu_summary checks
    values = {(r["measure"], r["path"]): r["value"] for r in rows}
    assert values[("cnn_teacher compile=reduce-overhead start-up (to step 5)", "today")] == 40.0
    assert values[("cnn_teacher compile=reduce-overhead start-up (to step 5)", "new")] == 9.0
    assert values[("cnn_teacher compile=reduce-overhead graphs compiled", "new")] == 0
    assert values[("cnn_teacher eager start-up (to step 5)", "today")] == 1.5
    assert {r["device"] for r in rows} == {"cpu"} and "resnet_tiny" in rows[0]["settings"]
