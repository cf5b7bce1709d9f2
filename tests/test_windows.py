"""Window planning over tracks with gaps and short runs; stitching back to exactly one value per frame."""

from __future__ import annotations

import numpy as np
import pytest

from mtaffect.windows import Windows, plan_windows, runs, stitch


def _frames_of(windows: Windows, frames: np.ndarray) -> list[list[int]]:
    return frames[windows.positions].tolist()


def test_exact_multiple_of_stride_needs_no_extra_window() -> None:
    frames = np.arange(64)  # 32 + 2·16
    w = plan_windows(frames, 32, 16)
    assert w.positions[:, 0].tolist() == [0, 16, 32]
    assert w.valid.all()
    np.testing.assert_array_equal(w.positions[-1], np.arange(32, 64))


def test_last_window_is_aligned_to_the_run_end() -> None:
    w = plan_windows(np.arange(70), 32, 16)
    assert w.positions[:, 0].tolist() == [0, 16, 32, 38]
    assert w.positions[-1, -1] == 69 and w.valid.all()
    w = plan_windows(np.arange(70), 32, 32, mode="predict")
    assert w.positions[:, 0].tolist() == [0, 32, 38]


def test_gaps_split_runs_and_no_window_spans_a_gap() -> None:
    frames = np.array([*range(1, 41), *range(45, 55), *range(60, 100)])  # runs of 40, 10, 40
    assert runs(frames) == [(0, 40), (40, 50), (50, 90)]
    w = plan_windows(frames, 32, 16)
    for row, ok in zip(_frames_of(w, frames), w.valid):
        real = np.asarray(row)[ok]
        assert np.all(np.diff(real) == 1), row  # contiguous frame numbers inside every window
    # run 1: starts 0, 8; run 2: one padded window; run 3: starts 50, 58
    assert w.positions[:, 0].tolist() == [0, 8, 40, 50, 58]
    short = w.positions[2]
    np.testing.assert_array_equal(short, np.minimum(np.arange(32), 9) + 40)
    assert w.valid[2].sum() == 10 and not w.valid[2, 10:].any()


def test_on_gap_ignore_treats_positions_as_contiguous() -> None:
    frames = np.array([0, 1, 5, 6, 7])
    assert runs(frames, on_gap="ignore") == [(0, 5)]
    w = plan_windows(frames, 4, 2, on_gap="ignore")
    assert w.positions.tolist() == [[0, 1, 2, 3], [1, 2, 3, 4]]


def test_short_track_and_single_frame_track() -> None:
    w = plan_windows(np.arange(5, 10), 8, 4, mode="predict")
    assert w.positions.tolist() == [[0, 1, 2, 3, 4, 4, 4, 4]]
    assert w.valid.tolist() == [[True] * 5 + [False] * 3]
    one = plan_windows(np.array([17]), 32, 16, mode="predict")
    assert one.positions.shape == (1, 32) and (one.positions == 0).all()
    assert one.valid[0, 0] and one.valid.sum() == 1
    np.testing.assert_array_equal(stitch(np.full((1, 32, 2), 3.0), one), [[3.0, 3.0]])


def test_train_mode_min_length_drops_short_runs_predict_never_drops() -> None:
    frames = np.array([*range(0, 40), *range(50, 60)])
    w = plan_windows(frames, 32, 16, mode="train", min_length=32)  # the authors' policy
    assert w.positions[:, 0].tolist() == [0, 8] and w.valid.all()
    w = plan_windows(frames, 32, 16, mode="train")  # default: pad short runs
    assert len(w) == 3
    with pytest.raises(ValueError, match="min_length"):
        plan_windows(frames, 32, 16, mode="predict", min_length=32)


def test_empty_track_and_all_runs_dropped() -> None:
    w = plan_windows(np.array([], dtype=np.int64))
    assert w.positions.shape == (0, 32) and len(w) == 0
    assert stitch(np.zeros((0, 32, 3)), w).shape == (0, 3)
    w = plan_windows(np.arange(5), 32, 16, min_length=10)
    assert len(w) == 0 and w.n_positions == 5


@pytest.mark.parametrize(
    ("frames", "message"),
    [
        ([3, 2, 4], "strictly increasing"),
        ([1, 1, 2], "strictly increasing"),
        ([[1, 2]], "1-D"),
        ([0.5, 1.0], "integer"),
    ],
)
def test_bad_frames_rejected(frames, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        plan_windows(np.asarray(frames))


def test_bad_parameters_rejected() -> None:
    with pytest.raises(ValueError, match="mode"):
        plan_windows(np.arange(3), mode="eval")
    with pytest.raises(ValueError, match="on_gap"):
        plan_windows(np.arange(3), on_gap="pad")
    with pytest.raises(ValueError, match="stride"):
        plan_windows(np.arange(3), stride=0)
    with pytest.raises(ValueError, match="stride"):
        plan_windows(np.arange(100), 8, 9, mode="predict")
    assert plan_windows(np.arange(20), 4, 8).positions[:, 0].tolist() == [0, 8, 16]  # train may skip


@pytest.mark.parametrize("seed", range(6))
def test_stitch_equals_brute_force_per_position_mean(seed: int) -> None:
    rng = np.random.default_rng(seed)
    keep = rng.random(300) > 0.05  # random gaps
    frames = np.flatnonzero(keep) + 1
    length = int(rng.integers(1, 40))
    stride = int(rng.integers(1, length + 1))
    w = plan_windows(frames, length, stride, mode="predict")
    values = rng.normal(size=(len(w), length, 3))
    expected = np.zeros((frames.size, 3))
    for p in range(frames.size):
        hits = [
            values[i, t]
            for i in range(len(w))
            for t in range(length)
            if w.valid[i, t] and w.positions[i, t] == p
        ]
        assert hits, f"position {p} not covered"
        expected[p] = np.mean(hits, axis=0)
    np.testing.assert_allclose(stitch(values, w), expected, rtol=0, atol=1e-12)
    np.testing.assert_allclose(stitch(values[..., 0], w), expected[:, 0], rtol=0, atol=1e-12)


def test_stitch_ignores_padded_steps() -> None:
    w = plan_windows(np.arange(3), 5, 5, mode="predict")
    values = np.array([[1.0, 2.0, 3.0, 100.0, 100.0]])
    np.testing.assert_array_equal(stitch(values, w), [1.0, 2.0, 3.0])


def test_stitch_rejects_uncovered_positions_and_shape_mismatch() -> None:
    frames = np.array([*range(0, 40), *range(50, 55)])
    w = plan_windows(frames, 32, 16, mode="train", min_length=32)
    with pytest.raises(ValueError, match="not covered"):
        stitch(np.zeros((len(w), 32)), w)
    with pytest.raises(ValueError, match="do not match"):
        stitch(np.zeros((len(w) + 1, 32)), w)
    with pytest.raises(ValueError, match="n_positions"):
        stitch(np.zeros((len(w), 32)), w, n_positions=44)


def _batched_predictions(
    windows: Windows, frame_ids: np.ndarray, batch: int, *, time_major: bool
) -> np.ndarray:
    """A "model" that outputs each step's frame id, run over batches of windows as a loader would.

    ``time_major=True`` emulates the authors' bug (METHOD.md §8.1.1): default_collate turns the
    per-sample frame-id lists into a list of T tensors of shape (B,), so flattening the ids gives
    time-major order while the predictions are batch-major; here the predictions are permuted that
    way, which is what pairing them with the misordered ids amounts to.
    """
    per_window = windows.take(frame_ids).astype(np.float64)  # (W, L)
    out = np.empty_like(per_window)
    for start in range(0, len(windows), batch):
        block = per_window[start : start + batch]  # (b, L)
        b, length = block.shape
        if time_major:
            block = block.T.reshape(-1).reshape(b, length)  # time-major flatten read back batch-major
        out[start : start + batch] = block
    return out


@pytest.mark.parametrize("n_frames", [100, 1000, 512 + 37])
def test_every_frame_predicted_once_in_order_across_batches(n_frames: int) -> None:
    frame_ids = np.arange(n_frames)
    w = plan_windows(frame_ids, 32, 32, mode="predict")  # the last window overlaps its neighbour
    stitched = stitch(_batched_predictions(w, frame_ids, 16, time_major=False), w)
    np.testing.assert_array_equal(stitched, frame_ids)
    # the same check catches the authors' collate misalignment in the last batch
    buggy = stitch(_batched_predictions(w, frame_ids, 16, time_major=True), w)
    assert not np.array_equal(buggy, frame_ids)


def test_take_gathers_and_checks_rows() -> None:
    w = plan_windows(np.arange(4), 3, 1)
    feats = np.arange(8).reshape(4, 2)
    assert w.take(feats).shape == (2, 3, 2)
    np.testing.assert_array_equal(w.take(feats)[1], feats[1:4])
    np.testing.assert_array_equal(w.coverage(), [1, 2, 2, 1])
    with pytest.raises(ValueError, match="rows"):
        w.take(np.zeros((5, 2)))
