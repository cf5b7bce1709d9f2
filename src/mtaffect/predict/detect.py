"""Offline face detection: an MTCNN cascade (Zhang et al. 2016) and an OpenCV Haar fallback.

MTCNN runs three small networks in a cascade: P-Net scans an image pyramid with 12×12 windows and
proposes candidates, R-Net re-scores 24×24 crops of them and O-Net re-scores 48×48 crops and
regresses the five landmarks (eye centres, nose tip, mouth corners) that alignment needs. The
weights are the ones the ``facenet-pytorch`` wheel installs (``facenet_pytorch/data/*.pt``); the
package itself is never imported (its pins would downgrade torch), only the files are read, with
``torch.load(weights_only=True)``. Nothing is downloaded at run time.

Coordinates are float pixels of the input image: a box ``(x0, y0, x1, y1)`` covers
``x0 <= x < x1``; landmarks are ``(5, 2)`` ``(x, y)`` in the order left eye, right eye (as seen in the
image), nose, left mouth corner, right mouth corner.
"""

from __future__ import annotations

import functools
import importlib.util
import math
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
from torch import nn

from mtaffect.errors import UserError

__all__ = ["Detections", "MTCNN", "HaarDetector", "nms", "box_iou", "mtcnn_weights_dir", "make_detector"]

INSTALL_HINT = "pip install --no-deps facenet-pytorch==2.6.0"


@dataclass
class Detections:
    """Faces found in one image: ``boxes (n, 4)``, ``scores (n,)``, ``landmarks (n, 5, 2)`` or None."""

    boxes: np.ndarray
    scores: np.ndarray
    landmarks: np.ndarray | None

    def __len__(self) -> int:
        return len(self.boxes)

    @staticmethod
    def empty(with_landmarks: bool = True) -> Detections:
        lm = np.zeros((0, 5, 2), np.float32) if with_landmarks else None
        return Detections(np.zeros((0, 4), np.float32), np.zeros(0, np.float32), lm)

    def take(self, keep: np.ndarray) -> Detections:
        lm = None if self.landmarks is None else self.landmarks[keep]
        return Detections(self.boxes[keep], self.scores[keep], lm)

    def scaled(self, factor: float) -> Detections:
        """Coordinates multiplied by ``factor`` (detections on a resized copy → the original)."""
        lm = None if self.landmarks is None else self.landmarks * factor
        return Detections(self.boxes * factor, self.scores, lm)


# --------------------------------------------------------------------------- box utilities


def box_iou(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Pairwise intersection over union of boxes ``a (n, 4)`` and ``b (m, 4)`` → ``(n, m)``."""
    a = np.asarray(a, np.float64).reshape(-1, 4)
    b = np.asarray(b, np.float64).reshape(-1, 4)
    ix0 = np.maximum(a[:, None, 0], b[None, :, 0])
    iy0 = np.maximum(a[:, None, 1], b[None, :, 1])
    ix1 = np.minimum(a[:, None, 2], b[None, :, 2])
    iy1 = np.minimum(a[:, None, 3], b[None, :, 3])
    inter = np.clip(ix1 - ix0, 0, None) * np.clip(iy1 - iy0, 0, None)
    area_a = (a[:, 2] - a[:, 0]) * (a[:, 3] - a[:, 1])
    area_b = (b[:, 2] - b[:, 0]) * (b[:, 3] - b[:, 1])
    return inter / np.maximum(area_a[:, None] + area_b[None, :] - inter, 1e-9)


def nms(boxes: np.ndarray, scores: np.ndarray, threshold: float, mode: str = "union") -> np.ndarray:
    """Greedy non-maximum suppression; returns kept indices, best score first.

    ``mode="union"`` suppresses by IoU; ``mode="min"`` divides the overlap by the smaller area (the
    cascade's last stage uses it to drop a small box nested in a bigger one). Each step suppresses
    against all remaining boxes at once (vectorised), so the loop runs once per kept box.
    """
    if len(boxes) == 0:
        return np.zeros(0, np.int64)
    boxes = np.asarray(boxes, np.float64)
    x0, y0, x1, y1 = boxes.T
    area = np.clip(x1 - x0, 0, None) * np.clip(y1 - y0, 0, None)
    order = np.argsort(-np.asarray(scores), kind="stable")
    keep = []
    while order.size:
        i, rest = order[0], order[1:]
        keep.append(i)
        w = np.clip(np.minimum(x1[i], x1[rest]) - np.maximum(x0[i], x0[rest]), 0, None)
        h = np.clip(np.minimum(y1[i], y1[rest]) - np.maximum(y0[i], y0[rest]), 0, None)
        inter = w * h
        denom = np.minimum(area[i], area[rest]) if mode == "min" else area[i] + area[rest] - inter
        overlap = inter / np.maximum(denom, 1e-9)
        order = rest[overlap <= threshold]
    return np.asarray(keep, np.int64)


def _square(boxes: np.ndarray) -> np.ndarray:
    """Boxes grown to squares around their centres (side = the longer side)."""
    out = boxes.copy()
    w, h = boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1]
    side = np.maximum(w, h)
    out[:, 0] = boxes[:, 0] + (w - side) / 2
    out[:, 1] = boxes[:, 1] + (h - side) / 2
    out[:, 2] = out[:, 0] + side
    out[:, 3] = out[:, 1] + side
    return out


def _calibrate(boxes: np.ndarray, reg: np.ndarray) -> np.ndarray:
    """Apply the networks' box regression: offsets of each side as fractions of width/height."""
    w = (boxes[:, 2] - boxes[:, 0])[:, None]
    h = (boxes[:, 3] - boxes[:, 1])[:, None]
    return boxes + reg * np.concatenate([w, h, w, h], axis=1)


def _crops(image: np.ndarray, boxes: np.ndarray, size: int) -> np.ndarray:
    """Square crops ``(n, size, size, 3)`` uint8 of ``boxes``; parts outside the image are black."""
    out = np.zeros((len(boxes), size, size, 3), np.uint8)
    H, W = image.shape[:2]
    for k, (x0, y0, x1, y1) in enumerate(np.round(boxes).astype(np.int64)):
        w, h = x1 - x0, y1 - y0
        if w < 2 or h < 2:
            continue
        patch = np.zeros((h, w, 3), np.uint8)
        sx0, sy0, sx1, sy1 = max(x0, 0), max(y0, 0), min(x1, W), min(y1, H)
        if sx1 > sx0 and sy1 > sy0:
            patch[sy0 - y0 : sy1 - y0, sx0 - x0 : sx1 - x0] = image[sy0:sy1, sx0:sx1]
        interp = cv2.INTER_AREA if w > size else cv2.INTER_LINEAR
        out[k] = cv2.resize(patch, (size, size), interpolation=interp)
    return out


# --------------------------------------------------------------------------- the three networks


class _PNet(nn.Module):
    """Proposal net: fully convolutional, a 12×12 window → face score (2) + box offsets (4)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 10, 3), nn.PReLU(10)
        self.conv2, self.prelu2 = nn.Conv2d(10, 16, 3), nn.PReLU(16)
        self.conv3, self.prelu3 = nn.Conv2d(16, 32, 3), nn.PReLU(32)
        self.conv4_1, self.conv4_2 = nn.Conv2d(32, 2, 1), nn.Conv2d(32, 4, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = nn.functional.max_pool2d(self.prelu1(self.conv1(x)), 2, 2, ceil_mode=True)
        x = self.prelu3(self.conv3(self.prelu2(self.conv2(x))))
        return torch.softmax(self.conv4_1(x), dim=1)[:, 1], self.conv4_2(x)


def _flatten_wh(x: torch.Tensor) -> torch.Tensor:
    # The released weights come from a model trained on transposed (column-major) images: their
    # dense layers read the feature map in (width, height, channel) order.
    return x.permute(0, 3, 2, 1).reshape(x.shape[0], -1)


class _RNet(nn.Module):
    """Refinement net on 24×24 crops → face score + box offsets."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 28, 3), nn.PReLU(28)
        self.conv2, self.prelu2 = nn.Conv2d(28, 48, 3), nn.PReLU(48)
        self.conv3, self.prelu3 = nn.Conv2d(48, 64, 2), nn.PReLU(64)
        self.dense4, self.prelu4 = nn.Linear(576, 128), nn.PReLU(128)
        self.dense5_1, self.dense5_2 = nn.Linear(128, 2), nn.Linear(128, 4)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        x = nn.functional.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = nn.functional.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = self.prelu4(self.dense4(_flatten_wh(self.prelu3(self.conv3(x)))))
        return torch.softmax(self.dense5_1(x), dim=1)[:, 1], self.dense5_2(x)


class _ONet(nn.Module):
    """Output net on 48×48 crops → face score + box offsets + 5 landmarks (x's then y's, in [0, 1])."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1, self.prelu1 = nn.Conv2d(3, 32, 3), nn.PReLU(32)
        self.conv2, self.prelu2 = nn.Conv2d(32, 64, 3), nn.PReLU(64)
        self.conv3, self.prelu3 = nn.Conv2d(64, 64, 3), nn.PReLU(64)
        self.conv4, self.prelu4 = nn.Conv2d(64, 128, 2), nn.PReLU(128)
        self.dense5, self.prelu5 = nn.Linear(1152, 256), nn.PReLU(256)
        self.dense6_1, self.dense6_2, self.dense6_3 = nn.Linear(256, 2), nn.Linear(256, 4), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        x = nn.functional.max_pool2d(self.prelu1(self.conv1(x)), 3, 2, ceil_mode=True)
        x = nn.functional.max_pool2d(self.prelu2(self.conv2(x)), 3, 2, ceil_mode=True)
        x = nn.functional.max_pool2d(self.prelu3(self.conv3(x)), 2, 2, ceil_mode=True)
        x = self.prelu5(self.dense5(_flatten_wh(self.prelu4(self.conv4(x)))))
        return torch.softmax(self.dense6_1(x), dim=1)[:, 1], self.dense6_2(x), self.dense6_3(x)


def mtcnn_weights_dir() -> Path:
    """Folder holding ``pnet.pt``, ``rnet.pt``, ``onet.pt`` (found without importing the package)."""
    spec = importlib.util.find_spec("facenet_pytorch")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"MTCNN weights not installed: run `{INSTALL_HINT}` (or use --detector haar)")
    folder = Path(list(spec.submodule_search_locations)[0]) / "data"
    missing = [n for n in ("pnet.pt", "rnet.pt", "onet.pt") if not (folder / n).is_file()]
    if missing:
        raise UserError(f"MTCNN weights {missing} missing in {folder}: run `{INSTALL_HINT}`")
    return folder


def _to_input(images: np.ndarray) -> torch.Tensor:
    """uint8 NHWC RGB → float NCHW in about [-1, 1], the cascade's normalisation ((x − 127.5) / 128)."""
    t = torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).float()
    return (t - 127.5) * 0.0078125


class MTCNN:
    """The three-stage MTCNN cascade. ``detect(rgb uint8 (H, W, 3)) -> Detections``.

    min_face: smallest face side in pixels searched for (after ``max_size`` downscaling); bigger is
        faster (the pyramid starts coarser). thresholds: face probability kept after each stage.
    factor: pyramid step (each level is ``factor`` times the previous one).
    max_size: images whose longer side exceeds it are detected on a downscaled copy (huge images);
        coordinates are returned in the original image.
    backend, device: the nets on onnxruntime (``"onnx"``, the CPU) or torch (``"torch"``, on ``device``);
        ``"auto"`` takes onnxruntime on the CPU when installed. Many frames at once:
        :func:`mtaffect.predict.detect_batch.detect_frames`.
    """

    def __init__(
        self,
        *,
        min_face: float = 40.0,
        thresholds: tuple[float, float, float] = (0.6, 0.7, 0.7),
        factor: float = 0.709,
        max_size: int = 1280,
        weights_dir: str | Path | None = None,
        backend: str = "auto",
        device: str | torch.device = "cpu",
    ) -> None:
        folder = Path(weights_dir) if weights_dir else mtcnn_weights_dir()
        self.device = torch.device(device)
        self.pnet, self.rnet, self.onet = _PNet(), _RNet(), _ONet()
        for net, name in ((self.pnet, "pnet"), (self.rnet, "rnet"), (self.onet, "onet")):
            net.load_state_dict(torch.load(folder / f"{name}.pt", map_location="cpu", weights_only=True))
            net.eval().to(self.device)
        self.min_face, self.thresholds, self.factor, self.max_size = min_face, thresholds, factor, max_size
        self.has_landmarks = True
        self.sessions: dict[str, object] = {}
        if backend not in ("auto", "torch", "onnx"):
            raise UserError(f"unknown detector backend {backend!r}")
        if backend == "onnx" and self.device.type != "cpu":
            raise UserError(f"detector backend onnx runs on the CPU, not on {self.device}: use backend torch")
        # onnxruntime is the fast CPU path; on an accelerator the nets stay in torch, on the device
        auto_onnx = backend == "auto" and self.device.type == "cpu"
        if backend == "onnx" or (auto_onnx and importlib.util.find_spec("onnxruntime") is not None):
            self.sessions = self._onnx_sessions(folder)
        self.backend = "onnx" if self.sessions else "torch"
        # on a GPU the nets get a stream of their own: called from prediction's tracking thread,
        # their kernels then need not queue behind the model's on the default stream
        self._stream = torch.cuda.Stream(self.device) if self.device.type == "cuda" else None

    def _onnx_sessions(self, folder: Path) -> dict[str, object]:
        """The three nets on onnxruntime (one thread each: tiny nets, per-op overhead dominates in
        eager torch). Exported once per weight file into the mtaffect cache (:func:`cached_onnx`)."""
        import onnxruntime as ort

        from mtaffect.export import cached_onnx, torch_to_onnx
        from mtaffect.runtime import file_sha256

        options = ort.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        sessions = {}
        specs = {
            "pnet": (self.pnet, (1, 3, 24, 24), ["prob", "reg"], {0: "n", 2: "h", 3: "w"}),
            "rnet": (self.rnet, (2, 3, 24, 24), ["prob", "reg"], {0: "n"}),
            "onet": (self.onet, (2, 3, 48, 48), ["prob", "reg", "marks"], {0: "n"}),
        }
        for name, (net, shape, outputs, axes) in specs.items():
            # P-Net's face probability map is (n, h, w): the face channel of its softmax
            dynamic = {"x": axes} | {
                k: ({0: "n", 1: "h", 2: "w"} if name == "pnet" and k == "prob" else axes) for k in outputs
            }
            export = functools.partial(
                torch_to_onnx, net, torch.zeros(shape), input_names=["x"], output_names=outputs,
                dynamic_axes=dynamic,
            )  # fmt: skip
            digest = file_sha256(folder / f"{name}.pt")[:16]
            path = cached_onnx(f"mtcnn-{name}-{digest}.onnx", export)
            sessions[name] = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return sessions

    def _run(self, name: str, x: torch.Tensor) -> list[np.ndarray]:
        session = self.sessions.get(name)
        if session is not None:
            return session.run(None, {"x": x.numpy()})
        if self._stream is None:
            return [t.float().cpu().numpy() for t in getattr(self, name)(x.to(self.device))]
        with torch.cuda.stream(self._stream):  # .cpu() waits for this stream's work only
            return [t.float().cpu().numpy() for t in getattr(self, name)(x.to(self.device))]

    # -- stages
    def _pyramid(self, h: int, w: int) -> list[float]:
        scale = 12.0 / self.min_face
        side = min(h, w) * scale
        scales = []
        while side >= 12:
            scales.append(scale)
            scale *= self.factor
            side *= self.factor
        return scales

    def _pyramid_source(self, image: np.ndarray, scales: list[float]) -> np.ndarray:
        """Halve ``image`` (Gaussian pyrDown, cheap) while the first level stays a real downscale."""
        h, w = image.shape[:2]
        source = image
        if scales:
            while max(source.shape[:2]) >= 2 * max(math.ceil(h * scales[0]), math.ceil(w * scales[0])):
                source = cv2.pyrDown(source)
        return source

    def _level_candidates(self, prob: np.ndarray, reg: np.ndarray, scale: float) -> np.ndarray | None:
        """One pyramid level's P-Net maps ``prob (h, w)``, ``reg (4, h, w)`` → boxes ``(n, 5)`` or None."""
        ys, xs = np.nonzero(prob >= self.thresholds[0])
        if len(ys) == 0:
            return None
        # output cell (y, x) sees the 12×12 input window at (2x, 2y) of this level
        boxes = np.stack([2 * xs, 2 * ys, 2 * xs + 12, 2 * ys + 12], axis=1) / scale
        boxes = _calibrate(boxes, reg[:, ys, xs].T)
        cand = np.concatenate([boxes, prob[ys, xs, None]], axis=1)
        return cand[nms(cand[:, :4], cand[:, 4], 0.5)]

    @staticmethod
    def _merge_levels(found: list[np.ndarray]) -> np.ndarray:
        if not found:
            return np.zeros((0, 5))
        cand = np.concatenate(found)
        return cand[nms(cand[:, :4], cand[:, 4], 0.7)]

    def _propose(self, image: np.ndarray) -> np.ndarray:
        """P-Net over the pyramid → candidate boxes ``(n, 5)`` (x0, y0, x1, y1, score).

        The pyramid is built progressively (each level resized from the previous one, after
        Gaussian halvings of the image): about 5× cheaper than resizing the full frame per level.
        """
        h, w = image.shape[:2]
        found = []
        scales = self._pyramid(h, w)
        source = self._pyramid_source(image, scales)
        for scale in scales:
            sw, sh = math.ceil(w * scale), math.ceil(h * scale)
            # each level from the previous one: area averaging over a few pixels instead of many
            level = cv2.resize(source, (sw, sh), interpolation=cv2.INTER_AREA)
            source = level
            prob, reg = self._run("pnet", _to_input(level[None]))
            cand = self._level_candidates(prob[0], reg[0], scale)
            if cand is not None:
                found.append(cand)
        return self._merge_levels(found)

    def _refine(self, image: np.ndarray, boxes: np.ndarray) -> np.ndarray:
        prob, reg = self._run("rnet", _to_input(_crops(image, _square(boxes), 24)))
        return self._refined(boxes, prob, reg)

    def _refined(self, boxes: np.ndarray, prob: np.ndarray, reg: np.ndarray) -> np.ndarray:
        """R-Net's scores and offsets of the squared ``boxes`` → kept candidates ``(n, 5)``."""
        sq = _square(boxes)
        keep = prob >= self.thresholds[1]
        cand = np.concatenate([_calibrate(sq[keep], reg[keep]), prob[keep, None]], axis=1)
        return cand[nms(cand[:, :4], cand[:, 4], 0.7)]

    def _output(self, image: np.ndarray, boxes: np.ndarray, threshold: float) -> Detections:
        outputs = self._run("onet", _to_input(_crops(image, _square(boxes), 48)))
        return self._outputs(boxes, *outputs, threshold=threshold)

    def _outputs(
        self, boxes: np.ndarray, prob: np.ndarray, reg: np.ndarray, marks: np.ndarray, *, threshold: float
    ) -> Detections:
        """O-Net's scores, offsets and landmarks of the squared ``boxes`` → the final detections."""
        sq = _square(boxes)
        keep = prob >= threshold
        sq, reg, marks, prob = sq[keep], reg[keep], marks[keep], prob[keep]
        w, h = sq[:, 2:3] - sq[:, 0:1], sq[:, 3:4] - sq[:, 1:2]
        lm = np.stack([sq[:, 0:1] + marks[:, :5] * w, sq[:, 1:2] + marks[:, 5:] * h], axis=2)
        det = Detections(
            _calibrate(sq, reg).astype(np.float32), prob.astype(np.float32), lm.astype(np.float32)
        )
        return det.take(nms(det.boxes, det.scores, 0.7, mode="min"))

    def _downscale(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        longest = max(image.shape[:2])
        if longest <= self.max_size:
            return image, 1.0
        f = self.max_size / longest
        small = cv2.resize(
            image, (round(image.shape[1] * f), round(image.shape[0] * f)), interpolation=cv2.INTER_AREA
        )
        return small, 1.0 / f

    @torch.inference_mode()
    def detect(self, image: np.ndarray) -> Detections:
        """All faces of one RGB uint8 image, best score first."""
        small, back = self._downscale(_rgb(image))
        cand = self._propose(small)
        if len(cand):
            cand = self._refine(small, cand[:, :4])
        if not len(cand):
            return Detections.empty()
        return self._output(small, cand[:, :4], self.thresholds[2]).scaled(back)

    @torch.inference_mode()
    def redetect(self, image: np.ndarray, boxes: np.ndarray, threshold: float | None = None) -> Detections:
        """O-Net alone on the given boxes (a tracker's previous boxes): the cheap per-frame update.

        Returns one entry per box that O-Net still accepts; ``scores`` and order follow the kept
        boxes. Call ``detect`` to find new faces.
        """
        small, back = self._downscale(_rgb(image))
        boxes = np.asarray(boxes, np.float64).reshape(-1, 4) / back
        if not len(boxes):
            return Detections.empty()
        thr = self.thresholds[2] if threshold is None else threshold
        sq = _square(boxes)
        prob, reg, marks = self._run("onet", _to_input(_crops(small, sq, 48)))
        w, h = sq[:, 2:3] - sq[:, 0:1], sq[:, 3:4] - sq[:, 1:2]
        lm = np.stack([sq[:, 0:1] + marks[:, :5] * w, sq[:, 1:2] + marks[:, 5:] * h], axis=2)
        det = Detections(
            _calibrate(sq, reg).astype(np.float32), prob.astype(np.float32), lm.astype(np.float32)
        )
        det.scores = np.where(prob >= thr, det.scores, -1.0).astype(np.float32)  # -1 marks a lost face
        return det.scaled(back)


class HaarDetector:
    """OpenCV's frontal-face Haar cascade: a fallback with boxes only (no landmarks, no score).

    Needs ``opencv-python-headless<5`` (OpenCV 5 removed the cascades). Faces are aligned from the
    box alone (a centred square crop), which is coarser than landmark alignment.
    """

    def __init__(self, *, min_face: float = 40.0, max_size: int = 1280) -> None:
        data = getattr(getattr(cv2, "data", None), "haarcascades", None)
        if not data or not hasattr(cv2, "CascadeClassifier"):
            raise UserError(
                "this OpenCV has no Haar cascades (OpenCV >= 5); install opencv-python-headless<5"
            )
        self.cascade = cv2.CascadeClassifier(str(Path(data) / "haarcascade_frontalface_default.xml"))
        self.min_face, self.max_size = min_face, max_size
        self.has_landmarks = False

    def detect(self, image: np.ndarray) -> Detections:
        image = _rgb(image)
        f = min(1.0, self.max_size / max(image.shape[:2]))
        gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
        if f < 1.0:
            gray = cv2.resize(gray, None, fx=f, fy=f, interpolation=cv2.INTER_AREA)
        m = max(1, int(self.min_face * f))
        rects = self.cascade.detectMultiScale(gray, scaleFactor=1.1, minNeighbors=5, minSize=(m, m))
        if len(rects) == 0:
            return Detections.empty(with_landmarks=False)
        r = np.asarray(rects, np.float32)
        boxes = np.stack([r[:, 0], r[:, 1], r[:, 0] + r[:, 2], r[:, 1] + r[:, 3]], axis=1) / f
        area = (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])
        order = np.argsort(-area)
        return Detections(boxes[order], np.ones(len(boxes), np.float32), None)


def _rgb(image: np.ndarray) -> np.ndarray:
    """Accept gray (H, W), RGB or RGBA uint8 images; return RGB (H, W, 3)."""
    if image.ndim == 2:
        return cv2.cvtColor(image, cv2.COLOR_GRAY2RGB)
    if image.shape[2] == 4:
        return np.ascontiguousarray(image[:, :, :3])
    return image


def make_detector(
    name: str = "mtcnn",
    *,
    min_face: float = 40.0,
    max_size: int = 1280,
    backend: str = "auto",
    device: str | torch.device = "cpu",
) -> MTCNN | HaarDetector:
    """``"mtcnn"`` (default, landmarks) or ``"haar"`` (fallback, boxes only).

    backend: MTCNN's nets on ``"onnx"`` (onnxruntime), ``"torch"``, or ``"auto"`` (onnx if installed
    and ``device`` is the CPU). device: where MTCNN's torch nets run (a CUDA device: torch there).
    """
    if name == "mtcnn":
        return MTCNN(min_face=min_face, max_size=max_size, backend=backend, device=device)
    if name == "haar":
        return HaarDetector(min_face=min_face, max_size=max_size)
    raise UserError(f"unknown detector {name!r}: choose mtcnn or haar")
