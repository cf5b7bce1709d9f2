"""Issue 12, training side: a non-finite validation score never selects (or reports) a checkpoint."""

from __future__ import annotations

import math

import pytest
import torch

from mtaffect.errors import UserError
from mtaffect.losses import LossConfig
from mtaffect.testing import tiny_cnn
from mtaffect.train.loop import FitOptions, fit
from mtaffect.train.tasks import SupervisedTask
from support import FRAME_PREPARER, make_data


def _fit(tmp_path, scores):
    values = iter(scores)
    torch.manual_seed(0)
    model = tiny_cnn(0, hidden=16)
    saved: list[int] = []
    result = fit(
        SupervisedTask(model, LossConfig()),
        make_data(max_steps=1),
        torch.optim.Adam(model.parameters()),
        run_dir=tmp_path,
        options=FitOptions(epochs=len(scores), patience=0, progress=False, tensorboard=False),
        validate=lambda m: {"abaw_sum": next(values)},
        to_device=FRAME_PREPARER,
        save_best=lambda m, e: saved.append(e),
    )
    return result, saved


def test_a_nan_score_in_every_epoch_is_an_error_not_a_phantom_checkpoint(tmp_path):
    with pytest.raises(UserError, match="no epoch had a finite validation score"):
        _fit(tmp_path, [math.nan, math.nan])
    assert (tmp_path / "metrics.csv").exists()


def test_non_finite_scores_are_never_selected(tmp_path):
    result, saved = _fit(tmp_path, [math.nan, 0.3, math.inf, 0.2])
    assert saved == [2] and result.best_epoch == 2
    assert result.best_metrics["abaw_sum"] == pytest.approx(0.3)


def test_an_index_with_an_infinite_label_is_refused_before_training():
    import numpy as np

    from mtaffect.data.records import make_records
    from mtaffect.data.tasks import build_task_sets

    index = make_records(
        database="affwild2", split=np.array(["train", "validation"], dtype=object),
        track=np.array(["a", "b"], dtype=object), image=np.array(["a/1.jpg", "b/1.jpg"], dtype=object),
        frame=np.array([1, 1]), valence=np.array([0.5, np.inf]), arousal=np.array([0.1, 0.2]),
    )
    with pytest.raises(UserError, match="infinite valence/arousal label .*affwild2 b/1.jpg"):
        build_task_sets(index)
