"""Checkpoint evaluation (what ``mtaffect evaluate`` runs) and its reports: the score table as text,
the confusion-matrix plot, the files of ``--out``.

The protocol is described in :mod:`mtaffect.evaluate` (which re-exports these names); the frames are
predicted by :mod:`mtaffect.evaluate.frames` and scored by :mod:`mtaffect.evaluate.scores`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mtaffect import metrics
from mtaffect.data.records import has_expression
from mtaffect.evaluate.frames import labelled_frames, predict_cnn_frames, predict_gru_frames
from mtaffect.evaluate.scores import score_table, summary_metrics, with_predictions
from mtaffect.labels import EXPRESSIONS, NUM_EXPRESSIONS

__all__ = ["EvaluationResult", "evaluate_checkpoint", "format_table", "plot_confusion", "write_report"]


@dataclass
class EvaluationResult:
    """What :func:`evaluate_checkpoint` returns: the table, the per-frame predictions, the summary."""

    table: pd.DataFrame
    predictions: pd.DataFrame
    metrics: dict[str, float]
    kind: str
    skipped: dict[str, int]


def evaluate_checkpoint(
    checkpoint: str | Path,
    index: str | Path | pd.DataFrame,
    *,
    split: str = "validation",
    databases: list[str] | None = None,
    cnn: str | Path | None = None,
    features: str | Path | None = None,
    stride: int | None = None,
    batch_size: int = 128,
    device: str = "auto",
    progress: bool = True,
    index_meta: dict | None = None,
) -> EvaluationResult:
    """Evaluate a checkpoint (CNN, GRU or CNN+GRU) on the labelled frames of ``split`` of an index.

    GRU checkpoints read embeddings from the feature cache of their CNN (``cnn``, else the
    ``model.cnn_checkpoint`` of their training config, found relative to the run when it moved:
    :func:`mtaffect.checkpoint.find_cnn_checkpoint`): the training cache is reused when it exists
    (``features``, else the config's ``data.features``, else ``<checkpoint folder>/../features``);
    otherwise a centre-crop-only cache of the evaluated frames is computed there.
    """
    from mtaffect.checkpoint import load_model
    from mtaffect.errors import UserError
    from mtaffect.features import EVAL_DRAW, ensure_feature_cache, ensure_gru_features
    from mtaffect.runtime import resolve_device

    dev = resolve_device(device)
    if isinstance(index, pd.DataFrame):
        df, meta = index, dict(index_meta or {})
    else:
        from mtaffect.data.index import read_index

        df, meta = read_index(index)
    # a GRU-only checkpoint comes joined with its CNN (found as predict and export find it)
    model, ck = load_model(checkpoint, cnn=cnn, device=str(dev))
    kind = (ck.get("joined") or {}).get("gru_kind", ck.get("kind", "cnn"))
    skipped: dict[str, int] = {}
    if kind == "cnn":
        frames = labelled_frames(df, split, databases)
        if frames.empty:
            raise UserError(
                f"no labelled {split} frames in the index" + (f" for {databases}" if databases else "")
            )
        predicted = predict_cnn_frames(
            model,
            frames,
            meta,
            preprocessing=ck["preprocessing"],  # its eval_resize is the transform training validated with
            batch_size=batch_size,
            device=dev,
        )
    else:
        all_frames = labelled_frames(df, split, databases)
        frames = labelled_frames(df, split, databases, videos_only=True)
        skipped = {"still images (no frame number, no window)": len(all_frames) - len(frames)}
        if frames.empty:
            raise UserError(f"no labelled {split} video frames in the index for the GRU")
        sequences = dict(_train_get(ck, "data", "sequences", {}) or {})
        length = int(sequences.get("length", 32))
        stride = int(stride or sequences.get("eval_stride", 32))
        cnn_model, gru_model, prep = model.cnn, model.gru, ck["preprocessing"]
        root = Path(
            features or _train_get(ck, "data", "features", "") or Path(checkpoint).parent.parent / "features"
        )
        common = dict(  # the cache warps with prep.eval_resize, as the GRU stage did (its checkpoint's)
            size=prep.size,
            resize=prep.eval_resize,
            device=dev,
            progress=progress,
            preprocessing_meta=prep.to_dict(),
        )
        cache = None
        if set(sequences) <= _sequence_fields():
            cache = ensure_gru_features(df, meta, cnn_model, sequences, root, only_existing=True, **common)
        if cache is None or (cache.positions(frames) < 0).any():
            cache = ensure_feature_cache(
                cnn_model, frames, meta, root, draws=[EVAL_DRAW], batch_size=256, **common
            )
        predicted = predict_gru_frames(
            gru_model,
            cache,
            frames,
            length=length,
            stride=stride,
            batch_size=max(1, batch_size // 2),
            device=dev,
        )
    predictions = with_predictions(frames, predicted)
    return EvaluationResult(
        score_table(predictions), predictions, summary_metrics(predictions), kind, skipped
    )


def _sequence_fields() -> set[str]:
    from dataclasses import fields

    from mtaffect.data.sequences import SequenceConfig

    return {f.name for f in fields(SequenceConfig)}


def _train_get(meta: dict, section: str, key: str, default: Any) -> Any:
    """A value of the training config stored in a checkpoint (``meta["train"][section][key]``)."""
    value = ((meta.get("train") or {}).get(section) or {}).get(key)
    return default if value in (None, "") else value


def format_table(table: pd.DataFrame) -> str:
    """The score table as aligned text (3 decimals, counts as integers)."""
    shown = table.copy()
    for column in shown.columns:
        if column.startswith("n_"):
            shown[column] = shown[column].map(lambda v: "" if pd.isna(v) else f"{int(v)}")
        elif column != "database":
            shown[column] = shown[column].map(lambda v: "-" if pd.isna(v) else f"{v:.3f}")
    return shown.to_string(index=False)


def plot_confusion(predictions: pd.DataFrame, path: str | Path, title: str = "") -> None:
    """Row-normalised confusion matrix of the expression-labelled frames, as a PNG (atomic)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from mtaffect.io import atomic_path

    has_e = has_expression(predictions)
    truth = predictions["expression"].astype("Int64").to_numpy(np.int64, na_value=0)[has_e]
    counts = metrics.confusion_matrix(truth, predictions["pred_expression"].to_numpy()[has_e])
    totals = counts.sum(axis=1, keepdims=True)
    rates = np.divide(counts, totals, out=np.zeros(counts.shape), where=totals > 0)
    fig, ax = plt.subplots(figsize=(6.4, 5.4), dpi=110)
    image = ax.imshow(rates, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(NUM_EXPRESSIONS), EXPRESSIONS, rotation=45, ha="right")
    ax.set_yticks(range(NUM_EXPRESSIONS), EXPRESSIONS)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    for i in range(NUM_EXPRESSIONS):
        for j in range(NUM_EXPRESSIONS):
            if counts[i, j]:
                ax.text(
                    j,
                    i,
                    f"{rates[i, j]:.2f}\n{counts[i, j]}",
                    ha="center",
                    va="center",
                    fontsize=7,
                    color="white" if rates[i, j] > 0.5 else "black",
                )
    ax.set_title(title or f"expression confusion ({int(has_e.sum())} frames)")
    fig.colorbar(image, ax=ax, fraction=0.046)
    fig.tight_layout()
    with atomic_path(Path(path)) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)


def write_report(result: EvaluationResult, out_dir: str | Path, *, checkpoint: str = "") -> dict[str, Path]:
    """Write ``scores.csv``, ``scores.json``, ``predictions.parquet`` and ``confusion.png`` (atomically)."""
    from mtaffect.io import write_csv, write_json, write_parquet

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = {
        name: out / name for name in ("scores.csv", "scores.json", "predictions.parquet", "confusion.png")
    }
    write_csv(result.table, paths["scores.csv"])
    records = result.table.astype(object).where(result.table.notna(), None).to_dict(orient="records")
    write_json(
        paths["scores.json"],
        {
            "checkpoint": checkpoint,
            "kind": result.kind,
            "summary": result.metrics,
            "per_database": records,
            "skipped": result.skipped,
        },
    )
    write_parquet(result.predictions, paths["predictions.parquet"], index=False)
    if has_expression(result.predictions).any():
        plot_confusion(result.predictions, paths["confusion.png"])
    else:
        paths.pop("confusion.png")
    return paths
