"""The paper's four training stages as rows of one table, run by one loop.

========== ===== ======= ========= =====================================================
stage      model data    objective what it learns from
========== ===== ======= ========= =====================================================
cnn_teacher cnn  frames  teacher   ground truth of the task sets (P eq. 7)
cnn_student cnn  frames  student   ground truth + the frozen CNN teacher (P eq. 9 / 10)
gru_teacher gru  windows teacher   ground truth on 32-frame windows of cached embeddings
gru_student gru  windows student   ground truth + the frozen GRU teacher
========== ===== ======= ========= =====================================================

``frames``: per task set, balanced batches of N augmented face crops
(:class:`mtaffect.data.loading.FrameTaskData`). ``windows``: per task set, batches of windows of the
frozen CNN student's embeddings from the feature cache (:mod:`mtaffect.features`, built or
reused automatically, shared by the GRU teacher and student). The student is a fresh model
(``model.init_from`` may give it e.g. the FER+ backbone), never a copy of its teacher (METHOD.md §5).

:func:`run_stage` is the whole stage: run folder, seeds, model, data, task, optimizer, DDP,
:func:`mtaffect.train.loop.fit`, and ``best.safetensors`` (weights + resolved config + metrics).
A GRU stage's ``best.safetensors`` holds the GRU alone (with the path and sha256 of its CNN); beside
it, ``cnn_gru.safetensors`` holds the CNN and that GRU together, for prediction anywhere.
"""

from __future__ import annotations

import random
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml

from mtaffect import distributed
from mtaffect.config import Config, component, config_from_resolved, resolve
from mtaffect.errors import UserError
from mtaffect.io import prepare_output_dir, write_json, write_text
from mtaffect.runtime import amp_dtype
from mtaffect.train import components as C
from mtaffect.train.loop import FitOptions, FitResult, fit
from mtaffect.train.tasks import DistillationTask, SupervisedTask

__all__ = ["Stage", "STAGES", "StageResult", "check_config", "run_stage", "BEST_CHECKPOINT", "RUN_CONFIG"]
# GRU stages also write mtaffect.checkpoint.CNN_GRU_CHECKPOINT ("cnn_gru.safetensors") beside BEST_CHECKPOINT

BEST_CHECKPOINT = "best.safetensors"
RUN_CONFIG = "config.yaml"
DATA_REPORT = "data_report.json"
# keys that may differ when a run is resumed (they do not change what is computed)
RESUMABLE_CHANGES = {
    "train.epochs",
    "train.patience",
    "train.device",
    "train.progress",
    "train.workers",
    "train.threads",
    "train.tensorboard",
    "train.save_every_steps",
    "train.compile",
}


@dataclass(frozen=True)
class Stage:
    """One row of the recipe: which model, which data, which objective, which default recipe."""

    name: str
    model: str  # "cnn" | "gru"
    data: str  # "frames" | "windows"
    objective: str  # "teacher" | "student"
    recipe: str  # packaged YAML under mtaffect/configs/


STAGES: dict[str, Stage] = {
    s.name: s
    for s in (
        Stage("cnn_teacher", "cnn", "frames", "teacher", "cnn_teacher.yaml"),
        Stage("cnn_student", "cnn", "frames", "student", "cnn_student.yaml"),
        Stage("gru_teacher", "gru", "windows", "teacher", "gru_teacher.yaml"),
        Stage("gru_student", "gru", "windows", "student", "gru_student.yaml"),
    )
}


@dataclass
class StageResult:
    """Where a stage wrote its best checkpoint, and how training went."""

    stage: str
    run_dir: Path
    checkpoint: Path
    fit: FitResult


def _flat(tree: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict) and value:
            out.update(_flat(value, name + "."))
        else:
            out[name] = value
    return out


def _check_resume(run_dir: Path, config: Config) -> None:
    """A resumed run must be the same recipe (up to :data:`RESUMABLE_CHANGES`)."""
    stored_path = run_dir / RUN_CONFIG
    if not stored_path.exists():
        return
    stored = _flat(resolve(config_from_resolved(yaml.safe_load(stored_path.read_text()) or {})))
    current = _flat(resolve(config))
    changed = sorted(
        k
        for k in set(stored) | set(current)
        if stored.get(k) != current.get(k) and k not in RESUMABLE_CHANGES
    )
    if changed:
        raise UserError(
            f"{stored_path}: --resume with a different recipe ({', '.join(changed)}); "
            "use a new --out folder or --overwrite"
        )


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - third-party code may use the legacy global generator
    torch.manual_seed(seed)


def _build_model(stage: Stage, config: Config) -> torch.nn.Module:
    return C.build_cnn(config) if stage.model == "cnn" else C.build_gru(config)


def _report_skipped(run_dir: Path, skipped: dict, ctx: distributed.DistContext) -> None:
    """Rows without a readable face are skipped, counted, printed and kept in ``data_report.json``."""
    if not ctx.is_main:
        return
    write_json(run_dir / DATA_REPORT, {"skipped_rows": skipped})
    if skipped:
        text = "; ".join(
            f"{name}: " + ", ".join(f"{n} {why}" for why, n in reasons.items())
            for name, reasons in skipped.items()
        )
        print(
            f"skipped index rows without a readable face ({text}); see {run_dir / DATA_REPORT}",
            file=sys.stderr,
        )


def _frames_pipeline(
    config: Config, ctx: distributed.DistContext, run_dir: Path
) -> tuple[Any, Any, Any, Any]:
    index, meta = C.read_index(config)
    data, validation, skipped = C.build_frame_data(
        config, index, meta, rank=ctx.rank, world=ctx.world, pin_memory=ctx.device.type == "cuda"
    )
    _report_skipped(run_dir, skipped, ctx)
    preprocessing = C.cnn_preprocessing(config)
    validate = None
    if ctx.is_main:
        from mtaffect.evaluate import make_cnn_validator

        if len(validation) == 0:
            raise UserError(f"{config.data.index}: no validation frames to select the checkpoint on")
        validate = make_cnn_validator(
            validation,
            meta,
            preprocessing=preprocessing,  # eval_resize = data.resize_factor (C.cnn_preprocessing)
            device=ctx.device,
            workers=config.train.workers or None,  # decoding processes (None: 8 at most on CUDA)
        )
    return data, C.image_preparer(config, ctx.device), validate, preprocessing


def _windows_pipeline(
    config: Config, ctx: distributed.DistContext, run_dir: Path
) -> tuple[Any, Any, Any, Any]:
    from mtaffect.data.sequences import SequenceConfig, WindowTaskData, build_window_loaders, gru_frames
    from mtaffect.features import default_draws, ensure_feature_cache

    if not config.model.cnn_checkpoint:
        raise UserError("GRU stages need model.cnn_checkpoint=<the CNN student checkpoint>")
    seq = component(SequenceConfig, config.data.sequences, "data.sequences")
    index, meta = C.read_index(config)
    cache_root = Path(config.data.features) if config.data.features else run_dir.parent / "features"
    frames = gru_frames(index, seq)
    draws = default_draws(tuple(seq.translations), seq.flips)

    def open_cache(progress: bool):
        return ensure_feature_cache(
            config.model.cnn_checkpoint,
            frames,
            meta,
            cache_root,
            draws=draws,
            size=config.data.image_size,
            resize=config.data.resize_factor,
            batch_size=seq.cache_batch,
            device=ctx.device,
            progress=progress,
            workers=config.train.workers or None,  # decoding processes (None: 8 at most on CUDA)
        )

    # one process computes the cache (or finds it); the others wait, then open the finished one
    cache = open_cache(config.train.progress) if ctx.is_main else None
    distributed.barrier(ctx)
    if cache is None:
        cache = open_cache(False)
    loaders = build_window_loaders(
        index, cache, seq, config.train.batch_per_task, seed=config.train.seed, rank=ctx.rank, world=ctx.world
    )
    data = WindowTaskData(loaders, max_steps=config.train.max_steps_per_epoch)
    validate = None
    if ctx.is_main:
        from mtaffect.evaluate import labelled_frames, make_gru_validator

        validation = labelled_frames(index, "validation", list(seq.databases), videos_only=True)
        if len(validation) == 0:
            raise UserError(f"{config.data.index}: no validation video frames for the GRU stage")
        validate = make_gru_validator(
            validation, cache, length=seq.length, stride=seq.eval_stride, device=ctx.device
        )
    return data, WindowTaskData.to_device, validate, C.gru_preprocessing(config)


def check_config(config: Config) -> None:
    """Build every section another module owns (model.cnn, model.gru, data.task_sets, data.sequences,
    loss) once, so that a mistyped key or a bad value fails now, naming its dotted path, not after the
    data pipeline or the feature cache has run. (config.py cannot check them itself: it sits below
    the layers that define these dataclasses; docs/design.md.)"""
    from mtaffect.data.sequences import SequenceConfig
    from mtaffect.data.tasks import TaskSetConfig
    from mtaffect.models.cnn import CNNConfig
    from mtaffect.models.gru import GRUConfig

    if config.stage.name not in STAGES:
        raise UserError(f"stage.name {config.stage.name!r} is not one of {', '.join(STAGES)}")
    for cls, section, where in (
        (CNNConfig, config.model.cnn, "model.cnn"),
        (GRUConfig, config.model.gru, "model.gru"),
        (TaskSetConfig, config.data.task_sets, "data.task_sets"),
        (SequenceConfig, config.data.sequences, "data.sequences"),
    ):
        component(cls, section, where)
    _loss_config(config)


def run_stage(
    config: Config,
    out_dir: str | Path,
    *,
    resume: bool = False,
    overwrite: bool = False,
    device: str | None = None,
) -> StageResult:
    """Train one stage of the recipe into ``out_dir``; see the module docstring.

    ``out_dir`` is never overwritten unless ``overwrite``; ``resume`` continues it from its last
    finished epoch. ``device`` overrides ``train.device``. Launch under ``torchrun`` for DDP.
    """
    check_config(config)
    stage = STAGES[config.stage.name]
    if device is not None:
        config.train.device = device
    ctx = distributed.setup(config.train.device)
    try:
        run_dir = Path(out_dir)
        if ctx.is_main:
            prepare_output_dir(run_dir, overwrite=overwrite, resume=resume)
            if resume:
                _check_resume(run_dir, config)
            write_text(run_dir / RUN_CONFIG, yaml.safe_dump(resolve(config), sort_keys=False))
        distributed.barrier(ctx)
        if config.train.threads > 0:
            torch.set_num_threads(config.train.threads)
        _seed_everything(config.train.seed)

        model = _build_model(stage, config).to(ctx.device)
        if stage.model == "cnn":
            data, to_device, validate, preprocessing = _frames_pipeline(config, ctx, run_dir)
            if config.train.channels_last:
                model = model.to(memory_format=torch.channels_last)
        else:
            data, to_device, validate, preprocessing = _windows_pipeline(config, ctx, run_dir)
        loss_config = _loss_config(config)
        if stage.objective == "teacher":
            task = SupervisedTask(model, loss_config, concat_task_sets=config.train.concat_task_sets)
        else:
            teacher = C.load_teacher(config.stage.teacher, stage.model, ctx.device)
            if stage.model == "cnn" and config.train.channels_last:
                teacher = teacher.to(memory_format=torch.channels_last)
            task = DistillationTask(
                model,
                teacher,
                loss_config,
                shared_labels=config.stage.shared_labels,
                concat_task_sets=config.train.concat_task_sets,
            )
        optimizer = C.build_optimizer(config, model, ctx.device)  # Adam, fused on CUDA
        checkpoint = run_dir / BEST_CHECKPOINT
        resolved = resolve(config)
        save_joined = _joined_writer(config, run_dir) if stage.model == "gru" else None

        def save_best(metrics: dict[str, float], epoch: int) -> None:
            from mtaffect.checkpoint import save_checkpoint

            extra = {"preprocessing": preprocessing} if preprocessing is not None else {}
            if save_joined is not None:
                extra["cnn"] = save_joined.cnn_record
            meta = dict(stage=stage.name, train=resolved, metrics=metrics, epoch=epoch)
            save_checkpoint(checkpoint, model, **meta, **extra)
            if save_joined is not None:
                save_joined(model, meta, preprocessing)

        options = FitOptions(
            epochs=config.train.epochs,
            patience=config.train.patience,
            device=ctx.device,
            amp_dtype=amp_dtype(ctx.device, config.train.amp),
            compile=config.train.compile,
            resume=resume,
            save_every_steps=config.train.save_every_steps,
            progress=config.train.progress,
            tensorboard=config.train.tensorboard,
            desc=stage.name,
        )
        result = fit(
            task,
            data,
            optimizer,
            run_dir=run_dir,
            options=options,
            validate=validate,
            save_best=save_best,
            to_device=to_device,
            dist=ctx,
        )
        return StageResult(stage.name, run_dir, checkpoint, result)
    finally:
        distributed.cleanup(ctx)


class _JoinedWriter:
    """Writes ``cnn_gru.safetensors`` (the frozen CNN + the best GRU, self-contained) beside each
    ``best.safetensors`` of a GRU stage, so that the two always hold the same epoch.

    ``cnn_record`` (``{"checkpoint": absolute path, "sha256": file hash}``) goes into the GRU-only
    checkpoint, so that :func:`mtaffect.checkpoint.find_cnn_checkpoint` finds (and verifies) its CNN.
    """

    def __init__(self, cnn_path: Path, target: Path) -> None:
        from mtaffect.runtime import file_sha256

        self.cnn_path, self.target = cnn_path, target
        self.cnn_record = {"checkpoint": str(cnn_path.resolve()), "sha256": file_sha256(cnn_path)}
        self._cnn: tuple[torch.nn.Module, dict] | None = None

    def __call__(self, gru: torch.nn.Module, meta: dict, preprocessing: Any) -> None:
        """``preprocessing``: the GRU checkpoint's (:func:`~mtaffect.train.components.gru_preprocessing`),
        so that both files say the same about feeding them."""
        from mtaffect.checkpoint import load_checkpoint, save_checkpoint
        from mtaffect.models.gru import CNNGRU

        if self._cnn is None:  # loaded once, on the CPU: it is only written out
            self._cnn = load_checkpoint(self.cnn_path)
        cnn, _ = self._cnn
        sources = {
            "cnn": {"file": self.cnn_record["checkpoint"], "sha256": self.cnn_record["sha256"]},
            "gru": {"file": str((self.target.parent / BEST_CHECKPOINT).resolve())},
        }
        save_checkpoint(
            self.target,
            CNNGRU(cnn, gru),  # a view over both models: nothing is copied or changed
            **meta,
            preprocessing=preprocessing,
            cnn=self.cnn_record,
            sources=sources,
        )


def _joined_writer(config: Config, run_dir: Path) -> _JoinedWriter:
    from mtaffect.checkpoint import CNN_GRU_CHECKPOINT

    return _JoinedWriter(Path(config.model.cnn_checkpoint), run_dir / CNN_GRU_CHECKPOINT)


def _loss_config(config: Config) -> Any:
    """The loss settings, with the VA decoding taken from the model so that the CCC term trains the
    decoding the model reports (``model.cnn.va_decoding`` / ``model.gru.va_decoding``)."""
    from mtaffect.losses import LossConfig

    loss = dict(config.loss)
    sections = (config.model.cnn, config.model.gru)
    model_decodings = {
        _canonical(s["va_decoding"], "model.va_decoding") for s in sections if s.get("va_decoding")
    }
    if len(model_decodings) > 1:
        raise UserError(f"model.cnn/gru.va_decoding disagree: {sorted(model_decodings)}")
    if model_decodings:
        (decoding,) = model_decodings
        if "va_decode" in loss and _canonical(loss["va_decode"], "loss.va_decode") != _canonical(
            decoding, "model.va_decoding"
        ):
            raise UserError(
                f"loss.va_decode={loss['va_decode']!r} disagrees with the model's va_decoding={decoding!r}"
            )
        loss["va_decode"] = decoding
    return component(LossConfig, loss, "loss")


def _canonical(name: str, key: str) -> str:
    from mtaffect.models.outputs import va_decoding

    try:
        return va_decoding(name, key)
    except ValueError as err:
        raise UserError(str(err)) from None
