"""The paper's ablations (Tables 1–3) as one resumable command, over several seeds.

Six runs per seed, each a stage of :mod:`mtaffect.train.stages` with a small override:

========================= =========== ===== =========================================================
run                       stage       table what changes
========================= =========== ===== =========================================================
``cnn_teacher_t12``       cnn_teacher 1     task sets {EXPR, VA} (T ∈ {1, 2})
``cnn_teacher_t123``      cnn_teacher 1     task sets {EXPR, VA, EXPR_VA} (T ∈ {1, 2, 3})
``cnn_student_eq9``       cnn_student 2     teacher = T ∈ {1,2,3}; no shared labels (eq. 9)
``cnn_student_eq10``      cnn_student 2     teacher = T ∈ {1,2,3}; shared labels (eq. 10)
``gru_teacher``           gru_teacher 3     frozen CNN = the eq. 10 student
``gru_student``           gru_student 3     same CNN; teacher = the GRU teacher
========================= =========== ===== =========================================================

Each run's config is: its packaged stage recipe, then the ``base`` diff (e.g. ``configs/demo.yaml``;
its optional ``stages: {stage name: diff}`` block adds per-stage diffs), then the user's ``key=value``
overrides, then the run's own keys (index, seed, teacher/CNN checkpoints, the ablated option).
Runs live in ``<out>/seed_<s>/<run>/``; a finished run leaves ``reproduce.json`` and is skipped when
the command is repeated; an interrupted one resumes from its last saved epoch or step. Scores are the best
epoch's validation metrics (the official per-frame protocol on every Aff-Wild2 validation frame).
The result is ``<out>/ablations.md`` (mean ± sample std over seeds, the paper's layout: rows
Method, columns EXPR / Valence / Arousal, the paper's numbers beside them), ``ablations.csv``
(one row per run and seed) and ``ablations.json``.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtaffect.errors import UserError
from mtaffect.io import write_csv, write_json, write_text

__all__ = ["RUNS", "PAPER", "AblationRun", "ReproduceResult", "reproduce", "ablation_tables", "run_config"]

DONE_FILE = "reproduce.json"


@dataclass(frozen=True)
class AblationRun:
    """One training run of the ablations: a stage recipe plus the overrides that define it.

    needs: config key → name of the run whose best checkpoint fills it (same seed).
    """

    name: str
    stage: str
    table: int
    method: str
    overrides: tuple[str, ...] = ()
    needs: Mapping[str, str] = field(default_factory=dict)


RUNS: tuple[AblationRun, ...] = (
    AblationRun("cnn_teacher_t12", "cnn_teacher", 1, "Teacher, T ∈ {1,2}", ("data.use_task_sets=[EXPR,VA]",)),
    AblationRun(
        "cnn_teacher_t123",
        "cnn_teacher",
        1,
        "Teacher, T ∈ {1,2,3}",
        ("data.use_task_sets=[EXPR,VA,EXPR_VA]",),
    ),
    AblationRun(
        "cnn_student_eq9",
        "cnn_student",
        2,
        "Student without shared labels (eq. 9)",
        ("stage.shared_labels=false",),
        {"stage.teacher": "cnn_teacher_t123"},
    ),
    AblationRun(
        "cnn_student_eq10",
        "cnn_student",
        2,
        "Student with shared labels (eq. 10)",
        ("stage.shared_labels=true",),
        {"stage.teacher": "cnn_teacher_t123"},
    ),
    AblationRun(
        "gru_teacher", "gru_teacher", 3, "GRU teacher", (), {"model.cnn_checkpoint": "cnn_student_eq10"}
    ),
    AblationRun(
        "gru_student",
        "gru_student",
        3,
        "GRU student",
        (),
        {"model.cnn_checkpoint": "cnn_student_eq10", "stage.teacher": "gru_teacher"},
    ),
)

PAPER: dict[str, tuple[float, float, float]] = {
    "cnn_teacher_t12": (0.498, 0.374, 0.407),
    "cnn_teacher_t123": (0.513, 0.438, 0.398),
    "cnn_student_eq9": (0.513, 0.472, 0.412),
    "cnn_student_eq10": (0.525, 0.471, 0.421),
    "gru_teacher": (0.555, 0.523, 0.543),
    "gru_student": (0.555, 0.526, 0.551),
}
"""The paper's Aff-Wild2 validation scores (EXPR, valence CCC, arousal CCC), means of 10 runs."""

TABLE_TITLES = {
    1: "Table 1: CNN teacher trained on task sets T",
    2: "Table 2: CNN student without / with the shared annotations",
    3: "Table 3: GRU teacher and student",
}
METRIC_KEYS = ("expr_score", "ccc_valence", "ccc_arousal")


def _load_base(base: str | Path | Mapping | None) -> tuple[dict, dict]:
    """(diff for every stage, {stage name: extra diff}) from a YAML file or mapping."""
    from mtaffect.config import load_yaml_tree, recipe_path

    if base is None:
        return {}, {}
    tree = dict(base) if isinstance(base, Mapping) else load_yaml_tree(recipe_path(base))
    stages = dict(tree.pop("stages", None) or {})
    return tree, stages


def run_config(
    run: AblationRun,
    *,
    index: str | Path,
    seed: int,
    checkpoints: Mapping[str, Path],
    base: str | Path | Mapping | None = None,
    overrides: Sequence[str] = (),
) -> Any:
    """The :class:`mtaffect.config.Config` of one run (see the module docstring for the order)."""
    from mtaffect.config import CONFIG_DIR, Config, apply_overrides, from_dict, load_yaml_tree, merge

    common, per_stage = _load_base(base)
    tree = load_yaml_tree(CONFIG_DIR / f"{run.stage}.yaml")  # always the packaged stage recipe
    tree = merge(merge(tree, common), per_stage.get(run.stage, {}))
    own = [f"data.index={index}", f"train.seed={seed}", *run.overrides]
    own += [f"{key}={checkpoints[name]}" for key, name in run.needs.items()]
    tree = apply_overrides(tree, [*overrides, *own])
    return from_dict(Config, tree)


@dataclass
class ReproduceResult:
    """Per-run scores (one row per run and seed), and the markdown tables."""

    scores: pd.DataFrame
    markdown: str
    out_dir: Path


def _needed(tables: Sequence[int]) -> list[AblationRun]:
    by_name = {r.name: r for r in RUNS}
    wanted = {r.name for r in RUNS if r.table in tables}
    stack = list(wanted)
    while stack:
        for dep in by_name[stack.pop()].needs.values():
            if dep not in wanted:
                wanted.add(dep)
                stack.append(dep)
    return [r for r in RUNS if r.name in wanted]


def _default_runner(config: Any, run_dir: Path, device: str | None) -> tuple[Path, dict[str, float], int]:
    from mtaffect.train.stages import run_stage

    result = run_stage(config, run_dir, resume=True, device=device)
    return result.checkpoint, dict(result.fit.best_metrics), int(result.fit.best_epoch)


def reproduce(
    index: str | Path,
    out_dir: str | Path,
    *,
    seeds: int | Sequence[int] = 3,
    base: str | Path | Mapping | None = None,
    overrides: Sequence[str] = (),
    tables: Sequence[int] = (1, 2, 3),
    device: str | None = None,
    runner: Callable[[Any, Path, str | None], tuple[Path, dict[str, float], int]] | None = None,
    log: Callable[[str], None] = print,
) -> ReproduceResult:
    """Train the ablation runs for every seed (skipping finished ones) and write the tables.

    seeds: a count n (seeds 0..n−1) or explicit seeds. tables: which of Tables 1–3 (their
    dependencies run too). runner: ``(config, run_dir, device) -> (checkpoint, metrics, best_epoch)``
    (default: :func:`mtaffect.train.stages.run_stage` with resume).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    seed_list = list(range(seeds)) if isinstance(seeds, int) else [int(s) for s in seeds]
    if not seed_list:
        raise UserError("reproduce: at least one seed")
    unknown = sorted(set(tables) - set(TABLE_TITLES))
    if unknown:
        raise UserError(f"reproduce: unknown tables {unknown}; choose from 1, 2, 3")
    runner = runner or _default_runner
    index = Path(index).resolve()
    rows = []
    for seed in seed_list:
        checkpoints: dict[str, Path] = {}
        for run in _needed(tables):
            run_dir = out / f"seed_{seed}" / run.name
            done = run_dir / DONE_FILE
            if done.exists():
                record = json.loads(done.read_text())
                log(f"[seed {seed}] {run.name}: finished earlier, skipped")
            else:
                log(f"[seed {seed}] {run.name}: training ({run.stage})")
                config = run_config(
                    run, index=index, seed=seed, checkpoints=checkpoints, base=base, overrides=overrides
                )
                checkpoint, metrics, best_epoch = runner(config, run_dir, device)
                record = {
                    "run": run.name,
                    "stage": run.stage,
                    "seed": seed,
                    "checkpoint": str(checkpoint),
                    "best_epoch": best_epoch,
                    "metrics": metrics,
                }
                write_json(done, record)
            checkpoints[run.name] = Path(record["checkpoint"])
            rows.append(
                {
                    "run": run.name,
                    "table": run.table,
                    "method": run.method,
                    "seed": seed,
                    "best_epoch": record["best_epoch"],
                    **{k: float(record["metrics"].get(k, np.nan)) for k in METRIC_KEYS},
                    "checkpoint": record["checkpoint"],
                }
            )
    scores = pd.DataFrame(rows)
    markdown = ablation_tables(scores, tables=tables)
    write_csv(scores, out / "ablations.csv")
    write_text(out / "ablations.md", markdown)
    write_json(out / "ablations.json", {"seeds": seed_list, "runs": rows})
    return ReproduceResult(scores, markdown, out)


def _cell(values: np.ndarray) -> str:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return "–"
    if values.size == 1:
        return f"{values[0]:.3f}"
    return f"{values.mean():.3f} ± {values.std(ddof=1):.3f}"


def ablation_tables(scores: pd.DataFrame, *, tables: Sequence[int] = (1, 2, 3)) -> str:
    """Markdown tables in the paper's layout from per-run scores (columns run, table, method, seed,
    expr_score, ccc_valence, ccc_arousal): mean ± sample std over seeds, the paper's numbers beside."""
    seeds = sorted(scores["seed"].unique()) if len(scores) else []
    lines = []
    for table in tables:
        part = scores[scores["table"] == table]
        if part.empty:
            continue
        lines += [
            f"### {TABLE_TITLES[table]}",
            "",
            f"Aff-Wild2 validation, {len(seeds)} seed(s) ({', '.join(map(str, seeds))})"
            + ("; mean ± sample std." if len(seeds) > 1 else "; one run, no spread."),
            "",
            "| Method | EXPR | Valence | Arousal | Paper EXPR | Paper Valence | Paper Arousal |",
            "|---|---|---|---|---|---|---|",
        ]
        for run in [r for r in RUNS if r.table == table]:
            rows = part[part["run"] == run.name]
            if rows.empty:
                continue
            ours = [_cell(rows[k].to_numpy(dtype=float)) for k in METRIC_KEYS]
            paper = [f"{v:.3f}" for v in PAPER[run.name]]
            lines.append(f"| {run.method} | " + " | ".join(ours + paper) + " |")
        lines.append("")
    return "\n".join(lines)
