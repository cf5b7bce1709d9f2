"""A checkpoint says how to feed it: evaluation and prediction see the same pixels and give the same numbers.

The evaluation transform (resize ×``Preprocessing.eval_resize``, centre crop; METHOD.md §4.4) has one
definition, ``data.augment.eval_matrix``: ``eval_batch`` warps crops with it (evaluate, the CNN
validators) and prediction composes it into the face-alignment warp. These tests tie the two paths
together, from the pixels to the probabilities, and check that a checkpoint's ``eval_resize`` moves
both the same way.
"""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from mtaffect.checkpoint import load_checkpoint, read_metadata, save_checkpoint, stored_preprocessing
from mtaffect.data.augment import eval_batch, eval_matrix
from mtaffect.evaluate import evaluate_checkpoint
from mtaffect.evaluate.scores import PROB_COLUMNS
from mtaffect.features import EVAL_DRAW, apply_draw
from mtaffect.labels import EXPRESSIONS
from mtaffect.models.preprocessing import EVAL_RESIZE, FERPLUS, Preprocessing
from mtaffect.predict.align import BOX_MARGIN
from mtaffect.predict.predictor import Predictor
from mtaffect.predict.runtime import FaceModel
from mtaffect.testing import assert_close32, tiny_checkpoint, tiny_cnn

SIZE = 32
N_FRAMES = 12


def smooth_faces(n: int, size: int = SIZE, seed: int = 0) -> np.ndarray:
    """uint8 RGB crops ``(n, size, size, 3)`` with structure at several scales (not white noise, which
    a bilinear warp would average away), so a one-pixel shift or a wrong zoom changes the pixels."""
    rng = np.random.default_rng(seed)
    out = np.empty((n, size, size, 3), np.uint8)
    for k in range(n):
        coarse = rng.uniform(0, 255, (6, 6, 3)).astype(np.float32)
        fine = rng.normal(0, 25, (size, size, 3)).astype(np.float32)
        img = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC) + fine
        out[k] = np.clip(img, 0, 255).astype(np.uint8)
    return out


# --------------------------------------------------------------------------- (a) the same pixels


@pytest.mark.parametrize("resize", [EVAL_RESIZE, 1.1, 1.5])
def test_prediction_alignment_zoom_gives_eval_batch_pixels(resize):
    # a crop pasted into a larger frame, boxed so that the alignment is a pure integer translation:
    # what prediction cuts out of the frame must be what evaluation makes of the crop
    crop = smooth_faces(1, 48, seed=1)
    frame = np.random.default_rng(2).integers(0, 256, (100, 130, 3), dtype=np.uint8)
    ox, oy = 50, 30
    frame[oy : oy + 48, ox : ox + 48] = crop[0]
    side = 40.0
    assert side * BOX_MARGIN == 48.0  # the box's square is the crop exactly: scale 1, no rounding
    box = np.array([[ox + 4, oy + 4, ox + 4 + side, oy + 4 + side]])

    predictor = Predictor(_face_model(Preprocessing(size=48, eval_resize=resize)), detector=object())
    got = predictor.crops(frame, box, None)
    want = eval_batch(crop, 48, resize_factor=resize)
    assert got.shape == want.shape == (1, 48, 48, 3)
    diff = np.abs(got.astype(int) - want.astype(int))
    assert diff.max() <= 1, "alignment + eval zoom and eval_batch disagree beyond interpolation rounding"
    # and the zoom really acted: the plain crop is not what either path gives
    assert np.abs(crop.astype(int) - want.astype(int)).mean() > 5


def test_eval_matrix_is_the_centre_draw_of_every_consumer():
    faces = smooth_faces(5, seed=3)
    m = eval_matrix(SIZE, SIZE, EVAL_RESIZE)
    # R = int(1.2 · 32) = 38, centre offset 3: output pixel (0, 0) samples (3.5 · 32/38 − 0.5) in the source
    np.testing.assert_allclose(m, [[32 / 38, 0, 3.5 * 32 / 38 - 0.5], [0, 32 / 38, 3.5 * 32 / 38 - 0.5]])
    assert np.array_equal(eval_batch(faces, SIZE), apply_draw(faces, EVAL_DRAW, SIZE))  # the feature cache
    one_by_one = np.stack([cv2.warpAffine(f, m, (SIZE, SIZE), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                                          borderMode=cv2.BORDER_REPLICATE) for f in faces])  # fmt: skip
    assert np.array_equal(eval_batch(faces, SIZE), one_by_one)


# --------------------------------------------------------------------------- (b, c) the same numbers


def seeing_cnn() -> torch.nn.Module:
    """A tiny CNN whose BatchNorm statistics come from faces like the test's, as training leaves them:
    its outputs move with the pixels (a one-pixel shift changes probabilities by ~0.1), where
    ``trained_like``'s random statistics leave a tiny model nearly blind to its input (~1e-4)."""
    model = tiny_cnn(seed=5, trained=True)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None  # a plain average over the one batch below
    model.train()
    with torch.no_grad():
        model(Preprocessing(size=SIZE).apply(smooth_faces(64, seed=9)))
    return model.eval()


def _face_model(prep: Preprocessing) -> FaceModel:
    return FaceModel(tiny_cnn(trained=True), {"kind": "cnn", "preprocessing": prep}, backend="torch")


def _crop_folder(root, faces: np.ndarray) -> pd.DataFrame:
    """Aff-Wild2 ``cropped_aligned/clip/NNNNN.png`` (lossless: both readers see the same pixels)
    and its frame index rows (validation, every frame labelled)."""
    folder = root / "clip"
    folder.mkdir(parents=True)
    for k, face in enumerate(faces):
        cv2.imwrite(str(folder / f"{k + 1:05d}.png"), cv2.cvtColor(face, cv2.COLOR_RGB2BGR))
    n = len(faces)
    values = np.linspace(-0.9, 0.9, n)
    return pd.DataFrame(
        {
            "database": pd.array(["affwild2"] * n, dtype="string"),
            "split": pd.array(["validation"] * n, dtype="string"),
            "track": pd.array(["clip"] * n, dtype="string"),
            "frame": pd.array(np.arange(1, n + 1), dtype="Int64"),
            "image": pd.array([f"clip/{k + 1:05d}.png" for k in range(n)], dtype="string"),
            "expression": pd.array(np.arange(n) % 7, dtype="Int64"),
            "valence": pd.array(values, dtype="Float64"),
            "arousal": pd.array(values[::-1], dtype="Float64"),
            "face_id": pd.array([None] * n, dtype="Int64"),
        }
    )


def _both_paths(tmp_path, eval_resize: float) -> tuple[np.ndarray, np.ndarray]:
    """(evaluate's, the Predictor's) (N, 9) predictions for the same crops and checkpoint."""
    root = tmp_path / f"cropped_aligned_{eval_resize}"
    index = _crop_folder(root, smooth_faces(N_FRAMES, seed=4))
    checkpoint = tmp_path / f"cnn_{eval_resize}.safetensors"
    save_checkpoint(checkpoint, seeing_cnn(), preprocessing=Preprocessing(size=SIZE, eval_resize=eval_resize))
    evaluated = evaluate_checkpoint(
        checkpoint, index, index_meta={"roots": {"affwild2": str(root)}}, device="cpu", progress=False,
        batch_size=5,
    ).predictions.sort_values("frame")  # fmt: skip
    ours = evaluated[PROB_COLUMNS + ["pred_valence", "pred_arousal"]].to_numpy(np.float64)

    predictor = Predictor.from_checkpoint(checkpoint, backend="torch", device="cpu", detector=object())
    assert predictor.eval_resize == eval_resize  # read from the checkpoint, nothing else
    table = predictor.predict_crop_folder(root / "clip").sort_values("frame")
    assert table["frame"].tolist() == list(range(N_FRAMES))
    theirs = table[list(EXPRESSIONS) + ["valence", "arousal"]].to_numpy(np.float64)
    return ours, theirs


def test_evaluate_and_predictor_give_the_same_numbers_and_follow_eval_resize(tmp_path):
    default, default_pred = _both_paths(tmp_path, EVAL_RESIZE)
    assert_close32(default_pred, default, "evaluate vs Predictor.predict_crop_folder at eval_resize 1.2")
    plain, plain_pred = _both_paths(tmp_path, 1.0)
    assert_close32(plain_pred, plain, "evaluate vs Predictor.predict_crop_folder at eval_resize 1.0")
    # the field moves both paths, by far more than the tolerance: it is really read, by both
    assert np.abs(plain - default).max() > 0.02
    assert np.abs(plain_pred - default_pred).max() > 0.02


# --------------------------------------------------------------------------- the stored field


def test_preprocessing_round_trips_eval_resize(tmp_path):
    prep = Preprocessing(size=SIZE, eval_resize=1.0)
    assert prep.to_dict()["eval_resize"] == 1.0
    assert Preprocessing.from_dict(prep.to_dict()) == prep
    assert Preprocessing.from_dict({"size": SIZE}).eval_resize == EVAL_RESIZE == FERPLUS.eval_resize
    with pytest.raises(ValueError, match="eval_resize"):
        Preprocessing(eval_resize=0.0)
    path = tiny_checkpoint(tmp_path / "c.safetensors", kind="cnn", preprocessing=prep)
    assert read_metadata(path)["preprocessing"]["eval_resize"] == 1.0
    assert load_checkpoint(path)[1]["preprocessing"] == prep


def test_checkpoint_without_eval_resize_reads_what_its_consumers_used(tmp_path):
    # written before the field existed: evaluate and Predictor took the training config's resize_factor,
    # else the authors' 1.2
    block = {k: v for k, v in Preprocessing(size=SIZE).to_dict().items() if k != "eval_resize"}
    assert stored_preprocessing({"preprocessing": block}).eval_resize == EVAL_RESIZE
    trained = {"preprocessing": block, "train": {"data": {"resize_factor": 1.0}}}
    assert stored_preprocessing(trained).eval_resize == 1.0
    path = tmp_path / "old.safetensors"
    save_checkpoint(path, tiny_cnn(trained=True), preprocessing=block, train=trained["train"])
    assert "eval_resize" not in read_metadata(path)["preprocessing"]
    assert load_checkpoint(path)[1]["preprocessing"].eval_resize == 1.0
    assert Predictor.from_checkpoint(path, backend="torch", detector=object()).eval_resize == 1.0


def test_stages_write_their_resize_factor_into_the_checkpoints_they_save(tmp_path):
    from mtaffect.config import load_config
    from mtaffect.train.components import cnn_preprocessing, gru_preprocessing

    cnn = tiny_checkpoint(tmp_path / "cnn.safetensors", kind="cnn",
                          preprocessing=Preprocessing(size=SIZE, std=(2.0, 2.0, 2.0)))  # fmt: skip
    config = load_config("gru_teacher", [f"model.cnn_checkpoint={cnn}", "data.resize_factor=1.0"])
    assert cnn_preprocessing(config).eval_resize == 1.0  # CNN stages: their validator and best checkpoint
    gru = gru_preprocessing(config)  # GRU stages: best.safetensors and cnn_gru.safetensors
    assert gru == Preprocessing(size=SIZE, std=(2.0, 2.0, 2.0), eval_resize=1.0)  # the CNN's, but 1.0


def test_a_joined_gru_is_fed_with_its_cnn_preprocessing_and_its_own_eval_resize(tmp_path):
    from mtaffect.checkpoint import load_model

    cnn_prep = Preprocessing(size=SIZE, std=(2.0, 2.0, 2.0), eval_resize=1.1)
    cnn = tiny_checkpoint(tmp_path / "cnn.safetensors", kind="cnn", preprocessing=cnn_prep)
    gru_prep = Preprocessing(eval_resize=1.3)
    gru = tiny_checkpoint(tmp_path / "gru.safetensors", kind="gru", preprocessing=gru_prep)
    _, meta = load_model(gru, cnn=cnn)
    # the GRU was trained and validated on embeddings of crops warped with its stage's resize
    assert meta["preprocessing"] == Preprocessing(size=SIZE, std=(2.0, 2.0, 2.0), eval_resize=1.3)
