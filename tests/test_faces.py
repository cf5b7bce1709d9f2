"""Face crops, the face cache (counts, resumability, formats) and FaceReader."""

from __future__ import annotations

import math
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

from mtaffect.data.faces import (
    FaceReader,
    UnreadableFaceError,
    box_crop,
    build_face_cache,
    cache_keys,
    crop_face,
    eye_level_crop,
    landmark_square,
    resize_face,
)
from mtaffect.data.synthetic import write_databases

index_mod = pytest.importorskip("mtaffect.data.index")
DATABASES = ("affwild2", "affectnet", "expw", "afew_va")


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory):
    root = tmp_path_factory.mktemp("faces")
    write_databases(root / "db", preset="tiny", seed=0)
    index, meta = index_mod.build_index({db: root / "db" / db for db in DATABASES})
    return root, index, meta


@pytest.fixture(scope="module")
def cached(tiny_index):
    root, index, meta = tiny_index
    meta2 = build_face_cache(index, meta, root / "cache", size=64, workers=1, shard_size=16, progress=False)
    return root, index, meta2


# ------------------------------------------------------------------------------------- crop geometry


def test_landmark_square_geometry():
    img = np.zeros((400, 400, 3), np.uint8)
    marks = np.array([[100, 150], [200, 150], [150, 240]], float)  # extent 100 wide, 90 high
    side = 100 + 2 * 0.05 * 90  # max extent + 2 gaps of 5 % of the min extent = 109
    x0 = 100 - (side - 100) / 2  # centred horizontally: 95.5
    y0 = 150 - 0.65 * (side - 90)  # 65 % of the spare height above: 137.65
    img[140, 150] = 255
    crop = landmark_square(img, marks)
    assert crop.shape[:2] == (109, 109)
    ys, xs = np.nonzero(crop[:, :, 0])
    assert (ys.tolist(), xs.tolist()) == ([140 - math.floor(y0)], [150 - math.floor(x0)])


def test_landmark_square_shifts_inside_then_pads():
    img = np.full((200, 200, 3), 7, np.uint8)
    near_edge = np.array([[0, 0], [60, 60]], float)
    assert (landmark_square(img, near_edge) == 7).all()  # fits: shifted inside, no black
    huge = np.array([[0, 0], [300, 300]], float)
    crop = landmark_square(img, huge)
    assert crop.shape[0] > 200 and (crop == 0).any() and (crop == 7).any()


def test_box_crop_clamps_and_rejects_outside():
    img = np.arange(100 * 120 * 3, dtype=np.uint32).reshape(100, 120, 3).astype(np.uint8)
    assert box_crop(img, (-10, 5, 30, 300)).shape[:2] == (95, 30)
    with pytest.raises(ValueError, match="outside"):
        box_crop(img, (130, 0, 150, 10))


def test_eye_level_crop_levels_the_eyes():
    img = np.zeros((300, 300, 3), np.uint8)
    angle = math.radians(25)
    centre = np.array([150.0, 150.0])
    rot = np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    canon = {36: (-50, -30), 39: (-20, -30), 42: (20, -30), 45: (50, -30), 48: (-25, 40), 54: (25, 40)}
    marks = np.zeros((68, 2))
    for k, p in canon.items():
        marks[k] = centre + rot @ np.array(p, float)
    for k in (36, 45):
        cv2.circle(img, tuple(int(round(v)) for v in marks[k]), 4, (255, 255, 255), -1)
    crop = eye_level_crop(img, marks)
    side = 2 * max(70, 70)  # eye distance 70, eye-to-mouth height 70
    assert abs(crop.shape[0] - side) <= 1
    ys, xs = np.nonzero(crop[:, :, 0] > 128)
    left, right = ys[xs < side / 2].mean(), ys[xs >= side / 2].mean()
    assert abs(left - right) < 1.5  # level after rotation


def test_resize_face_interpolation_both_ways():
    img = np.random.default_rng(0).integers(0, 255, (50, 50, 3), dtype=np.uint8)
    assert resize_face(img, 112).shape == (112, 112, 3)
    assert resize_face(img, 20).shape == (20, 20, 3)
    assert resize_face(img, 50) is not None and (resize_face(img, 50) == img).all()


def test_crop_face_needs_geometry():
    img = np.zeros((50, 50, 3), np.uint8)
    with pytest.raises(ValueError):
        crop_face(img, "landmark_square", 32)
    with pytest.raises(ValueError):
        crop_face(img, "box", 32)


# ------------------------------------------------------------------------------------- cache + reader


def test_cache_counts_and_corrupt_image(cached):
    _, index, meta = cached
    info = meta["face_cache"]
    non_direct = index[index["database"] != "affwild2"]
    assert info["entries"] == len(set(cache_keys(non_direct)))
    assert info["counts"]["affectnet"]["unreadable_image"] == 1
    assert info["skipped"] == {"affectnet": {"unreadable_image": 1}}
    assert sum(info["counts"]["expw"].values()) == int((index["database"] == "expw").sum())


def test_face_ids_never_collide(cached):
    _, index, meta = cached
    expw = index[index["database"] == "expw"]
    keys = cache_keys(expw)
    assert len(set(keys)) == len(keys)
    shared = expw.groupby("image").filter(lambda g: len(g) > 1)
    assert len(shared) >= 2  # photos with several faces exist
    reader = FaceReader(index, meta, 64)
    rows = shared.index.to_numpy()[:2]
    faces = reader.read(rows)
    assert not np.array_equal(faces[0], faces[1])


def test_reader_matches_direct_crops(cached):
    root, index, meta = cached
    reader = FaceReader(index, meta, 64)
    for db in ("affectnet", "expw", "afew_va"):
        row = int(np.flatnonzero((index["database"] == db).to_numpy() & reader.valid)[0])
        r = index.iloc[row]
        src = cv2.cvtColor(cv2.imread(str(Path(meta["roots"][db]) / r["image"])), cv2.COLOR_BGR2RGB)
        box = None if r.isna()["box_x0"] else (r["box_x0"], r["box_y0"], r["box_x1"], r["box_y1"])
        method = {"affectnet": "landmark_square", "expw": "box", "afew_va": "eye_level"}[db]
        want = crop_face(src, method, 64, r["landmarks"], box)
        got = reader.read([row])[0]
        assert np.abs(got.astype(int) - want.astype(int)).mean() < 6  # JPEG q90 round trip


def test_reader_reads_affwild2_directly_and_resizes(cached):
    _, index, meta = cached
    reader = FaceReader(index, meta, 48)
    rows = np.flatnonzero((index["database"] == "affwild2").to_numpy())[:5]
    faces = reader.read(rows)
    assert faces.shape == (5, 48, 48, 3) and faces.dtype == np.uint8 and faces.std() > 5


def test_unreadable_rows_raise_with_path(cached):
    _, index, meta = cached
    reader = FaceReader(index, meta, 64)
    bad = np.flatnonzero(~reader.valid)
    assert len(bad) == 1 and index.iloc[bad[0]]["database"] == "affectnet"
    with pytest.raises(UnreadableFaceError, match="Manually_Annotated_Images") as err:
        reader.read([0, int(bad[0])])
    assert err.value.rows == [int(bad[0])]


def test_missing_affwild2_file_raises(tiny_index, cached, tmp_path):
    _, index, meta = cached
    sub = index[index["database"] == "affwild2"].head(3).reset_index(drop=True)
    roots = dict(meta["roots"])
    roots["affwild2"] = str(tmp_path)  # nothing there
    reader = FaceReader(sub, {**meta, "roots": roots}, 64)
    with pytest.raises(UnreadableFaceError, match="cannot read image"):
        reader.read([1])


def test_reader_without_cache_says_how_to_build_it(tiny_index):
    from mtaffect.errors import UserError

    _, index, meta = tiny_index
    with pytest.raises(UserError, match="mtaffect cache"):
        FaceReader(index, meta, 64)


def test_resume_skips_finished_shards_and_repairs_broken_ones(tiny_index, tmp_path):
    _, index, meta = tiny_index
    build_face_cache(index, meta, tmp_path, size=32, workers=1, shard_size=16, progress=False)
    folder = tmp_path / "jpeg32"
    tables = sorted(folder.glob("shard-*.npz"))
    assert len(tables) >= 3
    stamps = {p: p.stat().st_mtime_ns for p in tables}
    # an interrupted build: one table gone, one data file truncated, a stray temporary file
    tables[0].unlink()
    data1 = tables[1].with_suffix(".bin")
    data1.write_bytes(data1.read_bytes()[:10])
    (folder / ".shard-00009.bin.x.tmp").write_bytes(b"partial")
    meta2 = build_face_cache(index, meta, tmp_path, size=32, workers=2, shard_size=16, progress=False)
    for p in tables[2:]:
        assert p.stat().st_mtime_ns == stamps[p]  # untouched
    assert tables[0].exists() and tables[1].stat().st_mtime_ns != stamps[tables[1]]
    assert not list(folder.glob(".*.tmp"))
    reader = FaceReader(index, meta2, 32)
    assert reader.read(np.flatnonzero(reader.valid)).shape[1:] == (32, 32, 3)


def test_raw_format_matches_jpeg(tiny_index, tmp_path):
    _, index, meta = tiny_index
    jpeg = build_face_cache(index, meta, tmp_path, size=40, workers=1, progress=False)
    raw = build_face_cache(index, meta, tmp_path, size=40, workers=1, fmt="raw", progress=False)
    a, b = FaceReader(index, jpeg, 40), FaceReader(index, raw, 40)
    rows = np.flatnonzero(a.valid & (index["database"] != "affwild2").to_numpy())
    diff = np.abs(a.read(rows).astype(int) - b.read(rows).astype(int)).mean()
    assert diff < 6  # JPEG q90 round trip; a different face differs by tens
    assert (b.valid == a.valid).all()


def test_reader_pickles_without_memory_maps(cached):
    import pickle

    _, index, meta = cached
    reader = FaceReader(index, meta, 64)
    rows = np.flatnonzero(reader.valid)[:8]
    first = reader.read(rows)
    clone = pickle.loads(pickle.dumps(reader))
    assert clone.store is not None and clone.store._maps == {}
    np.testing.assert_array_equal(clone.read(rows), first)


def test_cli_synthetic_index_cache(tmp_path, capsys):
    from mtaffect.cli import main

    out = tmp_path / "syn"
    assert main(["synthetic", "--out", str(out)]) == 0
    truth, tmeta = index_mod.read_index(out / "truth.parquet")
    flags = [f"--{db.replace('_', '-')}={out / db}" for db in DATABASES]
    assert main(["index", *flags, "--out", str(tmp_path / "index.parquet")]) == 0
    index, _ = index_mod.read_index(tmp_path / "index.parquet")
    assert len(index) == len(truth)
    assert main(["cache", "--index", str(tmp_path / "index.parquet"), "--out", str(tmp_path / "c"),
                 "--size", "48", "--workers", "1"]) == 0
    printed = capsys.readouterr().out
    assert "unreadable_image 1" in printed
    index, meta = index_mod.read_index(tmp_path / "index.parquet")
    assert meta["face_cache"]["size"] == 48 and os.path.isdir(meta["face_cache"]["path"])
    reader = FaceReader(index, meta, 48)
    assert reader.read(np.flatnonzero(reader.valid)[:10]).shape == (10, 48, 48, 3)
