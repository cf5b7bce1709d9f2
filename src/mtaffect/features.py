"""The GRU stages' feature cache: the frozen CNN student run once per frame and augmentation draw.

Layer: above :mod:`mtaffect.checkpoint`, below :mod:`mtaffect.evaluate` and :mod:`mtaffect.train`,
which both read it (the GRU stages train on it; evaluating a GRU checkpoint reuses or fills it).

The authors' GRU stage recomputes the frozen ResNet-50 on every frame of every window at every step,
for the GRU teacher and again for the GRU student (METHOD.md §1.3, PERFORMANCE.md §5). The GRU only
reads the two 128-d head embeddings (``Outputs.embeddings``), and the CNN is frozen in eval mode, so
those embeddings depend only on the frame and on the augmentation applied to it. We compute them
once for a fixed set of augmentation draws and store them on disk; both GRU stages read them.

Augmentation draws reproduce the authors' sequence-level augmentation (METHOD.md §4.4): the face is
resized to ``int(resize · size)`` (``resize``: the CNN's ``Preprocessing.eval_resize``, 1.2 × 112 =
134 by default), then a ``size`` crop is taken at a translation and optionally flipped. A
:class:`Draw` holds the translation as fractions of the largest offset (0.5, 0.5: the centre crop).
The default set is the centre crop (draw 0, used for validation and prediction) plus 2 flips × 4
translations along the diagonal (the authors draw one ``v`` per sequence and move the crop
diagonally by ``v``; we take v ∈ {1/8, 3/8, 5/8, 7/8}).

On disk (one folder per key)::

    <cache_root>/<key>/meta.json      key, checkpoint hash, draws, size, resize, frames, dim
                       frames.parquet one row per distinct face image (database, image, track, frame)
                       EXPR.f16       float16 memmap (n_draws, n_frames, 128)
                       VA.f16         float16 memmap (n_draws, n_frames, 128)
                       progress.json  chunks finished (written atomically after each chunk is flushed)

The key hashes the CNN weights, the draws, the geometry and the frame list, so a different checkpoint,
augmentation or index never reuses a stale cache. Frames are sorted by (database, track, frame) so
that a window of consecutive frames is one contiguous slice.

Throughput (PERFORMANCE.md §5b: JPEG decoding held a GPU to ≈ 1,300 frames/s): each face is read
once per chunk (decoded, or copied from a frame store: :mod:`mtaffect.data.faces.store`) in
``workers`` processes (:func:`ordered_chunks`, in order, pinned on CUDA); every draw is a warp of
that face, in the readers or on the device (``device_warps``, one host→device copy per face), while
the main process runs the CNN (bf16 autocast on CUDA) and writes the rows. The embeddings are the
single-process ones, bit for bit on CPU, whatever reads or warps: each forward sees the same crops.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mtaffect.data.prefetch import default_workers, ordered_chunks
from mtaffect.errors import UserError
from mtaffect.io import write_json, write_parquet
from mtaffect.labels import HEAD_TASKS
from mtaffect.models.preprocessing import EVAL_RESIZE
from mtaffect.runtime import autocast, inference, resolve_device, weights_sha256

__all__ = [
    "EVAL_DRAW",
    "Draw",
    "FeatureCache",
    "apply_draw",
    "default_draws",
    "draw_matrix",
    "ensure_feature_cache",
    "ensure_gru_features",
    "feature_cache_key",
    "frame_table",
    "parse_draws",
]

FORMAT = 1
EMBEDDING_DIM = 128
"""The paper's head embedding width; the cache takes the actual width from the CNN (``config.hidden``)."""


@dataclass(frozen=True)
class Draw:
    """One augmentation draw: horizontal flip and crop translation as fractions of the largest offset.

    ``x = y = 0.5`` is the centre crop of evaluation; ``x = 0`` the left edge, ``x = 1`` the right edge.
    """

    flip: bool = False
    x: float = 0.5
    y: float = 0.5

    def offsets(self, resized: int, size: int) -> tuple[int, int]:
        """Top-left corner (x0, y0) of the ``size`` crop inside a ``resized`` square."""
        span = resized - size
        return int(math.floor(span * self.x + 1e-9)), int(math.floor(span * self.y + 1e-9))


EVAL_DRAW = Draw(False, 0.5, 0.5)


def default_draws(
    translations: Sequence[float] = (0.125, 0.375, 0.625, 0.875), flips: bool = True
) -> list[Draw]:
    """Draw 0 = evaluation centre crop; then (no flip, flip) × diagonal translations ``v`` (x = y = v)."""
    draws = [EVAL_DRAW]
    for flip in (False, True) if flips else (False,):
        draws.extend(Draw(flip, float(v), float(v)) for v in translations)
    return draws


def parse_draws(spec: Sequence[Any] | None) -> list[Draw]:
    """Draws from a config value: None → :func:`default_draws`; else a list of dicts/tuples/Draws.

    The first draw must be the evaluation centre crop (it is the one validation reads).
    """
    if spec is None:
        return default_draws()
    draws = []
    for item in spec:
        if isinstance(item, Draw):
            draws.append(item)
        elif isinstance(item, dict):
            draws.append(
                Draw(bool(item.get("flip", False)), float(item.get("x", 0.5)), float(item.get("y", 0.5)))
            )
        else:
            flip, x, y = item
            draws.append(Draw(bool(flip), float(x), float(y)))
    if not draws or draws[0] != EVAL_DRAW:
        raise UserError(
            "feature cache draws: the first draw must be the centre crop {flip: false, x: 0.5, y: 0.5}"
        )
    for d in draws:
        if not (0.0 <= d.x <= 1.0 and 0.0 <= d.y <= 1.0):
            raise UserError(f"feature cache draw {d}: x and y are fractions of the largest offset, in [0, 1]")
    return draws


def draw_matrix(draw: Draw, in_size: int, size: int, resize_factor: float = EVAL_RESIZE) -> np.ndarray:
    """A draw's inverse affine map ``(2, 3)`` for ``in_size`` faces (``augment.crop_matrices``)."""
    from mtaffect.data.augment import crop_matrices, resized_side

    resized = resized_side(size, resize_factor)
    offsets = np.asarray([draw.offsets(resized, size)])
    return crop_matrices(in_size, size, resized, offsets, np.array([draw.flip]))[0]


def apply_draw(faces: np.ndarray, draw: Draw, size: int, resize_factor: float = EVAL_RESIZE) -> np.ndarray:
    """The training geometry of one draw on a batch of faces ``(n, S, S, 3)`` uint8 → ``(n, size, size, 3)``:
    resize to ``int(resize_factor · size)``, crop ``size`` at the draw's offset, flip if asked — one
    bilinear warp per image (:mod:`mtaffect.data.augment`, the same map as the CNN stages)."""
    from mtaffect.data.augment import warp_batch

    faces = np.asarray(faces)
    matrix = draw_matrix(draw, faces.shape[1], size, resize_factor)
    return warp_batch(faces, np.broadcast_to(matrix, (len(faces), 2, 3)), size)


def frame_table(index: pd.DataFrame) -> pd.DataFrame:
    """Distinct face images of ``index`` in (database, track, frame) order, with their index position.

    An image can appear once per split in the frame index; its embeddings are computed once.
    Column ``row`` is the position of its first occurrence in ``index``.
    """
    df = pd.DataFrame(
        {
            "row": np.arange(len(index), dtype=np.int64),
            "database": index["database"].astype("string").to_numpy(),
            "image": index["image"].astype("string").to_numpy(),
            "track": index["track"].astype("string").to_numpy(),
            "frame": index["frame"].astype("Int64").array if "frame" in index else pd.NA,
        }
    )
    df = df.drop_duplicates(["database", "image"], keep="first")
    df = df.sort_values(["database", "track", "frame", "image"], kind="stable", na_position="last")
    return df.reset_index(drop=True)


def feature_cache_key(
    cnn_hash: str, draws: Sequence[Draw], size: int, resized: int, frames: pd.DataFrame
) -> str:
    """Hash of everything the cached embeddings depend on (weights, draws, geometry, frame list)."""
    digest = hashlib.sha256()
    digest.update(
        json.dumps(
            {
                "format": FORMAT,
                "cnn": cnn_hash,
                "draws": [asdict(d) for d in draws],
                "size": size,
                "resized": resized,
            },
            sort_keys=True,
        ).encode()
    )
    for db, image in zip(frames["database"].to_numpy(), frames["image"].to_numpy()):
        digest.update(f"{db}\t{image}\n".encode())
    return digest.hexdigest()[:20]


class FeatureCache:
    """Read access to a finished cache folder.

    ``frames``: the frame table (see :func:`frame_table`); ``draws``: the augmentation draws;
    ``embeddings[task]``: float16 memmap ``(n_draws, n_frames, 128)`` for task "EXPR" and "VA".
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        meta_path = self.path / "meta.json"
        if not meta_path.exists():
            raise UserError(f"{self.path}: not a feature cache (no meta.json)")
        self.meta: dict[str, Any] = json.loads(meta_path.read_text())
        if not self.meta.get("complete"):
            raise UserError(
                f"{self.path}: feature cache is incomplete; rerun ensure_feature_cache to finish it"
            )
        self.draws = [Draw(**d) for d in self.meta["draws"]]
        self.frames = pd.read_parquet(self.path / "frames.parquet")
        shape = (len(self.draws), len(self.frames), self.meta["dim"])
        self.embeddings = {
            task: np.memmap(self.path / f"{task}.f16", dtype=np.float16, mode="r", shape=shape)
            for task in HEAD_TASKS
        }
        self._lookup: dict[tuple[str, str], int] | None = None

    def __len__(self) -> int:
        return len(self.frames)

    def positions(self, index: pd.DataFrame) -> np.ndarray:
        """Cache position of each row of ``index`` (matched on database + image); −1 where absent."""
        keys = pd.MultiIndex.from_arrays(
            [self.frames["database"].astype(str), self.frames["image"].astype(str)]
        )
        wanted = pd.MultiIndex.from_arrays([index["database"].astype(str), index["image"].astype(str)])
        return np.asarray(keys.get_indexer(wanted), dtype=np.int64)

    def gather(self, positions: np.ndarray, draws: np.ndarray | int = 0) -> dict[str, torch.Tensor]:
        """Embeddings of ``positions`` (any shape, −1 = padding → zeros) under ``draws`` (same leading
        shape broadcastable, or one int) as float32 tensors ``positions.shape + (128,)`` per task."""
        positions = np.asarray(positions)
        valid = positions >= 0
        safe = np.where(valid, positions, 0)
        draw_idx = (
            np.broadcast_to(np.asarray(draws), positions.shape)
            if np.ndim(draws)
            else np.full(positions.shape, int(draws))
        )
        out = {}
        for task, mm in self.embeddings.items():
            values = np.asarray(mm[draw_idx, safe], dtype=np.float32)
            values[~valid] = 0.0
            out[task] = torch.from_numpy(values)
        return out


class _DrawChunks:
    """Chunk ``chunks[i]`` of the frame list: ``(chunk, uint8 (n_draws, n, S, S, 3))`` warped under every
    draw, or with ``draws`` None the faces themselves ``(n, S, S, 3)`` (warped on the device).

    Each face is read (its JPEG decoded, or copied from a frame store) once for all the draws.
    """

    def __init__(self, reader: Any, rows: np.ndarray, chunks: list[int], batch_size: int,
                 draws: list[Draw] | None, size: int, resize: float) -> None:
        self.reader, self.rows, self.chunks, self.batch_size = reader, rows, chunks, batch_size
        self.draws, self.size, self.resize = draws, size, resize

    def __call__(self, i: int) -> tuple[int, torch.Tensor]:
        chunk = self.chunks[i]
        lo = chunk * self.batch_size
        faces = np.asarray(self.reader.read(self.rows[lo : lo + self.batch_size]))
        if self.draws is None:
            return chunk, torch.from_numpy(faces)
        crops = np.stack([apply_draw(faces, d, self.size, self.resize) for d in self.draws])
        return chunk, torch.from_numpy(crops)


def _progress_path(folder: Path) -> Path:
    return folder / "progress.json"


def _load_cnn(checkpoint: str | Path | torch.nn.Module, device: torch.device) -> tuple[torch.nn.Module, dict]:
    if isinstance(checkpoint, torch.nn.Module):
        return checkpoint, {}
    from mtaffect.checkpoint import load_checkpoint

    model, meta = load_checkpoint(checkpoint, device=str(device))
    if meta.get("kind", "cnn") != "cnn":
        raise UserError(
            f"{checkpoint}: the feature cache needs a CNN checkpoint, this one is {meta.get('kind')!r}"
        )
    return model, meta


def _preprocessing(meta: dict, size: int | None):
    """The checkpoint's input normalisation (mean/std, evaluation resize) and the crop size."""
    from dataclasses import replace

    from mtaffect.checkpoint import stored_preprocessing

    block = stored_preprocessing(meta)
    if size is not None and size != block.size:
        block = replace(block, size=size)
    return block, block.size


def ensure_feature_cache(
    checkpoint: str | Path | torch.nn.Module,
    index: pd.DataFrame,
    meta: dict,
    cache_root: str | Path,
    *,
    draws: Sequence[Any] | None = None,
    size: int | None = None,
    resize: float | None = None,
    batch_size: int = 256,
    device: str | torch.device = "auto",
    progress: bool = True,
    reader_factory: Callable[[pd.DataFrame], Any] | None = None,
    preprocessing_meta: dict | None = None,
    only_existing: bool = False,
    workers: int | None = None,
    device_warps: bool | None = None,
) -> FeatureCache | None:
    """Compute (or reuse, or finish) the embeddings of every face image of ``index`` → :class:`FeatureCache`.

    ``checkpoint``: the frozen CNN student (a checkpoint path, or a model already loaded, whose weights
    are hashed). ``index``/``meta``: the frame rows to cover and the index meta (face locations, for
    :class:`mtaffect.data.faces.FaceReader`). ``size``: crop size (default: the checkpoint's input size);
    faces are read at ``size`` and warped as the CNN stages do (resize ×``resize``, crop, flip;
    ``resize`` None: the checkpoint's, or ``preprocessing_meta``'s, ``eval_resize``).
    Resumable: finished chunks of ``batch_size`` frames are recorded after their memmap rows are
    flushed, so an interrupted run recomputes at most one chunk.
    ``only_existing``: return None instead of computing when no complete cache matches.
    ``reader_factory(index) -> reader`` with ``read(rows) -> uint8 (n, S, S, 3)`` (rows = positions in
    ``index``); by default ``FaceReader(index, meta, size)``.
    ``workers``: processes reading and warping chunks ahead of the CNN (None: :func:`default_workers`;
    0: in this process); the result does not depend on it.
    ``device_warps``: warp the draws on the model's device (:class:`mtaffect.data.augment.DeviceWarp`:
    the faces cross to the device once, not once per draw) instead of in the readers (None: on CUDA);
    bit-identical either way (OpenCV's fixed-point arithmetic, tested on CPU).
    """
    device = resolve_device(device)
    draws_list = parse_draws(draws)
    model, ckpt_meta = _load_cnn(checkpoint, device)
    if preprocessing_meta is not None:
        ckpt_meta = {**ckpt_meta, "preprocessing": preprocessing_meta}
    prep, size = _preprocessing(ckpt_meta, size)
    resize = prep.eval_resize if resize is None else resize
    from mtaffect.data.augment import DeviceWarp, resized_side

    resized = resized_side(size, resize)
    frames = frame_table(index)
    if len(frames) == 0:
        raise UserError("feature cache: the index selection holds no frames")
    key = feature_cache_key(weights_sha256(model), draws_list, size, resized, frames)
    folder = Path(cache_root) / key
    dim = int(getattr(getattr(model, "config", None), "hidden", EMBEDDING_DIM))
    shape = (len(draws_list), len(frames), dim)
    meta_path = folder / "meta.json"
    if meta_path.exists() and json.loads(meta_path.read_text()).get("complete"):
        return FeatureCache(folder)
    if only_existing:
        return None

    folder.mkdir(parents=True, exist_ok=True)
    write_parquet(frames, folder / "frames.parquet", index=False)
    cache_meta = {
        "format": FORMAT,
        "key": key,
        "checkpoint": None if isinstance(checkpoint, torch.nn.Module) else str(checkpoint),
        "draws": [asdict(d) for d in draws_list],
        "size": size,
        "resized": resized,
        "n_frames": len(frames),
        "dim": dim,
        "chunk": batch_size,
        "complete": False,
    }
    write_json(meta_path, cache_meta)
    memmaps = {}
    fresh = False
    for task in HEAD_TASKS:
        path = folder / f"{task}.f16"
        mode = "r+" if path.exists() and path.stat().st_size == np.prod(shape) * 2 else "w+"
        fresh = fresh or mode == "w+"
        memmaps[task] = np.memmap(path, dtype=np.float16, mode=mode, shape=shape)
    progress_file = _progress_path(folder)
    done: set[int] = set()
    if progress_file.exists() and not fresh:
        recorded = json.loads(progress_file.read_text())
        if recorded.get("chunk") == batch_size:
            done = set(recorded["done"])

    if reader_factory is None:
        from mtaffect.data.faces import FaceReader

        reader = FaceReader(index, meta, size)
    else:
        reader = reader_factory(index)
    n_chunks = math.ceil(len(frames) / batch_size)
    rows = frames["row"].to_numpy()
    model.to(device)
    use_cl = device.type in ("cpu", "cuda")  # channels_last: ×1.5 on these CPUs too (PERFORMANCE.md §2)
    if use_cl:
        model.to(memory_format=torch.channels_last)

    embed = getattr(model, "embed", None)
    todo = [c for c in range(n_chunks) if c not in done]
    bar = _bar(total=len(todo) * batch_size, desc=f"feature cache {key[:8]}", enabled=progress)
    workers = default_workers(device) if workers is None else workers
    device_warps = device.type == "cuda" if device_warps is None else bool(device_warps)
    warps = [DeviceWarp(partial(draw_matrix, d, size=size, resize_factor=resize), size, device)
             for d in draws_list] if device_warps else None
    chunks = ordered_chunks(
        _DrawChunks(reader, rows, todo, batch_size, None if device_warps else draws_list, size, resize),
        len(todo),
        workers=workers,
        pin_memory=device.type == "cuda",
    )
    with inference(model), torch.inference_mode():  # eval mode, the caller's mode given back after
        for chunk, crops in chunks:  # uint8 (n_draws, n, S, S, 3), or faces (n, S, S, 3): one read per face
            lo, hi = chunk * batch_size, min(len(frames), (chunk + 1) * batch_size)
            per_task: dict[str, list[torch.Tensor]] = {task: [] for task in HEAD_TASKS}
            if warps is not None:
                faces = crops.to(device, non_blocking=True)
            for d in range(len(draws_list)):  # one forward per draw: the single-process batches
                crop = crops[d] if warps is None else warps[d](faces)
                x = prep.apply(crop, device=device, channels_last=use_cl)
                with autocast(device):
                    embeddings = embed(x) if embed is not None else model(x).embeddings
                if embeddings is None:
                    raise UserError("feature cache: the CNN does not return head embeddings")
                for task in HEAD_TASKS:
                    per_task[task].append(embeddings[task].float())
            for task in HEAD_TASKS:  # one device → host copy per task and chunk
                memmaps[task][:, lo:hi] = torch.stack(per_task[task]).cpu().numpy().astype(np.float16)
            for mm in memmaps.values():
                mm.flush()
            done.add(chunk)
            write_json(progress_file, {"chunk": batch_size, "done": sorted(done)})
            bar.update(hi - lo)
    bar.close()
    del memmaps
    cache_meta["complete"] = True
    write_json(meta_path, cache_meta)
    return FeatureCache(folder)


def _bar(total: int, desc: str, enabled: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit="frame", disable=not enabled, dynamic_ncols=True, leave=False)


def ensure_gru_features(
    index: pd.DataFrame,
    meta: dict,
    cnn_checkpoint: str | Path | torch.nn.Module,
    sequences: Any,
    cache_root: str | Path,
    *,
    size: int | None = None,
    resize: float | None = None,
    device: str | torch.device = "auto",
    progress: bool = True,
    reader_factory: Callable[[pd.DataFrame], Any] | None = None,
    only_existing: bool = False,
    preprocessing_meta: dict | None = None,
    workers: int | None = None,
    device_warps: bool | None = None,
) -> FeatureCache | None:
    """The GRU stages' cache: every frame they read (train and validation, see
    :func:`mtaffect.data.sequences.gru_frames`) under the draws of ``sequences``
    (:class:`mtaffect.data.sequences.SequenceConfig` or its dict). Called by both GRU stages and by
    ``mtaffect evaluate`` with the same arguments, so all three share one cache folder."""
    from mtaffect.data.sequences import SequenceConfig, gru_frames

    if not isinstance(sequences, SequenceConfig):
        sequences = SequenceConfig(**dict(sequences or {}))
    return ensure_feature_cache(
        cnn_checkpoint,
        gru_frames(index, sequences),
        meta,
        cache_root,
        draws=default_draws(sequences.translations, sequences.flips),
        size=size,
        resize=resize,
        batch_size=sequences.cache_batch,
        device=device,
        progress=progress,
        reader_factory=reader_factory,
        only_existing=only_existing,
        preprocessing_meta=preprocessing_meta,
        workers=workers,
        device_warps=device_warps,
    )
