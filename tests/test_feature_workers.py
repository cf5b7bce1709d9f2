"""Decoding in worker processes (feature cache, evaluation): the same numbers as one process.

On CPU the outputs are bit-identical: the workers only read and warp faces; every CNN forward
still sees the same chunk of one draw in the main process.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from mtaffect.data.prefetch import default_workers, ordered_chunks
from mtaffect.evaluate import IN_MEMORY_LIMIT, make_cnn_validator, predict_cnn_frames
from mtaffect.models.preprocessing import Preprocessing
from mtaffect.testing import tiny_cnn
from support import FEATURE_PREP, FakeReader, feature_cache, toy_index


def test_feature_cache_from_two_workers_equals_one_process(tmp_path):
    index = toy_index(n_tracks=3, n_frames=7)  # 21 frames: chunks of 8, 8 and a short one
    model = tiny_cnn().eval()
    reads: list[int] = []
    one = feature_cache(tmp_path / "one", model, index, batch_size=8, workers=0,
                        factory=lambda df: FakeReader(df, reads))
    two = feature_cache(tmp_path / "two", model, index, batch_size=8, workers=2)
    assert reads == [8, 8, 5]  # each face decoded once for all 9 draws, not once per draw
    assert len(one.draws) == 9
    for task in ("EXPR", "VA"):
        assert np.array_equal(np.asarray(two.embeddings[task]), np.asarray(one.embeddings[task])), task
    assert np.abs(np.asarray(one.embeddings["EXPR"], np.float32)).sum() > 0


def test_feature_cache_resumed_with_workers_fills_only_missing_chunks(tmp_path):
    index = toy_index(n_tracks=2, n_frames=8)
    model = tiny_cnn().eval()
    full = feature_cache(tmp_path / "full", model, index, batch_size=4, workers=0)
    first = feature_cache(tmp_path / "part", model, index, batch_size=4, workers=0)
    folder = first.path
    # forget chunks 1 and 3 (as if killed), zero their rows, finish with two workers
    progress = json.loads((folder / "progress.json").read_text())
    progress["done"] = [0, 2]
    (folder / "progress.json").write_text(json.dumps(progress))
    meta = json.loads((folder / "meta.json").read_text())
    meta["complete"] = False
    (folder / "meta.json").write_text(json.dumps(meta))
    for task in ("EXPR", "VA"):
        mm = np.memmap(folder / f"{task}.f16", dtype=np.float16, mode="r+", shape=full.embeddings[task].shape)
        mm[:, 4:8] = 0
        mm[:, 12:16] = 0
        mm.flush()
        del mm
    done = feature_cache(tmp_path / "part", model, index, batch_size=4, workers=2)
    assert json.loads((folder / "progress.json").read_text())["done"] == [0, 1, 2, 3]
    for task in ("EXPR", "VA"):
        assert np.array_equal(np.asarray(done.embeddings[task]), np.asarray(full.embeddings[task]))


@pytest.mark.parametrize("in_memory", [True, False], ids=["kept", "streamed"])
def test_cnn_evaluation_from_workers_equals_one_process(monkeypatch, in_memory):
    import mtaffect.evaluate.frames as evaluate

    if not in_memory:  # the streamed path (crops that do not fit in memory)
        monkeypatch.setattr(evaluate, "IN_MEMORY_LIMIT", 0)
    assert evaluate.IN_MEMORY_LIMIT == (IN_MEMORY_LIMIT if in_memory else 0)
    index = toy_index(n_tracks=2, n_frames=11)
    model = tiny_cnn().eval()
    prep = Preprocessing.from_dict(FEATURE_PREP)
    one = predict_cnn_frames(model, index, {}, preprocessing=prep, reader=FakeReader(index), batch_size=5,
                             workers=0)
    two = predict_cnn_frames(model, index, {}, preprocessing=prep, reader=FakeReader(index), batch_size=5,
                             workers=2)
    assert one.shape == (22, 9) and np.isfinite(one).all()
    assert np.array_equal(one, two)
    validate = make_cnn_validator(index, {}, preprocessing=prep, reader=FakeReader(index), batch_size=5,
                                  workers=2)
    direct = make_cnn_validator(index, {}, preprocessing=prep, reader=FakeReader(index), batch_size=5,
                                workers=0)
    assert validate(model) == direct(model)


class _Square:
    def __call__(self, i: int) -> torch.Tensor:
        return torch.full((2,), float(i * i))


def test_ordered_chunks_keeps_order_with_workers_and_pinning_off_cuda():
    got = [t.tolist() for t in ordered_chunks(_Square(), 7, workers=3)]
    assert got == [[float(i * i)] * 2 for i in range(7)]
    assert [t.tolist() for t in ordered_chunks(_Square(), 3)] == [[0.0, 0.0], [1.0, 1.0], [4.0, 4.0]]
    assert default_workers("cpu") == 0
    assert 0 <= default_workers("cuda") <= 8
