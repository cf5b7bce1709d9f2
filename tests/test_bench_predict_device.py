"""benchmarks/bench_predict_device.py: the CPU dry run writes the JSON list the GPU script reads."""

from __future__ import annotations

import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def test_the_tiny_dry_run_writes_both_paths(tmp_path, media_dir, monkeypatch, capsys) -> None:
    from benchmarks import bench_predict_device

    monkeypatch.setenv("MTAFFECT_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "figures" / "predict.json"
    argv = ["--device", "cpu", "--tiny", "--reps", "1", "--max-frames", "12", "--work", str(tmp_path)]
    assert (
        bench_predict_device.main([*argv, "--video", str(media_dir / "single_face.mp4"), "--json", str(out)])
        == 0
    )
    figures = json.loads(out.read_text())
    assert [f["path"] for f in figures] == ["today", "new"]
    for f in figures:
        assert set(f) == {"measure", "path", "value", "unit", "device", "settings"}
        assert f["measure"] == "predict_fps" and f["unit"] == "frames/s" and f["device"] == "cpu"
        assert f["value"] > 0 and int(f["settings"].rsplit("frames=", 1)[1]) >= 12  # whole chunks
    assert "overlap=False" in figures[0]["settings"] and "overlap=True" in figures[1]["settings"]
    assert "new / today:" in capsys.readouterr().out
