"""The frame store (faces decoded once) and the tensor warp: the same pixels and numbers as decoding.

Every consumer must see exactly what it saw before: a FaceReader serving rows from a store returns
the decoded faces bit for bit; the device-side warp equals OpenCV's; so the feature cache's
embeddings and the evaluation predictions are identical with and without the store (on CPU, where
both paths can run). A store whose sources changed, or whose build was interrupted, is refused with
its file named, and a rerun rebuilds only what changed.
"""

from __future__ import annotations

import json
import os
import pickle

import numpy as np
import pytest
import torch

from mtaffect.data.augment import (
    DeviceWarp,
    crop_matrices,
    eval_batch,
    eval_matrix,
    fixed_point_maps,
    resized_side,
    warp_batch,
    warp_tensor,
)
from mtaffect.data.faces import (
    FaceReader,
    FrameStore,
    FrameStoreError,
    UnreadableFaceError,
    build_face_cache,
    build_frame_store,
    build_frame_stores,
)
from mtaffect.data.synthetic import write_databases

index_mod = pytest.importorskip("mtaffect.data.index")
DATABASES = ("affwild2", "affectnet", "expw", "afew_va")
SIZE = 32


@pytest.fixture(scope="module")
def cached(tmp_path_factory):
    """Synthetic databases, their index and a face cache at SIZE (no store yet)."""
    root = tmp_path_factory.mktemp("store")
    write_databases(root / "db", preset="tiny", seed=0)
    index, meta = index_mod.build_index({db: root / "db" / db for db in DATABASES})
    meta = build_face_cache(index, meta, root / "cache", size=SIZE, workers=1, shard_size=16, progress=False)
    return root, index, meta


@pytest.fixture(scope="module")
def stored(cached):
    root, index, meta = cached
    return root, index, build_frame_stores(index, meta, root / "stores", size=SIZE, chunk=16, progress=False)


def _readable(reader: FaceReader) -> np.ndarray:
    rows = []
    for row in np.flatnonzero(reader.valid):
        try:
            reader.read([row])
            rows.append(row)
        except UnreadableFaceError:
            pass
    return np.asarray(rows)


# ------------------------------------------------------------------------------------- tensor warp


@pytest.mark.parametrize("in_size,size,factor", [(112, 112, 1.2), (24, 24, 1.2), (64, 48, 1.2),
                                                 (40, 32, 1.25), (100, 112, 1.3), (48, 48, 1.0)])
def test_tensor_warp_equals_opencv_bit_for_bit(in_size, size, factor):
    rng = np.random.default_rng(in_size + size)
    images = rng.integers(0, 256, (6, in_size, in_size, 3), dtype=np.uint8)
    resized = resized_side(size, factor)
    offsets = rng.integers(0, resized - size + 1, (6, 2))
    flips = rng.random(6) < 0.5
    matrices = crop_matrices(in_size, size, resized, offsets, flips)  # one map per image (training)
    positions, weights = fixed_point_maps(matrices, in_size, in_size, size)
    got = warp_tensor(torch.from_numpy(images), torch.from_numpy(positions), torch.from_numpy(weights), size)
    assert np.array_equal(got.numpy(), warp_batch(images, matrices, size))
    evaluation = DeviceWarp(lambda s: eval_matrix(s, size, factor), size, "cpu")  # one map for all
    assert np.array_equal(evaluation(torch.from_numpy(images)).numpy(),
                          eval_batch(images, size, resize_factor=factor))


# ------------------------------------------------------------------------------------- the store


def test_store_serves_the_decoded_faces_without_decoding(stored, monkeypatch):
    root, index, meta = stored
    assert [e["split"] for e in meta["frame_stores"]] == ["train", "validation"]
    plain = FaceReader(index, {k: v for k, v in meta.items() if k != "frame_stores"}, SIZE)
    served = FaceReader(index, meta, SIZE)
    rows = _readable(plain)
    in_store = served.store_of[rows] >= 0
    assert in_store.sum() > 100 and not in_store.all()  # the test split has no store: decoded as before
    expected = plain.read(rows)
    assert np.array_equal(served.read(rows), expected)
    store_rows = rows[in_store]
    monkeypatch.setattr(FaceReader, "_read_sources", lambda *a, **k: pytest.fail("decoded a stored face"))
    assert np.array_equal(served.read(store_rows), expected[in_store])
    clone = pickle.loads(pickle.dumps(served))  # as DataLoader workers get it: no row table, no map
    assert all(s.keys is None and s._map is None for s in clone.stores)
    assert np.array_equal(clone.read(store_rows), expected[in_store])
    # a face that could not be read at build time raises what decoding raised
    monkeypatch.undo()
    for row in np.setdiff1d(np.flatnonzero(plain.valid), rows):
        with pytest.raises(UnreadableFaceError) as direct:
            plain.read([row])
        with pytest.raises(UnreadableFaceError) as from_store:
            served.read([row])
        assert str(from_store.value) == str(direct.value)


def test_changed_source_is_refused_then_only_its_chunk_is_rebuilt(cached, tmp_path, monkeypatch):
    import mtaffect.data.faces.store as store_mod
    import mtaffect.data.faces.store_build as build_mod

    monkeypatch.setattr(store_mod, "STAT_BLOCK", 7)  # the sources are checked in several threads
    root, index, meta = cached
    train = index[index["split"] == "train"]
    store = build_frame_store(train, meta, tmp_path / "s", size=SIZE, chunk=16, progress=False)
    with_store = dict(meta, frame_stores=[{"path": str(store.path), "split": "train", "size": SIZE}])
    victim = next(str(p) for p in store.sources if str(p).endswith(".jpg") and "affwild2" in str(p))
    row = int(np.flatnonzero(store.sources == victim)[0])
    st = os.stat(victim)
    os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched: maybe another face now
    try:
        changed = "rows.parquet.*1 source files changed.*" + os.path.basename(victim)
        with pytest.raises(FrameStoreError, match=changed):
            FaceReader(train, with_store, SIZE)
        original = build_mod._Chunks.__call__

        def killed(self, i):
            raise KeyboardInterrupt

        monkeypatch.setattr(build_mod._Chunks, "__call__", killed)  # the rebuild is killed at once
        with pytest.raises(KeyboardInterrupt):
            build_frame_store(train, meta, tmp_path / "s", size=SIZE, chunk=16, progress=False)
        rebuilt: list[int] = []
        monkeypatch.setattr(build_mod._Chunks, "__call__", lambda self, i: rebuilt.append(self.todo[i])
                            or original(self, i))
        again = build_frame_store(train, meta, tmp_path / "s", size=SIZE, chunk=16, progress=False)
        assert rebuilt == [row // 16]
        assert np.array_equal(np.asarray(again.faces), np.asarray(store.faces))
        FaceReader(train, with_store, SIZE)  # accepted again
    finally:  # the module's other stores were built before the touch
        os.utime(victim, ns=(st.st_atime_ns, st.st_mtime_ns))


def test_store_of_another_face_cache_or_root_is_refused(stored, tmp_path):
    # the store's rows are keyed by face only: a reader that would decode them from other files (a
    # face cache rebuilt elsewhere at another quality, another copy of a database) must not be served
    # the stored pixels, whose files' sizes and mtimes are unchanged
    root, index, meta = stored
    rebuilt = build_face_cache(index, meta, tmp_path / "cacheB", size=SIZE, quality=30, workers=1,
                               shard_size=16, progress=False)
    assert rebuilt["frame_stores"] == meta["frame_stores"]
    with pytest.raises(FrameStoreError, match=r"train-32.rows\.parquet: \d+ rows would be read from "
                       r"other files.*cacheB.*rebuild it with `mtaffect cache"):
        FaceReader(index, rebuilt, SIZE)
    (tmp_path / "copy").mkdir()
    (tmp_path / "copy" / "affwild2").symlink_to(root / "db" / "affwild2", target_is_directory=True)
    moved = dict(meta, roots=dict(meta["roots"], affwild2=str(tmp_path / "copy" / "affwild2")))
    with pytest.raises(FrameStoreError, match=r"rows would be read from other files.*copy/affwild2"):
        FaceReader(index, moved, SIZE)
    reader = FaceReader(index, meta, SIZE)  # the files it was built from: accepted
    rows = np.flatnonzero(reader.store_of >= 0)
    built_from = [reader.stores[reader.store_of[r]].sources[reader.store_pos[r]] for r in rows]
    assert reader.sources(rows).tolist() == built_from


def test_interrupted_build_is_refused_then_resumed(cached, tmp_path, monkeypatch):
    root, index, meta = cached
    train = index[index["split"] == "train"]
    whole = build_frame_store(train, meta, tmp_path / "whole", size=SIZE, chunk=16, progress=False)
    import mtaffect.data.faces.store_build as build_mod

    calls: list[int] = []
    original = build_mod._Chunks.__call__

    def killed_after_three(self, i):
        if len(calls) == 3:
            raise KeyboardInterrupt
        calls.append(self.todo[i])
        return original(self, i)

    monkeypatch.setattr(build_mod._Chunks, "__call__", killed_after_three)
    with pytest.raises(KeyboardInterrupt):
        build_frame_store(train, meta, tmp_path / "part", size=SIZE, chunk=16, progress=False)
    with pytest.raises(FrameStoreError, match="store.json: the frame store is unfinished"):
        FrameStore(tmp_path / "part")
    calls.clear()
    monkeypatch.setattr(build_mod._Chunks, "__call__", lambda self, i: calls.append(self.todo[i])
                        or original(self, i))
    done = build_frame_store(train, meta, tmp_path / "part", size=SIZE, chunk=16, progress=False)
    assert calls == list(range(3, -(-whole.n // 16)))  # the three finished chunks were kept
    assert np.array_equal(np.asarray(done.faces), np.asarray(whole.faces))
    assert done.bad == whole.bad and json.loads((done.path / "store.json").read_text())["complete"]


def test_damaged_store_data_is_refused_naming_the_file(cached, tmp_path):
    root, index, meta = cached
    store = build_frame_store(index[index["split"] == "validation"], meta, tmp_path / "v", size=SIZE,
                              chunk=64, progress=False)
    with open(store.path / "frames.npy", "r+b") as handle:
        handle.truncate(os.path.getsize(store.path / "frames.npy") - SIZE * SIZE * 3)
    with pytest.raises(FrameStoreError, match="frames.npy"):
        FrameStore(store.path)


def test_cli_cache_builds_the_stores_into_the_index(cached, tmp_path, capsys):
    from mtaffect.cli import main

    root, index, meta = cached
    path = tmp_path / "index.parquet"
    index_mod.write_index(index, {k: v for k, v in meta.items() if k != "face_cache"}, path)
    assert main(["cache", "--index", str(path), "--out", str(root / "cache"), "--size", str(SIZE),
                 "--workers", "1", "--shard-size", "16", "--frame-store", str(tmp_path / "st"),
                 "--store-splits", "validation"]) == 0
    assert "frame store" in capsys.readouterr().out
    index2, meta2 = index_mod.read_index(path)
    assert [(e["split"], e["size"]) for e in meta2["frame_stores"]] == [("validation", SIZE)]
    reader = FaceReader(index2, meta2, SIZE)
    assert (reader.store_of[(index2["split"] == "validation").to_numpy()] >= 0).all()


# ----------------------------------------------------------------------------- the consumers


def test_feature_cache_and_evaluation_are_identical_with_the_store(stored, tmp_path, monkeypatch):
    import mtaffect.evaluate.frames as evaluate_frames
    from mtaffect.evaluate import predict_cnn_frames
    from mtaffect.features import ensure_feature_cache
    from mtaffect.models.preprocessing import Preprocessing
    from mtaffect.testing import tiny_cnn

    root, index, meta = stored
    plain = {k: v for k, v in meta.items() if k != "frame_stores"}
    frames = index[(index["database"] == "affwild2") & (index["split"] != "test")]
    frames = frames.iloc[_readable(FaceReader(frames, plain, SIZE))[:60]].reset_index(drop=True)
    model = tiny_cnn().eval()
    prep = {"size": SIZE, "mean": [128.0, 128.0, 128.0], "std": [1.0, 1.0, 1.0]}
    common = dict(preprocessing_meta=prep, device="cpu", progress=False, batch_size=24, workers=0)
    today = ensure_feature_cache(model, frames, plain, tmp_path / "a", device_warps=False, **common)
    new = ensure_feature_cache(model, frames, meta, tmp_path / "b", device_warps=True, **common)
    assert today.path.name == new.path.name  # the same key: the store changes no input
    for task in ("EXPR", "VA"):
        assert np.array_equal(np.asarray(new.embeddings[task]), np.asarray(today.embeddings[task])), task
    preprocessing = Preprocessing.from_dict(prep)
    before = predict_cnn_frames(model, frames, plain, preprocessing=preprocessing, batch_size=20,
                                device="cpu", device_warps=False)
    after = predict_cnn_frames(model, frames, meta, preprocessing=preprocessing, batch_size=20,
                               device="cpu", device_warps=True)
    assert before.shape == (len(frames), 9) and np.isfinite(before).all()
    assert np.array_equal(after, before)
    monkeypatch.setattr(evaluate_frames, "IN_MEMORY_LIMIT", 0)  # streamed batches (a large split)
    streamed = predict_cnn_frames(model, frames, meta, preprocessing=preprocessing, batch_size=20,
                                  device="cpu", device_warps=True, workers=0)
    assert np.array_equal(streamed, before)
