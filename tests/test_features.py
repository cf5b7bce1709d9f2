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
    frame_table,
    parse_draws,
)
from mtaffect.models.preprocessing import Preprocessing
from mtaffect.testing import tiny_cnn
from support import FEATURE_PREP, FEATURE_SIZE, FakeReader, feature_cache, toy_index


def test_default_draws_start_with_the_eval_centre_crop():
    draws = default_draws()
    assert draws[0] == EVAL_DRAW and len(draws) == 9
    assert sum(d.flip for d in draws) == 4
    with pytest.raises(Exception, match="centre crop"):
        parse_draws([{"flip": True}])


def test_centre_draw_is_the_eval_transform():
    from mtaffect.data.augment import eval_batch

    faces = np.random.default_rng(0).integers(0, 256, (3, FEATURE_SIZE, FEATURE_SIZE, 3), dtype=np.uint8)
    assert np.array_equal(apply_draw(faces, EVAL_DRAW, FEATURE_SIZE), eval_batch(faces, FEATURE_SIZE))
    flipped = apply_draw(faces, Draw(True, 0.5, 0.5), FEATURE_SIZE)
    assert np.array_equal(flipped, apply_draw(faces, EVAL_DRAW, FEATURE_SIZE)[:, :, ::-1])


def test_cache_holds_the_frozen_cnn_embeddings(tmp_path):
    index = toy_index()
    model = tiny_cnn().eval()
    cache = feature_cache(tmp_path, model, index, batch_size=8)
    assert isinstance(cache, FeatureCache) and len(cache) == len(index)
    assert cache.embeddings["EXPR"].shape == (9, len(index), 128)
    # recompute draw 3 for frames 5..8 directly
    frames = cache.frames
    reader = FakeReader(index)
    faces = reader.read(frames["row"].to_numpy()[5:9])
    drawn = apply_draw(faces, cache.draws[3], FEATURE_SIZE)
    x = Preprocessing.from_dict(FEATURE_PREP).apply(torch.from_numpy(drawn))
    with torch.no_grad():
        expected = model.embed(x)
    got = cache.gather(np.arange(5, 9), 3)
    for task in ("EXPR", "VA"):
        torch.testing.assert_close(got[task], expected[task], atol=2e-2, rtol=1e-2)


def test_cache_is_reused_only_for_the_same_weights(tmp_path):
    index = toy_index()
    first = feature_cache(tmp_path, tiny_cnn(0).eval(), index)
    log: list = []
    again = feature_cache(tmp_path, tiny_cnn(0).eval(), index, factory=lambda df: FakeReader(df, log))
    assert again.path == first.path and log == []  # nothing recomputed
    other = feature_cache(tmp_path, tiny_cnn(1).eval(), index)
    assert other.path != first.path


def test_duplicate_images_across_splits_are_computed_once(tmp_path):
    index = pd.concat([toy_index(split="train"), toy_index(split="validation")], ignore_index=True)
    assert len(frame_table(index)) == len(index) // 2
    cache = feature_cache(tmp_path, tiny_cnn().eval(), index)
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
        feature_cache(tmp_path, tiny_cnn().eval(), index, batch_size=8, factory=Crashing)
    folder = next(p for p in tmp_path.iterdir() if p.is_dir())
    assert json.loads((folder / "progress.json").read_text())["done"] == [0, 1]
    with pytest.raises(Exception, match="incomplete"):
        FeatureCache(folder)
    log: list = []
    resumed = feature_cache(
        tmp_path, tiny_cnn().eval(), index, batch_size=8, factory=lambda df: FakeReader(df, log)
    )
    assert log == [8, 6]  # only chunks 2 and 3 (frames 16..29 of 30)
    fresh = feature_cache(tmp_path / "fresh", tiny_cnn().eval(), index, batch_size=8)
    np.testing.assert_array_equal(np.asarray(resumed.embeddings["VA"]), np.asarray(fresh.embeddings["VA"]))


def test_cache_width_follows_the_cnn_hidden_size(tmp_path):
    model = tiny_cnn(0, hidden=64).eval()
    index = toy_index(n_tracks=1, n_frames=4)
    cache = feature_cache(tmp_path, model, index, batch_size=4)
    assert cache.embeddings["VA"].shape == (9, len(index), 64)
    assert cache.gather(np.arange(2), 0)["EXPR"].shape == (2, 64)
