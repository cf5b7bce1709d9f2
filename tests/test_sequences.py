"""GRU windows over the feature cache: gaps, short tracks, masks, one draw per window, seeds."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mtaffect.data.sequences import (
    SequenceConfig,
    WindowLoader,
    WindowTaskData,
    build_window_loaders,
    build_window_set,
    gru_frames,
    gru_task_frames,
    iterate_steps,
    track_windows,
)
from mtaffect.testing import tiny_cnn
from support import feature_cache, toy_index


def gappy_index() -> pd.DataFrame:
    """Track v0: frames 1..40 with 21 missing (runs of 20 and 19); v1: 10 frames (shorter than 16)."""
    df = toy_index(n_tracks=1, n_frames=40)
    df = df[df["frame"] != 21]
    short = toy_index(n_tracks=2, n_frames=10)
    short = short[short["track"] == "v1"]
    df = pd.concat([df, short], ignore_index=True)
    df.loc[df.index[:5], "valence"] = pd.NA  # first 5 frames of v0 lack VA
    df.loc[df.index[:5], "arousal"] = pd.NA
    return df


def test_windows_never_cross_a_gap_and_short_runs_are_padded_or_dropped():
    frames = np.r_[np.arange(1, 21), np.arange(22, 41)]
    pos, valid = track_windows(frames, 16, 8, mode="train")
    for p, v in zip(pos, valid):
        run = frames[p[v]]
        assert np.all(np.diff(run) == 1)
    pos, valid = track_windows(np.arange(10), 16, 8, mode="train", short="pad")
    assert pos.shape == (1, 16) and valid[0].sum() == 10 and (pos[0, 10:] == 9).all()
    pos, _ = track_windows(np.arange(10), 16, 8, mode="train", short="drop")
    assert pos.shape == (0, 16)
    pos, valid = track_windows(np.arange(10), 16, 16, mode="predict", short="drop")
    assert valid.sum() == 10  # prediction never drops a frame


def test_window_set_masks_padding_and_missing_labels(tmp_path):
    index = gappy_index()
    cfg = SequenceConfig(length=16, stride=8)
    cache = feature_cache(tmp_path, tiny_cnn().eval(), gru_frames(index, cfg))
    frames = gru_task_frames(index, "VA", cfg)
    ws = build_window_set(frames, cache.positions(frames), length=16, stride=8)
    assert not ws.has_va[~ws.valid].any() and not ws.has_expression[~ws.valid].any()
    # every window is consecutive frames of one track, in order
    numbers = frames["frame"].to_numpy(dtype=np.int64)
    for rows, v in zip(ws.rows, ws.valid):
        seq = numbers[rows[v]]
        assert np.all(np.diff(seq) == 1)
    # the EXPR set includes the frames without VA, as masked secondary labels
    expr = gru_task_frames(index, "EXPR", cfg)
    ws_e = build_window_set(expr, cache.positions(expr), length=16, stride=8)
    assert ws_e.has_expression[ws_e.valid].all() and not ws_e.has_va[ws_e.valid].all()


def test_loader_batches_use_one_draw_per_window_and_are_seeded(tmp_path):
    index = gappy_index()
    cfg = SequenceConfig(length=16, stride=8)
    cache = feature_cache(tmp_path, tiny_cnn().eval(), gru_frames(index, cfg))
    loaders = build_window_loaders(index, cache, cfg, batch_size=2, seed=3)
    steps = list(iterate_steps(loaders, epoch=0))
    assert len(steps) == min(len(v) for v in loaders.values())
    inputs, targets = steps[0]["EXPR"]
    assert inputs["EXPR"].shape == (2, 16, 128) and inputs["VA"].shape == (2, 16, 128)
    assert targets.expression.shape == (2, 16) and targets.has_expression.dtype == torch.bool
    again = list(iterate_steps(build_window_loaders(index, cache, cfg, batch_size=2, seed=3), epoch=0))
    torch.testing.assert_close(again[0]["VA"][0]["VA"], steps[0]["VA"][0]["VA"])
    # a resumed epoch asks for its remaining steps and gets exactly the uninterrupted ones
    data = WindowTaskData(loaders)
    full = list(data.epoch(1))
    assert len(full) >= 2
    for a, b in zip(full[1:], data.epoch(1, start_step=1), strict=True):
        for name in a:
            torch.testing.assert_close(a[name][0], b[name][0], rtol=0, atol=0)
            torch.testing.assert_close(a[name][1].valence, b[name][1].valence, rtol=0, atol=0)
    other_epoch = list(iterate_steps(loaders, epoch=1))
    assert any(
        not torch.equal(a["EXPR"][0]["EXPR"], b["EXPR"][0]["EXPR"]) for a, b in zip(steps, other_epoch)
    )

    # one draw per window: each window equals the cache under a single draw
    loader: WindowLoader = loaders["EXPR"]
    sel = np.arange(2)
    x, _ = loader.batch(sel, np.array([1, 5]))
    for w, d in zip(sel, (1, 5)):
        pos = loader.windows.cache[w]
        expected = torch.from_numpy(np.asarray(cache.embeddings["EXPR"][d, pos], dtype=np.float32))
        torch.testing.assert_close(x["EXPR"][w], expected)


def test_config_rejects_unknown_task_sets_and_policies():
    with pytest.raises(ValueError):
        SequenceConfig(task_sets=["AU"])
    with pytest.raises(ValueError):
        SequenceConfig(short="wrap")
