"""The Python API: ``Predictor.from_checkpoint(path)`` → per-frame DataFrames for videos, images, crops.

>>> p = Predictor.from_checkpoint("gru_student.safetensors")      # doctest: +SKIP
>>> df = p.predict_video("interview.mp4")                          # doctest: +SKIP
>>> df.groupby("track_id")[["valence", "arousal"]].mean()          # doctest: +SKIP

Videos stream: decoding runs in a background thread, faces are detected every ``detect_every``
frames and tracked in between, crops go through the model in batches, a GRU checkpoint keeps
per track only the embeddings its windows still need, and :meth:`Predictor.iter_video` yields the
finished rows in frame order as soon as they are final. Memory does not grow with the video.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator, Sequence
from dataclasses import asdict
from pathlib import Path

import cv2
import numpy as np
import pandas as pd

from mtaffect.data.augment import eval_batch, eval_matrix
from mtaffect.errors import InputFormatError
from mtaffect.predict.align import align_faces, crop_convention
from mtaffect.predict.detect import make_detector
from mtaffect.predict.media import read_image
from mtaffect.predict.runtime import FaceModel
from mtaffect.predict.tables import empty_table, make_table
from mtaffect.predict.temporal import predict_track
from mtaffect.predict.video import VideoRun, run_video

__all__ = ["Predictor", "PartialVideoWarning"]


class PartialVideoWarning(UserWarning):
    """``predict_video`` returned the rows of a video that could not be decoded to its end."""


class Predictor:
    """Faces → aligned crops → a checkpoint's predictions, as tables (see ``tables.COLUMNS``).

    detector: ``"mtcnn"`` (default), ``"haar"`` or an object with ``detect(image) -> Detections``.
    detect_every: run the full detector every N video frames; track in between.
    refresh_every: between detections, update the tracked boxes on every k-th frame (1 = every frame).
    template, crop_scale: the alignment (default: the checkpoint's crop convention).
    eval_resize: the training evaluation zoom (resize ×f then centre crop; default: the checkpoint's
        ``Preprocessing.eval_resize``); 1.0 disables it.
    window, stride: GRU windows (32 frames, overlapping by ``window − stride``).
    overlap: track faces (decode, detector, tracker, alignment) in a thread of their own while the
        model runs (default True; the rows are the same either way, see ``predict.video``).
    detector_device: where MTCNN's nets run (default: the model's device when it is an accelerator,
        in torch there; else the CPU, onnxruntime when installed).
    detect_batch: scheduled full detections computed together, ahead (``predict.detect_batch``);
        default 4 when MTCNN runs on an accelerator, 1 (one frame at a time) on the CPU.
    """

    def __init__(
        self,
        model: FaceModel,
        *,
        detector: object = "mtcnn",
        detect_every: int = 5,
        refresh_every: int = 1,
        min_face: float = 40.0,
        max_size: int = 1280,
        batch_size: int = 16,
        template: str | None = None,
        crop_scale: float | None = None,
        eval_resize: float | None = None,
        window: int = 32,
        stride: int = 16,
        smooth: float = 0.0,
        max_faces: int | None = None,
        overlap: bool = True,
        detector_device: str | None = None,
        detect_batch: int | None = None,
    ) -> None:
        self.model = model
        self._detector_spec = detector
        device = getattr(model, "device", None)
        if detector_device is None:
            on_accelerator = device is not None and getattr(device, "type", "cpu") != "cpu"
            detector_device = str(device) if on_accelerator else "cpu"
        self._detector_args: dict = {"min_face": min_face, "max_size": max_size}
        if detector == "mtcnn":
            self._detector_args["device"] = detector_device
        self._detector = None if isinstance(detector, str) else detector
        self.overlap = overlap
        if detect_batch is None:
            detect_batch = 4 if detector == "mtcnn" and detector_device != "cpu" else 1
        if detect_batch < 1:
            raise ValueError("detect_batch must be >= 1")
        self.detect_batch = detect_batch
        self.detect_every, self.batch_size = detect_every, batch_size
        self.refresh_every = refresh_every
        self.window, self.stride, self.smooth, self.max_faces = window, stride, smooth, max_faces
        ckpt_template, ckpt_scale = crop_convention(model.preprocessing.crop)
        self.template = template or ckpt_template
        self.crop_scale = crop_scale if crop_scale is not None else ckpt_scale
        self.eval_resize = model.preprocessing.eval_resize if eval_resize is None else float(eval_resize)
        # the evaluation transform's one map (data.augment), composed into the alignment warp
        zoom = self.eval_resize != 1.0
        self._post = eval_matrix(model.size, model.size, self.eval_resize) if zoom else None

    @classmethod
    def from_checkpoint(
        cls,
        path: str | Path,
        *,
        backend: str = "auto",
        device: str = "cpu",
        threads: int | None = None,
        cnn: str | Path | None = None,
        **options,
    ) -> Predictor:
        """Load a ``cnn``, ``cnn_gru`` or GRU-only checkpoint (a GRU finds its CNN through its training
        config, ``cnn`` overrides: :func:`mtaffect.checkpoint.find_cnn_checkpoint`); ``options`` are
        the constructor's keywords."""
        face_model = FaceModel.from_checkpoint(path, cnn=cnn, backend=backend, device=device, threads=threads)
        return cls(face_model, **options)

    @property
    def detector(self):
        if self._detector is None:
            self._detector = make_detector(str(self._detector_spec), **self._detector_args)
        return self._detector

    @property
    def temporal(self) -> bool:
        return self.model.gru is not None

    def crops(self, image: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray | None) -> np.ndarray:
        """The model-input crops of faces in ``image`` (alignment + evaluation zoom), uint8 NHWC."""
        return align_faces(
            image,
            boxes,
            landmarks,
            size=self.model.size,
            template=self.template,
            scale=self.crop_scale,
            post=self._post,
        )

    # ------------------------------------------------------------------ videos
    def predict_video(self, path: str | Path, **kwargs) -> pd.DataFrame:
        """Every decoded frame of a video as rows (one per face, one no-face row otherwise).

        ``df.attrs["report"]`` holds the video's :class:`~mtaffect.predict.video.RunReport` as a
        dict. A video that could not be decoded to its end (truncated, damaged) returns the rows of
        the frames decoded before the failure and warns with :class:`PartialVideoWarning`.
        """
        run = self.iter_video(path, **kwargs)
        parts = list(run)
        df = pd.concat(parts, ignore_index=True) if parts else empty_table()
        df.attrs["report"] = asdict(run.report)
        if run.report.error:
            warnings.warn(f"{path}: partial result: {run.report.error}", PartialVideoWarning, stacklevel=2)
        return df

    def iter_video(
        self, path: str | Path, *, debug_crops: str | Path | None = None, progress: bool = False
    ) -> VideoRun:
        """Stream the rows of a video in (frame, track_id) order, in chunks, as they become final.

        Returns a :class:`~mtaffect.predict.video.VideoRun`: iterate it for the chunks; its
        ``report`` is complete once they have all been read. A decoding failure (truncated file)
        ends the stream early after yielding every row of the frames decoded before it;
        ``report.error`` says what happened.
        """
        return run_video(self, path, debug_crops=debug_crops, progress=progress)

    # ------------------------------------------------------------------ images
    def predict_images(
        self, paths: Sequence[str | Path], *, errors: list[tuple[str, str]] | None = None
    ) -> pd.DataFrame:
        """Rows for still images (``frame`` 0, ``time`` NA, ``track_id`` = face rank by detector score).

        An image that cannot be read is listed in ``errors`` (path, message) and skipped; an image
        without a face gives one ``face_found=False`` row. Temporal checkpoints use their CNN here.
        """
        parts = []
        for path in paths:
            try:
                image = read_image(path)
            except InputFormatError as err:
                if errors is None:
                    raise
                errors.append((str(path), str(err)))
                continue
            det = self.detector.detect(image)
            if not len(det):
                parts.append(make_table(input=str(path), frame=np.zeros(1), time=np.full(1, np.nan)))
                continue
            crops = self.crops(image, det.boxes, det.landmarks)
            dec = self.model.decode(self.model.frames(crops))
            n = len(det)
            parts.append(
                make_table(
                    input=str(path),
                    frame=np.zeros(n),
                    time=np.full(n, np.nan),
                    track_id=np.arange(n),
                    boxes=det.boxes,
                    det_score=det.scores,
                    probabilities=dec["probabilities"],
                    valence=dec["valence"],
                    arousal=dec["arousal"],
                )
            )
        return pd.concat(parts, ignore_index=True) if parts else empty_table()

    # ------------------------------------------------------------------ crops
    def predict_crops(
        self,
        crops: np.ndarray,
        *,
        frames: np.ndarray | None = None,
        input: str = "crops",
        temporal: bool | None = None,
        chunk: int = 256,
    ) -> pd.DataFrame:
        """Rows for already aligned face crops ``(n, H, W, 3)`` uint8 RGB (e.g. ``cropped_aligned``).

        The crops are one track in frame order; ``frames`` their frame numbers (default 0..n−1; a
        missing number is a gap no GRU window spans). The training evaluation transform is applied.
        ``temporal`` (default: whether the checkpoint has a GRU) runs the GRU over the sequence.
        """
        crops = np.asarray(crops)
        if crops.ndim != 4 or crops.shape[-1] != 3 or crops.dtype != np.uint8:
            raise ValueError(f"crops must be uint8 (n, H, W, 3) RGB, got {crops.dtype} {crops.shape}")
        return self._predict_crop_chunks(
            (crops[i : i + chunk] for i in range(0, len(crops), chunk)),
            len(crops),
            frames=frames,
            input=input,
            temporal=temporal,
        )

    def predict_crop_folder(self, folder: str | Path, *, temporal: bool | None = None) -> pd.DataFrame:
        """An Aff-Wild2 ``cropped_aligned/<track>`` folder (``NNNNN.jpg``, 1-based) as one track.

        Rows carry ``frame`` = image number − 1 (the 0-based video frame). Files whose stem is not a
        number are ignored; an unreadable image is skipped (a gap, like a frame without a face) and
        listed in ``df.attrs["skipped"]`` as ``(path, message)`` pairs (empty when none was).
        """
        folder = Path(folder)
        files = sorted(
            (p for p in folder.iterdir() if p.is_file() and p.stem.isdigit()), key=lambda p: int(p.stem)
        )
        if not files:
            raise InputFormatError(folder, "no NNNNN.jpg face images in this folder")
        size = self.model.size
        skipped: list[tuple[str, str]] = []
        good: list[int] = []

        def chunks() -> Iterator[np.ndarray]:
            for i in range(0, len(files), 256):
                batch = []
                for p in files[i : i + 256]:
                    try:
                        img = read_image(p)
                    except InputFormatError as err:
                        skipped.append((str(p), str(err)))
                        continue
                    if img.shape[:2] != (size, size):
                        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_AREA)
                    batch.append(img)
                    good.append(int(p.stem) - 1)
                if batch:
                    yield np.stack(batch)

        logits = self._cnn_chunks(chunks())
        df = self._crop_table(logits, np.array(good, np.int64), input=str(folder), temporal=temporal)
        df.attrs["skipped"] = skipped
        return df

    def _predict_crop_chunks(self, chunks, n, *, frames, input, temporal) -> pd.DataFrame:
        frames = np.arange(n) if frames is None else np.asarray(frames, np.int64)
        return self._crop_table(self._cnn_chunks(chunks), frames, input=input, temporal=temporal)

    def _cnn_chunks(self, chunks) -> list[dict[str, np.ndarray]]:
        """CNN outputs of chunks of crops, after the evaluation transform."""
        size = self.model.size
        logits: list[dict[str, np.ndarray]] = []
        for part in chunks:
            if part.shape[1:3] != (size, size):
                part = np.stack([cv2.resize(c, (size, size), interpolation=cv2.INTER_AREA) for c in part])
            if self._post is not None:  # the evaluation transform, as mtaffect.evaluate applies it
                part = eval_batch(part, size, resize_factor=self.eval_resize)
            logits.append(self.model.frames(part))
        return logits

    def _crop_table(self, logits, frames: np.ndarray, *, input: str, temporal: bool | None) -> pd.DataFrame:
        temporal = self.temporal if temporal is None else temporal
        if temporal and not self.temporal:
            raise ValueError("temporal=True needs a checkpoint with a GRU")
        n = len(frames)
        if n == 0:
            return empty_table()
        out = {k: np.concatenate([lg[k] for lg in logits]) for k in logits[0]}
        if temporal:
            vals = predict_track(
                self.model,
                out["emb_expr"],
                out["emb_va"],
                frames=frames,
                length=self.window,
                stride=self.stride,
            )
            probs, val, aro = vals[:, :7], vals[:, 7], vals[:, 8]
        else:
            dec = self.model.decode(out)
            probs, val, aro = dec["probabilities"], dec["valence"], dec["arousal"]
        return make_table(
            input=input,
            frame=frames,
            time=np.full(n, np.nan),
            track_id=np.zeros(n, np.int64),
            boxes=np.full((n, 4), np.nan),
            det_score=np.full(n, np.nan),
            probabilities=probs,
            valence=val,
            arousal=aro,
            face_source=None,
        )
