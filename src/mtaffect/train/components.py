"""Builders that turn a :class:`mtaffect.config.Config` into the pieces :func:`mtaffect.train.loop.fit` runs.

Kept apart from the stage table so that each piece can be built (and tested) on its own:
models (with optional initialisation from a checkpoint), the teacher of a student stage, the CNN
frame data and the device-side preparation of its batches. The GRU window data and both validators
come from :mod:`mtaffect.data.sequences` and :mod:`mtaffect.evaluate`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mtaffect.config import Config, component
from mtaffect.data.loading import FrameTaskData, ImagePreparer, LabelArrays, TaskSource
from mtaffect.errors import UserError

__all__ = [
    "build_cnn",
    "build_optimizer",
    "build_gru",
    "init_weights",
    "load_teacher",
    "cnn_preprocessing",
    "gru_preprocessing",
    "build_frame_data",
    "image_preparer",
    "read_index",
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


def build_optimizer(config: Config, model: nn.Module, device: torch.device | str) -> torch.optim.Optimizer:
    """Adam over ``model``'s trainable parameters with ``optim.*`` (METHOD.md §5); fused on CUDA."""
    from mtaffect.train.compiled import adam

    return adam(
        [p for p in model.parameters() if p.requires_grad],
        lr=config.optim.lr,
        betas=tuple(config.optim.betas),
        weight_decay=config.optim.weight_decay,
        device=device,
    )


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
    """The input normalisation of the CNN's weights, at ``data.image_size``, with this training's
    evaluation resize (``data.resize_factor``): what the CNN stages validate with and write into
    their checkpoints."""
    from dataclasses import replace

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
    return replace(prep, eval_resize=config.data.resize_factor)


def gru_preprocessing(config: Config) -> Any:
    """What a GRU stage's checkpoints say about feeding them: the preprocessing of their CNN
    (``model.cnn_checkpoint``) with this stage's ``data.resize_factor``, the evaluation resize of the
    feature cache's centre draw that the GRU is trained and validated on."""
    from dataclasses import replace

    from mtaffect.checkpoint import read_metadata, stored_preprocessing

    cnn = stored_preprocessing(read_metadata(config.model.cnn_checkpoint))
    return replace(cnn, eval_resize=config.data.resize_factor)


def read_index(config: Config) -> tuple[pd.DataFrame, dict]:
    from mtaffect.data.index import read_index as _read

    if not config.data.index:
        raise UserError("data.index is not set: pass data.index=<frame index .parquet>")
    return _read(config.data.index)


def readable_frames(df: pd.DataFrame, meta: dict, size: int) -> tuple[pd.DataFrame, Any, dict[str, int]]:
    """Rows of ``df`` whose face is known to be readable, their :class:`FaceReader`, and the skipped
    rows counted by reason (the face cache records crops it could not produce; they are never
    replaced by another face)."""
    from mtaffect.data.faces import FaceReader

    df = df.reset_index(drop=True)
    reader = FaceReader(df, meta, size)
    valid = np.asarray(reader.valid, dtype=bool)
    if valid.all():
        return df, reader, {}
    reasons = pd.Series(np.asarray(reader.reason, dtype=object)[~valid]).value_counts()
    df = df[valid].reset_index(drop=True)
    return df, FaceReader(df, meta, size), {str(k): int(v) for k, v in reasons.items()}


def build_frame_data(
    config: Config,
    index: pd.DataFrame,
    meta: dict,
    *,
    rank: int = 0,
    world: int = 1,
    pin_memory: bool = False,
) -> tuple[FrameTaskData, pd.DataFrame, dict[str, dict[str, int]]]:
    """The CNN stages' per-task-set training data, the validation frames (Aff-Wild2 validation),
    and the rows skipped per task set for want of a readable face, by reason."""
    from mtaffect.data.tasks import TaskSetConfig, build_task_sets, sampling_weights

    task_sets = build_task_sets(index, component(TaskSetConfig, config.data.task_sets, "data.task_sets"))
    wanted = list(config.data.use_task_sets)
    missing = [t for t in wanted if t not in task_sets.train or len(task_sets.train[t]) == 0]
    if missing:
        raise UserError(f"data.use_task_sets: no training frames for {missing} in {config.data.index}")
    sources, skipped = {}, {}
    for name in wanted:
        df, reader, dropped = readable_frames(task_sets.train[name], meta, config.data.image_size)
        if dropped:
            skipped[name] = dropped
        sources[name] = TaskSource(
            reader=reader,
            labels=LabelArrays.from_frame(df),
            weights=np.asarray(
                sampling_weights(name, df, va_range=task_sets.config.va_sampling_range), dtype=np.float64
            ),
        )
    validation, _, dropped = readable_frames(task_sets.validation, meta, config.data.image_size)
    if dropped:
        skipped["validation"] = dropped
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
    return data, validation, skipped


def image_preparer(config: Config, device: torch.device) -> ImagePreparer:
    return ImagePreparer(cnn_preprocessing(config), channels_last=config.train.channels_last)
