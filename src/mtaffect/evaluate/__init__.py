"""Evaluation: the official per-frame protocol on every labelled frame of a split.

* **CNN**: every frame once, with the evaluation transform (resize × the checkpoint's
  ``Preprocessing.eval_resize``, 1.2 in the recipe, then the centre crop; METHOD.md §4.4).
* **GRU**: per track, windows of ``length`` frames with stride ``eval_stride`` planned in
  ``mode="predict"`` (:func:`mtaffect.windows.plan_windows`: gaps split runs, short runs are padded
  and masked, the last window is aligned to the run's end); overlapping steps are averaged by
  :func:`mtaffect.windows.stitch`, so **every frame is predicted exactly once and in order**. The
  authors' test script keeps the first occurrence per frame after a collate transposition that
  misaligns the last batch of every video (METHOD.md §8.1 bug 1); we never reorder: predictions are
  written back by position.

Metrics (:mod:`mtaffect.metrics`) are computed over all frames concatenated, per database and for all
databases: EXPR (macro F1, accuracy, score = 0.67·F1 + 0.33·acc) on expression-labelled frames, CCC of
valence and arousal on VA-labelled frames, and ``abaw_sum`` = EXPR score + CCC_V + CCC_A (the
checkpoint-selection criterion of the training loop, METHOD.md §5).

Modules (each imports only those above it in this list, and lower layers; none imports ``train``):

* :mod:`~mtaffect.evaluate.scores`: the per-frame prediction table (:func:`with_predictions`) and its
  scores (:func:`score_table`, :func:`summary_metrics`);
* :mod:`~mtaffect.evaluate.frames`: :func:`predict_cnn_frames`, :func:`predict_gru_frames` on index
  rows (:func:`labelled_frames`), and the training loop's per-epoch ``validate(model) -> dict``
  (:func:`make_cnn_validator`, :func:`make_gru_validator`, :func:`window_validator`);
* :mod:`~mtaffect.evaluate.report`: :func:`evaluate_checkpoint` (the CLI's work; GRU checkpoints
  read :mod:`mtaffect.features`), :func:`format_table`, :func:`plot_confusion`, :func:`write_report`.

This package re-exports their public names. ``IN_MEMORY_LIMIT`` is read where it is defined: to
change it, set ``mtaffect.evaluate.frames.IN_MEMORY_LIMIT``.
"""


from mtaffect.evaluate.frames import (
    IN_MEMORY_LIMIT,
    labelled_frames,
    make_cnn_validator,
    make_gru_validator,
    predict_cnn_frames,
    predict_gru_frames,
    window_validator,
)
from mtaffect.evaluate.report import (
    EvaluationResult,
    evaluate_checkpoint,
    format_table,
    plot_confusion,
    write_report,
)
from mtaffect.evaluate.scores import (
    PROB_COLUMNS,
    TABLE_COLUMNS,
    score_table,
    summary_metrics,
    with_predictions,
)

__all__ = [
    "IN_MEMORY_LIMIT",
    "PROB_COLUMNS",
    "TABLE_COLUMNS",
    "EvaluationResult",
    "evaluate_checkpoint",
    "format_table",
    "labelled_frames",
    "make_cnn_validator",
    "make_gru_validator",
    "plot_confusion",
    "predict_cnn_frames",
    "predict_gru_frames",
    "score_table",
    "summary_metrics",
    "window_validator",
    "with_predictions",
    "write_report",
]
