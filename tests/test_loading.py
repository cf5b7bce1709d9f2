"""CNN input pipeline: the batched uint8 augmentation and the per-task balanced batches."""

from __future__ import annotations

import cv2
import numpy as np
import pandas as pd
import pytest
import torch

from mtaffect.data.augment import augment_batch, crop_matrices, eval_batch, resized_side, warp_batch
from mtaffect.data.loading import FrameTaskData, LabelArrays, TaskSource, targets_from_frame


def _faces(n: int, size: int = 112, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    raw = (rng.random((n, size, size, 3)) * 255).astype(np.uint8)
    return np.stack([cv2.GaussianBlur(f, (7, 7), 2) for f in raw])


@pytest.mark.parametrize("flip", [False, True])
@pytest.mark.parametrize("offset", [(0, 0), (22, 22), (3, 17)])
def test_one_warp_equals_resize_then_crop_then_flip(flip, offset):
    face = _faces(1)
    resized = resized_side(112)
    assert resized == 134  # torchvision Resize(int(1.2 * 112))
    ours = warp_batch(face, crop_matrices(112, 112, resized, np.array([offset]), np.array([flip])), 112)[0]
    up = cv2.resize(face[0], (resized, resized), interpolation=cv2.INTER_LINEAR)
    x0, y0 = offset
    ref = up[y0 : y0 + 112, x0 : x0 + 112]
    ref = ref[:, ::-1] if flip else ref
    diff = np.abs(ours.astype(int) - ref.astype(int))
    assert diff.max() <= 2 and diff.mean() < 0.5


def test_eval_transform_is_the_centre_crop():
    face = _faces(2)
    out = eval_batch(face, 112)
    up = cv2.resize(face[1], (134, 134), interpolation=cv2.INTER_LINEAR)
    assert np.abs(out[1].astype(int) - up[11:123, 11:123].astype(int)).max() <= 2


def test_augment_draws_differ_per_image_and_are_seeded():
    faces = np.repeat(_faces(1), 16, axis=0)
    a = augment_batch(faces, 112, np.random.default_rng(1))
    b = augment_batch(faces, 112, np.random.default_rng(1))
    assert a.dtype == np.uint8 and a.shape == (16, 112, 112, 3)
    np.testing.assert_array_equal(a, b)
    distinct = {a[i].tobytes() for i in range(16)}
    assert len(distinct) > 8  # same face, different translation/flip per image


def test_augment_to_a_smaller_training_size():
    out = augment_batch(_faces(3, size=48), 32, np.random.default_rng(0))
    assert out.shape == (3, 32, 32, 3)


class ArrayReader:
    """In-memory face reader with FaceReader's contract: read(rows) -> uint8 (n, S, S, 3)."""

    def __init__(self, faces: np.ndarray) -> None:
        self.faces = faces
        self.calls = 0

    def read(self, rows: np.ndarray) -> np.ndarray:
        self.calls += 1
        return self.faces[np.asarray(rows)]


class SeededSampler:
    """Weighted draws with replacement, reseeded per epoch (the BalancedSampler contract)."""

    def __init__(self, weights, num_samples, seed) -> None:
        self.weights, self.num_samples = np.asarray(weights, float), num_samples
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed * 7919 + self.epoch)
        draws = torch.multinomial(torch.as_tensor(self.weights), self.num_samples, True, generator=g)
        return iter(draws.tolist())


def _source(n: int, seed: int, *, expr: bool = True, va: bool = True) -> TaskSource:
    rng = np.random.default_rng(seed)
    df = pd.DataFrame(
        {
            "expression": pd.array(rng.integers(0, 7, n) if expr else [pd.NA] * n, dtype="Int64"),
            "valence": pd.array(rng.uniform(-1, 1, n) if va else [pd.NA] * n, dtype="Float64"),
            "arousal": pd.array(rng.uniform(-1, 1, n) if va else [pd.NA] * n, dtype="Float64"),
        }
    )
    return TaskSource(ArrayReader(_faces(n, 40, seed)), LabelArrays.from_frame(df), np.ones(n))


def _data(**kw) -> FrameTaskData:
    sources = {"EXPR": _source(40, 1, va=False), "VA": _source(24, 2, expr=False), "EXPR_VA": _source(30, 3)}
    args = dict(batch_per_task=4, size=32, seed=0, sampler_factory=SeededSampler)
    args.update(kw)
    return FrameTaskData(sources, **args)


def test_epoch_ends_with_the_shortest_task_set_and_batches_are_uint8():
    data = _data()
    assert data.steps_per_epoch() == 24 // 4
    batches = list(data.epoch(0))
    assert len(batches) == 6
    images, targets = batches[0]["VA"]
    assert images.dtype == torch.uint8 and images.shape == (4, 32, 32, 3)
    assert targets.has_va.all() and not targets.has_expression.any()
    assert batches[0]["EXPR"][1].has_expression.all() and not batches[0]["EXPR"][1].has_va.any()
    assert _data(max_steps=2).steps_per_epoch() == 2


def test_a_batch_depends_only_on_seed_epoch_step():
    a, b = _data(), _data()
    first = list(a.epoch(1))
    resumed = list(b.epoch(1, start_step=3))
    for x, y in zip(first[3:], resumed):
        for name in x:
            torch.testing.assert_close(x[name][0], y[name][0])
            torch.testing.assert_close(x[name][1].expression, y[name][1].expression)
    other_epoch = list(a.epoch(2))
    assert not torch.equal(first[0]["EXPR"][0], other_epoch[0]["EXPR"][0])


def test_workers_build_the_same_batches():
    serial = list(_data().epoch(0))
    parallel = list(_data(workers=1).epoch(0))
    assert len(serial) == len(parallel)
    for x, y in zip(serial, parallel):
        torch.testing.assert_close(x["EXPR_VA"][0], y["EXPR_VA"][0])


def test_ranks_take_disjoint_shares_of_the_same_draws():
    full = _data().epoch_draws(0)
    r0, r1 = _data(rank=0, world=2).epoch_draws(0), _data(rank=1, world=2).epoch_draws(0)
    for name in full:
        np.testing.assert_array_equal(np.sort(np.concatenate([r0[name], r1[name]])), np.sort(full[name]))
        np.testing.assert_array_equal(r0[name], full[name][0::2])
    assert _data(rank=1, world=2).steps_per_epoch() == (24 // 2) // 4


def test_a_task_set_smaller_than_one_batch_is_refused():
    with pytest.raises(ValueError, match="smaller than one batch"):
        _data(batch_per_task=32)


def test_targets_from_frame_masks_missing_and_other():
    df = pd.DataFrame(
        {
            "expression": pd.array([3, pd.NA, 7, 0], dtype="Int64"),
            "valence": pd.array([0.5, pd.NA, 0.1, -1.0], dtype="Float64"),
            "arousal": pd.array([0.2, 0.3, pd.NA, 1.0], dtype="Float64"),
        }
    )
    t = targets_from_frame(df)
    assert t.has_expression.tolist() == [True, False, False, True]  # 7 = "Other" is not a 7-class label
    assert t.has_va.tolist() == [True, False, False, True]
    assert t.expression.tolist()[0] == 3 and t.valence.dtype == torch.float32


@pytest.mark.parametrize("channels_last", [True, False])
def test_device_side_normalisation_matches_the_weights_preprocessing(channels_last):
    from mtaffect.data.loading import ImagePreparer
    from mtaffect.models.preprocessing import IMAGENET, Preprocessing

    images = torch.from_numpy(_faces(4, size=32))
    for prep in (Preprocessing(size=32), Preprocessing(size=32, mean=IMAGENET.mean, std=IMAGENET.std)):
        ours = ImagePreparer(prep, channels_last=channels_last).normalise(images, torch.device("cpu"))
        torch.testing.assert_close(ours, prep.apply(images, channels_last=channels_last))
        layout = torch.channels_last if channels_last else torch.contiguous_format
        assert ours.is_contiguous(memory_format=layout)
    resized = ImagePreparer(Preprocessing(size=24)).normalise(images, torch.device("cpu"))
    assert resized.shape == (4, 3, 24, 24)  # other sizes go through Preprocessing.apply
