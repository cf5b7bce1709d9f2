"""CNN training batches: per task set, N balanced draws per step, read, augmented and collated in uint8.

One step of the CNN stages is ``{task_set: (images uint8 (N, S, S, 3), Targets (N,))}`` for the task
sets in use (METHOD.md §4.2): each task set has its own seeded balanced sampler
(:func:`mtaffect.data.tasks.sampling_weights` + :class:`mtaffect.data.tasks.BalancedSampler`, which
draws ``len(task set)`` indices with replacement per epoch), and an epoch ends with the shortest
task set: ``min_t len(t) // N`` steps.

Why it is fast (benchmark b, PERFORMANCE.md §3): faces are decoded by the face reader (simplejpeg /
the face cache) straight into numpy, the augmentation is one ``cv2.warpAffine`` per image into a
preallocated uint8 batch (:mod:`mtaffect.data.augment`), no per-sample tensor is ever built, and the
float conversion and normalisation happen on the model's device (:meth:`FrameTaskData.to_device`).

Why it is reproducible: the draws of epoch e come from the samplers' ``set_epoch(e)``; the
augmentation of step s uses a generator seeded with ``(seed, epoch, step, rank)``. A batch therefore
depends only on (seed, epoch, step, rank), not on the number of DataLoader workers, on which steps ran
before, or on a resume in between. Under DDP, rank r of W takes the draws ``r::W`` of every task set.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pandas as pd
import torch
from torch.utils.data import DataLoader, Dataset

from mtaffect.data.augment import augment_batch, eval_batch
from mtaffect.errors import ConfigError
from mtaffect.labels import NUM_EXPRESSIONS
from mtaffect.models.outputs import Targets
from mtaffect.models.preprocessing import EVAL_RESIZE

__all__ = ["LabelArrays", "TaskSource", "FrameTaskData", "targets_from_frame", "collate_targets"]

Batch = dict[str, tuple[Any, Targets]]


class FaceSource(Protocol):
    def read(self, rows: np.ndarray) -> np.ndarray: ...


@dataclass
class LabelArrays:
    """Labels of a table of frames as plain arrays, extracted once (no pandas in the step).

    expression: (n,) int64, −1 where missing (or "Other"); valence, arousal: (n,) float32, NaN where missing.
    """

    expression: np.ndarray
    valence: np.ndarray
    arousal: np.ndarray

    @classmethod
    def from_frame(cls, df: pd.DataFrame) -> LabelArrays:
        n = len(df)
        if "expression" in df:
            expr = pd.array(df["expression"], dtype="Int64").to_numpy(dtype=np.float64, na_value=np.nan)
            usable = np.isfinite(expr) & (expr >= 0) & (expr < NUM_EXPRESSIONS)
            expr = np.where(usable, expr, -1).astype(np.int64)
        else:
            expr = np.full(n, -1, dtype=np.int64)

        def column(name: str) -> np.ndarray:
            if name not in df:
                return np.full(n, np.nan, dtype=np.float32)
            return pd.array(df[name], dtype="Float64").to_numpy(dtype=np.float32, na_value=np.nan)

        return cls(expr, column("valence"), column("arousal"))

    def __len__(self) -> int:
        return len(self.expression)

    def take(self, positions: np.ndarray) -> Targets:
        return collate_targets(self.expression[positions], self.valence[positions], self.arousal[positions])


def collate_targets(expression: np.ndarray, valence: np.ndarray, arousal: np.ndarray) -> Targets:
    """Targets with explicit masks from arrays where −1 / NaN mean "no label" (any leading shape)."""
    has_expression = expression >= 0
    has_va = np.isfinite(valence) & np.isfinite(arousal)
    return Targets(
        torch.from_numpy(np.where(has_expression, expression, 0).astype(np.int64)),
        torch.from_numpy(has_expression),
        torch.from_numpy(np.where(has_va, valence, 0.0).astype(np.float32)),
        torch.from_numpy(np.where(has_va, arousal, 0.0).astype(np.float32)),
        torch.from_numpy(has_va),
    )


def targets_from_frame(df: pd.DataFrame) -> Targets:
    """Targets of every row of a frame table (index columns ``expression``, ``valence``, ``arousal``)."""
    return LabelArrays.from_frame(df).take(np.arange(len(df)))


@dataclass
class TaskSource:
    """One task set: its face reader (positions into ``labels``), labels and sampling weights."""

    reader: FaceSource
    labels: LabelArrays
    weights: np.ndarray

    def __len__(self) -> int:
        return len(self.labels)


class _Sampler(Protocol):
    def set_epoch(self, epoch: int) -> None: ...
    def __iter__(self) -> Iterator[int]: ...


def _balanced_draws(weights: np.ndarray, seed: int, epoch: int, sampler_factory: Any) -> np.ndarray:
    sampler: _Sampler = sampler_factory(weights, len(weights), seed)
    sampler.set_epoch(epoch)
    return np.fromiter(iter(sampler), dtype=np.int64, count=len(weights))


def _default_sampler_factory(weights: np.ndarray, num_samples: int, seed: int) -> _Sampler:
    from mtaffect.data.tasks import BalancedSampler

    return BalancedSampler(weights, num_samples, seed)


class _EpochSteps(Dataset):
    """Map-style dataset whose item s is the whole batch of step s (so workers build whole batches)."""

    def __init__(self, data: FrameTaskData, draws: dict[str, np.ndarray], epoch: int) -> None:
        self.data, self.draws, self.epoch = data, draws, epoch

    def __len__(self) -> int:
        return self.data.steps_per_epoch()

    def __getitem__(self, step: int) -> Batch:
        return self.data.make_batch(self.draws, self.epoch, step)


def _worker_init(_: int) -> None:
    torch.set_num_threads(1)


class FrameTaskData:
    """The CNN stages' training data: one batch of N frames per task set per step.

    sources: ``{task_set: TaskSource}`` (names from :data:`mtaffect.labels.TASK_SETS`);
    batch_per_task: N; size: crop side; rank/world: DDP shard; workers: DataLoader processes;
    max_steps: cap on steps per epoch (0 = none); augment: False gives the eval transform (tests).
    """

    def __init__(
        self,
        sources: Mapping[str, TaskSource],
        *,
        batch_per_task: int,
        size: int,
        resize_factor: float = EVAL_RESIZE,
        seed: int = 0,
        rank: int = 0,
        world: int = 1,
        workers: int = 0,
        max_steps: int = 0,
        augment: bool = True,
        pin_memory: bool = False,
        sampler_factory: Any = None,
    ) -> None:
        if not sources:
            raise ValueError("no task sets to train on")
        self.sources = dict(sources)
        self.batch_per_task = batch_per_task
        self.size, self.resize_factor = size, resize_factor
        self.seed, self.rank, self.world = seed, rank, world
        self.workers, self.max_steps = workers, max_steps
        self.augment, self.pin_memory = augment, pin_memory
        self.sampler_factory = sampler_factory or _default_sampler_factory
        small = {name: len(src) for name, src in self.sources.items() if len(src) // world < batch_per_task}
        if small:  # a setting that cannot work with this data: one line, no traceback
            raise ConfigError(
                f"task sets smaller than one batch of {batch_per_task} per process: {small}; "
                "lower train.batch_per_task or add data"
            )

    def steps_per_epoch(self) -> int:
        """min over task sets of ⌊(len / world) / N⌋, capped by ``max_steps`` (METHOD.md §4.2)."""
        steps = min((len(src) // self.world) // self.batch_per_task for src in self.sources.values())
        return min(steps, self.max_steps) if self.max_steps else steps

    def epoch_draws(self, epoch: int) -> dict[str, np.ndarray]:
        """This rank's balanced draws of ``epoch`` per task set (positions into the task set)."""
        out = {}
        for i, (name, src) in enumerate(self.sources.items()):
            draws = _balanced_draws(src.weights, self.seed * 1000 + i, epoch, self.sampler_factory)
            out[name] = draws[self.rank :: self.world]
        return out

    def make_batch(self, draws: Mapping[str, np.ndarray], epoch: int, step: int) -> Batch:
        """Read, augment and collate step ``step`` of ``epoch`` → ``{task_set: (uint8 NHWC, Targets)}``."""
        rng = np.random.default_rng((self.seed, epoch, step, self.rank))
        n = self.batch_per_task
        batch: Batch = {}
        for name, src in self.sources.items():
            positions = draws[name][step * n : (step + 1) * n]
            faces = np.asarray(src.reader.read(positions))
            out = np.empty((len(positions), self.size, self.size, 3), dtype=np.uint8)
            if self.augment:
                augment_batch(faces, self.size, rng, resize_factor=self.resize_factor, out=out)
            else:
                eval_batch(faces, self.size, resize_factor=self.resize_factor, out=out)
            batch[name] = (torch.from_numpy(out), src.labels.take(positions))
        return batch

    def epoch(self, epoch: int, start_step: int = 0) -> Iterator[Batch]:
        """Batches of steps ``start_step ..`` of ``epoch`` (built in ``workers`` processes if > 0)."""
        dataset = _EpochSteps(self, self.epoch_draws(epoch), epoch)
        steps = range(start_step, len(dataset))
        if self.workers <= 0 and not self.pin_memory:
            for step in steps:
                yield dataset[step]
            return
        loader = DataLoader(
            dataset,
            batch_size=None,
            sampler=list(steps),
            num_workers=self.workers,
            pin_memory=self.pin_memory,
            worker_init_fn=_worker_init if self.workers > 0 else None,
            prefetch_factor=2 if self.workers > 0 else None,
        )
        yield from loader


class ImagePreparer:
    """Moves a CNN batch to the device and normalises it there (uint8 NHWC → float NCHW).

    ``preprocessing``: :class:`mtaffect.models.preprocessing.Preprocessing` of the model's weights.
    Crops already at the model's input size (the training case) take a fast path: the NHWC uint8
    tensor viewed as NCHW *is* channels_last, so one float conversion and in-place mean/std steps
    give the model input without further copies; any other size goes through ``Preprocessing.apply``.
    """

    def __init__(self, preprocessing: Any, *, channels_last: bool = False) -> None:
        self.preprocessing = preprocessing
        self.channels_last = channels_last
        self._stats: dict[torch.device, tuple[torch.Tensor, torch.Tensor | None]] = {}

    def _mean_std(self, device: torch.device) -> tuple[torch.Tensor, torch.Tensor | None]:
        if device not in self._stats:
            mean = torch.tensor(self.preprocessing.mean, dtype=torch.float32, device=device).view(1, 3, 1, 1)
            std = tuple(self.preprocessing.std)
            scale = None if std == (1.0, 1.0, 1.0) else torch.tensor(std, device=device).view(1, 3, 1, 1)
            self._stats[device] = (mean, scale)
        return self._stats[device]

    def normalise(self, images: torch.Tensor, device: torch.device) -> torch.Tensor:
        """uint8 (N, S, S, 3) → float32 (N, 3, S, S) on ``device``, normalised as the weights expect."""
        x = images.to(device, non_blocking=device.type == "cuda")
        size = self.preprocessing.size
        if x.dim() != 4 or tuple(x.shape[1:]) != (size, size, 3):
            return self.preprocessing.apply(x, channels_last=self.channels_last)
        x = x.permute(0, 3, 1, 2).float()  # a channels_last NCHW view of the NHWC data: no copy
        mean, std = self._mean_std(x.device)
        x.sub_(mean)
        if std is not None:
            x.div_(std)
        return x if self.channels_last else x.contiguous()

    def __call__(self, batch: Batch, device: torch.device) -> Batch:
        non_blocking = device.type == "cuda"
        return {
            name: (self.normalise(images, device), targets.to(device, non_blocking=non_blocking))
            for name, (images, targets) in batch.items()
        }
