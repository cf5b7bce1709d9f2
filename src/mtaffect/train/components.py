"""Builders that turn a :class:`mtaffect.config.Config` into the pieces :func:`mtaffect.train.loop.fit` runs.

Kept apart from the stage table so that each piece can be built (and tested) on its own:
models (with optional initialisation from a checkpoint), the CNN frame data, the GRU window data,
and the device-side preparation of batches.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mtaffect.config import Config, component
from mtaffect.data.loading import Batch, FrameTaskData, ImagePreparer, LabelArrays, TaskSource
from mtaffect.errors import UserError

__all__ = [
    "build_cnn",
    "build_gru",
    "init_weights",
    "load_teacher",
    "cnn_preprocessing",
    "build_frame_data",
    "WindowTaskData",
    "move_embeddings",
]


def build_cnn(config: Config) -> nn.Module:
    """A fresh :class:`mtaffect.models.cnn.MultitaskCNN` from ``model.cnn`` (+ ``model.init_from``)."""
    from mtaffect.models.cnn import CNNConfig, MultitaskCNN

    model = MultitaskCNN(component(CNNConfig, config.model.cnn, "model.cnn"))
    if config.model.init_from:
        init_weights(model, config.model.init_from)
    return model


def build_gru(config: Config) -> nn.Module:
    """A fresh :class:`mtaffect.models.gru.TemporalModel` from ``model.gru`` (+ ``model.init_from``)."""
    from mtaffect.models.gru import GRUConfig, TemporalModel

    model = TemporalModel(component(GRUConfig, config.model.gru, "model.gru"))
    if config.model.init_from:
        init_weights(model, config.model.init_from)
    return model


def init_weights(model: nn.Module, path: str | Path) -> tuple[int, int]:
    """Copy every tensor of checkpoint ``path`` whose name and shape match ``model`` (e.g. a converted
    FER+ backbone into a fresh multitask CNN, heads left random). Returns (copied, model tensors)."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_file():
        raise UserError(f"model.init_from: {path} not found")
    found = load_file(str(path))
    own = model.state_dict()
    matched = {k: v for k, v in found.items() if k in own and tuple(own[k].shape) == tuple(v.shape)}
    if not matched:
        raise UserError(f"model.init_from: no tensor of {path} matches the model (wrong backbone layout?)")
    model.load_state_dict(matched, strict=False)
    return len(matched), len(own)


def load_teacher(path: str, kind: str, device: torch.device) -> nn.Module:
    """The frozen teacher of a student stage, in eval mode on ``device``."""
    from mtaffect.checkpoint import load_checkpoint

    if not path:
        raise UserError("student stages need stage.teacher=<teacher checkpoint>")
    teacher, meta = load_checkpoint(path, device=device)
    if meta.get("kind") != kind:
        raise UserError(f"stage.teacher: {path} holds a {meta.get('kind')!r} model, needs {kind!r}")
    return teacher


def cnn_preprocessing(config: Config) -> Any:
    """The input normalisation of the CNN's weights, at ``data.image_size``."""
    from mtaffect.models.preprocessing import Preprocessing, default_preprocessing

    backbone = config.model.cnn.get("backbone", "resnet50_caffe")
    prep = default_preprocessing(backbone, config.data.image_size)
    if config.model.init_from:
        from mtaffect.checkpoint import read_metadata

        try:
            block = read_metadata(config.model.init_from).get("preprocessing") or {}
        except UserError:
            block = {}
        if block:
            prep = Preprocessing.from_dict({**block, "size": config.data.image_size})
    return prep


def read_index(config: Config) -> tuple[pd.DataFrame, dict]:
    from mtaffect.data.index import read_index as _read

    if not config.data.index:
        raise UserError("data.index is not set: pass data.index=<frame index .parquet>")
    return _read(config.data.index)


def build_frame_data(
    config: Config,
    index: pd.DataFrame,
    meta: dict,
    *,
    rank: int = 0,
    world: int = 1,
    pin_memory: bool = False,
) -> tuple[FrameTaskData, pd.DataFrame]:
    """The CNN stages' per-task-set training data and the validation frames (Aff-Wild2 validation)."""
    from mtaffect.data.faces import FaceReader
    from mtaffect.data.tasks import TaskSetConfig, build_task_sets, sampling_weights

    task_sets = build_task_sets(index, component(TaskSetConfig, config.data.task_sets, "data.task_sets"))
    wanted = list(config.data.use_task_sets)
    missing = [t for t in wanted if t not in task_sets.train or len(task_sets.train[t]) == 0]
    if missing:
        raise UserError(f"data.use_task_sets: no training frames for {missing} in {config.data.index}")
    sources = {}
    for name in wanted:
        df = task_sets.train[name].reset_index(drop=True)
        sources[name] = TaskSource(
            reader=FaceReader(df, meta, config.data.image_size),
            labels=LabelArrays.from_frame(df),
            weights=np.asarray(sampling_weights(name, df), dtype=np.float64),
        )
    data = FrameTaskData(
        sources,
        batch_per_task=config.train.batch_per_task,
        size=config.data.image_size,
        resize_factor=config.data.resize_factor,
        seed=config.train.seed,
        rank=rank,
        world=world,
        workers=config.train.workers,
        max_steps=config.train.max_steps_per_epoch,
        pin_memory=pin_memory,
    )
    return data, task_sets.validation


def image_preparer(config: Config, device: torch.device) -> ImagePreparer:
    return ImagePreparer(cnn_preprocessing(config), channels_last=config.train.channels_last)


def move_embeddings(batch: Batch, device: torch.device) -> Batch:
    """GRU batches: embedding dicts and targets to ``device``."""
    non_blocking = device.type == "cuda"
    return {
        name: ({k: v.to(device, non_blocking=non_blocking) for k, v in inputs.items()},
               targets.to(device, non_blocking=non_blocking))
        for name, (inputs, targets) in batch.items()
    }


class WindowTaskData:
    """The GRU stages' training data: F2's per-task-set window loaders over the feature cache,
    one batch per task set per step, the epoch ending with the shortest loader. Under DDP rank r of
    W takes steps r, r + W, ... so ranks see disjoint windows."""

    def __init__(
        self, loaders: Mapping[str, Any], *, rank: int = 0, world: int = 1, max_steps: int = 0
    ) -> None:
        self.loaders = dict(loaders)
        self.rank, self.world, self.max_steps = rank, world, max_steps

    def steps_per_epoch(self) -> int:
        steps = min(len(loader) for loader in self.loaders.values()) // self.world
        return min(steps, self.max_steps) if self.max_steps else steps

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        from mtaffect.data.sequences import iterate_steps

        limit = self.steps_per_epoch()
        mine = 0
        for step, batch in enumerate(iterate_steps(self.loaders, epoch)):
            if step % self.world != self.rank:
                continue
            if mine >= limit:
                return
            if mine >= start_step:
                yield batch
            mine += 1


def frame_validator(
    frames: pd.DataFrame, meta: dict, config: Config, device: torch.device, *, batch_size: int = 256
):  # noqa: ANN201 - returns a closure
    """``model -> metrics`` on every validation frame, eval transform (resize ×1.2 + centre crop).

    Metrics: ``expr_score`` (0.67·F1 + 0.33·accuracy) on the expression-labelled frames,
    ``ccc_valence``/``ccc_arousal`` on the VA-labelled frames, and ``abaw_sum`` (their sum, the
    checkpoint-selection score). The face crops are read and transformed once, then kept in memory
    as uint8 (37.6 KB per 112² frame).
    """
    from mtaffect.data.augment import eval_batch
    from mtaffect.data.faces import FaceReader

    if len(frames) == 0:
        raise UserError(f"{config.data.index}: no validation frames to select the checkpoint on")
    frames = frames.reset_index(drop=True)
    labels = LabelArrays.from_frame(frames)
    size, factor = config.data.image_size, config.data.resize_factor
    reader = FaceReader(frames, meta, size)
    crops = np.empty((len(frames), size, size, 3), dtype=np.uint8)
    for lo in range(0, len(frames), batch_size):
        rows = np.arange(lo, min(lo + batch_size, len(frames)))
        eval_batch(np.asarray(reader.read(rows)), size, resize_factor=factor, out=crops[lo : lo + len(rows)])
    prepare = image_preparer(config, device)
    return _FrameValidator(crops, labels, prepare, device, batch_size)


class _FrameValidator:
    """Eval-transformed validation crops (uint8, in memory) and their labels; call with a model."""

    def __init__(self, crops: np.ndarray, labels: LabelArrays, prepare: ImagePreparer, device: torch.device,
                 batch_size: int) -> None:
        self.crops, self.labels, self.prepare = crops, labels, prepare
        self.device, self.batch_size = device, batch_size

    @torch.no_grad()
    def __call__(self, model: nn.Module) -> dict[str, float]:
        from mtaffect.models.outputs import decode_va

        was_training = model.training
        model.eval()
        classes, val, aro = [], [], []
        try:
            for lo in range(0, len(self.crops), self.batch_size):
                images = torch.from_numpy(self.crops[lo : lo + self.batch_size])
                x = self.prepare.preprocessing.apply(images.to(self.device),
                                                     channels_last=self.prepare.channels_last)
                out = model(x)
                classes.append(out.expression.float().argmax(-1).cpu().numpy())
                val.append(decode_va(out.valence.float()).cpu().numpy())
                aro.append(decode_va(out.arousal.float()).cpu().numpy())
        finally:
            model.train(was_training)
        return score_frames(self.labels, np.concatenate(classes), np.concatenate(val), np.concatenate(aro))


def score_frames(labels: LabelArrays, expression: np.ndarray, valence: np.ndarray, arousal: np.ndarray
                 ) -> dict[str, float]:
    """ABAW validation metrics of per-frame predictions against ``labels`` (missing labels skipped)."""
    from mtaffect import metrics as M

    out: dict[str, float] = {}
    has_expr = labels.expression >= 0
    has_va = np.isfinite(labels.valence) & np.isfinite(labels.arousal)
    total = 0.0
    if has_expr.any():
        expr = M.expr_score(labels.expression[has_expr], expression[has_expr])
        out.update({"expr_score": expr["score"], "expr_f1": expr["f1"], "expr_accuracy": expr["accuracy"]})
        total += expr["score"]
    if has_va.any():
        out["ccc_valence"] = M.ccc(labels.valence[has_va], valence[has_va])
        out["ccc_arousal"] = M.ccc(labels.arousal[has_va], arousal[has_va])
        total += out["ccc_valence"] + out["ccc_arousal"]
    out["abaw_sum"] = total
    return out
