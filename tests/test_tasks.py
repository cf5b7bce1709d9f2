"""Task sets (METHOD.md §3, §4.1): undersampling, every-k, EXPR_VA sources, samplers."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mtaffect.data.records import make_records
from mtaffect.data.tasks import BalancedSampler, TaskSetConfig, build_task_sets, sampling_weights, undersample
from mtaffect.errors import UserError


def _index() -> pd.DataFrame:
    rng = np.random.default_rng(0)
    parts = []
    n = 400  # Aff-Wild2 train: EXPR on every frame, VA on the first half (shared frames)
    expr = rng.integers(0, 8, n).astype(float)
    va = np.where(np.arange(n)[:, None] < 200, rng.uniform(-1, 1, (n, 2)), np.nan)
    parts.append(
        make_records(
            database="affwild2",
            split="train",
            track=np.repeat(["t1", "t2"], n // 2),
            frame=np.tile(np.arange(1, n // 2 + 1), 2),
            image=[f"i{i}" for i in range(n)],
            expression=expr,
            valence=va[:, 0],
            arousal=va[:, 1],
        )
    )
    parts.append(
        make_records(
            database="affwild2",
            split="validation",
            track="v1",
            frame=np.arange(1, 11),
            image=[f"v{i}" for i in range(10)],
            expression=np.r_[np.arange(8), np.nan, np.nan],
            valence=np.r_[np.full(8, np.nan), 0.1, 0.2],
            arousal=np.r_[np.full(8, np.nan), 0.1, 0.2],
        )
    )
    parts.append(
        make_records(
            database="affwild2", split="test", track="x", frame=np.arange(1, 4), image=["x1", "x2", "x3"]
        )
    )
    parts.append(
        make_records(
            database="expw",
            split="train",
            track=["a#0", "a#1"],
            image=["a", "a"],
            expression=np.array([1.0, 0.0]),
        )
    )
    parts.append(
        make_records(
            database="afew_va",
            split="train",
            track="001",
            frame=np.arange(3),
            image=["p0", "p1", "p2"],
            valence=np.array([0.1, 0.2, 0.3]),
            arousal=np.zeros(3),
        )
    )
    parts.append(
        make_records(
            database="affectnet",
            split=["train", "validation", "train"],
            track=["n1", "n2", "n3"],
            image=["n1", "n2", "n3"],
            expression=np.array([4.0, 2.0, np.nan]),
            valence=np.array([0.5, -0.5, 0.2]),
            arousal=np.array([0.1, 0.2, 0.3]),
        )
    )
    return pd.concat(parts, ignore_index=True)


def test_undersample_matches_authors_positions():
    labels_ = np.array([0, 0, 4, 0, 5, 4, 0, 0, 0, 0, 0, 0, 4, 5, 5, 1])
    # authors: Neutral kept where position % 10 == 0; then Happiness where new position % 2 == 0; then Sadness
    ref = labels_.copy()
    idx = np.arange(len(ref))
    for code, k in ((0, 10), (4, 2), (5, 2)):
        pos = np.arange(len(ref))
        drop = (ref == code) & (pos % k != 0)
        ref, idx = ref[~drop], idx[~drop]
    kept = undersample(labels_, (("Neutral", 10), ("Happiness", 2), ("Sadness", 2)))
    assert kept.tolist() == idx.tolist()
    assert kept.tolist() == [0, 10, 14, 15]


def test_task_sets_default_paper():
    index = _index()
    sets = build_task_sets(index, TaskSetConfig())
    expr = sets.train["EXPR"]
    aw = index[(index["database"] == "affwild2") & (index["split"] == "train")]
    aw7 = aw[aw["expression"] < 7]
    kept = undersample(aw7["expression"].to_numpy(float), (("Neutral", 10), ("Happiness", 2), ("Sadness", 2)))
    assert expr.index.tolist() == aw7.index[kept].tolist() + index.index[index["database"] == "expw"].tolist()
    assert (expr["expression"] < 7).all()
    # rows keep their index labels and their secondary VA labels
    assert expr["valence"].notna().any()
    va = sets.train["VA"]
    aw_va = aw[aw["valence"].notna()]
    assert (
        va.index.tolist() == aw_va.index[::5].tolist() + index.index[index["database"] == "afew_va"].tolist()
    )
    assert sets.train["EXPR_VA"]["track"].tolist() == ["n1", "n2"]  # AffectNet, both lists, both labels
    val = sets.validation
    assert set(val["database"]) == {"affwild2"} and set(val["split"]) == {"validation"}
    assert len(val) == 7 + 2  # Other (7) masked, and that row has no VA: dropped
    assert val["expression"].max() == 6


def test_expr_va_sources_and_options():
    index = _index()
    shared = build_task_sets(index, TaskSetConfig(expr_va_source="affwild2_shared")).train["EXPR_VA"]
    aw = index[(index["database"] == "affwild2") & (index["split"] == "train")]
    both = aw[(aw["expression"] < 7) & aw["valence"].notna()]
    assert shared.index.tolist() == both.index[::3].tolist()
    mixed = build_task_sets(index, TaskSetConfig(expr_va_source="both")).train["EXPR_VA"]
    assert len(mixed) == 2 + len(shared)
    eight = build_task_sets(index, TaskSetConfig(seven_classes=False, undersample=()))
    assert (eight.train["EXPR"]["expression"] == 7).any()
    excluded = build_task_sets(index, TaskSetConfig(exclude_tracks=("t1",))).train["VA"]
    assert "t1" not in set(excluded["track"])
    with pytest.raises(UserError):
        TaskSetConfig(expr_va_source="fer")
    with pytest.raises(UserError):
        TaskSetConfig(undersample=(("Happy", 2),))


def test_sampling_weights():
    df = pd.DataFrame(
        {
            "expression": pd.array([0, 0, 0, 1], dtype="Int64"),
            "valence": [0.0, 0.01, 0.9, -1.0],
            "arousal": [0.0, 0.01, 0.9, 1.0],
        }
    )
    assert sampling_weights("EXPR", df).tolist() == pytest.approx([1 / 3, 1 / 3, 1 / 3, 1.0])
    w = sampling_weights("VA", df)
    assert w.tolist() == pytest.approx([0.5, 0.5, 1.0, 1.0])
    w3 = sampling_weights("EXPR_VA", df)
    assert w3.max() == pytest.approx(1.0) and w3[0] == pytest.approx((0.5 + 1 / 3) / 2.0)
    with pytest.raises(ValueError):
        sampling_weights("AU", df)


def test_va_cells_agree_with_histogram2d():
    rng = np.random.default_rng(3)
    v, a = rng.uniform(-0.7, 0.9, 5000), rng.uniform(-1, 1, 5000)
    df = pd.DataFrame({"valence": v, "arousal": a})
    hist, _, _ = np.histogram2d(v, a, bins=20)
    w = sampling_weights("VA", df)
    assert np.allclose(np.sort(1 / w), np.sort(np.repeat(hist.ravel(), hist.ravel().astype(int))))
    hist_fixed, _, _ = np.histogram2d(v, a, bins=20, range=[[-1, 1], [-1, 1]])
    wf = sampling_weights("VA", df, va_range="fixed")
    assert np.allclose(
        np.sort(1 / wf), np.sort(np.repeat(hist_fixed.ravel(), hist_fixed.ravel().astype(int)))
    )


def test_balanced_sampler_seeded_epochs_and_balance():
    labels_ = np.r_[np.zeros(900), np.ones(100)]
    weights = sampling_weights("EXPR", pd.DataFrame({"expression": labels_}))
    sampler = BalancedSampler(weights, 4000, seed=7)
    first = list(sampler)
    assert len(first) == 4000 and first == list(BalancedSampler(weights, 4000, seed=7))
    sampler.set_epoch(1)
    second = list(sampler)
    assert second != first
    sampler.set_epoch(0)
    assert list(sampler) == first
    share = np.mean(labels_[first] == 1)
    assert 0.45 < share < 0.55  # balanced, though class 1 is 10 % of the rows
    ranks = [list(BalancedSampler(weights, 2000, seed=7, rank=r, world_size=2)) for r in range(2)]
    assert sorted(ranks[0] + ranks[1]) == sorted(first)
    with pytest.raises(ValueError):
        BalancedSampler(np.zeros(3), 5)


def test_config_from_yaml_shapes_and_weights_method():
    config = TaskSetConfig(undersample={"Neutral": 4}, expr_databases="expw", va_sampling_range="fixed")
    assert config.undersample == (("Neutral", 4),) and config.expr_databases == ("expw",)
    sets = build_task_sets(_index(), config)
    w = sets.weights("VA")
    assert w.shape == (len(sets.train["VA"]),)
    assert np.allclose(w, sampling_weights("VA", sets.train["VA"], va_range="fixed"))
    assert sampling_weights("VA", sets.train["VA"].iloc[:0]).shape == (0,)
    with pytest.raises(UserError):
        TaskSetConfig(va_sampling_range="auto")
