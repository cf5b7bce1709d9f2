"""Evaluation: every frame predicted exactly once and in order (GRU), scores per database, report files."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch
from torch import nn

from mtaffect.evaluate import (
    format_table,
    labelled_frames,
    make_cnn_validator,
    make_gru_validator,
    predict_cnn_frames,
    predict_gru_frames,
    score_table,
    summary_metrics,
    write_report,
)
from mtaffect.models.gru import GRUConfig, TemporalModel
from mtaffect.models.outputs import Outputs, va_bin_values
from mtaffect.models.preprocessing import Preprocessing
from mtaffect.testing import approx32, tiny_cnn
from support import FEATURE_PREP, FakeReader, feature_cache, toy_index


class FrameNumberCache:
    """A stand-in feature cache whose embedding of a frame carries its frame number."""

    draws = [None]

    def __init__(self, frames: pd.DataFrame) -> None:
        self.keys = {(d, i): n for n, (d, i) in enumerate(zip(frames["database"], frames["image"]))}
        self.number = frames["frame"].astype("Int64").to_numpy(np.int64)

    def positions(self, frames: pd.DataFrame) -> np.ndarray:
        return np.array([self.keys.get((d, i), -1) for d, i in zip(frames["database"], frames["image"])])

    def gather(self, positions: np.ndarray, draws=0) -> dict[str, torch.Tensor]:
        x = torch.zeros(*positions.shape, 128)
        x[..., 0] = torch.from_numpy(self.number[positions].astype(np.float32))
        return {"EXPR": x, "VA": x.clone()}


class EchoGRU(nn.Module):
    """Predicts, for each step, expression = frame % 7 and valence = bin value of frame % 20."""

    def __init__(self) -> None:
        super().__init__()
        self.config = GRUConfig()

    def forward(self, embeddings: dict[str, torch.Tensor]) -> Outputs:
        frame = embeddings["EXPR"][..., 0].long()
        expression = 60.0 * torch.nn.functional.one_hot(frame % 7, 7).float()
        valence = 60.0 * torch.nn.functional.one_hot(frame % 20, 20).float()
        return Outputs(expression, valence, torch.zeros_like(valence))


@pytest.mark.parametrize("n_frames,stride", [(100, 32), (1000, 32), (77, 16), (5, 32)])
def test_gru_evaluation_predicts_every_frame_once_and_in_order(n_frames, stride):
    # one long track with a gap, shuffled rows: the authors' collate bug would scramble the last batch
    frames = toy_index(n_tracks=2, n_frames=n_frames, split="validation")
    frames = frames[frames["frame"] != max(2, n_frames // 3)]
    frames = frames.sample(frac=1.0, random_state=0).reset_index(drop=True)
    cache = FrameNumberCache(frames)
    out = predict_gru_frames(EchoGRU(), cache, frames, length=32, stride=stride, batch_size=16)
    number = frames["frame"].to_numpy(dtype=np.int64)
    assert out.shape == (len(frames), 9) and not np.isnan(out).any()
    np.testing.assert_array_equal(out[:, :7].argmax(1), number % 7)
    np.testing.assert_allclose(out[:, 7], va_bin_values().numpy()[number % 20], atol=1e-4)


def test_gru_validator_scores_a_real_temporal_model(tmp_path):
    index = toy_index(n_tracks=2, n_frames=40, split="validation")
    cache = feature_cache(tmp_path, tiny_cnn().eval(), index)
    validate = make_gru_validator(labelled_frames(index), cache, length=16, stride=16)
    result = validate(TemporalModel(GRUConfig()))
    assert set(result) >= {"expr_score", "ccc_valence", "ccc_arousal", "abaw_sum"}
    assert result["abaw_sum"] == pytest.approx(
        result["expr_score"] + result["ccc_valence"] + result["ccc_arousal"]
    )


def test_cnn_validator_matches_direct_prediction_and_keeps_train_mode():
    index = toy_index(n_tracks=2, n_frames=12, split="validation")
    model = tiny_cnn().train()
    prep = Preprocessing.from_dict(FEATURE_PREP)
    direct = predict_cnn_frames(model, index, {}, preprocessing=prep, reader=FakeReader(index), batch_size=5)
    assert model.training  # restored after evaluation
    validate = make_cnn_validator(index, {}, preprocessing=prep, reader=FakeReader(index), batch_size=7)
    got = validate(model)
    from mtaffect.evaluate import with_predictions

    assert got == approx32(summary_metrics(with_predictions(index, direct)))  # batch 5 vs 7


def perfect_predictions() -> pd.DataFrame:
    df = pd.concat(
        [
            toy_index(n_tracks=2, n_frames=30, split="validation").assign(database="affwild2"),
            toy_index(n_tracks=1, n_frames=20, split="validation").assign(
                database="afew_va", expression=pd.NA
            ),
        ],
        ignore_index=True,
    )
    df["expression"] = df["expression"].astype("Int64")
    df["pred_expression"] = df["expression"].fillna(0).astype(np.int64)
    for i in range(7):
        df[f"p_{i}"] = (df["pred_expression"] == i).astype(float)
    df["pred_valence"] = df["valence"].astype(float)
    df["pred_arousal"] = df["arousal"].astype(float)
    return df


def test_score_table_is_per_database_with_an_overall_row():
    table = score_table(perfect_predictions())
    assert list(table["database"]) == ["afew_va", "affwild2", "all"]
    row = table.set_index("database")
    assert row.loc["affwild2", "expr_score"] == pytest.approx(1.0)
    assert np.isnan(row.loc["afew_va", "expr_score"]) and row.loc["afew_va", "n_expression"] == 0
    assert row.loc["all", "ccc_valence"] == pytest.approx(1.0)
    assert "affwild2" in format_table(table)


def test_report_writes_csv_json_parquet_and_png(tmp_path):
    from mtaffect.evaluate import EvaluationResult

    preds = perfect_predictions()
    result = EvaluationResult(score_table(preds), preds, summary_metrics(preds), "cnn", {})
    paths = write_report(result, tmp_path / "eval", checkpoint="x.safetensors")
    assert set(paths) == {"scores.csv", "scores.json", "predictions.parquet", "confusion.png"}
    summary = json.loads(paths["scores.json"].read_text())
    assert summary["summary"]["abaw_sum"] == pytest.approx(3.0)
    assert paths["confusion.png"].read_bytes()[:4] == b"\x89PNG"
    assert len(pd.read_parquet(paths["predictions.parquet"])) == len(preds)


def test_labelled_rows_are_one_rule_for_evaluation_windows_and_task_sets():
    from mtaffect.data.records import has_expression, has_va, make_records

    index = make_records(
        database="affwild2",
        split="validation",
        track="t",
        frame=np.arange(5),
        image=[f"{i}.jpg" for i in range(5)],
        expression=np.array([0, 6, 7, np.nan, np.nan]),  # 7 = Other (ABAW3+)
        valence=np.array([np.nan, 0.1, np.nan, 0.2, np.nan]),
        arousal=np.array([np.nan, -0.1, np.nan, 0.3, 0.5]),  # row 4: arousal alone is no VA label
    )
    assert has_expression(index).tolist() == [True, True, False, False, False]
    assert has_expression(index, other=True).tolist() == [True, True, True, False, False]
    assert has_va(index).tolist() == [False, True, False, True, False]
    # evaluation keeps the rows with a 7-class or VA label: Other alone and arousal alone drop out
    assert labelled_frames(index)["image"].tolist() == ["0.jpg", "1.jpg", "3.jpg"]
