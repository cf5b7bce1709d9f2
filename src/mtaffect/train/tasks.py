"""What one training step computes: a batch in, named losses out.

A batch is ``{task_set: (inputs, Targets)}`` (task sets "EXPR", "VA", "EXPR_VA"); inputs are
normalised images ``(N, 3, S, S)`` for the CNN or embedding dicts ``{"EXPR": (B, T, 128), "VA": ...}``
for the GRU. A task returns ``{"loss": scalar, <named parts>...}`` from
:mod:`mtaffect.losses` (which flattens GRU outputs (B, T, ·) to frames and honours the masks); the
loop backpropagates ``"loss"`` and logs the rest.

* :class:`SupervisedTask` — the teachers (P eq. 7): ground truth only.
* :class:`DistillationTask` — the students (P eq. 9 / eq. 10): wraps a *frozen* teacher that runs in
  eval mode, in inference mode, on the very same (augmented) inputs as the student.

Both are ``nn.Module``s whose ``forward`` does the whole step's forward passes, so DDP can wrap the
task (one DDP forward per backward even though each task set gets its own model forward).

Each task set is forwarded separately by default, so BatchNorm statistics are computed per source
database as in the authors' code (METHOD.md §2.3); ``concat_task_sets=True`` forwards one
concatenated batch instead (faster on a GPU, different BatchNorm behaviour).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from mtaffect.models.outputs import Outputs, Targets

__all__ = ["SupervisedTask", "DistillationTask", "forward_task_sets"]

Batch = dict[str, tuple[Any, Targets]]


def _concat_inputs(items: list[Any]) -> Any:
    if isinstance(items[0], dict):
        return {key: torch.cat([item[key] for item in items]) for key in items[0]}
    return torch.cat(items)


def _slice_outputs(out: Outputs, lo: int, hi: int) -> Outputs:
    emb = None if out.embeddings is None else {k: v[lo:hi] for k, v in out.embeddings.items()}
    return Outputs(out.expression[lo:hi], out.valence[lo:hi], out.arousal[lo:hi], emb)


def _plain(out: Outputs) -> Outputs:
    emb = None if out.embeddings is None else {k: v.clone() for k, v in out.embeddings.items()}
    return Outputs(out.expression.clone(), out.valence.clone(), out.arousal.clone(), emb)


def _batch_len(inputs: Any) -> int:
    return len(next(iter(inputs.values()))) if isinstance(inputs, dict) else len(inputs)


def forward_task_sets(model: nn.Module, batch: Batch, *, concat: bool = False) -> dict[str, Outputs]:
    """Forward every task set's inputs through ``model``: separately (default) or concatenated."""
    if not concat or len(batch) == 1:
        return {name: model(inputs) for name, (inputs, _) in batch.items()}
    names = list(batch)
    sizes = [_batch_len(batch[name][0]) for name in names]
    out = model(_concat_inputs([batch[name][0] for name in names]))
    result, lo = {}, 0
    for name, size in zip(names, sizes):
        result[name] = _slice_outputs(out, lo, lo + size)
        lo += size
    return result


class SupervisedTask(nn.Module):
    """Teacher step (P eq. 7): every head learns from the ground truth of its task sets.

    model: the network being trained; loss: :class:`mtaffect.losses.LossConfig`.
    """

    def __init__(self, model: nn.Module, loss: Any, *, concat_task_sets: bool = False) -> None:
        super().__init__()
        self.model = model
        self.loss_config = loss
        self.concat_task_sets = concat_task_sets

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        from mtaffect.losses import teacher_objective

        outputs = forward_task_sets(self.model, batch, concat=self.concat_task_sets)
        targets = {name: targets for name, (_, targets) in batch.items()}
        return teacher_objective(outputs, targets, self.loss_config)


class DistillationTask(nn.Module):
    """Student step (P eq. 9 / eq. 10): ground truth mixed with a frozen teacher's soft labels.

    student: the network being trained (a fresh model, METHOD.md §5); teacher: the trained teacher,
    frozen here (``requires_grad`` off, eval mode forever, inference mode: no autograd records, no
    version counters; under the loop's autocast, bf16 on CUDA); shared_labels: True = eq. 10
    (use a frame's secondary label where it has one), False = eq. 9 (secondary task from the teacher only).
    """

    def __init__(
        self,
        student: nn.Module,
        teacher: nn.Module,
        loss: Any,
        *,
        shared_labels: bool = True,
        concat_task_sets: bool = False,
    ) -> None:
        super().__init__()
        self.model = student
        self.teacher = teacher
        for p in self.teacher.parameters():
            p.requires_grad_(False)
        self.teacher.eval()
        self.loss_config = loss
        self.shared_labels = shared_labels
        self.concat_task_sets = concat_task_sets

    def train(self, mode: bool = True) -> DistillationTask:
        """Switch the student only: the teacher stays in eval mode (BatchNorm stats, no dropout)."""
        super().train(mode)
        self.teacher.eval()
        return self

    def forward(self, batch: Batch) -> dict[str, torch.Tensor]:
        from mtaffect.losses import student_objective

        with torch.inference_mode():
            teacher_out = forward_task_sets(self.teacher, batch, concat=self.concat_task_sets)
        # inference tensors cannot be saved for the student's backward: plain copies (a few KB)
        teacher_out = {name: _plain(out) for name, out in teacher_out.items()}
        student_out = forward_task_sets(self.model, batch, concat=self.concat_task_sets)
        targets = {name: targets for name, (_, targets) in batch.items()}
        return student_objective(
            student_out, teacher_out, targets, self.loss_config, shared_labels=self.shared_labels
        )
