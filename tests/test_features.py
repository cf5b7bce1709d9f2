"""The GRU feature cache: embeddings equal the frozen CNN's, keyed by weights, resumable."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
import torch

from mtaffect.features import (
    EVAL_DRAW,
    Draw,
    FeatureCache,
    apply_draw,
    default_draws,
    ensure_feature_cache,
    frame_table,
    parse_draws,
)
from mtaffect.models.cnn import CNNConfig, MultitaskCNN
from mtaffect.models.preprocessing import Preprocessing

SIZE = 24


def toy_index(n_tracks: int = 2, n_frames: int = 10, split: str = "train") -> pd.DataFrame:
    rows = []
    for t in range(n_tracks):
        for f in range(1, n_frames + 1):
            rows.append(
                {
                    "database": "affwild2",
                    "split": split,
                    "track": f"v{t}",
                    "frame": f,
                    "image": f"v{t}/{f:05d}.jpg",
                    "expression": (t + f) % 7,
                    "valence": 0.1 * (f % 5),
                    "arousal": -0.1 * (f % 3),
                }
            )
    df = pd.DataFrame(rows)
    df["frame"] = df["frame"].astype("Int64")
    df["expression"] = df["expression"].astype("Int64")
    df["valence"] = df["valence"].astype("Float64")
    df["arousal"] = df["arousal"].astype("Float64")
    return df


class FakeReader:
    """Deterministic faces from the image name: what FaceReader returns, without files."""

    def __init__(self, index: pd.DataFrame, log: list | None = None) -> None:
        self.images = index["image"].astype(str).to_numpy()
        self.log = log if log is not None else []

    def read(self, rows: np.ndarray) -> np.ndarray:
        self.log.append(len(rows))
        out = np.empty((len(rows), SIZE, SIZE, 3), np.uint8)
        for i, r in enumerate(rows):
            seed = sum(map(ord, self.images[r]))
            out[i] = np.random.default_rng(seed).integers(0, 256, (SIZE, SIZE, 3), dtype=np.uint8)
        return out


def tiny_cnn(seed: int = 0) -> MultitaskCNN:
    torch.manual_seed(seed)
    return MultitaskCNN(CNNConfig(backbone="resnet_tiny")).eval()


PREP = {"size": SIZE, "mean": [128.0, 128.0, 128.0], "std": [1.0, 1.0, 1.0]}


def build(tmp_path, model, index, **kwargs):
    return ensure_feature_cache(
        model,
        index,
        {},
        tmp_path,
        reader_factory=kwargs.pop("factory", FakeReader),
        preprocessing_meta=PREP,
        device="cpu",
        progress=False,
        **kwargs,
    )


def test_default_draws_start_with_the_eval_centre_crop():
    draws = default_draws()
    assert draws[0] == EVAL_DRAW and len(draws) == 9
    assert sum(d.flip for d in draws) == 4
    with pytest.raises(Exception, match="centre crop"):
        parse_draws([{"flip": True}])


def test_centre_draw_is_the_eval_transform():
    from mtaffect.data.augment import eval_batch

    faces = np.random.default_rng(0).integers(0, 256, (3, SIZE, SIZE, 3), dtype=np.uint8)
    assert np.array_equal(apply_draw(faces, EVAL_DRAW, SIZE), eval_batch(faces, SIZE))
    flipped = apply_draw(faces, Draw(True, 0.5, 0.5), SIZE)
    assert np.array_equal(flipped, apply_draw(faces, EVAL_DRAW, SIZE)[:, :, ::-1])


def test_cache_holds_the_frozen_cnn_embeddings(tmp_path):
    index = toy_index()
    model = tiny_cnn()
    cache = build(tmp_path, model, index, batch_size=8)
    assert isinstance(cache, FeatureCache) and len(cache) == len(index)
    assert cache.embeddings["EXPR"].shape == (9, len(index), 128)
    # recompute draw 3 for frames 5..8 directly
    frames = cache.frames
    reader = FakeReader(index)
    faces = reader.read(frames["row"].to_numpy()[5:9])
    x = Preprocessing.from_dict(PREP).apply(torch.from_numpy(apply_draw(faces, cache.draws[3], SIZE)))
    with torch.no_grad():
        expected = model.embed(x)
    got = cache.gather(np.arange(5, 9), 3)
    for task in ("EXPR", "VA"):
        torch.testing.assert_close(got[task], expected[task], atol=2e-2, rtol=1e-2)


def test_cache_is_reused_only_for_the_same_weights(tmp_path):
    index = toy_index()
    first = build(tmp_path, tiny_cnn(0), index)
    log: list = []
    again = build(tmp_path, tiny_cnn(0), index, factory=lambda df: FakeReader(df, log))
    assert again.path == first.path and log == []  # nothing recomputed
    other = build(tmp_path, tiny_cnn(1), index)
    assert other.path != first.path


def test_duplicate_images_across_splits_are_computed_once(tmp_path):
    index = pd.concat([toy_index(split="train"), toy_index(split="validation")], ignore_index=True)
    assert len(frame_table(index)) == len(index) // 2
    cache = build(tmp_path, tiny_cnn(), index)
    pos = cache.positions(index)
    assert (pos >= 0).all() and np.array_equal(pos[: len(pos) // 2], pos[len(pos) // 2 :])


def test_interrupted_cache_resumes_without_recomputing_finished_chunks(tmp_path):
    index = toy_index(n_tracks=3)
    calls: list = []

    class Crashing(FakeReader):
        def read(self, rows):
            if len(calls) == 2:
                raise KeyboardInterrupt
            calls.append(len(rows))
            return super().read(rows)

    with pytest.raises(KeyboardInterrupt):
        build(tmp_path, tiny_cnn(), index, batch_size=8, factory=Crashing)
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert json.loads((folder / "progress.json").read_text())["done"] == [0, 1]
    with pytest.raises(Exception, match="incomplete"):
        FeatureCache(folder)
    log: list = []
    resumed = build(tmp_path, tiny_cnn(), index, batch_size=8, factory=lambda df: FakeReader(df, log))
    assert log == [8, 6]  # only chunks 2 and 3 (frames 16..29 of 30)
    fresh = build(tmp_path / "fresh", tiny_cnn(), index, batch_size=8)
    np.testing.assert_array_equal(np.asarray(resumed.embeddings["VA"]), np.asarray(fresh.embeddings["VA"]))


def test_cache_width_follows_the_cnn_hidden_size(tmp_path):
    torch.manual_seed(0)
    model = MultitaskCNN(CNNConfig(backbone="resnet_tiny", hidden=64)).eval()
    index = toy_index(n_tracks=1, n_frames=4)
    cache = build(tmp_path, model, index, batch_size=4)
    assert cache.embeddings["VA"].shape == (9, len(index), 64)
    assert cache.gather(np.arange(2), 0)["EXPR"].shape == (2, 64)
