"""`mtaffect reproduce`: run wiring (teachers, CNN for the GRU), resume by skipping, tables of mean ± std."""

from __future__ import annotations

from pathlib import Path

import pytest

from mtaffect.errors import UserError
from mtaffect.train.reproduce import RUNS, ablation_tables, reproduce, run_config


class FakeRunner:
    """Records the configs it is given and returns seed-dependent scores."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, object]] = []

    def __call__(self, config, run_dir: Path, device):
        run_dir.mkdir(parents=True, exist_ok=True)
        self.calls.append((run_dir.name, config))
        ckpt = run_dir / "best.safetensors"
        ckpt.write_text("x")
        seed = config.train.seed
        return ckpt, {"expr_score": 0.5 + 0.1 * seed, "ccc_valence": 0.4, "ccc_arousal": 0.3 + 0.05 * seed}, 2


def test_runs_are_wired_to_their_teachers_and_finished_runs_are_skipped(tmp_path):
    runner = FakeRunner()
    result = reproduce(
        tmp_path / "index.parquet",
        tmp_path / "out",
        seeds=2,
        runner=runner,
        log=lambda s: None,
        overrides=["train.epochs=2"],
    )
    assert [name for name, _ in runner.calls] == [r.name for r in RUNS] * 2
    configs = {(name, c.train.seed): c for name, c in runner.calls}
    assert configs[("cnn_teacher_t12", 0)].data.use_task_sets == ["EXPR", "VA"]
    assert configs[("cnn_teacher_t123", 1)].data.use_task_sets == ["EXPR", "VA", "EXPR_VA"]
    eq9, eq10 = configs[("cnn_student_eq9", 1)], configs[("cnn_student_eq10", 1)]
    assert not eq9.stage.shared_labels and eq10.stage.shared_labels
    assert eq9.stage.teacher.endswith("seed_1/cnn_teacher_t123/best.safetensors")
    gru_s = configs[("gru_student", 0)]
    assert gru_s.model.cnn_checkpoint.endswith("seed_0/cnn_student_eq10/best.safetensors")
    assert gru_s.stage.teacher.endswith("seed_0/gru_teacher/best.safetensors")
    assert gru_s.stage.name == "gru_student" and gru_s.train.epochs == 2
    assert len(result.scores) == 12
    assert (tmp_path / "out" / "ablations.md").read_text() == result.markdown

    again = FakeRunner()
    reproduce(tmp_path / "index.parquet", tmp_path / "out", seeds=3, runner=again, log=lambda s: None)
    assert {c.train.seed for _, c in again.calls} == {2}  # seeds 0 and 1 were finished


def test_tables_show_mean_and_std_next_to_the_paper(tmp_path):
    result = reproduce(
        tmp_path / "i.parquet", tmp_path / "o", seeds=2, runner=FakeRunner(), log=lambda s: None, tables=[1]
    )
    md = result.markdown
    assert "Table 1" in md and "Table 3" not in md
    row = "| Teacher, T ∈ {1,2} | 0.550 ± 0.071 | 0.400 ± 0.000 | 0.325 ± 0.035 | 0.498 | 0.374 | 0.407 |"
    assert row in md
    one_seed = ablation_tables(result.scores[result.scores["seed"] == 0], tables=[1])
    assert "| 0.500 |" in one_seed and "±" not in one_seed


def test_base_diff_and_per_stage_diffs_apply(tmp_path):
    base = {
        "model": {"cnn": {"backbone": "resnet_tiny"}},
        "stages": {"gru_teacher": {"train": {"epochs": 7}}},
    }
    gru = next(r for r in RUNS if r.name == "gru_teacher")
    ckpts = {"cnn_student_eq10": tmp_path / "c.safetensors"}
    config = run_config(gru, index="i.parquet", seed=4, checkpoints=ckpts, base=base)
    assert config.model.cnn["backbone"] == "resnet_tiny" and config.train.epochs == 7
    assert config.train.batch_per_task == 16 and config.train.seed == 4
    with pytest.raises(Exception, match="unknown config key"):
        run_config(gru, index="i", seed=0, checkpoints=ckpts, base={"train": {"epochz": 1}})


def test_base_is_found_like_a_train_recipe_and_is_not_changed_by_the_runs(tmp_path):
    gru = next(r for r in RUNS if r.name == "gru_teacher")
    ckpts = {"cnn_student_eq10": tmp_path / "c.safetensors"}
    config = run_config(gru, index="i.parquet", seed=0, checkpoints=ckpts, base="demo")
    # demo.yaml's common diff, then its per-stage block, on top of the packaged gru_teacher recipe
    assert config.data.image_size == 48 and config.data.sequences == {
        "length": 32,
        "stride": 16,
        "eval_stride": 32,
        "cache_batch": 512,
    }
    assert config.train.batch_per_task == 16 and config.train.max_steps_per_epoch == 0
    with pytest.raises(UserError, match=r"not a packaged recipe \(base, .*demo"):
        run_config(gru, index="i", seed=0, checkpoints=ckpts, base="dmeo")
    base = {"data": {"sequences": {"length": 8}}, "stages": {"gru_teacher": {"train": {"epochs": 2}}}}
    first = run_config(
        gru, index="i", seed=0, checkpoints=ckpts, base=base, overrides=["data.sequences.length=4"]
    )
    assert first.data.sequences["length"] == 4 and first.train.epochs == 2
    assert base == {"data": {"sequences": {"length": 8}}, "stages": {"gru_teacher": {"train": {"epochs": 2}}}}
